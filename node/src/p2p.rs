//! The P2PSIP node: SIP without servers (RFC 7904's SIP usage, on our overlay).
//!
//! A [`Node`] runs one overlay node ([`Overlay`]) and one SIP proxy core with its registrar
//! over the node's SIP sockets, and glues them:
//!
//! - **Registration.** A REGISTER from a softphone at this node's SIP port goes through the
//!   registrar (RFC 3261 §10.3); when it changes the AOR's bindings, the node publishes them as
//!   its SIP-REGISTRATION entry under `blake3(normalized AOR)`: keyed by this node's Node-ID,
//!   signed by the node's key, with a delegation from the node's user key (which claims the
//!   AOR first if nobody has). The 200 OK goes out once a majority of the replicas stored it;
//!   the overlay keeps it refreshed (see [`Overlay::publish`]). A replica that refuses the
//!   entry for want of the claim (the replica set moved since the claim was stored) makes
//!   the node claim again and retry once. A refusal restores the old
//!   bindings and becomes the SIP answer: 403 with the overlay's reason ("AOR is owned by
//!   another key"), 503 when no replica set could be reached.
//! - **Requests for an AOR** (INVITE, MESSAGE, OPTIONS, SUBSCRIBE, ...) from a local client:
//!   the transaction layer sends 100 Trying if no other answer left within 200 ms (RFC 3261
//!   §17.2.1), so a call whose callee rings at once costs no 100 over the overlay; the node
//!   fetches the AOR's registrations and claim, checks every entry as a replica would
//!   (signature, delegation, claim), and forwards the request to every contact of every
//!   device (forking), over the overlay to each device's node. No registration is 404.
//! - **When nobody answers.** A request for an AOR whose devices all fail to answer gets 480
//!   Temporarily Unavailable with a reason that says why: "(no device answered)" when every
//!   branch timed out (Timer B or F) or could not be sent (the device's node is gone from the
//!   overlay), from the proxy core's [`proxy::Config::unanswered`]; "(no device registered
//!   here)" from a device's node that still has the registration in the overlay but no longer
//!   the device. A device that rings and never answers is cancelled by Timer C
//!   ([`proxy::Config::timer_c`]) and the caller gets 408; a CANCEL from the caller reaches
//!   every branch, over the overlay too, and the caller gets 487.
//! - **Authentication** ([`Config::auth`]): a node with a SIP address beyond loopback does
//!   not start without users. With users, every request of a local client outside a dialog
//!   needs digest credentials (RFC 3261 §22, RFC 7616; nonces keyed with a secret from the
//!   operating system): 401 for a REGISTER, 407 for the rest, counted in
//!   [`Stats::challenged`] (wrong credentials also in [`Stats::refused`]). A user registers
//!   only AORs whose user part is its name (else 403). Nothing is published, looked up or
//!   relayed for a client without valid credentials. [`Node::trust`] lets one local socket
//!   in without them (the node's built-in agent). In-dialog requests are not challenged (an
//!   ACK cannot be): they are held to the dialog table below instead.
//! - **The edge** ([`edge`]): the proxy core puts every request that still carries a Route
//!   after the node's own, or a To tag, to the node ([`proxy::Config::screen_routed`]), and
//!   reports each dialog it sees being made. A Route outside a dialog that does not name this
//!   node is refused, 403. An in-dialog request (ACKs of 2xx included) goes on only for a
//!   dialog this node record-routed, only from one of its two sides (a local client by IP
//!   address, an overlay node by its authenticated Node-ID) and only to the other one: 481
//!   for an unknown dialog, 403 otherwise, counted in [`Stats::refused`] (ACKs are dropped).
//!   So the node relays to no URI of a client's choosing, and a node that is not a dialog's
//!   other end cannot reach its softphone.
//! - **Identifiers.** Branches, tags and Call-IDs come from [`Ids::from_os`], a CSPRNG keyed
//!   from the operating system: nobody can guess them to forge a response or a CANCEL.
//! - **Flood limits.** Each local client (its source address and port) has three budgets
//!   ([`limit`], [`Config::limits`]): one for REGISTERs, one for the other out-of-dialog
//!   requests, one for requests inside a dialog. A request beyond its budget is answered 503 "Service Unavailable (too many
//!   requests from this client)" with Retry-After, counted in [`Stats::refused`], and logged
//!   with its Call-ID (a warning for the first refusal of a flood, debug for the rest). Other
//!   clients are not affected. Requests from other overlay nodes are not counted here: they
//!   only reach the contacts registered at this node and the dialogs it knows.
//! - **Over the overlay**, a SIP message is the payload of a Route message to a node; the
//!   Route's own answer only says the node took it. SIP responses come back the same way. To
//!   the proxy core an overlay node is a reliable connection: a [`Peer`] whose connection id
//!   is in [`OVERLAY_LINKS`] and whose address, in the discard prefix `100::/64` (RFC 6666),
//!   only stands for the node. A node takes requests from the overlay only for the contacts
//!   registered at it (never an open relay). Once a Route is answered, the node notes the
//!   overlay links it crossed for each initial INVITE it carried ([`Node::invite_hops`],
//!   [`hops`]).
//! - **Dialogs end to end.** Both end nodes Record-Route with a URI that carries
//!   `;node=<Node-ID>`; a next hop with that parameter is sent over the overlay straight to
//!   that node (libp2p dials it), so in-dialog requests never cross a third peer.
//! - **Media** ([`media`], [`Config::media`]): each end node anchors its softphones' RTP and
//!   RTCP. An SDP from another node is rewritten (before the proxy core sees it) to ports the
//!   node opens for its softphone; an SDP its softphone sends to another node tells where
//!   that softphone wants the media; packets go between the two end nodes on a libp2p stream
//!   of the overlay's media protocol, never through third nodes. Counted in [`Stats::media`].
//! - **Outside the overlay**, a Request-URI whose host is an IP address other than this node's
//!   (`sip:carol@192.0.2.7:5070`) is proxied over plain SIP.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use p2psip_overlay::data::{AorClaim, Contact, Delegation, Kind, RegistrationValue};
use p2psip_overlay::error::{Error as OverlayError, ErrorCode};
use p2psip_overlay::id::{ResourceId, normalize_aor};
use p2psip_overlay::identity::{UserKey, is_self_certifying};
use p2psip_overlay::node::{self as overlay_node, Overlay};
use p2psip_sip::header::{CallId, To};
use p2psip_sip::proxy::{self, Proxy, Target};
use p2psip_sip::registrar::{self, Binding, Bindings, MemoryBindings, Registrar, StoreError};
use p2psip_sip::transaction::TransactionId;
use p2psip_sip::{
    ConnectionId, DialogId, HeaderName, Host, Ids, Message, Method, Peer, Request, StatusCode,
    Transport, Uri, auth,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::{now, sleep_until};
use crate::edge::{self, Dialogs};
use crate::hops::{self, InviteHops};
use crate::limit::{self, Budget, Limiter};
use crate::media::{self, Ingress, Media};
use crate::transport::{self, Incoming, Transports};

/// Connection ids from this value up name overlay nodes, not sockets.
pub const OVERLAY_LINKS: u64 = 1 << 62;

/// How a node runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The overlay node (data directory, network, replication).
    pub overlay: overlay_node::Config,
    /// The SIP sockets; at least one TCP address (the overlay side of the proxy is reliable).
    pub sip: transport::Config,
    /// The proxy core (its `listen` and `record_route_params` are filled in). Its
    /// `unanswered` is 480 "Temporarily Unavailable (no device answered)" unless changed.
    pub proxy: proxy::Config,
    /// The registrar of the local clients.
    pub registrar: registrar::Config,
    /// How long an AOR claim made by this node lasts; its owner keeps it refreshed. Default
    /// 1 day.
    pub claim_lifetime: Duration,
    /// The enrollment CA's certified claims of this node's user key
    /// ([`AorClaim::from_text`]): in an overlay with an enrollment CA, an AOR that is not
    /// self-certifying is claimed with its certificate, and lives at most until that ends.
    pub aor_certificates: Vec<AorClaim>,
    /// How many lookups and publications may be under way at once; beyond, 503. Default
    /// 1024.
    pub max_pending: usize,
    /// How many SIP messages from the overlay may wait for the node's task. Default 1024.
    pub overlay_queue: usize,
    /// The flood limits of each local client (REGISTERs, other out-of-dialog requests).
    pub limits: limit::Config,
    /// Media anchoring: on by default; see [`media`].
    pub media: media::Config,
    /// Digest authentication of the local clients. `None`: none, which only a node whose
    /// SIP addresses are all loopback may run with ([`Node::start`] refuses otherwise).
    pub auth: Option<Auth>,
    /// How long and how many dialogs the edge remembers ([`edge`]).
    pub dialogs: edge::Config,
}

