//! The network's typed configuration.

use std::time::Duration;

use libp2p::{Multiaddr, StreamProtocol, identity::PublicKey};

use super::Error;
use crate::identity::{MAX_NODE_ID_WORK, NodeCertificate};

/// Longest overlay name accepted; it becomes part of every protocol name.
const MAX_OVERLAY_NAME: usize = 64;
/// Largest frame size accepted: the length prefix is a `u32`, and 16 MiB is already far more
/// than any RELOAD-style message needs.
const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// How the overlay network is set up: which overlay to join, where to listen, whom to ask first,
/// and the limits that keep a node's state bounded.
///
/// Start from [`Config::default`] and change what you need with the `with_*` methods; the values
/// are checked by [`Config::validate`] when the network starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The overlay's name. It is part of every protocol name (`/p2psip/<name>/kad/1.0.0`,
    /// `/p2psip/<name>/reload/1`), so nodes of overlays with different names never mix.
    /// Letters, digits, `-`, `_` and `.`, at most 64 characters. Default `p2psip`.
    pub overlay: String,
    /// The addresses to listen on. Default: QUIC on `/ip4/127.0.0.1/udp/0/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, each with its `/p2p/<peer id>` suffix. They are dialled at start
    /// and put in the routing table. Default: none.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS. Default on.
    pub mdns: bool,
    /// The largest request or response frame, in bytes, sent or accepted. Default 64 KiB.
    pub max_frame_size: usize,
    /// The most established connections, all peers together. Default 512. A node over this
    /// limit refuses new connections, the dials of other nodes' lookups too: with 128 (the
    /// default before), nodes of a 128-node testnet sat at the limit once settled, and the
    /// lookups of the last nodes to join could not reach the replica sets (7 of 100 fetches
    /// missed an entry stored a moment before; 0 with 512). Idle connections close
    /// ([`Config::idle_connection_timeout`]), so the open ones are those in use.
    pub max_connections: u32,
    /// The most established connections to one peer. Default 8: one direct, one relayed,
    /// one being upgraded by hole punching, and the short-lived ones of AutoNAT dial-backs
    /// both ways (with 3, a dial-back was refused by this limit and a public node called
    /// itself private).
    pub max_connections_per_peer: u32,
    /// How long a request waits for its response (and an inbound request for its answer).
    /// Default 10 s.
    pub request_timeout: Duration,
    /// How long a DHT query (bootstrap, closest peers) may run. Default 30 s.
    pub query_timeout: Duration,
    /// How many peers each bucket of the Kademlia routing table keeps (Kademlia's `k` is
    /// 20). Default 128: in an overlay of up to about 128 nodes every node can know every
    /// other, so that the peers a node believes closest to a resource are its replica set
    /// and a lookup costs one round trip (with 20, about a quarter of lookups there; at N
    /// nodes the share falls as k / N grows smaller: `overlay/tests/sim.rs`). A table holds
    /// at most as many peers as there are; each entry is a peer id and its few addresses.
    /// At most [`MAX_KBUCKET_SIZE`].
    pub kbucket_size: usize,
    /// How long a connection with nothing to do stays open. Default 60 s. An idle overlay
    /// closes its connections: each open one costs keep-alives (QUIC's every 5 s, libp2p's
    /// ping every 15 s) and memory, and Kademlia dials a peer again when it needs it. The
    /// ping is what closes them: libp2p looks at a connection's idleness only when its task
    /// wakes, and the relay server's handler holds a connection open for 10 s after its
    /// last use without waking it after; with no ping, idle connections stayed open for
    /// good (64 idle nodes kept all their 63 connections each).
    pub idle_connection_timeout: Duration,
    /// How often Kademlia refreshes the routing table with a bootstrap (a lookup of this
    /// node's own id, then one per bucket farther out, each dialling the peers it asks).
    /// Default 30 min: libp2p's 5 min made 1,000 idle nodes run three bootstraps a second;
    /// lookups, Route messages and joining peers keep the table fresh in between, and
    /// Kademlia's paper refreshes a bucket after an hour without a lookup.
    pub refresh_interval: Duration,
    /// The most members the node's directory holds: peers it knows without a connection to
    /// each (see `directory.rs`), so that on an overlay larger than its Kademlia table it still
    /// knows the replica set of a resource. Default 4096; 0 turns the directory off.
    pub max_members: usize,
    /// Whether this node serves circuit relay v2 to peers of its overlay behind NAT. Default
    /// [`Relay::Auto`]: once AutoNAT confirms a public address.
    pub relay: Relay,
    /// The caps of the relay server: reservations, circuits, and how long and how much one
    /// circuit may carry.
    pub relay_limits: RelayLimits,
    /// On how many relays a node that AutoNAT finds unreachable reserves a slot (and publishes
    /// the relayed addresses). 0 never reserves. Default 2.
    pub relay_reservations: usize,
    /// How AutoNAT probes this node's reachability: first probe after `autonat_boot_delay`,
    /// again every `autonat_interval` while the answer is unknown or changes. Defaults 2 s and
    /// 30 s.
    pub autonat_boot_delay: Duration,
    /// See [`Config::autonat_boot_delay`].
    pub autonat_interval: Duration,
    /// How many bad frames (over the size limit) a peer may send before it is disconnected.
    /// Default 3.
    pub max_bad_frames: u32,
    /// The most operations of each kind waiting at once: outbound requests awaiting their
    /// response, inbound requests awaiting their answer, dials, DHT queries. Default 256.
    pub max_pending: usize,
    /// How many events wait for the reader of [`Events`](super::Events); when it is full, new
    /// requests are refused as busy (peers coming and going are never lost: they wait in a
    /// table of their own). Default 256.
    pub event_buffer: usize,
    /// The most inbound requests of one peer waiting for their answer at once, so that one
    /// peer cannot take every one of the [`Config::max_pending`] slots. Default 32.
    pub max_pending_per_peer: usize,
    /// How many requests one peer may send per second, on average (a token bucket per peer).
    /// Default 200.
    pub peer_request_rate: u32,
    /// How many requests one peer may send at once above its rate (the bucket's size).
    /// Default 400.
    pub peer_request_burst: u32,
    /// The overlay's enrollment CA: when set, a peer enters the routing table, the replica
    /// sets and the relay's members only with a Node-ID certificate from it
    /// ([`NodeCertificate`], announced through identify). Default none: an open overlay.
    pub enrollment_ca: Option<PublicKey>,
    /// This node's certificate from the enrollment CA, announced to its peers. Default none.
    pub certificate: Option<NodeCertificate>,
    /// How many bits of work a Node-ID must carry to be used
    /// ([`crate::identity::node_id_work`], S/Kademlia's static puzzle); the node's own key is
    /// made with that much. Every node of one overlay must use the same value. At most
    /// [`MAX_NODE_ID_WORK`]. Default 0.
    pub node_id_work: u32,
}

