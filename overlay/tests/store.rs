//! The sled store: durability across reopening, expiry and sweeping, limits, the checked
//! store path, the walk over resources, and the peer cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use libp2p::PeerId;
use libp2p::identity::Keypair;
use p2psip_overlay::access::{AccessPolicy, KindLimits};
use p2psip_overlay::data::{AorClaim, Delegation, Kind, RegistrationValue, StoredData};
use p2psip_overlay::error::Error;
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::store::{Limits, Store};

const NOW: u64 = 1_700_000_000_000;

fn resource(n: u8) -> ResourceId {
    ResourceId::from_bytes([n; 32])
}

fn data(generation: u64, lifetime: u32, value_len: usize) -> StoredData {
    StoredData::new(NOW, lifetime, generation, vec![7; value_len])
}

fn keypair(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

#[test]
fn entries_survive_reopening_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .put(
                &resource(1),
                Kind::SIP_REGISTRATION,
                b"dev",
                &data(1, 60, 10),
                NOW,
            )
            .unwrap();
        // No explicit flush, no clean shutdown beyond the drop: `put` was durable.
    }
    let store = Store::open(dir.path()).unwrap();
    let got = store
        .get(&resource(1), Kind::SIP_REGISTRATION, NOW)
        .unwrap();
    assert_eq!(got, vec![(b"dev".to_vec(), data(1, 60, 10))]);
    assert!(store.used_bytes() > 0);
}

#[test]
fn expired_entries_are_hidden_then_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = resource(1);
    store
        .put(&r, Kind::SIP_REGISTRATION, b"short", &data(1, 10, 1), NOW)
        .unwrap();
    store
        .put(&r, Kind::SIP_REGISTRATION, b"long", &data(1, 100, 1), NOW)
        .unwrap();
    let later = NOW + 10_000;
    let live = store.get(&r, Kind::SIP_REGISTRATION, later).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].0, b"long");
    assert_eq!(
        store
            .entry(&r, Kind::SIP_REGISTRATION, b"short", later)
            .unwrap(),
        None
    );
    let before = store.used_bytes();
    assert_eq!(store.sweep(later).unwrap(), 1);
    assert!(store.used_bytes() < before);
    assert_eq!(store.sweep(later).unwrap(), 0);
    assert_eq!(store.sweep(NOW + 100_000).unwrap(), 1);
    assert_eq!(store.used_bytes(), 0);
    assert!(matches!(
        store.put(&r, Kind::SIP_REGISTRATION, b"x", &data(1, 1, 1), NOW + 1000),
        Err(Error::Expired { .. })
    ));
}

#[test]
fn values_over_the_kind_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let refused = store.put(&resource(1), Kind::AOR_CLAIM, b"", &data(1, 60, 2049), NOW);
    assert!(matches!(
        refused,
        Err(Error::DataTooLarge {
            size: 2049,
            limit: 2048,
            ..
        })
    ));
}

#[test]
fn entries_per_resource_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        kinds: [(
            Kind::SIP_REGISTRATION,
            KindLimits {
                max_value_bytes: 100,
                max_entries: 2,
                max_lifetime_s: 60,
            },
        )]
        .into(),
        ..Limits::default()
    };
    let store = Store::open_with(dir.path(), limits).unwrap();
    let r = resource(1);
    store
        .put(&r, Kind::SIP_REGISTRATION, b"a", &data(1, 60, 1), NOW)
        .unwrap();
    store
        .put(&r, Kind::SIP_REGISTRATION, b"b", &data(1, 5, 1), NOW)
        .unwrap();
    let refused = store.put(&r, Kind::SIP_REGISTRATION, b"c", &data(1, 60, 1), NOW);
    assert!(matches!(refused, Err(Error::DataTooLarge { limit: 2, .. })));
    // Replacing an entry is not a new one; another resource has its own count.
    store
        .put(&r, Kind::SIP_REGISTRATION, b"a", &data(2, 60, 1), NOW)
        .unwrap();
    store
        .put(
            &resource(2),
            Kind::SIP_REGISTRATION,
            b"c",
            &data(1, 60, 1),
            NOW,
        )
        .unwrap();
    // Once "b" has expired, its place is free.
    store
        .put(
            &r,
            Kind::SIP_REGISTRATION,
            b"c",
            &data(1, 60, 1),
            NOW + 5000,
        )
        .unwrap();
}

