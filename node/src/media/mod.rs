//! Media anchored by the end nodes: the rtpengine model without a central rtpengine.
//!
//! Softphones behind NATs put private addresses in their SDP, so RTP sent straight between
//! them fails. Each end node of a call anchors the media of its own softphone and carries it
//! to the other end node over the libp2p connection the two already have (direct or
//! relayed); media never crosses any other node.
//!
//! # The media path
//!
//! Alice's softphone is at node A, Bob's at node B:
//!
//! ```text
//! alice --RTP/UDP--> A:port --frame on a libp2p stream--> B --RTP/UDP from B:port--> bob
//! ```
//!
//! 1. **Egress** ([`Media::egress`]): an SDP that A's softphone sends to overlay node B (an
//!    offer in INVITE, UPDATE, PRACK or ACK, an answer in 18x/2xx) is passed on unchanged,
//!    and A records, per m-line, where alice wants her media: the declared address, the
//!    first destination for media that comes from B.
//! 2. **Ingress** ([`Media::ingress`]): an SDP that comes from overlay node B is rewritten
//!    before the proxy core sees it: `c=` names A's address facing its softphones (the SIP
//!    listen address, or the local address the kernel picks towards the softphone when SIP
//!    listens on `0.0.0.0`/`::`, or [`Config::address`]), each active m-line's port is the
//!    RTP port of a pair A binds (RTP even, RTCP the next port), `a=rtcp` and the ICE
//!    attributes are removed, and the o= version is the same for the same SDP and one more
//!    when B's SDP changes. Content-Length follows the new body. An offer that does not
//!    parse is answered 488 with the parser's reason and nothing is set up; a bad answer is
//!    logged and passed on unanchored.
//! 3. **Latching** (`session::Latch`): A's ports accept packets only from its softphone:
//!    the first packet from the softphone's IP (its SDP address, or the address its SIP came
//!    from) latches that address and port; everything else is dropped and counted
//!    ([`Stats::dropped_foreign`]). Packets for alice go to the latched address (before
//!    latching, to the declared one), from the same port she sends to (symmetric RTP, so her
//!    NAT lets them in).
//! 4. **Carrier** (`carrier`): per remote node one outbound stream of the overlay's media
//!    protocol, opened on the first packet; frames carry the session's wire id (blake3 of the
//!    Call-ID and both Node-IDs, which both ends compute alike), the m-line, RTP or RTCP, the
//!    sender's clock and the packet. The queue to a node drops when full; the receiver drops
//!    frames that arrive more than [`Config::stale_after`] later than the fastest one of the
//!    stream, and frames of sessions it does not have (no SDP of the dialog passed through
//!    it, or the session belongs to another node).
//!
//! Sessions are keyed by Call-ID and the other end node: a call forked to several nodes has a
//! session with each. A session ends on BYE or CANCEL either way, on a non-2xx final response
//! to its (initial) INVITE, and after [`Config::idle_timeout`] with no packet either way;
//! its sockets close at once. Beyond [`Config::max_sessions`] or [`Config::max_lines`] an
//! offer from the other node is answered 480 or 488 with a reason, and an offer of this
//! node's softphone fails its branch (the proxy answers the caller), instead of a half
//! set-up call.
//!
//! Not done: a configured RTP port range (ports come from the OS, paired by retrying), two
//! softphones of one node answering the same forked call (they share a session), and media
//! between two softphones of the same node (left direct).

mod carrier;
mod sdp;
mod session;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::{PeerId, StreamProtocol};
use p2psip_overlay::network::Network;
use p2psip_sip::header::{CSeq, CallId, ContentType, Via};
use p2psip_sip::{Host, Message, Method, Policy, Rejection, Request, Response, StatusCode};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, info, warn};

use crate::clock::now;
use carrier::{Frame, Kind};
use session::{Full, Key, Sessions, wire_id};

/// How the node anchors media.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Whether the node anchors media at all; off, SDP passes unchanged and media goes
    /// wherever the softphones say. Default on.
    pub enabled: bool,
    /// The address written into the SDP the node's softphones receive; `None` (the default)
    /// takes the SIP listen address, or, when that is `0.0.0.0`/`::`, the local address the
    /// kernel picks towards the softphone. Set it when softphones reach the node at another
    /// address (a port forward).
    pub address: Option<IpAddr>,
    /// How many sessions (dialog and other end node) at once; beyond, a new call gets 480
    /// "Temporarily Unavailable (too many media sessions at this node (N))".
    /// Default 256.
    pub max_sessions: usize,
    /// How many m-lines one session may have (the index of the last active one plus one);
    /// beyond, 488. Default 4.
    pub max_lines: usize,
    /// A session with no packet either way for this long ends. Default 10 minutes.
    pub idle_timeout: Duration,
    /// A frame that arrives this much later than the fastest of its stream is dropped.
    /// Default 200 ms.
    pub stale_after: Duration,
    /// How many frames wait for the stream to one remote node; beyond, packets are dropped.
    /// Default 256 (about 2.5 s of one audio stream both ways).
    pub queue: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: true,
            address: None,
            max_sessions: 256,
            max_lines: 4,
            idle_timeout: Duration::from_secs(600),
            stale_after: Duration::from_millis(200),
            queue: 256,
        }
    }
}

