//! When a node re-signs what it publishes, and when it sweeps expired copies, sans-IO.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::debug;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshAction<K> {
    /// Re-sign the entry published under `slot` (its generation now `generation`) with a
    /// new storage time and the next generation, and store it at the replica set; answer
    /// with [`Refresher::refreshed`].
    Refresh {
        /// The entry.
        slot: K,
        /// Its generation when the refresh was asked for.
        generation: u64,
    },
    /// Delete the expired entries of the local store.
    Sweep,
}

/// How the refresher behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshConfig {
    /// How long after a failed refresh it is tried again. Default 10 s.
    pub retry: Duration,
    /// How often the local store is swept of expired entries. Default 60 s.
    pub sweep_interval: Duration,
}

impl Default for RefreshConfig {
    fn default() -> RefreshConfig {
        RefreshConfig {
            retry: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct Kept {
    generation: u64,
    lifetime: Duration,
    due: Instant,
    /// A refresh is under way (until its answer, or until `due` passes again).
    running: bool,
}

/// The schedule of the entries a node publishes for its users, and of the sweep of its
/// store:
///
/// - An entry published at `now` with lifetime `L` is refreshed at `now + L / 2`, and again
///   half a lifetime after each refresh that succeeded; a failed refresh is tried again
///   after [`RefreshConfig::retry`] (the copies on the replicas still live for the other
///   half). A refresh with no answer by then is asked for again.
/// - Publishing the entry again (a new generation) or withdrawing it while a refresh runs
///   wins: that refresh's answer is ignored and counted ([`Refresher::ignored`]).
/// - The store is swept every [`RefreshConfig::sweep_interval`].
///
/// Bounds: one entry per slot the node publishes (its users' claims and registrations,
/// themselves bounded by the registrar's limits).
#[derive(Debug)]
pub struct Refresher<K> {
    config: RefreshConfig,
    kept: BTreeMap<K, Kept>,
    next_sweep: Instant,
    ignored: u64,
}

impl<K: Ord + Clone> Refresher<K> {
    /// An empty schedule; the first sweep is one interval after `now`.
    pub fn new(config: RefreshConfig, now: Instant) -> Refresher<K> {
        Refresher {
            next_sweep: now + config.sweep_interval,
            config,
            kept: BTreeMap::new(),
            ignored: 0,
        }
    }

    /// The entry under `slot` was published (or published again) at `now`, with this
    /// generation and lifetime: its refresh is due half a lifetime later.
    pub fn keep(&mut self, slot: K, generation: u64, lifetime: Duration, now: Instant) {
        self.kept.insert(
            slot,
            Kept {
                generation,
                lifetime,
                due: now + lifetime / 2,
                running: false,
            },
        );
    }

    /// The entry under `slot` is no longer published: no more refreshes.
    pub fn withdraw(&mut self, slot: &K) {
        self.kept.remove(slot);
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// When [`Refresher::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let refresh = self.kept.values().map(|kept| kept.due).min();
        Some(refresh.map_or(self.next_sweep, |at| at.min(self.next_sweep)))
    }

    /// What is due at `now`: the refreshes (each given its retry time to answer) and the
    /// sweep.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<RefreshAction<K>> {
        let mut due = Vec::new();
        for (slot, kept) in &mut self.kept {
            if kept.due <= now {
                if kept.running {
                    debug!("a refresh got no answer in time; asked for again");
                }
                kept.running = true;
                kept.due = now + self.config.retry;
                due.push(RefreshAction::Refresh {
                    slot: slot.clone(),
                    generation: kept.generation,
                });
            }
        }
        if self.next_sweep <= now {
            self.next_sweep = now + self.config.sweep_interval;
            due.push(RefreshAction::Sweep);
        }
        due
    }

    /// The answer to [`RefreshAction::Refresh`] of `slot` at `generation`: the generation
    /// stored now, or `None` when the refresh failed (tried again after the retry time).
    pub fn refreshed(&mut self, slot: &K, generation: u64, stored: Option<u64>, now: Instant) {
        let Some(kept) = self.kept.get_mut(slot) else {
            self.ignored += 1;
            return;
        };
        if kept.generation != generation || !kept.running {
            // Published again or answered already: this answer is stale.
            self.ignored += 1;
            return;
        }
        kept.running = false;
        match stored {
            Some(stored) => {
                kept.generation = stored;
                kept.due = now + kept.lifetime / 2;
            }
            None => kept.due = now + self.config.retry,
        }
    }

    /// How many answers came for refreshes no longer under way (withdrawn, published again,
    /// or answered already).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn refreshes<K>(actions: &[RefreshAction<K>]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, RefreshAction::Refresh { .. }))
            .count()
    }

    #[test]
    fn refreshes_come_at_half_the_lifetime_and_after_a_failure_at_the_retry() {
        let t0 = Instant::now();
        let config = RefreshConfig::default();
        let mut refresher = Refresher::new(config.clone(), t0);
        refresher.keep("alice", 1, HOUR, t0);
        assert_eq!(refresher.poll_timeout(), Some(t0 + config.sweep_interval));
        // The sweeps come every interval; the refresh at half an hour.
        let half = t0 + HOUR / 2;
        assert!(
            refresher
                .handle_timeout(half - Duration::from_secs(1))
                .iter()
                .all(|a| *a == RefreshAction::Sweep)
        );
        let due = refresher.handle_timeout(half);
        assert!(due.contains(&RefreshAction::Refresh {
            slot: "alice",
            generation: 1
        }));
        // It fails: tried again after the retry time.
        refresher.refreshed(&"alice", 1, None, half);
        assert_eq!(refresher.poll_timeout(), Some(half + config.retry));
        let again = half + config.retry;
        assert_eq!(
            refresher.handle_timeout(again),
            vec![RefreshAction::Refresh {
                slot: "alice",
                generation: 1
            }]
        );
        // It succeeds: the next one is half a lifetime later, at the new generation.
        refresher.refreshed(&"alice", 1, Some(2), again);
        assert!(
            refresher
                .handle_timeout(again + HOUR / 2 - Duration::from_secs(1))
                .iter()
                .all(|a| *a == RefreshAction::Sweep)
        );
        assert!(
            refresher
                .handle_timeout(again + HOUR / 2)
                .contains(&RefreshAction::Refresh {
                    slot: "alice",
                    generation: 2
                })
        );
    }

    #[test]
    fn a_new_publication_or_a_withdrawal_wins_over_a_refresh_under_way() {
        let t0 = Instant::now();
        let mut refresher = Refresher::new(RefreshConfig::default(), t0);
        refresher.keep("bob", 1, HOUR, t0);
        refresher.keep("carol", 1, HOUR, t0);
        let half = t0 + HOUR / 2;
        assert_eq!(refreshes(&refresher.handle_timeout(half)), 2);
        // Bob publishes again meanwhile; Carol withdraws.
        refresher.keep("bob", 5, HOUR, half);
        refresher.withdraw(&"carol");
        refresher.refreshed(&"bob", 1, Some(2), half);
        refresher.refreshed(&"carol", 1, Some(2), half);
        assert_eq!(refresher.ignored(), 2);
        assert_eq!(refresher.len(), 1);
        // Bob's next refresh is half a lifetime after his new publication, at generation 5.
        assert!(
            refresher
                .handle_timeout(half + HOUR / 2)
                .contains(&RefreshAction::Refresh {
                    slot: "bob",
                    generation: 5
                })
        );
        // An answer twice counts once.
        refresher.refreshed(&"bob", 5, Some(6), half + HOUR / 2);
        refresher.refreshed(&"bob", 5, Some(6), half + HOUR / 2);
        assert_eq!(refresher.ignored(), 3);
    }

    #[test]
    fn a_refresh_without_an_answer_is_asked_for_again() {
        let t0 = Instant::now();
        let config = RefreshConfig::default();
        let mut refresher = Refresher::new(config.clone(), t0);
        refresher.keep("dave", 1, HOUR, t0);
        let half = t0 + HOUR / 2;
        assert_eq!(refreshes(&refresher.handle_timeout(half)), 1);
        assert_eq!(
            refreshes(&refresher.handle_timeout(half + config.retry / 2)),
            0
        );
        assert_eq!(refreshes(&refresher.handle_timeout(half + config.retry)), 1);
    }
}
