//! # The overlay's network: libp2p carrying opaque frames
//!
//! A libp2p swarm owned by one tokio task. It joins the overlay named in [`Config`] (Kademlia
//! on `/p2psip/<overlay>/kad/1.0.0` for the routing table, bootstrap and closest-peer lookups)
//! and carries requests and responses on `/p2psip/<overlay>/reload/1`. Frames are opaque
//! `Vec<u8>`: the layer above encodes its messages; this layer only moves them, refusing any
//! frame over [`Config::max_frame_size`] and disconnecting a peer that sends
//! [`Config::max_bad_frames`] of them.
//!
//! Entry point: [`Network::start`] gives a cloneable [`Network`] handle, which sends commands
//! to the task, and the [`Events`] it reports: inbound requests (answered through their
//! [`Responder`]), peers coming and going, listen addresses, bad frames.
//!
//! Also wired in: QUIC and TCP (noise, yamux), identify (its listen addresses feed Kademlia,
//! for peers of the same overlay only), ping, mDNS (optional), connection limits, and NAT
//! traversal: AutoNAT tells a node whether it is reachable; a reachable node serves circuit
//! relay v2 to the peers of its own overlay only, within [`RelayLimits`]; an unreachable one
//! reserves slots on relays and announces the relayed addresses; DCUtR upgrades relayed
//! connections to direct ones where the NATs allow (the policy is in `nat.rs`). Streams of the
//! media protocol ([`Network::media`]) carry RTP between the end nodes of a call.
//!
//! Inbound requests are held to limits per peer besides the global ones: at most
//! [`Config::max_pending_per_peer`] of one peer's requests wait for their answer, and a token
//! bucket per peer ([`Config::peer_request_rate`], [`Config::peer_request_burst`]) caps their
//! rate, so a peer that floods cannot take the slots of the others. A refused request is
//! answered at once with the frame the [`Refusal`] function of [`Network::start_with_refusal`]
//! makes (the overlay's error response, code `Busy` and a sentence), or failed at its sender
//! when there is none, and counted ([`Network::refused_requests`]).
//!
//! Invariants: every channel and every table of pending operations is bounded
//! ([`Config::max_pending`], [`Config::event_buffer`]); the task never waits for the reader of
//! [`Events`]: when that channel is full, a request is refused as busy and other events are
//! dropped and logged, except peers connecting and disconnecting, which are never lost: when
//! the channel is full they wait in a table of their own (one entry per peer, coalesced: a
//! peer that connected and disconnected unseen is reported as disconnected, one that
//! disconnected and came back as both), which [`Events`] hands out before the channel's
//! other events as soon as the peer changes sent earlier through the channel are read, so
//! each peer's changes stay in order. Nodes of overlays with different names
//! never enter each other's routing tables, because they speak different Kademlia protocols
//! and identify only feeds peers that speak ours.
//!
//! # Tables keyed by what peers send, and their bounds
//!
//! | table | bound |
//! |---|---|
//! | pending dials, DHT queries, outbound requests, inbound requests | [`Config::max_pending`] each |
//! | inbound requests waiting, per peer | [`Config::max_pending_per_peer`]; the table holds only peers with requests waiting |
//! | token buckets per peer | pruned when refilled; at most `2 × max_connections + 64` peers |
//! | bad-frame counts, connections, overlay members | connected peers only (removed with the last connection; [`Config::max_connections`]) |
//! | peer changes not yet read | one entry per peer connected now or that the reader was told connected, and at most 4096 disconnects of peers it never heard of |
//! | addresses learnt from identify | the latest message's, at most 8 (`MAX_ADDRS_PER_PEER`), plus those our open connections to the peer were dialled on, for k peers per Kademlia bucket: each identify drops the addresses the peer no longer announces |
//! | relay candidates and reservations (`nat.rs`) | relay candidates: connected peers only; reservations: [`Config::relay_reservations`] |