impl Config {
    /// Turns media anchoring on or off.
    pub fn enabled(mut self, enabled: bool) -> Config {
        self.enabled = enabled;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, idle: Duration) -> Config {
        self.idle_timeout = idle;
        self
    }

    /// Sets [`Config::max_sessions`].
    pub fn max_sessions(mut self, max: usize) -> Config {
        self.max_sessions = max;
        self
    }

    /// Sets [`Config::address`].
    pub fn address(mut self, address: Option<IpAddr>) -> Config {
        self.address = address;
        self
    }
}

/// What the media side counted.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sessions set up.
    pub sessions_started: AtomicU64,
    /// Sessions ended (BYE, CANCEL, failure, idle).
    pub sessions_ended: AtomicU64,
    /// SDP bodies rewritten for this node's softphones.
    pub rewritten: AtomicU64,
    /// Offers refused (488 bad SDP or too many m-lines, 480 too many sessions, 500 no port
    /// pair or no address) and branches failed for the same reasons.
    pub refused: AtomicU64,
    /// SDP bodies passed on unanchored (an answer that does not parse, no address to use).
    pub unanchored: AtomicU64,
    /// Packets taken from this node's softphones.
    pub from_softphones: AtomicU64,
    /// Packets sent to this node's softphones.
    pub to_softphones: AtomicU64,
    /// Packets dropped at a media port because they did not come from its softphone.
    pub dropped_foreign: AtomicU64,
    /// Frames written to streams to other nodes.
    pub frames_sent: AtomicU64,
    /// Frames read from streams of other nodes.
    pub frames_received: AtomicU64,
    /// Packets dropped because the queue to their node was full.
    pub dropped_full: AtomicU64,
    /// Frames dropped because they arrived late.
    pub dropped_stale: AtomicU64,
    /// Frames dropped because their session, m-line or destination is unknown here.
    pub dropped_unknown: AtomicU64,
    /// Frames dropped because the stream to their node could not be opened or written.
    pub dropped_unsent: AtomicU64,
}

/// A copy of [`Stats`] at one moment, for the control API and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Sessions open now.
    pub sessions: u64,
    /// Sessions set up so far.
    pub sessions_started: u64,
    /// Packets taken from this node's softphones.
    pub from_softphones: u64,
    /// Packets sent to this node's softphones.
    pub to_softphones: u64,
    /// Frames sent to other nodes.
    pub frames_sent: u64,
    /// Frames received from other nodes.
    pub frames_received: u64,
    /// Packets and frames dropped: not from the latched softphone, queue full, stale,
    /// unknown session, stream down.
    pub dropped_foreign: u64,
    /// See [`Snapshot::dropped_foreign`].
    pub dropped_full: u64,
    /// See [`Snapshot::dropped_foreign`].
    pub dropped_stale: u64,
    /// See [`Snapshot::dropped_foreign`].
    pub dropped_unknown: u64,
    /// See [`Snapshot::dropped_foreign`].
    pub dropped_unsent: u64,
    /// Offers refused (488, 480, 500).
    pub refused: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started = load(&self.sessions_started);
        Snapshot {
            sessions: started.saturating_sub(load(&self.sessions_ended)),
            sessions_started: started,
            from_softphones: load(&self.from_softphones),
            to_softphones: load(&self.to_softphones),
            frames_sent: load(&self.frames_sent),
            frames_received: load(&self.frames_received),
            dropped_foreign: load(&self.dropped_foreign),
            dropped_full: load(&self.dropped_full),
            dropped_stale: load(&self.dropped_stale),
            dropped_unknown: load(&self.dropped_unknown),
            dropped_unsent: load(&self.dropped_unsent),
            refused: load(&self.refused),
        }
    }
}

/// Why media could not be anchored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SDP does not parse; the reason names the line.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// The SDP has more m-lines than [`Config::max_lines`].
    #[error("more than {max} media streams")]
    TooManyLines {
        /// The limit.
        max: usize,
    },
    /// The node has [`Config::max_sessions`] already.
    #[error("too many media sessions at this node ({max})")]
    TooManySessions {
        /// The limit.
        max: usize,
    },
    /// No address facing the softphone is known (SIP listens on `0.0.0.0` and the
    /// softphone's address is not known yet).
    #[error("no address facing the softphone is known; set media.address")]
    NoAddress,
    /// The node could not bind an RTP/RTCP port pair.
    #[error("no RTP/RTCP port pair could be bound: {0}")]
    Ports(#[source] io::Error),
}