/// Who may use a node's SIP side: with it, every request of a local client outside a dialog
/// needs valid digest credentials (RFC 3261 §22, RFC 7616): 401 for a REGISTER, 407 for the
/// rest. The nonces are keyed with a secret drawn from the operating system at start.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The realm of the challenges. Default (empty): `p2psip`.
    pub realm: String,
    /// The users by name: a password, or HA1 hashes ([`auth::ha1`]).
    pub users: HashMap<String, auth::Credential>,
}

impl Config {
    /// A node with its data in `data_dir`, SIP on `sip` (UDP and TCP) and the overlay's
    /// defaults.
    pub fn new(data_dir: impl Into<std::path::PathBuf>, sip: SocketAddr) -> Config {
        Config {
            overlay: overlay_node::Config::new(data_dir),
            sip: transport::Config {
                udp: vec![sip],
                tcp: vec![sip],
                ..transport::Config::default()
            },
            proxy: proxy::Config {
                unanswered: Some(proxy::Reply::new(
                    StatusCode::TEMPORARILY_UNAVAILABLE,
                    "Temporarily Unavailable (no device answered)",
                )),
                ..proxy::Config::default()
            },
            registrar: registrar::Config::default(),
            claim_lifetime: Duration::from_secs(86_400),
            aor_certificates: Vec::new(),
            max_pending: 1024,
            overlay_queue: 1024,
            limits: limit::Config::default(),
            media: media::Config::default(),
            auth: None,
            dialogs: edge::Config::default(),
        }
    }

    /// Turns digest authentication on, with these users.
    pub fn with_auth(mut self, auth: Auth) -> Config {
        self.auth = Some(auth);
        self
    }

    /// Replaces the overlay node's configuration.
    pub fn with_overlay(mut self, overlay: overlay_node::Config) -> Config {
        self.overlay = overlay;
        self
    }

    /// Replaces the media configuration.
    pub fn with_media(mut self, media: media::Config) -> Config {
        self.media = media;
        self
    }

