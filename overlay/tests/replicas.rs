//! Attacks on the replicas of an AOR, on real sockets (overlay nodes in this process on
//! 127.0.0.1): a lying replica, a stale one and a silent one cannot change what a lookup
//! finds; a claim without the enrollment CA's certificate is ignored by the fetching node; a
//! replica that refuses a copy is not a holder; a node outside a resource's replica set
//! refuses to store it.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use p2psip_overlay::access::AccessPolicy;
use p2psip_overlay::data::{AorClaim, Delegation, Kind, RegistrationValue, StoredData};
use p2psip_overlay::error::ErrorCode;
use p2psip_overlay::id::{ResourceId, closest_nodes};
use p2psip_overlay::identity::NodeKey;
use p2psip_overlay::message::{self, Body, Envelope, Request, Response};
use p2psip_overlay::network::{self, Event, Network};
use p2psip_overlay::node::{self, Overlay};
use p2psip_overlay::store::Limits;

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

fn network_config(bootstrap: Vec<Multiaddr>) -> network::Config {
    network::Config::default()
        .with_overlay("replicas-test")
        .with_listen([quic()])
        .with_bootstrap(bootstrap)
        .with_mdns(false)
}

/// Overlay nodes on loopback, node 0 first and the others bootstrapping from it.
struct Net {
    nodes: Vec<Overlay>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Net {
    /// Starts `n` nodes, each configured by `tweak` first; `extra` peers (raw networks) that
    /// must also be known are waited for too.
    async fn start(
        n: usize,
        tweak: impl Fn(usize, &mut node::Config),
        extra: impl AsyncFn(Multiaddr) -> Vec<PeerId>,
    ) -> Net {
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let configure = |i: usize, bootstrap: Vec<Multiaddr>| {
            let mut config =
                node::Config::new(dirs[i].path()).with_network(network_config(bootstrap));
            config.repair_delay = Duration::from_millis(200);
            config.lookup_timeout = Duration::from_millis(500);
            config.request_timeout = Duration::from_secs(1);
            tweak(i, &mut config);
            config
        };
        let first = Overlay::start(configure(0, Vec::new())).await.unwrap();
        let addr = first.listen_addrs().await.unwrap().remove(0);
        let mut nodes = vec![first];
        for i in 1..n {
            nodes.push(
                Overlay::start(configure(i, vec![addr.clone()]))
                    .await
                    .unwrap(),
            );
        }
        let mut all: Vec<PeerId> = nodes.iter().map(Overlay::node_id).collect();
        all.extend(extra(addr).await);
        let net = Net { nodes, _dirs: dirs };
        net.settle(&all).await;
        net
    }

    /// Waits until every node's routing table holds every other peer of `all`.
    async fn settle(&self, all: &[PeerId]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut lagging = 0;
            for node in &self.nodes {
                let table = node.network().routing_table().await.unwrap();
                let me = node.node_id();
                if all.iter().any(|p| *p != me && !table.contains(p)) {
                    lagging += 1;
                }
            }
            if lagging == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{lagging} nodes have not settled"
            );
            for node in &self.nodes {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), node.network().bootstrap()).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn ids(&self) -> Vec<PeerId> {
        self.nodes.iter().map(Overlay::node_id).collect()
    }

    fn index(&self, id: &PeerId) -> usize {
        self.nodes.iter().position(|n| n.node_id() == *id).unwrap()
    }
}

/// The first AOR `sip:user<i>@example.org` whose peers, ranked by distance (closest first),
/// satisfy `pick`.
fn aor_where(peers: &[PeerId], pick: impl Fn(&[PeerId]) -> bool) -> (String, ResourceId) {
    for i in 0.. {
        let aor = format!("sip:user{i}@example.org");
        let resource = ResourceId::for_aor(&aor).unwrap();
        if pick(&closest_nodes(&resource, peers.iter().copied(), usize::MAX)) {
            return (aor, resource);
        }
    }
    unreachable!()
}

/// A user: a key, an AOR, and a device (any key: the device's Node-ID is the destination).
struct User {
    key: Keypair,
    device: Keypair,
    aor: String,
    resource: ResourceId,
}

impl User {
    fn new(aor: &str) -> User {
        User {
            key: Keypair::generate_ed25519(),
            device: Keypair::generate_ed25519(),
            aor: aor.to_owned(),
            resource: ResourceId::for_aor(aor).unwrap(),
        }
    }

