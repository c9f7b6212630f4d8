//! The session table and the latching rules, without sockets: every decision takes `now`.
//!
//! A session is one dialog's media between this node's softphone and one other end node,
//! keyed by ([`Key`]) the Call-ID and that node; forking to several nodes gives several
//! sessions. Each active m-line of its SDP is a [`Line`] with two [`Latch`]es, RTP and RTCP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// The most SIP source addresses remembered per session (a softphone has one, maybe two).
const MAX_SOURCES: usize = 4;

/// A session: a dialog's Call-ID and the other end node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// The Call-ID of the dialog (bounded by the SIP parser's line limit).
    pub(crate) call_id: String,
    /// The other end node.
    pub(crate) node: PeerId,
}

/// The 64-bit id both end nodes give a session on the wire: blake3 of the Call-ID and the two
/// Node-IDs in a fixed order, so that both compute the same.
pub(crate) fn wire_id(call_id: &str, a: &PeerId, b: &PeerId) -> u64 {
    let (a, b) = (a.to_bytes(), b.to_bytes());
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"p2psip media session\0");
    hasher.update(&(call_id.len() as u64).to_be_bytes());
    hasher.update(call_id.as_bytes());
    hasher.update(&(low.len() as u64).to_be_bytes());
    hasher.update(&low);
    hasher.update(&high);
    let mut id = [0u8; 8];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_be_bytes(id)
}

/// Where the media of one direction (RTP or RTCP) of a softphone's m-line is sent, and from
/// where it is taken.
///
/// Before the first packet, packets go to the address the softphone declared in its SDP.
/// The first packet whose source IP is one of the softphone's (its SDP address, or the
/// address its SIP came from) latches that exact address and port: from then on only that
/// source is accepted, and packets go back to it (through the softphone's NAT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Latch {
    declared: Option<SocketAddr>,
    latched: Option<SocketAddr>,
}

impl Latch {
    /// Sets the address the softphone declared in its SDP; a new one unlatches.
    pub(crate) fn declare(&mut self, declared: Option<SocketAddr>) {
        if self.declared != declared {
            self.declared = declared;
            self.latched = None;
        }
    }

    /// Whether a packet from `source` is the softphone's; `softphone` are the IP addresses it
    /// is known by besides its SDP address. The first accepted packet latches.
    pub(crate) fn accept(&mut self, source: SocketAddr, softphone: &[IpAddr]) -> bool {
        if let Some(latched) = self.latched {
            return latched == source;
        }
        let known = self.declared.is_some_and(|d| d.ip() == source.ip())
            || softphone.contains(&source.ip());
        if known {
            self.latched = Some(source);
        }
        known
    }

    /// Where packets for the softphone go: the latched source, else the declared address.
    pub(crate) fn target(&self) -> Option<SocketAddr> {
        self.latched.or(self.declared)
    }
}

/// One active m-line of a session.
#[derive(Debug, Clone, Default)]
pub(crate) struct Line {
    /// RTP.
    pub(crate) rtp: Latch,
    /// RTCP (on the RTP port too when the softphone multiplexes them).
    pub(crate) rtcp: Latch,
}

/// One session: its wire id, its lines, and what its SDP rewrites need to stay consistent.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The id of the session on the wire between the two end nodes ([`wire_id`]).
    pub(crate) wire: u64,
    /// The m-lines by index; `None` for lines that are not anchored (zero port).
    pub(crate) lines: Vec<Option<Line>>,
    /// A 2xx answered its INVITE: a later non-2xx (a refused re-INVITE) does not end it.
    pub(crate) established: bool,
    /// The last packet either way, or the last SDP.
    pub(crate) last_activity: Instant,
    /// The IP addresses the softphone's SIP came from.
    pub(crate) sources: Vec<IpAddr>,
    /// The o= version last seen from the other node, and the one this node wrote for it.
    versions: Option<(u64, u64)>,
}

impl Session {
    /// The o= version to write into a rewritten SDP whose version from the other node is
    /// `remote`: the same as last time when the other node's is unchanged, one more when it
    /// changed (RFC 3264 §8: a changed session description has a higher version).
    pub(crate) fn version_for(&mut self, remote: u64) -> u64 {
        let ours = match self.versions {
            None => remote,
            Some((seen, ours)) if seen == remote => ours,
            Some((_, ours)) => ours.wrapping_add(1),
        };
        self.versions = Some((remote, ours));
        ours
    }