    /// Replaces the flood limits of the local clients.
    pub fn with_limits(mut self, limits: limit::Config) -> Config {
        self.limits = limits;
        self
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SIP sockets could not be set up.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// The overlay node could not start.
    #[error(transparent)]
    Overlay(#[from] overlay_node::Error),
    /// The user key could not be read or written.
    #[error("the user key: {0}")]
    UserKey(OverlayError),
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
}

/// What a node counts, for tests, benchmarks and `p2psip status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// SIP requests that arrived over the overlay, out of a dialog.
    pub overlay_requests: AtomicU64,
    /// SIP requests that arrived over the overlay inside a dialog (a To tag).
    pub overlay_in_dialog: AtomicU64,
    /// SIP responses that arrived over the overlay.
    pub overlay_responses: AtomicU64,
    /// SIP messages sent over the overlay.
    pub overlay_sent: AtomicU64,
    /// Registrations published in the overlay.
    pub published: AtomicU64,
    /// Requests refused: REGISTERs the overlay refused, failed lookups, clients over their
    /// limits, bad payloads and messages from the overlay the node had no room for, wrong
    /// credentials, REGISTERs of another user's AOR, Routes to elsewhere, in-dialog requests
    /// of unknown dialogs or from or to someone else than the dialog's sides.
    pub refused: AtomicU64,
    /// Requests of local clients answered 401 or 407 (no credentials, wrong ones, or a stale
    /// nonce).
    pub challenged: AtomicU64,
    /// What the media side counted: sessions, packets to and from the softphones, frames
    /// between nodes and the drops.
    pub media: Arc<media::Stats>,
}

/// A running P2PSIP node; dropping it stops its SIP side (see [`Node::leave`]).
#[derive(Debug)]
pub struct Node {
    overlay: Arc<Overlay>,
    sip: Vec<Peer>,
    trusted: Arc<Mutex<HashSet<SocketAddr>>>,
    stats: Arc<Stats>,
    invites: Arc<Mutex<hops::Table>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Starts the overlay node, binds the SIP sockets and starts serving.
    pub async fn start(mut config: Config) -> Result<Node, Error> {
        if config.sip.tcp.is_empty() {
            return Err(Error::Config(
                "the node needs a TCP SIP address: the overlay side of its proxy is reliable"
                    .into(),
            ));
        }
        let wide = config
            .sip
            .udp
            .iter()
            .chain(&config.sip.tcp)
            .chain(&config.sip.tls)
            .find(|a| !a.ip().is_loopback());
        if let (Some(addr), None) = (wide, &config.auth) {
            return Err(Error::Config(format!(
                "SIP listens on {addr}, beyond loopback, without digest authentication: give \
                 the node users (Config::auth), or listen on 127.0.0.1 only"
            )));
        }
        let verifier = match &config.auth {
            Some(users) if users.users.is_empty() => {
                return Err(Error::Config(
                    "digest authentication is on but there are no users: add one".into(),
                ));
            }
            Some(users) => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| {
                    Error::Config(format!("the operating system's RNG failed: {e}"))
                })?;
                let realm = if users.realm.is_empty() {
                    "p2psip"
                } else {
                    &users.realm
                };
                Some(
                    auth::Verifier::new(auth::Config::new(realm, secret))
                        .map_err(|e| Error::Config(e.to_string()))?,
                )
            }
            None => None,
        };
        let ids = || {
            Ids::from_os()
                .map_err(|e| Error::Config(format!("the operating system's RNG failed: {e}")))
        };
        // The SIP sockets first: a port in use stops the node before anything is written to
        // its data directory.
        let (sockets, incoming) = Transports::bind(config.sip.clone()).await?;
        let dir = config.overlay.data_dir.clone();
        let user = tokio::task::spawn_blocking(move || UserKey::load_or_create(&dir))
            .await
            .map_err(|_| Error::Config("the user key could not be read".into()))?
            .map_err(Error::UserKey)?;
        let user_key = user.public().encode_protobuf();
        if let Some(other) = config
            .aor_certificates
            .iter()
            .find(|c| c.user_key != user_key)
        {
            return Err(Error::Config(format!(
                "the AOR certificate for {} names another user key than this node's; ask the                  enrollment CA for one of this node's user key",
                other.aor
            )));
        }
        let overlay = Arc::new(Overlay::start(config.overlay.clone()).await?);
        let id = overlay.node_id();
        config.proxy.listen = sockets.local_addrs().to_vec();
        config.proxy.record_route = true;
        config.proxy.record_route_params = format!(";node={id}");
        config.proxy.screen_routed = true;
        let sip = config.proxy.listen.clone();
        let links = Arc::new(Mutex::new(Links::default()));
        let mut proxy = Proxy::with_ids(config.proxy.clone(), ids()?);
        let resolver_links = links.clone();
        proxy.set_resolver(Box::new(move |uri| {
            let node = node_param(uri)?;
            (node != id).then(|| lock(&resolver_links).peer(node))
        }));
        let (overlay_tx, overlay_rx) = mpsc::channel(config.overlay_queue.max(1));
        let stats = Arc::new(Stats::default());
        let handler_stats = stats.clone();
        overlay.set_route_handler(Box::new(move |origin, payload| {
            let messages = unframe(&payload).inspect_err(|error| {
                handler_stats.refused.fetch_add(1, Ordering::Relaxed);
                debug!(%origin, %error, "a Route payload refused");
            })?;
            if overlay_tx.capacity() < messages.len() {
                handler_stats.refused.fetch_add(1, Ordering::Relaxed);
                for message in &messages {
                    debug!(%origin, call_id = message_call_id(message), "the node is overloaded; a SIP message from the overlay refused");
                }
                return Err(OverlayError::invalid(
                    "the node is overloaded; try again later",
                ));
            }
            for message in messages {
                overlay_tx.try_send((origin, message)).map_err(|_| {
                    OverlayError::invalid("the node is overloaded; try again later")
                })?;
            }
            Ok(Vec::new())
        }));
        let media = config.media.enabled.then(|| {
            // UDP first: the softphones' media is UDP.
            let (udp, other): (Vec<&Peer>, Vec<&Peer>) =
                sip.iter().partition(|p| p.transport == Transport::Udp);
            let listen: Vec<SocketAddr> = udp.into_iter().chain(other).map(|p| p.addr).collect();
            Media::start(
                config.media.clone(),
                overlay.network(),
                &listen,
                stats.media.clone(),
            )
        });
        let (done_tx, done_rx) = mpsc::channel(config.max_pending.max(1));
        let (stop, stopped) = oneshot::channel();
        let trusted = Arc::new(Mutex::new(HashSet::new()));
        let invites = Arc::new(Mutex::new(hops::Table::default()));
        let state = State {
            id,
            verifier,
            ids: ids()?,
            trusted: trusted.clone(),
            dialogs: Dialogs::new(config.dialogs.clone(), is_link),
            user: user.keypair().clone(),
            overlay: overlay.clone(),
            proxy,
            registrar: Registrar::with_ids(config.registrar.clone(), ids()?),
            bindings: MemoryBindings::new(&config.registrar),
            limiter: Limiter::new(config.limits.clone()),
            links,
            stats: stats.clone(),
            claimed: HashSet::new(),
            expiries: HashMap::new(),
            pending: 0,
            queues: HashMap::new(),
            invites: invites.clone(),
            media,
            done: done_tx,
            config,
        };
        let span = info_span!("p2psip", node = %id);
        let task = tokio::spawn(
            run(state, sockets, incoming, overlay_rx, done_rx, stopped).instrument(span),
        );
        info!(node = %id, sip = ?sip, "P2PSIP node running");
        Ok(Node {
            overlay,
            sip,
            trusted,
            stats,
            invites,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The overlay node.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// This node's Node-ID.
    pub fn node_id(&self) -> PeerId {
        self.overlay.node_id()
    }

    /// The SIP addresses the node listens on.
    pub fn sip_addrs(&self) -> &[Peer] {
        &self.sip
    }

    /// The SIP address of `transport`, if the node listens on it.
    pub fn sip_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.sip
            .iter()
            .find(|p| p.transport == transport)
            .map(|p| p.addr)
    }

    /// Lets the client at `addr` (a UDP address and port) use the node without credentials:
    /// the node's own built-in user agent, which has none. Give only a local address of this
    /// machine: the operating system drops packets from outside that claim one (Linux:
    /// `accept_local` is off by default), so the address cannot be forged.
    pub fn trust(&self, addr: SocketAddr) {
        self.trusted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr);
    }

    /// What the node counted.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where the initial INVITE of the call `call_id`, from a client of this node, went and
    /// how many overlay links it crossed ([`hops`]: the Route that carried it, 0 for a device
    /// registered here). `None` until the Route was answered, when it failed, and once the
    /// call is older than the last [`hops::CAPACITY`] calls.
    pub fn invite_hops(&self, call_id: &str) -> Option<InviteHops> {
        lock_invites(&self.invites).get(call_id)
    }

    /// Stops the SIP side and leaves the overlay gracefully (handing the data over).
    pub async fn leave(mut self) -> Result<(), overlay_node::Error> {
        self.stop_sip().await;
        self.overlay.leave().await
    }

    /// Stops the node abruptly: the SIP side, then the overlay node without a handover.
    pub async fn kill(mut self) {
        self.stop_sip().await;
        self.overlay.kill().await;
    }

    async fn stop_sip(&mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The overlay nodes the proxy core talks to, as connection ids.
#[derive(Debug, Default)]
struct Links {
    ids: HashMap<PeerId, u64>,
    nodes: Vec<PeerId>,
}

impl Links {
    /// The proxy's [`Peer`] for an overlay node.
    fn peer(&mut self, node: PeerId) -> Peer {
        let index = *self.ids.entry(node).or_insert_with(|| {
            self.nodes.push(node);
            self.nodes.len() as u64 - 1
        });
        let addr = Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0).to_bits() | u128::from(index);
        Peer {
            transport: Transport::Tcp,
            addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::from_bits(addr)), 5060),
            connection: Some(ConnectionId(OVERLAY_LINKS + index)),
        }
    }

    /// The overlay node a proxy [`Peer`] stands for.
    fn node(&self, peer: &Peer) -> Option<PeerId> {
        let index = peer.connection?.0.checked_sub(OVERLAY_LINKS)?;
        self.nodes.get(usize::try_from(index).ok()?).copied()
    }
}

/// What a task of the node reports back to the node's task.
enum Done {
    /// A REGISTER's bindings were published (or refused).
    Registered {
        context: proxy::Context,
        aor: String,
        previous: Vec<Binding>,
        response: p2psip_sip::Response,
        result: Result<(), overlay_node::Error>,
    },
    /// An AOR was looked up.
    Located {
        context: proxy::Context,
        aor: String,
        result: Result<Vec<Device>, overlay_node::Error>,
    },
    /// A message to an overlay node was not taken.
    Undelivered { transaction: Option<TransactionId> },
}

/// One registered device of an AOR, as found in the overlay.
/// A device of an AOR found in the overlay: the node it registered at and its contacts.
#[derive(Debug, Clone)]
pub struct Device {
    /// The node that published the registration.
    pub node: PeerId,
    /// Its contacts (none once unregistered).
    pub contacts: Vec<Contact>,
}