mod admission;
mod behaviour;
mod codec;
mod config;
mod directory;
mod error;
pub(crate) mod limits;
mod nat;
mod task;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    num::NonZeroUsize,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures::{Stream, task::AtomicWaker};
use libp2p::{Multiaddr, PeerId, identity::Keypair, kad, multiaddr::Protocol};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

pub use config::{Config, MAX_KBUCKET_SIZE, Relay, RelayLimits};
pub use directory::{MAX_ADDRS as MAX_MEMBER_ADDRS, Member};
pub use error::Error;
pub use nat::{NatState, Path, Reachability};

use task::{Command, Task};

/// Capacity of the command channel from the handles to the task.
const COMMAND_BUFFER: usize = 64;

/// Makes the answer frame of an inbound request the network refused (over a per-peer or
/// global limit) from the request frame and the reason; `None` fails the request at its
/// sender without an answer. See [`Network::start_with_refusal`].
pub type Refusal = Arc<dyn Fn(&[u8], &Error) -> Option<Vec<u8>> + Send + Sync>;

/// A handle on the running network. Cheap to clone; every clone talks to the same task.
///
/// The task stops on [`Network::shutdown`], or when every handle is dropped.
#[derive(Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    max_frame_size: usize,
    media: libp2p_stream::Control,
    media_protocol: libp2p::StreamProtocol,
    refused: Arc<AtomicU64>,
    admission: admission::Admission,
    members: behaviour::Members,
    directory: SharedDirectory,
}

/// The directory ([`directory`]'s docs), shared by the task (identify, failed dials) and the
/// handles (the node's membership exchange), with a signal for members that are new.
#[derive(Debug, Clone)]
pub(crate) struct SharedDirectory {
    directory: Arc<Mutex<directory::Directory>>,
    news: Arc<tokio::sync::Notify>,
}