/// The largest [`Config::kbucket_size`]: 256 buckets of this many peers bound the routing
/// table.
pub const MAX_KBUCKET_SIZE: usize = 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            overlay: "p2psip".to_owned(),
            listen: vec![default_listen()],
            bootstrap: Vec::new(),
            mdns: true,
            max_frame_size: 64 * 1024,
            max_connections: 512,
            max_connections_per_peer: 8,
            request_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            kbucket_size: 128,
            idle_connection_timeout: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(30 * 60),
            max_members: 4096,
            relay: Relay::Auto,
            relay_limits: RelayLimits::default(),
            relay_reservations: 2,
            autonat_boot_delay: Duration::from_secs(2),
            autonat_interval: Duration::from_secs(30),
            max_bad_frames: 3,
            max_pending: 256,
            event_buffer: 256,
            max_pending_per_peer: 32,
            peer_request_rate: 200,
            peer_request_burst: 400,
            enrollment_ca: None,
            certificate: None,
            node_id_work: 0,
        }
    }
}

impl Config {
    /// Sets the overlay name.
    pub fn with_overlay(mut self, name: impl Into<String>) -> Self {
        self.overlay = name.into();
        self
    }

    /// Replaces the listen addresses.
    pub fn with_listen(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self
    }

    /// Replaces the bootstrap addresses (each with its `/p2p/<peer id>`).
    pub fn with_bootstrap(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.bootstrap = addrs.into_iter().collect();
        self
    }