#[test]
fn the_nodes_total_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_node_bytes: 1000,
        ..Limits::default()
    };
    let store = Store::open_with(dir.path(), limits).unwrap();
    let mut stored = 0;
    let refused = loop {
        match store.put(
            &resource(stored),
            Kind::SIP_REGISTRATION,
            b"k",
            &data(1, 60, 100),
            NOW,
        ) {
            Ok(()) => stored += 1,
            Err(error) => break error,
        }
        assert!(stored < 20, "the limit was never reached");
    };
    assert!(matches!(
        refused,
        Error::DataTooLarge {
            what: "this node's storage (bytes)",
            limit: 1000,
            ..
        }
    ));
    assert!(store.used_bytes() <= 1000);
    // Freeing space makes room again, also after reopening.
    assert!(
        store
            .remove(&resource(0), Kind::SIP_REGISTRATION, b"k")
            .unwrap()
    );
    drop(store);
    let store = Store::open_with(
        dir.path(),
        Limits {
            max_node_bytes: 1000,
            ..Limits::default()
        },
    )
    .unwrap();
    store
        .put(
            &resource(stored),
            Kind::SIP_REGISTRATION,
            b"k",
            &data(1, 60, 100),
            NOW,
        )
        .unwrap();
}

#[test]
fn the_checked_store_applies_the_access_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let policy = AccessPolicy::default();
    let (user, device, stranger) = (keypair(1), keypair(2), keypair(3));
    let aor = "sip:bob@example.org";
    let r = ResourceId::for_aor(aor).unwrap();

    // A registration before any claim is refused.
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(&user, &r, &device.public(), NOW + 3_600_000).unwrap(),
    };
    let (dev_key, reg) = value.entry(&device, &r, NOW, 600, 1).unwrap();
    let refused = store.store(&r, Kind::SIP_REGISTRATION, &dev_key, &reg, NOW, &policy);
    assert!(matches!(refused, Err(Error::Forbidden { .. })));

    // The owner claims, then the device registers.
    let claim = AorClaim::new(aor, &user.public(), NOW + 86_400_000).unwrap();
    let (claim_key, claim_entry) = claim.entry(&user, NOW, 3600, 1).unwrap();
    assert_eq!(
        store
            .store(&r, Kind::AOR_CLAIM, &claim_key, &claim_entry, NOW, &policy)
            .unwrap(),
        1
    );
    assert_eq!(store.claim(&r, NOW).unwrap(), Some(claim));
    assert_eq!(
        store
            .store(&r, Kind::SIP_REGISTRATION, &dev_key, &reg, NOW, &policy)
            .unwrap(),
        1
    );
    // The same entry again is fine; an older one is not.
    store
        .store(&r, Kind::SIP_REGISTRATION, &dev_key, &reg, NOW, &policy)
        .unwrap();
    let (_, newer) = value.entry(&device, &r, NOW + 1, 600, 2).unwrap();
    store
        .store(
            &r,
            Kind::SIP_REGISTRATION,
            &dev_key,
            &newer,
            NOW + 1,
            &policy,
        )
        .unwrap();
    let refused = store.store(&r, Kind::SIP_REGISTRATION, &dev_key, &reg, NOW + 2, &policy);
    assert!(matches!(
        refused,
        Err(Error::GenerationTooLow {
            current: 2,
            offered: 1
        })
    ));

    // A stranger can take neither the AOR nor a registration slot.
    let theirs = AorClaim::new(aor, &stranger.public(), NOW + 86_400_000).unwrap();
    let (_, their_claim) = theirs.entry(&stranger, NOW, 3600, 9).unwrap();
    let refused = store.store(&r, Kind::AOR_CLAIM, &[], &their_claim, NOW, &policy);
    assert!(matches!(refused, Err(Error::Forbidden { .. })));
    assert_eq!(
        store.get(&r, Kind::SIP_REGISTRATION, NOW + 2).unwrap(),
        vec![(dev_key, newer)]
    );

    // Once the owner's claim entry has expired, the AOR is free again.
    let later = NOW + 3_600_000;
    assert_eq!(store.claim(&r, later).unwrap(), None);
    let (_, their_claim) = theirs.entry(&stranger, later, 3600, 9).unwrap();
    store
        .store(&r, Kind::AOR_CLAIM, &[], &their_claim, later, &policy)
        .unwrap();
}

