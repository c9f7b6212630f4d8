//! Peers ranked by their distance to a resource.

use std::collections::HashMap;

use libp2p::PeerId;
use libp2p::kad::{KBucketDistance, KBucketKey};

use crate::id::ResourceId;

/// The peers a node knows, each with its place on Kademlia's ring hashed once: ranking `n`
/// peers for a resource costs `n` XORs, not `n` SHA-256s. Bounded by the peers it is given.
#[derive(Debug, Default, Clone)]
pub struct Ranking {
    keys: HashMap<PeerId, KBucketKey<PeerId>>,
}

impl Ranking {
    /// An empty ranking.
    pub fn new() -> Ranking {
        Ranking::default()
    }

    /// Makes the known peers exactly `peers`: new ones are hashed, gone ones forgotten.
    pub fn set(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        let mut keys = HashMap::new();
        for peer in peers {
            let key = self
                .keys
                .remove(&peer)
                .unwrap_or_else(|| KBucketKey::from(peer));
            keys.insert(peer, key);
        }
        self.keys = keys;
    }

    /// Adds one peer.
    pub fn insert(&mut self, peer: PeerId) {
        self.keys
            .entry(peer)
            .or_insert_with(|| KBucketKey::from(peer));
    }

    /// Adds one peer whose key is hashed already.
    pub fn insert_key(&mut self, peer: PeerId, key: KBucketKey<PeerId>) {
        self.keys.entry(peer).or_insert(key);
    }

    /// Forgets one peer.
    pub fn remove(&mut self, peer: &PeerId) {
        self.keys.remove(peer);
    }

    /// How many peers it knows.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether it knows `peer`.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.keys.contains_key(peer)
    }

    /// The `limit` known peers for which `keep` holds that are closest to `resource`,
    /// closest first (ties, which SHA-256 makes impossible in practice, by `PeerId`).
    pub fn closest(
        &self,
        resource: &ResourceId,
        limit: usize,
        keep: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        self.closest_to(&resource.kad_key(), limit, keep)
    }

    /// [`Ranking::closest`] for any place on the ring: a resource's or a node's
    /// (`KBucketKey::from(peer)`).
    pub fn closest_to<T>(
        &self,
        target: &KBucketKey<T>,
        limit: usize,
        keep: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let mut ranked: Vec<(KBucketDistance, PeerId)> = self
            .keys
            .iter()
            .filter(|(peer, _)| keep(peer))
            .map(|(peer, key)| (key.distance(target), *peer))
            .collect();
        if limit < ranked.len() {
            if limit == 0 {
                return Vec::new();
            }
            ranked.select_nth_unstable(limit - 1);
            ranked.truncate(limit);
        }
        ranked.sort_unstable();
        ranked.into_iter().map(|(_, peer)| peer).collect()
    }

    /// How many known peers for which `keep` holds are closer to `resource` than `peer`
    /// (which must be known: else, all of them).
    pub fn closer_than(
        &self,
        resource: &ResourceId,
        peer: &PeerId,
        keep: impl Fn(&PeerId) -> bool,
    ) -> usize {
        let target = resource.kad_key();
        let Some(mine) = self
            .keys
            .get(peer)
            .map(|key| (key.distance(&target), *peer))
        else {
            return self.keys.keys().filter(|p| keep(p)).count();
        };
        self.keys
            .iter()
            .filter(|(other, key)| keep(other) && (key.distance(&target), **other) < mine)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_peer;
    use crate::id::closest_nodes;

    fn peers(n: u8) -> Vec<PeerId> {
        (0..n).map(test_peer).collect()
    }

    #[test]
    fn ranks_as_kademlia_does() {
        let all = peers(40);
        let mut ranking = Ranking::new();
        ranking.set(all.clone());
        let resource = ResourceId::for_normalized("alice@example.org");
        assert_eq!(
            ranking.closest(&resource, usize::MAX, |_| true),
            closest_nodes(&resource, all.clone(), usize::MAX)
        );
        assert_eq!(
            ranking.closest(&resource, 5, |_| true),
            closest_nodes(&resource, all.clone(), 5)
        );
        let odd: Vec<PeerId> = all.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(
            ranking.closest(&resource, 7, |p| odd.contains(p)),
            closest_nodes(&resource, odd, 7)
        );
        let ranked = closest_nodes(&resource, all.clone(), usize::MAX);
        assert_eq!(ranking.closer_than(&resource, &ranked[4], |_| true), 4);
        assert_eq!(
            ranking.closer_than(&resource, &ranked[4], |p| *p != ranked[0]),
            3
        );
        ranking.set(all[..5].to_vec());
        assert_eq!(ranking.len(), 5);
    }
}