    /// Turns mDNS discovery on or off.
    pub fn with_mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Sets the largest frame size, in bytes.
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets the connection limits: in total and per peer.
    pub fn with_connection_limits(mut self, total: u32, per_peer: u32) -> Self {
        self.max_connections = total;
        self.max_connections_per_peer = per_peer;
        self
    }

    /// Sets the request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the DHT query timeout.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Sets how many members the directory holds (0: none).
    pub fn with_max_members(mut self, members: usize) -> Self {
        self.max_members = members;
        self
    }

    /// Sets the idle connection timeout.
    pub fn with_idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.idle_connection_timeout = timeout;
        self
    }

    /// Sets how often Kademlia refreshes the routing table.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Sets when this node serves circuit relay to its overlay's peers.
    pub fn with_relay(mut self, relay: Relay) -> Self {
        self.relay = relay;
        self
    }

    /// Sets the relay server's caps.
    pub fn with_relay_limits(mut self, limits: RelayLimits) -> Self {
        self.relay_limits = limits;
        self
    }

    /// Sets on how many relays an unreachable node reserves a slot.
    pub fn with_relay_reservations(mut self, n: usize) -> Self {
        self.relay_reservations = n;
        self
    }

    /// Sets AutoNAT's first probe delay and its retry interval.
    pub fn with_autonat(mut self, boot_delay: Duration, interval: Duration) -> Self {
        self.autonat_boot_delay = boot_delay;
        self.autonat_interval = interval;
        self
    }

    /// Sets how many bad frames a peer may send before it is disconnected.
    pub fn with_max_bad_frames(mut self, n: u32) -> Self {
        self.max_bad_frames = n;
        self
    }

    /// Sets the bound on pending operations of each kind.
    pub fn with_max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    /// Sets the per-peer limits on inbound requests: how many may wait for their answer at
    /// once, how many per second on average, and the burst above that rate.
    pub fn with_peer_limits(mut self, pending: usize, rate: u32, burst: u32) -> Self {
        self.max_pending_per_peer = pending;
        self.peer_request_rate = rate;
        self.peer_request_burst = burst;
        self
    }

    /// Sets the capacity of the event channel.
    pub fn with_event_buffer(mut self, n: usize) -> Self {
        self.event_buffer = n;
        self
    }

    /// Admits only peers with a Node-ID certificate from `ca`; `certificate` is this node's.
    pub fn with_enrollment(mut self, ca: PublicKey, certificate: Option<NodeCertificate>) -> Self {
        self.enrollment_ca = Some(ca);
        self.certificate = certificate;
        self
    }

    /// Sets the Node-ID work every node of the overlay must carry.
    pub fn with_node_id_work(mut self, bits: u32) -> Self {
        self.node_id_work = bits;
        self
    }

    /// The Kademlia protocol of this overlay: `/p2psip/<overlay>/kad/1.0.0`.
    pub fn kad_protocol(&self) -> StreamProtocol {
        protocol(format!("/p2psip/{}/kad/1.0.0", self.overlay))
    }

    /// The request/response protocol of this overlay: `/p2psip/<overlay>/reload/1`.
    pub fn reload_protocol(&self) -> StreamProtocol {
        protocol(format!("/p2psip/{}/reload/1", self.overlay))
    }

    /// The media protocol of this overlay: `/p2psip/<overlay>/media/1`, the streams that carry
    /// RTP and RTCP between the two end nodes of a call.
    pub fn media_protocol(&self) -> StreamProtocol {
        protocol(format!("/p2psip/{}/media/1", self.overlay))
    }

    /// The identify protocol version this overlay announces: `/p2psip/<overlay>/id/1.0.0`.
    ///
    /// (The identify stream protocol itself is libp2p's fixed `/ipfs/id/1.0.0`; this string is
    /// the `protocol_version` field it carries.)
    pub fn identify_protocol_version(&self) -> String {
        format!("/p2psip/{}/id/1.0.0", self.overlay)
    }

    /// Checks every value, and says which one is wrong and why.
    pub fn validate(&self) -> Result<(), Error> {
        let name_ok = !self.overlay.is_empty()
            && self.overlay.len() <= MAX_OVERLAY_NAME
            && self
                .overlay
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(Error::Config(format!(
                "the overlay name {:?} must be 1 to {MAX_OVERLAY_NAME} letters, digits, '-', '_' \
                 or '.'",
                self.overlay
            )));
        }
        if self.listen.is_empty() {
            return Err(Error::Config(
                "no listen address: give at least one, e.g. /ip4/0.0.0.0/udp/0/quic-v1".into(),
            ));
        }
        if self.max_frame_size == 0 || self.max_frame_size > MAX_FRAME_SIZE {
            return Err(Error::Config(format!(
                "the frame size limit {} must be between 1 and {MAX_FRAME_SIZE} bytes",
                self.max_frame_size
            )));
        }
        if self.max_connections == 0 || self.max_connections_per_peer == 0 {
            return Err(Error::Config(
                "the connection limits must allow at least one connection".into(),
            ));
        }
        if self.max_bad_frames == 0 {
            return Err(Error::Config(
                "max_bad_frames must be at least 1 (a peer is disconnected on reaching it)".into(),
            ));
        }
        if self.max_pending == 0 || self.event_buffer == 0 {
            return Err(Error::Config(
                "max_pending and event_buffer must be at least 1".into(),
            ));
        }
        if self.max_pending_per_peer == 0
            || self.peer_request_rate == 0
            || self.peer_request_burst == 0
        {
            return Err(Error::Config(
                "the per-peer request limits (pending, rate, burst) must be at least 1".into(),
            ));
        }
        if self.node_id_work > MAX_NODE_ID_WORK {
            return Err(Error::Config(format!(
                "node_id_work {} is over the most an overlay may ask for, {MAX_NODE_ID_WORK} bits",
                self.node_id_work
            )));
        }
        if !(1..=MAX_KBUCKET_SIZE).contains(&self.kbucket_size) {
            return Err(Error::Config(format!(
                "kbucket_size {} must be between 1 and {MAX_KBUCKET_SIZE}",
                self.kbucket_size
            )));
        }
        self.relay_limits.validate()?;
        for (what, timeout) in [
            ("autonat_boot_delay", self.autonat_boot_delay),
            ("autonat_interval", self.autonat_interval),
            ("request_timeout", self.request_timeout),
            ("query_timeout", self.query_timeout),
            ("idle_connection_timeout", self.idle_connection_timeout),
            ("refresh_interval", self.refresh_interval),
        ] {
            if timeout.is_zero() {
                return Err(Error::Config(format!("{what} must not be zero")));
            }
        }
        for addr in &self.bootstrap {
            if super::peer_of(addr).is_none() {
                return Err(Error::Config(format!(
                    "the bootstrap address {addr} does not end in /p2p/<peer id>"
                )));
            }
        }
        Ok(())
    }
}

