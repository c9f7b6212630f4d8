//! The overlay's replication and repair in the simulator ([`p2psip_overlay::sim`]): many
//! nodes on virtual time, churn, graceful leaves, expiry, loss and partitions, each run
//! replayed by its seed.
//!
//! The property, over many seeds: after churn that leaves a majority of each replica set
//! alive long enough to repair, no acknowledged registration is lost and every live node
//! finds every registration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use p2psip_overlay::core::Slot;
use p2psip_overlay::data::Kind;
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::sim::{Config, Sim, Stats};

const R: usize = 3;
const MAJORITY: usize = R / 2 + 1;

fn slot(i: usize) -> Slot {
    (
        ResourceId::for_normalized(&format!("user{i}@sim.p2p")),
        Kind::SIP_REGISTRATION,
    )
}

/// A churn scenario.
struct Churn {
    nodes: usize,
    registrations: usize,
    waves: usize,
    kills: usize,
    joins: usize,
    /// How many live nodes look every registration up at the end (all when larger).
    lookers: usize,
    /// With 0, registrations come from random nodes and a kill must leave every
    /// registration a majority of live holders; with n, they come from the first n nodes,
    /// which never die, and any other node may (whole replica sets at once).
    owners: usize,
}

/// 48 nodes, 40 registrations from random nodes, then four waves of four kills (each leaving
/// every registration a majority of live holders), two joins and five more registrations;
/// every node looks everything up at the end.
const WAVES: Churn = Churn {
    nodes: 48,
    registrations: 40,
    waves: 4,
    kills: 4,
    joins: 2,
    lookers: 48,
    owners: 0,
};

/// Publishes from random nodes (of the first `owners` when not 0); the store must be
/// acknowledged.
fn publish(sim: &mut Sim, range: std::ops::Range<usize>, owners: usize) {
    for i in range {
        let live = sim.live();
        let node = if owners > 0 {
            sim.below(owners)
        } else {
            live[sim.below(live.len())]
        };
        assert!(
            sim.publish(node, slot(i), 1),
            "registration {i} acknowledged"
        );
    }
}

/// Kills up to `n` nodes, each only if every acknowledged registration keeps a majority of
/// live holders (the property's premise).
fn kill_some(sim: &mut Sim, n: usize) -> usize {
    let holders: Vec<Vec<usize>> = sim
        .ledger()
        .iter()
        .map(|(slot, version)| sim.holders(slot, *version))
        .collect();
    let mut victims: Vec<usize> = Vec::new();
    for _ in 0..n * 4 {
        if victims.len() == n {
            break;
        }
        let live = sim.live();
        let victim = live[sim.below(live.len())];
        if victims.contains(&victim) {
            continue;
        }
        let safe = holders.iter().all(|held| {
            held.iter()
                .filter(|h| **h != victim && !victims.contains(h))
                .count()
                >= MAJORITY
        });
        if safe {
            victims.push(victim);
        }
    }
    for victim in &victims {
        sim.kill(*victim);
    }
    victims.len()
}

/// Runs the scenario; gives the run's counts and what it found wrong (empty: nothing).
fn run(churn: &Churn, seed: u64) -> (Stats, Vec<String>) {
    run_with(churn, Config::new(churn.nodes, seed))
}

/// [`run`] with a configuration of the simulator's own.
fn run_with(churn: &Churn, config: Config) -> (Stats, Vec<String>) {
    let mut sim = Sim::new(config);
    sim.run_for(Duration::from_secs(1));
    publish(&mut sim, 0..churn.registrations, churn.owners);
    let mut next = churn.registrations;
    for _ in 0..churn.waves {
        if churn.owners > 0 {
            for _ in 0..churn.kills {
                let live: Vec<usize> = sim
                    .live()
                    .into_iter()
                    .filter(|n| *n >= churn.owners)
                    .collect();
                let victim = live[sim.below(live.len())];
                sim.kill(victim);
            }
        } else {
            kill_some(&mut sim, churn.kills);
        }
        for _ in 0..churn.joins {
            let live = sim.live();
            let bootstrap = live[sim.below(live.len())];
            sim.join(bootstrap);
        }
        // New registrations while the overlay repairs.
        publish(&mut sim, next..next + 5, churn.owners);
        next += 5;
        sim.run_for(Duration::from_secs(20));
    }
    // Long enough for a periodic pass that pushes to every member again.
    sim.run_for(Duration::from_secs(130));
    let wrong = check(&mut sim, churn.lookers);
    (sim.stats().clone(), wrong)
}