impl SharedDirectory {
    fn new(me: PeerId, max: usize) -> SharedDirectory {
        SharedDirectory {
            directory: Arc::new(Mutex::new(directory::Directory::new(me, max))),
            news: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, directory::Directory> {
        // Every method leaves the directory consistent: take it back after a panic.
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes whoever waits in [`Network::directory_news`].
    pub(crate) fn announce(&self) {
        self.news.notify_one();
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("local_peer_id", &self.local_peer_id)
            .field("media_protocol", &self.media_protocol)
            .finish_non_exhaustive()
    }
}

/// The events of the network, in order, from a bounded channel. Read them promptly: when the
/// channel is full, new requests are refused as busy and other events dropped, except
/// [`Event::PeerConnected`] and [`Event::PeerDisconnected`], which are never lost (they wait
/// in a table of their own, coalesced per peer, and come before the channel's other events
/// once the earlier peer changes are read).
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
    peers: Arc<PeerChanges>,
}

/// Peers that connected or disconnected, not yet read: shared by the task (which adds) and
/// [`Events`] (which drains). Never full; loses no disconnect of a peer the reader was told
/// connected.
#[derive(Debug, Default)]
pub(crate) struct PeerChanges {
    queue: Mutex<PeerQueue>,
    waker: AtomicWaker,
}

/// The most peers the reader never heard of that may wait with a disconnect not yet read;
/// beyond it, such disconnects are dropped (the reader was never told those peers came).
const MAX_UNHEARD_GONE: usize = 4096;

/// For each peer with changes not yet read: the first of them and its state now.
#[derive(Debug, Default)]
struct PeerQueue {
    order: VecDeque<PeerId>,
    /// (connected at the first unread change, connected now, whether the latest disconnect
    /// was clean)
    state: HashMap<PeerId, (bool, bool, bool)>,
    /// The peers the reader was told connected and not yet told disconnected.
    heard: HashSet<PeerId>,
    /// Entries of peers not in `heard` that only say "disconnected".
    unheard_gone: usize,
    /// Peer changes sent through the event channel and not yet read: while there are some,
    /// the reader takes the channel's events first, so that each peer's changes stay in order.
    in_channel: usize,
}

impl PeerChanges {
    /// Reports that `peer` connected (`true`) or disconnected (cleanly or not, see
    /// [`Event::PeerDisconnected`]): through the event channel when nothing waits here and it
    /// has room, else here (and wakes the reader).
    pub(crate) fn report(
        &self,
        events: &mpsc::Sender<Event>,
        peer: PeerId,
        connected: bool,
        clean: bool,
    ) {
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.order.is_empty() {
                let event = if connected {
                    Event::PeerConnected(peer)
                } else {
                    Event::PeerDisconnected { peer, clean }
                };
                match events.try_send(event) {
                    Ok(()) => {
                        queue.in_channel += 1;
                        if connected {
                            queue.heard.insert(peer);
                        } else {
                            queue.heard.remove(&peer);
                        }
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                }
            }
            let old = queue.state.get(&peer).copied();
            let new = match old {
                None => (connected, connected, clean),
                // Came and went before the reader saw it come: the reader hears of the
                // disconnect only (it may have used the peer without hearing of it).
                Some((true, _, _)) if !connected => (false, false, clean),
                Some((first, _, _)) => (first, connected, clean),
            };
            let heard = queue.heard.contains(&peer);
            let unheard_gone = |state: Option<(bool, bool, bool)>| {
                !heard && matches!(state, Some((false, false, _)))
            };
            if unheard_gone(Some(new))
                && !unheard_gone(old)
                && queue.unheard_gone >= MAX_UNHEARD_GONE
            {
                // Bounded: a peer the reader never heard of, gone again, is forgotten.
                if old.is_some() {
                    queue.state.remove(&peer);
                    queue.order.retain(|p| *p != peer);
                }
            } else {
                queue.unheard_gone = queue.unheard_gone + usize::from(unheard_gone(Some(new)))
                    - usize::from(unheard_gone(old));
                queue.state.insert(peer, new);
                if old.is_none() {
                    queue.order.push_back(peer);
                }
            }
        }
        self.waker.wake();
    }

    /// Takes the next peer change waiting here, unless `after_channel` and peer changes sent
    /// earlier through the channel are still unread.
    fn pop(&self, after_channel: bool) -> Option<Event> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if after_channel && queue.in_channel > 0 {
            return None;
        }
        let peer = *queue.order.front()?;
        let (first, now, clean) = queue.state.get(&peer).copied()?;
        if !first && !now && !queue.heard.contains(&peer) {
            queue.unheard_gone = queue.unheard_gone.saturating_sub(1);
        }
        if first != now {
            // Gone and back: the reader hears of both.
            queue.state.insert(peer, (now, now, clean));
        } else {
            queue.order.pop_front();
            queue.state.remove(&peer);
        }
        if first {
            queue.heard.insert(peer);
            Some(Event::PeerConnected(peer))
        } else {
            queue.heard.remove(&peer);
            Some(Event::PeerDisconnected { peer, clean })
        }
    }

    /// The reader took `event` from the channel.
    fn received(&self, event: &Event) {
        if matches!(
            event,
            Event::PeerConnected(_) | Event::PeerDisconnected { .. }
        ) {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.in_channel = queue.in_channel.saturating_sub(1);
        }
    }
}

/// Something that happened on the network.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A peer sent a request; answer it with `responder` (dropping it fails the request).
    Request {
        /// The peer that sent it.
        peer: PeerId,
        /// The request frame.
        frame: Vec<u8>,
        /// Sends the response frame back.
        responder: Responder,
    },
    /// The first connection to a peer opened. Never lost (see [`Events`]).
    PeerConnected(PeerId),
    /// A peer of this overlay told its listen addresses (identify): where to reach it again,
    /// for instance after a restart.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its listen addresses (at most a few).
        listen_addrs: Vec<Multiaddr>,
    },
    /// The last connection to a peer closed. Never lost (see [`Events`]).
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Whether the connection ended cleanly: unused for
        /// [`Config::idle_connection_timeout`] on this side, closed by this node, or closed
        /// by the peer without an error (its own idle timeout, or its shutdown). A clean
        /// close says nothing of the peer's health, and Kademlia closes connections it no
        /// longer uses all the time; a failed one (the QUIC idle timeout: the peer went
        /// silent; a reset; a transport error) suggests the peer is down.
        clean: bool,
    },
    /// A peer entered the routing table.
    RoutingUpdated(PeerId),
    /// The node listens on a new address.
    Listening(Multiaddr),
    /// AutoNAT changed its verdict on this node's reachability.
    Reachability(Reachability),
    /// Hole punching (DCUtR) with a peer we were connected to through a relay ended.
    HolePunch {
        /// The peer.
        peer: PeerId,
        /// Whether a direct connection now exists.
        direct: bool,
    },
    /// A peer sent a frame over the size limit; after [`Config::max_bad_frames`] of them it is
    /// disconnected.
    BadFrame {
        /// The peer.
        peer: PeerId,
    },
}

