//! NAT traversal: what AutoNAT says of this node, and on which relays it reserves a slot.
//!
//! The decisions live in [`Traversal`], which the task feeds with what the swarm reports
//! (peers identified as relays of this overlay, AutoNAT's verdicts, listeners that open and
//! close) and asks what to do next ([`Traversal::reservations_to_make`],
//! [`Traversal::reservations_to_drop`]). It holds no sockets and reads no clock: `now` comes in.
//!
//! The policy:
//! - a node that AutoNAT finds [`Reachability::Private`] reserves a slot on up to
//!   [`Config::relay_reservations`](super::Config::relay_reservations) relays, each a directly
//!   connected peer of this overlay that speaks the circuit relay v2 HOP protocol; the relayed
//!   listen addresses (`<relay>/p2p-circuit/p2p/<us>`) are announced by identify, so the other
//!   nodes reach it through them, and DCUtR upgrades each relayed connection to a direct one
//!   where the NATs allow;
//! - a reservation that fails or ends is retried on another relay, and on the same one only
//!   after [`RETRY_AFTER`];
//! - a node that turns out [`Reachability::Public`] gives its reservations up.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, core::transport::ListenerId, multiaddr::Protocol};

/// How long a relay whose reservation failed or ended is left alone.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How many relays a node remembers as candidates.
const MAX_CANDIDATES: usize = 16;
/// How many relayed addresses one reservation keeps (one per address the relay hands out).
const MAX_RELAYED_ADDRS: usize = 8;

/// Whether other nodes can dial this node directly, as AutoNAT last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Reachability {
    /// Not known yet: no AutoNAT probe has been answered.
    #[default]
    Unknown,
    /// A peer dialled back one of this node's addresses: it is reachable there.
    Public,
    /// Dial-backs failed: this node is behind a NAT or firewall and needs relays.
    Private,
}

/// How this node is connected to a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Path {
    /// At least one direct connection (dialled, accepted or hole-punched).
    Direct,
    /// Only connections through a circuit relay.
    Relayed,
}

/// What the node knows of its own reachability, for status pages and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct NatState {
    /// AutoNAT's last verdict.
    pub reachability: Reachability,
    /// The addresses confirmed reachable from outside (AutoNAT dial-backs).
    pub external_addrs: Vec<String>,
    /// The relayed listen addresses this node holds a reservation for.
    pub relayed_addrs: Vec<String>,
    /// Whether this node serves circuit relay to its overlay now.
    pub relay_serving: bool,
}

/// The reservation state of one relay.
#[derive(Debug)]
struct Reservation {
    listener: ListenerId,
    /// The relayed addresses, once the relay accepted (one per address of the relay).
    addrs: Vec<Multiaddr>,
}

/// The NAT traversal decisions of one node (see the module docs).
#[derive(Debug)]
pub(crate) struct Traversal {
    reachability: Reachability,
    wanted: usize,
    /// Relays of this overlay we are directly connected to, with the address we dialled.
    candidates: HashMap<PeerId, Multiaddr>,
    reservations: HashMap<PeerId, Reservation>,
    /// Relays whose reservation failed, and when.
    failed: HashMap<PeerId, Instant>,
}

