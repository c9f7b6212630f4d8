//! The wire format: encode -> decode is the identity for every message (property test), no
//! input makes `decode` panic, and each way of being wrong has its own error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use libp2p::PeerId;
use libp2p::identity::Keypair;
use p2psip_overlay::data::{Kind, Slot, StoredData, StoredMeta};
use p2psip_overlay::error::{Error, ErrorCode};
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::message::{
    Body, DEFAULT_MAX_MESSAGE, Envelope, Request, Response, VERSION, decode, encode,
    peek_transaction,
};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn resource() -> impl Strategy<Value = ResourceId> {
    any::<[u8; 32]>().prop_map(ResourceId::from_bytes)
}

fn stored() -> impl Strategy<Value = StoredData> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        bytes(40),
        bytes(40),
        bytes(70),
    )
        .prop_map(
            |(storage_time, lifetime, generation, value, signer, signature)| StoredData {
                storage_time,
                lifetime,
                generation,
                value,
                signer,
                signature,
            },
        )
}

fn meta() -> impl Strategy<Value = StoredMeta> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(storage_time, lifetime, generation, value_len, value_hash)| StoredMeta {
                storage_time,
                lifetime,
                generation,
                value_len,
                value_hash,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (resource(), any::<u32>(), bytes(40), stored()).prop_map(|(resource, kind, key, data)| {
            Request::Store {
                resource,
                kind: Kind(kind),
                key,
                data,
            }
        }),
        (resource(), any::<u32>()).prop_map(|(resource, kind)| Request::Fetch {
            resource,
            kind: Kind(kind)
        }),
        (resource(), any::<u32>()).prop_map(|(resource, kind)| Request::Stat {
            resource,
            kind: Kind(kind)
        }),
        (
            bytes(40),
            bytes(200),
            bytes(40),
            any::<[u8; 16]>(),
            any::<u64>(),
            bytes(64)
        )
            .prop_map(
                |(destination, payload, origin, nonce, timestamp_ms, signature)| Request::Route {
                    destination,
                    payload,
                    origin,
                    nonce,
                    timestamp_ms,
                    signature,
                }
            ),
        Just(Request::Ping),
        bytes(40).prop_map(|destination| Request::PathTrack { destination }),
        (resource(), prop::collection::vec(any::<u32>(), 0..9)).prop_map(|(resource, kinds)| {
            Request::FetchKinds {
                resource,
                kinds: kinds.into_iter().map(Kind).collect(),
            }
        }),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::RequestTimeout,
        ErrorCode::GenerationTooLow,
        ErrorCode::DataTooLarge,
        ErrorCode::DataTooOld,
        ErrorCode::TtlExceeded,
        ErrorCode::MessageTooLarge,
        ErrorCode::UnknownKind,
        ErrorCode::InvalidMessage,
        ErrorCode::LoopDetected,
        ErrorCode::Expired,
        ErrorCode::Internal,
        ErrorCode::NotReplica,
        ErrorCode::Replayed,
        ErrorCode::Stale,
        ErrorCode::Busy,
    ])
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u64>(), any::<bool>()).prop_map(|(generation, replica)| Response::Stored {
            generation,
            replica
        }),
        prop::collection::vec((bytes(40), stored()), 0..4)
            .prop_map(|entries| Response::Fetched { entries }),
        prop::collection::vec((bytes(40), meta()), 0..4)
            .prop_map(|entries| Response::Stat { entries }),
        (bytes(200), bytes(64))
            .prop_map(|(payload, signature)| Response::Routed { payload, signature }),
        Just(Response::Pong),
        prop::collection::vec(bytes(40), 0..5).prop_map(|hops| Response::Path { hops }),
        (error_code(), ".{0,80}").prop_map(|(code, message)| Response::Error { code, message }),
        (
            prop::collection::vec(
                (
                    any::<u32>(),
                    prop::collection::vec((bytes(40), stored()), 0..3)
                ),
                0..3
            ),
            any::<bool>()
        )
            .prop_map(|(kinds, replica)| Response::FetchedKinds {
                kinds: kinds
                    .into_iter()
                    .map(|(kind, entries)| (Kind(kind), entries))
                    .collect(),
                replica,
            }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u64>(),
        any::<u8>(),
        prop::collection::vec(bytes(40), 0..5),
        prop::option::of(bytes(40)),
        prop_oneof![
            request().prop_map(Body::Request),
            response().prop_map(Body::Response)
        ],
    )
        .prop_map(|(transaction, ttl, via, destination, body)| Envelope {
            version: VERSION,
            transaction,
            ttl,
            via,
            destination,
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_the_identity(message in envelope()) {
        let encoded = encode(&message);
        prop_assert_eq!(peek_transaction(&encoded), Some(message.transaction));
        prop_assert_eq!(decode(&encoded, DEFAULT_MAX_MESSAGE).unwrap(), message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(noise in bytes(300)) {
        let _ = decode(&noise, DEFAULT_MAX_MESSAGE);
        let mut versioned = vec![VERSION];
        versioned.extend(&noise);
        let _ = decode(&versioned, DEFAULT_MAX_MESSAGE);
    }

    #[test]
    fn damaged_messages_never_panic(
        message in envelope(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let encoded = encode(&message);
        let truncated = &encoded[..cut.index(encoded.len())];
        prop_assert!(decode(truncated, DEFAULT_MAX_MESSAGE).is_err());
        let mut flipped = encoded.clone();
        for (at, byte) in flips {
            let at = at.index(flipped.len());
            flipped[at] ^= byte;
        }
        let _ = decode(&flipped, DEFAULT_MAX_MESSAGE);
    }
}

#[test]
fn an_oversized_message_is_too_large() {
    let message = Envelope::request(
        1,
        None,
        Request::route(
            &Keypair::generate_ed25519(),
            &PeerId::random(),
            [7; 16],
            1000,
            vec![0; 70_000],
        )
        .unwrap(),
    );
    let encoded = encode(&message);
    assert!(matches!(
        decode(&encoded, DEFAULT_MAX_MESSAGE),
        Err(Error::MessageTooLarge {
            limit: DEFAULT_MAX_MESSAGE,
            ..
        })
    ));
    assert_eq!(decode(&encoded, 128 * 1024).unwrap(), message);
}

#[test]
fn another_version_is_named() {
    let mut encoded = encode(&Envelope::request(1, None, Request::Ping));
    encoded[0] = VERSION + 1;
    let error = decode(&encoded, DEFAULT_MAX_MESSAGE).unwrap_err();
    assert!(matches!(error, Error::InvalidMessage { .. }));
    let named = format!("version {}", VERSION + 1);
    assert!(error.to_string().contains(&named), "{error}");
}

#[test]
fn a_store_answer_of_version_2_is_refused_by_its_version() {
    // Version 2 answered a Store with its generation alone; the flag that says whether the
    // peer is a replica came later. Such an answer is refused by its version, not as a
    // message that ends too soon.
    let request = Envelope::request(1, None, Request::Ping);
    let answer = request.reply(Response::Stored {
        generation: 7,
        replica: true,
    });
    let mut encoded = encode(&answer);
    assert_eq!(encoded.pop(), Some(1), "the replica flag is the last byte");
    encoded[0] = 2;
    let error = decode(&encoded, DEFAULT_MAX_MESSAGE).unwrap_err();
    assert!(matches!(error, Error::InvalidMessage { .. }));
    assert!(error.to_string().contains("version 2"), "{error}");
}

#[test]
fn empty_and_trailing_bytes_are_invalid() {
    assert!(matches!(
        decode(&[], DEFAULT_MAX_MESSAGE),
        Err(Error::InvalidMessage { .. })
    ));
    let mut encoded = encode(&Envelope::request(1, None, Request::Ping));
    encoded.push(0);
    let error = decode(&encoded, DEFAULT_MAX_MESSAGE).unwrap_err();
    assert!(error.to_string().contains("1 bytes follow"), "{error}");
}

#[test]
fn a_huge_announced_length_fails_fast() {
    // version, transaction 0, ttl 0, then a Via list announcing u64::MAX entries.
    let mut bytes = vec![VERSION, 0, 0, 0xfd];
    bytes.extend(u64::MAX.to_le_bytes());
    assert!(decode(&bytes, DEFAULT_MAX_MESSAGE).is_err());
    // ... and a byte string announcing a gigabyte.
    let mut bytes = vec![VERSION, 0, 0, 1, 0xfc];
    bytes.extend((1u32 << 30).to_le_bytes());
    assert!(decode(&bytes, DEFAULT_MAX_MESSAGE).is_err());
}

#[test]
fn a_signed_store_survives_the_wire() {
    let device = Keypair::ed25519_from_bytes([3; 32]).unwrap();
    let resource = ResourceId::for_aor("sip:bob@example.org").unwrap();
    let key = device.public().to_peer_id().to_bytes();
    let slot = Slot {
        resource: &resource,
        kind: Kind::SIP_REGISTRATION,
        key: &key,
    };
    let data = StoredData::new(1000, 60, 1, b"value".to_vec())
        .sign(&device, &slot)
        .unwrap();
    let message = Envelope::request(
        42,
        None,
        Request::Store {
            resource,
            kind: Kind::SIP_REGISTRATION,
            key: key.clone(),
            data,
        },
    );
    let decoded = decode(&encode(&message), DEFAULT_MAX_MESSAGE).unwrap();
    let Body::Request(Request::Store { data, .. }) = decoded.body else {
        panic!("not a store");
    };
    assert_eq!(data.verify(&slot).unwrap(), device.public());
}

#[test]
fn an_error_response_carries_its_code_and_sentence() {
    let request = Envelope::request(5, None, Request::Ping);
    let refused = Error::GenerationTooLow {
        current: 3,
        offered: 2,
    };
    let reply = request.reply(Response::error(&refused));
    let decoded = decode(&encode(&reply), DEFAULT_MAX_MESSAGE).unwrap();
    let Body::Response(response) = decoded.body else {
        panic!("not a response");
    };
    let error = response.into_result().unwrap_err();
    assert_eq!(error.code(), ErrorCode::GenerationTooLow);
    assert_eq!(error.to_string(), format!("peer answered: {refused}"));
}