    fn claim(&self, ca: Option<&Keypair>, generation: u64) -> (Vec<u8>, StoredData) {
        let mut claim = AorClaim::new(&self.aor, &self.key.public(), now_ms() + 3_600_000).unwrap();
        if let Some(ca) = ca {
            claim = claim.certified(ca).unwrap();
        }
        claim.entry(&self.key, now_ms(), 3600, generation).unwrap()
    }

    fn registration(&self, generation: u64) -> (Vec<u8>, StoredData) {
        RegistrationValue {
            destination: self.device.public().to_peer_id().to_bytes(),
            contacts: Vec::new(),
            delegation: Delegation::sign(
                &self.key,
                &self.resource,
                &self.device.public(),
                now_ms() + 3_600_000,
            )
            .unwrap(),
        }
        .entry(&self.device, &self.resource, now_ms(), 3600, generation)
        .unwrap()
    }

    fn device_key(&self) -> Vec<u8> {
        self.device.public().to_peer_id().to_bytes()
    }

    /// Claims the AOR and registers the device through `node` (stored on the replicas).
    async fn claim_and_register(&self, node: &Overlay, ca: Option<&Keypair>) {
        let (key, data) = self.claim(ca, 1);
        node.store(self.resource, Kind::AOR_CLAIM, key, data)
            .await
            .unwrap();
        let (key, data) = self.registration(1);
        node.store(self.resource, Kind::SIP_REGISTRATION, key, data)
            .await
            .unwrap();
    }

    /// Writes straight into `node`'s store, as a malicious replica would: its own claim of the
    /// AOR (another key, a far higher generation) and its device, and no trace of `victim`'s.
    fn take_over(&self, node: &Overlay, victim: &User, ca: Option<&Keypair>) {
        let store = node.local_store();
        let (key, data) = self.claim(ca, u64::MAX / 2);
        store
            .put(&victim.resource, Kind::AOR_CLAIM, &key, &data, now_ms())
            .unwrap();
        let (key, data) = self.registration(u64::MAX / 2);
        store
            .put(
                &victim.resource,
                Kind::SIP_REGISTRATION,
                &key,
                &data,
                now_ms(),
            )
            .unwrap();
        store
            .remove(
                &victim.resource,
                Kind::SIP_REGISTRATION,
                &victim.device_key(),
            )
            .unwrap();
    }
}

