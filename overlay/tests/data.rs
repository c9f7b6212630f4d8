//! Stored data: signatures over the canonical encoding, the values of the two kinds, and the
//! merge of replicas (idempotent; commutative and associative when each key has one signer;
//! first come first served between signers: property tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use libp2p::identity::Keypair;
use p2psip_overlay::data::{
    AorClaim, Contact, Delegation, Entries, Kind, RegistrationValue, Slot, StoredData, merge,
    precedence,
};
use p2psip_overlay::error::Error;
use p2psip_overlay::id::ResourceId;
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000_000;

fn keypair(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn registration_value(
    user: &Keypair,
    device: &Keypair,
    resource: &ResourceId,
) -> RegistrationValue {
    RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![
            Contact {
                uri: "sip:bob@192.0.2.4:5062;transport=tcp".into(),
                q: Some(700),
            },
            Contact {
                uri: "sip:bob@[2001:db8::4]".into(),
                q: None,
            },
        ],
        delegation: Delegation::sign(user, resource, &device.public(), NOW + 3_600_000).unwrap(),
    }
}

#[test]
fn a_registration_entry_is_keyed_by_the_device_and_signed_by_it() {
    let (user, device) = (keypair(1), keypair(2));
    let resource = ResourceId::for_aor("sip:bob@example.org").unwrap();
    let value = registration_value(&user, &device, &resource);
    let (dict_key, data) = value.entry(&device, &resource, NOW, 600, 3).unwrap();
    assert_eq!(dict_key, device.public().to_peer_id().to_bytes());
    assert_eq!(
        (data.storage_time, data.lifetime, data.generation),
        (NOW, 600, 3)
    );
    let slot = Slot {
        resource: &resource,
        kind: Kind::SIP_REGISTRATION,
        key: &dict_key,
    };
    assert_eq!(data.verify(&slot).unwrap(), device.public());
    assert_eq!(RegistrationValue::decode(&data.value).unwrap(), value);
    assert_eq!(
        value.destination_id().unwrap(),
        device.public().to_peer_id()
    );
}

#[test]
fn a_delegation_is_bound_to_its_resource_and_expiry() {
    let (user, device) = (keypair(1), keypair(2));
    let resource = ResourceId::for_aor("sip:bob@example.org").unwrap();
    let delegation = Delegation::sign(&user, &resource, &device.public(), NOW + 1000).unwrap();
    assert_eq!(delegation.verify(&resource, NOW).unwrap(), user.public());
    let elsewhere = ResourceId::for_aor("sip:eve@example.org").unwrap();
    assert!(matches!(
        delegation.verify(&elsewhere, NOW),
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        delegation.verify(&resource, NOW + 1000),
        Err(Error::Expired { .. })
    ));
    let mut stretched = delegation.clone();
    stretched.expires_ms += 1;
    assert!(matches!(
        stretched.verify(&resource, NOW),
        Err(Error::Forbidden { .. })
    ));
}

#[test]
fn a_claim_normalizes_its_aor_and_carries_a_certificate() {
    let (user, ca) = (keypair(1), keypair(9));
    let claim = AorClaim::new("sips:Bob@Example.ORG:5061", &user.public(), NOW + 1000).unwrap();
    assert_eq!(claim.aor, "Bob@example.org");
    assert_eq!(
        claim.resource().unwrap(),
        ResourceId::for_aor("sip:Bob@example.org").unwrap()
    );
    assert!(!claim.verify_certificate(&ca.public()));
    let certified = claim.certified(&ca).unwrap();
    assert!(certified.verify_certificate(&ca.public()));
    assert!(!certified.verify_certificate(&user.public()));
    assert!(certified.is_live(NOW + 999) && !certified.is_live(NOW + 1000));
    let (dict_key, data) = certified.entry(&user, NOW, 3600, 1).unwrap();
    assert!(dict_key.is_empty());
    assert_eq!(AorClaim::decode(&data.value).unwrap(), certified);
}