#[test]
fn all_resources_lists_each_resource_and_kind_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for key in [b"a", b"b", b"c"] {
        store
            .put(
                &resource(1),
                Kind::SIP_REGISTRATION,
                key,
                &data(1, 60, 1),
                NOW,
            )
            .unwrap();
    }
    store
        .put(&resource(1), Kind::AOR_CLAIM, b"", &data(1, 60, 1), NOW)
        .unwrap();
    store
        .put(&resource(0xff), Kind(u32::MAX), b"z", &data(1, 60, 1), NOW)
        .unwrap();
    store
        .put(&resource(0), Kind::AOR_CLAIM, b"", &data(1, 60, 1), NOW)
        .unwrap();
    let all: Vec<(ResourceId, Kind)> = store.all_resources().map(Result::unwrap).collect();
    assert_eq!(
        all,
        vec![
            (resource(0), Kind::AOR_CLAIM),
            (resource(1), Kind::SIP_REGISTRATION),
            (resource(1), Kind::AOR_CLAIM),
            (resource(0xff), Kind(u32::MAX)),
        ]
    );
}

#[test]
fn the_peer_cache_survives_reopening_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<PeerId> = (1..=4)
        .map(|seed| keypair(seed).public().to_peer_id())
        .collect();
    let limits = || Limits {
        max_peers: 3,
        max_peer_addrs: 2,
        ..Limits::default()
    };
    {
        let store = Store::open_with(dir.path(), limits()).unwrap();
        for (n, peer) in peers.iter().enumerate() {
            let addrs = vec![
                format!("/ip4/192.0.2.{n}/udp/4001/quic-v1"),
                format!("/ip4/192.0.2.{n}/tcp/4001"),
                "/dns4/third.example/tcp/1".into(),
                "x".repeat(300),
            ];
            store.remember_peer(peer, addrs).unwrap();
        }
        // Remembering a known peer again refreshes it without evicting anyone.
        store
            .remember_peer(&peers[1], vec!["/ip4/192.0.2.9/tcp/1".into()])
            .unwrap();
        store.flush().unwrap();
    }
    let store = Store::open_with(dir.path(), limits()).unwrap();
    let cached = store.peers().unwrap();
    let ids: Vec<PeerId> = cached.iter().map(|(peer, _)| *peer).collect();
    assert_eq!(ids, vec![peers[1], peers[3], peers[2]]);
    assert_eq!(cached[0].1, vec!["/ip4/192.0.2.9/tcp/1".to_string()]);
    assert_eq!(cached[1].1.len(), 2);
    assert_eq!(
        store.peer_addrs(&peers[1]).unwrap(),
        Some(vec!["/ip4/192.0.2.9/tcp/1".to_string()])
    );
    assert_eq!(store.peer_addrs(&peers[0]).unwrap(), None, "evicted");
    store.forget_peer(&peers[3]).unwrap();
    assert_eq!(store.peers().unwrap().len(), 2);
}

