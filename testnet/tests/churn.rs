//! Churn on 32 nodes: kill 10 at once, and every registration is still fetched from every
//! survivor, with its replica set back to `r` live holders; a killed node restarted from its
//! data directory comes back with its Node-ID and its data.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2psip_overlay::data::Kind;
use p2psip_overlay::id::{ResourceId, closest_nodes};
use p2psip_testnet::Options;
use support::{N, User, eventually, missing, testnet, within};

/// Users, each published by its own node.
const USERS: usize = 8;
const KILLED: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_killing_10_of_32_nodes_and_a_node_restarts() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let started = Instant::now();
    let mut net = testnet(N, Options::default()).await;
    let owners: Vec<usize> = (0..USERS).map(|u| (u * 4 + 1) % N).collect();
    // The first two users' AORs are named so that no owner is among their replicas: the
    // test kills those replica sets whole.
    let ids: Vec<_> = net.live().map(|(_, node)| node.node_id()).collect();
    let owner_ids: HashSet<_> = owners.iter().map(|&i| ids[i]).collect();
    let aor = |u: usize| {
        (0..)
            .map(|k| format!("sip:user{u}.{k}@example.org"))
            .find(|aor| {
                let resource = ResourceId::for_aor(aor).unwrap();
                u >= 2
                    || closest_nodes(&resource, ids.iter().copied(), 3)
                        .iter()
                        .all(|id| !owner_ids.contains(id))
            })
            .unwrap()
    };
    let mut users = Vec::new();
    for (u, &at) in owners.iter().enumerate() {
        let node = net.node(at).unwrap();
        let user = User::claim(node, &aor(u)).await;
        let entry = user.publish(node, 3600).await;
        users.push((user, entry));
    }

    // Kill 10 nodes at once among those that own no registration (an owner that dies takes
    // its device's registration with it; it is not expected to survive): every holder of
    // two users (their owners must restore them from scratch), and others chosen at random.
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("victims drawn with seed {seed}");
    let mut victims: HashSet<usize> = users[..2]
        .iter()
        .flat_map(|(user, (key, _))| user.holders(&net, key))
        .filter(|i| !owners.contains(i))
        .collect();
    let mut candidates: Vec<usize> = (0..N)
        .filter(|i| !owners.contains(i) && !victims.contains(i))
        .collect();
    while victims.len() < KILLED {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = (seed >> 33) as usize % candidates.len();
        victims.insert(candidates.swap_remove(pick));
    }
    let lost_every_holder = users
        .iter()
        .filter(|(user, (key, _))| user.holders(&net, key).is_subset(&victims))
        .count();
    eprintln!("killing {victims:?}; {lost_every_holder} registrations lose every holder");
    assert!(
        lost_every_holder >= 2,
        "the test must kill whole replica sets"
    );
    // The victim that comes back at the end (the one that held the most), and what it held.
    let held = |i: usize| -> HashSet<_> {
        net.node(i)
            .unwrap()
            .local_store()
            .all_resources()
            .map(Result::unwrap)
            .collect()
    };
    let back = *victims.iter().max_by_key(|&&i| held(i).len()).unwrap();
    let back_id = net.node(back).unwrap().node_id();
    let back_held = held(back);
    eprintln!(
        "node {back} comes back; it holds {} resources",
        back_held.len()
    );
    for &i in &victims {
        within("kill", 30, net.kill(i)).await.unwrap();
    }
    let killed_at = Instant::now();

    // Repair: replication passes until every survivor fetches every registration and each
    // registration has r live holders again.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let passes = net.live().map(|(_, node)| node.replicate());
        for result in within("replication", 60, futures::future::join_all(passes)).await {
            result.unwrap();
        }
        let missing = missing(&net, &users).await;
        let thin: Vec<(usize, usize)> = users
            .iter()
            .enumerate()
            .map(|(u, (user, (key, _)))| (u, user.holders(&net, key).len()))
            .filter(|&(_, held)| held < 3)
            .collect();
        eprintln!(
            "{:?} after the kill: {} (node, user) pairs missing, (user, holders) under r: {thin:?}",
            killed_at.elapsed(),
            missing.len()
        );
        if missing.is_empty() && thin.is_empty() {
            break;
        }
        for &(u, _) in &thin {
            let (user, _) = &users[u];
            let owner = net.node(owners[u]).unwrap();
            let live = net.live().map(|(_, node)| node.node_id());
            let closest = closest_nodes(&user.resource, live, 3);
            let known: HashSet<_> = owner
                .network()
                .routing_table()
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
            let connected: HashSet<_> = owner
                .network()
                .connected_peers()
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
            eprintln!(
                "user {u}: its owner knows {} and is connected to {} of the 3 closest live nodes; routing table {} peers",
                closest.iter().filter(|p| known.contains(p)).count(),
                closest.iter().filter(|p| connected.contains(p)).count(),
                known.len()
            );
        }
        assert!(
            Instant::now() < deadline,
            "still missing {missing:?}, under r {thin:?}"
        );
    }
    eprintln!("repaired {:?} after the kill", killed_at.elapsed());

    // A killed node restarts from its data directory: same Node-ID, the data it held, back
    // in the overlay (it is reached again and fetches every registration).
    within("restart", 30, net.restart(back)).await.unwrap();
    let node = net.node(back).unwrap();
    assert_eq!(node.node_id(), back_id);
    let held_after: HashSet<_> = node
        .local_store()
        .all_resources()
        .map(Result::unwrap)
        .collect();
    assert!(
        back_held.is_subset(&held_after),
        "lost on restart: {:?}",
        back_held.difference(&held_after).collect::<Vec<_>>()
    );
    // Its routing table fills while it rejoins: a fetch may miss in the first seconds (then
    // the answer is printed), never for long.
    for (u, (user, entry)) in users.iter().enumerate() {
        eventually(
            "the restarted node fetches every registration",
            20,
            || async {
                let got = within(
                    "fetch",
                    30,
                    node.fetch(user.resource, Kind::SIP_REGISTRATION),
                )
                .await;
                let ok = got.as_ref().is_ok_and(|got| *got == [entry.clone()]);
                if !ok {
                    let known = node.network().routing_table().await.unwrap_or_default();
                    eprintln!(
                        "the restarted node, routing table {} peers, fetches for user {u}: {got:?}",
                        known.len()
                    );
                }
                ok
            },
        )
        .await;
    }
    eventually("the others reach the restarted node", 60, || async {
        net.node(owners[0]).unwrap().ping(back_id).await.is_ok()
    })
    .await;
    eprintln!("whole test in {:?}", started.elapsed());
    net.shutdown().await;
}
