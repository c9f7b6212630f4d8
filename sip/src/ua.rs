//! The user agent core (RFC 3261 §8, §13 to §15): calls placed and received on top of the
//! [`transaction`] layer and [`Dialog`]s. Sans-IO, driven like
//! [`Transactions`]: input through [`UserAgent::handle`], [`UserAgent::handle_timeout`] and
//! the call methods, output through [`UserAgent::poll_transmit`], [`UserAgent::poll_event`]
//! and [`UserAgent::poll_timeout`].
//!
//! What it does by itself: answers OPTIONS (200 with Allow, Accept, Supported), refuses
//! unknown methods (405 with Allow) and what [`check_request`] refuses for a UAS (400, 416,
//! 420, 415, 406...), answers requests outside any known dialog 481, retransmits its 2xx to
//! an INVITE until the ACK comes (§13.3.1.4) and ends the call with a BYE if it never does,
//! ACKs every 2xx it receives (§13.2.2.4), and ends with a BYE the extra dialogs a forked
//! INVITE answered twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::header::{CSeq, CallId, Via};
use crate::transaction::{self, TransactionId, Transactions, Transmit};
use crate::{
    Dialog, DialogId, DialogState, Error, HeaderName, Host, Ids, Message, Method, Peer, Policy,
    Request, Response, Role, StatusCode, Transport, UDP_REQUEST_LIMIT, Uri, check_request,
};

/// How many 3xx answers a call follows before it fails with the last one.
pub const MAX_REDIRECTS: u8 = 5;

/// The methods this core answers, for Allow.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE";

/// How the user agent presents itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// The transaction layer's timers and limits.
    pub transactions: transaction::Config,
    /// Where this agent listens, as put in Via sent-by and Contact, per transport.
    pub listen: Vec<Peer>,
    /// The user part of the Contact and From URIs.
    pub user: String,
    /// Answer every incoming INVITE at once: 180, then 200.
    pub auto_answer: bool,
    /// The SDP answered to an offer (and offered in INVITEs), if any.
    pub sdp: Option<Bytes>,
    /// What a UAS serves ([`Policy`] with [`Role::Uas`]).
    pub policy: Policy,
    /// Who this agent is (From of its requests), e.g. `sip:alice@example.p2p`. Default: the
    /// first AOR it registers, else `sip:<user>@<listen address>`.
    pub aor: Option<String>,
    /// The outbound proxy (RFC 3261 §8.1.2): every out-of-dialog request goes to it, with a
    /// loose route naming it, whatever the Request-URI. Without one, the Request-URI's host
    /// must be an IP address.
    pub outbound: Option<Peer>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            transactions: transaction::Config::default(),
            listen: Vec::new(),
            user: "p2psip".into(),
            auto_answer: false,
            sdp: None,
            policy: Policy::with_role(Role::Uas),
            aor: None,
            outbound: None,
        }
    }
}

/// A handle on a call (an INVITE and the dialog it makes), valid until [`Event::Ended`] or
/// [`Event::Failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Call(u64);

/// A handle on an out-of-dialog request other than INVITE and REGISTER (MESSAGE, OPTIONS),
/// named again in its [`Event::Completed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outgoing(u64);

/// What the application hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new call. Answer with [`UserAgent::answer`], [`UserAgent::ring`] or
    /// [`UserAgent::reject`] (with `auto_answer`, it is already answered).
    Incoming {
        /// The call.
        call: Call,
        /// The INVITE.
        request: Request,
    },
    /// The callee is alerting (a 180 or 183 came).
    Ringing {
        /// The call.
        call: Call,
    },
    /// The call is up: a 2xx came and was ACKed (UAC), or the ACK of our 2xx came (UAS).
    Established {
        /// The call.
        call: Call,
    },
    /// The call never came up: the final response's status (408 on timeout, 503 on a
    /// transport error, 487 when cancelled).
    Failed {
        /// The call.
        call: Call,
        /// Why.
        status: StatusCode,
    },
    /// The call is over (BYE sent and answered, or received).
    Ended {
        /// The call.
        call: Call,
        /// Whether the peer hung up.
        by_peer: bool,
    },
    /// A MESSAGE arrived (already answered 200).
    Message {
        /// The request, with its body.
        request: Request,
    },
    /// A REGISTER was accepted; the agent refreshes it at half of `expires`.
    Registered {
        /// The address-of-record.
        aor: String,
        /// How long the registrar keeps the binding.
        expires: Duration,
    },
    /// The binding is gone: an unregister was accepted, or the registrar granted 0 s.
    Unregistered {
        /// The address-of-record.
        aor: String,
    },
    /// A REGISTER (first or refresh) was refused or timed out; the agent stops refreshing.
    RegistrationFailed {
        /// The address-of-record.
        aor: String,
        /// The final status (408 on timeout, 503 on a transport error).
        status: StatusCode,
        /// The reason phrase, which says why.
        reason: String,
    },
    /// The final answer to a MESSAGE or OPTIONS this agent sent.
    Completed {
        /// The request.
        request: Outgoing,
        /// Its method.
        method: Method,
        /// The final status (408 on timeout, 503 on a transport error).
        status: StatusCode,
        /// The reason phrase.
        reason: String,
    },
}

/// An out-of-dialog client transaction that is not a call.
#[derive(Debug)]
enum Pending {
    Request { id: Outgoing, method: Method },
    Register { aor: String },
}

/// A binding this agent keeps at a registrar (RFC 3261 §10.2): one Call-ID, CSeq counting up.
#[derive(Debug)]
struct Registration {
    call_id: String,
    tag: String,
    cseq: u32,
    /// What the next REGISTER asks for; 0 unregisters.
    expires: u32,
    /// When the next refresh goes, while registered.
    refresh_at: Option<Instant>,
    /// Whether a REGISTER for it is under way.
    in_flight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// UAC: INVITE sent. UAS: INVITE received, not answered.
    Setup,
    /// 2xx sent (UAS) or received (UAC), waiting for the ACK (UAS).
    Answered,
    Established,
    /// BYE sent.
    Ending,
}

