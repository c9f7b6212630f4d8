//! The proxy core (RFC 3261 §16): a stateful proxy with parallel and sequential forking.
//! Sans-IO, driven like [`Transactions`]: input through [`Proxy::handle`],
//! [`Proxy::handle_timeout`] and the transaction user's answers to [`Event::Locate`]
//! ([`Proxy::forward`], [`Proxy::respond`]); output through [`Proxy::poll_transmit`],
//! [`Proxy::poll_event`] and [`Proxy::poll_timeout`].
//!
//! What the proxy decides by itself: request validation (§16.3: 400, 416, 420, 483 from
//! [`check_request`]), loop detection (482), Route processing (§16.4, strict-router
//! Request-URIs included), forwarding of requests that carry a Route or belong to a dialog
//! straight to their next hop (unless [`Config::screen_routed`] puts them, the ACKs of 2xx
//! responses and the dialogs made through the proxy to the transaction user first:
//! [`Event::Routed`], [`Event::Ack`], [`Event::Dialog`]), the forwarded copy (§16.6: Request-URI, Max-Forwards,
//! Record-Route, Via, next hop), the response context (§16.7: provisional and 2xx responses
//! forwarded at once, the best final response chosen, 6xx ending the search, 401/407
//! challenges merged, 503 turned into 500), CANCEL of pending branches (§16.10) on a 2xx, a
//! 6xx or a CANCEL from upstream, Timer C (§16.8), and the stateless forwarding of the ACK of a
//! 2xx and of 2xx retransmissions. What it asks the transaction user: where an out-of-dialog
//! request goes ([`Event::Locate`]), which is where a location service, a redirect (302) or a
//! refusal (404, 403, 401/407) come in.
//!
//! # Branches that end without an answer
//!
//! A branch that times out (Timer B or F) or cannot be sent (a transport error) gets a stand-in
//! response, 408 or 503 (§16.7, §16.9); within the class chosen by §16.7 step 6, a response
//! from downstream wins over a stand-in. When every branch ended that way before any
//! provisional response other than 100, [`Config::unanswered`] may name the answer instead
//! (a node says 480 Temporarily Unavailable: none of the callee's devices answered). Timer C
//! cancels a ringing branch, and the branch then counts as timed out: its 487 goes upstream as
//! 408. A cancelled branch that never sends its final response is given up 64*T1 after the
//! CANCEL (§9.1), so that the request is always answered.
//!
//! # A proxy on several transports
//!
//! The proxy may listen on several transports ([`Config::listen`], e.g. UDP for local
//! softphones and TCP towards other nodes), and forward between them:
//!
//! - Route processing (§16.4, RFC 5658): a top Route that names this proxy is removed,
//!   and so is every Route naming it that follows, since a double Record-Route leaves two of
//!   ours in a row in the dialog's route set. This holds for stateful forwarding and for the
//!   stateless forwarding of ACKs.
//! - Double Record-Route (RFC 5658 §3.2): when a dialog-forming request leaves over another
//!   transport or local address than the one it arrived on, the proxy pushes two
//!   Record-Route entries: first its address for the inbound side, then, on top, its address
//!   for the outbound side. Each user agent then reaches the proxy the way it already talks
//!   to it. Same transport and address: one entry.
//! - [`Config::record_route_params`] are appended to every Record-Route URI the proxy writes
//!   (e.g. `;node=...`, so that the far end of an overlay link can tell which node it is).
//! - A next-hop resolver ([`Proxy::set_resolver`]) is asked first whenever the proxy turns a
//!   URI (the top Route, or the Request-URI) into a [`Peer`]; it is how the transaction user
//!   maps names that are not IP addresses (an overlay node, a resolved host) without the
//!   proxy doing any I/O. A [`Target::peer`] still wins for a request with no Route.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::header::{CSeq, MaxForwards, Route, Via};
use crate::transaction::{self, TransactionId, Transactions, Transmit};
use crate::ua::peer_for_uri;
use crate::{
    DialogId, Error, HeaderName, Ids, Message, Method, Peer, Policy, Request, Response, Role,
    StatusCode, Transport, Uri, check_request,
};

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The transaction layer's timers and limits.
    pub transactions: transaction::Config,
    /// Where the proxy listens, per transport: its Via sent-by, its Record-Route URI, and the
    /// addresses that mean "this proxy" in a Route or Request-URI.
    pub listen: Vec<Peer>,
    /// Other names of this proxy (domains it is responsible for), for Route processing.
    pub aliases: Vec<String>,
    /// Whether forwarded requests that can make a dialog get a Record-Route with this
    /// proxy's URI, so that the dialog's requests come through it; two of them when the
    /// request leaves over another transport or address than it came in on (RFC 5658 §3.2).
    /// Default true.
    pub record_route: bool,
    /// Extra URI parameters appended to every Record-Route URI this proxy writes (both
    /// entries of a double Record-Route), before `;lr`: e.g. `;node=12D3KooW...`. A missing
    /// leading `;` is added. They must be valid URI parameters (RFC 3261 §25.1
    /// `uri-parameters`). Default empty.
    pub record_route_params: String,
    /// Timer C, how long an INVITE branch may stay without a final response after its last
    /// provisional one (§16.6 step 11: more than 3 minutes). Default 180 s.
    pub timer_c: Duration,
    /// The proxy's checks (§16.3), [`Role::Proxy`].
    pub policy: Policy,
    /// What goes upstream when every branch of a request ended without an answer from
    /// downstream: each timed out (Timer B or F, or Timer C, §16.8) or could not be sent (a
    /// transport error, §16.9) before any provisional response other than 100. `None` (the
    /// default): RFC 3261's stand-ins, 408 for a timeout and 503 for a transport error, and
    /// the best of them goes upstream (§16.7 step 6; a 503 goes as 500). A transaction user
    /// that knows its targets are registered devices may say 480 Temporarily Unavailable
    /// instead. A request cancelled from upstream is answered 487 either way.
    pub unanswered: Option<Reply>,
    /// Whether requests that go where they say put themselves to the transaction user first.
    /// `false` (the default, RFC 3261 §16 as written): a request that still carries a Route
    /// once this proxy's own are removed, or that has a To tag (inside a dialog), goes
    /// straight to its next hop, and so does the ACK of a 2xx. `true` (a proxy at the edge of
    /// a network, which must not relay for anyone to anywhere): such a request becomes
    /// [`Event::Routed`] (the transaction user calls [`Proxy::forward_routed`] or answers it),
    /// such an ACK becomes [`Event::Ack`] (sent only by [`Proxy::send_ack`]), and each dialog
    /// the proxy sees being made is reported ([`Event::Dialog`]), so that the transaction
    /// user knows which in-dialog requests to let through.
    pub screen_routed: bool,
}

