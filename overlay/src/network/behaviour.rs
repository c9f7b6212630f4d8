//! The composed libp2p behaviour and the swarm built around it.

use std::num::NonZeroUsize;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, autonat, connection_limits, dcutr, identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    mdns, noise, ping, relay,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp, yamux,
};

use super::{Config, Error, Relay, codec::FrameCodec};

/// Every protocol a node speaks. The connection limits come first, so that a connection over
/// the limit is denied before any other behaviour sees it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) reload: request_response::Behaviour<FrameCodec>,
    pub(crate) media: libp2p_stream::Behaviour,
}

/// The connected peers that identify confirmed as members of this overlay. The relay server
/// asks it before it grants a reservation or opens a circuit, so a relay serves its own
/// overlay only. Bounded by the connected peers: the task removes a peer when its last
/// connection closes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Members(Arc<Mutex<HashSet<PeerId>>>);

impl Members {
    pub(crate) fn insert(&self, peer: PeerId) {
        self.lock().insert(peer);
    }

    pub(crate) fn remove(&self, peer: &PeerId) {
        self.lock().remove(peer);
    }

    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.lock().contains(peer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PeerId>> {
        // The set stays consistent whatever panicked while holding it: take it back.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Members {
    /// A relay rate limiter that lets members pass and refuses everyone else.
    fn gate(&self) -> Box<dyn relay::RateLimiter> {
        let members = self.clone();
        Box::new(move |peer: PeerId, _addr: &Multiaddr, _now| {
            let member = members.contains(&peer);
            if !member {
                tracing::debug!(%peer, "relay refused to a peer that is not of this overlay");
            }
            member
        })
    }
}

/// Builds the swarm: TCP (noise, yamux), QUIC and the relay client transport, with the
/// behaviours of [`Behaviour`]. The config must have been validated.
pub(crate) fn build_swarm(
    keypair: Keypair,
    config: &Config,
    members: &Members,
) -> Result<Swarm<Behaviour>, Error> {
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| Error::Setup(Box::new(e)))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| Error::Setup(Box::new(e)))?
        .with_behaviour(|key, relay_client| Behaviour::new(key, relay_client, config, members))
        .map_err(|e| Error::Setup(Box::new(e)))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .build();
    Ok(swarm)
}

impl Behaviour {
    fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &Config,
        members: &Members,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let peer = key.public().to_peer_id();

        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_connections))
            .with_max_pending_outgoing(Some(config.max_connections));

        let mut kad_config = kad::Config::new(config.kad_protocol());
        kad_config
            .set_query_timeout(config.query_timeout)
            .set_kbucket_size(NonZeroUsize::new(config.kbucket_size).unwrap_or(NonZeroUsize::MIN))
            .set_substreams_timeout(config.request_timeout)
            // We keep no Kademlia records (the overlay's data lives in its own store): records
            // and provider announcements from peers are reported and dropped, never stored.
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_periodic_bootstrap_interval(Some(config.refresh_interval))
            // A connected peer enters the routing table only when identify shows it a member
            // (the task adds it then): Kademlia's own insert on connection raced identify's
            // verdict and let a peer without a certificate back in after it was removed.
            .set_kbucket_inserts(kad::BucketInserts::Manual)
            // S/Kademlia's disjoint lookup paths: a query for a resource's closest peers
            // follows several paths that share no peer, so one party's nodes on one path
            // cannot hide the true closest peers.
            .disjoint_query_paths(true);
        let mut kad = kad::Behaviour::with_config(peer, MemoryStore::new(peer), kad_config);
        // Always answer DHT queries; without this, kad waits for a confirmed external address.
        kad.set_mode(Some(kad::Mode::Server));

        let identify = identify::Behaviour::new(
            identify::Config::new(config.identify_protocol_version(), key.public())
                .with_agent_version(super::admission::agent_version(config))
                .with_push_listen_addr_updates(true),
        );

        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer)?)
        } else {
            None
        };
        let relay = (config.relay != Relay::Off).then(|| {
            let limits = config.relay_limits;
            // libp2p's rate limiters (per peer and per IP address) stay; ours comes first.
            let mut relay_config = relay::Config {
                max_reservations: limits.max_reservations,
                max_reservations_per_peer: limits.max_reservations_per_peer,
                reservation_duration: limits.reservation_duration,
                max_circuits: limits.max_circuits,
                max_circuits_per_peer: limits.max_circuits_per_peer,
                max_circuit_duration: limits.max_circuit_duration,
                max_circuit_bytes: limits.max_circuit_bytes,
                ..relay::Config::default()
            };
            relay_config
                .reservation_rate_limiters
                .insert(0, members.gate());
            relay_config
                .circuit_src_rate_limiters
                .insert(0, members.gate());
            let mut relay = relay::Behaviour::new(peer, relay_config);
            // Auto: the task turns it on while AutoNAT finds the node public. (libp2p's own
            // automatic mode also counts relayed addresses as external: a node behind NAT
            // would advertise itself as a relay.)
            relay.set_status(Some(if config.relay == Relay::On {
                relay::Status::Enable
            } else {
                relay::Status::Disable
            }));
            relay
        });

        let autonat = autonat::Behaviour::new(
            peer,
            autonat::Config {
                boot_delay: config.autonat_boot_delay,
                retry_interval: config.autonat_interval,
                // One failed or successful dial-back is enough to change our mind: a test lab
                // and a small overlay have few servers to ask.
                confidence_max: 1,
                // The task names the servers: directly connected peers of this overlay.
                use_connected: false,
                // A server that failed once may be asked again at the next probe: a small
                // overlay has few servers.
                throttle_server_period: config.autonat_interval / 2,
                // Overlays run on private networks too (and the lab on documentation ranges).
                only_global_ips: false,
                timeout: config.request_timeout,
                ..autonat::Config::default()
            },
        );

        let reload = request_response::Behaviour::with_codec(
            FrameCodec::new(config.max_frame_size),
            [(config.reload_protocol(), ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(config.request_timeout),
        );

        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            kad,
            identify,
            // Besides liveness: its timer wakes each connection's task every 15 s, and only
            // then does libp2p see that an idle connection may close
            // (`Config::idle_connection_timeout`).
            ping: ping::Behaviour::default(),
            mdns: mdns.into(),
            relay_client,
            relay: relay.into(),
            dcutr: dcutr::Behaviour::new(peer),
            autonat,
            reload,
            media: libp2p_stream::Behaviour::new(),
        })
    }
}