/// When a node serves circuit relay v2 to the peers of its overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Relay {
    /// Once AutoNAT has confirmed a public address of this node (and while it has one).
    #[default]
    Auto,
    /// Always, even before AutoNAT has answered: a node an operator knows to be public. Its
    /// listen addresses count as its external addresses (the ones its reservations hand
    /// out), so give it addresses others can reach.
    On,
    /// Never.
    Off,
}

/// The caps of a relay server. Only peers of the relay's own overlay get a reservation or a
/// circuit, whatever the caps.
///
/// The defaults let a relayed G.711 call run for hours: libp2p's own defaults (a circuit ends
/// after 2 minutes or 128 KiB) would cut a call's audio after a few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayLimits {
    /// Reservations held at once, all peers together. Default 128.
    pub max_reservations: usize,
    /// Reservations held at once by one peer. Default 4.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts before the peer must renew it. Default 1 hour.
    pub reservation_duration: Duration,
    /// Circuits open at once, all peers together. Default 64.
    pub max_circuits: usize,
    /// Circuits open at once from or to one peer. Default 8.
    pub max_circuits_per_peer: usize,
    /// How long one circuit may stay open. Default 12 hours.
    pub max_circuit_duration: Duration,
    /// How many bytes one circuit may carry, both directions together. Default 4 GiB (about
    /// 70 hours of a G.711 call with its RTCP).
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(60 * 60),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(12 * 60 * 60),
            max_circuit_bytes: 4 << 30,
        }
    }
}