/// A status line the proxy answers with on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase.
    pub reason: String,
}

impl Reply {
    /// A reply with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Reply {
        Reply {
            status,
            reason: reason.into(),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            transactions: transaction::Config::default(),
            listen: Vec::new(),
            aliases: Vec::new(),
            record_route: true,
            record_route_params: String::new(),
            timer_c: Duration::from_secs(180),
            policy: Policy::with_role(Role::Proxy),
            unanswered: None,
            screen_routed: false,
        }
    }
}

/// The transaction user's next-hop resolver ([`Proxy::set_resolver`]): the [`Peer`] a URI
/// (a Route's or a Request-URI, as written) goes to, or `None` to let the proxy take it from
/// the URI itself. It must answer at once, without I/O.
pub type Resolver = Box<dyn Fn(&str) -> Option<Peer> + Send>;

/// A handle on one proxied request and its branches, valid until it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Context(u64);

/// A destination for a request: its new Request-URI, its q-value (higher first; equal values
/// are tried in parallel), and where to send it when the URI alone does not say (a resolved
/// host name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Request-URI of the forwarded copy.
    pub uri: String,
    /// The q-value in thousandths; none counts as 1000.
    pub q: Option<u16>,
    /// The next hop, if the transaction user resolved it. Used when the request carries no
    /// Route (else the next hop is the top Route's), ahead of the resolver
    /// ([`Proxy::set_resolver`]).
    pub peer: Option<Peer>,
}

impl Target {
    /// A target at `uri`, q 1.0, next hop from the URI.
    pub fn new(uri: impl Into<String>) -> Target {
        Target {
            uri: uri.into(),
            q: None,
            peer: None,
        }
    }
}

/// What the transaction user must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An out-of-dialog request: answer with [`Proxy::forward`] (targets from a location
    /// service) or [`Proxy::respond`] (404, 302 with Contacts, 403, 401/407 challenges...).
    Locate {
        /// The request's context.
        context: Context,
        /// The request, after §16.3 and §16.4 (boxed: events stay small).
        request: Box<Request>,
        /// Where it came from.
        source: Peer,
    },
    /// A request was answered (by a branch, by the proxy, or by the transaction user), with
    /// this status: for statistics and logs.
    Answered {
        /// The context.
        context: Context,
        /// The final status sent upstream.
        status: StatusCode,
    },
    /// With [`Config::screen_routed`]: a request that carries a Route (after this proxy's
    /// own) or a To tag, which would go to `next`. Let it go with [`Proxy::forward_routed`],
    /// or refuse it with [`Proxy::respond`] (403, 481...).
    Routed {
        /// The request's context.
        context: Context,
        /// The request, after §16.3 and §16.4.
        request: Box<Request>,
        /// Where it came from.
        source: Peer,
        /// Where it would go: the top Route's next hop, else the Request-URI's; `None` when
        /// that URI names no address (a host name the resolver does not know), in which case
        /// [`Proxy::forward_routed`] answers 480.
        next: Option<Peer>,
    },
    /// With [`Config::screen_routed`]: an ACK that matches no transaction (the ACK of a 2xx),
    /// ready to go to `next` (Max-Forwards lowered, this proxy's Via on top). It goes only if
    /// the transaction user passes it to [`Proxy::send_ack`]; an ACK is never answered.
    Ack {
        /// The ACK as it would leave.
        request: Box<Request>,
        /// Where it came from.
        source: Peer,
        /// Where it would go.
        next: Peer,
    },
    /// With [`Config::screen_routed`]: a provisional (not 100) or 2xx response with a To tag
    /// to a request that can make a dialog (INVITE, SUBSCRIBE, REFER, NOTIFY, outside a
    /// dialog) went upstream; the dialog (early, or confirmed by a 2xx) passes through this
    /// proxy when it Record-Routes. Reported for each such response.
    Dialog {
        /// The request's context.
        context: Context,
        /// The dialog as the caller sees it: local tag from From, remote tag from To.
        id: DialogId,
        /// Where the request came from (the caller's side).
        upstream: Peer,
        /// Where the branch that answered went (the callee's side).
        downstream: Peer,
        /// A 2xx: the dialog is confirmed.
        confirmed: bool,
    },
}

#[derive(Debug)]
struct Branch {
    txn: TransactionId,
    request: Request,
    peer: Peer,
    /// The best response so far (final ones only).
    response: Option<Response>,
    /// `response` is the proxy's stand-in for one that never came (a timeout, a transport
    /// error, Timer C), not one from downstream.
    stand_in: bool,
    provisional: bool,
    /// A provisional response other than 100 came: someone downstream answered, beyond the
    /// next hop's transaction layer.
    ringing: bool,
    done: bool,
    cancel_when_provisional: bool,
    /// A CANCEL went out for this branch: Timer C no longer runs, the give-up deadline does.
    cancelled: bool,
    /// Timer C cancelled the branch: its 487 counts as 408 (§16.8).
    timed_out: bool,
}

impl Branch {
    /// The branch ended without an answer from downstream ([`Config::unanswered`]).
    fn unanswered(&self) -> bool {
        self.stand_in && !self.ringing
    }
}

#[derive(Debug)]
struct ContextState {
    server: TransactionId,
    request: Request,
    /// Targets not yet tried, best q first.
    pending_targets: Vec<Target>,
    branches: Vec<Branch>,
    /// A 2xx or 6xx has ended the search.
    decided: bool,
    /// The final response has gone upstream (for an INVITE, further 2xx still go).
    answered: bool,
    /// A CANCEL came from upstream.
    cancelled: bool,
    invite: bool,
    /// Where the request came from: its transport decides the inbound Record-Route
    /// (RFC 5658 §3.2).
    source: Peer,
}

/// A slot for the resolver, printable so that [`Proxy`] stays `Debug`.
#[derive(Default)]
struct ResolverSlot(Option<Resolver>);

impl fmt::Debug for ResolverSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Resolver(set)"
        } else {
            "Resolver(none)"
        })
    }
}

