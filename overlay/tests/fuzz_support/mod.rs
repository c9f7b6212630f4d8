//! Checks shared by the property tests (`overlay/tests/fuzz_props.rs`, as `mod fuzz_support`)
//! and the fuzz targets (`overlay/fuzz/src/lib.rs`, through `#[path]`): feed bytes a peer could
//! send to the overlay's parsers and check what they make of them.
//!
//! - [`exercise_envelope`]: [`decode`] of a whole message; what decodes encodes back to itself
//!   (and no longer than it came), every field a peer reads from it is read, and a Store or
//!   Fetched entry in it goes through [`check_store`].
//! - [`exercise_values`]: the stored values, [`RegistrationValue::decode`] and
//!   [`AorClaim::decode`] (with the [`Delegation`] inside), round trips and checks.
//! - [`exercise_store`]: [`check_store`] on an entry whose value is the input, signed with
//!   fixed keys so that the input gets past the signature to the kind's rules; the first byte
//!   chooses the kind, the policy and what the peer already holds.
//!
//! Both crates compile this file, so it needs only `p2psip_overlay`, `libp2p` and `std`. The
//! entry points are `pub` so that the fuzz crate can re-export them.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use p2psip_overlay::access::{AccessPolicy, check_store};
use p2psip_overlay::data::{
    AorClaim, Contact, Delegation, Kind, RegistrationValue, Slot, StoredData,
};
use p2psip_overlay::error::{Error, ErrorCode};
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::identity::{is_self_certifying, self_certifying_aor};
use p2psip_overlay::message::{
    Body, DEFAULT_MAX_MESSAGE, Envelope, MAX_MESSAGE_LIMIT, Request, Response, decode, encode,
};

/// The clock of every check, in ms since the Unix epoch.
pub const NOW: u64 = 1_700_000_000_000;

/// The AOR the fuzzed entries are about (claimed by [`Keys::user`]).
pub const AOR: &str = "sip:fuzz@example.org";

/// The fixed keys the checks sign with.
pub struct Keys {
    /// Owns [`AOR`] and delegates to `device`.
    pub user: Keypair,
    /// The node that registers.
    pub device: Keypair,
    /// The overlay's enrollment CA.
    pub ca: Keypair,
    /// Somebody else.
    pub other: Keypair,
}

/// The keys, made once.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |seed: u8| Keypair::ed25519_from_bytes([seed; 32]).expect("32 bytes");
        Keys {
            user: key(1),
            device: key(2),
            ca: key(3),
            other: key(4),
        }
    })
}

/// The resource of [`AOR`].
pub fn resource() -> ResourceId {
    ResourceId::for_aor(AOR).expect("a valid AOR")
}

/// One message as a peer receives it, under the default and the largest size limit.
pub fn exercise_envelope(input: &[u8]) {
    for limit in [DEFAULT_MAX_MESSAGE, MAX_MESSAGE_LIMIT] {
        match decode(input, limit) {
            Ok(message) => {
                assert!(input.len() <= limit, "{} bytes over {limit}", input.len());
                let encoded = encode(&message);
                assert!(
                    encoded.len() <= input.len(),
                    "the encoding ({} bytes) is longer than the input ({} bytes)",
                    encoded.len(),
                    input.len()
                );
                let again = decode(&encoded, limit)
                    .unwrap_or_else(|e| panic!("the encoding of a message does not decode: {e}"));
                assert_eq!(again, message, "decode(encode(m)) != m");
                assert_eq!(encode(&again), encoded, "encode is not stable");
                exercise_fields(&message);
            }
            Err(error) => visit_refusal(
                &error,
                &[ErrorCode::InvalidMessage, ErrorCode::MessageTooLarge],
            ),
        }
    }
}