/// What becomes of a SIP message from another node ([`Media::ingress`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Ingress {
    /// Hand it to the proxy core (its SDP rewritten where there was one).
    Pass(Message),
    /// Send this response back to the node instead; the request goes no further.
    Refuse(Response),
    /// Drop it: the ACK of a request this node refused.
    Absorb,
}

/// The media side of a node: anchors, sessions, streams to other nodes. Dropping it closes
/// every media port and stream.
///
/// The node's SIP task calls [`Media::ingress`] on every SIP message from another node
/// before its proxy core sees it, [`Media::egress`] on every message sent to another node,
/// and [`Media::seen_from_softphone`] / [`Media::sent_to_softphone`] on messages from and
/// to its softphones.
/// Packets move in tasks of their own.
#[derive(Debug)]
pub struct Media {
    inner: Arc<Inner>,
    tasks: Vec<AbortHandle>,
}

/// How many inbound media streams are read at once.
const MAX_INBOUND: usize = 256;
/// How many recent softphone SIP addresses (by Call-ID) are remembered.
const MAX_RECENT: usize = 1024;
/// How many refused requests are remembered to absorb their ACKs.
const MAX_REFUSED: usize = 256;
/// How many times an even/odd port pair is tried.
const PAIR_ATTEMPTS: usize = 32;
/// The longest reason phrase of a refusal.
const MAX_REASON: usize = 160;