/// A registration of `device` under the self-certifying AOR of `user` (needs no claim).
fn self_certified_registration(
    user: &Keypair,
    device: &Keypair,
    generation: u64,
) -> (ResourceId, Vec<u8>, StoredData) {
    let aor = p2psip_overlay::identity::self_certifying_aor(&user.public());
    let r = ResourceId::for_aor(&aor).unwrap();
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(user, &r, &device.public(), NOW + 3_600_000).unwrap(),
    };
    let (key, data) = value.entry(device, &r, NOW, 600, generation).unwrap();
    (r, key, data)
}

#[test]
fn one_signer_cannot_fill_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_signer_entries: 3,
        ..Limits::default()
    };
    let policy = AccessPolicy::default();
    let device = keypair(9);
    let signer = device.public().encode_protobuf();
    {
        let store = Store::open_with(dir.path(), limits.clone()).unwrap();
        // The flood: one device registers under ever new AORs (each of its own user key).
        for n in 0..3 {
            let (r, key, data) = self_certified_registration(&keypair(20 + n), &device, 1);
            store
                .store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy)
                .unwrap();
        }
        let (r, key, data) = self_certified_registration(&keypair(30), &device, 1);
        let refused = store
            .store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy)
            .unwrap_err();
        assert!(
            matches!(
                refused,
                Error::DataTooLarge {
                    size: 4,
                    limit: 3,
                    ..
                }
            ),
            "{refused}"
        );
        assert!(refused.to_string().contains("for one signer"), "{refused}");
        // Another signer still gets in, and an update of a held entry is no new entry.
        let (r, key, data) = self_certified_registration(&keypair(31), &keypair(10), 1);
        store
            .store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy)
            .unwrap();
        let (r, key, data) = self_certified_registration(&keypair(20), &device, 2);
        store
            .store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy)
            .unwrap();
        assert_eq!(store.signer_usage(&signer).0, 3);
        store.flush().unwrap();
    }
    // The counts are rebuilt when the store opens again.
    let store = Store::open_with(dir.path(), limits).unwrap();
    assert_eq!(store.signer_usage(&signer).0, 3);
    let (r, key, data) = self_certified_registration(&keypair(30), &device, 1);
    let refused = store.store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy);
    assert!(matches!(refused, Err(Error::DataTooLarge { .. })));
    // Deleting one frees its place.
    let (r, key, _) = self_certified_registration(&keypair(21), &device, 1);
    assert!(store.remove(&r, Kind::SIP_REGISTRATION, &key).unwrap());
    let (r, key, data) = self_certified_registration(&keypair(30), &device, 1);
    store
        .store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy)
        .unwrap();
}

#[test]
fn the_bytes_of_one_signer_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        Limits {
            max_signer_bytes: 1500,
            ..Limits::default()
        },
    )
    .unwrap();
    let policy = AccessPolicy::default();
    let device = keypair(9);
    let mut refused = None;
    for n in 0..10 {
        let (r, key, data) = self_certified_registration(&keypair(20 + n), &device, 1);
        if let Err(error) = store.store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy) {
            refused = Some(error);
            break;
        }
    }
    let refused = refused.expect("the signer's bytes were not bounded");
    assert!(
        refused
            .to_string()
            .contains("bytes this node stores for one signer")
    );
    assert!(store.signer_usage(&device.public().encode_protobuf()).1 <= 1500);
}

#[test]
fn a_replayed_entry_costs_no_disk_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let policy = AccessPolicy::default();
    let (r, key, data) = self_certified_registration(&keypair(1), &keypair(2), 1);
    store
        .store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy)
        .unwrap();
    let writes = store.disk_writes();
    assert!(writes > 0);
    for _ in 0..100 {
        store
            .store(&r, Kind::SIP_REGISTRATION, &key, &data, NOW, &policy)
            .unwrap();
    }
    assert_eq!(store.disk_writes(), writes, "a replay wrote to disk");
    let (_, _, newer) = self_certified_registration(&keypair(1), &keypair(2), 2);
    store
        .store(&r, Kind::SIP_REGISTRATION, &key, &newer, NOW, &policy)
        .unwrap();
    assert!(store.disk_writes() > writes);
}
