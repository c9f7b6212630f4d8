//! A running user agent: the sans-IO [`UserAgent`] of `p2psip-sip` driven by a tokio task
//! over the node's [`Transports`].
//!
//! The task owns the agent. It wakes on a received message, a command, or the agent's next
//! deadline; after each, it sends what the agent wants sent (reporting failed sends back to
//! the transaction) and publishes the agent's events as [`Report`]s, with the time and, for
//! a call, its [`Timings`]. Commands travel on a bounded channel; every clone of an
//! [`Agent`] hears every event from its creation on, and one that falls more than
//! [`EVENT_CAPACITY`] events behind loses the oldest (with a warning) rather than stall the
//! agent.
//!
//! [`Agent::for_node`] starts the built-in user agent of a P2PSIP node: on 127.0.0.1, with the
//! node's SIP address as its outbound proxy, so that its REGISTERs are published in the
//! overlay and its calls and MESSAGEs are routed through it like any softphone's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use p2psip_sip::ua::{self, Call, Outgoing, UserAgent};
use p2psip_sip::{Error as SipError, Ids, Peer, StatusCode, Transport};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use crate::clock::{now, sleep_until};
use crate::transport::{self, Incoming, Transports};

/// How many unread events a running agent keeps.
pub const EVENT_CAPACITY: usize = 4096;

/// Why the agent could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SIP layer refused it (a bad URI, an unknown call, a call in the wrong state).
    #[error(transparent)]
    Sip(#[from] SipError),
    /// The transports could not be set up.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// The agent's task has ended.
    #[error("the user agent has stopped")]
    Stopped,
}

