//! The next hop of a Route message, sans-IO.

use libp2p::PeerId;
use libp2p::kad::KBucketKey;

use super::Ranking;

/// The peers to try, in order, for a message on its way to `destination`: the destination
/// itself first (a peer the node knows, or one the network may still reach by its
/// addresses), then the known peers closest to it on Kademlia's ring that the message has
/// not visited (`visited`), at most `tries` in all. Greedy XOR routing: each hop goes to a
/// peer at least as close as any this node knows, so a message crosses about
/// `log2(N) / log2(k)` nodes in an overlay of `N` nodes with `k` peers per bucket.
pub fn next_hops(
    ranking: &Ranking,
    destination: &PeerId,
    visited: impl Fn(&PeerId) -> bool,
    tries: usize,
) -> Vec<PeerId> {
    if tries == 0 || visited(destination) {
        return Vec::new();
    }
    let target = KBucketKey::from(*destination);
    let mut hops = vec![*destination];
    hops.extend(
        ranking
            .closest_to(&target, tries, |peer| peer != destination && !visited(peer))
            .into_iter()
            .take(tries - 1),
    );
    hops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_peer as peer;
    use crate::id::node_distance;

    #[test]
    fn the_destination_first_then_the_closest_not_visited() {
        let known: Vec<PeerId> = (1..=30).map(peer).collect();
        let destination = peer(99);
        let mut ranking = Ranking::new();
        ranking.set(known.clone());
        let mut by_distance = known.clone();
        by_distance.sort_by_key(|p| node_distance(p, &destination));
        let hops = next_hops(&ranking, &destination, |_| false, 3);
        assert_eq!(hops, vec![destination, by_distance[0], by_distance[1]]);
        let visited = by_distance[0];
        let hops = next_hops(&ranking, &destination, |p| *p == visited, 3);
        assert_eq!(hops, vec![destination, by_distance[1], by_distance[2]]);
        assert!(next_hops(&ranking, &destination, |p| *p == destination, 3).is_empty());
        assert!(next_hops(&ranking, &destination, |_| false, 0).is_empty());
    }
}
