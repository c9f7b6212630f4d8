//! The storing peer's checks (`access::check_store`): who may claim an AOR, who may register
//! under it, and that nothing else can forge or alter an entry. One test per rule; each
//! refused store names its own error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use libp2p::identity::Keypair;
use p2psip_overlay::access::{AccessPolicy, KindLimits, check_store};
use p2psip_overlay::data::{AorClaim, Contact, Delegation, Kind, RegistrationValue, StoredData};
use p2psip_overlay::error::Error;
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::identity::self_certifying_aor;

const NOW: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const AOR: &str = "sip:bob@example.org";

/// A fixed key, so that failures reproduce.
fn keypair(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn resource() -> ResourceId {
    ResourceId::for_aor(AOR).unwrap()
}

/// A claim of `aor` by `user`, valid for a day, and its entry.
fn claim(user: &Keypair, aor: &str, generation: u64) -> (AorClaim, Vec<u8>, StoredData) {
    let claim = AorClaim::new(aor, &user.public(), NOW + 24 * HOUR_MS).unwrap();
    let (key, data) = claim.entry(user, NOW, 3600, generation).unwrap();
    (claim, key, data)
}

/// A registration of `device` under `resource`, delegated by `user`.
fn registration(
    device: &Keypair,
    user: &Keypair,
    resource: &ResourceId,
    generation: u64,
) -> (Vec<u8>, StoredData) {
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![Contact {
            uri: "sip:bob@192.0.2.4:5062".into(),
            q: Some(1000),
        }],
        delegation: Delegation::sign(user, resource, &device.public(), NOW + HOUR_MS).unwrap(),
    };
    value.entry(device, resource, NOW, 600, generation).unwrap()
}

fn check(
    kind: Kind,
    key: &[u8],
    current: Option<&StoredData>,
    claim: Option<&AorClaim>,
    incoming: &StoredData,
) -> Result<(), Error> {
    check_store(
        &resource(),
        kind,
        key,
        current,
        claim,
        incoming,
        NOW,
        &AccessPolicy::default(),
    )
}

