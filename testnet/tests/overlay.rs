//! Multi-node overlay tests on loopback: registrations, access control, routing, restarts,
//! churn and overlay separation. Every wait is for a condition, with a deadline.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use p2psip_overlay::data::{AorClaim, Contact, Delegation, Kind, RegistrationValue, StoredData};
use p2psip_overlay::error::ErrorCode;
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::identity::UserKey;
use p2psip_overlay::node::Overlay;
use p2psip_testnet::{Options, Testnet};

/// Nodes in the big testnets.
const N: usize = 16;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn within<T>(what: &str, secs: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {secs} s"))
}

/// One user owning one AOR, with a claim stored through `node`.
struct User {
    key: UserKey,
    aor: String,
    resource: ResourceId,
}

impl User {
    async fn claim(node: &Overlay, aor: &str) -> User {
        let key = UserKey::generate();
        let resource = ResourceId::for_aor(aor).unwrap();
        let claim = AorClaim::new(aor, &key.public(), now_ms() + 3_600_000).unwrap();
        let (dict_key, data) = claim.entry(key.keypair(), now_ms(), 3600, 1).unwrap();
        let acked = within(
            "claim",
            30,
            node.store(resource, Kind::AOR_CLAIM, dict_key, data),
        )
        .await
        .unwrap();
        assert!(acked >= 2, "claim acked by {acked}");
        User {
            key,
            aor: aor.to_owned(),
            resource,
        }
    }

    /// A registration of the device `node` under this AOR, signed by the node's key.
    fn registration(&self, node: &Overlay, generation: u64) -> (Vec<u8>, StoredData) {
        let device = node.keypair();
        let delegation = Delegation::sign(
            self.key.keypair(),
            &self.resource,
            &device.public(),
            now_ms() + 3_600_000,
        )
        .unwrap();
        let value = RegistrationValue {
            destination: node.node_id().to_bytes(),
            contacts: vec![Contact {
                uri: format!("sip:{}@127.0.0.1:5062", self.aor),
                q: None,
            }],
            delegation,
        };
        value
            .entry(device, &self.resource, now_ms(), 3600, generation)
            .unwrap()
    }

    async fn register(&self, node: &Overlay) -> (Vec<u8>, StoredData) {
        let (key, data) = self.registration(node, 1);
        let acked = within(
            "register",
            30,
            node.store(
                self.resource,
                Kind::SIP_REGISTRATION,
                key.clone(),
                data.clone(),
            ),
        )
        .await
        .unwrap();
        assert!(acked >= 2, "registration acked by {acked}");
        (key, data)
    }
}

async fn testnet(n: usize, options: Options) -> Testnet {
    let started = Instant::now();
    let net = within("start", 60, Testnet::start(n, options))
        .await
        .unwrap();
    net.settle(Duration::from_secs(60)).await.unwrap();
    eprintln!("{n} nodes started and settled in {:?}", started.elapsed());
    net
}