/// Both value decoders on the input.
pub fn exercise_values(input: &[u8]) {
    let keys = keys();
    if let Ok(value) = RegistrationValue::decode(input) {
        let encoded = value.encode();
        assert!(
            encoded.len() <= input.len(),
            "a value encodes longer than it came"
        );
        assert_eq!(
            RegistrationValue::decode(&encoded).ok().as_ref(),
            Some(&value)
        );
        let _ = value.destination_id();
        let _ = value.delegation.signed_bytes(&resource());
        if let Err(error) = value.delegation.verify(&resource(), NOW) {
            visit_refusal(&error, &[ErrorCode::Forbidden, ErrorCode::Expired]);
        }
        for contact in &value.contacts {
            let _ = (contact.uri.len(), contact.q);
        }
    }
    if let Ok(claim) = AorClaim::decode(input) {
        let encoded = claim.encode();
        assert!(
            encoded.len() <= input.len(),
            "a claim encodes longer than it came"
        );
        assert_eq!(AorClaim::decode(&encoded).ok().as_ref(), Some(&claim));
        let _ = (
            claim.resource(),
            claim.is_live(NOW),
            claim.certificate_bytes(),
        );
        let _ = claim.verify_certificate(&keys.ca.public());
    }
}

/// [`check_store`] on an entry whose value is `input[1..]`; `input[0]` chooses (bit by bit):
/// the kind (claim or registration), an enrollment CA, a held claim by the user, a held entry,
/// the signer (device or user, or the other key), and whether the value is first re-signed:
/// a registration value's delegation by the user key, a claim's certificate by the CA.
pub fn exercise_store(input: &[u8]) {
    let Some((&mode, value)) = input.split_first() else {
        return;
    };
    let keys = keys();
    let claim_kind = mode & 1 != 0;
    let with_ca = mode & 2 != 0;
    let held_claim = mode & 4 != 0;
    let held_entry = mode & 8 != 0;
    let resign = mode & 64 != 0;
    let signer = match (mode >> 4) & 3 {
        0 if claim_kind => &keys.user,
        0 => &keys.device,
        1 => &keys.user,
        2 => &keys.device,
        _ => &keys.other,
    };
    let mut value = value.to_vec();
    let mut resource = resource();
    if claim_kind {
        if let Ok(mut claim) = AorClaim::decode(&value) {
            if resign {
                claim.ca_signature = None;
                claim = claim.certified(&keys.ca).expect("ed25519 signs");
                value = claim.encode();
            }
            // The claim's own resource, so that it gets past that check to the rest.
            if let Ok(own) = claim.resource() {
                resource = own;
            }
        }
    } else if resign && let Ok(mut registration) = RegistrationValue::decode(&value) {
        // The user delegates to whatever device key the value names, until whenever it says.
        let delegation = &mut registration.delegation;
        delegation.user_key = keys.user.public().encode_protobuf();
        delegation.signature = keys
            .user
            .sign(&delegation.signed_bytes(&resource))
            .expect("ed25519 signs");
        value = registration.encode();
    }
    let kind = if claim_kind {
        Kind::AOR_CLAIM
    } else {
        Kind::SIP_REGISTRATION
    };
    let key = if claim_kind {
        Vec::new()
    } else {
        signer.public().to_peer_id().to_bytes()
    };
    let slot = Slot {
        resource: &resource,
        kind,
        key: &key,
    };
    let generation = u64::from(mode);
    let incoming = StoredData::new(NOW - 1_000, 3_600, generation, value)
        .sign(signer, &slot)
        .expect("ed25519 signs");
    let claim = held_claim.then(|| user_claim(NOW + 86_400_000));
    let current = held_entry.then(|| StoredData::new(NOW - 2_000, 3_600, 64, Vec::new()));
    let policy = if with_ca {
        AccessPolicy::default().with_enrollment_ca(keys.ca.public())
    } else {
        AccessPolicy::default()
    };
    let verdict = check_store(
        &resource,
        kind,
        &key,
        current.as_ref(),
        claim.as_ref(),
        &incoming,
        NOW,
        &policy,
    );
    match verdict {
        Ok(()) => accepted(&resource, kind, &key, &incoming, claim.as_ref(), &policy),
        Err(error) => visit_refusal(
            &error,
            &[
                ErrorCode::Forbidden,
                ErrorCode::Expired,
                ErrorCode::InvalidMessage,
                ErrorCode::GenerationTooLow,
                ErrorCode::DataTooOld,
                ErrorCode::DataTooLarge,
                ErrorCode::MessageTooLarge,
            ],
        ),
    }
}