    /// Remembers an IP address the softphone's SIP came from.
    pub(crate) fn add_source(&mut self, ip: IpAddr) {
        if !self.sources.contains(&ip) {
            if self.sources.len() >= MAX_SOURCES {
                self.sources.remove(0);
            }
            self.sources.push(ip);
        }
    }

    /// The line at `index`, created when missing.
    pub(crate) fn line_mut(&mut self, index: usize) -> &mut Line {
        if self.lines.len() <= index {
            self.lines.resize(index + 1, None);
        }
        self.lines[index].get_or_insert_with(Line::default)
    }
}

/// Why a session could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The node has its [`super::Config::max_sessions`].
    Sessions(usize),
    /// Another session has the same wire id (a blake3 collision: practically never).
    Collision,
}

/// Every media session of the node, by key and by wire id.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_key: HashMap<Key, Session>,
    by_wire: HashMap<u64, Key>,
}

impl Sessions {
    /// The session for `key`, created (with wire id `wire`) when there is room for it.
    pub(crate) fn get_or_create(
        &mut self,
        key: &Key,
        wire: u64,
        now: Instant,
        max: usize,
    ) -> Result<(&mut Session, bool), Full> {
        let created = !self.by_key.contains_key(key);
        if created {
            if self.by_key.len() >= max {
                return Err(Full::Sessions(max));
            }
            if self.by_wire.contains_key(&wire) {
                return Err(Full::Collision);
            }
            self.by_wire.insert(wire, key.clone());
            self.by_key.insert(
                key.clone(),
                Session {
                    wire,
                    lines: Vec::new(),
                    established: false,
                    last_activity: now,
                    sources: Vec::new(),
                    versions: None,
                },
            );
        }
        let session = self.by_key.get_mut(key).ok_or(Full::Sessions(max))?;
        session.last_activity = now;
        Ok((session, created))
    }

    /// The session for `key`.
    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut Session> {
        self.by_key.get_mut(key)
    }

    /// The session with wire id `wire`, if its other end node is `node` (a node cannot send
    /// into another node's session).
    pub(crate) fn by_wire_mut(&mut self, wire: u64, node: &PeerId) -> Option<&mut Session> {
        let key = self.by_wire.get(&wire)?;
        if key.node != *node {
            return None;
        }
        self.by_key.get_mut(key)
    }

    /// The other end node of the session with wire id `wire`.
    pub(crate) fn node_of(&self, wire: u64) -> Option<PeerId> {
        self.by_wire.get(&wire).map(|key| key.node)
    }

    /// The sessions of a Call-ID (one per other end node).
    pub(crate) fn keys_of(&self, call_id: &str) -> Vec<Key> {
        self.by_key
            .keys()
            .filter(|key| key.call_id == call_id)
            .cloned()
            .collect()
    }