struct State {
    id: PeerId,
    /// Digest authentication of the local clients, when on.
    verifier: Option<auth::Verifier>,
    /// The To tags of the node's own challenges.
    ids: Ids,
    /// Local clients let in without credentials ([`Node::trust`]).
    trusted: Arc<Mutex<HashSet<SocketAddr>>>,
    /// The dialogs this node record-routed ([`edge`]).
    dialogs: Dialogs,
    user: Keypair,
    overlay: Arc<Overlay>,
    proxy: Proxy,
    registrar: Registrar,
    bindings: MemoryBindings,
    /// The flood limits of the local clients.
    limiter: Limiter,
    links: Arc<Mutex<Links>>,
    stats: Arc<Stats>,
    /// The AORs this node has claimed for its user.
    claimed: HashSet<String>,
    /// When the first published binding of each AOR expires.
    expiries: HashMap<String, StdInstant>,
    /// Lookups and publications under way.
    pending: usize,
    /// The send queue of each overlay node this node talks to.
    queues: HashMap<PeerId, mpsc::Sender<(Bytes, Option<TransactionId>)>>,
    /// The hops of the initial INVITEs sent ([`Node::invite_hops`]).
    invites: Arc<Mutex<hops::Table>>,
    /// The media anchors of the softphones, unless media is off.
    media: Option<Media>,
    done: mpsc::Sender<Done>,
    config: Config,
}

async fn run(
    mut state: State,
    sockets: Transports,
    mut incoming: Incoming,
    mut from_overlay: mpsc::Receiver<(PeerId, Message)>,
    mut done: mpsc::Receiver<Done>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let deadline = state.proxy.poll_timeout().map(Instant::from_std);
        let expiry = state.next_expiry();
        tokio::select! {
            received = incoming.recv() => {
                let Some(received) = received else { break };
                if let Some(media) = &state.media {
                    media.seen_from_softphone(&received.message, received.source.addr);
                }
                if let Err(e) = state.proxy.handle(now(), received.message, received.source) {
                    debug!(source = %received.source, error = %e, "message dropped");
                }
            }
            Some((origin, message)) = from_overlay.recv() => state.on_overlay_message(origin, message),
            Some(report) = done.recv() => state.on_done(report),
            () = sleep_until(deadline) => state.proxy.handle_timeout(now()),
            () = sleep_until(expiry) => state.expire(),
            _ = &mut stopped => break,
        }
        while let Some(event) = state.proxy.poll_event() {
            match event {
                proxy::Event::Locate {
                    context,
                    request,
                    source,
                } => state.locate(context, *request, source),
                proxy::Event::Routed {
                    context,
                    request,
                    source,
                    next,
                } => state.routed(context, *request, source, next),
                proxy::Event::Ack {
                    request,
                    source,
                    next,
                } => state.ack(*request, source, next),
                proxy::Event::Dialog {
                    id,
                    upstream,
                    downstream,
                    confirmed,
                    ..
                } => state
                    .dialogs
                    .learn(now(), &id, upstream, downstream, confirmed),
                _ => {}
            }
        }
        while let Some(t) = state.proxy.poll_transmit() {
            let overlay_node = lock(&state.links).node(&t.to);
            match overlay_node {
                Some(node) => {
                    if let Some(Err(error)) = state.media.as_ref().map(|m| m.egress(node, &t.bytes))
                    {
                        debug!(%node, %error, "not sent: its media cannot be anchored");
                        if let Some(txn) = t.transaction {
                            state.proxy.transport_error(now(), txn);
                        }
                        continue;
                    }
                    state.send_over_overlay(node, t.bytes, t.transaction);
                }
                None => {
                    if let Some(media) = &state.media {
                        media.sent_to_softphone(&t.bytes);
                    }
                    if let Err(e) = sockets.send(t.to, t.bytes).await {
                        warn!(to = %t.to, error = %e, "send failed");
                        if let Some(txn) = t.transaction {
                            state.proxy.transport_error(now(), txn);
                        }
                    }
                }
            }
        }
    }
    debug!("SIP side stopped");
}

impl State {
    /// A SIP message that came over the overlay from `origin`.
    fn on_overlay_message(&mut self, origin: PeerId, message: Message) {
        let counter = match &message {
            Message::Response(_) => &self.stats.overlay_responses,
            Message::Request(r) if has_to_tag(r) => &self.stats.overlay_in_dialog,
            Message::Request(_) => &self.stats.overlay_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ingress = match &self.media {
            Some(media) => media.ingress(origin, message),
            None => Ingress::Pass(message),
        };
        let message = match ingress {
            Ingress::Pass(message) => message,
            Ingress::Refuse(response) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.send_over_overlay(origin, response.to_bytes(), None);
                return;
            }
            Ingress::Absorb => return,
        };
        let source = lock(&self.links).peer(origin);
        if let Err(e) = self.proxy.handle(now(), message, source) {
            debug!(%origin, error = %e, "message from the overlay dropped");
        }
    }

    /// Where an out-of-dialog request goes; see the module docs.
    fn locate(&mut self, context: proxy::Context, request: Request, source: Peer) {
        let t = now();
        let from_node = lock(&self.links).node(&source);
        if from_node.is_none() && !self.within_limits(context, &request, source) {
            return;
        }
        let client = match from_node {
            Some(_) => Client::Node,
            None => match self.authenticate(context, &request, source) {
                Some(client) => client,
                None => return,
            },
        };
        if *request.method() == Method::Register {
            if from_node.is_some() {
                self.refuse(
                    context,
                    &request,
                    StatusCode::FORBIDDEN,
                    "REGISTER is local",
                );
                return;
            }
            if let Client::User(user) = &client
                && let Some(aor_user) = to_user(&request)
                && aor_user != *user
            {
                let why = format!("Forbidden (user {user} may register only AORs of user {user})");
                self.refuse(context, &request, StatusCode::FORBIDDEN, &why);
                return;
            }
            self.register(context, request);
            return;
        }
        let uri = request.uri_str().to_owned();
        if let Some(origin) = from_node {
            // For a device registered here: only to its contacts.
            let targets = self.local_targets(&uri, t);
            if targets.is_empty() {
                // The overlay still holds the registration, but the device is gone from here:
                // the callee exists and is not reachable now.
                debug!(%origin, %uri, call_id = call_id(&request), "no such device here");
                let _ = self.proxy.respond(
                    t,
                    context,
                    StatusCode::TEMPORARILY_UNAVAILABLE,
                    "Temporarily Unavailable (no device registered here)",
                    &[],
                );
            } else {
                let _ = self.proxy.forward(t, context, targets);
            }
            return;
        }
        if self.is_outside(&uri) {
            let _ = self.proxy.forward(t, context, vec![Target::new(uri)]);
            return;
        }
        let Some(aor) = Uri::parse(&uri).ok().as_ref().and_then(registrar::aor) else {
            self.refuse(context, &request, StatusCode::NOT_FOUND, "Not Found");
            return;
        };
        if !self.reserve() {
            self.refuse(
                context,
                &request,
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable (too many lookups)",
            );
            return;
        }
        let overlay = self.overlay.clone();
        let done = self.done.clone();
        tokio::spawn(async move {
            let result = lookup(&overlay, &aor).await;
            let _ = done
                .send(Done::Located {
                    context,
                    aor,
                    result,
                })
                .await;
        });
    }

    /// A REGISTER: the registrar answers; a change of bindings is published first.
    fn register(&mut self, context: proxy::Context, request: Request) {
        let t = now();
        let mut recording = Recording {
            inner: &mut self.bindings,
            change: None,
        };
        let response = self.registrar.register(&request, t, &mut recording);
        let Some((aor, previous, bindings)) = recording.change else {
            let _ = self.proxy.respond_with(t, context, response);
            return;
        };
        if !self.reserve() {
            let _ = self.bindings.put(&aor, previous, t);
            self.refuse(
                context,
                &request,
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable (too many registrations under way)",
            );
            return;
        }
        let publication = self.publication(&aor, &bindings, t);
        let done = self.done.clone();
        tokio::spawn(async move {
            let result = publication.run().await;
            let _ = done
                .send(Done::Registered {
                    context,
                    aor,
                    previous,
                    response,
                    result,
                })
                .await;
        });
    }

