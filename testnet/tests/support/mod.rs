//! What the multi-node tests share: users that claim AORs and register devices, a testnet
//! that is started and settled, and fetch checks. Every wait is for a condition, with a
//! deadline.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2psip_overlay::data::{AorClaim, Contact, Delegation, Kind, RegistrationValue, StoredData};
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::identity::UserKey;
use p2psip_overlay::node::Overlay;
use p2psip_testnet::{Options, Testnet};

/// Nodes in the big testnets.
pub const N: usize = 32;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub async fn within<T>(what: &str, secs: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {secs} s"))
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `secs`.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One user owning one AOR, with a claim published through a node.
pub struct User {
    pub key: UserKey,
    pub aor: String,
    pub resource: ResourceId,
}

impl User {
    pub async fn claim(node: &Overlay, aor: &str) -> User {
        let key = UserKey::generate();
        let resource = ResourceId::for_aor(aor).unwrap();
        let claim = AorClaim::new(aor, &key.public(), now_ms() + 3_600_000).unwrap();
        // Published, as a node publishes its user's claim: the node keeps it on the replica
        // set (a registration is refused under an AOR nobody claimed).
        within(
            "claim",
            30,
            node.publish(
                resource,
                Kind::AOR_CLAIM,
                Vec::new(),
                claim.encode(),
                3600,
                key.keypair(),
            ),
        )
        .await
        .unwrap();
        User {
            key,
            aor: aor.to_owned(),
            resource,
        }
    }

    /// The value of a registration of the device `node` under this AOR.
    pub fn registration_value(&self, node: &Overlay) -> RegistrationValue {
        let delegation = Delegation::sign(
            self.key.keypair(),
            &self.resource,
            &node.keypair().public(),
            now_ms() + 3_600_000,
        )
        .unwrap();
        RegistrationValue {
            destination: node.node_id().to_bytes(),
            contacts: vec![Contact {
                uri: format!("sip:{}@127.0.0.1:5062", self.aor),
                q: None,
            }],
            delegation,
        }
    }

    /// A registration of the device `node`, signed by the node's key.
    pub fn registration(
        &self,
        node: &Overlay,
        storage_time: u64,
        lifetime: u32,
        generation: u64,
    ) -> (Vec<u8>, StoredData) {
        self.registration_value(node)
            .entry(
                node.keypair(),
                &self.resource,
                storage_time,
                lifetime,
                generation,
            )
            .unwrap()
    }

    /// Stores a registration of `node` once (nobody refreshes it).
    pub async fn register(&self, node: &Overlay, lifetime: u32) -> (Vec<u8>, StoredData) {
        let (key, data) = self.registration(node, now_ms(), lifetime, 1);
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

    /// Publishes a registration of `node` that the node keeps refreshing.
    pub async fn publish(&self, node: &Overlay, lifetime: u32) -> (Vec<u8>, StoredData) {
        let key = node.node_id().to_bytes();
        let data = within(
            "publish",
            30,
            node.publish(
                self.resource,
                Kind::SIP_REGISTRATION,
                key.clone(),
                self.registration_value(node).encode(),
                lifetime,
                node.keypair(),
            ),
        )
        .await
        .unwrap();
        (key, data)
    }

    /// The live nodes whose local store holds this user's registration under `key`.
    pub fn holders(&self, net: &Testnet, key: &[u8]) -> HashSet<usize> {
        net.live()
            .filter(|(_, node)| {
                node.local_store()
                    .entry(&self.resource, Kind::SIP_REGISTRATION, key, now_ms())
                    .unwrap()
                    .is_some()
            })
            .map(|(i, _)| i)
            .collect()
    }
}

pub async fn testnet(n: usize, options: Options) -> Testnet {
    let started = Instant::now();
    let net = within("start", 120, Testnet::start(n, options))
        .await
        .unwrap();
    net.settle(Duration::from_secs(90)).await.unwrap();
    eprintln!("{n} nodes started and settled in {:?}", started.elapsed());
    net
}

/// The registrations `node` fetches for the user.
pub async fn fetched(node: &Overlay, user: &User) -> Option<Vec<(Vec<u8>, StoredData)>> {
    within(
        "fetch",
        30,
        node.fetch(user.resource, Kind::SIP_REGISTRATION),
    )
    .await
    .ok()
}

/// Whether `node` fetches exactly `expected` under the user's registration.
pub async fn fetches(node: &Overlay, user: &User, expected: &(Vec<u8>, StoredData)) -> bool {
    fetched(node, user).await == Some(vec![expected.clone()])
}

/// The (node, user) pairs for which the node does not fetch the user's registration, checked
/// from every live node at once.
pub async fn missing(
    net: &Testnet,
    users: &[(User, (Vec<u8>, StoredData))],
) -> Vec<(usize, usize)> {
    let checks = net.live().flat_map(|(i, node)| {
        users
            .iter()
            .enumerate()
            .map(move |(u, (user, entry))| async move { (i, u, fetches(node, user, entry).await) })
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .filter(|(_, _, ok)| !ok)
        .map(|(i, u, _)| (i, u))
        .collect()
}