fn reason(result: Result<(), Error>) -> String {
    match result {
        Err(Error::Forbidden { reason }) => reason,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

// --- AOR-CLAIM ---

#[test]
fn a_free_aor_is_claimed_by_the_first_key() {
    let (_, key, data) = claim(&keypair(1), AOR, 1);
    check(Kind::AOR_CLAIM, &key, None, None, &data).unwrap();
}

#[test]
fn the_owner_refreshes_its_claim() {
    let user = keypair(1);
    let (held, key, old) = claim(&user, AOR, 1);
    let (_, _, new) = claim(&user, AOR, 2);
    check(Kind::AOR_CLAIM, &key, Some(&old), Some(&held), &new).unwrap();
}

#[test]
fn a_stranger_cannot_claim_a_held_aor() {
    let (held, key, old) = claim(&keypair(1), AOR, 1);
    let (_, _, theirs) = claim(&keypair(2), AOR, 2);
    let refused = check(Kind::AOR_CLAIM, &key, Some(&old), Some(&held), &theirs);
    assert_eq!(reason(refused), "AOR is owned by another key");
}

#[test]
fn an_expired_claim_no_longer_holds_the_aor() {
    let owner = keypair(1);
    let mut held = AorClaim::new(AOR, &owner.public(), NOW - 1).unwrap();
    held.expires_ms = NOW - 1;
    let (_, key, theirs) = claim(&keypair(2), AOR, 1);
    check(Kind::AOR_CLAIM, &key, None, Some(&held), &theirs).unwrap();
}

#[test]
fn a_claim_of_another_aor_is_forbidden_here() {
    let user = keypair(1);
    let claim = AorClaim::new("sip:eve@example.org", &user.public(), NOW + HOUR_MS).unwrap();
    // Signed for this resource, but the AOR inside hashes elsewhere.
    let data = StoredData::new(NOW, 3600, 1, claim.encode())
        .sign(
            &user,
            &p2psip_overlay::data::Slot {
                resource: &resource(),
                kind: Kind::AOR_CLAIM,
                key: &[],
            },
        )
        .unwrap();
    let refused = check(Kind::AOR_CLAIM, &[], None, None, &data);
    assert_eq!(
        reason(refused),
        "the claimed AOR does not hash to this resource"
    );
}

#[test]
fn a_claim_must_be_signed_by_the_key_it_names() {
    let (owner, stranger) = (keypair(1), keypair(2));
    let claim = AorClaim::new(AOR, &owner.public(), NOW + HOUR_MS).unwrap();
    let (key, data) = claim.entry(&stranger, NOW, 3600, 1).unwrap();
    let refused = check(Kind::AOR_CLAIM, &key, None, None, &data);
    assert_eq!(
        reason(refused),
        "the claim is not signed by the user key it names"
    );
}

#[test]
fn an_expired_claim_cannot_be_stored() {
    let user = keypair(1);
    let claim = AorClaim::new(AOR, &user.public(), NOW).unwrap();
    let (key, data) = claim.entry(&user, NOW, 3600, 1).unwrap();
    let refused = check(Kind::AOR_CLAIM, &key, None, None, &data);
    assert!(matches!(
        refused,
        Err(Error::Expired {
            what: "the AOR claim",
            ..
        })
    ));
}

#[test]
fn a_self_certifying_aor_is_claimed_only_by_its_own_key() {
    let (owner, stranger) = (keypair(1), keypair(2));
    let aor = self_certifying_aor(&owner.public());
    let resource = ResourceId::for_aor(&aor).unwrap();
    let policy = AccessPolicy::default();

    let (_, key, own) = claim(&owner, &aor, 1);
    check_store(
        &resource,
        Kind::AOR_CLAIM,
        &key,
        None,
        None,
        &own,
        NOW,
        &policy,
    )
    .unwrap();

    let (_, key, theirs) = claim(&stranger, &aor, 1);
    let refused = check_store(
        &resource,
        Kind::AOR_CLAIM,
        &key,
        None,
        None,
        &theirs,
        NOW,
        &policy,
    );
    assert_eq!(
        reason(refused),
        "a self-certifying AOR can only be claimed by its own key"
    );
}

#[test]
fn with_an_enrollment_ca_a_claim_needs_its_certificate() {
    let (ca, other_ca, user) = (keypair(9), keypair(8), keypair(1));
    let policy = AccessPolicy::default().with_enrollment_ca(ca.public());
    let run = |claim: &AorClaim| {
        let (key, data) = claim.entry(&user, NOW, 3600, 1).unwrap();
        check_store(
            &resource(),
            Kind::AOR_CLAIM,
            &key,
            None,
            None,
            &data,
            NOW,
            &policy,
        )
    };
    let bare = AorClaim::new(AOR, &user.public(), NOW + HOUR_MS).unwrap();
    let expected = "the claim has no valid certificate from this overlay's enrollment CA";
    assert_eq!(reason(run(&bare)), expected);
    assert_eq!(
        reason(run(&bare.clone().certified(&other_ca).unwrap())),
        expected
    );
    let mut stretched = bare.clone().certified(&ca).unwrap();
    stretched.expires_ms += 1;
    assert_eq!(reason(run(&stretched)), expected);
    run(&bare.certified(&ca).unwrap()).unwrap();

    // Self-certifying AORs need no certificate.
    let aor = self_certifying_aor(&user.public());
    let own = AorClaim::new(&aor, &user.public(), NOW + HOUR_MS).unwrap();
    let (key, data) = own.entry(&user, NOW, 3600, 1).unwrap();
    let resource = ResourceId::for_aor(&aor).unwrap();
    check_store(
        &resource,
        Kind::AOR_CLAIM,
        &key,
        None,
        None,
        &data,
        NOW,
        &policy,
    )
    .unwrap();
}

#[test]
fn a_claim_lives_under_the_empty_key() {
    let (_, _, data) = claim(&keypair(1), AOR, 1);
    let refused = check(Kind::AOR_CLAIM, b"x", None, None, &data);
    // The signature covers the key, so a moved entry fails there first.
    assert_eq!(reason(refused), "bad signature");
}

// --- SIP-REGISTRATION ---

#[test]
fn a_delegated_device_registers() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, data) = registration(&device, &user, &resource(), 1);
    check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data).unwrap();
}