fn check(sim: &mut Sim, lookers: usize) -> Vec<String> {
    let mut wrong = Vec::new();
    let ledger: Vec<(Slot, u64)> = sim.ledger().iter().map(|(s, v)| (*s, *v)).collect();
    for (slot, version) in &ledger {
        if sim.holders(slot, *version).is_empty() {
            wrong.push(format!("{} lost", slot.0));
        }
    }
    let live = sim.live();
    let step = (live.len() / lookers.max(1)).max(1);
    for node in live.into_iter().step_by(step) {
        for (slot, version) in &ledger {
            let found = sim.lookup(node, *slot);
            if found < Some(*version) {
                wrong.push(format!("node {node} found {found:?} for {}", slot.0));
            }
        }
    }
    wrong
}

#[test]
fn churn_loses_no_acknowledged_registration_over_many_seeds() {
    let churn = WAVES;
    for seed in 0..12 {
        let (stats, wrong) = run(&churn, seed);
        assert!(wrong.is_empty(), "seed {seed}: {wrong:?} ({stats:?})");
        assert!(
            stats.pushes > 0 && stats.passes > 0,
            "seed {seed}: {stats:?}"
        );
    }
}

/// Peers over their per-peer limits answer Busy, as real nodes do: a busy push is sent again
/// later, a busy replica of a store or lookup is replaced by the next candidate. Repair still
/// gets there, and the limits do bite (requests answered Busy in every run).
#[test]
fn with_busy_peers_repair_still_gets_there() {
    let churn = WAVES;
    for seed in 700..706 {
        let mut config = Config::new(churn.nodes, seed);
        // Four requests at once from one peer, then twenty a second.
        config.peer_limit = Some((20, 4));
        let (stats, wrong) = run_with(&churn, config);
        assert!(wrong.is_empty(), "seed {seed}: {wrong:?} ({stats:?})");
        assert!(
            stats.busy > 0,
            "seed {seed}: no request was busy ({stats:?})"
        );
    }
}

/// Owners that stay restore what dies with whole replica sets: a quarter of the other nodes
/// killed at once, three times.
#[test]
fn owners_restore_registrations_whose_replicas_all_died() {
    let churn = Churn {
        nodes: 40,
        registrations: 40,
        waves: 3,
        kills: 8,
        joins: 2,
        lookers: 40,
        owners: 4,
    };
    for seed in 300..308 {
        let (stats, wrong) = run(&churn, seed);
        assert!(wrong.is_empty(), "seed {seed}: {wrong:?} ({stats:?})");
    }
}

/// Joins never thin a replica set: while new nodes take over the replica sets of many
/// registrations, with 5% of messages lost, the old holders keep their copies until every
/// new member acknowledged one, so at no moment does a registration have fewer than `r`
/// live holders.
#[test]
fn joins_never_leave_a_registration_with_fewer_than_r_holders() {
    for seed in 600..604 {
        let mut config = Config::new(32, seed);
        // Lost messages make some pushes fail: a walk then ends with fewer than r
        // acknowledgements, and the old holder must keep its copy.
        config.loss = 0.05;
        let mut sim = Sim::new(config);
        sim.run_for(Duration::from_secs(1));
        publish(&mut sim, 0..40, 0);
        sim.run_for(Duration::from_secs(10));
        for _ in 0..32 {
            let live = sim.live();
            let bootstrap = live[sim.below(live.len())];
            sim.join(bootstrap);
        }
        let mut thinnest = usize::MAX;
        for _ in 0..1200 {
            sim.run_for(Duration::from_millis(50));
            for i in 0..40 {
                thinnest = thinnest.min(sim.holders(&slot(i), 1).len());
            }
        }
        assert!(
            thinnest >= R,
            "seed {seed}: a registration had {thinnest} holders"
        );
        assert!(
            sim.stats().dropped > 0,
            "seed {seed}: no copy changed hands"
        );
    }
}

