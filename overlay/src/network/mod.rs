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
//! Invariants: every channel and every table of pending operations is bounded
//! ([`Config::max_pending`], [`Config::event_buffer`]); the task never waits for the reader of
//! [`Events`] (when that channel is full, events are dropped and logged); nodes of overlays
//! with different names never enter each other's routing tables, because they speak different
//! Kademlia protocols and identify only feeds peers that speak ours.

mod admission;
mod behaviour;
mod codec;
mod config;
mod error;
mod nat;
mod task;

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::Stream;
use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

pub use config::{Config, Relay, RelayLimits};
pub use error::Error;
pub use nat::{NatState, Path, Reachability};

use task::{Command, Task};

/// Capacity of the command channel from the handles to the task.
const COMMAND_BUFFER: usize = 64;

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
    admission: admission::Admission,
    members: behaviour::Members,
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
/// channel is full, new events are dropped (a dropped request fails at its requester).
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Event>);

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
    /// The first connection to a peer opened.
    PeerConnected(PeerId),
    /// A peer of this overlay told its listen addresses (identify): where to reach it again,
    /// for instance after a restart.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its listen addresses (at most a few).
        listen_addrs: Vec<Multiaddr>,
    },
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
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
    pub async fn start(keypair: Keypair, config: Config) -> Result<(Network, Events), Error> {
        config.validate()?;
        let local_peer_id = keypair.public().to_peer_id();
        let members = behaviour::Members::default();
        let swarm = behaviour::build_swarm(keypair, &config, &members)?;
        let media = swarm.behaviour().media.new_control();
        let (commands, command_rx) = mpsc::channel(COMMAND_BUFFER);
        let (event_tx, event_rx) = mpsc::channel(config.event_buffer);
        let span = tracing::info_span!("network", peer = %local_peer_id, overlay = %config.overlay);
        let network = Network {
            commands,
            local_peer_id,
            max_frame_size: config.max_frame_size,
            media,
            media_protocol: config.media_protocol(),
            admission: admission::Admission::new(&config),
            members: members.clone(),
        };

        let mut task = Task::new(swarm, command_rx, event_tx, config, members);
        task.start().instrument(span.clone()).await?;
        tokio::spawn(task.run().instrument(span));
        Ok((network, Events(event_rx)))
    }

    /// This node's peer id (its Node-ID).
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
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
        self.call(|reply| Command::ClosestPeers { key, reply })
            .await?
    }

    /// Whether `peer` may be used as a replica or a next hop: its Node-ID carries the
    /// overlay's work ([`Config::node_id_work`]) and, in an overlay with an enrollment CA,
    /// identify showed its certificate ([`Config::enrollment_ca`]).
    pub fn admits(&self, peer: &PeerId) -> bool {
        task::admits(&self.admission, &self.members, peer)
    }

    /// The peers in the routing table (Kademlia buckets).
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, Error> {
        self.call(Command::RoutingTable).await
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
    /// The next event; `None` once the network has stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.poll_recv(cx)
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