#[test]
fn a_strangers_store_is_forbidden() {
    let (owner, stranger, their_device) = (keypair(1), keypair(3), keypair(4));
    let (held, _, _) = claim(&owner, AOR, 1);
    let (key, data) = registration(&their_device, &stranger, &resource(), 1);
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert_eq!(reason(refused), "AOR is owned by another key");
}

#[test]
fn a_delegation_forged_in_the_owners_name_is_forbidden() {
    let (owner, stranger, their_device) = (keypair(1), keypair(3), keypair(4));
    let (held, _, _) = claim(&owner, AOR, 1);
    let mut delegation = Delegation::sign(
        &stranger,
        &resource(),
        &their_device.public(),
        NOW + HOUR_MS,
    )
    .unwrap();
    delegation.user_key = owner.public().encode_protobuf();
    let value = RegistrationValue {
        destination: their_device.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation,
    };
    let (key, data) = value
        .entry(&their_device, &resource(), NOW, 600, 1)
        .unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert_eq!(
        reason(refused),
        "bad signature on the delegation from the user key"
    );
}

#[test]
fn a_delegation_for_another_aor_is_forbidden() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let elsewhere = ResourceId::for_aor("sip:bob-work@example.org").unwrap();
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(&user, &elsewhere, &device.public(), NOW + HOUR_MS).unwrap(),
    };
    let (key, data) = value.entry(&device, &resource(), NOW, 600, 1).unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert_eq!(
        reason(refused),
        "bad signature on the delegation from the user key"
    );
}

#[test]
fn a_delegation_to_another_device_is_forbidden() {
    let (user, device, other) = (keypair(1), keypair(2), keypair(5));
    let (held, _, _) = claim(&user, AOR, 1);
    let value = RegistrationValue {
        destination: other.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(&user, &resource(), &device.public(), NOW + HOUR_MS).unwrap(),
    };
    // `other` signs with a delegation made out to `device`.
    let (key, data) = value.entry(&other, &resource(), NOW, 600, 1).unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert_eq!(
        reason(refused),
        "the delegation is for another device key than the signer's"
    );
}

#[test]
fn an_expired_delegation_is_refused() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(&user, &resource(), &device.public(), NOW).unwrap(),
    };
    let (key, data) = value.entry(&device, &resource(), NOW, 600, 1).unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert!(matches!(
        refused,
        Err(Error::Expired {
            what: "the delegation",
            ..
        })
    ));
}

#[test]
fn registering_needs_a_claim() {
    let (user, device) = (keypair(1), keypair(2));
    let (key, data) = registration(&device, &user, &resource(), 1);
    let refused = check(Kind::SIP_REGISTRATION, &key, None, None, &data);
    assert_eq!(
        reason(refused),
        "nobody has claimed this AOR; claim it with the user key before registering"
    );
}

#[test]
fn a_self_certifying_aor_needs_no_claim() {
    let (user, device, stranger) = (keypair(1), keypair(2), keypair(3));
    let resource = ResourceId::for_aor(&self_certifying_aor(&user.public())).unwrap();
    let policy = AccessPolicy::default();
    let (key, data) = registration(&device, &user, &resource, 1);
    check_store(
        &resource,
        Kind::SIP_REGISTRATION,
        &key,
        None,
        None,
        &data,
        NOW,
        &policy,
    )
    .unwrap();

    let (key, data) = registration(&device, &stranger, &resource, 1);
    let refused = check_store(
        &resource,
        Kind::SIP_REGISTRATION,
        &key,
        None,
        None,
        &data,
        NOW,
        &policy,
    );
    assert!(matches!(refused, Err(Error::Forbidden { .. })));
}

#[test]
fn a_registration_is_keyed_by_its_signers_node_id() {
    let (user, device, other_device) = (keypair(1), keypair(2), keypair(5));
    let (held, _, _) = claim(&user, AOR, 1);
    let (_, data) = registration(&device, &user, &resource(), 1);
    let other_key = other_device.public().to_peer_id().to_bytes();
    // Re-signed under another device's key by the device itself.
    let moved = StoredData::new(data.storage_time, data.lifetime, 2, data.value.clone())
        .sign(
            &device,
            &p2psip_overlay::data::Slot {
                resource: &resource(),
                kind: Kind::SIP_REGISTRATION,
                key: &other_key,
            },
        )
        .unwrap();
    let refused = check(
        Kind::SIP_REGISTRATION,
        &other_key,
        None,
        Some(&held),
        &moved,
    );
    assert_eq!(
        reason(refused),
        "a registration is stored under the Node-ID of the device that signs it"
    );
}