/// Answers one inbound request. Use it within [`Config::request_timeout`]; dropping it without
/// answering fails the request at the requester.
#[derive(Debug)]
pub struct Responder {
    reply: oneshot::Sender<Vec<u8>>,
    max_frame_size: usize,
}

impl Network {
    /// Builds the swarm with `keypair` as the node's identity, listens on every address of
    /// `config.listen` (it returns once each has one listen address), dials the bootstrap peers
    /// and spawns the task that owns the swarm. Must be called inside a tokio runtime.
    ///
    /// A request refused by the per-peer limits fails at its sender without an answer; use
    /// [`Network::start_with_refusal`] to answer it.
    pub async fn start(keypair: Keypair, config: Config) -> Result<(Network, Events), Error> {
        Network::start_with_refusal(keypair, config, Arc::new(|_: &[u8], _: &Error| None)).await
    }

    /// As [`Network::start`], and a request refused by the limits on inbound requests is
    /// answered with the frame `refusal` makes of it (the layer above's error response).
    pub async fn start_with_refusal(
        keypair: Keypair,
        config: Config,
        refusal: Refusal,
    ) -> Result<(Network, Events), Error> {
        config.validate()?;
        let local_peer_id = keypair.public().to_peer_id();
        let members = behaviour::Members::default();
        let directory = SharedDirectory::new(local_peer_id, config.max_members);
        let swarm = behaviour::build_swarm(keypair, &config, &members)?;
        let media = swarm.behaviour().media.new_control();
        let (commands, command_rx) = mpsc::channel(COMMAND_BUFFER);
        let (event_tx, event_rx) = mpsc::channel(config.event_buffer);
        let span = tracing::info_span!("network", peer = %local_peer_id, overlay = %config.overlay);
        let refused = Arc::new(AtomicU64::new(0));
        let peers = Arc::new(PeerChanges::default());
        let network = Network {
            commands,
            local_peer_id,
            max_frame_size: config.max_frame_size,
            media,
            media_protocol: config.media_protocol(),
            refused: refused.clone(),
            admission: admission::Admission::new(&config),
            members: members.clone(),
            directory: directory.clone(),
        };

        let mut task = Task::new(swarm, command_rx, event_tx, config, members, directory);
        task.set_refusal(refusal, refused, peers.clone());
        task.start().instrument(span.clone()).await?;
        tokio::spawn(task.run().instrument(span));
        Ok((
            network,
            Events {
                rx: event_rx,
                peers,
            },
        ))
    }

    /// This node's peer id (its Node-ID).
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// How many inbound requests the network refused because their peer was over its limits
    /// (waiting requests, rate) or every slot was taken.
    pub fn refused_requests(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The addresses the node listens on now.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.call(Command::ListenAddrs).await
    }