impl Traversal {
    /// `wanted`: on how many relays to hold a reservation while private.
    pub(crate) fn new(wanted: usize) -> Self {
        Self {
            reachability: Reachability::Unknown,
            wanted,
            candidates: HashMap::new(),
            reservations: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    pub(crate) fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// AutoNAT changed its mind.
    pub(crate) fn set_reachability(&mut self, reachability: Reachability) {
        self.reachability = reachability;
    }

    /// A directly connected peer of this overlay speaks the relay HOP protocol; `addr` is
    /// where we dialled it.
    pub(crate) fn add_candidate(&mut self, relay: PeerId, addr: Multiaddr) {
        if self.candidates.len() < MAX_CANDIDATES || self.candidates.contains_key(&relay) {
            self.candidates.insert(relay, addr);
        }
    }

    /// The last direct connection to `peer` closed: it can no longer be a relay for us.
    pub(crate) fn peer_gone(&mut self, peer: &PeerId) {
        self.candidates.remove(peer);
    }

    /// The relayed addresses to listen on now (each `<relay addr>/p2p/<relay>/p2p-circuit`),
    /// with their relay. The caller listens on each and reports the listener with
    /// [`Traversal::reserving`].
    pub(crate) fn reservations_to_make(&mut self, now: Instant) -> Vec<(PeerId, Multiaddr)> {
        self.failed
            .retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
        if self.reachability != Reachability::Private {
            return Vec::new();
        }
        let missing = self.wanted.saturating_sub(self.reservations.len());
        let mut relays: Vec<_> = self
            .candidates
            .iter()
            .filter(|(relay, _)| {
                !self.reservations.contains_key(relay) && !self.failed.contains_key(relay)
            })
            .collect();
        // Any order would do; a stable one makes runs comparable.
        relays.sort_by_key(|(relay, _)| relay.to_bytes());
        relays
            .into_iter()
            .take(missing)
            .map(|(relay, addr)| (*relay, circuit_addr(addr, *relay)))
            .collect()
    }

    /// The caller listens on `relay`'s circuit address with `listener`.
    pub(crate) fn reserving(&mut self, relay: PeerId, listener: ListenerId) {
        self.reservations.insert(
            relay,
            Reservation {
                listener,
                addrs: Vec::new(),
            },
        );
    }

    /// A listen attempt on `relay` failed at once.
    pub(crate) fn reservation_failed(&mut self, relay: PeerId, now: Instant) {
        self.reservations.remove(&relay);
        self.failed.insert(relay, now);
    }

    /// A listener reported an address; true when it is one of our relayed addresses.
    pub(crate) fn listening(&mut self, listener: ListenerId, addr: &Multiaddr) -> bool {
        match self
            .reservations
            .values_mut()
            .find(|reservation| reservation.listener == listener)
        {
            Some(reservation) => {
                if !reservation.addrs.contains(addr) && reservation.addrs.len() < MAX_RELAYED_ADDRS
                {
                    reservation.addrs.push(addr.clone());
                }
                true
            }
            None => false,
        }
    }

    /// A listener closed; when it was a reservation, the relay is left alone for a while and
    /// the relay's peer id is returned.
    pub(crate) fn listener_closed(&mut self, listener: ListenerId, now: Instant) -> Option<PeerId> {
        let relay = *self
            .reservations
            .iter()
            .find(|(_, reservation)| reservation.listener == listener)?
            .0;
        self.reservation_failed(relay, now);
        Some(relay)
    }

    /// The listeners to remove: every reservation the relay accepted, once this node is
    /// public. One still waiting for the relay's answer stays until it comes (ask again
    /// then): libp2p-relay 0.22's client panics ("Relay connection exist") when an
    /// acceptance arrives for a listener removed while its request was under way.
    pub(crate) fn reservations_to_drop(&mut self) -> Vec<ListenerId> {
        if self.reachability != Reachability::Public {
            return Vec::new();
        }
        let accepted: Vec<PeerId> = self
            .reservations
            .iter()
            .filter(|(_, reservation)| !reservation.addrs.is_empty())
            .map(|(relay, _)| *relay)
            .collect();
        accepted
            .into_iter()
            .filter_map(|relay| self.reservations.remove(&relay))
            .map(|reservation| reservation.listener)
            .collect()
    }

    /// The relayed addresses held now.
    pub(crate) fn relayed_addrs(&self) -> Vec<Multiaddr> {
        let mut addrs: Vec<_> = self
            .reservations
            .values()
            .flat_map(|reservation| reservation.addrs.iter().cloned())
            .collect();
        addrs.sort();
        addrs
    }
}

/// `<addr>/p2p/<relay>/p2p-circuit`, the address to listen on for a reservation at `relay`.
fn circuit_addr(addr: &Multiaddr, relay: PeerId) -> Multiaddr {
    let mut circuit: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    circuit.push(Protocol::P2p(relay));
    circuit.push(Protocol::P2pCircuit);
    circuit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_addr(n: u8) -> Multiaddr {
        format!("/ip4/203.0.113.{n}/udp/4001/quic-v1")
            .parse()
            .unwrap()
    }

    #[test]
    fn a_private_node_reserves_on_as_many_relays_as_wanted() {
        let now = Instant::now();
        let mut nat = Traversal::new(2);
        let relays: Vec<_> = (1..=3).map(|_| PeerId::random()).collect();
        for (n, relay) in relays.iter().enumerate() {
            nat.add_candidate(*relay, relay_addr(n as u8 + 1));
        }
        assert!(
            nat.reservations_to_make(now).is_empty(),
            "unknown: no relay"
        );
        nat.set_reachability(Reachability::Private);
        let wanted = nat.reservations_to_make(now);
        assert_eq!(wanted.len(), 2);
        for (relay, addr) in &wanted {
            assert!(addr.iter().any(|p| p == Protocol::P2pCircuit));
            assert_eq!(
                addr.iter().nth(3),
                Some(Protocol::P2p(*relay)),
                "{addr} names its relay"
            );
        }
        for (relay, _) in &wanted {
            nat.reserving(*relay, ListenerId::next());
        }
        assert!(nat.reservations_to_make(now).is_empty(), "two held");
    }

    #[test]
    fn a_failed_relay_waits_and_another_takes_its_place() {
        let now = Instant::now();
        let mut nat = Traversal::new(1);
        let (a, b) = (PeerId::random(), PeerId::random());
        nat.add_candidate(a, relay_addr(1));
        nat.add_candidate(b, relay_addr(2));
        nat.set_reachability(Reachability::Private);
        let (first, _) = nat.reservations_to_make(now)[0].clone();
        let listener = ListenerId::next();
        nat.reserving(first, listener);
        let relayed = relay_addr(9).with(Protocol::P2pCircuit);
        assert!(nat.listening(listener, &relayed));
        assert_eq!(nat.relayed_addrs(), vec![relayed]);
        assert!(!nat.listening(ListenerId::next(), &relay_addr(3)));

        assert_eq!(nat.listener_closed(listener, now), Some(first));
        assert!(nat.relayed_addrs().is_empty());
        let next = nat.reservations_to_make(now);
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].0, first, "the failed relay is left alone");

        nat.peer_gone(&next[0].0);
        assert!(nat.reservations_to_make(now).is_empty(), "none left to try");
        let later = now + RETRY_AFTER;
        assert_eq!(nat.reservations_to_make(later)[0].0, first, "retried later");
    }

    #[test]
    fn a_public_node_gives_its_reservations_up() {
        let mut nat = Traversal::new(2);
        let relay = PeerId::random();
        nat.add_candidate(relay, relay_addr(1));
        nat.set_reachability(Reachability::Private);
        nat.reservations_to_make(Instant::now());
        let listener = ListenerId::next();
        nat.reserving(relay, listener);
        assert!(nat.reservations_to_drop().is_empty(), "still private");
        nat.set_reachability(Reachability::Public);
        // Not before the relay answered: the listener goes once the reservation is held.
        assert!(
            nat.reservations_to_drop().is_empty(),
            "still waiting for the relay"
        );
        assert!(nat.listening(listener, &relay_addr(1)));
        assert_eq!(nat.reservations_to_drop(), vec![listener]);
        assert!(nat.reservations_to_make(Instant::now()).is_empty());
    }

    #[test]
    fn candidates_are_bounded() {
        let mut nat = Traversal::new(1);
        for n in 0..100u8 {
            nat.add_candidate(PeerId::random(), relay_addr(n));
        }
        assert_eq!(nat.candidates.len(), MAX_CANDIDATES);
    }
}
