//! The task that owns the swarm: commands come in from the [`Network`](super::Network)
//! handles, swarm events go through, [`Event`]s go out.
//!
//! Every table here is bounded: pending dials, DHT queries, outbound requests and inbound
//! requests awaiting their answer by [`Config::max_pending`] each; inbound requests per peer
//! and their rate by [`PeerLimits`] (its own bounds are in `limits.rs`); bad-frame counts,
//! connections and members by the connected peers (an entry goes when the peer's last
//! connection closes); the directory by [`Config::max_members`] (its own bounds are in
//! `directory.rs`); peers connecting and disconnecting go to [`PeerChanges`], never lost.

use std::{
    collections::HashMap,
    io,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, dcutr, identify, kad, mdns, relay,
    request_response::{self, Message, OutboundFailure, OutboundRequestId, ResponseChannel},
    swarm::{
        ConnectionId, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot,
};
use tracing::{debug, info, warn};

use super::{
    Config, Error, Event, PeerChanges, Refusal, Responder, SharedDirectory,
    admission::{Admission, announced_certificate},
    behaviour::{Behaviour, BehaviourEvent, Members},
    codec::{FrameTooLarge, Request},
    limits::PeerLimits,
    nat::{NatState, Path, Reachability, Traversal},
    peer_of,
};

/// How long [`Task::start`] waits for every listener to report an address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How many of a peer's identified listen addresses enter the routing table.
const MAX_ADDRS_PER_PEER: usize = 8;
/// How often the task looks again for relays to reserve on, when it needs some.
const RELAY_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Whether a connection that closed with `cause` ended cleanly (see
/// [`Event::PeerDisconnected`]): closed here (`None`: by this node; the idle timeout), or by
/// the peer without an error (a QUIC application close: its idle timeout or its shutdown).
/// A QUIC idle timeout (the peer went silent), a reset or any other error is a failure.
fn closed_cleanly(cause: Option<&libp2p::swarm::ConnectionError>) -> bool {
    use libp2p::swarm::ConnectionError;
    match cause {
        None | Some(ConnectionError::KeepAliveTimeout) => true,
        Some(ConnectionError::IO(error)) => error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<libp2p::quic::Error>())
            // quinn's `ApplicationClosed`; its inner error is private, its text is
            // "closed by peer: <code>".
            .is_some_and(|error| {
                matches!(error, libp2p::quic::Error::Connection(_))
                    && error.to_string().starts_with("closed by peer")
            }),
    }
}

/// What a [`Network`](super::Network) handle asks of the task; each carries its reply channel.
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial {
        addr: Multiaddr,
        reply: Reply<PeerId>,
    },
    Bootstrap(Reply<()>),
    ClosestPeers {
        key: Vec<u8>,
        /// How many peers the query must have heard from (at most Kademlia's k, 20).
        count: NonZeroUsize,
        /// When the query is cut short: it then answers with the closest peers it heard
        /// from so far.
        within: Option<Duration>,
        reply: Reply<Vec<PeerId>>,
    },
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
    Addresses {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    Path {
        peer: PeerId,
        reply: oneshot::Sender<Option<Path>>,
    },
    Nat(oneshot::Sender<NatState>),
    Request {
        peer: PeerId,
        frame: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<()>,
    },
    Shutdown(oneshot::Sender<()>),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A DHT query a caller waits for.
enum Query {
    Bootstrap { reply: Reply<()>, any_ok: bool },
    Closest { reply: Reply<Vec<PeerId>> },
}

/// An inbound request's answer, or its absence (responder dropped, or too late).
struct Answer {
    peer: PeerId,
    channel: ResponseChannel<Vec<u8>>,
    frame: Option<Vec<u8>>,
}

/// The swarm and everything pending on it.
pub(crate) struct Task {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    config: Config,
    kad_protocol: StreamProtocol,
    reload_protocol: StreamProtocol,
    protocol_version: String,
    dials: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    queries: HashMap<kad::QueryId, Query>,
    /// The queries to cut short, each when its time is up: one per query started with a
    /// deadline, kept until that deadline (a query that ended earlier is not touched).
    deadlines: FuturesUnordered<BoxFuture<'static, kad::QueryId>>,
    outbound: HashMap<OutboundRequestId, Reply<Vec<u8>>>,
    inbound: FuturesUnordered<BoxFuture<'static, Answer>>,
    bad_frames: HashMap<PeerId, u32>,
    /// The open connections of each connected peer: whether each is relayed, and the address
    /// we dialled for those we opened directly. Bounded by the connection limits.
    connections: HashMap<PeerId, HashMap<ConnectionId, Link>>,
    /// Peers identify confirmed as of this overlay (the relay server's gate).
    members: Members,
    directory: SharedDirectory,
    /// Which peers are admitted (Node-ID work, enrollment CA).
    admission: Admission,
    nat: Traversal,
    relay_serving: bool,
    /// Per-peer limits on inbound requests.
    limits: PeerLimits,
    /// Makes the answer of a refused request.
    refusal: Refusal,
    /// Inbound requests refused (shared with the handles).
    refused: Arc<AtomicU64>,
    /// Peers connecting and disconnecting, for the reader of the events; never lost.
    peers: Arc<PeerChanges>,
}

/// One open connection.
struct Link {
    relayed: bool,
    /// Whether the peer's address is a loopback one (the peer runs on this machine).
    loopback: bool,
    /// The address we dialled, for a direct connection we opened.
    dialled: Option<Multiaddr>,
}

impl Task {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        config: Config,
        members: Members,
        directory: SharedDirectory,
    ) -> Self {
        let bucket_capacity = config.max_connections as usize * 2 + 64;
        Self {
            limits: PeerLimits::new(
                config.max_pending_per_peer,
                config.peer_request_rate,
                config.peer_request_burst,
                bucket_capacity,
            ),
            refusal: Arc::new(|_: &[u8], _: &Error| None),
            refused: Arc::new(AtomicU64::new(0)),
            peers: Arc::new(PeerChanges::default()),
            connections: HashMap::new(),
            members,
            directory,
            admission: Admission::new(&config),
            nat: Traversal::new(config.relay_reservations),
            relay_serving: config.relay == super::Relay::On,
            swarm,
            commands,
            events,
            kad_protocol: config.kad_protocol(),
            reload_protocol: config.reload_protocol(),
            protocol_version: config.identify_protocol_version(),
            config,
            dials: HashMap::new(),
            queries: HashMap::new(),
            deadlines: FuturesUnordered::new(),
            outbound: HashMap::new(),
            inbound: FuturesUnordered::new(),
            bad_frames: HashMap::new(),
        }
    }

    /// Sets how refused requests are answered, where they are counted, and where peer
    /// changes go.
    pub(crate) fn set_refusal(
        &mut self,
        refusal: Refusal,
        refused: Arc<AtomicU64>,
        peers: Arc<PeerChanges>,
    ) {
        self.refusal = refusal;
        self.refused = refused;
        self.peers = peers;
    }

    /// Listens on every configured address and waits until each listener has an address;
    /// puts the bootstrap peers in the routing table and dials them.
    pub(crate) async fn start(&mut self) -> Result<(), Error> {
        let mut waiting = HashMap::new();
        for addr in self.config.listen.clone() {
            let listener = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            waiting.insert(listener, addr);
        }

        let local = *self.swarm.local_peer_id();
        for addr in self.config.bootstrap.clone() {
            let Some(peer) = peer_of(&addr).filter(|peer| *peer != local) else {
                continue;
            };
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                warn!(%addr, %error, "could not dial a bootstrap peer");
            }
        }

        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while let Some(first) = waiting.values().next().cloned() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| Error::Listen {
                    addr: first,
                    reason: format!("no listen address within {LISTEN_TIMEOUT:?}"),
                })?;
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    waiting.remove(listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    if let Some(addr) = waiting.remove(listener_id) {
                        let reason = match reason {
                            Err(error) => error.to_string(),
                            Ok(()) => "the listener closed".to_owned(),
                        };
                        return Err(Error::Listen { addr, reason });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = waiting.remove(listener_id) {
                        let reason = error.to_string();
                        return Err(Error::Listen { addr, reason });
                    }
                }
                _ => {}
            }
            self.on_swarm_event(event);
        }
        Ok(())
    }

    /// Runs until [`Command::Shutdown`] or until every handle is gone.
    pub(crate) async fn run(mut self) {
        let mut relay_check = tokio::time::interval(RELAY_CHECK_INTERVAL);
        relay_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = relay_check.tick() => self.update_reservations(),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                Some(answer) = self.inbound.next(), if !self.inbound.is_empty() => {
                    self.on_answer(answer);
                }
                Some(id) = self.deadlines.next(), if !self.deadlines.is_empty() => {
                    // Still under way: it ends now and reports the closest peers it heard
                    // from (`on_query_progress`).
                    if self.queries.contains_key(&id)
                        && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id)
                    {
                        query.finish();
                    }
                }
            }
        };
        info!("network stopping");
        // Dropping the swarm closes the listeners and connections; dropping the pending
        // replies fails their callers with `Error::Stopped`.
        drop(self);
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn on_command(&mut self, command: Command) {
        let max_pending = self.config.max_pending;
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::Bootstrap(reply) => {
                if self.queries.len() >= max_pending {
                    let _ = reply.send(Err(busy("DHT queries", max_pending)));
                    return;
                }
                match self.swarm.behaviour_mut().kad.bootstrap() {
                    Ok(id) => {
                        self.queries.insert(
                            id,
                            Query::Bootstrap {
                                reply,
                                any_ok: false,
                            },
                        );
                    }
                    Err(kad::NoKnownPeers()) => {
                        let _ = reply.send(Err(Error::NoKnownPeers));
                    }
                }
            }
            Command::ClosestPeers {
                key,
                count,
                within,
                reply,
            } => {
                if self.queries.len() >= max_pending {
                    let _ = reply.send(Err(busy("DHT queries", max_pending)));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_n_closest_peers(key, count);
                self.queries.insert(id, Query::Closest { reply });
                if let Some(within) = within {
                    self.deadlines.push(Box::pin(async move {
                        tokio::time::sleep(within).await;
                        id
                    }));
                }
            }
            Command::RoutingTable(reply) => {
                let _ = reply.send(self.routing_table());
            }
            Command::Addresses { peer, reply } => {
                let _ = reply.send(self.addresses(&peer));
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Path { peer, reply } => {
                let path = self.connections.get(&peer).map(|links| {
                    if links.values().any(|link| !link.relayed) {
                        Path::Direct
                    } else {
                        Path::Relayed
                    }
                });
                let _ = reply.send(path);
            }
            Command::Nat(reply) => {
                let _ = reply.send(NatState {
                    reachability: self.nat.reachability(),
                    external_addrs: self
                        .swarm
                        .external_addresses()
                        .map(ToString::to_string)
                        .collect(),
                    relayed_addrs: self
                        .nat
                        .relayed_addrs()
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    relay_serving: self.relay_serving,
                });
            }
            Command::Request { peer, frame, reply } => {
                let max = self.config.max_frame_size;
                let refusal = if peer == *self.swarm.local_peer_id() {
                    Some(Error::LocalPeer)
                } else if frame.len() > max {
                    Some(Error::FrameTooLarge {
                        len: frame.len() as u64,
                        max,
                    })
                } else if self.outbound.len() >= max_pending {
                    Some(busy("outbound requests", max_pending))
                } else {
                    None
                };
                if let Some(error) = refusal {
                    let _ = reply.send(Err(error));
                    return;
                }
                // A peer known from the directory only is dialled on the addresses it holds.
                let addrs = if self.swarm.is_connected(&peer) {
                    Vec::new()
                } else {
                    self.directory.lock().addresses(&peer)
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .reload
                    .send_request_with_addresses(&peer, Request::Frame(frame), addrs);
                self.outbound.insert(id, reply);
            }
            Command::AddAddress { peer, addr, reply } => {
                self.swarm.add_peer_address(peer, addr);
                let _ = reply.send(());
            }
            // `run` handles it; kept here so that the match stays exhaustive.
            Command::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
        let local = *self.swarm.local_peer_id();
        let opts = match peer_of(&addr) {
            Some(peer) if peer == local => {
                let _ = reply.send(Err(Error::Dial {
                    target: addr.to_string(),
                    reason: "that is this node's own address".into(),
                }));
                return;
            }
            Some(peer) if self.swarm.is_connected(&peer) => {
                let _ = reply.send(Ok(peer));
                return;
            }
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let max_pending = self.config.max_pending;
        if self.dials.len() >= max_pending {
            let _ = reply.send(Err(busy("dials", max_pending)));
            return;
        }
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(connection, (addr, reply));
            }
            Err(error) => {
                let _ = reply.send(Err(Error::Dial {
                    target: addr.to_string(),
                    reason: error.to_string(),
                }));
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let address = endpoint.get_remote_address();
                // Not `address`: an inbound relayed connection's remote address is the bare
                // `/p2p/<source>`; its local address is the circuit.
                let relayed = endpoint.is_relayed();
                debug!(peer = %peer_id, %address, relayed, "connected");
                let dialled = (endpoint.is_dialer() && !relayed).then(|| address.clone());
                self.connections.entry(peer_id).or_default().insert(
                    connection_id,
                    Link {
                        relayed,
                        loopback: is_loopback(address),
                        dialled,
                    },
                );
                if let Some((_, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    self.peers.report(&self.events, peer_id, true, false);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, ?cause, "connection closed");
                if let Some(links) = self.connections.get_mut(&peer_id) {
                    links.remove(&connection_id);
                    if !links.values().any(|link| link.dialled.is_some()) {
                        self.nat.peer_gone(&peer_id);
                    }
                    if !links.values().any(|link| !link.relayed) {
                        self.swarm.behaviour_mut().autonat.remove_server(&peer_id);
                    }
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    self.members.remove(&peer_id);
                    self.bad_frames.remove(&peer_id);
                    let clean = closed_cleanly(cause.as_ref());
                    self.peers.report(&self.events, peer_id, false, clean);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(peer = ?peer_id, %error, "outgoing connection failed");
                // A member of the directory that cannot be dialled leaves it (not one that is
                // connected anyway, nor a dial given up for a reason of our own).
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                    && !matches!(
                        error,
                        libp2p::swarm::DialError::DialPeerConditionFalse(_)
                            | libp2p::swarm::DialError::Aborted
                            | libp2p::swarm::DialError::Denied { .. }
                            | libp2p::swarm::DialError::LocalPeerId { .. }
                    )
                    && self.directory.lock().failed(&peer, Instant::now())
                {
                    debug!(%peer, "left the directory: it cannot be dialled");
                }
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial {
                        target: addr.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                debug!(%send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if self.nat.listening(listener_id, &address) {
                    info!(%address, "reserved a slot on a relay: reachable through it");
                    // A reservation asked for before the node turned public goes now.
                    self.update_reservations();
                } else {
                    info!(%address, "listening");
                    // An operator who turns the relay on declares the node reachable where it
                    // listens: those are the addresses its reservations hand out.
                    if self.config.relay == super::Relay::On {
                        self.swarm.add_external_address(address.clone());
                    }
                }
                self.emit(Event::Listening(address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                if let Some(relay) = self.nat.listener_closed(listener_id, Instant::now()) {
                    info!(%relay, ?reason, "a relay reservation ended; trying another relay");
                    self.update_reservations();
                } else {
                    warn!(?addresses, ?reason, "listener closed");
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "reachable from outside at this address");
            }
            SwarmEvent::ListenerError { error, .. } => {
                warn!(%error, "listener error");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Kad(event) => self.on_kad_event(event),
            BehaviourEvent::Identify(event) => self.on_identify_event(event),
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Mdns(event) => self.on_mdns_event(event),
            BehaviourEvent::RelayClient(event) => debug!(?event, "relay client"),
            BehaviourEvent::Relay(event) => self.on_relay_event(event),
            BehaviourEvent::Dcutr(event) => self.on_dcutr_event(event),
            BehaviourEvent::Autonat(event) => self.on_autonat_event(event),
            BehaviourEvent::Reload(event) => self.on_reload_event(event),
            // libp2p-stream reports nothing; its streams reach `Network::media`'s users.
            BehaviourEvent::Media(()) => {}
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => {
                debug!(%peer, "entered the routing table");
                self.emit(Event::RoutingUpdated(peer));
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query_progress(id, result, step.last),
            _ => {}
        }
    }

    fn on_query_progress(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        // Queries nobody waits for (kad's own periodic bootstrap) are not in the table.
        let Some(query) = self.queries.get_mut(&id) else {
            return;
        };
        if let (Query::Bootstrap { any_ok, .. }, kad::QueryResult::Bootstrap(Ok(_))) =
            (&mut *query, &result)
        {
            *any_ok = true;
        }
        if !last {
            return;
        }
        match (self.queries.remove(&id), result) {
            (Some(Query::Bootstrap { reply, any_ok }), _) => {
                let _ = reply.send(if any_ok {
                    Ok(())
                } else {
                    Err(Error::QueryTimeout)
                });
            }
            (Some(Query::Closest { reply }), kad::QueryResult::GetClosestPeers(result)) => {
                let answer = match result {
                    Ok(kad::GetClosestPeersOk { key, peers }) => Ok(self.nearest(key, peers)),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) if peers.is_empty() => {
                        Err(Error::QueryTimeout)
                    }
                    Err(kad::GetClosestPeersError::Timeout { key, peers }) => {
                        warn!(found = peers.len(), "closest-peers lookup timed out");
                        Ok(self.nearest(key, peers))
                    }
                };
                let _ = reply.send(answer);
            }
            (Some(Query::Closest { reply }), _) => {
                let _ = reply.send(Err(Error::QueryTimeout));
            }
            (None, _) => {}
        }
    }

    /// The admitted ones of `peers` and this node, nearest to `key` first, at most k: a peer
    /// some other node told us of is used only when its Node-ID carries the overlay's work
    /// and, with an enrollment CA, once identify showed its certificate.
    fn nearest(&self, key: Vec<u8>, peers: Vec<kad::PeerInfo>) -> Vec<PeerId> {
        let target = kad::KBucketKey::new(key);
        let mut nearest: Vec<PeerId> = peers
            .into_iter()
            .map(|peer| peer.peer_id)
            .filter(|peer| admits(&self.admission, &self.members, &self.directory, peer))
            .chain([*self.swarm.local_peer_id()])
            .collect();
        nearest.sort_by_cached_key(|peer| target.distance(&kad::KBucketKey::from(*peer)));
        nearest.dedup();
        nearest.truncate(kad::K_VALUE.get());
        nearest
    }

    fn routing_table(&mut self) -> Vec<PeerId> {
        let mut peers = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            peers.extend(bucket.iter().map(|entry| *entry.node.key.preimage()));
        }
        peers
    }

    /// The addresses Kademlia keeps for `peer` (none when it is not in the routing table).
    fn addresses(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let Some(bucket) = kad.kbucket(*peer) else {
            return Vec::new();
        };
        bucket
            .iter()
            .find(|entry| entry.node.key.preimage() == peer)
            .map(|entry| entry.node.value.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops from Kademlia the addresses of `peer` that its latest identify no longer
    /// announces (`fresh`), except those our open connections to it were dialled on, so the
    /// addresses kept per peer stay within [`MAX_ADDRS_PER_PEER`] plus its connections however
    /// often it changes them.
    fn forget_stale_addresses(&mut self, peer: &PeerId, fresh: &[Multiaddr]) {
        // Kademlia keeps every address with a `/p2p/<peer>` suffix.
        let with_peer = |addr: &Multiaddr| addr.clone().with_p2p(*peer).ok();
        let mut keep: Vec<Multiaddr> = fresh.iter().filter_map(with_peer).collect();
        if let Some(links) = self.connections.get(peer) {
            keep.extend(
                links
                    .values()
                    .filter_map(|link| link.dialled.as_ref().and_then(with_peer)),
            );
        }
        let stale: Vec<Multiaddr> = self
            .addresses(peer)
            .into_iter()
            .filter(|addr| !keep.contains(addr))
            .collect();
        let kad = &mut self.swarm.behaviour_mut().kad;
        for addr in &stale {
            // Removing a peer's last address would drop it from the table; the fresh ones
            // were added first, so it keeps those.
            kad.remove_address(peer, addr);
        }
    }

    fn on_relay_event(&mut self, event: relay::Event) {
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                info!(peer = %src_peer_id, "relay: reservation granted");
            }
            relay::Event::ReservationReqDenied { src_peer_id, .. } => {
                info!(peer = %src_peer_id, "relay: reservation refused");
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                debug!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit opened");
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                ..
            } => {
                info!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit refused");
            }
            event => debug!(?event, "relay server"),
        }
    }

    fn on_dcutr_event(&mut self, event: dcutr::Event) {
        let dcutr::Event {
            remote_peer_id,
            result,
        } = event;
        match &result {
            Ok(_) => info!(peer = %remote_peer_id, "hole punching: direct connection"),
            Err(error) => info!(peer = %remote_peer_id, %error, "hole punching failed; relayed"),
        }
        self.emit(Event::HolePunch {
            peer: remote_peer_id,
            direct: result.is_ok(),
        });
    }

    fn on_autonat_event(&mut self, event: autonat::Event) {
        let autonat::Event::StatusChanged { new, .. } = event else {
            debug!(?event, "autonat");
            return;
        };
        let reachability = match &new {
            autonat::NatStatus::Public(_) => Reachability::Public,
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        };
        info!(status = ?new, "AutoNAT: reachability changed");
        self.nat.set_reachability(reachability);
        self.update_reservations();
        self.emit(Event::Reachability(reachability));
    }

    /// Makes and gives up relay reservations as [`Traversal`] decides, and notes whether this
    /// node serves relay now.
    fn update_reservations(&mut self) {
        let serve = match self.config.relay {
            super::Relay::On => true,
            super::Relay::Auto => self.nat.reachability() == Reachability::Public,
            _ => false,
        };
        if serve != self.relay_serving
            && let Some(relay) = self.swarm.behaviour_mut().relay.as_mut()
        {
            relay.set_status(Some(if serve {
                relay::Status::Enable
            } else {
                relay::Status::Disable
            }));
            info!(serving = serve, "relay for the overlay's nodes behind NAT");
            self.relay_serving = serve;
        }
        for listener in self.nat.reservations_to_drop() {
            self.swarm.remove_listener(listener);
        }
        let now = Instant::now();
        for (relay, addr) in self.nat.reservations_to_make(now) {
            match self.swarm.listen_on(addr.clone()) {
                Ok(listener) => {
                    debug!(%relay, %addr, "asking a relay for a reservation");
                    self.nat.reserving(relay, listener);
                }
                Err(error) => {
                    debug!(%relay, %addr, %error, "could not listen through a relay");
                    self.nat.reservation_failed(relay, now);
                }
            }
        }
    }

    fn on_identify_event(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        let ours = info.protocol_version == self.protocol_version
            && info.protocols.contains(&self.kad_protocol);
        let admitted = if ours {
            self.admission
                .check(&peer_id, &info.agent_version, now_ms())
                .inspect_err(|reason| {
                    info!(peer = %peer_id, reason, "a peer of this overlay is not admitted; kept out of the routing table");
                })
                .is_ok()
        } else {
            false
        };
        let member = ours && admitted;
        if member {
            self.members.insert(peer_id);
            // AutoNAT asks only peers of the overlay we reach directly: over a relayed
            // connection a server sees the relay's address as ours, and its dial-back fails.
            let direct = self
                .connections
                .get(&peer_id)
                .is_some_and(|links| links.values().any(|link| !link.relayed));
            if direct {
                self.swarm.behaviour_mut().autonat.add_server(peer_id, None);
            }
            if info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
                && let Some(addr) = self
                    .connections
                    .get(&peer_id)
                    .and_then(|links| links.values().find_map(|link| link.dialled.clone()))
            {
                self.nat.add_candidate(peer_id, addr);
                self.update_reservations();
            }
        }
        // A peer that listens on every interface announces its loopback addresses too; they
        // name this machine's loopback, not the peer's, unless the peer is on this machine.
        let local_peer = self
            .connections
            .get(&peer_id)
            .is_some_and(|links| links.values().any(|link| link.loopback));
        let dialled: Vec<Multiaddr> = self
            .connections
            .get(&peer_id)
            .into_iter()
            .flat_map(|links| links.values().filter_map(|link| link.dialled.clone()))
            .take(MAX_ADDRS_PER_PEER)
            .collect();
        let kad = &mut self.swarm.behaviour_mut().kad;
        if member {
            let addrs: Vec<_> = info
                .listen_addrs
                .into_iter()
                .filter(|addr| local_peer || !is_loopback(addr))
                .take(MAX_ADDRS_PER_PEER)
                .collect();
            for addr in &addrs {
                kad.add_address(&peer_id, addr.clone());
            }
            if addrs.is_empty() {
                // A member that announces no address we can use is still routable on the
                // address we dialled it on (Kademlia inserts no peer by itself: see behaviour).
                for addr in &dialled {
                    kad.add_address(&peer_id, addr.clone());
                }
            } else {
                self.forget_stale_addresses(&peer_id, &addrs);
            }
            // Kept where it was checked (an overlay with a CA), so that it travels with the member.
            let certificate = announced_certificate(&info.agent_version)
                .filter(|_| self.admission.needs_certificate())
                .map(str::to_owned);
            let member = super::Member {
                peer: peer_id,
                addrs: addrs.iter().cloned().chain(dialled).collect(),
                certificate,
            };
            if self.directory.lock().seen(member, Instant::now()) {
                self.directory.announce();
            }
            self.emit(Event::Identified {
                peer: peer_id,
                listen_addrs: addrs,
            });
        } else {
            if !ours {
                debug!(
                    peer = %peer_id,
                    protocol_version = %info.protocol_version,
                    agent = %info.agent_version,
                    "identified a peer of another overlay; kept out of the routing table"
                );
            }
            kad.remove_peer(&peer_id);
            self.members.remove(&peer_id);
        }
    }

    fn on_mdns_event(&mut self, event: mdns::Event) {
        let mdns::Event::Discovered(found) = event else {
            return;
        };
        for (peer, addr) in found {
            if self.swarm.is_connected(&peer) {
                continue;
            }
            self.swarm.add_peer_address(peer, addr.clone());
            // Dial only while the routing table is small: mDNS also finds libp2p nodes that
            // are not ours (identify then keeps them out), and a crowded network must not make
            // us dial everyone.
            if self.routing_table().len() < kad::K_VALUE.get() {
                let opts = DialOpts::peer_id(peer).addresses(vec![addr]).build();
                if let Err(error) = self.swarm.dial(opts) {
                    debug!(%peer, %error, "could not dial a peer found by mDNS");
                }
            }
        }
    }

    fn on_reload_event(&mut self, event: request_response::Event<Request, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request: Request::Frame(frame),
                        channel,
                        ..
                    },
                ..
            } => self.on_request(peer, frame, channel),
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request: Request::TooLarge(too_large),
                        ..
                    },
                ..
            } => {
                // Dropping the channel unanswered fails the request at its sender.
                debug!(%peer, %too_large, "refused an inbound request");
                self.bad_frame(peer);
            }
            request_response::Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "request failed");
                let error = match error {
                    OutboundFailure::DialFailure => Error::Dial {
                        target: peer.to_string(),
                        reason: "no known address of the peer answered".into(),
                    },
                    OutboundFailure::Timeout => Error::Timeout { peer },
                    OutboundFailure::ConnectionClosed => Error::ConnectionClosed { peer },
                    OutboundFailure::UnsupportedProtocols => Error::UnsupportedProtocol {
                        peer,
                        protocol: self.reload_protocol.to_string(),
                    },
                    OutboundFailure::Io(error) => self.stream_error(peer, error),
                };
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(error));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// The error of a failed outbound stream; a response over the limit counts as a bad frame.
    fn stream_error(&mut self, peer: PeerId, error: io::Error) -> Error {
        match FrameTooLarge::find(&error) {
            Some(&FrameTooLarge { len, max }) => {
                if error.kind() == io::ErrorKind::InvalidData {
                    self.bad_frame(peer);
                }
                Error::FrameTooLarge { len, max }
            }
            None => Error::Stream {
                peer,
                source: error,
            },
        }
    }

    fn on_request(&mut self, peer: PeerId, frame: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        if self.inbound.len() >= self.config.max_pending {
            warn!(%peer, "too many inbound requests waiting for an answer; request refused");
            let error = busy("inbound requests", self.config.max_pending);
            self.refuse(peer, &frame, channel, &error);
            return;
        }
        if let Err(why) = self.limits.admit(peer, Instant::now()) {
            debug!(%peer, %why, "request over the peer's limits refused");
            let error = Error::PeerLimit {
                peer,
                why: why.to_string(),
            };
            self.refuse(peer, &frame, channel, &error);
            return;
        }
        let (reply, answer) = oneshot::channel();
        let responder = Responder {
            reply,
            max_frame_size: self.config.max_frame_size,
        };
        let event = Event::Request {
            peer,
            frame,
            responder,
        };
        if let Err(error) = self.events.try_send(event) {
            self.limits.done(&peer);
            if let TrySendError::Full(Event::Request { frame, .. }) = error {
                warn!(%peer, "the event channel is full: request refused");
                let error = busy("events for the node", self.config.event_buffer);
                self.refuse(peer, &frame, channel, &error);
            }
            return;
        }
        let timeout = self.config.request_timeout;
        self.inbound.push(Box::pin(async move {
            let frame = tokio::time::timeout(timeout, answer)
                .await
                .ok()
                .and_then(Result::ok);
            Answer {
                peer,
                channel,
                frame,
            }
        }));
    }

    /// Answers a refused request with the refusal frame (or fails it at its sender), and
    /// counts it.
    fn refuse(
        &mut self,
        peer: PeerId,
        frame: &[u8],
        channel: ResponseChannel<Vec<u8>>,
        error: &Error,
    ) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        // Dropping the channel instead fails the request at the requester.
        if let Some(answer) = (self.refusal)(frame, error)
            && answer.len() <= self.config.max_frame_size
            && self
                .swarm
                .behaviour_mut()
                .reload
                .send_response(channel, answer)
                .is_err()
        {
            debug!(%peer, "the requester stopped waiting before its refusal");
        }
    }

    fn on_answer(&mut self, answer: Answer) {
        let Answer {
            peer,
            channel,
            frame,
        } = answer;
        self.limits.done(&peer);
        match frame {
            Some(frame) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .reload
                    .send_response(channel, frame)
                    .is_err()
                {
                    debug!(%peer, "the requester stopped waiting before the answer");
                }
            }
            None => debug!(%peer, "inbound request left unanswered"),
        }
    }

    fn bad_frame(&mut self, peer: PeerId) {
        if !self.swarm.is_connected(&peer) {
            return;
        }
        let count = self.bad_frames.entry(peer).or_insert(0);
        *count += 1;
        let count = *count;
        warn!(%peer, count, "peer sent a frame over the size limit");
        self.emit(Event::BadFrame { peer });
        if count >= self.config.max_bad_frames {
            warn!(%peer, count, "disconnecting a peer that sends bad frames");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Queues an event for the reader without ever waiting; false when it was dropped.
    fn emit(&self, event: Event) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                warn!("the event channel is full: an event was dropped; read Events promptly");
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// Whether `peer` may be used: the Node-ID's work, and with an enrollment CA membership
/// (identify showed a valid certificate, or the directory took it with one).
pub(crate) fn admits(
    admission: &Admission,
    members: &Members,
    directory: &SharedDirectory,
    peer: &PeerId,
) -> bool {
    admission.has_work(peer)
        && (!admission.needs_certificate()
            || members.contains(peer)
            || directory.lock().contains(peer))
}

/// The wall clock in ms since the Unix epoch (certificates' expiry).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64)
}

/// Whether `addr` starts with a loopback IP address.
pub(crate) fn is_loopback(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

fn busy(what: &'static str, limit: usize) -> Error {
    Error::Busy { what, limit }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::swarm::ConnectionError;

    #[test]
    fn idle_and_local_closes_are_clean_and_errors_are_not() {
        assert!(closed_cleanly(None));
        assert!(closed_cleanly(Some(&ConnectionError::KeepAliveTimeout)));
        let reset = ConnectionError::IO(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(!closed_cleanly(Some(&reset)));
        let other = ConnectionError::IO(io::Error::other("closed by peer: 0"));
        assert!(
            !closed_cleanly(Some(&other)),
            "only QUIC's own error counts"
        );
    }
}