    /// The publication of `bindings` as the AOR's registration entry.
    fn publication(&self, aor: &str, bindings: &[Binding], t: StdInstant) -> Publication {
        Publication {
            overlay: self.overlay.clone(),
            user: self.user.clone(),
            claim: !self.claimed.contains(aor),
            claim_lifetime: self.config.claim_lifetime,
            certificate: normalize_aor(aor).ok().and_then(|aor| {
                let user = self.user.public().encode_protobuf();
                self.config
                    .aor_certificates
                    .iter()
                    .find(|c| c.aor == aor && c.user_key == user)
                    .cloned()
            }),
            aor: aor.to_owned(),
            contacts: bindings
                .iter()
                .map(|b| Contact {
                    uri: b.contact.clone(),
                    q: b.q,
                })
                .collect(),
            lifetime: bindings
                .iter()
                .map(|b| b.expires_at.saturating_duration_since(t).as_secs())
                .max()
                .unwrap_or(0),
        }
    }

    /// When the next published binding expires.
    fn next_expiry(&self) -> Option<Instant> {
        self.expiries.values().min().copied().map(Instant::from_std)
    }

    /// Remembers when the first of the AOR's published `bindings` expires.
    fn track_expiry(&mut self, aor: &str, bindings: &[Binding]) {
        match bindings.iter().map(|b| b.expires_at).min() {
            Some(first) => self.expiries.insert(aor.to_owned(), first),
            None => self.expiries.remove(aor),
        };
    }

    /// Bindings that expired without a REGISTER (a softphone that went away): the overlay
    /// entry is published again with what is left, without contacts once none is, so that
    /// callers stop being sent to a device that is gone.
    fn expire(&mut self) {
        let t = now();
        let due: Vec<String> = self
            .expiries
            .iter()
            .filter(|(_, at)| **at <= t)
            .map(|(aor, _)| aor.clone())
            .collect();
        for aor in due {
            let bindings = self.bindings.get(&aor, t).unwrap_or_default();
            self.track_expiry(&aor, &bindings);
            let publication = self.publication(&aor, &bindings, t);
            debug!(%aor, left = bindings.len(), "bindings expired; publishing what is left");
            tokio::spawn(async move {
                if let Err(error) = publication.run().await {
                    warn!(%aor, %error, "expired bindings could not be withdrawn");
                }
            });
        }
    }

    fn on_done(&mut self, report: Done) {
        let t = now();
        match report {
            Done::Registered {
                context,
                aor,
                previous,
                response,
                result,
            } => {
                self.pending -= 1;
                match result {
                    Ok(()) => {
                        let bindings = self.bindings.get(&aor, t).unwrap_or_default();
                        self.track_expiry(&aor, &bindings);
                        self.claimed.insert(aor);
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                        let _ = self.proxy.respond_with(t, context, response);
                    }
                    Err(error) => {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = self.bindings.put(&aor, previous, t);
                        let (status, reason, extra) = sip_answer(&error);
                        warn!(%aor, %error, call_id = response_call_id(&response), "registration refused");
                        let _ = self.proxy.respond(t, context, status, &reason, &extra);
                    }
                }
            }
            Done::Located {
                context,
                aor,
                result,
            } => {
                self.pending -= 1;
                match result {
                    Ok(devices) if devices.iter().all(|d| d.contacts.is_empty()) => {
                        debug!(%aor, call_id = self.context_call_id(context), "no registration");
                        let _ = self.proxy.respond(
                            t,
                            context,
                            StatusCode::NOT_FOUND,
                            "Not Found (no registration in the overlay)",
                            &[],
                        );
                    }
                    Ok(devices) => {
                        self.note_local_invite(context, &devices);
                        let targets = self.targets(&devices);
                        let _ = self.proxy.forward(t, context, targets);
                    }
                    Err(error) => {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        warn!(%aor, %error, call_id = self.context_call_id(context), "lookup failed");
                        let (status, reason, extra) = sip_answer(&error);
                        let _ = self.proxy.respond(t, context, status, &reason, &extra);
                    }
                }
            }
            Done::Undelivered { transaction } => {
                if let Some(txn) = transaction {
                    self.proxy.transport_error(t, txn);
                }
            }
        }
    }

    /// Notes 0 hops for an INVITE that goes to a device registered at this node.
    fn note_local_invite(&self, context: proxy::Context, devices: &[Device]) {
        let here = devices
            .iter()
            .any(|d| d.node == self.id && !d.contacts.is_empty());
        let Some(request) = self.proxy.request(context) else {
            return;
        };
        if here && *request.method() == Method::Invite && !has_to_tag(request) {
            let hops = InviteHops {
                node: self.id,
                hops: 0,
            };
            lock_invites(&self.invites).note(&call_id(request), hops);
        }
    }

    /// The branches for the devices of an AOR: over the overlay to each device's node, or
    /// straight to the contact when the device is registered here.
    fn targets(&self, devices: &[Device]) -> Vec<Target> {
        let mut links = lock(&self.links);
        devices
            .iter()
            .flat_map(|device| {
                let peer = (device.node != self.id).then(|| links.peer(device.node));
                device.contacts.iter().map(move |contact| Target {
                    q: contact.q,
                    peer,
                    ..Target::new(contact.uri.clone())
                })
            })
            .collect()
    }

    /// The contacts registered here that a request from the overlay for `uri` may reach:
    /// `uri` itself when it is one of them, else the bindings of the AOR it names.
    fn local_targets(&mut self, uri: &str, now: StdInstant) -> Vec<Target> {
        let Some(aor) = Uri::parse(uri).ok().as_ref().and_then(registrar::aor) else {
            return Vec::new();
        };
        let bindings = self.bindings.get(&aor, now).unwrap_or_default();
        if !bindings.is_empty() {
            return bindings
                .iter()
                .map(|b| Target {
                    q: b.q,
                    ..Target::new(b.contact.clone())
                })
                .collect();
        }
        // The Request-URI is a contact: find the binding that has it.
        if self.bindings.has_contact(uri, now) {
            vec![Target::new(uri)]
        } else {
            Vec::new()
        }
    }

    /// Whether a Request-URI is outside the overlay: a host given as an IP address other
    /// than this node's own.
    fn is_outside(&self, uri: &str) -> bool {
        let Ok(parsed) = Uri::parse(uri) else {
            return false;
        };
        let Some(sip) = parsed.as_sip() else {
            return false;
        };
        let ip = match sip.host() {
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
            Host::Domain(_) => return false,
        };
        let port = sip.port();
        !self
            .config
            .proxy
            .listen
            .iter()
            .any(|p| p.addr.ip() == ip && port.is_none_or(|port| port == p.addr.port()))
    }