/// Nodes that leave gracefully hand what they hold over before they go: whole replica sets
/// leave one node after another, faster than the others' repair runs, after the owner died
/// (unnoticed), and every registration is still held by `r` live nodes and found by every
/// live node.
#[test]
fn whole_replica_sets_that_leave_one_by_one_hand_their_data_over() {
    for seed in 400..406 {
        let mut config = Config::new(24, seed);
        // Deaths are noticed late: only the handovers can keep the data.
        config.detect_delay = (Duration::from_secs(600), Duration::from_secs(600));
        let mut sim = Sim::new(config);
        sim.run_for(Duration::from_secs(1));
        for i in 0..10 {
            assert!(sim.publish(0, slot(i), 1), "registration {i} acknowledged");
        }
        sim.run_for(Duration::from_secs(5));
        sim.kill(0);
        let mut leavers: Vec<usize> = (0..3)
            .flat_map(|i| sim.holders(&slot(i), 1))
            .filter(|node| *node != 0)
            .collect();
        leavers.sort_unstable();
        leavers.dedup();
        for leaver in leavers {
            assert!(
                sim.leave(leaver),
                "seed {seed}: node {leaver}'s handover ended"
            );
        }
        // Each handover pushed to r peers: every registration has r live holders at once.
        for i in 0..10 {
            let holders = sim.holders(&slot(i), 1);
            assert!(holders.len() >= R, "seed {seed}: {i} held by {holders:?}");
        }
        let wrong = check(&mut sim, 24);
        assert!(
            wrong.is_empty(),
            "seed {seed}: {wrong:?} ({:?})",
            sim.stats()
        );
    }
}

/// Published entries live as long as their owners refresh them: after five lifetimes the
/// kept registrations are still held by `r` nodes and found everywhere, and the withdrawn
/// ones (and those whose owner died) are held and found nowhere, their copies swept.
#[test]
fn kept_registrations_outlive_their_lifetime_and_withdrawn_ones_expire() {
    for seed in 500..504 {
        let mut config = Config::new(24, seed);
        config.lifetime = Duration::from_secs(120);
        let mut sim = Sim::new(config);
        sim.run_for(Duration::from_secs(1));
        // Registration i is owner (i % 4)'s; owner 3 dies, 0 and 1 are withdrawn.
        for i in 0..12 {
            assert!(
                sim.publish(i % 4, slot(i), 1),
                "registration {i} acknowledged"
            );
        }
        sim.kill(3);
        sim.withdraw(0, slot(0));
        sim.withdraw(1, slot(1));
        sim.run_for(Duration::from_secs(600));
        let live: Vec<usize> = sim.live();
        for i in 0..12 {
            let kept = i > 1 && i % 4 != 3;
            let holders = sim.holders(&slot(i), 0);
            let found = sim.lookup(live[i % live.len()], slot(i));
            if kept {
                assert!(holders.len() >= R, "seed {seed}: {i} held by {holders:?}");
                assert!(
                    found > Some(1),
                    "seed {seed}: {i} found {found:?}, never refreshed"
                );
            } else {
                assert!(
                    holders.is_empty(),
                    "seed {seed}: {i} still held by {holders:?}"
                );
                assert_eq!(found, None, "seed {seed}: {i}");
            }
        }
        assert!(sim.stats().swept > 0, "seed {seed}: nothing swept");
    }
}

#[test]
fn with_lost_messages_repair_still_gets_there() {
    let churn = Churn {
        nodes: 32,
        registrations: 30,
        waves: 3,
        kills: 3,
        joins: 1,
        lookers: 32,
        owners: 0,
    };
    for seed in 100..104 {
        let mut config = Config::new(churn.nodes, seed);
        config.loss = 0.02;
        let mut sim = Sim::new(config);
        sim.run_for(Duration::from_secs(1));
        // A store may fail with loss; only acknowledged ones are in the ledger.
        for i in 0..churn.registrations {
            let live = sim.live();
            let node = live[sim.below(live.len())];
            sim.publish(node, slot(i), 1);
        }
        assert!(sim.ledger().len() >= churn.registrations * 9 / 10);
        for _ in 0..churn.waves {
            kill_some(&mut sim, churn.kills);
            sim.run_for(Duration::from_secs(20));
        }
        sim.run_for(Duration::from_secs(130));
        let ledger: Vec<(Slot, u64)> = sim.ledger().iter().map(|(s, v)| (*s, *v)).collect();
        for (slot, version) in ledger {
            assert!(
                !sim.holders(&slot, version).is_empty(),
                "seed {seed}: {} lost",
                slot.0
            );
        }
        assert!(sim.stats().lost > 0, "some messages were lost");
    }
}

#[test]
fn a_partition_heals_and_every_node_finds_what_either_side_stored() {
    for seed in 200..204 {
        let mut sim = Sim::new(Config::new(40, seed));
        sim.run_for(Duration::from_secs(1));
        publish(&mut sim, 0..20, 0);
        sim.partition(|node| (node % 2) as u8);
        sim.run_for(Duration::from_secs(10));
        // Each side stores new registrations among the nodes it still sees.
        for i in 20..30 {
            let side = i % 2;
            let live: Vec<usize> = sim.live().into_iter().filter(|n| n % 2 == side).collect();
            let node = live[sim.below(live.len())];
            assert!(
                sim.publish(node, slot(i), 1),
                "seed {seed}: {i} stored on its side"
            );
        }
        sim.run_for(Duration::from_secs(30));
        sim.heal();
        sim.run_for(Duration::from_secs(130));
        let wrong = check(&mut sim, 40);
        assert!(wrong.is_empty(), "seed {seed}: {wrong:?}");
    }
}