/// Whether `node` fetches exactly `expected` under the user's registration.
async fn fetches(node: &Overlay, user: &User, expected: &(Vec<u8>, StoredData)) -> bool {
    match within(
        "fetch",
        30,
        node.fetch(user.resource, Kind::SIP_REGISTRATION),
    )
    .await
    {
        Ok(entries) => entries == vec![expected.clone()],
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_found_everywhere_refused_to_strangers_and_routes_arrive() {
    let started = Instant::now();
    let net = testnet(N, Options::default()).await;

    // A registration stored from one node is fetched from every node.
    let alice = User::claim(net.node(3).unwrap(), "sip:alice@example.org").await;
    let entry = alice.register(net.node(3).unwrap()).await;
    for (i, node) in net.live() {
        assert!(fetches(node, &alice, &entry).await, "node {i} misses it");
    }

    // A stranger cannot claim Alice's AOR, nor register under it with a delegation of their
    // own key: Forbidden, and nothing changes.
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
    let (key, data) = fake.registration(stranger, 5);
    let refused = stranger
        .store(alice.resource, Kind::SIP_REGISTRATION, key, data)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    for (i, node) in net.live() {
        assert!(fetches(node, &alice, &entry).await, "node {i} changed");
    }

    // Route: from every node to some others, within log2(N) + 2 hops, the answer comes back.
    for (_, node) in net.live() {
        let me = node.node_id();
        node.set_route_handler(Box::new(move |payload| {
            let mut answer = me.to_bytes();
            answer.extend(payload);
            answer
        }));
    }
    let max_hops = (N as f64).log2() as u8 + 2;
    for i in 0..N {
        let from = net.node(i).unwrap();
        for j in [(i + 1) % N, (i + 5) % N, (i + 11) % N] {
            let to = net.node(j).unwrap().node_id();
            let payload = format!("INVITE {i} -> {j}").into_bytes();
            let (answer, hops) = within("route", 30, from.route(to, payload.clone()))
                .await
                .unwrap();
            let mut expected = to.to_bytes();
            expected.extend(payload);
            assert_eq!(answer, expected);
            assert!(
                (1..=max_hops).contains(&hops),
                "{hops} hops from {i} to {j}"
            );
            let path = within("path track", 30, from.path_track(to)).await.unwrap();
            assert_eq!(path.first(), Some(&from.node_id()));
            assert_eq!(path.last(), Some(&to));
        }
        within(
            "ping",
            30,
            from.ping(net.node((i + 3) % N).unwrap().node_id()),
        )
        .await
        .unwrap();
    }
    for (_, node) in net.live() {
        assert_eq!(node.bad_messages(), 0);
    }
    eprintln!("whole test in {:?}", started.elapsed());
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_id_and_its_data() {
    let mut net = testnet(6, Options::default()).await;
    let bob = User::claim(net.node(2).unwrap(), "sip:bob@example.org").await;
    let entry = bob.register(net.node(2).unwrap()).await;

    // Restart a node that holds the registration.
    let (holder, _) = net
        .live()
        .find(|(_, node)| {
            node.local_store()
                .entry(&bob.resource, Kind::SIP_REGISTRATION, &entry.0, now_ms())
                .unwrap()
                .is_some()
        })
        .expect("some node holds the registration");
    let id = net.node(holder).unwrap().node_id();
    net.kill(holder).await.unwrap();
    within("restart", 30, net.restart(holder)).await.unwrap();
    let node = net.node(holder).unwrap();
    assert_eq!(node.node_id(), id);
    let held = node
        .local_store()
        .entry(&bob.resource, Kind::SIP_REGISTRATION, &entry.0, now_ms())
        .unwrap();
    assert_eq!(held, Some(entry.1.clone()));
    net.settle(Duration::from_secs(30)).await.unwrap();
    assert!(fetches(net.node(holder).unwrap(), &bob, &entry).await);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_killing_a_third_of_the_nodes() {
    let started = Instant::now();
    let mut net = testnet(N, Options::default()).await;
    let mut users = Vec::new();
    for u in 0..6 {
        let at = net.node((u * 5) % N).unwrap();
        let user = User::claim(at, &format!("sip:user{u}@example.org")).await;
        let entry = user.register(at).await;
        users.push((user, entry));
    }

    // Kill a third at once, but never every holder of one registration: with r = 3 replicas,
    // nothing can survive losing all three at the same instant.
    let holders = |net: &Testnet, user: &User, key: &[u8]| -> HashSet<usize> {
        net.live()
            .filter(|(_, node)| {
                node.local_store()
                    .entry(&user.resource, Kind::SIP_REGISTRATION, key, now_ms())
                    .unwrap()
                    .is_some()
            })
            .map(|(i, _)| i)
            .collect()
    };
    let held: Vec<HashSet<usize>> = users
        .iter()
        .map(|(user, (key, _))| holders(&net, user, key))
        .collect();
    let mut victims = HashSet::new();
    for i in (1..N).rev() {
        if victims.len() == N / 3 {
            break;
        }
        victims.insert(i);
        if held.iter().any(|set| set.is_subset(&victims)) {
            victims.remove(&i);
        }
    }
    assert_eq!(victims.len(), N / 3);
    eprintln!("stored; killing {victims:?}");
    for &i in &victims {
        within("kill", 30, net.kill(i)).await.unwrap();
    }
    eprintln!("killed");
    let killed_at = Instant::now();

    // Repair: replication passes until every survivor fetches every registration.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let passes = net.live().map(|(_, node)| node.replicate());
        for result in within("replication", 60, futures::future::join_all(passes)).await {
            result.unwrap();
        }
        let checks = net.live().flat_map(|(i, node)| {
            users.iter().enumerate().map(move |(u, (user, entry))| async move {
                (i, u, fetches(node, user, entry).await)
            })
        });
        let missing: Vec<(usize, usize)> = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter(|(_, _, ok)| !ok)
            .map(|(i, u, _)| (i, u))
            .collect();
        eprintln!(
            "{:?} after the kill: {} (node, user) pairs missing",
            killed_at.elapsed(),
            missing.len()
        );
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "(node, user) still missing: {missing:?}"
        );
    }
    // Some survivor holds every registration (the r-live-holders invariant is not asserted:
    // a pass that ran before a death was noticed counts the dead peer as a holder).
    for (user, (key, _)) in &users {
        assert!(!holders(&net, user, key).is_empty());
    }
    eprintln!(
        "repaired {:?} after the kill; whole test in {:?}",
        killed_at.elapsed(),
        started.elapsed()
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnets_with_different_names_never_exchange_a_message() {
    let alpha = testnet(4, Options::default().with_overlay("alpha")).await;
    let beta = testnet(4, Options::default().with_overlay("beta")).await;
    let alpha_ids: HashSet<PeerId> = alpha.live().map(|(_, node)| node.node_id()).collect();
    let beta_ids: HashSet<PeerId> = beta.live().map(|(_, node)| node.node_id()).collect();

    // A registration in alpha is not found from beta.
    let carol = User::claim(alpha.node(1).unwrap(), "sip:carol@example.org").await;
    let entry = carol.register(alpha.node(1).unwrap()).await;
    assert!(fetches(alpha.node(2).unwrap(), &carol, &entry).await);
    let from_beta = beta
        .node(2)
        .unwrap()
        .fetch(carol.resource, Kind::SIP_REGISTRATION)
        .await
        .unwrap();
    assert!(from_beta.is_empty());

    // Even connected at the transport level, a node of beta does not speak alpha's protocol.
    let a = alpha.node(0).unwrap();
    let b = beta.node(0).unwrap();
    let b_addr = b.listen_addrs().await.unwrap().remove(0);
    let _ = a.network().dial(b_addr).await;
    let refused = within("ping", 30, a.ping(b.node_id())).await.unwrap_err();
    assert!(refused.to_string().contains("does not speak"), "{refused}");
    let refused = within("route", 30, a.route(b.node_id(), b"hi".to_vec()))
        .await
        .unwrap_err();
    eprintln!("route across overlays: {refused}");

    for (_, node) in alpha.live() {
        let table: HashSet<PeerId> = node
            .network()
            .routing_table()
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert!(table.is_disjoint(&beta_ids));
        assert_eq!(node.bad_messages(), 0);
    }
    for (_, node) in beta.live() {
        let table: HashSet<PeerId> = node
            .network()
            .routing_table()
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert!(table.is_disjoint(&alpha_ids));
        assert_eq!(node.bad_messages(), 0);
    }
    alpha.shutdown().await;
    beta.shutdown().await;
}
