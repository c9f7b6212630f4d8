//! One transaction's state machine: the four of RFC 3261 §17 (Figures 5 to 8), with the
//! Accepted state RFC 6026 adds to both INVITE machines.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Config;
use super::key::Key;
use crate::{Error, Peer, Request, StatusCode};

/// Which machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the RFC's own names for the four machines
pub(crate) enum Kind {
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
}

/// The states of the four machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Client INVITE, before any response.
    Calling,
    /// Non-INVITE, before any response (client) or before the TU's first (server).
    Trying,
    Proceeding,
    Completed,
    /// Server INVITE after the ACK of a non-2xx.
    Confirmed,
    /// INVITE after a 2xx (RFC 6026).
    Accepted,
    Terminated,
}

/// The four timer slots a transaction uses: retransmission (A, E, G), timeout (B, F, H),
/// wait (D, I, J, K, L, M), and the INVITE server's wait for the TU's first response before
/// it sends 100 Trying itself (§17.2.1's 200 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    Retransmit,
    Timeout,
    Wait,
    Trying,
}

/// What a step of a machine asks its owner to do.
pub(crate) struct Out<'a> {
    pub(crate) now: Instant,
    pub(crate) config: &'a Config,
    pub(crate) transmits: Vec<Bytes>,
    pub(crate) timers: Vec<(Timer, Instant)>,
    pub(crate) timed_out: bool,
}

impl<'a> Out<'a> {
    pub(crate) fn new(now: Instant, config: &'a Config) -> Out<'a> {
        Out {
            now,
            config,
            transmits: Vec::new(),
            timers: Vec::new(),
            timed_out: false,
        }
    }
}

/// One transaction.
#[derive(Debug)]
pub(crate) struct Txn {
    pub(crate) key: Key,
    kind: Kind,
    pub(crate) state: State,
    /// Client: where the request goes. Server: where responses go.
    pub(crate) peer: Peer,
    /// Client: the request as sent. Server: the last response sent.
    message: Bytes,
    /// Client INVITE: the request, to build the ACK of a non-2xx from.
    request: Option<Request>,
    /// Client INVITE in Completed: the ACK, resent for every retransmitted final response.
    ack: Option<Bytes>,
    /// The current retransmission interval.
    interval: Duration,
    deadlines: [Option<Instant>; 4],
}

impl Txn {
    pub(crate) fn new(
        kind: Kind,
        key: Key,
        peer: Peer,
        message: Bytes,
        request: Option<Request>,
    ) -> Txn {
        let state = match kind {
            Kind::ClientInvite => State::Calling,
            Kind::ClientNonInvite | Kind::ServerNonInvite => State::Trying,
            Kind::ServerInvite => State::Proceeding,
        };
        Txn {
            key,
            kind,
            state,
            peer,
            message,
            request,
            ack: None,
            interval: Duration::ZERO,
            deadlines: [None; 4],
        }
    }

    pub(crate) fn is_server(&self) -> bool {
        matches!(self.kind, Kind::ServerInvite | Kind::ServerNonInvite)
    }

    pub(crate) fn request(&self) -> Option<&Request> {
        self.request.as_ref()
    }

    pub(crate) fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }

    fn schedule(&mut self, timer: Timer, after: Duration, out: &mut Out<'_>) {
        let at = out.now + after;
        self.deadlines[timer as usize] = Some(at);
        out.timers.push((timer, at));
    }