    /// Sends a SIP message to an overlay node through that node's queue: one Route at a
    /// time, so that the node gets them in order (as over one TCP connection).
    fn send_over_overlay(
        &mut self,
        node: PeerId,
        bytes: Bytes,
        transaction: Option<TransactionId>,
    ) {
        self.stats.overlay_sent.fetch_add(1, Ordering::Relaxed);
        let mut message = (bytes, transaction);
        for _ in 0..2 {
            let queue = match self.queues.get(&node) {
                Some(queue) => queue.clone(),
                None if self.queues.len() >= MAX_QUEUES => {
                    self.queues.retain(|_, queue| !queue.is_closed());
                    if self.queues.len() >= MAX_QUEUES {
                        break;
                    }
                    continue;
                }
                None => {
                    let queue = spawn_queue(
                        self.overlay.clone(),
                        node,
                        route_pace(&self.config.overlay.network),
                        self.done.clone(),
                        self.invites.clone(),
                    );
                    self.queues.insert(node, queue.clone());
                    queue
                }
            };
            match queue.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.queues.remove(&node);
                    message = back;
                }
                Err(mpsc::error::TrySendError::Full(back)) => {
                    message = back;
                    break;
                }
            }
        }
        debug!(%node, "the queue to the node is full; message dropped");
        if let Some(txn) = message.1 {
            self.proxy.transport_error(now(), txn);
        }
    }

    /// Counts one more task under way, if there is room.
    fn reserve(&mut self) -> bool {
        if self.pending >= self.config.max_pending {
            return false;
        }
        self.pending += 1;
        true
    }

    /// Takes the request from its client's budget ([`limit`]); a client over its budget is
    /// answered 503 with Retry-After, and `false` comes back.
    fn within_limits(&mut self, context: proxy::Context, request: &Request, source: Peer) -> bool {
        let Err(refusal) = self.take_budget(request, source) else {
            return true;
        };
        let retry_after = refusal.retry_after.as_secs();
        let retry = [(HeaderName::RetryAfter, retry_after.to_string())];
        let _ = self.proxy.respond(
            now(),
            context,
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable (too many requests from this client)",
            &retry,
        );
        false
    }

    /// Takes the request from its client's budget: REGISTER, other out-of-dialog requests,
    /// requests in a dialog. A refusal is counted and logged.
    fn take_budget(&mut self, request: &Request, source: Peer) -> Result<(), limit::Refusal> {
        let budget = if *request.method() == Method::Register {
            Budget::Register
        } else if has_to_tag(request) {
            Budget::InDialog
        } else {
            Budget::Requests
        };
        let Err(refusal) = self.limiter.check(now(), source.addr, budget) else {
            return Ok(());
        };
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let (client, method, call_id) = (source.addr, request.method(), call_id(request));
        let retry_after = refusal.retry_after.as_secs();
        if refusal.first {
            warn!(%client, %method, call_id, retry_after, "a client sends too many requests; refusing them for now");
        } else {
            debug!(%client, %method, call_id, retry_after, "refused: too many requests from this client");
        }
        Err(refusal)
    }

    /// Digest authentication of a local client's request outside a dialog: who it is, or
    /// `None` once it has been answered 401 (REGISTER) or 407 (the rest).
    fn authenticate(
        &mut self,
        context: proxy::Context,
        request: &Request,
        source: Peer,
    ) -> Option<Client> {
        let Some(verifier) = &self.verifier else {
            return Some(Client::Open);
        };
        // A trusted socket bound to 0.0.0.0 sends from a loopback address.
        let unspecified = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), source.addr.port());
        let trusted = {
            let trusted = lock_trusted(&self.trusted);
            trusted.contains(&source.addr)
                || (source.addr.ip().is_loopback() && trusted.contains(&unspecified))
        };
        if source.transport == Transport::Udp && trusted {
            return Some(Client::Trusted);
        }
        let register = *request.method() == Method::Register;
        let proxy_auth = !register;
        let users = self.config.auth.as_ref().map(|a| &a.users);
        let lookup = |user: &str, _realm: &str| users.and_then(|u| u.get(user)).cloned();
        let verdict = verifier.verify(request, SystemTime::now(), proxy_auth, lookup);
        if let auth::Verdict::Ok { username } = verdict {
            return Some(Client::User(username));
        }
        self.stats.challenged.fetch_add(1, Ordering::Relaxed);
        if let auth::Verdict::Invalid(why) = &verdict {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            debug!(client = %source.addr, call_id = call_id(request), %why, "wrong credentials");
        } else {
            debug!(client = %source.addr, call_id = call_id(request), ?verdict, "authentication required");
        }
        let stale = matches!(verdict, auth::Verdict::Stale);
        let tag = self.ids.tag();
        let reject = verifier.reject(request, SystemTime::now(), proxy_auth, stale, Some(&tag));
        let _ = self.proxy.respond_with(now(), context, reject);
        None
    }

    /// A request that carries a Route (after the node's own) or a To tag: it goes on only
    /// inside a dialog this node record-routed, from one of the dialog's sides to the other
    /// ([`edge`]); a local client's is also taken from its budget. Anything else is refused:
    /// 481 for an unknown dialog, 403 with the reason otherwise.
    fn routed(
        &mut self,
        context: proxy::Context,
        request: Request,
        source: Peer,
        next: Option<Peer>,
    ) {
        let from_node = lock(&self.links).node(&source);
        if from_node.is_none() && !self.within_limits(context, &request, source) {
            return;
        }
        match self.dialog_check(&request, source, next) {
            Ok(()) => {
                let _ = self.proxy.forward_routed(now(), context);
            }
            Err((status, why)) => self.refuse(context, &request, status, why),
        }
    }

    /// The ACK of a 2xx: sent on under the rules of [`State::routed`], else dropped (an ACK
    /// is never answered).
    fn ack(&mut self, request: Request, source: Peer, next: Peer) {
        let from_node = lock(&self.links).node(&source);
        if from_node.is_none() && self.take_budget(&request, source).is_err() {
            return;
        }
        match self.dialog_check(&request, source, Some(next)) {
            Ok(()) => self.proxy.send_ack(&request, next),
            Err((status, why)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                debug!(call_id = call_id(&request), %source, %status, why, "ACK dropped");
            }
        }
    }

    /// Whether a request with a Route or a To tag may go from `source` to `next`.
    fn dialog_check(
        &mut self,
        request: &Request,
        source: Peer,
        next: Option<Peer>,
    ) -> Result<(), (StatusCode, &'static str)> {
        let Some(dialog) = DialogId::of_request(request) else {
            return Err((
                StatusCode::FORBIDDEN,
                "Forbidden (a Route to elsewhere than this node outside a dialog)",
            ));
        };
        let bye = *request.method() == Method::Bye;
        self.dialogs
            .check(now(), &dialog, &source, next.as_ref(), bye)
            .map_err(|refusal| {
                let status = match refusal {
                    edge::Refusal::Unknown => StatusCode::CALL_DOES_NOT_EXIST,
                    _ => StatusCode::FORBIDDEN,
                };
                (status, refusal.reason())
            })
    }

    /// The Call-ID of a context's request, for logs.
    fn context_call_id(&self, context: proxy::Context) -> String {
        self.proxy.request(context).map(call_id).unwrap_or_default()
    }

    fn refuse(
        &mut self,
        context: proxy::Context,
        request: &Request,
        status: StatusCode,
        why: &str,
    ) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        debug!(call_id = call_id(request), %status, why, "refused");
        let _ = self.proxy.respond(now(), context, status, why, &[]);
    }
}

/// How many overlay nodes the node keeps a send queue to at once.
const MAX_QUEUES: usize = 4096;
/// How many SIP messages wait for one overlay node.
const QUEUE: usize = 256;
/// How many bytes of SIP messages one Route carries at most (well below the overlay's 64 KiB
/// message limit).
const BATCH_BYTES: usize = 48 * 1024;
/// A send queue with nothing to send for this long ends.
const QUEUE_IDLE: Duration = Duration::from_secs(60);
/// The first wait before a Route refused as busy is sent again; each refusal doubles it, up
/// to [`BUSY_WAIT_MAX`].
const BUSY_WAIT: Duration = Duration::from_millis(5);
/// The longest wait between two tries of a Route refused as busy.
const BUSY_WAIT_MAX: Duration = Duration::from_millis(200);
/// How long the messages of a Route refused as busy are tried again before they are given up
/// (their transactions then see a transport error): four times RFC 3261's T1, by when a
/// client has retransmitted its request over UDP anyway.
const BUSY_GIVE_UP: Duration = Duration::from_secs(2);