/// The proxy core. See the module docs.
#[derive(Debug)]
pub struct Proxy {
    config: Config,
    ids: Ids,
    /// Mixed into every loop hash, so that another proxy with the same sent-by (two nodes on
    /// two hosts' 127.0.0.1:5060) never takes this one's Via for its own loop.
    loop_key: u64,
    tx: Transactions,
    contexts: HashMap<Context, ContextState>,
    by_server: HashMap<TransactionId, Context>,
    by_client: HashMap<TransactionId, Context>,
    /// Branch deadlines: (when, context, branch transaction).
    timers: BinaryHeap<Reverse<(Instant, Context, TransactionId)>>,
    /// The live deadline of each INVITE branch: Timer C, or once the branch is cancelled,
    /// when the proxy gives up waiting for its final response (64*T1, §9.1).
    branch_timers: HashMap<TransactionId, Instant>,
    next: u64,
    events: VecDeque<Event>,
    resolver: ResolverSlot,
}

impl Proxy {
    /// A proxy; `seed` drives its branches and tags (predictable: for tests, see [`Ids`]).
    pub fn new(config: Config, seed: u64) -> Proxy {
        let mut proxy = Proxy::with_ids(config, Ids::new(seed));
        proxy.loop_key = loop_key(seed);
        proxy
    }

    /// A proxy whose branches, tags and loop key come from `ids` ([`Ids::from_os`] in a
    /// node).
    pub fn with_ids(config: Config, mut ids: Ids) -> Proxy {
        let loop_key = ids.next_u64();
        Proxy {
            tx: Transactions::new(config.transactions.clone()),
            config,
            ids,
            loop_key,
            contexts: HashMap::new(),
            by_server: HashMap::new(),
            by_client: HashMap::new(),
            timers: BinaryHeap::new(),
            branch_timers: HashMap::new(),
            next: 0,
            events: VecDeque::new(),
            resolver: ResolverSlot::default(),
        }
    }

    /// Sets the next-hop resolver: whenever the proxy computes a next hop from a URI (the
    /// top Route's, else the Request-URI), it first calls `resolver` with the URI as written
    /// (parameters included); `Some(peer)` is where the request goes, `None` falls back to
    /// the URI's own address, transport and port ([`peer_for_uri`]), which cannot resolve host
    /// names. A [`Target::peer`] given for a request with no Route is used as is.
    ///
    /// The resolver must answer at once, without I/O (the proxy is sans-IO): a lookup table
    /// of known nodes, connections or resolved names. A second call replaces the first
    /// resolver.
    pub fn set_resolver(&mut self, resolver: Resolver) {
        self.resolver = ResolverSlot(Some(resolver));
    }

    /// How many requests are being proxied.
    pub fn contexts(&self) -> usize {
        self.contexts.len()
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
        while let Some(Reverse((at, context, txn))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.branch_timers.get(&txn) == Some(&at) {
                self.branch_timers.remove(&txn);
                self.on_branch_timer(now, context, txn);
            }
        }
        self.pump(now);
    }

    /// A send failed.
    pub fn transport_error(&mut self, now: Instant, transaction: TransactionId) {
        self.tx.transport_error(now, transaction);
        self.pump(now);
    }

    /// The request of a context, while it is alive.
    pub fn request(&self, context: Context) -> Option<&Request> {
        self.contexts.get(&context).map(|c| &c.request)
    }

    /// Forwards the request of `context` to `targets` (§16.5, §16.6): targets of the highest
    /// q-value in parallel, then the next q-value if none of them succeeds. No targets: 480.
    pub fn forward(
        &mut self,
        now: Instant,
        context: Context,
        mut targets: Vec<Target>,
    ) -> Result<(), Error> {
        let state = self
            .contexts
            .get_mut(&context)
            .ok_or(Error::UnknownTransaction)?;
        if !state.branches.is_empty() || state.answered {
            return Err(Error::NotAllowed(
                "the request has already been forwarded or answered",
            ));
        }
        if targets.is_empty() {
            return self.respond(
                now,
                context,
                StatusCode::TEMPORARILY_UNAVAILABLE,
                "No Target Reachable",
                &[],
            );
        }
        // Stable sort: best q first, equal q keep the given order.
        targets.sort_by_key(|t| Reverse(t.q.unwrap_or(1000)));
        targets.reverse();
        state.pending_targets = targets;
        self.next_group(now, context);
        self.pump(now);
        Ok(())
    }

    /// Lets the request of an [`Event::Routed`] go to its next hop.
    pub fn forward_routed(&mut self, now: Instant, context: Context) -> Result<(), Error> {
        let uri = self
            .contexts
            .get(&context)
            .ok_or(Error::UnknownTransaction)?
            .request
            .uri_str()
            .to_owned();
        self.forward(now, context, vec![Target::new(uri)])
    }

    /// Sends the ACK of an [`Event::Ack`] to `next`.
    pub fn send_ack(&mut self, request: &Request, next: Peer) {
        self.tx.send(next, request.to_bytes());
    }

    /// Answers the request of `context` from the proxy itself (a 404, a 302 with `extra`
    /// Contacts, a 401/407 with challenges...).
    pub fn respond(
        &mut self,
        now: Instant,
        context: Context,
        status: StatusCode,
        reason: &str,
        extra: &[(HeaderName, String)],
    ) -> Result<(), Error> {
        let state = self
            .contexts
            .get(&context)
            .ok_or(Error::UnknownTransaction)?;
        let tag = self.ids.tag();
        let mut resp = Response::for_request(&state.request, status, reason, Some(&tag));
        for (name, value) in extra {
            resp.headers_mut().push(*name, value);
        }
        resp.headers_mut().push(HeaderName::ContentLength, "0");
        self.send_upstream(now, context, resp)
    }