#[test]
fn a_seed_replays_a_run_exactly() {
    let churn = Churn {
        nodes: 24,
        registrations: 20,
        waves: 2,
        kills: 3,
        joins: 1,
        lookers: 4,
        owners: 0,
    };
    let holders = |seed| {
        let mut sim = Sim::new(Config::new(churn.nodes, seed));
        sim.run_for(Duration::from_secs(1));
        publish(&mut sim, 0..churn.registrations, 0);
        for _ in 0..churn.waves {
            kill_some(&mut sim, churn.kills);
            sim.run_for(Duration::from_secs(20));
        }
        let held: Vec<Vec<usize>> = (0..churn.registrations)
            .map(|i| sim.holders(&slot(i), 1))
            .collect();
        (sim.stats().clone(), held)
    };
    let first = holders(7);
    assert_eq!(first, holders(7));
    assert_ne!(first, holders(8), "another seed, another run");
}

#[test]
fn a_thousand_nodes_keep_every_registration_through_churn() {
    let churn = Churn {
        nodes: 1000,
        registrations: 300,
        waves: 2,
        kills: 50,
        joins: 10,
        lookers: 10,
        owners: 0,
    };
    let (stats, wrong) = run(&churn, 1);
    assert!(wrong.is_empty(), "{wrong:?} ({stats:?})");
    // Repaired, the overlay answers every lookup in one round trip.
    eprintln!(
        "lookups after repair: {} in one round trip, {} full",
        stats.direct_lookups, stats.full_lookups
    );
    assert_eq!(stats.full_lookups, 0, "{stats:?}");
    assert!(stats.direct_lookups > 0);
}

/// Route messages over Kademlia routing tables (20 peers a bucket) when no direct
/// connection is possible: at 1,000 nodes the mean hop count stays within
/// `log2(N) / 2 + 2`, and every message arrives, also after a tenth of the nodes died.
#[test]
fn routes_at_a_thousand_nodes_take_few_hops() {
    let mut sim = Sim::new(Config::new(1000, 5));
    let bound = (1000f64).log2() / 2.0 + 2.0;
    for phase in ["settled", "after a tenth died"] {
        let live = sim.live();
        let mut total = 0u64;
        let pairs = 400;
        for _ in 0..pairs {
            let from = live[sim.below(live.len())];
            let to = live[sim.below(live.len())];
            let hops = sim.route(from, to);
            assert!(hops.is_some(), "{phase}: {from} -> {to} got lost");
            total += u64::from(hops.unwrap_or(0));
        }
        let mean = total as f64 / f64::from(pairs);
        eprintln!("{phase}: mean hops {mean:.2} at 1,000 nodes (bound {bound:.2})");
        assert!(mean <= bound, "{phase}: mean hops {mean} over {bound}");
        for _ in 0..100 {
            let live = sim.live();
            let victim = live[sim.below(live.len())];
            sim.kill(victim);
        }
    }
}

/// How often the peers a node believes closest to a resource are its replica set, with
/// Kademlia routing tables of k peers a bucket (each bucket full: the best a table can know):
/// that is how often a lookup costs one round trip. With the node's k = 128, every node of a
/// 128-node overlay knows the replicas of everything; with Kademlia's 20, a lookup there
/// mostly needs a second phase.
#[test]
fn with_buckets_of_128_a_node_of_128_knows_the_replicas_of_everything() {
    let share = |nodes: usize, k: usize| {
        let mut config = Config::new(nodes, 9);
        config.bucket_size = k;
        let mut sim = Sim::new(config);
        let tries = 400;
        let known = (0..tries)
            .filter(|i| {
                let from = sim.below(nodes);
                let resource = ResourceId::for_normalized(&format!("user{i}@sim.p2p"));
                sim.table_knows_replicas(from, &resource)
            })
            .count();
        known as f64 / tries as f64
    };
    let (small, large) = (share(128, 20), share(128, 128));
    let thousand = share(1000, 128);
    eprintln!(
        "replica sets a node's table holds: {:.0}% with k = 20 and {:.0}% with k = 128 at 128 \
         nodes; {:.0}% with k = 128 at 1,000",
        small * 100.0,
        large * 100.0,
        thousand * 100.0
    );
    assert_eq!(large, 1.0);
    assert!(small < 0.5, "{small}");
}