#[derive(Debug)]
struct CallState {
    uac: bool,
    phase: Phase,
    /// Our INVITE (UAC) or theirs (UAS).
    invite: Request,
    invite_txn: Option<TransactionId>,
    /// Where in-dialog requests go.
    peer: Peer,
    dialog: Option<Dialog>,
    local_tag: String,
    /// UAS: the 2xx, retransmitted until the ACK. UAC: the ACK, resent for each 2xx.
    repeat: Option<Bytes>,
    interval: Duration,
    give_up: Option<Instant>,
    provisional_seen: bool,
    /// How many 3xx answers this call has followed.
    redirects: u8,
}

impl CallState {
    fn new(
        uac: bool,
        invite: Request,
        txn: TransactionId,
        peer: Peer,
        local_tag: String,
    ) -> CallState {
        CallState {
            uac,
            phase: Phase::Setup,
            invite,
            invite_txn: Some(txn),
            peer,
            dialog: None,
            local_tag,
            repeat: None,
            interval: Duration::ZERO,
            give_up: None,
            provisional_seen: false,
            redirects: 0,
        }
    }
}

/// The user agent core. See the module docs.
#[derive(Debug)]
pub struct UserAgent {
    config: Config,
    ids: Ids,
    tx: Transactions,
    calls: HashMap<Call, CallState>,
    by_dialog: HashMap<DialogId, Call>,
    by_txn: HashMap<TransactionId, Call>,
    timers: BinaryHeap<Reverse<(Instant, Call)>>,
    next_call: u64,
    events: VecDeque<Event>,
    outgoing: HashMap<TransactionId, Pending>,
    next_outgoing: u64,
    registrations: HashMap<String, Registration>,
}

impl UserAgent {
    /// A user agent; `seed` drives its tags, branches and Call-IDs (predictable: for tests,
    /// see [`Ids`]).
    pub fn new(config: Config, seed: u64) -> UserAgent {
        UserAgent::with_ids(config, Ids::new(seed))
    }

    /// A user agent whose tags, branches and Call-IDs come from `ids` ([`Ids::from_os`] in
    /// a node).
    pub fn with_ids(config: Config, ids: Ids) -> UserAgent {
        UserAgent {
            tx: Transactions::new(config.transactions.clone()),
            config,
            ids,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            by_txn: HashMap::new(),
            timers: BinaryHeap::new(),
            next_call: 0,
            events: VecDeque::new(),
            outgoing: HashMap::new(),
            next_outgoing: 0,
            registrations: HashMap::new(),
        }
    }

    /// How many calls are alive.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The Call-ID of a call that is alive.
    pub fn call_id(&self, call: Call) -> Option<&str> {
        let invite = &self.calls.get(&call)?.invite;
        invite.headers().typed::<CallId>()?.ok().map(|id| id.0)
    }

    /// Places a call to `target`, offering the configured SDP: through the outbound proxy if
    /// there is one, else straight to the URI's IP address (name resolution is the node's).
    pub fn invite(&mut self, now: Instant, target: &str) -> Result<Call, Error> {
        let mut peer = self.first_hop(target)?;
        let call_id = self.ids.call_id(&self.host(peer.transport)?);
        let local_tag = self.ids.tag();
        let mut request = self.out_of_dialog(
            Method::Invite,
            target,
            target,
            peer,
            (&call_id, &local_tag, 1),
        )?;
        if let Some(sdp) = self.config.sdp.clone() {
            request.set_body("application/sdp", sdp);
        }
        // §18.1.1: too large for UDP goes over TCP, with the Via saying so.
        if peer.transport == Transport::Udp && request.encoded_len() > UDP_REQUEST_LIMIT {
            peer.transport = Transport::Tcp;
            let via = self.via(peer.transport)?;
            request.headers_mut().set_first(HeaderName::Via, via);
        }
        let txn = self.tx.start_client(now, request.clone(), peer)?;
        let call = self.new_call(CallState::new(true, request, txn, peer, local_tag));
        self.by_txn.insert(txn, call);
        self.pump(now);
        Ok(call)
    }

    /// Sends 180 Ringing for an incoming call (an early dialog).
    pub fn ring(&mut self, now: Instant, call: Call) -> Result<(), Error> {
        self.uas_respond(now, call, StatusCode::RINGING, None)
    }

    /// Answers an incoming call with 200 and the configured SDP; the 2xx is retransmitted
    /// until the ACK comes.
    pub fn answer(&mut self, now: Instant, call: Call) -> Result<(), Error> {
        let sdp = self.config.sdp.clone();
        self.uas_respond(now, call, StatusCode::OK, sdp)
    }

    /// Refuses an incoming call with `status` (a 3xx-6xx).
    pub fn reject(&mut self, now: Instant, call: Call, status: StatusCode) -> Result<(), Error> {
        self.uas_respond(now, call, status, None)
    }

    /// Hangs up: BYE once the call is answered, CANCEL while an outgoing one is ringing
    /// (§9.1), 486 for an incoming one not answered yet.
    pub fn hangup(&mut self, now: Instant, call: Call) -> Result<(), Error> {
        let state = self.calls.get(&call).ok_or(Error::UnknownTransaction)?;
        match (state.uac, state.phase) {
            (_, Phase::Answered | Phase::Established) => self.bye(now, call),
            (true, Phase::Setup) => self.cancel(now, call),
            (false, Phase::Setup) => self.uas_respond(
                now,
                call,
                StatusCode::new(486).unwrap_or(StatusCode::DECLINE),
                None,
            ),
            (_, Phase::Ending) => Ok(()),
        }
    }