    /// Connects to `addr` (with or without a `/p2p/<peer id>` suffix) and returns the peer's id
    /// once the connection is established. Already connected to that peer: returns at once.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Runs a Kademlia bootstrap (a lookup of our own id, then a refresh of the farther
    /// buckets) and returns when it is done. Fails with [`Error::NoKnownPeers`] when the
    /// routing table is empty.
    pub async fn bootstrap(&self) -> Result<(), Error> {
        self.call(Command::Bootstrap).await?
    }

    /// The peers of the overlay closest to `key` by Kademlia distance (`sha256` of the key
    /// against `sha256` of each peer id), this node included, nearest first, at most 20,
    /// found by an iterative lookup. On a query timeout, the peers found so far.
    pub async fn closest_peers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, Error> {
        self.closest_n(key, kad::K_VALUE).await
    }

    /// [`Network::closest_peers`], but the query ends once it heard from the `count` closest
    /// peers it found (at most Kademlia's k, 20): a lookup that needs a replica set of `r`
    /// asks a few peers, not twenty.
    pub async fn closest_n(&self, key: Vec<u8>, count: NonZeroUsize) -> Result<Vec<PeerId>, Error> {
        self.call(|reply| Command::ClosestPeers {
            key,
            count,
            within: None,
            reply,
        })
        .await?
    }

    /// [`Network::closest_n`], cut short after `within`: then it answers with the closest
    /// admitted peers it heard from so far (and this node), as when it ends on its own.
    pub async fn closest_n_within(
        &self,
        key: Vec<u8>,
        count: NonZeroUsize,
        within: std::time::Duration,
    ) -> Result<Vec<PeerId>, Error> {
        self.call(|reply| Command::ClosestPeers {
            key,
            count,
            within: Some(within),
            reply,
        })
        .await?
    }

    /// Whether `peer` may be used as a replica or a next hop: its Node-ID carries the
    /// overlay's work ([`Config::node_id_work`]) and, in an overlay with an enrollment CA,
    /// identify showed its certificate ([`Config::enrollment_ca`]) or it entered the directory
    /// with one ([`Network::learn_members`]).
    pub fn admits(&self, peer: &PeerId) -> bool {
        task::admits(&self.admission, &self.members, &self.directory, peer)
    }

    /// The members of the directory: peers this node knows without a connection to each,
    /// admitted when they entered (see [`Network::learn_members`]).
    pub fn directory(&self) -> Vec<PeerId> {
        self.directory.lock().peers()
    }

    /// At most `limit` members of the directory after `after` in Node-ID order, and whether
    /// more follow: a page of the whole directory, for a peer that asked.
    pub fn members_page(&self, after: Option<&PeerId>, limit: usize) -> (Vec<Member>, bool) {
        self.directory.lock().page(after, limit)
    }

    /// At most `limit` of the members that entered the directory within `within` before
    /// now, the latest first.
    pub fn members_news(&self, within: std::time::Duration, limit: usize) -> Vec<Member> {
        self.directory
            .lock()
            .news(std::time::Instant::now(), within, limit)
    }

    /// Takes the members `from` passed on into the directory and gives those that were new.
    /// Each is checked first as identify's are ([`Network::admits`]): its Node-ID's work
    /// and, in an overlay with an enrollment CA, its certificate; one that fails is left out
    /// and logged. Addresses on a loopback interface are kept only from a peer on this
    /// machine, and addresses that name another peer are dropped.
    pub fn learn_members(&self, from: &PeerId, members: Vec<Member>) -> Vec<PeerId> {
        let now = std::time::Instant::now();
        let now_ms = task::now_ms();
        let mut directory = self.directory.lock();
        let from_here = directory.addresses(from).iter().any(task::is_loopback);
        let mut new = Vec::new();
        for mut member in members {
            if member.peer == self.local_peer_id || directory.contains(&member.peer) {
                continue;
            }
            member.addrs.retain(|addr| {
                (from_here || !task::is_loopback(addr))
                    && peer_of(addr).is_none_or(|peer| peer == member.peer)
            });
            // A certificate is kept only where one is checked, and never an oversized one.
            if !self.admission.needs_certificate() {
                member.certificate = None;
            }
            let announced = member.certificate.as_deref().unwrap_or_default();
            if announced.len() > directory::MAX_CERTIFICATE {
                directory.refuse();
                continue;
            }
            if let Err(reason) = self.admission.check(&member.peer, announced, now_ms) {
                tracing::debug!(peer = %member.peer, %from, reason, "a member passed on is not admitted");
                directory.refuse();
                continue;
            }
            let peer = member.peer;
            if directory.learn(member, now) {
                new.push(peer);
            }
        }
        drop(directory);
        if !new.is_empty() {
            self.directory.announce();
        }
        new
    }