struct Inner {
    /// Itself, for the tasks it starts (they must not keep it alive).
    me: Weak<Inner>,
    config: Config,
    local: PeerId,
    /// The SIP listen address, when it is a specific one.
    listen: Option<IpAddr>,
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    stats: Arc<Stats>,
    inbound: AtomicUsize,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("local", &self.local)
            .field("listen", &self.listen)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Table {
    sessions: Sessions,
    /// The port pair of each anchored line, by wire id and m-line index.
    anchors: HashMap<(u64, usize), Anchor>,
    /// The queue of the stream to each remote node.
    carriers: HashMap<PeerId, mpsc::Sender<Bytes>>,
    /// The SIP source address of this node's softphones, by Call-ID, with when it was seen.
    recent: HashMap<String, (IpAddr, Instant)>,
    /// Requests refused here (Call-ID, CSeq number), whose ACKs are dropped.
    refused: VecDeque<(String, u32)>,
}

/// The RTP/RTCP sockets of one line and their reading tasks.
#[derive(Debug)]
struct Anchor {
    ip: IpAddr,
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    tasks: [AbortHandle; 2],
}

impl Drop for Anchor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Media {
    /// Starts the media side: accepts the media streams of other nodes on `network` and
    /// checks idle sessions. `sip` are the node's SIP listen addresses (the first specific
    /// IP among them faces the softphones).
    pub fn start(
        config: Config,
        network: &Network,
        sip: &[SocketAddr],
        stats: Arc<Stats>,
    ) -> Media {
        let (mut control, protocol) = network.media();
        let listen = sip
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| !ip.is_unspecified());
        let incoming = control.accept(protocol.clone());
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            config,
            local: network.local_peer_id(),
            listen,
            control,
            protocol,
            stats,
            inbound: AtomicUsize::new(0),
            table: Mutex::new(Table::default()),
        });
        let mut tasks = Vec::new();
        match incoming {
            Ok(incoming) => {
                let weak = Arc::downgrade(&inner);
                let task = tokio::spawn(accept(weak, incoming).in_current_span());
                tasks.push(task.abort_handle());
            }
            Err(error) => warn!(%error, "media streams of other nodes cannot be accepted"),
        }
        let weak = Arc::downgrade(&inner);
        let every =
            (inner.config.idle_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        tasks.push(tokio::spawn(sweep(weak, every).in_current_span()).abort_handle());
        Media { inner, tasks }
    }

    /// What the media side counted.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// How many sessions there are now.
    pub fn sessions(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    /// A SIP message from overlay node `origin`, before the proxy core sees it: an SDP body
    /// is rewritten towards this node's ports; a BYE, CANCEL or failed INVITE ends the
    /// session; an offer that cannot be anchored is refused.
    pub fn ingress(&self, origin: PeerId, mut message: Message) -> Ingress {
        let Some(call_id) = call_id(message.headers()) else {
            return Ingress::Pass(message);
        };
        let key = Key {
            call_id,
            node: origin,
        };
        let cseq = cseq(message.headers());
        match &mut message {
            Message::Request(request) => {
                let method = request.method().clone();
                if method == Method::Ack
                    && let Some((seq, _)) = &cseq
                    && self.inner.take_refused(&key.call_id, *seq)
                {
                    return Ingress::Absorb;
                }
                if matches!(method, Method::Bye | Method::Cancel) {
                    self.inner.end(&key, "ended by the other node");
                    return Ingress::Pass(message);
                }
                if !has_sdp(request.headers(), request.body()) {
                    return Ingress::Pass(message);
                }
                let hint = uri_ip(request);
                match self.inner.anchor(&key, request.body(), hint) {
                    Ok(body) => request.set_body("application/sdp", body),
                    Err(error) if method == Method::Ack => {
                        self.inner.stats.unanchored.fetch_add(1, Ordering::Relaxed);
                        warn!(call_id = key.call_id, %error, "an SDP in an ACK from the other node is passed on unanchored");
                    }
                    Err(error) => {
                        self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                        let (status, phrase) = refusal(&error);
                        warn!(call_id = key.call_id, %method, %error, "an offer from the other node is refused");
                        if let Some((seq, _)) = cseq {
                            self.inner.note_refused(&key.call_id, seq);
                        }
                        let tag =
                            format!("{:016x}", wire_id(&key.call_id, &self.inner.local, &origin));
                        let response = Rejection::new(status, &phrase).response(
                            request,
                            Some(&tag),
                            &Policy::default(),
                        );
                        return Ingress::Refuse(response);
                    }
                }
            }
            Message::Response(response) => {
                if let Some((_, Method::Invite)) = &cseq {
                    let status = response.status();
                    if status.as_u16() >= 300 {
                        self.inner.end_unless_established(&key);
                        return Ingress::Pass(message);
                    }
                    if status.is_success() {
                        self.inner.established(&key);
                    }
                }
                if !has_sdp(response.headers(), response.body()) {
                    return Ingress::Pass(message);
                }
                let hint = second_via_ip(response.headers());
                match self.inner.anchor(&key, response.body(), hint) {
                    Ok(body) => response.set_body("application/sdp", body),
                    Err(error) => {
                        self.inner.stats.unanchored.fetch_add(1, Ordering::Relaxed);
                        warn!(call_id = key.call_id, status = %response.status(), %error, "an SDP answer from the other node is passed on unanchored");
                    }
                }
            }
        }
        Ingress::Pass(message)
    }

    /// A SIP message this node sends to overlay node `node`: a softphone's SDP is recorded
    /// as where its media goes; a BYE, CANCEL or failed INVITE ends the session. An error
    /// means an INVITE whose media cannot be anchored (too many sessions or m-lines): fail
    /// its branch instead of sending it.
    pub fn egress(&self, node: PeerId, bytes: &[u8]) -> Result<(), Error> {
        let Ok(message) = Message::parse(Bytes::copy_from_slice(bytes)) else {
            return Ok(());
        };
        let Some(call_id) = call_id(message.headers()) else {
            return Ok(());
        };
        let key = Key { call_id, node };
        let cseq = cseq(message.headers());
        let is_invite = match &message {
            Message::Request(request) => {
                if matches!(request.method(), Method::Bye | Method::Cancel) {
                    self.inner.end(&key, "ended by this node's softphone");
                    return Ok(());
                }
                *request.method() == Method::Invite
            }
            Message::Response(response) => {
                if let Some((_, Method::Invite)) = &cseq {
                    if response.status().as_u16() >= 300 {
                        self.inner.end_unless_established(&key);
                        return Ok(());
                    }
                    if response.status().is_success() {
                        self.inner.established(&key);
                    }
                }
                false
            }
        };
        if !has_sdp(message.headers(), message.body()) {
            return Ok(());
        }
        match self.inner.record(&key, message.body()) {
            Ok(()) => Ok(()),
            Err(error @ (Error::TooManyLines { .. } | Error::TooManySessions { .. }))
                if is_invite =>
            {
                self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                warn!(call_id = key.call_id, %error, "the softphone's offer cannot be anchored; its branch fails");
                Err(error)
            }
            Err(error) => {
                self.inner.stats.unanchored.fetch_add(1, Ordering::Relaxed);
                warn!(call_id = key.call_id, %error, "the softphone's SDP is passed on unanchored");
                Ok(())
            }
        }
    }

    /// A SIP message from one of this node's softphones at `source`: its address is
    /// remembered for latching.
    pub fn seen_from_softphone(&self, message: &Message, source: SocketAddr) {
        // What can precede the softphone's media: its INVITE and the responses to an INVITE
        // (a 180 comes before the 200 and its RTP), and any SDP.
        let relevant = has_sdp(message.headers(), message.body())
            || matches!(cseq(message.headers()), Some((_, Method::Invite)));
        if !relevant {
            return;
        }
        if let Some(call_id) = call_id(message.headers()) {
            self.inner.note_source(call_id, source.ip());
        }
    }

    /// A SIP message this node sends to one of its softphones: a failure of an INVITE (the
    /// proxy core's own 480 or 408 too) ends the sessions of the call not yet established.
    pub fn sent_to_softphone(&self, bytes: &[u8]) {
        if !bytes.starts_with(b"SIP/") {
            return;
        }
        let Ok(Message::Response(response)) = Message::parse(Bytes::copy_from_slice(bytes)) else {
            return;
        };
        if response.status().as_u16() < 300 {
            return;
        }
        if !matches!(cseq(response.headers()), Some((_, Method::Invite))) {
            return;
        }
        let Some(call_id) = call_id(response.headers()) else {
            return;
        };
        let keys = self.inner.lock().sessions.keys_of(&call_id);
        for key in keys {
            self.inner.end_unless_established(&key);
        }
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let mut table = self.inner.lock();
        table.anchors.clear();
        table.carriers.clear();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rewrites an SDP from the other node of `key` towards this node's ports, setting up
    /// the session and its port pairs.
    fn anchor(&self, key: &Key, body: &[u8], hint: Option<IpAddr>) -> Result<Vec<u8>, Error> {
        let mut sdp = sdp::parse(body)?;
        self.check_lines(&sdp)?;
        let mut table = self.lock();
        let table = &mut *table;
        let (session, wire, created) = self.open(&mut table.sessions, key)?;
        // The softphone's SIP addresses: where its SIP came from, and where this message goes
        // (the Request-URI of a request to it is its contact, a response goes to its Via).
        let recent = table.recent.get(&key.call_id).map(|(ip, _)| *ip);
        for ip in recent.into_iter().chain(hint) {
            session.add_source(ip);
        }
        // The softphone: what its SIP came from, else what its SDP said, else the hint.
        let softphone = session
            .sources
            .first()
            .copied()
            .or_else(|| {
                session
                    .lines
                    .iter()
                    .flatten()
                    .find_map(|line| line.rtp.target())
                    .map(|a| a.ip())
            })
            .or(hint);
        let mut ports = Vec::with_capacity(sdp.medias.len());
        let mut ip = None;
        for (index, media) in sdp.medias.iter().enumerate() {
            if !sdp::is_active(media) {
                ports.push(None);
                continue;
            }
            session.line_mut(index);
            let anchor = match table.anchors.entry((wire, index)) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let (advertised, bind) = match self.facing(softphone) {
                        Some(facing) => facing,
                        None => {
                            drop_new(&mut table.sessions, &mut table.anchors, key, created);
                            return Err(Error::NoAddress);
                        }
                    };
                    match self.bind(wire, index, advertised, bind) {
                        Ok(anchor) => entry.insert(anchor),
                        Err(error) => {
                            drop_new(&mut table.sessions, &mut table.anchors, key, created);
                            return Err(error);
                        }
                    }
                }
            };
            ip.get_or_insert(anchor.ip);
            ports.push(anchor.rtp.local_addr().ok().map(|a| a.port()));
        }
        let Some(ip) = ip else {
            // No active line: nothing to anchor, the SDP goes on as it is.
            return Ok(body.to_vec());
        };
        let Some(session) = table.sessions.get_mut(key) else {
            return Err(Error::NoAddress);
        };
        let version = session.version_for(sdp.origin.sess_version);
        sdp::rewrite(&mut sdp, ip, &ports, version);
        self.stats.rewritten.fetch_add(1, Ordering::Relaxed);
        debug!(call_id = key.call_id, node = %key.node, %ip, ?ports, "SDP rewritten towards this node");
        Ok(sdp::print(&sdp))
    }

    /// Records where this node's softphone wants the media of the session `key`.
    fn record(&self, key: &Key, body: &[u8]) -> Result<(), Error> {
        let sdp = sdp::parse(body)?;
        self.check_lines(&sdp)?;
        let declared = sdp::declared(&sdp);
        let mut table = self.lock();
        let table = &mut *table;
        let (session, _, _) = self.open(&mut table.sessions, key)?;
        if let Some((ip, _)) = table.recent.get(&key.call_id) {
            session.add_source(*ip);
        }
        for (index, declared) in declared.iter().enumerate() {
            let Some(declared) = declared else { continue };
            let line = session.line_mut(index);
            line.rtp.declare(declared.rtp);
            line.rtcp.declare(declared.rtcp);
        }
        debug!(call_id = key.call_id, node = %key.node, ?declared, "the softphone's media recorded");
        Ok(())
    }

    fn check_lines(&self, sdp: &sdp_types::Session) -> Result<(), Error> {
        // The m-line index travels as one byte.
        let max = self.config.max_lines.min(usize::from(u8::MAX));
        let beyond = sdp
            .medias
            .iter()
            .enumerate()
            .any(|(index, media)| index >= max && sdp::is_active(media));
        if beyond {
            return Err(Error::TooManyLines { max });
        }
        Ok(())
    }

    /// The session of `key`, set up (and counted) if it is new; with its wire id and whether
    /// it is new. Beyond [`Config::max_sessions`] an error.
    fn open<'t>(
        &self,
        sessions: &'t mut Sessions,
        key: &Key,
    ) -> Result<(&'t mut session::Session, u64, bool), Error> {
        let wire = wire_id(&key.call_id, &self.local, &key.node);
        let (session, created) = sessions
            .get_or_create(key, wire, now(), self.config.max_sessions)
            .map_err(|full| match full {
                Full::Sessions(max) => Error::TooManySessions { max },
                Full::Collision => Error::TooManySessions {
                    max: self.config.max_sessions,
                },
            })?;
        if created {
            self.stats.sessions_started.fetch_add(1, Ordering::Relaxed);
            info!(call_id = key.call_id, node = %key.node, "media session set up");
        }
        Ok((session, wire, created))
    }

    /// The address written into the SDP for a softphone at `softphone`, and the one to bind.
    fn facing(&self, softphone: Option<IpAddr>) -> Option<(IpAddr, IpAddr)> {
        let bind = match (self.listen, softphone) {
            (Some(ip), _) => ip,
            (None, Some(softphone)) => route_to(softphone)?,
            (None, None) => return None,
        };
        Some((self.config.address.unwrap_or(bind), bind))
    }

    /// Binds a port pair on `bind` for line `index` of session `wire` and starts reading it.
    fn bind(
        &self,
        wire: u64,
        index: usize,
        advertised: IpAddr,
        bind: IpAddr,
    ) -> Result<Anchor, Error> {
        let (rtp, rtcp) = bind_pair(bind).map_err(Error::Ports)?;
        let (rtp, rtcp) = (Arc::new(rtp), Arc::new(rtcp));
        let weak = self.weak();
        let line = u8::try_from(index).unwrap_or(u8::MAX);
        let rtp_task = tokio::spawn(
            read_softphone(weak.clone(), rtp.clone(), wire, line, Kind::Rtp).in_current_span(),
        );
        let rtcp_task = tokio::spawn(
            read_softphone(weak, rtcp.clone(), wire, line, Kind::Rtcp).in_current_span(),
        );
        Ok(Anchor {
            ip: advertised,
            rtp,
            rtcp,
            tasks: [rtp_task.abort_handle(), rtcp_task.abort_handle()],
        })
    }

    fn weak(&self) -> Weak<Inner> {
        self.me.clone()
    }

    /// Ends the session `key`: its ports close at once.
    fn end(&self, key: &Key, why: &str) {
        let mut table = self.lock();
        let Some(wire) = table.sessions.remove(key) else {
            return;
        };
        table.anchors.retain(|(w, _), _| *w != wire);
        drop(table);
        self.stats.sessions_ended.fetch_add(1, Ordering::Relaxed);
        info!(call_id = key.call_id, node = %key.node, why, "media session ended");
    }

    fn end_unless_established(&self, key: &Key) {
        let established = self
            .lock()
            .sessions
            .get_mut(key)
            .is_some_and(|s| s.established);
        if !established {
            self.end(key, "the INVITE failed");
        }
    }

    fn established(&self, key: &Key) {
        if let Some(session) = self.lock().sessions.get_mut(key) {
            session.established = true;
        }
    }

    fn note_source(&self, call_id: String, ip: IpAddr) {
        let t = now();
        let mut table = self.lock();
        for key in table.sessions.keys_of(&call_id) {
            if let Some(session) = table.sessions.get_mut(&key) {
                session.add_source(ip);
            }
        }
        if table.recent.len() >= MAX_RECENT && !table.recent.contains_key(&call_id) {
            let oldest = table
                .recent
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                table.recent.remove(&oldest);
            }
        }
        table.recent.insert(call_id, (ip, t));
    }

    fn note_refused(&self, call_id: &str, seq: u32) {
        let mut table = self.lock();
        if table.refused.len() >= MAX_REFUSED {
            table.refused.pop_front();
        }
        table.refused.push_back((call_id.to_owned(), seq));
    }

    fn take_refused(&self, call_id: &str, seq: u32) -> bool {
        let mut table = self.lock();
        let found = table
            .refused
            .iter()
            .position(|(c, s)| c == call_id && *s == seq);
        found.map(|at| table.refused.remove(at)).is_some()
    }

    /// A packet from this node's softphone on line `line` of session `wire`: latched, framed
    /// and queued for the other node.
    fn on_packet(&self, wire: u64, line: u8, kind: Kind, source: SocketAddr, packet: &[u8]) {
        let t = now();
        let mut table = self.lock();
        let table = &mut *table;
        let Some(node) = table.sessions.node_of(wire) else {
            return;
        };
        let Some(session) = table.sessions.by_wire_mut(wire, &node) else {
            return;
        };
        let sources = session.sources.clone();
        let Some(Some(entry)) = session.lines.get_mut(usize::from(line)) else {
            return;
        };
        let latch = match kind {
            Kind::Rtp => &mut entry.rtp,
            Kind::Rtcp => &mut entry.rtcp,
        };
        if !latch.accept(source, &sources) {
            self.stats.dropped_foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        session.last_activity = t;
        self.stats.from_softphones.fetch_add(1, Ordering::Relaxed);
        let frame = Frame {
            session: wire,
            line,
            kind,
            sent_us: carrier::micros(t),
            packet: Bytes::copy_from_slice(packet),
        };
        let Some(encoded) = frame.encode() else {
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let queue = match table.carriers.get(&node) {
            Some(queue) if !queue.is_closed() => queue.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(self.config.queue.max(1));
                let task = carrier::send(
                    self.control.clone(),
                    self.protocol.clone(),
                    node,
                    rx,
                    self.stats.clone(),
                );
                tokio::spawn(task.in_current_span());
                table.carriers.insert(node, tx.clone());
                tx
            }
        };
        if queue.try_send(encoded).is_err() {
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A frame from node `peer`: sent on to this node's softphone, from the line's port.
    fn on_frame(&self, peer: PeerId, frame: Frame) {
        let t = now();
        let mut guard = self.lock();
        let table = &mut *guard;
        let found = table
            .sessions
            .by_wire_mut(frame.session, &peer)
            .and_then(|session| {
                session.last_activity = t;
                let line = session.lines.get(usize::from(frame.line))?.as_ref()?;
                let target = match frame.kind {
                    Kind::Rtp => line.rtp.target(),
                    Kind::Rtcp => line.rtcp.target(),
                }?;
                let anchor = table
                    .anchors
                    .get(&(frame.session, usize::from(frame.line)))?;
                let socket = match frame.kind {
                    Kind::Rtp => anchor.rtp.clone(),
                    Kind::Rtcp => anchor.rtcp.clone(),
                };
                Some((socket, target))
            });
        drop(guard);
        let Some((socket, target)) = found else {
            self.stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match socket.try_send_to(&frame.packet, target) {
            Ok(_) => {
                self.stats.to_softphones.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => debug!(%target, %error, "a media packet for the softphone not sent"),
        }
    }
}

/// Removes a session this call created when setting it up failed.
fn drop_new(
    sessions: &mut Sessions,
    anchors: &mut HashMap<(u64, usize), Anchor>,
    key: &Key,
    created: bool,
) {
    if created && let Some(wire) = sessions.remove(key) {
        anchors.retain(|(w, _), _| *w != wire);
    }
}

/// Accepts the media streams of other nodes, one reading task each (at most
/// [`MAX_INBOUND`]).
async fn accept(inner: Weak<Inner>, mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((peer, stream)) = incoming.next().await {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.inbound.load(Ordering::Relaxed) >= MAX_INBOUND {
            debug!(%peer, "too many media streams; one refused");
            continue;
        }
        strong.inbound.fetch_add(1, Ordering::Relaxed);
        let stats = strong.stats.clone();
        let stale_after = strong.config.stale_after;
        drop(strong);
        let weak = inner.clone();
        tokio::spawn(
            async move {
                let deliver_to = weak.clone();
                carrier::receive(peer, stream, stale_after, stats, move |frame| {
                    if let Some(inner) = deliver_to.upgrade() {
                        inner.on_frame(peer, frame);
                    }
                })
                .await;
                if let Some(inner) = weak.upgrade() {
                    inner.inbound.fetch_sub(1, Ordering::Relaxed);
                }
            }
            .in_current_span(),
        );
    }
}

/// Ends idle sessions, checking every `every`.
async fn sweep(inner: Weak<Inner>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let idle = inner.lock().sessions.idle(now(), inner.config.idle_timeout);
        for key in idle {
            inner.end(&key, "idle");
        }
        let t = now();
        let keep = inner.config.idle_timeout;
        inner
            .lock()
            .recent
            .retain(|_, (_, at)| t.saturating_duration_since(*at) < keep);
    }
}

/// Reads one media port of line `line` of session `wire`.
async fn read_softphone(
    inner: Weak<Inner>,
    socket: Arc<UdpSocket>,
    wire: u64,
    line: u8,
    kind: Kind,
) {
    let mut buf = vec![0u8; carrier::MAX_PACKET + 1];
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                debug!(%error, "a media port failed");
                return;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        if len > carrier::MAX_PACKET {
            inner.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        inner.on_packet(wire, line, kind, source, &buf[..len]);
    }
}

/// Binds an RTP port (even) and its RTCP port (the next one) on `ip`.
fn bind_pair(ip: IpAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..PAIR_ATTEMPTS {
        let rtp = std::net::UdpSocket::bind((ip, 0))?;
        let port = rtp.local_addr()?.port();
        if port % 2 == 1 || port == u16::MAX {
            continue;
        }
        let Ok(rtcp) = std::net::UdpSocket::bind((ip, port + 1)) else {
            continue;
        };
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        return Ok((UdpSocket::from_std(rtp)?, UdpSocket::from_std(rtcp)?));
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free even port with a free next one",
    ))
}

/// The local address the kernel uses towards `ip` (a connected UDP socket sends nothing).
fn route_to(ip: IpAddr) -> Option<IpAddr> {
    let any = match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = std::net::UdpSocket::bind((any, 0)).ok()?;
    socket.connect((ip, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The status and reason phrase of a refused offer. Never 503: the refusal goes back through
/// the caller's node, whose proxy turns a 503 into a bare 500 (RFC 3261 §16.7 step 6), and
/// the caller would not learn why. No room for the session is 480 (§21.4.18: "the reason
/// phrase SHOULD indicate a more precise cause"), a failure of this node 500.
fn refusal(error: &Error) -> (StatusCode, String) {
    let status = match error {
        Error::TooManySessions { .. } => StatusCode::TEMPORARILY_UNAVAILABLE,
        Error::Ports(_) | Error::NoAddress => StatusCode::SERVER_INTERNAL_ERROR,
        _ => StatusCode::NOT_ACCEPTABLE_HERE,
    };
    let phrase: String = format!("{} ({error})", status.canonical_reason())
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    (status, phrase)
}

fn call_id(headers: &p2psip_sip::Headers) -> Option<String> {
    headers
        .typed::<CallId>()
        .and_then(Result::ok)
        .map(|c| c.0.to_owned())
}

fn cseq(headers: &p2psip_sip::Headers) -> Option<(u32, Method)> {
    headers
        .typed::<CSeq>()
        .and_then(Result::ok)
        .map(|c| (c.seq(), c.method()))
}

fn has_sdp(headers: &p2psip_sip::Headers, body: &Bytes) -> bool {
    !body.is_empty()
        && headers
            .typed::<ContentType>()
            .and_then(Result::ok)
            .is_some_and(|c| c.0.is("application", "sdp"))
}

/// The IP of a request's Request-URI host, where it is one (the contact of a softphone).
fn uri_ip(request: &Request) -> Option<IpAddr> {
    let uri = request.uri().ok()?;
    host_ip(&uri.as_sip()?.host())
}

/// The address a response goes back to after this node: its second Via's `received`, or
/// its host.
fn second_via_ip(headers: &p2psip_sip::Headers) -> Option<IpAddr> {
    let via = headers.typed_all::<Via>().nth(1)?.ok()?;
    via.received()
        .and_then(|r| r.parse().ok())
        .or_else(|| host_ip(&via.host()))
}

fn host_ip(host: &Host<'_>) -> Option<IpAddr> {
    match host {
        Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_offer_says_why_in_its_reason_phrase() {
        let bad = sdp::parse(b"v=0\r\no=broken\r\n").unwrap_err();
        let (status, phrase) = refusal(&bad);
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE_HERE);
        assert!(
            phrase.starts_with("Not Acceptable Here (bad SDP: "),
            "{phrase}"
        );
        let (status, phrase) = refusal(&Error::TooManyLines { max: 4 });
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE_HERE);
        assert_eq!(phrase, "Not Acceptable Here (more than 4 media streams)");
        let (status, phrase) = refusal(&Error::TooManySessions { max: 256 });
        assert_eq!(status, StatusCode::TEMPORARILY_UNAVAILABLE);
        assert!(phrase.contains("too many media sessions"), "{phrase}");
        let (status, phrase) = refusal(&Error::NoAddress);
        assert_eq!(status, StatusCode::SERVER_INTERNAL_ERROR);
        assert!(phrase.contains("set media.address"), "{phrase}");
        let long = Error::BadSdp("x\r\n".repeat(200));
        let (_, phrase) = refusal(&long);
        assert!(phrase.chars().count() <= MAX_REASON && !phrase.contains('\n'));
    }

    #[test]
    fn a_pair_is_an_even_rtp_port_and_the_next_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (rtp, rtcp) = bind_pair("127.0.0.1".parse().unwrap()).unwrap();
            let rtp = rtp.local_addr().unwrap().port();
            assert_eq!(rtp % 2, 0);
            assert_eq!(rtcp.local_addr().unwrap().port(), rtp + 1);
        });
    }

    #[test]
    fn the_address_towards_a_softphone_is_a_local_one() {
        assert_eq!(
            route_to("127.0.0.1".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
