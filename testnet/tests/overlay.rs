//! 32 nodes on loopback: a registration stored from one node is fetched from every node;
//! strangers, bad signatures, lower generations and older storage times are refused with
//! their own error and change nothing; expired entries leave every replica; a published entry
//! outlives its lifetime because its owner refreshes it; a Route from every node to every
//! other arrives within log2(N) + 2 hops.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod support;

use std::time::{Duration, Instant};

use p2psip_overlay::data::{AorClaim, Kind};
use p2psip_overlay::error::{Error as OverlayError, ErrorCode};
use p2psip_overlay::identity::UserKey;
use p2psip_testnet::{Options, Testnet};
use support::{N, User, eventually, fetched, fetches, now_ms, testnet, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_refusals_expiry_refresh_and_routes_on_32_nodes() {
    let started = Instant::now();
    let mut options = Options::default();
    options.sweep_interval = Duration::from_millis(500);
    let net = testnet(N, options).await;
    check_everything(&net).await;
    eprintln!("whole test in {:?}", started.elapsed());
    net.shutdown().await;
}

async fn check_everything(net: &Testnet) {
    // A registration stored from one node is fetched from every node.
    let alice = User::claim(net.node(3).unwrap(), "sip:alice@example.org").await;
    let entry = alice.register(net.node(3).unwrap(), 3600).await;
    for (i, node) in net.live() {
        assert!(fetches(node, &alice, &entry).await, "node {i} misses it");
    }

    // A stranger cannot claim Alice's AOR, nor register under it with a delegation of their
    // own key.
    let mallory = UserKey::generate();
    let stranger = net.node(7).unwrap();
    let claim = AorClaim::new(&alice.aor, &mallory.public(), now_ms() + 3_600_000).unwrap();
    let (key, data) = claim.entry(mallory.keypair(), now_ms(), 3600, 2).unwrap();
    let refused = stranger
        .store(alice.resource, Kind::AOR_CLAIM, key, data)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    let fake = User {
        key: mallory,
        aor: alice.aor.clone(),
        resource: alice.resource,
    };
    let (key, data) = fake.registration(stranger, now_ms(), 3600, 5);
    let refused = stranger
        .store(alice.resource, Kind::SIP_REGISTRATION, key, data)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");

    // Alice's own device: a value altered after signing, a lower generation, an older
    // storage time; each its own error.
    let device = net.node(3).unwrap();
    let (key, mut forged) = alice.registration(device, now_ms(), 3600, 9);
    forged.lifetime += 1;
    let refused = device
        .store(alice.resource, Kind::SIP_REGISTRATION, key, forged)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    assert!(refused.to_string().contains("signature"), "{refused}");
    let (key, data) = alice.registration(device, now_ms(), 3600, 0);
    let refused = device
        .store(alice.resource, Kind::SIP_REGISTRATION, key, data)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::GenerationTooLow),
        "{refused}"
    );
    let (key, data) = alice.registration(device, entry.1.storage_time - 1000, 3600, 2);
    let refused = device
        .store(alice.resource, Kind::SIP_REGISTRATION, key, data)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::DataTooOld), "{refused}");
    for (i, node) in net.live() {
        assert!(fetches(node, &alice, &entry).await, "node {i} changed");
    }

    // An entry stored for 2 s expires and is swept from every replica; one published for
    // 2 s is refreshed by its owner and outlives it.
    let bob = User::claim(net.node(11).unwrap(), "sip:bob@example.org").await;
    let short = bob.register(net.node(11).unwrap(), 2).await;
    let carol = User::claim(net.node(19).unwrap(), "sip:carol@example.org").await;
    let published = carol.publish(net.node(19).unwrap(), 2).await;
    let holders = bob.holders(net, &short.0);
    assert!(holders.len() >= 2, "held by {holders:?}");
    eventually("the expired entry is swept everywhere", 30, || async {
        net.live().all(|(_, node)| {
            !node
                .local_store()
                .all_resources()
                .any(|r| r.unwrap() == (bob.resource, Kind::SIP_REGISTRATION))
        })
    })
    .await;
    for (i, node) in net.live() {
        assert_eq!(fetched(node, &bob).await, Some(Vec::new()), "node {i}");
    }
    let first_expiry = published.1.expires_at_ms();
    eventually("the first version's lifetime is over", 10, || async {
        now_ms() > first_expiry
    })
    .await;
    let refreshed = fetched(net.node(0).unwrap(), &carol).await.unwrap();
    assert_eq!(refreshed.len(), 1, "{refreshed:?}");
    assert_eq!(refreshed[0].0, published.0);
    assert!(refreshed[0].1.generation > published.1.generation);
    assert_eq!(refreshed[0].1.value, published.1.value);
    // Withdrawn, it expires.
    net.node(19)
        .unwrap()
        .withdraw(carol.resource, Kind::SIP_REGISTRATION, &published.0);
    eventually("the withdrawn entry expires", 30, || async {
        fetched(net.node(0).unwrap(), &carol).await == Some(Vec::new())
    })
    .await;

    // Route: from every node to every other, within log2(N) + 2 hops, the answer comes back
    // from the destination's handler; a payload the handler refuses comes back as its error.
    for (_, node) in net.live() {
        let me = node.node_id();
        node.set_route_handler(Box::new(move |_from, payload| {
            if payload.is_empty() {
                return Err(OverlayError::invalid("an empty payload"));
            }
            let mut answer = me.to_bytes();
            answer.extend(payload);
            Ok(answer)
        }));
    }
    let max_hops = (N as f64).log2() as u8 + 2;
    let mut histogram = [0usize; 16];
    for i in 0..N {
        let from = net.node(i).unwrap();
        let routes = (0..N).filter(|&j| j != i).map(|j| async move {
            let to = net.node(j).unwrap().node_id();
            let payload = format!("INVITE {i} -> {j}").into_bytes();
            let (answer, hops) = within("route", 30, from.route(to, payload.clone()))
                .await
                .unwrap();
            let mut expected = to.to_bytes();
            expected.extend(payload);
            assert_eq!(answer, expected, "route {i} -> {j}");
            assert!(
                (1..=max_hops).contains(&hops),
                "{hops} hops from {i} to {j}"
            );
            hops
        });
        for hops in futures::future::join_all(routes).await {
            histogram[usize::from(hops)] += 1;
        }
        let to = net.node((i + 7) % N).unwrap().node_id();
        let path = within("path track", 30, from.path_track(to)).await.unwrap();
        assert_eq!(path.first(), Some(&from.node_id()));
        assert_eq!(path.last(), Some(&to));
        let refused = within("route", 30, from.route(to, Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::InvalidMessage), "{refused}");
    }
    eprintln!("route hops (count by hops): {histogram:?}");
    for (_, node) in net.live() {
        assert_eq!(node.bad_messages(), 0);
    }
}