/// What an accepted entry must be: signed for its slot, its value decoding as its kind, a
/// registration only for a delegated device of the AOR's owner.
fn accepted(
    resource: &ResourceId,
    kind: Kind,
    key: &[u8],
    incoming: &StoredData,
    held: Option<&AorClaim>,
    policy: &AccessPolicy,
) {
    let signer = incoming
        .verify(&Slot {
            resource,
            kind,
            key,
        })
        .expect("an accepted entry's signature verifies");
    match kind {
        Kind::AOR_CLAIM => {
            let claim = AorClaim::decode(&incoming.value).expect("an accepted claim decodes");
            assert_eq!(claim.user_key, incoming.signer);
            assert_eq!(claim.resource().ok().as_ref(), Some(resource));
            assert!(claim.is_live(NOW));
            if let Some(ca) = &policy.enrollment_ca
                && !is_self_certifying(&claim.aor)
            {
                assert!(
                    claim.verify_certificate(ca),
                    "an uncertified claim accepted"
                );
            }
            if let Some(held) = held {
                assert_eq!(
                    held.user_key, claim.user_key,
                    "a live claim of another key replaced"
                );
            }
        }
        _ => {
            let value =
                RegistrationValue::decode(&incoming.value).expect("an accepted value decodes");
            assert_eq!(value.destination_id().ok(), Some(signer.to_peer_id()));
            let user = value
                .delegation
                .verify(resource, NOW)
                .expect("an accepted delegation verifies");
            let own = ResourceId::for_aor(&self_certifying_aor(&user)).ok() == Some(*resource);
            let claimed = held.is_some_and(|c| c.user_key == user.encode_protobuf());
            assert!(
                own || claimed,
                "a registration accepted for a user who does not own the AOR"
            );
        }
    }
}