/// The pace of one send queue's Routes: half the per-peer request rate (and burst) that the
/// overlay's nodes take from one peer (`peer_request_rate`, `peer_request_burst`), so that
/// Routes carrying calls to one node leave room for the lookups and replication it also
/// takes from this one. Past the pace, what waits goes in the next Route together.
fn route_pace(network: &p2psip_overlay::network::Config) -> limit::Rate {
    limit::Rate::new(
        (network.peer_request_burst / 2).max(1),
        (network.peer_request_rate / 2).max(1),
    )
}

/// The task that sends the SIP messages for one overlay node, in order: what waits in the
/// queue goes in one Route message ([`frame`]), one Route at a time, at most at `pace`. A
/// Route the node refuses as busy (its per-peer limits) was not delivered: it is sent again
/// after a wait, with what queued meanwhile, for up to [`BUSY_GIVE_UP`]. Once a Route is
/// answered, the initial INVITEs it carried are noted in `invites` with its hops (here, not
/// in the node's task: their parsing never holds up the SIP side).
fn spawn_queue(
    overlay: Arc<Overlay>,
    node: PeerId,
    pace: limit::Rate,
    done: mpsc::Sender<Done>,
    invites: Arc<Mutex<hops::Table>>,
) -> mpsc::Sender<(Bytes, Option<TransactionId>)> {
    let (tx, mut rx) = mpsc::channel::<(Bytes, Option<TransactionId>)>(QUEUE);
    tokio::spawn(async move {
        let mut bucket = limit::Bucket::full(pace, StdInstant::now());
        while let Ok(Some(first)) = tokio::time::timeout(QUEUE_IDLE, rx.recv()).await {
            let mut size = first.0.len();
            let mut batch = vec![first];
            let give_up = StdInstant::now() + BUSY_GIVE_UP;
            let mut busy_wait = BUSY_WAIT;
            let result = loop {
                let wait = bucket.wait(pace, StdInstant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let _ = bucket.take(pace, StdInstant::now());
                while size < BATCH_BYTES {
                    let Ok(next) = rx.try_recv() else { break };
                    size += next.0.len();
                    batch.push(next);
                }
                let payload = frame(batch.iter().map(|(bytes, _)| bytes.as_ref()));
                match overlay.route(node, payload).await {
                    Err(error)
                        if error.code() == Some(ErrorCode::Busy)
                            && StdInstant::now() + busy_wait < give_up =>
                    {
                        debug!(%node, %error, messages = batch.len(), "Route refused as busy; sent again");
                        tokio::time::sleep(busy_wait).await;
                        busy_wait = (busy_wait * 2).min(BUSY_WAIT_MAX);
                    }
                    result => break result,
                }
            };
            match result {
                Ok((_, hops)) => {
                    let noted: Vec<String> = batch
                        .iter()
                        .filter_map(|(bytes, _)| hops::initial_invite(bytes))
                        .collect();
                    if !noted.is_empty() {
                        let mut table = lock_invites(&invites);
                        for call_id in noted {
                            debug!(%node, hops, call_id, "INVITE routed");
                            table.note(&call_id, InviteHops { node, hops });
                        }
                    }
                }
                Err(error) => {
                    debug!(%node, %error, messages = batch.len(), "SIP messages not taken over the overlay");
                    for (_, transaction) in batch {
                        let _ = done.send(Done::Undelivered { transaction }).await;
                    }
                }
            }
        }
    });
    tx
}

/// The SIP messages of one Route payload: each as its length (4 bytes, big-endian) and its
/// bytes. Public for the fuzz target and property tests of [`unframe`] (`node/fuzz`,
/// `node/tests/fuzz_props.rs`).
pub fn frame<'a>(messages: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut payload = Vec::new();
    for message in messages {
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(message);
    }
    payload
}

/// The SIP messages of a Route payload ([`frame`]); an error names what is wrong. No payload
/// makes it panic.
pub fn unframe(mut payload: &[u8]) -> Result<Vec<Message>, OverlayError> {
    let mut messages = Vec::new();
    while !payload.is_empty() {
        let (len, rest) = payload
            .split_first_chunk::<4>()
            .ok_or_else(|| OverlayError::invalid("a SIP frame is cut short"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err(OverlayError::invalid("a SIP frame is cut short"));
        }
        let (bytes, rest) = rest.split_at(len);
        let message = Message::parse(Bytes::copy_from_slice(bytes)).map_err(|error| {
            OverlayError::invalid(format!("the Route payload is not SIP: {error}"))
        })?;
        messages.push(message);
        payload = rest;
    }
    if messages.is_empty() {
        return Err(OverlayError::invalid("an empty Route payload"));
    }
    Ok(messages)
}

/// The registrar's store, noting the one change a REGISTER makes.
struct Recording<'a> {
    inner: &'a mut MemoryBindings,
    /// The AOR, its bindings before, and after.
    change: Option<(String, Vec<Binding>, Vec<Binding>)>,
}

impl Bindings for Recording<'_> {
    fn get(&mut self, aor: &str, now: StdInstant) -> Result<Vec<Binding>, StoreError> {
        self.inner.get(aor, now)
    }

    fn put(
        &mut self,
        aor: &str,
        bindings: Vec<Binding>,
        now: StdInstant,
    ) -> Result<(), StoreError> {
        let previous = self.inner.get(aor, now)?;
        self.inner.put(aor, bindings.clone(), now)?;
        self.change = Some((aor.to_owned(), previous, bindings));
        Ok(())
    }
}

/// The overlay side of one REGISTER.
struct Publication {
    overlay: Arc<Overlay>,
    user: Keypair,
    claim: bool,
    claim_lifetime: Duration,
    /// The enrollment CA's certified claim of the AOR, if the config has one.
    certificate: Option<AorClaim>,
    aor: String,
    contacts: Vec<Contact>,
    /// Seconds; 0 when the last binding is gone.
    lifetime: u64,
}