/// The user key and the devices a verified fetch finds.
async fn looked_up(node: &Overlay, aor: &str) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    let verified = tokio::time::timeout(WAIT, node.fetch_verified(aor))
        .await
        .unwrap()
        .unwrap();
    (
        verified.claim.map(|(_, claim)| claim.user_key),
        verified.registrations.keys().cloned().collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_replica_cannot_take_an_aor_over_nor_hide_a_device() {
    let net = Net::start(4, |_, _| {}, async |_| Vec::new()).await;
    let (aor, resource) = aor_where(&net.ids(), |_| true);
    let ranked = closest_nodes(&resource, net.ids(), usize::MAX);
    let liar = &net.nodes[net.index(&ranked[0])];
    let outsider = &net.nodes[net.index(&ranked[3])];
    let alice = User::new(&aor);
    alice.claim_and_register(outsider, None).await;
    let mallory = User::new(&aor);
    mallory.take_over(liar, &alice, None);

    for node in &net.nodes {
        let (owner, devices) = looked_up(node, &aor).await;
        assert_eq!(owner, Some(alice.key.public().encode_protobuf()));
        assert_eq!(devices, vec![alice.device_key()], "from {}", node.node_id());
    }
    assert!(
        outsider.rejected_entries() > 0,
        "the liar's device is counted"
    );
    for node in &net.nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stale_and_one_silent_replica_change_nothing() {
    // The silent replica: a peer of the overlay that takes requests and never answers.
    let silent_key = Keypair::generate_ed25519();
    let silent_id = silent_key.public().to_peer_id();
    let (silent, mut events) = Network::start(silent_key, network_config(Vec::new()))
        .await
        .unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(event) = events.recv().await {
            if let Event::Request { responder, .. } = event {
                held.push(responder);
            }
        }
        held.len()
    });
    let net = Net::start(
        5,
        |_, _| {},
        async |addr| {
            silent.dial(addr).await.unwrap();
            let _ = silent.bootstrap().await;
            vec![silent_id]
        },
    )
    .await;
    let mut everyone = net.ids();
    everyone.push(silent_id);
    // The silent peer and two nodes are the replica set.
    let (aor, resource) = aor_where(&everyone, |ranked| ranked[..3].contains(&silent_id));
    let ranked: Vec<PeerId> = closest_nodes(&resource, everyone, usize::MAX)
        .into_iter()
        .filter(|p| *p != silent_id)
        .collect();
    let stale = &net.nodes[net.index(&ranked[0])];
    let storer = &net.nodes[net.index(&ranked[3])];
    let fetcher = &net.nodes[net.index(&ranked[4])];
    let alice = User::new(&aor);
    alice.claim_and_register(storer, None).await;
    // The stale replica lost everything (an empty answer).
    for kind in Kind::KNOWN {
        for (key, _) in stale.local_store().get(&resource, kind, now_ms()).unwrap() {
            stale.local_store().remove(&resource, kind, &key).unwrap();
        }
    }

    let (owner, devices) = looked_up(fetcher, &aor).await;
    assert_eq!(owner, Some(alice.key.public().encode_protobuf()));
    assert_eq!(devices, vec![alice.device_key()]);
    for node in &net.nodes {
        node.kill().await;
    }
    silent.shutdown().await.unwrap();
    assert!(held.await.unwrap() > 0, "the silent peer was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_enrollment_ca_a_fetched_claim_without_its_certificate_is_ignored() {
    let ca = Keypair::generate_ed25519();
    let policy = AccessPolicy::default().with_enrollment_ca(ca.public());
    let net = Net::start(
        4,
        |_, config| config.policy = policy.clone(),
        async |_| Vec::new(),
    )
    .await;
    let (aor, resource) = aor_where(&net.ids(), |_| true);
    let ranked = closest_nodes(&resource, net.ids(), usize::MAX);
    let alice = User::new(&aor);
    alice
        .claim_and_register(&net.nodes[net.index(&ranked[3])], Some(&ca))
        .await;
    let (owner, devices) = looked_up(&net.nodes[0], &aor).await;
    assert_eq!(owner, Some(alice.key.public().encode_protobuf()));
    assert_eq!(devices, vec![alice.device_key()]);

    // Two of the three replicas now hold a claim of Mallory's without the CA's certificate
    // (valid in an overlay without a CA) and her device; even a majority cannot get them in.
    let mallory = User::new(&aor);
    for liar in &ranked[..2] {
        mallory.take_over(&net.nodes[net.index(liar)], &alice, None);
    }
    for node in &net.nodes {
        let (owner, devices) = looked_up(node, &aor).await;
        assert_ne!(owner, Some(mallory.key.public().encode_protobuf()));
        assert!(
            !devices.contains(&mallory.device_key()),
            "from {}",
            node.node_id()
        );
    }
    for node in &net.nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_refuses_a_copy_is_not_a_holder() {
    // r = 1 and two nodes: the closer one is full and refuses every copy.
    let net = Net::start(
        2,
        |i, config| {
            config.replicas = 1;
            if i == 1 {
                config.limits = Limits {
                    max_node_bytes: 1,
                    ..Limits::default()
                };
            }
        },
        async |_| Vec::new(),
    )
    .await;
    let (holder, full) = (&net.nodes[0], &net.nodes[1]);
    let (aor, resource) = aor_where(&net.ids(), |ranked| ranked[0] == full.node_id());
    let alice = User::new(&aor);
    let (key, claim) = alice.claim(None, 1);
    holder
        .local_store()
        .put(&resource, Kind::AOR_CLAIM, &key, &claim, now_ms())
        .unwrap();

    holder.replicate().await.unwrap();
    assert!(
        holder.refused_pushes() > 0,
        "the full node refused the push"
    );
    assert!(
        full.local_store()
            .get(&resource, Kind::AOR_CLAIM, now_ms())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        holder
            .local_store()
            .get(&resource, Kind::AOR_CLAIM, now_ms())
            .unwrap(),
        vec![(key, claim)],
        "the only copy was dropped after a refused push"
    );
    for node in &net.nodes {
        node.kill().await;
    }
}

/// Sends a Store of one entry from `from` straight to `to`; gives the answer.
async fn raw_store(
    from: &Overlay,
    to: PeerId,
    resource: ResourceId,
    kind: Kind,
    (key, data): (Vec<u8>, StoredData),
) -> Response {
    let request = Request::Store {
        resource,
        kind,
        key,
        data,
    };
    let mut envelope = Envelope::request(7, None, request);
    envelope.hop(&from.node_id()).unwrap();
    let answer = tokio::time::timeout(WAIT, from.network().request(to, message::encode(&envelope)))
        .await
        .unwrap()
        .unwrap();
    match message::decode(&answer, 1 << 20).unwrap().body {
        Body::Response(response) => response,
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_replica_set_refuses_a_store_but_takes_a_handover() {
    // r = 1: the replica and one more place (for a closer peer that may be silent) take
    // stores, the third closest and further do not.
    let net = Net::start(4, |_, config| config.replicas = 1, async |_| Vec::new()).await;
    let (aor, resource) = aor_where(&net.ids(), |_| true);
    let ranked = closest_nodes(&resource, net.ids(), usize::MAX);
    let [replica, second, third, fourth] = [0, 1, 2, 3].map(|i| &net.nodes[net.index(&ranked[i])]);
    let alice = User::new(&aor);

    // The fourth pushes Alice's claim to the third, which is not a replica.
    let refused = raw_store(
        fourth,
        third.node_id(),
        resource,
        Kind::AOR_CLAIM,
        alice.claim(None, 1),
    )
    .await;
    assert!(
        matches!(
            refused,
            Response::Error {
                code: ErrorCode::NotReplica,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(third.not_replica(), 1);
    assert!(
        third
            .local_store()
            .get(&resource, Kind::AOR_CLAIM, now_ms())
            .unwrap()
            .is_empty()
    );
    // The replica takes it.
    let stored = raw_store(
        fourth,
        replica.node_id(),
        resource,
        Kind::AOR_CLAIM,
        alice.claim(None, 1),
    )
    .await;
    assert!(matches!(stored, Response::Stored { .. }), "{stored:?}");

    // The replica leaves: it hands the claim to the second, which takes it as the replica
    // of the overlay without the one that leaves.
    replica.leave().await.unwrap();
    assert_eq!(second.not_replica(), 0);
    assert_eq!(
        second
            .local_store()
            .get(&resource, Kind::AOR_CLAIM, now_ms())
            .unwrap()
            .len(),
        1
    );
    for node in &net.nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_tables_forget_resources_that_are_gone() {
    let net = Net::start(2, |_, _| {}, async |_| Vec::new()).await;
    let node = &net.nodes[0];
    let alice = User::new("sip:alice@example.org");
    let (key, claim) = alice.claim(None, 1);
    node.store(alice.resource, Kind::AOR_CLAIM, key.clone(), claim)
        .await
        .unwrap();
    node.replicate().await.unwrap();
    assert_eq!(node.replication_tables().0, 1);
    for node in &net.nodes {
        node.local_store()
            .remove(&alice.resource, Kind::AOR_CLAIM, &key)
            .unwrap();
    }
    node.replicate().await.unwrap();
    assert_eq!(
        node.replication_tables().0,
        0,
        "a gone resource is forgotten"
    );
    for node in &net.nodes {
        node.kill().await;
    }
    // A stopped node runs no pass: asking for one is an error, not a wait.
    let asked = tokio::time::timeout(Duration::from_secs(5), node.replicate()).await;
    assert!(matches!(asked, Ok(Err(node::Error::Stopped))), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_dropped_only_once_the_replica_set_acknowledged_it_in_the_same_pass() {
    // r = 1: the closer node is the replica; the other holds a copy it must hand over.
    let net = Net::start(2, |_, config| config.replicas = 1, async |_| Vec::new()).await;
    let (aor, resource) = aor_where(&net.ids(), |_| true);
    let ranked = closest_nodes(&resource, net.ids(), usize::MAX);
    let (replica, other) = (
        &net.nodes[net.index(&ranked[0])],
        &net.nodes[net.index(&ranked[1])],
    );
    let alice = User::new(&aor);
    let (key, claim) = alice.claim(None, 1);
    let held = |node: &Overlay| {
        node.local_store()
            .get(&resource, Kind::AOR_CLAIM, now_ms())
            .unwrap()
    };
    other
        .local_store()
        .put(&resource, Kind::AOR_CLAIM, &key, &claim, now_ms())
        .unwrap();
    other.replicate().await.unwrap();
    assert_eq!(held(replica).len(), 1, "handed to the replica");
    assert!(held(other).is_empty(), "then dropped");

    // The replica loses its copy (its view of the replica set differed, it was restored
    // from an old disk...) while the other gets one again: the earlier push proves nothing.
    replica
        .local_store()
        .remove(&resource, Kind::AOR_CLAIM, &key)
        .unwrap();
    other
        .local_store()
        .put(&resource, Kind::AOR_CLAIM, &key, &claim, now_ms())
        .unwrap();
    other.replicate().await.unwrap();
    assert_eq!(
        held(replica).len() + held(other).len(),
        1,
        "the last copy was dropped without the replica holding it"
    );
    for node in &net.nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_on_a_settled_overlay_costs_one_round_trip_and_a_dead_replica_a_full_one() {
    let net = Net::start(8, |_, _| {}, async |_| Vec::new()).await;
    // Every node ranks every other: a pass reads the settled routing table.
    for node in &net.nodes {
        tokio::time::timeout(WAIT, node.replicate())
            .await
            .unwrap()
            .unwrap();
    }
    let everyone = net.ids();
    let (aor, resource) = aor_where(&everyone, |_| true);
    let ranked = closest_nodes(&resource, everyone, usize::MAX);
    let alice = User::new(&aor);
    let storer = &net.nodes[net.index(&ranked[7])];
    alice.claim_and_register(storer, None).await;
    // The claim and the registration each went straight to the replicas.
    let lookups = storer.lookups();
    assert_eq!((lookups.stores_one_round_trip, lookups.stores_full), (2, 0));

    for node in &net.nodes {
        let (owner, devices) = looked_up(node, &aor).await;
        assert_eq!(owner, Some(alice.key.public().encode_protobuf()));
        assert_eq!(devices, vec![alice.device_key()]);
        let lookups = node.lookups();
        assert_eq!(
            (lookups.one_round_trip, lookups.full),
            (1, 0),
            "node {}",
            net.index(&node.node_id())
        );
    }

    // A plain fetch of what the replicas hold costs one round trip too.
    for node in &net.nodes {
        let fetched = tokio::time::timeout(WAIT, node.fetch(resource, Kind::SIP_REGISTRATION))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fetched.len(), 1);
        let lookups = node.lookups();
        assert_eq!(
            (lookups.fetches_one_round_trip, lookups.fetches_full),
            (1, 0),
            "node {}",
            net.index(&node.node_id())
        );
    }

    // An AOR nobody registered: "nothing" from the believed replicas is checked the long way.
    let nobody = &net.nodes[0];
    let verified = tokio::time::timeout(WAIT, nobody.fetch_verified("sip:nobody@example.org"))
        .await
        .unwrap()
        .unwrap();
    assert!(verified.registrations.is_empty());
    assert_eq!(
        (nobody.lookups().one_round_trip, nobody.lookups().full),
        (1, 1)
    );
    let nothing = ResourceId::for_aor("sip:nobody@example.org").unwrap();
    let fetched = tokio::time::timeout(WAIT, nobody.fetch(nothing, Kind::SIP_REGISTRATION))
        .await
        .unwrap()
        .unwrap();
    assert!(fetched.is_empty());
    assert_eq!(nobody.lookups().fetches_full, 1);

    // A replica dies; a node that has not noticed yet asks it, hears nothing, and finds the
    // device the long way.
    // (The fetcher may be node 0, whose lookup of nobody was a full one.)
    let fetcher = &net.nodes[net.index(&ranked[6])];
    let full_before = fetcher.lookups().full;
    let dead = &net.nodes[net.index(&ranked[1])];
    dead.kill().await;
    let (owner, devices) = looked_up(fetcher, &aor).await;
    assert_eq!(owner, Some(alice.key.public().encode_protobuf()));
    assert_eq!(devices, vec![alice.device_key()]);
    assert_eq!(fetcher.lookups().full, full_before + 1);

    // A new registration stored after the death, by a node that may not have noticed it
    // (one way or the other), reaches a majority of the live replica set.
    let storer = &net.nodes[net.index(&ranked[5])];
    let (key, data) = alice.registration(2);
    tokio::time::timeout(
        WAIT,
        storer.store(alice.resource, Kind::SIP_REGISTRATION, key, data),
    )
    .await
    .unwrap()
    .unwrap();
    let lookups = storer.lookups();
    assert_eq!(lookups.stores_one_round_trip + lookups.stores_full, 1);
    let holding = [0, 2, 3]
        .iter()
        .map(|&i| net.nodes[net.index(&ranked[i])].local_store())
        .filter(|store| {
            let entries = store
                .get(&alice.resource, Kind::SIP_REGISTRATION, now_ms())
                .unwrap();
            entries.iter().any(|(_, data)| data.generation == 2)
        })
        .count();
    assert!(holding >= 2, "{holding} of the 3 live replicas hold it");
    for node in &net.nodes {
        node.kill().await;
    }
}

/// Puts `user`'s claim (and, with `register`, its device) straight into `node`'s store, as a
/// store made while the views of the replica set differed leaves them.
fn hold(node: &Overlay, user: &User, register: bool) {
    let store = node.local_store();
    let (key, data) = user.claim(None, 1);
    store
        .put(&user.resource, Kind::AOR_CLAIM, &key, &data, now_ms())
        .unwrap();
    if register {
        let (key, data) = user.registration(1);
        store
            .put(
                &user.resource,
                Kind::SIP_REGISTRATION,
                &key,
                &data,
                now_ms(),
            )
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_just_beyond_the_replica_set_are_found_but_never_override_its_claim() {
    // No replication pass moves the entries while the test looks.
    let net = Net::start(
        8,
        |_, config| {
            config.replication_interval = Duration::from_secs(3600);
            config.repair_delay = Duration::from_secs(3600);
        },
        async |_| Vec::new(),
    )
    .await;
    let everyone = net.ids();
    let (aor, resource) = aor_where(&everyone, |_| true);
    let ranked = closest_nodes(&resource, everyone, usize::MAX);
    let node = |i: usize| &net.nodes[net.index(&ranked[i])];
    let fetcher = node(7);

    // Alice's claim and device sit at the 4th and 5th closest peers, not at the replica set.
    let alice = User::new(&aor);
    hold(node(3), &alice, true);
    hold(node(4), &alice, true);
    let (owner, devices) = looked_up(fetcher, &aor).await;
    assert_eq!(owner, Some(alice.key.public().encode_protobuf()));
    assert_eq!(devices, vec![alice.device_key()]);

    // Bob's claim is at his replica set, with no device (he is offline); Mallory's claim of
    // his AOR and her device sit just beyond it: the set's claim stands, no device is found.
    let aor = "sip:bob@example.org";
    let resource = ResourceId::for_aor(aor).unwrap();
    let ranked = closest_nodes(&resource, net.ids(), usize::MAX);
    let node = |i: usize| &net.nodes[net.index(&ranked[i])];
    let bob = User::new(aor);
    for i in 0..3 {
        hold(node(i), &bob, false);
    }
    let mallory = User::new(aor);
    hold(node(3), &mallory, true);
    hold(node(4), &mallory, true);
    let (owner, devices) = looked_up(node(7), aor).await;
    assert_eq!(owner, Some(bob.key.public().encode_protobuf()));
    assert!(devices.is_empty(), "{devices:?}");
    for node in &net.nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_of_too_many_or_repeated_kinds_is_refused() {
    let net = Net::start(2, |_, _| {}, async |_| Vec::new()).await;
    let key = Keypair::generate_ed25519();
    let (raw, _events) = Network::start(key, network_config(Vec::new()))
        .await
        .unwrap();
    let target = &net.nodes[1];
    raw.dial(target.listen_addrs().await.unwrap().remove(0))
        .await
        .unwrap();
    let resource = ResourceId::for_aor("sip:alice@example.org").unwrap();
    for (kinds, why) in [
        (vec![Kind::AOR_CLAIM; 2], "named twice"),
        ((0..9).map(Kind).collect(), "at most 8"),
    ] {
        let mut request = Envelope::request(7, None, Request::FetchKinds { resource, kinds });
        request.hop(&raw.local_peer_id()).unwrap();
        let answer = raw
            .request(target.node_id(), message::encode(&request))
            .await
            .unwrap();
        let answer = message::decode(&answer, message::DEFAULT_MAX_MESSAGE).unwrap();
        match answer.body {
            Body::Response(Response::Error { code, message }) => {
                assert_eq!(code, ErrorCode::InvalidMessage);
                assert!(message.contains(why), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(target.bad_messages(), 2);
    raw.shutdown().await.unwrap();
    for node in &net.nodes {
        node.kill().await;
    }
}

/// The nodes of the busy-replica tests: 7 data directories whose keys are made first, and
/// their indices ranked by closeness to `aor` (closest first), so that a test can pick its
/// replicas, storer and fetcher (fixed nodes may never be two of any AOR's three closest).
fn ranked_for(aor: &str) -> (Vec<tempfile::TempDir>, Vec<usize>) {
    let dirs: Vec<_> = (0..7).map(|_| tempfile::tempdir().unwrap()).collect();
    let everyone: Vec<PeerId> = dirs
        .iter()
        .map(|dir| NodeKey::load_or_create(dir.path()).unwrap().node_id())
        .collect();
    let resource = ResourceId::for_aor(aor).unwrap();
    let ranked = closest_nodes(&resource, everyone.iter().copied(), usize::MAX)
        .into_iter()
        .map(|peer| everyone.iter().position(|p| *p == peer).unwrap())
        .collect();
    (dirs, ranked)
}

/// Starts a node on each of `dirs`, `limited` ones with these per-peer limits (pending,
/// rate, burst).
async fn start_limited(
    dirs: &[tempfile::TempDir],
    limited: &[usize],
    limits: (usize, u32, u32),
) -> Net {
    let (pending, rate, burst) = limits;
    Net::start(
        dirs.len(),
        |i, config| {
            config.data_dir = dirs[i].path().to_path_buf();
            if limited.contains(&i) {
                let network = config.network.clone();
                config.network = network.with_peer_limits(pending, rate, burst);
            }
        },
        async |_| Vec::new(),
    )
    .await
}

/// Two of an AOR's three replicas take one request at a time from a peer
/// (`max_pending_per_peer` 1): a node that looks the AOR up three times at once hears `Busy`
/// from them for all but one lookup. A busy replica is asked again after a moment, not
/// replaced by a peer beyond the set that holds nothing, so every lookup finds the device
/// (before, most of them found no registration: a wrong "not registered").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_answers_busy_is_asked_again_not_replaced() {
    let aor = "sip:busy@example.org";
    let (dirs, ranked) = ranked_for(aor);
    let busy = [ranked[0], ranked[1]];
    let (storer, fetcher) = (ranked[3], ranked[6]);
    let net = start_limited(&dirs, &busy, (1, 1000, 1000)).await;
    let alice = User::new(aor);
    alice.claim_and_register(&net.nodes[storer], None).await;

    let lookups = (0..3).map(|_| looked_up(&net.nodes[fetcher], aor));
    for (owner, devices) in futures::future::join_all(lookups).await {
        assert_eq!(owner, Some(alice.key.public().encode_protobuf()));
        assert_eq!(devices, vec![alice.device_key()]);
    }
    assert!(
        net.nodes[busy[0]].refused().busy + net.nodes[busy[1]].refused().busy > 0,
        "no lookup was refused as busy: the test shows nothing"
    );
    for node in &net.nodes {
        node.kill().await;
    }
}

/// A lookup that every replica of the AOR refuses as busy fails, and the caller may try again
/// later: it does not say that the AOR has no registration, as the peers beyond the replica
/// set, asked in their place, would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_all_replicas_refuse_as_busy_fails_rather_than_finding_nothing() {
    let aor = "sip:swamped@example.org";
    let (dirs, ranked) = ranked_for(aor);
    let replicas = [ranked[0], ranked[1], ranked[2]];
    let (storer, fetcher) = (ranked[3], ranked[6]);
    // A few requests of each peer, then one a second.
    let net = start_limited(&dirs, &replicas, (1000, 1, 4)).await;
    let alice = User::new(aor);
    alice.claim_and_register(&net.nodes[storer], None).await;

    // Lookups, and plain fetches of the registrations, one after the other.
    let resource = ResourceId::for_aor(aor).unwrap();
    let (mut found, mut failed) = (0, 0);
    for _ in 0..5 {
        let lookup = net.nodes[fetcher].fetch_verified(aor);
        match tokio::time::timeout(WAIT, lookup).await.unwrap() {
            Ok(verified) => {
                assert_eq!(
                    verified.registrations.keys().cloned().collect::<Vec<_>>(),
                    vec![alice.device_key()],
                    "a lookup the replicas refused found no registration"
                );
                found += 1;
            }
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
                failed += 1;
            }
        }
        let fetch = net.nodes[fetcher].fetch(resource, Kind::SIP_REGISTRATION);
        match tokio::time::timeout(WAIT, fetch).await.unwrap() {
            Ok(entries) => {
                assert!(
                    !entries.is_empty(),
                    "a fetch the replicas refused found nothing"
                );
                found += 1;
            }
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
                failed += 1;
            }
        }
    }
    let refused: u64 = replicas.iter().map(|&i| net.nodes[i].refused().busy).sum();
    assert!(
        refused > 0 && failed > 0,
        "no lookup was refused: the test shows nothing"
    );
    assert!(found > 0, "no lookup got through before the limits");
    for node in &net.nodes {
        node.kill().await;
    }
}

/// The membership exchange end to end: a node learns a member from a peer that passes it
/// on (here a raw network that only ever heard of it), reaches that member on the addresses
/// it came with, and passes it on in turn; a peer that sends too many members at once is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_learned_in_the_exchange_is_reached_and_passed_on() {
    let c_dir = tempfile::tempdir().unwrap();
    let c =
        Overlay::start(node::Config::new(c_dir.path()).with_network(network_config(Vec::new())))
            .await
            .unwrap();
    let c_info = message::MemberInfo {
        peer: c.node_id().to_bytes(),
        addrs: vec![c.listen_addrs().await.unwrap().remove(0).to_vec()],
        certificate: None,
    };
    // The passer: answers every exchange with c, and nothing else.
    let (passer, mut events) =
        Network::start(Keypair::generate_ed25519(), network_config(Vec::new()))
            .await
            .unwrap();
    let passer_id = passer.local_peer_id();
    let answers = c_info.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Event::Request {
                frame, responder, ..
            } = event
            else {
                continue;
            };
            let request = message::decode(&frame, message::DEFAULT_MAX_MESSAGE).unwrap();
            let response = match request.body {
                Body::Request(Request::Members { .. }) => Response::Members {
                    members: vec![answers.clone()],
                    more: false,
                    fresh: 0,
                },
                _ => Response::Pong,
            };
            let _ = responder.respond(message::encode(&request.reply(response)));
        }
    });
    let passer_addr = passer
        .listen_addrs()
        .await
        .unwrap()
        .remove(0)
        .with_p2p(passer_id)
        .unwrap();
    let a_dir = tempfile::tempdir().unwrap();
    let mut config =
        node::Config::new(a_dir.path()).with_network(network_config(vec![passer_addr]));
    config.exchange_interval = Duration::from_millis(50);
    config.exchange_interval_max = Duration::from_millis(200);
    let a = Overlay::start(config).await.unwrap();

    tokio::time::timeout(WAIT, async {
        while !a.network().directory().contains(&c.node_id()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the exchange brought c");
    assert!(
        !a.network()
            .connected_peers()
            .await
            .unwrap()
            .contains(&c.node_id())
    );
    tokio::time::timeout(WAIT, a.ping(c.node_id()))
        .await
        .unwrap()
        .expect("c reached on the addresses it came with");

    // a passes c on: a page of its whole directory names it.
    let ask = |news: Vec<message::MemberInfo>| {
        let mut request = Envelope::request(
            9,
            None,
            Request::Members {
                news,
                page: Some(Vec::new()),
            },
        );
        request.hop(&passer_id).unwrap();
        let passer = passer.clone();
        let a = a.node_id();
        async move {
            let answer = passer.request(a, message::encode(&request)).await.unwrap();
            message::decode(&answer, message::DEFAULT_MAX_MESSAGE)
                .unwrap()
                .body
        }
    };
    // A member new to a counts as fresh in its answer, once.
    let news = message::MemberInfo {
        peer: PeerId::random().to_bytes(),
        addrs: vec![
            "/ip4/192.0.2.9/udp/4000/quic-v1"
                .parse::<Multiaddr>()
                .unwrap()
                .to_vec(),
        ],
        certificate: None,
    };
    for expected in [1, 0] {
        match ask(vec![news.clone()]).await {
            Body::Response(Response::Members { fresh, .. }) => assert_eq!(fresh, expected),
            other => panic!("{other:?}"),
        }
    }
    match ask(Vec::new()).await {
        Body::Response(Response::Members { members, more, .. }) => {
            assert!(!more);
            assert!(
                members.iter().any(|member| member.peer == c_info.peer),
                "{members:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    match ask(vec![c_info; message::MAX_MEMBERS + 1]).await {
        Body::Response(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::InvalidMessage);
            assert!(message.contains("at most 128"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