/// A message's fields as a peer reads them.
fn exercise_fields(message: &Envelope) {
    let keys = keys();
    let me = keys.other.public().to_peer_id();
    let _ = message.destination_id();
    let mut back = message.clone();
    for _ in 0..=message.via.len() {
        match back.next_hop_back() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let mut forwarded = message.clone();
    if forwarded.hop(&me).is_ok() {
        assert_eq!(forwarded.via.len(), message.via.len() + 1);
        assert!(forwarded.ttl < message.ttl);
    }
    let reply = message.reply(Response::Pong);
    assert_eq!(reply.transaction, message.transaction);
    let policy = AccessPolicy::default();
    match &message.body {
        Body::Request(Request::Store {
            resource,
            kind,
            key,
            data,
        }) => {
            let _ = check_store(resource, *kind, key, None, None, data, NOW, &policy);
            let _ = data.meta();
        }
        Body::Request(Request::Route { destination, .. } | Request::PathTrack { destination }) => {
            let _ = PeerId::from_bytes(destination);
        }
        Body::Response(Response::Fetched { entries }) => {
            let resource = resource();
            for (key, data) in entries {
                for kind in Kind::KNOWN {
                    let _ = check_store(&resource, kind, key, None, None, data, NOW, &policy);
                }
                exercise_values(&data.value);
            }
        }
        Body::Response(response @ Response::Error { code, .. }) => {
            let error = response
                .clone()
                .into_result()
                .expect_err("an error response");
            assert_eq!(error.code(), *code);
            let _ = error.to_string();
        }
        Body::Response(Response::Path { hops }) => {
            for hop in hops {
                let _ = PeerId::from_bytes(hop);
            }
        }
        _ => {}
    }
}

/// A refusal: one of the codes expected there, and a sentence.
fn visit_refusal(error: &Error, expected: &[ErrorCode]) {
    assert!(
        expected.contains(&error.code()),
        "unexpected refusal {:?}: {error}",
        error.code()
    );
    assert!(!error.to_string().is_empty());
    let _ = Response::error(error);
}

/// The user's live claim of [`AOR`] until `expires_ms`.
pub fn user_claim(expires_ms: u64) -> AorClaim {
    AorClaim::new(AOR, &keys().user.public(), expires_ms).expect("a valid AOR")
}

/// The device's registration value for [`AOR`], delegated by the user.
pub fn registration() -> RegistrationValue {
    let keys = keys();
    RegistrationValue {
        destination: keys.device.public().to_peer_id().to_bytes(),
        contacts: vec![
            Contact {
                uri: "sip:fuzz@192.0.2.4:5062;transport=tcp".into(),
                q: Some(700),
            },
            Contact {
                uri: "sip:fuzz@[2001:db8::4]".into(),
                q: None,
            },
        ],
        delegation: Delegation::sign(
            &keys.user,
            &resource(),
            &keys.device.public(),
            NOW + 3_600_000,
        )
        .expect("ed25519 signs"),
    }
}

/// Valid inputs of each target, to seed the fuzzers' corpora and to mutate in the property
/// tests: `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let keys = keys();
    let resource = resource();
    let registration = registration();
    let claim = user_claim(NOW + 86_400_000);
    let certified = claim.clone().certified(&keys.ca).expect("ed25519 signs");
    let (reg_key, reg_entry) = registration
        .entry(&keys.device, &resource, NOW - 1_000, 3_600, 1)
        .expect("ed25519 signs");
    let (_, claim_entry) = claim
        .entry(&keys.user, NOW - 1_000, 3_600, 1)
        .expect("ed25519 signs");
    let device = keys.device.public().to_peer_id();
    let mut store = Envelope::request(
        7,
        Some(&device),
        Request::Store {
            resource,
            kind: Kind::SIP_REGISTRATION,
            key: reg_key.clone(),
            data: reg_entry.clone(),
        },
    );
    store
        .hop(&keys.user.public().to_peer_id())
        .expect("a fresh message");
    let fetched = store.reply(Response::Fetched {
        entries: vec![(reg_key, reg_entry), (Vec::new(), claim_entry)],
    });
    let messages = [
        store.clone(),
        fetched,
        Envelope::request(
            8,
            None,
            Request::Fetch {
                resource,
                kind: Kind::AOR_CLAIM,
            },
        ),
        Envelope::request(
            9,
            Some(&device),
            Request::route(
                &keys.user,
                &device,
                [7; 16],
                NOW,
                b"INVITE sip:fuzz@example.org SIP/2.0\r\n\r\n".to_vec(),
            )
            .expect("ed25519 signs"),
        ),
        store.reply(Response::error(&Error::forbidden(
            "AOR is owned by another key",
        ))),
        store.reply(Response::Path {
            hops: vec![device.to_bytes()],
        }),
        Envelope::request(10, None, Request::Ping),
    ];
    let mut seeds: Vec<(&'static str, Vec<u8>)> =
        messages.iter().map(|m| ("envelope", encode(m))).collect();
    seeds.push(("values", registration.encode()));
    seeds.push(("values", claim.encode()));
    seeds.push(("values", certified.encode()));
    // Registration by the device, claim by the user; held claim; CA; re-signed.
    for (mode, value) in [
        (0b0000_0100, registration.encode()),
        (0b0100_0100, registration.encode()),
        (0b0000_0001, claim.encode()),
        (0b0000_0011, certified.encode()),
        (0b0100_0011, claim.encode()),
        (0b0000_1101, claim.encode()),
    ] {
        let mut input = vec![mode];
        input.extend(value);
        seeds.push(("store", input));
    }
    seeds
}