    fn cancel(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// Enters a state that waits `wait` before ending; zero ends it now.
    fn wait_then_end(&mut self, state: State, wait: Duration, out: &mut Out<'_>) {
        self.cancel(Timer::Retransmit);
        self.cancel(Timer::Timeout);
        if wait.is_zero() {
            self.state = State::Terminated;
        } else {
            self.state = state;
            self.schedule(Timer::Wait, wait, out);
        }
    }

    /// A new INVITE server transaction's 100 Trying (§17.2.1): sent after `delay` unless the
    /// TU responds first (a TU that answers within 200 ms makes it unnecessary, and over the
    /// overlay it would hold up the 180 behind it), or at once when `delay` is zero. Until
    /// then it is the response a retransmitted INVITE gets.
    pub(crate) fn trying(&mut self, bytes: Bytes, delay: Duration, out: &mut Out<'_>) {
        if delay.is_zero() {
            self.respond(StatusCode::TRYING, bytes, out);
        } else {
            self.message = bytes;
            self.schedule(Timer::Trying, delay, out);
        }
    }

    /// A client transaction has just sent its request: arm A/E (unreliable) and B/F.
    pub(crate) fn start(&mut self, out: &mut Out<'_>) {
        if !self.reliable() {
            self.interval = out.config.t1;
            self.schedule(Timer::Retransmit, out.config.t1, out);
        }
        self.schedule(Timer::Timeout, out.config.timeout(), out);
    }

    /// A timer fired.
    pub(crate) fn fire(&mut self, timer: Timer, out: &mut Out<'_>) {
        self.deadlines[timer as usize] = None;
        let config = out.config;
        match (self.kind, self.state, timer) {
            // Timer A: double without bound (§17.1.1.2).
            (Kind::ClientInvite, State::Calling, Timer::Retransmit) => {
                out.transmits.push(self.message.clone());
                self.interval *= 2;
                self.schedule(Timer::Retransmit, self.interval, out);
            }
            // Timer E: double up to T2 in Trying, T2 in Proceeding (§17.1.2.2).
            (Kind::ClientNonInvite, State::Trying | State::Proceeding, Timer::Retransmit) => {
                out.transmits.push(self.message.clone());
                self.interval = if self.state == State::Trying {
                    (self.interval * 2).min(config.t2)
                } else {
                    config.t2
                };
                self.schedule(Timer::Retransmit, self.interval, out);
            }
            // Timer G: the final response again, doubling up to T2 (§17.2.1).
            (Kind::ServerInvite, State::Completed, Timer::Retransmit) => {
                out.transmits.push(self.message.clone());
                self.interval = (self.interval * 2).min(config.t2);
                self.schedule(Timer::Retransmit, self.interval, out);
            }
            // The TU has not responded in time: the 100 Trying held since the INVITE came.
            (Kind::ServerInvite, State::Proceeding, Timer::Trying) => {
                out.transmits.push(self.message.clone());
            }
            // Timers B, F: no final response. Timer H: no ACK.
            (Kind::ClientInvite, State::Calling, Timer::Timeout)
            | (Kind::ClientNonInvite, State::Trying | State::Proceeding, Timer::Timeout)
            | (Kind::ServerInvite, State::Completed, Timer::Timeout) => {
                out.timed_out = true;
                self.state = State::Terminated;
            }
            // Timers D, K, I, J, L, M.
            (_, State::Completed | State::Confirmed | State::Accepted, Timer::Wait) => {
                self.state = State::Terminated;
            }
            _ => {}
        }
    }

    /// Whether a response with `status` will need an ACK built (client INVITE, non-2xx
    /// final, first time).
    pub(crate) fn needs_ack(&self, status: StatusCode) -> bool {
        self.kind == Kind::ClientInvite
            && status.as_u16() >= 300
            && matches!(self.state, State::Calling | State::Proceeding)
    }

    /// A response for this client transaction; returns whether the TU gets it.
    pub(crate) fn response(
        &mut self,
        status: StatusCode,
        ack: Option<Bytes>,
        out: &mut Out<'_>,
    ) -> bool {
        let t4 = out.config.t4;
        match (self.kind, self.state) {
            (Kind::ClientInvite, State::Calling | State::Proceeding) => {
                if status.is_provisional() {
                    self.state = State::Proceeding;
                    self.cancel(Timer::Retransmit);
                    self.cancel(Timer::Timeout);
                } else if status.is_success() {
                    let wait = out.config.timeout();
                    self.wait_then_end(State::Accepted, wait, out);
                } else {
                    if let Some(ack) = ack {
                        out.transmits.push(ack.clone());
                        self.ack = Some(ack);
                    }
                    // Timer D: at least 32 s over UDP, zero over a reliable transport.
                    let d = if self.reliable() {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32).max(out.config.timeout())
                    };
                    self.wait_then_end(State::Completed, d, out);
                }
                true
            }
            (Kind::ClientInvite, State::Completed) => {
                if status.as_u16() >= 300
                    && let Some(ack) = &self.ack
                {
                    out.transmits.push(ack.clone());
                }
                false
            }
            (Kind::ClientInvite, State::Accepted) => status.is_success(),
            (Kind::ClientNonInvite, State::Trying | State::Proceeding) => {
                if status.is_provisional() {
                    self.state = State::Proceeding;
                } else {
                    let k = if self.reliable() { Duration::ZERO } else { t4 };
                    self.wait_then_end(State::Completed, k, out);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether the TU may send a response with `status` now.
    pub(crate) fn check_response(&self, status: StatusCode) -> Result<(), Error> {
        let ok = match (self.kind, self.state) {
            (Kind::ServerInvite, State::Proceeding) => true,
            (Kind::ServerInvite, State::Accepted) => status.is_success(),
            (Kind::ServerNonInvite, State::Trying | State::Proceeding) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::NotAllowed(
                "the transaction has sent its final response",
            ))
        }
    }

    /// The TU's response (already checked by [`Txn::check_response`]).
    pub(crate) fn respond(&mut self, status: StatusCode, bytes: Bytes, out: &mut Out<'_>) {
        self.cancel(Timer::Trying);
        out.transmits.push(bytes.clone());
        self.message = bytes;
        let config = out.config;
        match self.kind {
            Kind::ServerInvite if status.is_provisional() => self.state = State::Proceeding,
            Kind::ServerInvite if status.is_success() => {
                if self.state != State::Accepted {
                    self.wait_then_end(State::Accepted, config.timeout(), out);
                }
            }
            Kind::ServerInvite => {
                self.state = State::Completed;
                if !self.reliable() {
                    self.interval = config.t1;
                    self.schedule(Timer::Retransmit, config.t1, out);
                }
                self.schedule(Timer::Timeout, config.timeout(), out);
            }
            Kind::ServerNonInvite if status.is_provisional() => self.state = State::Proceeding,
            Kind::ServerNonInvite => {
                let j = if self.reliable() {
                    Duration::ZERO
                } else {
                    config.timeout()
                };
                self.wait_then_end(State::Completed, j, out);
            }
            Kind::ClientInvite | Kind::ClientNonInvite => {}
        }
    }

    /// The request of this server transaction came again: answer with the last response.
    pub(crate) fn retransmitted_request(&mut self, out: &mut Out<'_>) {
        let resend = self.is_server() && matches!(self.state, State::Proceeding | State::Completed);
        if resend && !self.message.is_empty() {
            self.cancel(Timer::Trying);
            out.transmits.push(self.message.clone());
        }
    }

    /// An ACK matched this transaction; returns whether it is absorbed here (the ACK of a
    /// non-2xx) rather than handed to the TU (the ACK of a 2xx, RFC 6026).
    pub(crate) fn ack(&mut self, out: &mut Out<'_>) -> bool {
        match (self.kind, self.state) {
            (Kind::ServerInvite, State::Completed) => {
                let i = if self.reliable() {
                    Duration::ZERO
                } else {
                    out.config.t4
                };
                self.wait_then_end(State::Confirmed, i, out);
                true
            }
            (Kind::ServerInvite, State::Confirmed) => true,
            _ => false,
        }
    }
}