    /// Answers the request of `context` with a response the transaction user built (the
    /// registrar's 200 with the bindings, a 401 with challenges...). It must carry the
    /// request's Via, From, To, Call-ID and CSeq ([`Response::for_request`]).
    pub fn respond_with(
        &mut self,
        now: Instant,
        context: Context,
        response: Response,
    ) -> Result<(), Error> {
        self.send_upstream(now, context, response)
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tx.poll_transmit()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Proxy::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ours = self.timers.peek().map(|Reverse((at, ..))| *at);
        transaction::earliest(self.tx.poll_timeout(), ours)
    }

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
            T::Ack {
                request, source, ..
            } => self.forward_stateless(request, source),
            T::Response {
                transaction,
                response,
            } => self.on_response(now, transaction, response),
            T::StrayResponse { response, .. } => self.forward_response_stateless(response),
            T::Timeout { transaction } => {
                self.on_branch_failure(now, transaction, StatusCode::REQUEST_TIMEOUT)
            }
            T::TransportError { transaction } => {
                self.on_branch_failure(now, transaction, StatusCode::SERVICE_UNAVAILABLE)
            }
            T::Terminated { transaction } => {
                self.by_client.remove(&transaction);
                if let Some(context) = self.by_server.remove(&transaction) {
                    self.contexts.remove(&context);
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, txn: TransactionId, mut request: Request, source: Peer) {
        let tag = self.ids.tag();
        if *request.method() == Method::Cancel {
            self.on_cancel(now, txn, &request, &tag);
            return;
        }
        // §16.3: reasonable syntax, URI scheme, Max-Forwards, Proxy-Require.
        if let Err(rejection) = check_request(&request, &self.config.policy) {
            tracing::debug!(transaction = ?txn, call_id = call_id(&request), status = %rejection.status, reason = %rejection.reason, "request refused");
            let _ = self.tx.respond(
                now,
                txn,
                rejection.response(&request, Some(&tag), &self.config.policy),
            );
            return;
        }
        // §16.3 step 4: a request that went around back to us unchanged is a loop.
        if self.is_loop(&request) {
            tracing::debug!(transaction = ?txn, call_id = call_id(&request), "loop detected");
            let resp = simple(&request, StatusCode::LOOP_DETECTED, "Loop Detected", &tag);
            let _ = self.tx.respond(now, txn, resp);
            return;
        }
        self.preprocess_routes(&mut request);
        let context = Context(self.next);
        self.next += 1;
        self.contexts.insert(
            context,
            ContextState {
                server: txn,
                invite: *request.method() == Method::Invite,
                request: request.clone(),
                pending_targets: Vec::new(),
                branches: Vec::new(),
                decided: false,
                answered: false,
                cancelled: false,
                source,
            },
        );
        self.by_server.insert(txn, context);
        // A request with a Route left, or one inside a dialog, goes where it says (§16.5).
        let in_dialog = DialogId::of_request(&request).is_some();
        if request.headers().contains(HeaderName::Route) || in_dialog {
            if self.config.screen_routed {
                let next = self.resolve(&next_hop(&request)).ok();
                self.events.push_back(Event::Routed {
                    context,
                    request: Box::new(request),
                    source,
                    next,
                });
                return;
            }
            let target = Target::new(request.uri_str());
            let _ = self.forward(now, context, vec![target]);
            return;
        }
        let request = Box::new(request);
        self.events.push_back(Event::Locate {
            context,
            request,
            source,
        });
    }

    /// §16.10: CANCEL gets 200 here; the pending branches of its INVITE are cancelled, and
    /// the INVITE will be answered by their 487s.
    fn on_cancel(&mut self, now: Instant, txn: TransactionId, cancel: &Request, tag: &str) {
        let target = self
            .tx
            .cancel_target(cancel)
            .and_then(|t| self.by_server.get(&t).copied());
        let Some(context) = target else {
            let _ = self.tx.respond(
                now,
                txn,
                simple(
                    cancel,
                    StatusCode::CALL_DOES_NOT_EXIST,
                    "Call/Transaction Does Not Exist",
                    tag,
                ),
            );
            return;
        };
        let _ = self
            .tx
            .respond(now, txn, simple(cancel, StatusCode::OK, "OK", tag));
        let no_branch = self
            .contexts
            .get(&context)
            .is_some_and(|c| c.branches.is_empty());
        if no_branch {
            let _ = self.respond(
                now,
                context,
                StatusCode::REQUEST_TERMINATED,
                "Request Terminated",
                &[],
            );
            return;
        }
        if let Some(state) = self.contexts.get_mut(&context) {
            state.decided = true;
            state.cancelled = true;
            state.pending_targets.clear();
        }
        self.cancel_branches(now, context);
    }

    /// §16.4: a Request-URI that is this proxy's own Record-Route URI (put there by a strict
    /// router) is replaced by the last Route; a first Route naming this proxy is removed, and
    /// so is each next one that names it too (a double Record-Route, RFC 5658).
    fn preprocess_routes(&self, request: &mut Request) {
        if self.is_me(request.uri_str()) {
            let last = request
                .headers()
                .get_all(HeaderName::Route)
                .last()
                .map(|f| f.value.to_vec());
            if let Some(last) = last
                && let Ok(route) = <Route<'_> as crate::header::TypedHeader<'_>>::parse(&last)
            {
                let uri = route.0.uri().as_str().to_owned();
                if request.set_uri(&uri).is_ok() {
                    remove_last(request.headers_mut(), HeaderName::Route);
                }
            }
        }
        // Each pass removes one element, so the loop ends.
        while request
            .headers()
            .typed::<Route>()
            .and_then(Result::ok)
            .is_some_and(|r| self.is_me(r.0.uri().as_str()))
        {
            remove_first_element(request.headers_mut(), HeaderName::Route);
        }
    }

    /// The next hop for `uri`: the resolver's answer, else the URI's own address.
    fn resolve(&self, uri: &str) -> Result<Peer, Error> {
        if let Some(peer) = self.resolver.0.as_ref().and_then(|r| r(uri)) {
            return Ok(peer);
        }
        peer_for_uri(uri)
    }

    /// A Record-Route value for this proxy at `local`, reached over `transport`.
    fn record_route_value(&self, transport: Transport, local: SocketAddr) -> String {
        let transport = if transport == Transport::Udp {
            String::new()
        } else {
            format!(";transport={}", transport.as_str().to_ascii_lowercase())
        };
        let params = self.config.record_route_params.trim();
        let sep = if params.is_empty() || params.starts_with(';') {
            ""
        } else {
            ";"
        };
        format!("<sip:{}{transport}{sep}{params};lr>", host_port(local))
    }

    /// Whether a URI names this proxy: one of its addresses (any port given must match) or
    /// aliases.
    fn is_me(&self, uri: &str) -> bool {
        let Ok(parsed) = Uri::parse(uri) else {
            return false;
        };
        let Some(sip) = parsed.as_sip() else {
            return false;
        };
        if sip.user().is_some() {
            return false;
        }
        // A URI with one of our Record-Route parameters set to another value names another
        // proxy at the same address (two nodes of one machine, each on its own loopback).
        let params = sip.params();
        let theirs = parse_params(&self.config.record_route_params).any(|(name, value)| {
            params
                .get(name)
                .is_some_and(|their| !their.unwrap_or("").eq_ignore_ascii_case(value))
        });
        if theirs {
            return false;
        }
        let host = sip.host().to_string();
        if self
            .config
            .aliases
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&host))
        {
            return true;
        }
        self.config.listen.iter().any(|p| {
            let addr = p.addr;
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            ip == host && sip.port().unwrap_or(p.transport.default_port()) == addr.port()
        })
    }

    /// The loop-detection part of a branch: a hash of what a spiral would change and a loop
    /// would not (§16.6 step 8): Request-URI, Call-ID, From tag, To tag, CSeq number,
    /// Proxy-Require and Proxy-Authorization. (The top Via is left out: in a loop it is the
    /// last hop's, which differs from the first time.)
    fn loop_hash(&self, request: &Request) -> String {
        let mut h = std::hash::DefaultHasher::new();
        self.loop_key.hash(&mut h);
        request.uri_str().hash(&mut h);
        let headers = request.headers();
        for name in [
            HeaderName::CallId,
            HeaderName::ProxyRequire,
            HeaderName::ProxyAuthorization,
        ] {
            for f in headers.get_all(name) {
                f.value.hash(&mut h);
            }
        }
        let tags = DialogId::of_request(request).map(|d| (d.local_tag, d.remote_tag));
        tags.hash(&mut h);
        headers
            .typed::<crate::header::From>()
            .and_then(Result::ok)
            .and_then(|f| f.tag().map(str::to_owned))
            .hash(&mut h);
        headers
            .typed::<CSeq>()
            .and_then(Result::ok)
            .map(|c| c.seq())
            .hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// §16.3 step 4: one of the Vias is ours and carries this request's loop hash.
    fn is_loop(&self, request: &Request) -> bool {
        let hash = self.loop_hash(request);
        request.headers().typed_all::<Via>().flatten().any(|via| {
            let ours = self.config.listen.iter().any(|p| {
                via.host().to_string() == p.addr.ip().to_string()
                    && via.port() == Some(p.addr.port())
            });
            ours && via.branch().is_some_and(|b| b.contains(&hash))
        })
    }

    /// Starts the branches of the best q-value group still pending.
    fn next_group(&mut self, now: Instant, context: Context) {
        let Some(state) = self.contexts.get_mut(&context) else {
            return;
        };
        let Some(best) = state.pending_targets.last().map(|t| t.q.unwrap_or(1000)) else {
            return;
        };
        let mut group = Vec::new();
        while state
            .pending_targets
            .last()
            .is_some_and(|t| t.q.unwrap_or(1000) == best)
        {
            group.extend(state.pending_targets.pop());
        }
        let mut started = 0;
        let mut full = false;
        for target in group {
            match self.start_branch(now, context, &target) {
                Ok(()) => started += 1,
                Err(e) => {
                    full |= matches!(e, Error::TooManyTransactions { .. });
                    tracing::debug!(target = %target.uri, error = %e, "target skipped");
                }
            }
        }
        if started == 0 {
            // Our own limit, not the targets', kept the request from going on: 503, so that
            // the caller retries later (§21.5.4).
            let unanswered = self
                .contexts
                .get(&context)
                .is_some_and(|s| s.branches.is_empty());
            if full && unanswered {
                if let Some(state) = self.contexts.get(&context) {
                    tracing::debug!(
                        call_id = call_id(&state.request),
                        "too many transactions; request refused"
                    );
                }
                let retry = [(HeaderName::RetryAfter, "5".to_owned())];
                let _ = self.respond(
                    now,
                    context,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too Many Transactions",
                    &retry,
                );
                return;
            }
            self.maybe_done(now, context);
        }
    }

    /// §16.6: the copy for one target, sent through a new client transaction.
    fn start_branch(
        &mut self,
        now: Instant,
        context: Context,
        target: &Target,
    ) -> Result<(), Error> {
        let state = self
            .contexts
            .get(&context)
            .ok_or(Error::UnknownTransaction)?;
        let mut copy = state.request.clone();
        // Step 2: the Request-URI.
        copy.set_uri(&target.uri)?;
        // Step 3: Max-Forwards.
        let mf = copy
            .headers()
            .typed::<MaxForwards>()
            .and_then(Result::ok)
            .map_or(70, |m| m.0);
        copy.headers_mut()
            .set(HeaderName::MaxForwards, mf.saturating_sub(1).to_string());
        // Step 6-7: the next hop is the first Route, or the Request-URI.
        let next_hop = match copy.headers().typed::<Route>().and_then(Result::ok) {
            Some(route) => route.0.uri().as_str().to_owned(),
            None => target.uri.clone(),
        };
        let peer = match target.peer {
            Some(p) if !copy.headers().contains(HeaderName::Route) => p,
            _ => self.resolve(&next_hop)?,
        };
        let local = self.local(peer.transport)?;
        // Step 4: Record-Route, for requests that can make a dialog. Leaving over another
        // transport or address than it came in on, the request gets two (RFC 5658 §3.2):
        // the inbound side's first, the outbound side's on top.
        let dialog_forming = matches!(
            copy.method(),
            Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
        );
        if self.config.record_route && dialog_forming && DialogId::of_request(&copy).is_none() {
            let inbound = state.source.transport;
            if let Ok(inbound_local) = self.local(inbound)
                && (inbound, inbound_local) != (peer.transport, local)
            {
                let value = self.record_route_value(inbound, inbound_local);
                copy.headers_mut()
                    .push_front(HeaderName::RecordRoute, value);
            }
            let value = self.record_route_value(peer.transport, local);
            copy.headers_mut()
                .push_front(HeaderName::RecordRoute, value);
        }
        // Step 8: our Via, with a branch that carries the loop hash.
        let branch = format!("{}.{}", self.ids.branch(), self.loop_hash(&state.request));
        copy.headers_mut().push_front(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                peer.transport,
                host_port(local)
            ),
        );
        let txn = self.tx.start_client(now, copy.clone(), peer)?;
        self.by_client.insert(txn, context);
        let invite = state.invite;
        if let Some(state) = self.contexts.get_mut(&context) {
            state.branches.push(Branch {
                txn,
                request: copy,
                peer,
                response: None,
                stand_in: false,
                provisional: false,
                ringing: false,
                done: false,
                cancel_when_provisional: false,
                cancelled: false,
                timed_out: false,
            });
        }
        if invite {
            self.arm_timer_c(now, context, txn);
        }
        Ok(())
    }

    /// (Re)starts Timer C of a branch, unless it is cancelled (its give-up deadline runs).
    fn arm_timer_c(&mut self, now: Instant, context: Context, txn: TransactionId) {
        let cancelled = self
            .contexts
            .get(&context)
            .and_then(|s| s.branches.iter().find(|b| b.txn == txn))
            .is_some_and(|b| b.cancelled);
        if !cancelled {
            self.arm_branch_timer(now + self.config.timer_c, context, txn);
        }
    }

    fn arm_branch_timer(&mut self, at: Instant, context: Context, txn: TransactionId) {
        self.branch_timers.insert(txn, at);
        self.timers.push(Reverse((at, context, txn)));
    }

    /// [`Event::Dialog`] for a provisional or 2xx response on a branch, when it makes a
    /// dialog and [`Config::screen_routed`] is on.
    fn report_dialog(&mut self, context: Context, txn: TransactionId, response: &Response) {
        if !self.config.screen_routed {
            return;
        }
        let Some(state) = self.contexts.get(&context) else {
            return;
        };
        let forming = matches!(
            state.request.method(),
            Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
        );
        if !forming || DialogId::of_request(&state.request).is_some() {
            return;
        }
        let (Some(id), Some(branch)) = (
            DialogId::of_response(response),
            state.branches.iter().find(|b| b.txn == txn),
        ) else {
            return;
        };
        self.events.push_back(Event::Dialog {
            context,
            id,
            upstream: state.source,
            downstream: branch.peer,
            confirmed: response.status().is_success(),
        });
    }

    /// §16.7: a response on a branch.
    fn on_response(&mut self, now: Instant, txn: TransactionId, mut response: Response) {
        let Some(&context) = self.by_client.get(&txn) else {
            return;
        };
        // Step 3: our Via off.
        remove_first_element(response.headers_mut(), HeaderName::Via);
        if !response.headers().contains(HeaderName::Via) {
            return;
        }
        let status = response.status();
        let Some(state) = self.contexts.get_mut(&context) else {
            return;
        };
        let Some(branch) = state.branches.iter_mut().find(|b| b.txn == txn) else {
            // A CANCEL's own response: nothing goes upstream.
            return;
        };
        if status.is_provisional() {
            branch.provisional = true;
            branch.ringing |= status != StatusCode::TRYING;
            let cancel = std::mem::take(&mut branch.cancel_when_provisional);
            let (invite, answered, server) = (state.invite, state.answered, state.server);
            if invite {
                self.arm_timer_c(now, context, txn);
            }
            if cancel {
                self.send_cancel(now, context, txn);
            } else if status != StatusCode::TRYING && !answered {
                // Step 5: provisional responses go upstream at once (not 100).
                self.report_dialog(context, txn, &response);
                let _ = self.tx.respond(now, server, response);
            }
            return;
        }
        branch.done = true;
        self.branch_timers.remove(&txn);
        if status.is_success() {
            // Step 5: a 2xx goes upstream at once, and ends the search.
            state.decided = true;
            state.pending_targets.clear();
            let server = state.server;
            let first = !state.answered;
            state.answered = true;
            self.report_dialog(context, txn, &response);
            let _ = self.tx.respond(now, server, response);
            if first {
                self.events.push_back(Event::Answered { context, status });
                self.cancel_branches(now, context);
            }
            return;
        }
        if branch.timed_out && status == StatusCode::REQUEST_TERMINATED {
            // §16.8: the branch ended because Timer C cancelled it; upstream learns that it
            // timed out, not that someone cancelled it.
            branch.response = Some(with_status(
                &response,
                StatusCode::REQUEST_TIMEOUT,
                "Request Timeout",
            ));
            branch.stand_in = true;
        } else {
            branch.response = Some(response);
        }
        if status.as_u16() >= 600 {
            state.decided = true;
            state.pending_targets.clear();
            self.cancel_branches(now, context);
        }
        self.maybe_done(now, context);
    }

    fn on_branch_failure(&mut self, now: Instant, txn: TransactionId, status: StatusCode) {
        let Some(&context) = self.by_client.get(&txn) else {
            return;
        };
        let Some(state) = self.contexts.get_mut(&context) else {
            return;
        };
        if let Some(branch) = state.branches.iter_mut().find(|b| b.txn == txn && !b.done) {
            branch.done = true;
            let reason = match status {
                StatusCode::REQUEST_TIMEOUT => "Request Timeout",
                StatusCode::REQUEST_TERMINATED => "Request Terminated",
                _ => "Service Unavailable",
            };
            // Built from the request as received: it goes upstream as it is.
            let tag = self.ids.tag();
            branch.response = Some(simple(&state.request, status, reason, &tag));
            branch.stand_in = true;
            self.branch_timers.remove(&txn);
            tracing::debug!(
                call_id = call_id(&state.request),
                %status,
                peer = %branch.peer,
                "branch ended without a final response"
            );
            self.maybe_done(now, context);
        }
    }

    /// A branch deadline. Timer C (§16.8): a branch that had a provisional response is
    /// cancelled, and counts as timed out; one that had none is taken as timed out at once.
    /// The give-up deadline of a cancelled branch (§9.1: no final response 64*T1 after the
    /// CANCEL): the branch ends as timed out (Timer C) or terminated (any other CANCEL).
    fn on_branch_timer(&mut self, now: Instant, context: Context, txn: TransactionId) {
        let Some(branch) = self
            .contexts
            .get_mut(&context)
            .and_then(|s| s.branches.iter_mut().find(|b| b.txn == txn && !b.done))
        else {
            return;
        };
        if branch.cancelled {
            let status = if branch.timed_out {
                StatusCode::REQUEST_TIMEOUT
            } else {
                StatusCode::REQUEST_TERMINATED
            };
            self.on_branch_failure(now, txn, status);
        } else if branch.provisional {
            branch.timed_out = true;
            self.send_cancel(now, context, txn);
        } else {
            self.on_branch_failure(now, txn, StatusCode::REQUEST_TIMEOUT);
        }
    }

    /// When every branch is done: the next q-value group, or the best response upstream.
    fn maybe_done(&mut self, now: Instant, context: Context) {
        let Some(state) = self.contexts.get(&context) else {
            return;
        };
        if state.answered || state.branches.iter().any(|b| !b.done) {
            return;
        }
        if !state.decided && !state.pending_targets.is_empty() {
            self.next_group(now, context);
            return;
        }
        let unanswered =
            !state.branches.is_empty() && state.branches.iter().all(Branch::unanswered);
        if unanswered {
            let reply = if state.cancelled {
                Some(Reply::new(
                    StatusCode::REQUEST_TERMINATED,
                    "Request Terminated",
                ))
            } else {
                self.config.unanswered.clone()
            };
            if let Some(reply) = reply {
                tracing::debug!(
                    call_id = call_id(&state.request),
                    status = %reply.status,
                    "no branch was answered"
                );
                let _ = self.respond(now, context, reply.status, &reply.reason, &[]);
                return;
            }
        }
        let best = best_response(
            state
                .branches
                .iter()
                .filter_map(|b| Some((b.response.as_ref()?, b.stand_in))),
        );
        match best {
            Some(resp) => {
                let _ = self.send_upstream(now, context, resp);
            }
            None => {
                let _ = self.respond(
                    now,
                    context,
                    StatusCode::TEMPORARILY_UNAVAILABLE,
                    "No Target Reachable",
                    &[],
                );
            }
        }
    }

    fn send_upstream(
        &mut self,
        now: Instant,
        context: Context,
        response: Response,
    ) -> Result<(), Error> {
        let state = self
            .contexts
            .get_mut(&context)
            .ok_or(Error::UnknownTransaction)?;
        state.answered = true;
        let server = state.server;
        let status = response.status();
        self.tx.respond(now, server, response)?;
        self.events.push_back(Event::Answered { context, status });
        self.pump(now);
        Ok(())
    }

    /// §16.10: CANCEL every branch still pending (now if it had a provisional response,
    /// else when it gets one).
    fn cancel_branches(&mut self, now: Instant, context: Context) {
        let Some(state) = self.contexts.get_mut(&context) else {
            return;
        };
        if !state.invite {
            return;
        }
        let mut now_cancel = Vec::new();
        for b in state.branches.iter_mut().filter(|b| !b.done) {
            if b.provisional {
                now_cancel.push(b.txn);
            } else {
                b.cancel_when_provisional = true;
            }
        }
        for txn in now_cancel {
            self.send_cancel(now, context, txn);
        }
    }

    /// Sends the CANCEL of a branch (once), and starts its give-up deadline.
    fn send_cancel(&mut self, now: Instant, context: Context, txn: TransactionId) {
        let Some(branch) = self
            .contexts
            .get_mut(&context)
            .and_then(|s| s.branches.iter_mut().find(|b| b.txn == txn))
        else {
            return;
        };
        if std::mem::replace(&mut branch.cancelled, true) {
            return;
        }
        let (cancel, peer) = (cancel_for(&branch.request), branch.peer);
        // Even when the CANCEL cannot go, the branch is given up in time.
        let give_up = now + self.config.transactions.timeout();
        self.arm_branch_timer(give_up, context, txn);
        if let Ok(id) = cancel.and_then(|cancel| self.tx.start_client(now, cancel, peer)) {
            self.by_client.insert(id, context);
        }
    }

    /// The ACK of a 2xx (and any request the transaction layer passes without a transaction)
    /// is forwarded statelessly along its Route or to its Request-URI (§16.11).
    fn forward_stateless(&mut self, mut request: Request, source: Peer) {
        self.preprocess_routes(&mut request);
        let mf = request
            .headers()
            .typed::<MaxForwards>()
            .and_then(Result::ok)
            .map_or(70, |m| m.0);
        if mf == 0 {
            return;
        }
        request
            .headers_mut()
            .set(HeaderName::MaxForwards, (mf - 1).to_string());
        let next_hop = next_hop(&request);
        if self.is_me(&next_hop) {
            return;
        }
        let Ok(peer) = self.resolve(&next_hop) else {
            return;
        };
        let Ok(local) = self.local(peer.transport) else {
            return;
        };
        let branch = format!("{}.{}", self.ids.branch(), self.loop_hash(&request));
        request.headers_mut().push_front(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={branch}",
                peer.transport,
                host_port(local)
            ),
        );
        if self.config.screen_routed {
            self.events.push_back(Event::Ack {
                request: Box::new(request),
                source,
                next: peer,
            });
            return;
        }
        self.tx.send(peer, request.to_bytes());
    }

    /// A response matching no transaction (a retransmitted 2xx): our Via off, then to the
    /// next Via (§16.7 step 3, §18.2.2).
    fn forward_response_stateless(&mut self, mut response: Response) {
        let ours = response
            .headers()
            .typed::<Via>()
            .and_then(Result::ok)
            .is_some_and(|v| {
                self.config.listen.iter().any(|p| {
                    v.host().to_string() == p.addr.ip().to_string()
                        && v.port() == Some(p.addr.port())
                })
            });
        if !ours {
            return;
        }
        remove_first_element(response.headers_mut(), HeaderName::Via);
        let Some(via) = response.headers().typed::<Via>().and_then(Result::ok) else {
            return;
        };
        let Some(peer) = peer_for_via(&via) else {
            return;
        };
        self.tx.send(peer, response.to_bytes());
    }

    fn local(&self, transport: Transport) -> Result<SocketAddr, Error> {
        self.config
            .listen
            .iter()
            .find(|p| p.transport == transport)
            .map(|p| p.addr)
            .ok_or(Error::NotAllowed(
                "the proxy does not listen on that transport",
            ))
    }
}