enum Command {
    Invite {
        target: String,
        reply: oneshot::Sender<Result<(Call, String), SipError>>,
    },
    Answer {
        call: Call,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Reject {
        call: Call,
        status: StatusCode,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Hangup {
        call: Call,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Register {
        aor: String,
        expires: u32,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Unregister {
        aor: String,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Message {
        target: String,
        text: String,
        reply: oneshot::Sender<Result<Outgoing, SipError>>,
    },
    Options {
        target: String,
        reply: oneshot::Sender<Result<Outgoing, SipError>>,
    },
    Registrations {
        reply: oneshot::Sender<Result<Vec<String>, SipError>>,
    },
}

/// An event of the agent, when it happened, and the timings of its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What happened.
    pub event: ua::Event,
    /// When, by the wall clock.
    pub at: SystemTime,
    /// For an event of a call: the call's timings so far.
    pub timings: Option<Timings>,
}

/// The life of a call as the agent saw it, from the INVITE sent (or received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// When the INVITE was sent or received.
    pub started: Instant,
    /// From the start to the first 180/183 (for a placed call, RFC 6076's session request
    /// delay).
    pub ringing: Option<Duration>,
    /// From the start to the call being up.
    pub answered: Option<Duration>,
    /// From the start to the end (BYE, CANCEL or failure).
    pub ended: Option<Duration>,
}

impl Timings {
    fn new(started: Instant) -> Timings {
        Timings {
            started,
            ringing: None,
            answered: None,
            ended: None,
        }
    }

    /// How long the call was up, once it has ended.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.ended?.saturating_sub(self.answered?))
    }
}

/// A handle on a running user agent. Clones share the agent; dropping the last one stops it.
#[derive(Debug)]
pub struct Agent {
    commands: mpsc::Sender<Command>,
    events: broadcast::Receiver<Report>,
    local: Vec<Peer>,
}

impl Clone for Agent {
    /// Another handle, which hears the events from now on.
    fn clone(&self) -> Agent {
        Agent {
            commands: self.commands.clone(),
            events: self.events.resubscribe(),
            local: self.local.clone(),
        }
    }
}

impl Agent {
    /// Binds the transports of `transports` and starts a user agent on them. The agent's
    /// `listen` addresses are filled in from the sockets actually bound. `seed` makes its
    /// tags, branches and Call-IDs predictable, for tests; see [`Agent::start_with`].
    pub async fn start(
        transports: transport::Config,
        config: ua::Config,
        seed: u64,
    ) -> Result<Agent, Error> {
        Agent::start_with(transports, config, Ids::new(seed)).await
    }

    /// [`Agent::start`] with identifiers from `ids` ([`Ids::from_os`] outside tests).
    pub async fn start_with(
        transports: transport::Config,
        mut config: ua::Config,
        ids: Ids,
    ) -> Result<Agent, Error> {
        let (sockets, incoming) = Transports::bind(transports).await?;
        config.listen = sockets.local_addrs().to_vec();
        let local = config.listen.clone();
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, events) = broadcast::channel(EVENT_CAPACITY);
        let agent = UserAgent::with_ids(config, ids);
        let span = info_span!("agent", local = %local.first().map(ToString::to_string).unwrap_or_default());
        tokio::spawn(run(agent, sockets, incoming, command_rx, event_tx).instrument(span));
        Ok(Agent {
            commands,
            events,
            local,
        })
    }

    /// The built-in user agent of a P2PSIP node whose SIP (UDP) address is `node`: it listens
    /// on 127.0.0.1 (UDP and TCP, ports chosen by the system), uses the node as its outbound
    /// proxy, presents itself as `user`, offers `sdp` in its calls, and answers incoming
    /// calls by itself when `auto_answer`.
    /// `seed` makes its identifiers predictable, for tests; see [`Agent::for_node_with`].
    pub async fn for_node(
        node: SocketAddr,
        user: &str,
        auto_answer: bool,
        sdp: Option<Bytes>,
        seed: u64,
    ) -> Result<Agent, Error> {
        Agent::for_node_with(node, user, auto_answer, sdp, Ids::new(seed)).await
    }

    /// [`Agent::for_node`] with identifiers from `ids` ([`Ids::from_os`] in a node).
    pub async fn for_node_with(
        node: SocketAddr,
        user: &str,
        auto_answer: bool,
        sdp: Option<Bytes>,
        ids: Ids,
    ) -> Result<Agent, Error> {
        let any = SocketAddr::new(node.ip(), 0);
        let transports = transport::Config::default().udp(vec![any]).tcp(vec![any]);
        let config = ua::Config {
            user: user.to_owned(),
            auto_answer,
            sdp,
            outbound: Some(Peer::new(Transport::Udp, node)),
            ..ua::Config::default()
        };
        Agent::start_with(transports, config, ids).await
    }

    /// Where the agent listens.
    pub fn local_addrs(&self) -> &[Peer] {
        &self.local
    }

    /// Places a call to a `sip:` URI.
    pub async fn invite(&self, target: &str) -> Result<Call, Error> {
        Ok(self.invite_with_call_id(target).await?.0)
    }

    /// Places a call to a `sip:` URI; gives the call and its Call-ID (the key of
    /// [`crate::p2p::Node::invite_hops`] at the agent's node).
    pub async fn invite_with_call_id(&self, target: &str) -> Result<(Call, String), Error> {
        let target = target.to_owned();
        self.ask(|reply| Command::Invite { target, reply }).await
    }

    /// Answers an incoming call with 200.
    pub async fn answer(&self, call: Call) -> Result<(), Error> {
        self.ask(|reply| Command::Answer { call, reply }).await
    }

    /// Refuses an incoming call.
    pub async fn reject(&self, call: Call, status: StatusCode) -> Result<(), Error> {
        self.ask(|reply| Command::Reject {
            call,
            status,
            reply,
        })
        .await
    }

    /// Hangs up (BYE, CANCEL, or 486, as the call's state wants).
    pub async fn hangup(&self, call: Call) -> Result<(), Error> {
        self.ask(|reply| Command::Hangup { call, reply }).await
    }

    /// Registers `aor` through the outbound proxy for `expires` seconds and keeps it
    /// refreshed; [`ua::Event::Registered`] or [`ua::Event::RegistrationFailed`] follows.
    pub async fn register(&self, aor: &str, expires: u32) -> Result<(), Error> {
        let aor = aor.to_owned();
        self.ask(|reply| Command::Register {
            aor,
            expires,
            reply,
        })
        .await
    }

    /// Removes the binding of `aor`; [`ua::Event::Unregistered`] follows.
    pub async fn unregister(&self, aor: &str) -> Result<(), Error> {
        let aor = aor.to_owned();
        self.ask(|reply| Command::Unregister { aor, reply }).await
    }

    /// Sends `text` as a `text/plain` MESSAGE; [`ua::Event::Completed`] tells how it went.
    pub async fn message(&self, target: &str, text: &str) -> Result<Outgoing, Error> {
        let (target, text) = (target.to_owned(), text.to_owned());
        self.ask(|reply| Command::Message {
            target,
            text,
            reply,
        })
        .await
    }

    /// Pings `target` with OPTIONS; [`ua::Event::Completed`] tells how it went.
    pub async fn options(&self, target: &str) -> Result<Outgoing, Error> {
        let target = target.to_owned();
        self.ask(|reply| Command::Options { target, reply }).await
    }

    /// The AORs the agent has registered or is registering, sorted.
    pub async fn registrations(&self) -> Result<Vec<String>, Error> {
        self.ask(|reply| Command::Registrations { reply }).await
    }

    /// The next event; `None` once the agent has stopped.
    pub async fn next_event(&mut self) -> Option<ua::Event> {
        self.next_report().await.map(|r| r.event)
    }

    /// The next event with its time and the call's timings; `None` once the agent has
    /// stopped.
    pub async fn next_report(&mut self) -> Option<Report> {
        loop {
            match self.events.recv().await {
                Ok(report) => return Some(report),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "events were dropped: this handle reads too slowly");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SipError>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(answer.await.map_err(|_| Error::Stopped)??)
    }
}

async fn run(
    mut agent: UserAgent,
    sockets: Transports,
    mut incoming: Incoming,
    mut commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Report>,
) {
    let mut calls: HashMap<Call, Timings> = HashMap::new();
    loop {
        let deadline = agent.poll_timeout().map(Instant::from_std);
        tokio::select! {
            received = incoming.recv() => {
                let Some(received) = received else { break };
                if let Err(e) = agent.handle(now(), received.message, received.source) {
                    debug!(source = %received.source, error = %e, "message dropped");
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                execute(&mut agent, command, &mut calls);
            }
            () = sleep_until(deadline) => agent.handle_timeout(now()),
        }
        while let Some(t) = agent.poll_transmit() {
            if let Err(e) = sockets.send(t.to, t.bytes).await {
                warn!(to = %t.to, error = %e, "send failed");
                if let Some(txn) = t.transaction {
                    agent.transport_error(now(), txn);
                }
            }
        }
        while let Some(event) = agent.poll_event() {
            let timings = time(&mut calls, &event, Instant::from_std(now()));
            // No handle listening is not an error: the event has nobody to tell.
            let _ = events.send(Report {
                event,
                at: SystemTime::now(),
                timings,
            });
        }
    }
}

/// Brings the timings of the event's call up to date; gives them for an event of a call.
fn time(calls: &mut HashMap<Call, Timings>, event: &ua::Event, at: Instant) -> Option<Timings> {
    use ua::Event as E;
    let (call, ends) = match event {
        E::Incoming { call, .. } => {
            calls.insert(*call, Timings::new(at));
            (*call, false)
        }
        E::Ringing { call } | E::Established { call } => (*call, false),
        E::Failed { call, .. } | E::Ended { call, .. } => (*call, true),
        _ => return None,
    };
    let timings = calls.get_mut(&call)?;
    let since = at.saturating_duration_since(timings.started);
    match event {
        E::Ringing { .. } => {
            timings.ringing.get_or_insert(since);
        }
        E::Established { .. } => {
            timings.answered.get_or_insert(since);
        }
        _ if ends => timings.ended = Some(since),
        _ => {}
    }
    let snapshot = *timings;
    if ends {
        calls.remove(&call);
    }
    Some(snapshot)
}

/// An SDP offer (RFC 4566, RFC 3264) for one audio stream at `addr`:`port`, PCMU and PCMA
/// with telephone events.
pub fn audio_offer(addr: IpAddr, port: u16, session: u64) -> Bytes {
    let family = if addr.is_ipv4() { "IP4" } else { "IP6" };
    Bytes::from(format!(
        "v=0\r\no=p2psip {session} {session} IN {family} {addr}\r\ns=p2psip\r\n\
         c=IN {family} {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
    ))
}

fn execute(agent: &mut UserAgent, command: Command, calls: &mut HashMap<Call, Timings>) {
    let t = now();
    // A caller that stopped waiting for the answer has nothing to be told.
    match command {
        Command::Invite { target, reply } => {
            let placed = agent.invite(t, &target).map(|call| {
                calls.insert(call, Timings::new(Instant::from_std(t)));
                (call, agent.call_id(call).unwrap_or_default().to_owned())
            });
            drop(reply.send(placed));
        }
        Command::Answer { call, reply } => drop(reply.send(agent.answer(t, call))),
        Command::Reject {
            call,
            status,
            reply,
        } => drop(reply.send(agent.reject(t, call, status))),
        Command::Hangup { call, reply } => drop(reply.send(agent.hangup(t, call))),
        Command::Register {
            aor,
            expires,
            reply,
        } => drop(reply.send(agent.register(t, &aor, expires))),
        Command::Unregister { aor, reply } => drop(reply.send(agent.unregister(t, &aor))),
        Command::Message {
            target,
            text,
            reply,
        } => drop(reply.send(agent.message(t, &target, "text/plain", text.into()))),
        Command::Options { target, reply } => drop(reply.send(agent.options(t, &target))),
        Command::Registrations { reply } => {
            let mut aors: Vec<String> = agent.registrations().map(str::to_owned).collect();
            aors.sort();
            drop(reply.send(Ok(aors)));
        }
    }
}