#[test]
fn the_destination_is_the_signing_node() {
    let (user, device, elsewhere) = (keypair(1), keypair(2), keypair(6));
    let (held, _, _) = claim(&user, AOR, 1);
    let value = RegistrationValue {
        destination: elsewhere.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(&user, &resource(), &device.public(), NOW + HOUR_MS).unwrap(),
    };
    let (key, data) = value.entry(&device, &resource(), NOW, 600, 1).unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert_eq!(
        reason(refused),
        "a registration's destination must be the node that signs it"
    );
}

// --- Nobody on the way can alter an entry ---

#[test]
fn an_altered_value_is_a_bad_signature() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, mut data) = registration(&device, &user, &resource(), 1);
    let mut value = RegistrationValue::decode(&data.value).unwrap();
    value.contacts[0].uri = "sip:mallory@198.51.100.9".into();
    data.value = value.encode();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert_eq!(reason(refused), "bad signature");
}

#[test]
fn altered_metadata_is_a_bad_signature() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, data) = registration(&device, &user, &resource(), 1);
    let edits: [fn(&mut StoredData); 4] = [
        |d| d.generation += 1,
        |d| d.storage_time -= 1,
        |d| d.lifetime += 1,
        |d| d.signature[0] ^= 1,
    ];
    for edit in edits {
        let mut altered = data.clone();
        edit(&mut altered);
        let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &altered);
        assert_eq!(reason(refused), "bad signature");
    }
}

#[test]
fn an_entry_replayed_under_another_resource_is_a_bad_signature() {
    let (user, device) = (keypair(1), keypair(2));
    let elsewhere = ResourceId::for_aor("sip:alice@example.org").unwrap();
    let held = AorClaim::new("sip:alice@example.org", &user.public(), NOW + HOUR_MS).unwrap();
    let (key, data) = registration(&device, &user, &resource(), 1);
    let refused = check_store(
        &elsewhere,
        Kind::SIP_REGISTRATION,
        &key,
        None,
        Some(&held),
        &data,
        NOW,
        &AccessPolicy::default(),
    );
    assert_eq!(reason(refused), "bad signature");
}

#[test]
fn an_undecodable_signer_is_a_bad_signature() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, mut data) = registration(&device, &user, &resource(), 1);
    data.signer = vec![1, 2, 3];
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert!(reason(refused).starts_with("bad signature"));
}

// --- Against the entry already held ---

#[test]
fn a_lower_generation_is_too_low() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, current) = registration(&device, &user, &resource(), 5);
    let (_, older) = registration(&device, &user, &resource(), 4);
    let refused = check(
        Kind::SIP_REGISTRATION,
        &key,
        Some(&current),
        Some(&held),
        &older,
    );
    assert!(matches!(
        refused,
        Err(Error::GenerationTooLow {
            current: 5,
            offered: 4
        })
    ));
}

#[test]
fn an_equal_generation_with_other_content_is_too_low() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, current) = registration(&device, &user, &resource(), 5);
    let value = RegistrationValue::decode(&current.value).unwrap();
    let (_, same_generation) = RegistrationValue {
        contacts: vec![],
        ..value
    }
    .entry(&device, &resource(), NOW, 600, 5)
    .unwrap();
    let refused = check(
        Kind::SIP_REGISTRATION,
        &key,
        Some(&current),
        Some(&held),
        &same_generation,
    );
    assert!(matches!(refused, Err(Error::GenerationTooLow { .. })));
}

#[test]
fn the_same_entry_again_is_accepted() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, data) = registration(&device, &user, &resource(), 5);
    check(
        Kind::SIP_REGISTRATION,
        &key,
        Some(&data),
        Some(&held),
        &data,
    )
    .unwrap();
}