impl RelayLimits {
    fn validate(&self) -> Result<(), Error> {
        if self.max_reservations == 0
            || self.max_reservations_per_peer == 0
            || self.max_circuits == 0
            || self.max_circuits_per_peer == 0
        {
            return Err(Error::Config(
                "the relay limits must allow at least one reservation and one circuit (turn the \
                 relay off instead)"
                    .into(),
            ));
        }
        if self.reservation_duration.is_zero()
            || self.max_circuit_duration.is_zero()
            || self.max_circuit_bytes == 0
        {
            return Err(Error::Config(
                "the relay's reservation duration, circuit duration and circuit bytes must not \
                 be zero"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn default_listen() -> Multiaddr {
    use libp2p::multiaddr::Protocol;
    Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Udp(0))
        .with(Protocol::QuicV1)
}

/// A protocol name built from a validated overlay name. An invalid name (caught by
/// [`Config::validate`]) still yields a valid, if useless, protocol rather than a panic.
fn protocol(name: String) -> StreamProtocol {
    StreamProtocol::try_from_owned(name)
        .unwrap_or_else(|_| StreamProtocol::new("/p2psip/invalid/1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_names_the_protocols() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.kad_protocol().as_ref(), "/p2psip/p2psip/kad/1.0.0");
        assert_eq!(config.reload_protocol().as_ref(), "/p2psip/p2psip/reload/1");
        assert_eq!(
            config.identify_protocol_version(),
            "/p2psip/p2psip/id/1.0.0"
        );
        assert_eq!(
            config.listen,
            vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse::<Multiaddr>().unwrap()]
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for config in [
            Config::default().with_overlay(""),
            Config::default().with_overlay("a/b"),
            Config::default().with_overlay("x".repeat(65)),
            Config::default().with_listen([]),
            Config::default().with_max_frame_size(0),
            Config::default().with_max_frame_size(MAX_FRAME_SIZE + 1),
            Config::default().with_connection_limits(0, 1),
            Config::default().with_max_bad_frames(0),
            Config::default().with_max_pending(0),
            Config::default().with_peer_limits(0, 1, 1),
            Config::default().with_peer_limits(1, 0, 1),
            Config::default().with_request_timeout(Duration::ZERO),
            Config::default().with_autonat(Duration::ZERO, Duration::from_secs(1)),
            Config::default().with_relay_limits(RelayLimits {
                max_circuit_bytes: 0,
                ..RelayLimits::default()
            }),
            Config::default().with_relay_limits(RelayLimits {
                max_circuits: 0,
                ..RelayLimits::default()
            }),
            Config::default().with_relay_limits(RelayLimits {
                reservation_duration: Duration::ZERO,
                ..RelayLimits::default()
            }),
            Config::default().with_bootstrap(["/ip4/127.0.0.1/tcp/1".parse().unwrap()]),
        ] {
            assert!(
                matches!(config.validate(), Err(Error::Config(_))),
                "{config:?}"
            );
        }
    }
}