    /// Removes a session; its wire id comes back.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<u64> {
        let session = self.by_key.remove(key)?;
        self.by_wire.remove(&session.wire);
        Some(session.wire)
    }

    /// The sessions with no packet and no SDP for `idle` or longer.
    pub(crate) fn idle(&self, now: Instant, idle: Duration) -> Vec<Key> {
        self.by_key
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_activity) >= idle)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// How many sessions there are.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(call_id: &str, node: PeerId) -> Key {
        Key {
            call_id: call_id.into(),
            node,
        }
    }

    #[test]
    fn both_ends_compute_the_same_wire_id() {
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(wire_id("c1", &a, &b), wire_id("c1", &b, &a));
        assert_ne!(wire_id("c1", &a, &b), wire_id("c2", &a, &b));
        assert_ne!(wire_id("c1", &a, &b), wire_id("c1", &a, &PeerId::random()));
    }

    #[test]
    fn before_latching_packets_go_to_the_declared_address() {
        let mut latch = Latch::default();
        assert_eq!(latch.target(), None);
        latch.declare(Some(addr("10.0.0.5:4000")));
        assert_eq!(latch.target(), Some(addr("10.0.0.5:4000")));
    }

    #[test]
    fn the_first_packet_from_the_softphone_latches_its_exact_source() {
        let mut latch = Latch::default();
        latch.declare(Some(addr("10.0.0.5:4000")));
        // A stranger is refused and does not latch.
        assert!(!latch.accept(addr("192.0.2.9:4000"), &[]));
        assert_eq!(latch.target(), Some(addr("10.0.0.5:4000")));
        // The softphone's IP with another port (its NAT's mapping) latches.
        assert!(latch.accept(addr("10.0.0.5:5002"), &[]));
        assert_eq!(latch.target(), Some(addr("10.0.0.5:5002")));
        // From then on only that exact source.
        assert!(latch.accept(addr("10.0.0.5:5002"), &[]));
        assert!(!latch.accept(addr("10.0.0.5:4000"), &[]));
        assert!(!latch.accept(addr("192.0.2.9:4000"), &[]));
    }

    #[test]
    fn the_sip_source_address_may_latch_when_the_sdp_names_a_private_one() {
        let mut latch = Latch::default();
        latch.declare(Some(addr("192.168.1.20:4000")));
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(!latch.accept(addr("198.51.100.1:4000"), &[public]));
        assert!(latch.accept(addr("203.0.113.7:61000"), &[public]));
        assert_eq!(latch.target(), Some(addr("203.0.113.7:61000")));
    }

    #[test]
    fn a_new_sdp_address_unlatches() {
        let mut latch = Latch::default();
        latch.declare(Some(addr("10.0.0.5:4000")));
        assert!(latch.accept(addr("10.0.0.5:4000"), &[]));
        latch.declare(Some(addr("10.0.0.5:4000")));
        assert!(
            !latch.accept(addr("10.0.0.5:4002"), &[]),
            "same SDP: still latched"
        );
        latch.declare(Some(addr("10.0.0.6:4000")));
        assert_eq!(latch.target(), Some(addr("10.0.0.6:4000")));
        assert!(latch.accept(addr("10.0.0.6:4100"), &[]));
    }

    #[test]
    fn the_version_moves_only_when_the_other_side_changes_its_sdp() {
        let t = Instant::now();
        let mut sessions = Sessions::default();
        let k = key("c", PeerId::random());
        let (session, created) = sessions.get_or_create(&k, 1, t, 4).unwrap();
        assert!(created);
        assert_eq!(session.version_for(7), 7);
        assert_eq!(session.version_for(7), 7);
        assert_eq!(session.version_for(8), 8);
        assert_eq!(session.version_for(20), 9);
        assert_eq!(session.version_for(20), 9);
    }

    #[test]
    fn sessions_are_capped_and_idle_ones_found() {
        let t = Instant::now();
        let mut sessions = Sessions::default();
        let node = PeerId::random();
        let (a, b, c) = (key("a", node), key("b", node), key("c", node));
        sessions.get_or_create(&a, 1, t, 2).unwrap();
        sessions.get_or_create(&b, 2, t, 2).unwrap();
        assert_eq!(
            sessions.get_or_create(&c, 3, t, 2).map(|_| ()),
            Err(Full::Sessions(2))
        );
        // An existing one is still served at the cap.
        let (_, created) = sessions
            .get_or_create(&a, 1, t + Duration::from_secs(5), 2)
            .unwrap();
        assert!(!created);
        assert_eq!(
            sessions.idle(t + Duration::from_secs(10), Duration::from_secs(10)),
            vec![b.clone()]
        );
        assert_eq!(sessions.remove(&b), Some(2));
        assert_eq!(sessions.len(), 1);
        sessions.get_or_create(&c, 3, t, 2).unwrap();
    }

    #[test]
    fn a_frame_is_only_taken_from_the_sessions_other_node() {
        let t = Instant::now();
        let mut sessions = Sessions::default();
        let (node, other) = (PeerId::random(), PeerId::random());
        sessions.get_or_create(&key("a", node), 9, t, 4).unwrap();
        assert!(sessions.by_wire_mut(9, &node).is_some());
        assert!(sessions.by_wire_mut(9, &other).is_none());
        assert!(sessions.by_wire_mut(10, &node).is_none());
        assert_eq!(
            sessions
                .get_or_create(&key("b", other), 9, t, 4)
                .map(|_| ()),
            Err(Full::Collision)
        );
    }
}