    /// How many members passed on the directory refused: not admitted (no Node-ID work, no
    /// valid certificate), no usable address, or a dial to them failed lately.
    pub fn members_refused(&self) -> u64 {
        self.directory.lock().refused()
    }

    /// Waits until a member new to the directory comes (identify, or
    /// [`Network::learn_members`]); one wake-up may stand for several.
    pub async fn directory_news(&self) {
        self.directory.news.notified().await;
    }

    /// The peers in the routing table (Kademlia buckets).
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, Error> {
        self.call(Command::RoutingTable).await
    }

    /// The addresses the routing table keeps for `peer`: those its latest identify announced,
    /// plus those of our open connections to it (empty when it is not in the table).
    pub async fn addresses(&self, peer: PeerId) -> Result<Vec<Multiaddr>, Error> {
        self.call(|reply| Command::Addresses { peer, reply }).await
    }

    /// The peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.call(Command::ConnectedPeers).await
    }

    /// How this node is connected to `peer` now: directly, only through relays, or not at all.
    pub async fn path(&self, peer: PeerId) -> Result<Option<Path>, Error> {
        self.call(|reply| Command::Path { peer, reply }).await
    }

    /// What this node knows of its own reachability: AutoNAT's verdict, confirmed external
    /// addresses, relayed addresses, whether it serves relay.
    pub async fn nat(&self) -> Result<NatState, Error> {
        self.call(Command::Nat).await
    }

    /// Streams of the overlay's media protocol ([`Config::media_protocol`]) to and from peers,
    /// over whatever connection the peer has (direct or relayed). The carrier of a node's
    /// media: open one with `open_stream(peer, protocol)`, take inbound ones with `accept`
    /// (once per node).
    pub fn media(&self) -> (libp2p_stream::Control, libp2p::StreamProtocol) {
        (self.media.clone(), self.media_protocol.clone())
    }

    /// Sends `frame` to `peer` and returns its response frame. Dials the peer if needed, with
    /// the addresses Kademlia, identify and [`Network::add_address`] know.
    pub async fn request(&self, peer: PeerId, frame: Vec<u8>) -> Result<Vec<u8>, Error> {
        if frame.len() > self.max_frame_size {
            return Err(Error::FrameTooLarge {
                len: frame.len() as u64,
                max: self.max_frame_size,
            });
        }
        self.call(|reply| Command::Request { peer, frame, reply })
            .await?
    }

    /// Remembers an address of `peer` for later dials (it does not enter the routing table:
    /// only peers confirmed to speak this overlay's protocol do).
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), Error> {
        self.call(|reply| Command::AddAddress { peer, addr, reply })
            .await
    }

    /// Stops the task: closes every connection and listener, fails what is pending with
    /// [`Error::Stopped`]. Returns once the swarm is gone; later calls fail with
    /// [`Error::Stopped`].
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.call(Command::Shutdown).await
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }
}