#[test]
fn an_older_storage_time_is_too_old() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, current) = registration(&device, &user, &resource(), 5);
    let value = RegistrationValue::decode(&current.value).unwrap();
    let (_, older) = value
        .entry(&device, &resource(), NOW - 1000, 600, 6)
        .unwrap();
    let refused = check(
        Kind::SIP_REGISTRATION,
        &key,
        Some(&current),
        Some(&held),
        &older,
    );
    assert!(matches!(
        refused,
        Err(Error::DataTooOld { current: NOW, offered }) if offered == NOW - 1000
    ));
}

// --- Limits and kinds ---

#[test]
fn an_oversized_value_is_too_large() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![Contact {
            uri: "x".repeat(5000),
            q: None,
        }],
        delegation: Delegation::sign(&user, &resource(), &device.public(), NOW + HOUR_MS).unwrap(),
    };
    let (key, data) = value.entry(&device, &resource(), NOW, 600, 1).unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert!(matches!(
        refused,
        Err(Error::DataTooLarge {
            what: "the value (bytes)",
            limit: 4096,
            ..
        })
    ));
}

#[test]
fn limits_are_per_kind_and_configurable() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let (key, data) = registration(&device, &user, &resource(), 1);
    let tight = AccessPolicy::default().with_limits(
        Kind::SIP_REGISTRATION,
        KindLimits {
            max_value_bytes: 10,
            max_entries: 1,
            max_lifetime_s: 60,
        },
    );
    let refused = check_store(
        &resource(),
        Kind::SIP_REGISTRATION,
        &key,
        None,
        Some(&held),
        &data,
        NOW,
        &tight,
    );
    assert!(matches!(refused, Err(Error::DataTooLarge { .. })));
}

#[test]
fn a_lifetime_over_the_limit_is_too_large() {
    let user = keypair(1);
    let claim = AorClaim::new(AOR, &user.public(), NOW + HOUR_MS).unwrap();
    let (key, data) = claim.entry(&user, NOW, 365 * 86_400, 1).unwrap();
    let refused = check(Kind::AOR_CLAIM, &key, None, None, &data);
    assert!(matches!(
        refused,
        Err(Error::DataTooLarge {
            what: "the lifetime (seconds)",
            ..
        })
    ));
}

#[test]
fn an_expired_entry_is_refused() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(&user, &resource(), &device.public(), NOW + HOUR_MS).unwrap(),
    };
    let (key, data) = value
        .entry(&device, &resource(), NOW - 601_000, 600, 1)
        .unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert!(matches!(
        refused,
        Err(Error::Expired {
            what: "the entry",
            ..
        })
    ));
}

#[test]
fn a_storage_time_far_in_the_future_is_invalid() {
    let (user, device) = (keypair(1), keypair(2));
    let (held, _, _) = claim(&user, AOR, 1);
    let value = RegistrationValue {
        destination: device.public().to_peer_id().to_bytes(),
        contacts: vec![],
        delegation: Delegation::sign(&user, &resource(), &device.public(), NOW + HOUR_MS).unwrap(),
    };
    let (key, data) = value
        .entry(&device, &resource(), NOW + HOUR_MS, 600, 1)
        .unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &key, None, Some(&held), &data);
    assert!(matches!(refused, Err(Error::InvalidMessage { .. })));
}

#[test]
fn an_unknown_kind_is_refused() {
    let (_, key, data) = claim(&keypair(1), AOR, 1);
    let refused = check(Kind(99), &key, None, None, &data);
    assert!(matches!(
        refused,
        Err(Error::UnknownKind { kind: Kind(99) })
    ));
}

#[test]
fn a_value_that_does_not_decode_is_invalid() {
    let device = keypair(2);
    let device_key = device.public().to_peer_id().to_bytes();
    let data = StoredData::new(NOW, 600, 1, vec![0xff; 8])
        .sign(
            &device,
            &p2psip_overlay::data::Slot {
                resource: &resource(),
                kind: Kind::SIP_REGISTRATION,
                key: &device_key,
            },
        )
        .unwrap();
    let refused = check(Kind::SIP_REGISTRATION, &device_key, None, None, &data);
    assert!(matches!(refused, Err(Error::InvalidMessage { .. })));
}