#[test]
fn values_that_do_not_decode_are_invalid() {
    assert!(matches!(
        RegistrationValue::decode(&[0xff; 3]),
        Err(Error::InvalidMessage { .. })
    ));
    assert!(matches!(
        AorClaim::decode(&[]),
        Err(Error::InvalidMessage { .. })
    ));
    let claim = AorClaim::new("sip:bob@example.org", &keypair(1).public(), 5).unwrap();
    let mut bytes = claim.encode();
    bytes.push(0);
    assert!(matches!(
        AorClaim::decode(&bytes),
        Err(Error::InvalidMessage { .. })
    ));
}

#[test]
fn the_signed_encoding_is_stable() {
    // The canonical encoding is part of the protocol: a change here breaks every signature.
    let resource = ResourceId::from_bytes([0xaa; 32]);
    let data = StoredData::new(1, 2, 3, vec![9, 9]);
    let slot = Slot {
        resource: &resource,
        kind: Kind::SIP_REGISTRATION,
        key: b"k",
    };
    let mut expected = b"p2psip stored data v1\0".to_vec();
    expected.extend([0xaa; 32]);
    expected.extend([0, 0, 0, 1]);
    expected.extend([0, 0, 0, 1, b'k']);
    expected.extend(1u64.to_be_bytes());
    expected.extend(2u32.to_be_bytes());
    expected.extend(3u64.to_be_bytes());
    expected.extend([0, 0, 0, 2, 9, 9]);
    assert_eq!(data.signed_bytes(&slot), expected);
}

#[test]
fn merge_keeps_the_newest_live_entry_per_key() {
    let old = StoredData::new(NOW, 60, 1, b"old".to_vec());
    let new = StoredData::new(NOW + 5, 60, 2, b"new".to_vec());
    let other = StoredData::new(NOW, 60, 1, b"other".to_vec());
    let expired = StoredData::new(NOW - 120_000, 60, 9, b"gone".to_vec());
    let merged = merge(
        [(b"a".to_vec(), new.clone()), (b"b".to_vec(), other.clone())],
        [(b"a".to_vec(), old), (b"c".to_vec(), expired)],
        NOW + 10,
    );
    let expected: Entries = [(b"a".to_vec(), new), (b"b".to_vec(), other)].into();
    assert_eq!(merged, expected);
}

#[test]
fn an_expired_newer_entry_hides_nothing() {
    // Withdrawing a registration takes a newer entry that outlives the old one.
    let long = StoredData::new(NOW, 3600, 1, b"long".to_vec());
    let short = StoredData::new(NOW, 1, 2, b"short".to_vec());
    let merged = merge(
        [(b"a".to_vec(), long.clone())],
        [(b"a".to_vec(), short)],
        NOW + 2000,
    );
    assert_eq!(merged.get(b"a".as_slice()), Some(&long));
}

fn entry() -> impl Strategy<Value = (Vec<u8>, StoredData)> {
    (
        prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]),
        0u64..4,
        0u64..6,
        0u32..4,
        prop::collection::vec(0u8..3, 0..2),
        prop::collection::vec(0u8..3, 0..2),
    )
        .prop_map(|(key, generation, time, lifetime, value, signature)| {
            let mut data = StoredData::new(NOW + time * 1000, lifetime, generation, value);
            data.signature = signature;
            (key, data)
        })
}

fn entries() -> impl Strategy<Value = Vec<(Vec<u8>, StoredData)>> {
    prop::collection::vec(entry(), 0..6)
}

/// Entries whose signer is one of two, so that one key may have entries of two signers (as
/// two claims of one AOR by different keys).
fn mixed_entries() -> impl Strategy<Value = Vec<(Vec<u8>, StoredData)>> {
    prop::collection::vec((entry(), 0u8..2), 0..6).prop_map(|entries| {
        entries
            .into_iter()
            .map(|((key, mut data), signer)| {
                data.signer = vec![signer];
                (key, data)
            })
            .collect()
    })
}