    /// Registers `aor` (RFC 3261 §10.2) for `expires` seconds at the outbound proxy (or the
    /// AOR's host), with this agent's Contact, and keeps it refreshed until
    /// [`UserAgent::unregister`]. The outcome is [`Event::Registered`] or
    /// [`Event::RegistrationFailed`].
    pub fn register(&mut self, now: Instant, aor: &str, expires: u32) -> Result<(), Error> {
        if expires == 0 {
            return Err(Error::NotAllowed(
                "a registration lasts at least one second",
            ));
        }
        self.first_hop(aor)?;
        let registration = match self.registrations.remove(aor) {
            Some(r) => r,
            None => Registration {
                call_id: self.ids.call_id(&self.host(self.default_transport())?),
                tag: self.ids.tag(),
                cseq: 0,
                expires,
                refresh_at: None,
                in_flight: false,
            },
        };
        self.registrations.insert(
            aor.to_owned(),
            Registration {
                expires,
                ..registration
            },
        );
        self.send_register(now, aor)
    }

    /// Removes the binding of `aor` (a REGISTER with `Expires: 0`) and stops refreshing it;
    /// [`Event::Unregistered`] follows.
    pub fn unregister(&mut self, now: Instant, aor: &str) -> Result<(), Error> {
        let registration = self.registrations.get_mut(aor).ok_or(Error::NotAllowed(
            "that AOR is not registered by this agent",
        ))?;
        registration.expires = 0;
        registration.refresh_at = None;
        self.send_register(now, aor)
    }