/// §16.6 steps 6-7: the URI of the next hop, the top Route's or else the Request-URI.
fn next_hop(request: &Request) -> String {
    match request.headers().typed::<Route>().and_then(Result::ok) {
        Some(route) => route.0.uri().as_str().to_owned(),
        None => request.uri_str().to_owned(),
    }
}

/// §16.7 step 6: the best final response of the branches, each with whether it is the
/// proxy's stand-in (a timeout, a transport error): a 6xx if there is one, else the lowest
/// class (3xx, then 4xx, then 5xx), in which a response from downstream wins over a stand-in
/// (the step lets the proxy pick any of the class; a 486 says more than our 408), then the
/// lowest code; 503 becomes 500; a 401 or 407 carries every challenge of every 401 and 407.
fn best_response<'a>(finals: impl Iterator<Item = (&'a Response, bool)>) -> Option<Response> {
    let finals: Vec<(&Response, bool)> = finals.collect();
    let best = finals
        .iter()
        .find(|(r, _)| r.status().as_u16() >= 600)
        .or_else(|| {
            finals.iter().min_by_key(|(r, stand_in)| {
                let code = r.status().as_u16();
                (code / 100, *stand_in, code)
            })
        })?;
    let mut best = best.0.clone();
    if best.status() == StatusCode::SERVICE_UNAVAILABLE {
        best = with_status(
            &best,
            StatusCode::SERVER_INTERNAL_ERROR,
            "Server Internal Error",
        );
    }
    if matches!(best.status().as_u16(), 401 | 407) {
        for (other, _) in finals
            .iter()
            .filter(|(r, _)| matches!(r.status().as_u16(), 401 | 407))
        {
            for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
                for f in other.headers().get_all(name) {
                    let already = best.headers().get_all(name).any(|g| g.value == f.value);
                    if !already {
                        best.headers_mut().push(name, f.value);
                    }
                }
            }
        }
    }
    Some(best)
}