impl Publication {
    async fn run(self) -> Result<(), overlay_node::Error> {
        let overlay = &self.overlay;
        let resource = ResourceId::for_aor(&self.aor)?;
        let mut expires_ms = now_ms() + self.claim_lifetime.as_millis() as u64;
        if let Some(certificate) = &self.certificate {
            expires_ms = expires_ms.min(certificate.expires_ms);
        }
        if self.claim && !is_self_certifying(&self.aor) {
            self.publish_claim(resource, expires_ms).await?;
        }
        let device = overlay.keypair().clone();
        let delegation = Delegation::sign(&self.user, &resource, &device.public(), expires_ms)?;
        let value = RegistrationValue {
            destination: overlay.node_id().to_bytes(),
            contacts: self.contacts.clone(),
            delegation,
        };
        let key = overlay.node_id().to_bytes();
        if value.contacts.is_empty() {
            // Unregistered: an entry without contacts replaces the last one on every replica
            // for as long as that one would have lived; nobody refreshes it.
            let last = overlay.withdraw(resource, Kind::SIP_REGISTRATION, &key);
            let lifetime = last.map_or(60, |data| data.lifetime.max(1));
            overlay
                .publish(
                    resource,
                    Kind::SIP_REGISTRATION,
                    key.clone(),
                    value.encode(),
                    lifetime,
                    &device,
                )
                .await?;
            overlay.withdraw(resource, Kind::SIP_REGISTRATION, &key);
            return Ok(());
        }
        let register = || {
            overlay.publish(
                resource,
                Kind::SIP_REGISTRATION,
                key.clone(),
                value.encode(),
                lifetime_s(self.lifetime),
                &device,
            )
        };
        match register().await {
            // A replica without our claim refuses the entry: the replica set of the
            // registration is not the one the claim reached (closest-peer lookups differ
            // while peers come and go, or some are reachable only through relays). Claim
            // again, towards the replicas of now, and try once more; a claim by another key
            // fails here with its own reason.
            Err(error)
                if error.code() == Some(ErrorCode::Forbidden) && !is_self_certifying(&self.aor) =>
            {
                debug!(aor = %self.aor, %error, "registration refused; claiming the AOR again");
                self.publish_claim(resource, expires_ms).await?;
                register().await?;
            }
            result => {
                result?;
            }
        }
        Ok(())
    }

    /// Publishes the AOR's claim by this node's user key.
    async fn publish_claim(
        &self,
        resource: ResourceId,
        expires_ms: u64,
    ) -> Result<(), overlay_node::Error> {
        let claim = match &self.certificate {
            Some(certificate) => certificate.clone(),
            None => AorClaim::new(&self.aor, &self.user.public(), expires_ms)?,
        };
        // A certified claim ends with its certificate; the entry need not outlive it.
        let left_s = claim.expires_ms.saturating_sub(now_ms()) / 1000;
        self.overlay
            .publish(
                resource,
                Kind::AOR_CLAIM,
                Vec::new(),
                claim.encode(),
                lifetime_s(self.claim_lifetime.as_secs().min(left_s.max(1))),
                &self.user,
            )
            .await?;
        Ok(())
    }
}

/// The devices registered under `aor` as the majority of its replica set holds them, every
/// entry passing every check a replica makes (signature, delegation, the AOR's claim, the
/// overlay's enrollment CA, expiry): a forged, stale or outvoted entry is never used
/// ([`Overlay::fetch_verified`]). Fails when the replicas disagree on who owns the AOR.
pub async fn lookup(overlay: &Overlay, aor: &str) -> Result<Vec<Device>, overlay_node::Error> {
    let verified = overlay.fetch_verified(aor).await?;
    let mut devices = Vec::new();
    for data in verified.registrations.values() {
        let Ok(value) = RegistrationValue::decode(&data.value) else {
            continue;
        };
        let Ok(node) = value.destination_id() else {
            continue;
        };
        devices.push(Device {
            node,
            contacts: value.contacts,
        });
    }
    Ok(devices)
}

/// When a client whose request the overlay's replicas refused as busy may try again.
const BUSY_RETRY_AFTER: &str = "1";

/// The SIP answer to an overlay failure: 403 with the rule that refused, 408 on a timeout,
/// 503 when no replica could be reached or one failed inside, 503 with Retry-After when the
/// replicas were busy (RFC 3261 §21.5.4: overloaded, try again), 500 for the other codes;
/// and the extra headers.
fn sip_answer(error: &overlay_node::Error) -> (StatusCode, String, Vec<(HeaderName, String)>) {
    let code = error.code();
    let reason = match error {
        overlay_node::Error::Overlay(OverlayError::Forbidden { reason }) => reason.clone(),
        overlay_node::Error::Overlay(OverlayError::Remote { message, .. }) => message
            .strip_prefix("refused: ")
            .unwrap_or(message)
            .to_owned(),
        other => other.to_string(),
    };
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    match code {
        Some(ErrorCode::Forbidden) => (StatusCode::FORBIDDEN, reason, Vec::new()),
        Some(ErrorCode::RequestTimeout) => (StatusCode::REQUEST_TIMEOUT, reason, Vec::new()),
        Some(ErrorCode::Busy) => {
            let retry = vec![(HeaderName::RetryAfter, BUSY_RETRY_AFTER.to_owned())];
            (StatusCode::SERVICE_UNAVAILABLE, reason, retry)
        }
        Some(ErrorCode::Internal) | None => (StatusCode::SERVICE_UNAVAILABLE, reason, Vec::new()),
        Some(_) => (StatusCode::SERVER_INTERNAL_ERROR, reason, Vec::new()),
    }
}

/// The `node` parameter of a URI: the Node-ID of the node it names.
fn node_param(uri: &str) -> Option<PeerId> {
    let parsed = Uri::parse(uri).ok()?;
    let value = parsed.as_sip()?.params().get("node").flatten()?;
    value.parse().ok()
}

fn has_to_tag(request: &Request) -> bool {
    request
        .headers()
        .typed::<To>()
        .and_then(Result::ok)
        .is_some_and(|to| to.tag().is_some())
}

fn call_id(request: &Request) -> String {
    headers_call_id(request.headers())
}

fn response_call_id(response: &p2psip_sip::Response) -> String {
    headers_call_id(response.headers())
}

fn message_call_id(message: &Message) -> String {
    headers_call_id(message.headers())
}

fn headers_call_id(headers: &p2psip_sip::Headers) -> String {
    headers
        .typed::<CallId>()
        .and_then(Result::ok)
        .map_or_else(String::new, |c| c.0.to_owned())
}

fn lifetime_s(seconds: u64) -> u32 {
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

fn lock(links: &Mutex<Links>) -> std::sync::MutexGuard<'_, Links> {
    links.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_invites(invites: &Mutex<hops::Table>) -> std::sync::MutexGuard<'_, hops::Table> {
    invites.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_trusted(
    trusted: &Mutex<HashSet<SocketAddr>>,
) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
    trusted.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a proxy [`Peer`] is an overlay link ([`OVERLAY_LINKS`]).
fn is_link(peer: &Peer) -> bool {
    peer.connection.is_some_and(|c| c.0 >= OVERLAY_LINKS)
}

/// The user part of the To URI (the AOR a REGISTER is for).
fn to_user(request: &Request) -> Option<String> {
    let to = request.headers().typed::<To>()?.ok()?;
    let uri = Uri::parse(to.0.uri().as_str()).ok()?;
    uri.as_sip()?.user().map(str::to_owned)
}

/// Who sent a request outside a dialog, as far as the edge is concerned.
enum Client {
    /// Another overlay node.
    Node,
    /// A local client, with authentication off (loopback only).
    Open,
    /// A local client the node trusts ([`Node::trust`]).
    Trusted,
    /// A local client with valid credentials of this user.
    User(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas that refused a lookup as busy make a 503 with Retry-After (RFC 3261
    /// §21.5.4: the client may try again), not a 500; a refusal by the overlay's rules a 403.
    #[test]
    fn a_busy_overlay_is_503_with_retry_after() {
        let busy = overlay_node::Error::Overlay(OverlayError::Remote {
            code: ErrorCode::Busy,
            message: "too many requests from this peer".into(),
        });
        let (status, reason, extra) = sip_answer(&busy);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reason, "too many requests from this peer");
        assert_eq!(extra, vec![(HeaderName::RetryAfter, "1".to_owned())]);

        let forbidden = overlay_node::Error::Overlay(OverlayError::Forbidden {
            reason: "the AOR is claimed by another user".into(),
        });
        let (status, _, extra) = sip_answer(&forbidden);
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(extra.is_empty());
    }
}
