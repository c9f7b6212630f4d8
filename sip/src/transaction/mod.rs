//! The transaction layer: RFC 3261 §17 client and server transactions, INVITE and non-INVITE,
//! with the Accepted state of RFC 6026. Sans-IO.
//!
//! [`Transactions`] holds every transaction of an endpoint. A driver (in `p2psip-node`, or a
//! test on virtual time) feeds it and drains it, in this order, whenever something happens:
//!
//! 1. input: [`Transactions::handle`] for a received message, [`Transactions::handle_timeout`]
//!    when the deadline of [`Transactions::poll_timeout`] has passed,
//!    [`Transactions::transport_error`] when a send failed; and from the transaction user (the
//!    UA core or proxy): [`Transactions::start_client`], [`Transactions::respond`],
//!    [`Transactions::send_stateless`];
//! 2. output: [`Transactions::poll_transmit`] until `None` (bytes to send, and where),
//!    [`Transactions::poll_event`] until `None` (what the transaction user must act on),
//!    then [`Transactions::poll_timeout`] for the next deadline.
//!
//! Every input takes `now`; nothing here reads a clock. Timers follow RFC 3261 Table 4 with
//! the configured T1, T2 and T4: A (INVITE) doubles from T1 without bound, E and G double from
//! T1 up to T2, B, F, H, J, L and M wait 64*T1, D waits 32 s, I and K wait T4. On a reliable
//! transport there are no retransmissions and D, I, J, K are zero. An INVITE server
//! transaction sends 100 Trying once [`Config::trying_delay`] (200 ms) has passed without a
//! response from the TU, or at once for a retransmitted INVITE (§17.2.1).

mod key;
mod state;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::header::Via;
use crate::{Error, HeaderName, Message, Method, Peer, Request, Response, StatusCode};

use key::Key;
use state::{Kind, State, Timer, Txn};

/// The timer values of RFC 3261 Table 4, and the limits of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// T1, the round-trip time estimate. Default 500 ms.
    pub t1: Duration,
    /// T2, the longest interval between retransmissions of non-INVITE requests and INVITE
    /// responses. Default 4 s.
    pub t2: Duration,
    /// T4, how long a message may stay in the network. Default 5 s.
    pub t4: Duration,
    /// The most transactions held at once; a request beyond it is answered 503 with
    /// Retry-After, statelessly. Default 10 000.
    pub max_transactions: usize,
    /// Whether an INVITE server transaction answers 100 Trying by itself. Default true.
    pub send_trying: bool,
    /// How long an INVITE server transaction waits for the TU's first response before it
    /// sends its 100 Trying: §17.2.1 lets it skip the 100 when the TU responds within 200 ms,
    /// and most do (a proxy that forwards to a ringing phone, a UA that rings at once), which
    /// spares a message per call. A retransmitted INVITE gets the 100 at once. Default
    /// 200 ms; zero sends it as soon as the transaction is created.
    pub trying_delay: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            max_transactions: 10_000,
            send_trying: true,
            trying_delay: Duration::from_millis(200),
        }
    }
}

impl Config {
    /// Timer B, F, H, J (unreliable), L and M: 64*T1.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// A handle on one transaction, valid until its [`Event::Terminated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(u64);

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: Peer,
    /// The printed message.
    pub bytes: Bytes,
    /// The transaction it belongs to, if any (report a failure with
    /// [`Transactions::transport_error`]).
    pub transaction: Option<TransactionId>,
}

/// What the transaction user must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request, with the server transaction created for it (CANCEL included; find
    /// what it cancels with [`Transactions::cancel_target`]). The top Via carries `received`
    /// and `rport` as RFC 3261 §18.2.1 and RFC 3581 say.
    Request {
        /// The new server transaction; answer it with [`Transactions::respond`].
        transaction: TransactionId,
        /// The request.
        request: Request,
        /// Where it came from.
        source: Peer,
    },
    /// An ACK that ends no transaction of this layer: the ACK for a 2xx, for the dialog
    /// (`transaction` is the INVITE's server transaction if it is still in Accepted).
    Ack {
        /// The INVITE server transaction it matches, if still there.
        transaction: Option<TransactionId>,
        /// The ACK.
        request: Request,
        /// Where it came from.
        source: Peer,
    },
    /// A response for a client transaction: provisional, final, and (RFC 6026) every 2xx
    /// to an INVITE, retransmissions and forks included.
    Response {
        /// The client transaction.
        transaction: TransactionId,
        /// The response.
        response: Response,
    },
    /// A response that matches no transaction (a 2xx retransmitted after the transaction
    /// ended, or a proxied response): the TU decides (re-ACK, forward, drop).
    StrayResponse {
        /// The response.
        response: Response,
        /// Where it came from.
        source: Peer,
    },
    /// The transaction timed out: for a client, no final response came (Timer B or F: the TU
    /// acts as if a 408 came); for an INVITE server, the ACK never came (Timer H).
    Timeout {
        /// The transaction.
        transaction: TransactionId,
    },
    /// A send failed: the TU acts as if a 503 came (§8.1.3.1).
    TransportError {
        /// The transaction.
        transaction: TransactionId,
    },
    /// The transaction is gone; its id is no longer valid.
    Terminated {
        /// The transaction.
        transaction: TransactionId,
    },
}