/// `response` with another status line (headers and body kept).
fn with_status(response: &Response, status: StatusCode, reason: &str) -> Response {
    let mut converted = Response::new(status, reason);
    for f in response.headers().iter() {
        converted.headers_mut().push_named(f.name_str(), f.value);
    }
    if !response.body().is_empty() {
        let content_type = response
            .headers()
            .get(HeaderName::ContentType)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        converted.set_body(&content_type, response.body().clone());
    }
    converted
}

/// The CANCEL of a request sent on a branch (§9.1).
fn cancel_for(invite: &Request) -> Result<Request, Error> {
    let mut cancel = Request::new(Method::Cancel, invite.uri_str())?;
    let h = cancel.headers_mut();
    if let Some(via) = invite.headers().get(HeaderName::Via) {
        h.push(HeaderName::Via, crate::text::first_element(via));
    }
    for name in [
        HeaderName::MaxForwards,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
    ] {
        if let Some(v) = invite.headers().get(name) {
            h.push(name, v);
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
    Ok(cancel)
}

/// The Call-ID of a request, for logs; empty when it has none.
fn call_id(request: &Request) -> &str {
    request
        .headers()
        .typed::<crate::header::CallId>()
        .and_then(Result::ok)
        .map_or("", |c| c.0)
}

fn simple(request: &Request, status: StatusCode, reason: &str, tag: &str) -> Response {
    let tag = (!tag.is_empty()).then_some(tag);
    let mut resp = Response::for_request(request, status, reason, tag);
    resp.headers_mut().push(HeaderName::ContentLength, "0");
    resp
}

/// Where a response goes after our Via is removed: the next Via's received/rport, else its
/// sent-by (§18.2.2).
fn peer_for_via(via: &Via<'_>) -> Option<Peer> {
    let transport = Transport::from_token(via.transport())?;
    let ip = match via.received() {
        Some(r) => r.parse().ok()?,
        None => via
            .host()
            .to_string()
            .trim_matches(['[', ']'])
            .parse()
            .ok()?,
    };
    let port = via
        .rport()
        .flatten()
        .or(via.port())
        .unwrap_or(transport.default_port());
    Some(Peer::new(transport, SocketAddr::new(ip, port)))
}

/// A proxy's loop key from its seed (SplitMix64's finaliser: seeds 1 and 2 give unrelated
/// keys).
fn loop_key(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `name=value` pairs of a parameter string such as `;node=12D3;x=y` (a name without a
/// value has the empty value).
fn parse_params(params: &str) -> impl Iterator<Item = (&str, &str)> {
    params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        ip => format!("{ip}:{}", addr.port()),
    }
}

/// Removes the first element of a list header: the whole first field if it holds one value,
/// else that value.
fn remove_first_element(headers: &mut crate::Headers, name: HeaderName) {
    let Some(first) = headers.get(name).map(<[u8]>::to_vec) else {
        return;
    };
    let rest = crate::text::after_first_element(&first);
    if rest.is_empty() {
        headers.remove_first(name);
    } else {
        let rest = rest[1..].to_vec();
        headers.set_first(name, rest);
    }
}

/// Removes the last element of a list header.
fn remove_last(headers: &mut crate::Headers, name: HeaderName) {
    let values: Vec<Vec<u8>> = headers
        .get_all(name)
        .flat_map(|f| {
            crate::text::split_list(f.value)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    headers.remove(name);
    for v in &values[..values.len().saturating_sub(1)] {
        headers.push(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, challenge: Option<(HeaderName, &str)>) -> Response {
        let mut r = Response::new(StatusCode::new(status).unwrap(), "x");
        r.headers_mut().push(
            HeaderName::Via,
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa",
        );
        if let Some((name, value)) = challenge {
            r.headers_mut().push(name, value);
        }
        r
    }

    /// §16.7 step 6: a 6xx wins; else the lowest class; 503 becomes 500.
    #[test]
    fn s16_7_6_best_response_choice() {
        let pick = |codes: &[u16]| {
            let rs: Vec<Response> = codes.iter().map(|&c| response(c, None)).collect();
            best_response(rs.iter().map(|r| (r, false))).map(|r| r.status().as_u16())
        };
        assert_eq!(pick(&[486, 603, 302]), Some(603));
        assert_eq!(pick(&[486, 302, 500]), Some(302));
        assert_eq!(pick(&[486, 404]), Some(404));
        assert_eq!(pick(&[503]), Some(500));
        assert_eq!(pick(&[]), None);
    }

    /// §16.7 step 6 lets the proxy pick any response of the chosen class: one from
    /// downstream wins over the proxy's own stand-in (a timeout's 408), whatever the codes.
    #[test]
    fn s16_7_6_downstream_responses_win_over_stand_ins() {
        let busy = response(486, None);
        let timeout = response(408, None);
        let unavailable = response(503, None);
        let best = best_response([(&timeout, true), (&busy, false)].into_iter()).unwrap();
        assert_eq!(best.status().as_u16(), 486);
        let best = best_response([(&timeout, false), (&busy, false)].into_iter()).unwrap();
        assert_eq!(best.status().as_u16(), 408);
        // The class still comes first: a stand-in 408 beats a 5xx from downstream.
        let best = best_response([(&timeout, true), (&unavailable, false)].into_iter()).unwrap();
        assert_eq!(best.status().as_u16(), 408);
    }

    /// §16.7 step 7: the 401 or 407 sent upstream carries every branch's challenges.
    #[test]
    fn s16_7_7_challenges_are_merged() {
        let a = response(
            407,
            Some((
                HeaderName::ProxyAuthenticate,
                "Digest realm=\"a\", nonce=\"1\"",
            )),
        );
        let b = response(
            401,
            Some((
                HeaderName::WwwAuthenticate,
                "Digest realm=\"b\", nonce=\"2\"",
            )),
        );
        let best = best_response([a, b].iter().map(|r| (r, false))).unwrap();
        assert_eq!(best.status().as_u16(), 401);
        assert_eq!(best.headers().count(HeaderName::ProxyAuthenticate), 1);
        assert_eq!(best.headers().count(HeaderName::WwwAuthenticate), 1);
    }
}