#[test]
fn a_live_entry_of_another_signer_is_not_replaced_by_a_higher_generation() {
    // The attack of issue 13: a validly signed claim by another key with a higher generation.
    let mut owner = StoredData::new(NOW, 3600, 1, b"owner".to_vec());
    owner.signer = b"owner key".to_vec();
    let mut thief = StoredData::new(NOW + 5, 3600, 1_000_000, b"thief".to_vec());
    thief.signer = b"thief key".to_vec();
    let held = merge(
        [(Vec::new(), owner.clone())],
        [(Vec::new(), thief.clone())],
        NOW,
    );
    assert_eq!(held.get(b"".as_slice()), Some(&owner));
    // Once the owner's entry has expired, the other signer's is taken.
    let expired = NOW + 3_600_000;
    let later = merge(
        [(Vec::new(), owner)],
        [(Vec::new(), thief.clone())],
        expired,
    );
    assert_eq!(later.get(b"".as_slice()), Some(&thief));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative(a in entries(), b in entries(), now in 0u64..8) {
        let now = NOW + now * 1000;
        prop_assert_eq!(merge(a.clone(), b.clone(), now), merge(b, a, now));
    }

    #[test]
    fn merge_is_associative(a in entries(), b in entries(), c in entries(), now in 0u64..8) {
        let now = NOW + now * 1000;
        let left = merge(merge(a.clone(), b.clone(), now), c.clone(), now);
        let right = merge(a, merge(b, c, now), now);
        prop_assert_eq!(left, right);
    }

    #[test]
    fn merge_is_idempotent(a in entries(), b in entries(), now in 0u64..8) {
        let now = NOW + now * 1000;
        let once = merge(a.clone(), b.clone(), now);
        prop_assert_eq!(merge(once.clone(), once.clone(), now), once.clone());
        prop_assert_eq!(merge(once.clone(), b, now), once);
    }

    #[test]
    fn merge_with_two_signers_is_idempotent(a in mixed_entries(), b in mixed_entries(), now in 0u64..8) {
        let now = NOW + now * 1000;
        let once = merge(a.clone(), b.clone(), now);
        prop_assert_eq!(merge(once.clone(), once.clone(), now), once.clone());
        prop_assert_eq!(merge(once.clone(), b, now), once);
    }

    #[test]
    fn merge_keeps_the_first_live_signer_of_each_key(a in mixed_entries(), b in mixed_entries(), now in 0u64..8) {
        let now = NOW + now * 1000;
        let merged = merge(a.clone(), b.clone(), now);
        let all: Vec<_> = a.into_iter().chain(b).filter(|(_, d)| !d.is_expired(now)).collect();
        for (key, data) in &merged {
            let first = all.iter().find(|(k, _)| k == key).map(|(_, d)| &d.signer);
            prop_assert_eq!(Some(&data.signer), first);
            for (other_key, other) in &all {
                if other_key == key && other.signer == data.signer {
                    prop_assert!(precedence(data, other) != std::cmp::Ordering::Less);
                }
            }
        }
    }

    #[test]
    fn merge_keeps_exactly_the_best_live_entry(a in entries(), b in entries(), now in 0u64..8) {
        let now = NOW + now * 1000;
        let merged = merge(a.clone(), b.clone(), now);
        let all: Vec<_> = a.into_iter().chain(b).collect();
        for (key, data) in &merged {
            prop_assert!(!data.is_expired(now));
            for (other_key, other) in &all {
                if other_key == key && !other.is_expired(now) {
                    prop_assert!(precedence(data, other) != std::cmp::Ordering::Less);
                }
            }
        }
        for (key, data) in &all {
            if !data.is_expired(now) {
                prop_assert!(merged.contains_key(key));
            }
        }
    }
}