/// All client and server transactions of an endpoint. See the module docs for the order in
/// which a driver calls it.
#[derive(Debug)]
pub struct Transactions {
    config: Config,
    next_id: u64,
    txns: HashMap<TransactionId, Txn>,
    keys: HashMap<Key, TransactionId>,
    timers: BinaryHeap<Reverse<(Instant, u64, TransactionId, Timer)>>,
    timer_seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Transactions {
    /// An empty transaction layer.
    pub fn new(config: Config) -> Transactions {
        Transactions {
            config,
            next_id: 0,
            txns: HashMap::new(),
            keys: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many transactions are alive.
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    /// Whether no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Starts a client transaction: sends `request` to `to` and retransmits it as the
    /// transport needs. The request must carry a top Via with an RFC 3261 branch; ACK has no
    /// transaction (use [`Transactions::send_stateless`]).
    pub fn start_client(
        &mut self,
        now: Instant,
        request: Request,
        to: Peer,
    ) -> Result<TransactionId, Error> {
        if *request.method() == Method::Ack {
            return Err(Error::NotAllowed(
                "an ACK starts no transaction; send it stateless",
            ));
        }
        let key = Key::client_for_request(&request)?;
        self.admit(&key)?;
        let bytes = request.to_bytes();
        let kind = if *request.method() == Method::Invite {
            Kind::ClientInvite
        } else {
            Kind::ClientNonInvite
        };
        let id = self.insert(Txn::new(kind, key, to, bytes.clone(), Some(request)));
        self.transmit(to, bytes, Some(id));
        self.with(id, now, |txn, out| {
            txn.start(out);
            None
        });
        Ok(id)
    }

    /// Sends a message outside any transaction: an ACK for a 2xx, a 2xx retransmitted by a
    /// UAS core, a request or response forwarded statelessly.
    pub fn send_stateless(&mut self, message: &Message, to: Peer) {
        self.send(to, message.to_bytes());
    }

    /// Queues bytes a transaction user printed to go out with this layer's own, outside any
    /// transaction (a prepared ACK resent, a response forwarded statelessly): one queue, in
    /// the order things happened.
    pub fn send(&mut self, to: Peer, bytes: Bytes) {
        self.transmit(to, bytes, None);
    }

    /// Gives a response to a server transaction, which sends it (and retransmits a final one
    /// over an unreliable transport until the ACK comes, for an INVITE).
    pub fn respond(
        &mut self,
        now: Instant,
        transaction: TransactionId,
        response: Response,
    ) -> Result<(), Error> {
        let txn = self
            .txns
            .get(&transaction)
            .ok_or(Error::UnknownTransaction)?;
        if !txn.is_server() {
            return Err(Error::NotAllowed("a response goes to a server transaction"));
        }
        txn.check_response(response.status())?;
        let bytes = response.to_bytes();
        self.with(transaction, now, |txn, out| {
            txn.respond(response.status(), bytes, out);
            None
        });
        Ok(())
    }

    /// A received message, from `source`. Requests get their top Via stamped with `received`
    /// and `rport`; retransmissions are absorbed or answered here; the rest becomes events.
    /// An error means the message cannot be matched or answered at all (no usable Via): drop
    /// it and log the error.
    pub fn handle(&mut self, now: Instant, message: Message, source: Peer) -> Result<(), Error> {
        match message {
            Message::Request(mut request) => {
                stamp_via(&mut request, source)?;
                self.handle_request(now, request, source)
            }
            Message::Response(response) => {
                self.handle_response(now, response, source);
                Ok(())
            }
        }
    }

    /// A send of this transaction failed: it ends, and the TU hears of it (§17.1.4, §17.2.4).
    pub fn transport_error(&mut self, now: Instant, transaction: TransactionId) {
        if self.txns.contains_key(&transaction) {
            self.events.push_back(Event::TransportError { transaction });
            self.with(transaction, now, |txn, _| {
                txn.state = State::Terminated;
                None
            });
        }
    }

    /// The INVITE server transaction that a CANCEL (or its server transaction's request)
    /// cancels, if it is still there (§9.2).
    pub fn cancel_target(&self, cancel: &Request) -> Option<TransactionId> {
        let key = Key::server_for_request(cancel)
            .ok()?
            .with_method(Method::Invite);
        self.keys.get(&key).copied()
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Transactions::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _, id, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let due = self
                .txns
                .get(&id)
                .is_some_and(|t| t.deadline(timer) == Some(at));
            if due {
                self.with(id, now, |txn, out| {
                    txn.fire(timer, out);
                    None
                });
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        request: Request,
        source: Peer,
    ) -> Result<(), Error> {
        let key = Key::server_for_request(&request)?;
        if *request.method() == Method::Ack {
            let id = self.keys.get(&key).copied();
            let absorbed = id.is_some_and(|id| {
                let mut absorbed = false;
                self.with(id, now, |txn, out| {
                    absorbed = txn.ack(out);
                    None
                });
                absorbed
            });
            if !absorbed {
                let transaction = id.filter(|id| self.txns.contains_key(id));
                self.events.push_back(Event::Ack {
                    transaction,
                    request,
                    source,
                });
            }
            return Ok(());
        }
        if let Some(&id) = self.keys.get(&key) {
            self.with(id, now, |txn, out| {
                txn.retransmitted_request(out);
                None
            });
            return Ok(());
        }
        if self.txns.len() >= self.config.max_transactions {
            tracing::warn!(%source, limit = self.config.max_transactions, call_id = call_id(request.headers()), "transaction limit reached: 503");
            let mut busy =
                crate::Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "Too Many Transactions")
                    .response(&request, None, &crate::Policy::default());
            busy.headers_mut().push(HeaderName::RetryAfter, "5");
            self.transmit(response_peer(&request, source), busy.to_bytes(), None);
            return Ok(());
        }
        let invite = *request.method() == Method::Invite;
        let kind = if invite {
            Kind::ServerInvite
        } else {
            Kind::ServerNonInvite
        };
        let reply_to = response_peer(&request, source);
        let id = self.insert(Txn::new(kind, key, reply_to, Bytes::new(), None));
        if invite && self.config.send_trying {
            let trying = crate::Rejection::new(StatusCode::TRYING, "Trying").response(
                &request,
                None,
                &crate::Policy::default(),
            );
            let delay = self.config.trying_delay;
            self.with(id, now, |txn, out| {
                txn.trying(trying.to_bytes(), delay, out);
                None
            });
        }
        self.events.push_back(Event::Request {
            transaction: id,
            request,
            source,
        });
        Ok(())
    }

    fn handle_response(&mut self, now: Instant, response: Response, source: Peer) {
        let id = Key::client_for_response(&response)
            .ok()
            .and_then(|k| self.keys.get(&k).copied());
        let Some(id) = id else {
            tracing::debug!(
                %source,
                status = %response.status(),
                call_id = call_id(response.headers()),
                "response matches no transaction"
            );
            self.events
                .push_back(Event::StrayResponse { response, source });
            return;
        };
        let status = response.status();
        let mut ack = None;
        if let Some(txn) = self.txns.get(&id)
            && txn.needs_ack(status)
        {
            ack = txn.request().map(|req| build_ack(req, &response));
        }
        self.with(id, now, |txn, out| {
            txn.response(status, ack, out).then_some(Event::Response {
                transaction: id,
                response,
            })
        });
    }

    /// Refuses a new transaction when the key is taken or the layer is full.
    fn admit(&self, key: &Key) -> Result<(), Error> {
        if self.keys.contains_key(key) {
            return Err(Error::DuplicateTransaction {
                branch: key.branch().to_owned(),
            });
        }
        if self.txns.len() >= self.config.max_transactions {
            return Err(Error::TooManyTransactions {
                limit: self.config.max_transactions,
            });
        }
        Ok(())
    }

    fn insert(&mut self, txn: Txn) -> TransactionId {
        let id = TransactionId(self.next_id);
        self.next_id += 1;
        self.keys.insert(txn.key.clone(), id);
        self.txns.insert(id, txn);
        id
    }

    fn transmit(&mut self, to: Peer, bytes: Bytes, transaction: Option<TransactionId>) {
        self.transmits.push_back(Transmit {
            to,
            bytes,
            transaction,
        });
    }

    /// Runs `f` on a transaction with an output collector, then applies what it asked for:
    /// transmissions, timers, the event `f` returns (before any timeout or end, so that the
    /// TU hears of a response before the transaction that got it is gone), and removal once
    /// terminated.
    fn with(
        &mut self,
        id: TransactionId,
        now: Instant,
        f: impl FnOnce(&mut Txn, &mut state::Out) -> Option<Event>,
    ) {
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let mut out = state::Out::new(now, &self.config);
        let event = f(txn, &mut out);
        let peer = txn.peer;
        for bytes in out.transmits.drain(..) {
            self.transmits.push_back(Transmit {
                to: peer,
                bytes,
                transaction: Some(id),
            });
        }
        for (timer, at) in out.timers.drain(..) {
            self.timer_seq += 1;
            self.timers.push(Reverse((at, self.timer_seq, id, timer)));
        }
        self.events.extend(event);
        if out.timed_out {
            tracing::debug!(transaction = ?id, branch = txn.key.branch(), "transaction timed out");
            self.events.push_back(Event::Timeout { transaction: id });
        }
        if txn.state == State::Terminated {
            if let Some(txn) = self.txns.remove(&id) {
                self.keys.remove(&txn.key);
            }
            self.events.push_back(Event::Terminated { transaction: id });
        }
    }
}

/// The earlier of two optional deadlines: a transaction user's own timers merged with
/// [`Transactions::poll_timeout`].
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The Call-ID of a message, for logs.
fn call_id(h: &crate::Headers) -> &str {
    h.get(HeaderName::CallId).map_or("", crate::text::ascii)
}

/// Where the responses to `request` go (RFC 3261 §18.2.2, RFC 3581 §4): back over the
/// connection it came on; over UDP, to the source address if the client asked for `rport`,
/// else to the source IP and the sent-by port.
fn response_peer(request: &Request, source: Peer) -> Peer {
    if source.transport.is_reliable() {
        return source;
    }
    let via = request.headers().typed::<Via>().and_then(Result::ok);
    match via {
        Some(via) if via.rport().is_none() => {
            let port = via.port().unwrap_or(source.transport.default_port());
            Peer {
                addr: std::net::SocketAddr::new(source.addr.ip(), port),
                ..source
            }
        }
        _ => source,
    }
}

/// Adds `received` (and fills `rport`) to the top Via of a received request (RFC 3261
/// §18.2.1, RFC 3581 §4).
fn stamp_via(request: &mut Request, source: Peer) -> Result<(), Error> {
    let headers = request.headers();
    let line = headers
        .get(HeaderName::Via)
        .ok_or(Error::MissingHeaders { names: vec!["Via"] })?;
    let via = headers
        .typed::<Via>()
        .ok_or(Error::MissingHeaders { names: vec!["Via"] })??;
    let wants_rport = via.rport() == Some(None);
    let same_host = via.host().to_string() == source.addr.ip().to_string()
        || matches!(via.host(), crate::Host::Ipv6(a) if std::net::IpAddr::V6(a) == source.addr.ip());
    if same_host && !wants_rport {
        return Ok(());
    }
    let mut value = format!(
        "{}/{}/{} {}",
        via.protocol(),
        via.version(),
        via.transport(),
        via.host()
    );
    if let Some(port) = via.port() {
        value.push_str(&format!(":{port}"));
    }
    for (name, v) in via.params().iter() {
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        value.push(';');
        value.push_str(name);
        if name.eq_ignore_ascii_case("rport") && v.is_none() {
            value.push_str(&format!("={}", source.addr.port()));
        } else if let Some(v) = v {
            value.push('=');
            value.push_str(v);
        }
    }
    value.push_str(&format!(";received={}", source.addr.ip()));
    // The rest of the line, if the top Via line holds more values.
    let rest = crate::text::after_first_element(line);
    let mut new = value.into_bytes();
    new.extend_from_slice(rest);
    request.headers_mut().set_first(HeaderName::Via, new);
    Ok(())
}

/// The ACK a client INVITE transaction sends for a non-2xx final response (§17.1.1.3): the
/// original Request-URI, Call-ID, From, top Via and Route, the response's To (with its tag),
/// and CSeq with method ACK.
fn build_ack(invite: &Request, response: &Response) -> Bytes {
    let mut ack = Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: invite.version,
        headers: crate::Headers::new(),
        body: Bytes::new(),
    };
    let h = ack.headers_mut();
    if let Some(via) = invite.headers().get(HeaderName::Via) {
        h.push(HeaderName::Via, crate::text::first_element(via));
    }
    for name in [HeaderName::MaxForwards, HeaderName::From] {
        if let Some(v) = invite.headers().get(name) {
            h.push(name, v);
        }
    }
    if let Some(to) = response.headers().get(HeaderName::To) {
        h.push(HeaderName::To, to);
    }
    if let Some(v) = invite.headers().get(HeaderName::CallId) {
        h.push(HeaderName::CallId, v);
    }
    let seq = invite
        .headers()
        .typed::<crate::header::CSeq>()
        .and_then(Result::ok)
        .map_or(0, |c| c.seq());
    h.push(HeaderName::CSeq, format!("{seq} ACK"));
    for route in invite.headers().get_all(HeaderName::Route) {
        h.push(HeaderName::Route, route.value);
    }
    h.push(HeaderName::ContentLength, "0");
    ack.to_bytes()
}