impl Events {
    /// The next event; `None` once the network has stopped. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Event> {
        futures::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        if let Some(event) = self.peers.pop(true) {
            return Some(event);
        }
        match self.rx.try_recv() {
            Ok(event) => {
                self.peers.received(&event);
                Some(event)
            }
            Err(_) => self.peers.pop(false),
        }
    }

    /// Peer changes waiting in their table come first, once the ones sent earlier through
    /// the channel are read (each peer's changes stay in order).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.peers.waker.register(cx.waker());
        if let Some(event) = self.peers.pop(true) {
            return Poll::Ready(Some(event));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.peers.received(&event);
                Poll::Ready(Some(event))
            }
            // Stopped: what waits in the table still comes.
            Poll::Ready(None) => Poll::Ready(self.peers.pop(false)),
            Poll::Pending => match self.peers.pop(false) {
                Some(event) => Poll::Ready(Some(event)),
                None => Poll::Pending,
            },
        }
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.poll_event(cx)
    }
}

impl Responder {
    /// Sends the response frame. Fails with [`Error::FrameTooLarge`] when it is over the limit
    /// (the request then fails at the requester), or [`Error::RequestGone`] when the request
    /// stopped waiting.
    pub fn respond(self, frame: Vec<u8>) -> Result<(), Error> {
        if frame.len() > self.max_frame_size {
            return Err(Error::FrameTooLarge {
                len: frame.len() as u64,
                max: self.max_frame_size,
            });
        }
        self.reply.send(frame).map_err(|_| Error::RequestGone)
    }
}

/// The peer id at the end of `addr` (`.../p2p/<peer id>`), if any.
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(changes: &PeerChanges) -> Vec<(PeerId, bool)> {
        std::iter::from_fn(|| changes.pop(true))
            .map(|event| match event {
                Event::PeerConnected(peer) => (peer, true),
                Event::PeerDisconnected { peer, .. } => (peer, false),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn peer_changes_coalesce_without_losing_a_disconnect() {
        // A full channel: every change waits in the table.
        let (events, _rx) = mpsc::channel(1);
        events
            .try_send(Event::Listening(Multiaddr::empty()))
            .unwrap();
        let changes = PeerChanges::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        // a: known connected, then gone, back, gone: one disconnect.
        changes.report(&events, a, true, false);
        changes.report(&events, b, true, false);
        assert_eq!(drain(&changes), vec![(a, true), (b, true)]);
        for connected in [false, true, false] {
            changes.report(&events, a, connected, false);
        }
        // b: gone and back: both.
        changes.report(&events, b, false, false);
        changes.report(&events, b, true, false);
        // c: came and went unseen: the disconnect only.
        changes.report(&events, c, true, false);
        changes.report(&events, c, false, false);
        assert_eq!(
            drain(&changes),
            vec![(a, false), (b, false), (b, true), (c, false)]
        );
        for _ in 0..1000 {
            changes.report(&events, a, true, false);
            changes.report(&events, a, false, false);
        }
        assert_eq!(drain(&changes), vec![(a, false)]);
        // Peers never heard of that come and go: bounded.
        for _ in 0..MAX_UNHEARD_GONE + 10 {
            let peer = PeerId::random();
            changes.report(&events, peer, true, false);
            changes.report(&events, peer, false, false);
        }
        assert_eq!(drain(&changes).len(), MAX_UNHEARD_GONE);
    }

    #[test]
    fn a_peers_changes_stay_in_order_across_the_channel_and_the_table() {
        let (tx, rx) = mpsc::channel(2);
        let peers = Arc::new(PeerChanges::default());
        let mut events = Events {
            rx,
            peers: peers.clone(),
        };
        let p = PeerId::random();
        peers.report(&tx, p, true, false);
        tx.try_send(Event::Listening(Multiaddr::empty())).unwrap();
        // The channel is full: the disconnect waits in the table, behind the connect.
        peers.report(&tx, p, false, false);
        let read: Vec<String> = std::iter::from_fn(|| events.try_recv())
            .map(|event| match event {
                Event::PeerConnected(_) => "connected",
                Event::PeerDisconnected { .. } => "disconnected",
                _ => "other",
            })
            .map(String::from)
            .collect();
        // The connect first; then the table's changes come before other events.
        assert_eq!(read, ["connected", "disconnected", "other"]);
    }
}