    /// Sends a MESSAGE (RFC 3428) with `body` of `content_type` to `target`;
    /// [`Event::Completed`] tells how it went.
    pub fn message(
        &mut self,
        now: Instant,
        target: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Outgoing, Error> {
        self.request(now, Method::Message, target, Some((content_type, body)))
    }

    /// Sends an OPTIONS to `target` (a ping, RFC 3261 §11); [`Event::Completed`] tells how
    /// it went.
    pub fn options(&mut self, now: Instant, target: &str) -> Result<Outgoing, Error> {
        self.request(now, Method::Options, target, None)
    }

    /// The AORs registered (or being registered) by this agent.
    pub fn registrations(&self) -> impl Iterator<Item = &str> {
        self.registrations.keys().map(String::as_str)
    }

    /// A received message.
    pub fn handle(&mut self, now: Instant, message: Message, source: Peer) -> Result<(), Error> {
        let result = self.tx.handle(now, message, source);
        self.pump(now);
        result
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        while let Some(Reverse((at, call))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.retransmit_ok(now, call, at);
        }
        let due: Vec<String> = self
            .registrations
            .iter()
            .filter(|(_, r)| !r.in_flight && r.refresh_at.is_some_and(|at| at <= now))
            .map(|(aor, _)| aor.clone())
            .collect();
        for aor in due {
            if let Err(e) = self.send_register(now, &aor) {
                self.registration_failed(&aor, StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            }
        }
        self.pump(now);
    }

    /// A send failed.
    pub fn transport_error(&mut self, now: Instant, transaction: TransactionId) {
        self.tx.transport_error(now, transaction);
        self.pump(now);
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tx.poll_transmit()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`UserAgent::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ours = self.timers.peek().map(|Reverse((at, _))| *at);
        let refresh = self
            .registrations
            .values()
            .filter(|r| !r.in_flight)
            .filter_map(|r| r.refresh_at)
            .min();
        transaction::earliest(self.tx.poll_timeout(), transaction::earliest(ours, refresh))
    }

    /// Moves the transaction layer's output and events through this core.
    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.tx.poll_event() {
            self.on_event(now, event);
        }
    }

    fn on_event(&mut self, now: Instant, event: transaction::Event) {
        use transaction::Event as T;
        match event {
            T::Request {
                transaction,
                request,
                source,
            } => self.on_request(now, transaction, request, source),
            T::Ack { request, .. } => self.on_ack(&request),
            T::Response {
                transaction,
                response,
            } => self.on_response(now, transaction, response),
            T::StrayResponse { response, .. } => self.on_stray(&response),
            T::Timeout { transaction } => {
                self.on_failure(now, transaction, StatusCode::REQUEST_TIMEOUT)
            }
            T::TransportError { transaction } => {
                self.on_failure(now, transaction, StatusCode::SERVICE_UNAVAILABLE)
            }
            T::Terminated { transaction } => {
                self.by_txn.remove(&transaction);
                if let Some(pending) = self.outgoing.remove(&transaction) {
                    // Ended without a final response reported: say so.
                    self.finish(
                        now,
                        pending,
                        StatusCode::REQUEST_TIMEOUT,
                        "Request Timeout",
                        None,
                    );
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, txn: TransactionId, request: Request, source: Peer) {
        let local_tag = self.ids.tag();
        if let Err(rejection) = check_request(&request, &self.config.policy) {
            tracing::debug!(
                transaction = ?txn,
                call_id = request.headers().get(HeaderName::CallId).map(String::from_utf8_lossy).unwrap_or_default().as_ref(),
                status = %rejection.status,
                reason = %rejection.reason,
                "request refused"
            );
            let resp = rejection.response(&request, Some(&local_tag), &self.config.policy);
            let _ = self.tx.respond(now, txn, resp);
            return;
        }
        let method = request.method().clone();
        if let Some(id) = DialogId::of_request(&request) {
            self.in_dialog(now, txn, id, request);
            return;
        }
        match method {
            Method::Invite => self.incoming_call(now, txn, request, source, local_tag),
            Method::Cancel => self.on_cancel(now, txn, &request),
            Method::Options => {
                let mut ok =
                    Response::for_request(&request, StatusCode::OK, "OK", Some(&local_tag));
                let h = ok.headers_mut();
                h.push(HeaderName::Allow, ALLOW);
                h.push(HeaderName::Accept, self.config.policy.accept.join(", "));
                h.push(
                    HeaderName::Supported,
                    self.config.policy.supported.join(", "),
                );
                h.push(HeaderName::ContentLength, "0");
                let _ = self.tx.respond(now, txn, ok);
            }
            Method::Message => {
                self.respond_simple(now, txn, &request, StatusCode::OK, &local_tag);
                self.events.push_back(Event::Message { request });
            }
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.respond_simple(
                    now,
                    txn,
                    &request,
                    StatusCode::CALL_DOES_NOT_EXIST,
                    &local_tag,
                );
            }
            _ => {
                let mut resp = Response::for_request(
                    &request,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method Not Allowed",
                    Some(&local_tag),
                );
                resp.headers_mut().push(HeaderName::Allow, ALLOW);
                resp.headers_mut().push(HeaderName::ContentLength, "0");
                let _ = self.tx.respond(now, txn, resp);
            }
        }
    }

    fn incoming_call(
        &mut self,
        now: Instant,
        txn: TransactionId,
        request: Request,
        source: Peer,
        local_tag: String,
    ) {
        let call = self.new_call(CallState::new(
            false,
            request.clone(),
            txn,
            source,
            local_tag,
        ));
        self.by_txn.insert(txn, call);
        self.events.push_back(Event::Incoming { call, request });
        // A phone that answers by itself still rings first, as people's phones do: the
        // caller hears the 180 (and can time its session request delay, RFC 6076).
        if self.config.auto_answer
            && let Err(e) = self.ring(now, call).and_then(|()| self.answer(now, call))
        {
            // Never leave a call waiting: what cannot be answered is refused.
            tracing::debug!(error = %e, "auto-answer failed: 500");
            let _ = self.reject(now, call, StatusCode::SERVER_INTERNAL_ERROR);
        }
    }

    fn in_dialog(&mut self, now: Instant, txn: TransactionId, id: DialogId, request: Request) {
        let local_tag = id.local_tag.clone();
        let Some(&call) = self.by_dialog.get(&id) else {
            tracing::debug!(dialog = %id, method = %request.method(), "request for no known dialog: 481");
            self.respond_simple(
                now,
                txn,
                &request,
                StatusCode::CALL_DOES_NOT_EXIST,
                &local_tag,
            );
            return;
        };
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(dialog) = state.dialog.as_mut() else {
            return;
        };
        if let Err(rejection) = dialog.receive(&request) {
            tracing::debug!(dialog = %id, status = %rejection.status, reason = %rejection.reason, "in-dialog request refused");
            let resp = rejection.response(&request, None, &self.config.policy);
            let _ = self.tx.respond(now, txn, resp);
            return;
        }
        match request.method() {
            Method::Bye => {
                self.respond_simple(now, txn, &request, StatusCode::OK, &local_tag);
                self.end_call(call, true);
            }
            Method::Invite => {
                // A re-INVITE: accept the session as it was.
                let mut ok = Response::for_request(&request, StatusCode::OK, "OK", None);
                self.add_contact(&mut ok, state_transport(&request));
                if let Some(sdp) = self.config.sdp.clone() {
                    ok.set_body("application/sdp", sdp);
                } else {
                    ok.headers_mut().push(HeaderName::ContentLength, "0");
                }
                let _ = self.tx.respond(now, txn, ok);
                if let Some(d) = self.calls.get_mut(&call).and_then(|s| s.dialog.as_mut()) {
                    d.answered_invite();
                }
            }
            _ => self.respond_simple(now, txn, &request, StatusCode::OK, &local_tag),
        }
    }

    fn on_cancel(&mut self, now: Instant, txn: TransactionId, cancel: &Request) {
        let local_tag = self.ids.tag();
        let target = self
            .tx
            .cancel_target(cancel)
            .and_then(|t| self.by_txn.get(&t).copied());
        let Some(call) = target else {
            self.respond_simple(
                now,
                txn,
                cancel,
                StatusCode::CALL_DOES_NOT_EXIST,
                &local_tag,
            );
            return;
        };
        self.respond_simple(now, txn, cancel, StatusCode::OK, &local_tag);
        if self
            .calls
            .get(&call)
            .is_some_and(|s| s.phase == Phase::Setup)
        {
            let _ = self.uas_respond(now, call, StatusCode::REQUEST_TERMINATED, None);
        }
    }

    fn on_ack(&mut self, ack: &Request) {
        let Some(id) = DialogId::of_request(ack) else {
            tracing::debug!("ACK without a To tag dropped");
            return;
        };
        let Some(&call) = self.by_dialog.get(&id) else {
            tracing::debug!(dialog = %id, "ACK for no known dialog dropped");
            return;
        };
        if let Some(state) = self.calls.get_mut(&call)
            && state.phase == Phase::Answered
            && !state.uac
        {
            state.phase = Phase::Established;
            state.repeat = None;
            state.give_up = None;
            self.events.push_back(Event::Established { call });
        }
    }

    fn on_response(&mut self, now: Instant, txn: TransactionId, response: Response) {
        if response.status().is_final()
            && let Some(pending) = self.outgoing.remove(&txn)
        {
            let reason = response.reason().to_owned();
            self.finish(now, pending, response.status(), &reason, Some(&response));
            return;
        }
        let Some(&call) = self.by_txn.get(&txn) else {
            return;
        };
        let Some(state) = self.calls.get(&call) else {
            return;
        };
        let is_invite = state.invite_txn == Some(txn);
        let status = response.status();
        if !is_invite {
            // BYE, CANCEL: a final response to a BYE ends the call.
            let bye = response
                .headers()
                .typed::<CSeq>()
                .and_then(Result::ok)
                .is_some_and(|c| c.is(&Method::Bye));
            if bye && status.is_final() {
                self.end_call(call, false);
            }
            return;
        }
        if status.is_provisional() {
            if status.as_u16() > 100 {
                if let Some(s) = self.calls.get_mut(&call) {
                    s.provisional_seen = true;
                    if s.dialog.is_none()
                        && let Ok(d) = Dialog::from_response(&s.invite, &response)
                    {
                        s.dialog = Some(d);
                    }
                }
                if matches!(status.as_u16(), 180 | 183) {
                    self.events.push_back(Event::Ringing { call });
                }
            } else if let Some(s) = self.calls.get_mut(&call) {
                s.provisional_seen = true;
            }
            return;
        }
        if status.is_success() {
            self.uac_success(now, call, &response);
        } else if status.as_u16() / 100 == 3 && self.follow_redirect(now, call, &response) {
            tracing::debug!(call = ?call, %status, "redirected");
        } else {
            self.fail_call(call, status);
        }
    }

    /// §8.1.3.4: a 3xx names where to try instead: the same INVITE (same Call-ID, From and To,
    /// next CSeq, new branch) to the best Contact, at most [`MAX_REDIRECTS`] times. Returns
    /// whether the call goes on.
    fn follow_redirect(&mut self, now: Instant, call: Call, response: &Response) -> bool {
        let mut contacts: Vec<(u16, String)> = response
            .headers()
            .typed_all::<crate::header::Contact>()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.q().unwrap_or(1000),
                    c.address()?.uri().as_str().to_owned(),
                ))
            })
            .collect();
        contacts.sort_by_key(|(q, _)| Reverse(*q));
        let Some(state) = self.calls.get(&call) else {
            return false;
        };
        if state.redirects >= MAX_REDIRECTS {
            return false;
        }
        let Some(peer) = contacts
            .iter()
            .find_map(|(_, uri)| peer_for_uri(uri).ok().map(|p| (uri.clone(), p)))
        else {
            return false;
        };
        let (target, peer) = peer;
        let mut invite = state.invite.clone();
        let seq = invite
            .headers()
            .typed::<CSeq>()
            .and_then(Result::ok)
            .map_or(1, |c| c.seq());
        let Ok(via) = self.via(peer.transport) else {
            return false;
        };
        if invite.set_uri(&target).is_err() {
            return false;
        }
        let h = invite.headers_mut();
        h.set_first(HeaderName::Via, via);
        h.set(HeaderName::CSeq, format!("{} INVITE", seq.wrapping_add(1)));
        let Ok(txn) = self.tx.start_client(now, invite.clone(), peer) else {
            return false;
        };
        self.by_txn.insert(txn, call);
        let Some(state) = self.calls.get_mut(&call) else {
            return false;
        };
        state.invite = invite;
        state.invite_txn = Some(txn);
        state.peer = peer;
        state.provisional_seen = false;
        state.dialog = None;
        state.redirects += 1;
        true
    }

    /// A 2xx to our INVITE (§13.2.2.4): the first one confirms the call; every one is ACKed;
    /// one from another fork gets ACK then BYE.
    fn uac_success(&mut self, now: Instant, call: Call, response: &Response) {
        let Some(id) = DialogId::of_response(response) else {
            return;
        };
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        let seq = state
            .invite
            .headers()
            .typed::<CSeq>()
            .and_then(Result::ok)
            .map_or(1, |c| c.seq());
        let same = state.dialog.as_ref().is_some_and(|d| *d.id() == id);
        if same
            || state.dialog.is_none()
            || state.phase == Phase::Setup
                && state
                    .dialog
                    .as_ref()
                    .is_some_and(|d| d.state() == DialogState::Early)
        {
            if state.phase != Phase::Setup {
                // A retransmitted 2xx: the same ACK again.
                if let Some(ack) = state.repeat.clone() {
                    self.tx.send(state.peer, ack);
                }
                return;
            }
            let dialog = match state.dialog.take() {
                Some(mut d) if *d.id() == id => d.confirm(response).map(|()| d),
                _ => Dialog::from_response(&state.invite, response),
            };
            let Ok(dialog) = dialog else { return };
            let transport = state.peer.transport;
            let Ok(via) = self.via(transport) else { return };
            let Some(state) = self.calls.get_mut(&call) else {
                return;
            };
            let Ok(ack) = dialog.ack(seq, &via) else {
                return;
            };
            let peer = peer_for_uri(&dialog.next_hop())
                .map(|p| Peer { transport, ..p })
                .unwrap_or(state.peer);
            let bytes = ack.to_bytes();
            self.tx.send(peer, bytes.clone());
            state.peer = peer;
            state.repeat = Some(bytes);
            state.phase = Phase::Established;
            self.by_dialog.insert(dialog.id().clone(), call);
            state.dialog = Some(dialog);
            self.events.push_back(Event::Established { call });
        } else {
            // Another fork answered: ACK it and end it (§13.2.2.4).
            let Ok(mut extra) = Dialog::from_response(&state.invite, response) else {
                return;
            };
            let transport = state.peer.transport;
            let (Ok(via_ack), Ok(via_bye)) = (self.via(transport), self.via(transport)) else {
                return;
            };
            let peer = peer_for_uri(&extra.next_hop()).map(|p| Peer { transport, ..p });
            let Ok(peer) = peer else { return };
            if let Ok(ack) = extra.ack(seq, &via_ack) {
                self.tx.send(peer, ack.to_bytes());
            }
            if let Ok(bye) = extra.request(Method::Bye, &via_bye) {
                let _ = self.tx.start_client(now, bye, peer);
            }
        }
    }

    fn on_stray(&mut self, response: &Response) {
        // A 2xx retransmitted after the INVITE transaction ended: ACK it again.
        if !response.status().is_success() {
            return;
        }
        let Some(id) = DialogId::of_response(response) else {
            return;
        };
        if let Some(state) = self.by_dialog.get(&id).and_then(|c| self.calls.get(c))
            && state.uac
            && let Some(ack) = state.repeat.clone()
        {
            self.tx.send(state.peer, ack);
        }
    }

    fn on_failure(&mut self, now: Instant, txn: TransactionId, status: StatusCode) {
        if let Some(pending) = self.outgoing.remove(&txn) {
            self.finish(now, pending, status, status.canonical_reason(), None);
            return;
        }
        let Some(&call) = self.by_txn.get(&txn) else {
            return;
        };
        let Some(state) = self.calls.get(&call) else {
            return;
        };
        if state.invite_txn == Some(txn) && state.uac && state.phase == Phase::Setup {
            self.fail_call(call, status);
        } else if state.phase == Phase::Ending {
            self.end_call(call, false);
        }
    }

    fn uas_respond(
        &mut self,
        now: Instant,
        call: Call,
        status: StatusCode,
        body: Option<Bytes>,
    ) -> Result<(), Error> {
        let state = self.calls.get(&call).ok_or(Error::UnknownTransaction)?;
        if state.uac || state.phase != Phase::Setup {
            return Err(Error::NotAllowed(
                "only an incoming call not yet answered takes a response",
            ));
        }
        let txn = state.invite_txn.ok_or(Error::UnknownTransaction)?;
        let mut resp = Response::for_request(
            &state.invite,
            status,
            status.canonical_reason(),
            Some(&state.local_tag),
        );
        let transport = state.peer.transport;
        if status.as_u16() > 100 && status.as_u16() < 300 {
            // §12.1.1: a response that makes a dialog carries the request's Record-Route.
            for rr in state.invite.headers().get_all(HeaderName::RecordRoute) {
                resp.headers_mut().push(HeaderName::RecordRoute, rr.value);
            }
            self.add_contact(&mut resp, transport);
        }
        match body {
            Some(sdp) => resp.set_body("application/sdp", sdp),
            None => resp.headers_mut().push(HeaderName::ContentLength, "0"),
        }
        let state = self.calls.get_mut(&call).ok_or(Error::UnknownTransaction)?;
        if status.as_u16() > 100 && status.as_u16() < 300 && state.dialog.is_none() {
            let dstate = if status.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            };
            let dialog = Dialog::from_request(&state.invite, &state.local_tag, dstate)?;
            self.by_dialog.insert(dialog.id().clone(), call);
            state.dialog = Some(dialog);
        }
        if status.is_success() {
            state.phase = Phase::Answered;
            if !transport.is_reliable() {
                // §13.3.1.4: retransmit the 2xx from T1, doubling to T2, until the ACK.
                let t1 = self.config.transactions.t1;
                state.repeat = Some(resp.to_bytes());
                state.interval = t1;
                state.give_up = Some(now + self.config.transactions.timeout());
                self.timers.push(Reverse((now + t1, call)));
            }
        }
        self.tx.respond(now, txn, resp)?;
        if !status.is_provisional() && !status.is_success() {
            self.fail_call(call, status);
        }
        self.pump(now);
        Ok(())
    }

    fn retransmit_ok(&mut self, now: Instant, call: Call, at: Instant) {
        let t2 = self.config.transactions.t2;
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        let (Some(ok), Some(give_up)) = (state.repeat.clone(), state.give_up) else {
            return;
        };
        if state.phase != Phase::Answered || state.uac {
            return;
        }
        if at >= give_up {
            // §13.3.1.4: no ACK in 64*T1: the session ends with a BYE (or at once, if no BYE
            // can be sent).
            state.repeat = None;
            if self.bye(now, call).is_err() {
                self.end_call(call, false);
            }
            return;
        }
        self.tx.send(state.peer, ok);
        state.interval = (state.interval * 2).min(t2);
        // The last wait ends exactly at 64*T1, where the BYE goes.
        self.timers
            .push(Reverse(((now + state.interval).min(give_up), call)));
    }

    fn bye(&mut self, now: Instant, call: Call) -> Result<(), Error> {
        let state = self.calls.get(&call).ok_or(Error::UnknownTransaction)?;
        let transport = state.peer.transport;
        let via = self.via(transport)?;
        let state = self.calls.get_mut(&call).ok_or(Error::UnknownTransaction)?;
        let dialog = state
            .dialog
            .as_mut()
            .ok_or(Error::NotAllowed("no dialog to end"))?;
        let bye = dialog.request(Method::Bye, &via)?;
        let peer = peer_for_uri(&dialog.next_hop())
            .map(|p| Peer { transport, ..p })
            .unwrap_or(state.peer);
        state.phase = Phase::Ending;
        state.repeat = None;
        let txn = self.tx.start_client(now, bye, peer)?;
        self.by_txn.insert(txn, call);
        self.pump(now);
        Ok(())
    }

    fn cancel(&mut self, now: Instant, call: Call) -> Result<(), Error> {
        let state = self.calls.get(&call).ok_or(Error::UnknownTransaction)?;
        if !state.provisional_seen {
            return Err(Error::NotAllowed(
                "a CANCEL waits for a provisional response (§9.1)",
            ));
        }
        // §9.1: Request-URI, Call-ID, To, From, CSeq number, top Via and Route of the INVITE.
        let invite = &state.invite;
        let mut cancel = Request::new(Method::Cancel, invite.uri_str())?;
        let h = cancel.headers_mut();
        for name in [
            HeaderName::Via,
            HeaderName::MaxForwards,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
        ] {
            if let Some(v) = invite.headers().get(name) {
                h.push(name, crate::text::first_element(v));
            }
        }
        for route in invite.headers().get_all(HeaderName::Route) {
            h.push(HeaderName::Route, route.value);
        }
        let seq = invite
            .headers()
            .typed::<CSeq>()
            .and_then(Result::ok)
            .map_or(1, |c| c.seq());
        h.push(HeaderName::CSeq, format!("{seq} CANCEL"));
        h.push(HeaderName::ContentLength, "0");
        let peer = state.peer;
        let txn = self.tx.start_client(now, cancel, peer)?;
        self.by_txn.insert(txn, call);
        self.pump(now);
        Ok(())
    }

    fn fail_call(&mut self, call: Call, status: StatusCode) {
        if let Some(state) = self.calls.remove(&call) {
            if let Some(d) = state.dialog {
                self.by_dialog.remove(d.id());
            }
            self.events.push_back(Event::Failed { call, status });
        }
    }

    fn end_call(&mut self, call: Call, by_peer: bool) {
        if let Some(state) = self.calls.remove(&call) {
            if let Some(d) = state.dialog {
                self.by_dialog.remove(d.id());
            }
            self.events.push_back(Event::Ended { call, by_peer });
        }
    }

    fn respond_simple(
        &mut self,
        now: Instant,
        txn: TransactionId,
        request: &Request,
        status: StatusCode,
        to_tag: &str,
    ) {
        let mut resp =
            Response::for_request(request, status, status.canonical_reason(), Some(to_tag));
        resp.headers_mut().push(HeaderName::ContentLength, "0");
        let _ = self.tx.respond(now, txn, resp);
    }

    fn new_call(&mut self, state: CallState) -> Call {
        let call = Call(self.next_call);
        self.next_call += 1;
        self.calls.insert(call, state);
        call
    }

    /// The listening address for `transport`.
    fn local(&self, transport: Transport) -> Result<SocketAddr, Error> {
        self.config
            .listen
            .iter()
            .find(|p| p.transport == transport)
            .map(|p| p.addr)
            .ok_or(Error::NotAllowed(
                "the agent does not listen on that transport",
            ))
    }

    fn host(&self, transport: Transport) -> Result<String, Error> {
        Ok(host_port(self.local(transport)?))
    }

    /// A top Via for a new request over `transport`, with a fresh branch and rport.
    fn via(&mut self, transport: Transport) -> Result<String, Error> {
        let host = self.host(transport)?;
        Ok(format!(
            "SIP/2.0/{transport} {host};branch={};rport",
            self.ids.branch()
        ))
    }

    fn add_contact(&self, resp: &mut Response, transport: Transport) {
        if let Ok(contact) = self.contact(transport) {
            resp.headers_mut().push(HeaderName::Contact, contact);
        }
    }

    /// An out-of-dialog request (§8.1.1) to `target`, sent to `peer`: From is this agent's
    /// identity, To is `to`; a request to the outbound proxy carries a loose route naming it.
    fn out_of_dialog(
        &mut self,
        method: Method,
        target: &str,
        to: &str,
        peer: Peer,
        ids: (&str, &str, u32),
    ) -> Result<Request, Error> {
        let (call_id, tag, cseq) = ids;
        let via = self.via(peer.transport)?;
        let from = self.identity(peer.transport)?;
        let mut req = Request::new(method.clone(), target)?;
        let h = req.headers_mut();
        h.push(HeaderName::Via, via);
        h.push(HeaderName::MaxForwards, "70");
        if self.config.outbound == Some(peer) {
            h.push(
                HeaderName::Route,
                format!(
                    "<sip:{};lr{}>",
                    host_port(peer.addr),
                    transport_param(peer.transport)
                ),
            );
        }
        h.push(HeaderName::From, format!("<{from}>;tag={tag}"));
        h.push(HeaderName::To, format!("<{to}>"));
        h.push(HeaderName::CallId, call_id);
        h.push(HeaderName::CSeq, format!("{cseq} {method}"));
        if matches!(method, Method::Invite | Method::Register) {
            h.push(HeaderName::Contact, self.contact(peer.transport)?);
        }
        h.push(HeaderName::Allow, ALLOW);
        h.push(HeaderName::ContentLength, "0");
        Ok(req)
    }

    /// This agent's Contact for `transport`.
    fn contact(&self, transport: Transport) -> Result<String, Error> {
        Ok(format!(
            "<sip:{}@{}{}>",
            self.config.user,
            self.host(transport)?,
            transport_param(transport)
        ))
    }

    /// Who this agent says it is (see [`Config::aor`]).
    fn identity(&self, transport: Transport) -> Result<String, Error> {
        if let Some(aor) = &self.config.aor {
            return Ok(aor.clone());
        }
        if let Some(aor) = self.registrations.keys().min() {
            return Ok(aor.clone());
        }
        Ok(format!(
            "sip:{}@{}",
            self.config.user,
            self.host(transport)?
        ))
    }

    /// Where an out-of-dialog request for `target` goes first: the outbound proxy, else the
    /// URI's own address.
    fn first_hop(&self, target: &str) -> Result<Peer, Error> {
        match self.config.outbound {
            Some(proxy) => {
                Uri::parse(target)?;
                Ok(proxy)
            }
            None => peer_for_uri(target),
        }
    }

    /// The transport of the outbound proxy, else the first one this agent listens on.
    fn default_transport(&self) -> Transport {
        self.config
            .outbound
            .or_else(|| self.config.listen.first().copied())
            .map_or(Transport::Udp, |p| p.transport)
    }

    /// Starts a MESSAGE or OPTIONS.
    fn request(
        &mut self,
        now: Instant,
        method: Method,
        target: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<Outgoing, Error> {
        let peer = self.first_hop(target)?;
        let call_id = self.ids.call_id(&self.host(peer.transport)?);
        let tag = self.ids.tag();
        let mut request =
            self.out_of_dialog(method.clone(), target, target, peer, (&call_id, &tag, 1))?;
        if let Some((content_type, body)) = body {
            request.set_body(content_type, body);
        }
        let txn = self.tx.start_client(now, request, peer)?;
        let id = Outgoing(self.next_outgoing);
        self.next_outgoing += 1;
        self.outgoing.insert(txn, Pending::Request { id, method });
        self.pump(now);
        Ok(id)
    }

    /// Sends the REGISTER of a registration: the next CSeq, the expiry it wants.
    fn send_register(&mut self, now: Instant, aor: &str) -> Result<(), Error> {
        let peer = self.first_hop(aor)?;
        let registrar = registrar_uri(aor)?;
        let registration = self.registrations.get_mut(aor).ok_or(Error::NotAllowed(
            "that AOR is not registered by this agent",
        ))?;
        registration.cseq += 1;
        registration.in_flight = true;
        let ids = (
            registration.call_id.clone(),
            registration.tag.clone(),
            registration.cseq,
        );
        let expires = registration.expires;
        let built = self.out_of_dialog(
            Method::Register,
            &registrar,
            aor,
            peer,
            (&ids.0, &ids.1, ids.2),
        );
        let sent = built.and_then(|mut request| {
            request
                .headers_mut()
                .set_first(HeaderName::Expires, expires.to_string());
            self.tx.start_client(now, request, peer)
        });
        match sent {
            Ok(txn) => {
                self.outgoing.insert(
                    txn,
                    Pending::Register {
                        aor: aor.to_owned(),
                    },
                );
                self.pump(now);
                Ok(())
            }
            Err(e) => {
                if let Some(r) = self.registrations.get_mut(aor) {
                    r.in_flight = false;
                }
                Err(e)
            }
        }
    }

    /// The final outcome of a MESSAGE, OPTIONS or REGISTER.
    fn finish(
        &mut self,
        now: Instant,
        pending: Pending,
        status: StatusCode,
        reason: &str,
        response: Option<&Response>,
    ) {
        match pending {
            Pending::Request { id, method } => self.events.push_back(Event::Completed {
                request: id,
                method,
                status,
                reason: reason.to_owned(),
            }),
            Pending::Register { aor } => self.registered(now, &aor, status, reason, response),
        }
    }

    /// The final response to a REGISTER (§10.2.4, §10.2.8).
    fn registered(
        &mut self,
        now: Instant,
        aor: &str,
        status: StatusCode,
        reason: &str,
        response: Option<&Response>,
    ) {
        let Some(registration) = self.registrations.get_mut(aor) else {
            return;
        };
        registration.in_flight = false;
        let asked = registration.expires;
        if status.is_success() {
            let contact = self.contact(self.default_transport()).unwrap_or_default();
            let granted = response.map_or(asked, |r| granted_expiry(r, &contact, asked));
            if asked == 0 || granted == 0 {
                self.registrations.remove(aor);
                self.events.push_back(Event::Unregistered {
                    aor: aor.to_owned(),
                });
                return;
            }
            if let Some(r) = self.registrations.get_mut(aor) {
                r.refresh_at = Some(now + Duration::from_secs(u64::from(granted / 2).max(1)));
            }
            self.events.push_back(Event::Registered {
                aor: aor.to_owned(),
                expires: Duration::from_secs(u64::from(granted)),
            });
            return;
        }
        // §10.2.8: 423 names the shortest interval the registrar takes; ask again with it.
        let min = response
            .filter(|_| status.as_u16() == 423)
            .and_then(|r| r.headers().get(HeaderName::MinExpires))
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok());
        if let Some(min) = min.filter(|&m| m > asked && asked > 0) {
            if let Some(r) = self.registrations.get_mut(aor) {
                r.expires = min;
            }
            if self.send_register(now, aor).is_ok() {
                return;
            }
        }
        self.registration_failed(aor, status, reason);
    }

    fn registration_failed(&mut self, aor: &str, status: StatusCode, reason: &str) {
        if self.registrations.remove(aor).is_some() {
            self.events.push_back(Event::RegistrationFailed {
                aor: aor.to_owned(),
                status,
                reason: reason.to_owned(),
            });
        }
    }
}

/// The expiry a 2xx to a REGISTER granted our `contact` (§10.2.4): its Contact's `expires`,
/// else the Expires header, else what was asked.
fn granted_expiry(response: &Response, contact: &str, asked: u32) -> u32 {
    let ours = contact.trim_start_matches('<').trim_end_matches('>');
    let from_contact = response
        .headers()
        .typed_all::<crate::header::Contact>()
        .flatten()
        .find(|c| c.address().is_some_and(|a| a.uri().as_str() == ours))
        .and_then(|c| c.expires());
    from_contact
        .or_else(|| {
            response
                .headers()
                .get(HeaderName::Expires)
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        })
        .unwrap_or(asked)
}

/// The Request-URI of a REGISTER for `aor` (§10.2): the AOR without its user part.
fn registrar_uri(aor: &str) -> Result<String, Error> {
    let parsed = Uri::parse(aor)?;
    let sip = parsed.as_sip().ok_or(Error::NotAllowed(
        "only sip: and sips: AORs can be registered",
    ))?;
    let scheme = if sip.is_secure() { "sips" } else { "sip" };
    let host = match sip.host() {
        Host::Ipv4(a) => a.to_string(),
        Host::Ipv6(a) => format!("[{a}]"),
        Host::Domain(d) => d.to_string(),
    };
    Ok(match sip.port() {
        Some(port) => format!("{scheme}:{host}:{port}"),
        None => format!("{scheme}:{host}"),
    })
}

/// `;transport=tcp` and the like; nothing for UDP.
fn transport_param(transport: Transport) -> String {
    if transport == Transport::Udp {
        String::new()
    } else {
        format!(";transport={}", transport.as_str().to_ascii_lowercase())
    }
}

/// The transport a request came over, from its top Via.
fn state_transport(request: &Request) -> Transport {
    request
        .headers()
        .typed::<Via>()
        .and_then(Result::ok)
        .and_then(|v| Transport::from_token(v.transport()))
        .unwrap_or(Transport::Udp)
}

fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

/// Where a `sip:`/`sips:` URI with an IP host points (RFC 3263 without DNS): the address,
/// the port or the transport's default, and the transport from `transport=` or the scheme.
pub fn peer_for_uri(uri: &str) -> Result<Peer, Error> {
    let parsed = Uri::parse(uri)?;
    let sip = parsed
        .as_sip()
        .ok_or(Error::NotAllowed("only sip: and sips: URIs can be reached"))?;
    let transport = match sip.params().get("transport").flatten() {
        Some(t) => Transport::from_token(t).ok_or(Error::NotAllowed("unknown transport"))?,
        None if sip.is_secure() => Transport::Tls,
        None => Transport::Udp,
    };
    let ip = match sip.host() {
        Host::Ipv4(a) => IpAddr::V4(a),
        Host::Ipv6(a) => IpAddr::V6(a),
        Host::Domain(_) => return Err(Error::NotAllowed("a host name needs resolving first")),
    };
    let port = sip.port().unwrap_or(transport.default_port());
    Ok(Peer::new(transport, SocketAddr::new(ip, port)))
}
