//! Per-peer limits on inbound requests, so that one peer cannot take a node's every slot:
//! how many of one peer's requests may wait for their answer at once, and a token bucket per
//! peer for their rate. Plain state: every call takes `now`.
//!
//! Bounds: `in_flight` holds only peers with requests waiting (at most the global
//! [`Config::max_pending`](super::Config::max_pending) of them); `buckets` holds one entry
//! per peer that sent a request, and an entry whose bucket has refilled (it is then the same
//! as no entry) is pruned; when the table reaches its capacity even so, the fullest buckets
//! are forgotten first (a peer that is not sending now loses nothing by it).

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// The per-peer state of inbound requests.
#[derive(Debug)]
pub(crate) struct PeerLimits {
    pending_per_peer: usize,
    rate: f64,
    burst: f64,
    capacity: usize,
    in_flight: HashMap<PeerId, usize>,
    buckets: HashMap<PeerId, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// The peer has this many requests waiting already.
    Pending(usize),
    /// The peer sends faster than its rate (per second), over its burst.
    Rate { rate: u32, burst: u32 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Pending(n) => write!(
                f,
                "has {n} requests waiting for their answer, the most one peer may have"
            ),
            Refusal::Rate { rate, burst } => write!(
                f,
                "sends more than {rate} requests per second (burst {burst}), the most one peer may"
            ),
        }
    }
}

impl PeerLimits {
    /// Limits of `pending_per_peer` waiting requests and `rate` per second with bursts of
    /// `burst`; the bucket table holds at most `capacity` peers.
    pub(crate) fn new(pending_per_peer: usize, rate: u32, burst: u32, capacity: usize) -> Self {
        PeerLimits {
            pending_per_peer: pending_per_peer.max(1),
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            capacity: capacity.max(1),
            in_flight: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// A request of `peer` arrives at `now`: admitted (it then counts as waiting until
    /// [`PeerLimits::done`]) or refused.
    pub(crate) fn admit(&mut self, peer: PeerId, now: Instant) -> Result<(), Refusal> {
        let waiting = self.in_flight.get(&peer).copied().unwrap_or(0);
        if waiting >= self.pending_per_peer {
            return Err(Refusal::Pending(waiting));
        }
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= self.capacity {
            self.prune(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Refusal::Rate {
                rate: rate as u32,
                burst: burst as u32,
            });
        }
        bucket.tokens -= 1.0;
        *self.in_flight.entry(peer).or_insert(0) += 1;
        Ok(())
    }

    /// An admitted request of `peer` was answered (or given up).
    pub(crate) fn done(&mut self, peer: &PeerId) {
        if let Some(n) = self.in_flight.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(peer);
            }
        }
    }

    /// How many peers the bucket table holds.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Forgets the buckets that refilled; if the table is still full, the fullest ones.
    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        let level = |bucket: &Bucket| {
            bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * rate
        };
        self.buckets.retain(|_, bucket| level(bucket) < burst);
        if self.buckets.len() >= self.capacity {
            let mut levels: Vec<(f64, PeerId)> = self
                .buckets
                .iter()
                .map(|(peer, bucket)| (level(bucket), *peer))
                .collect();
            levels.sort_by(|a, b| b.0.total_cmp(&a.0));
            let excess = self.buckets.len() + 1 - self.capacity;
            for (_, peer) in levels.into_iter().take(excess.max(self.capacity / 4)) {
                self.buckets.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_peer_is_held_to_its_pending_and_rate_limits_and_others_are_not() {
        let now = Instant::now();
        let mut limits = PeerLimits::new(2, 10, 3, 100);
        let (flood, other) = (PeerId::random(), PeerId::random());
        limits.admit(flood, now).unwrap();
        limits.admit(flood, now).unwrap();
        assert_eq!(limits.admit(flood, now), Err(Refusal::Pending(2)));
        limits.admit(other, now).unwrap();
        limits.done(&flood);
        limits.done(&flood);
        limits.admit(flood, now).unwrap();
        limits.done(&flood);
        // Three tokens of burst are spent.
        assert!(matches!(
            limits.admit(flood, now),
            Err(Refusal::Rate { .. })
        ));
        // A tenth of a second later, one more token.
        let later = now + Duration::from_millis(100);
        limits.admit(flood, later).unwrap();
        limits.done(&flood);
        assert!(matches!(
            limits.admit(flood, later),
            Err(Refusal::Rate { .. })
        ));
    }

    #[test]
    fn the_bucket_table_stays_bounded() {
        let now = Instant::now();
        let mut limits = PeerLimits::new(1000, 1, 1000, 8);
        for n in 0..100u64 {
            let peer = PeerId::random();
            limits.admit(peer, now + Duration::from_millis(n)).unwrap();
            limits.done(&peer);
            assert!(limits.tracked() <= 8);
        }
    }
}
