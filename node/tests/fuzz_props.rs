//! The fuzz targets of `node/fuzz` as bounded property tests, run with the workspace's tests:
//! arbitrary bytes and mutated valid inputs go through the same checks (`fuzz_support`).
//! Route payloads: `unframe` never panics, refuses with InvalidMessage, and frame -> unframe
//! is the identity. Control lines: valid requests parse to what was printed, garbage gets an
//! error, and no line panics the node (a call duration no `Duration` can hold did: it is
//! refused now).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fuzz_support;

use fuzz_support::{exercise_control_line, exercise_payload, hello_lines, seeds, sip_messages};
use p2psip_node::control::{Hello, MAX_LINE, Request};
use p2psip_node::p2p::{frame, unframe};
use p2psip_sip::Message;
use proptest::prelude::*;
use proptest::sample::Index;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn seeds_of(target: &'static str) -> Vec<Vec<u8>> {
    seeds()
        .into_iter()
        .filter(|(t, _)| *t == target)
        .map(|(_, input)| input)
        .collect()
}

/// A seed of `target` with a few bytes xored, inserted, removed, or cut off.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds_of(target)),
        prop::collection::vec((0u8..4, any::<Index>(), any::<u8>()), 1..6),
    )
        .prop_map(|(mut input, changes)| {
            for (how, at, byte) in changes {
                if input.is_empty() {
                    break;
                }
                let i = at.index(input.len());
                match how {
                    0 => input[i] ^= byte.max(1),
                    1 => input.insert(i, byte),
                    2 => {
                        input.remove(i);
                    }
                    _ => input.truncate(i),
                }
            }
            input
        })
}

fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Status),
        Just(Request::Peers),
        Just(Request::Hangup),
        text().prop_map(|aor| Request::Lookup { aor }),
        text().prop_map(|aor| Request::Register { aor }),
        text().prop_map(|aor| Request::Unregister { aor }),
        (text(), prop::option::of(0.0f64..1e9))
            .prop_map(|(target, duration_s)| Request::Call { target, duration_s }),
        (text(), text()).prop_map(|(target, text)| Request::Message { target, text }),
        text().prop_map(|target| Request::Options { target }),
    ]
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn route_payload_noise_is_refused_or_round_trips(noise in noise()) {
        exercise_payload(&noise);
    }

    #[test]
    fn mutated_route_payloads_are_refused_or_round_trip(input in mutated("route_payload")) {
        exercise_payload(&input);
    }

    #[test]
    fn frame_then_unframe_is_the_identity(
        picks in prop::collection::vec(any::<Index>(), 1..8),
    ) {
        let all = sip_messages();
        let printed: Vec<_> = picks
            .iter()
            .map(|i| Message::parse(all[i.index(all.len())]).unwrap().to_bytes())
            .collect();
        let payload = frame(printed.iter().map(|m| m.as_ref()));
        let messages = unframe(&payload).unwrap();
        let again: Vec<_> = messages.iter().map(Message::to_bytes).collect();
        prop_assert_eq!(again, printed);
    }

    #[test]
    fn valid_hellos_parse_to_what_was_printed(token in text(), request in request()) {
        let hello = Hello { token, request };
        let line = serde_json::to_string(&hello).unwrap();
        let parsed = Hello::parse(line.as_bytes()).unwrap();
        prop_assert_eq!(&parsed.token, &hello.token);
        prop_assert_eq!(&parsed.request, &hello.request);
        exercise_control_line(line.as_bytes());
    }

    #[test]
    fn control_noise_gets_an_error(noise in noise()) {
        // Bytes that are not a JSON object of a hello never parse as one.
        let starts_as_object = noise.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !starts_as_object {
            prop_assert!(Hello::parse(&noise).is_err());
        }
        exercise_control_line(&noise);
    }

    #[test]
    fn mutated_control_lines_are_refused_or_round_trip(input in mutated("control_line")) {
        exercise_control_line(&input);
    }
}

#[test]
fn every_seed_passes_its_own_target() {
    for (target, input) in seeds() {
        if target == "route_payload" {
            assert!(unframe(&input).is_ok());
            exercise_payload(&input);
        } else {
            exercise_control_line(&input);
        }
    }
    for line in hello_lines() {
        Hello::parse(line.as_bytes()).unwrap();
    }
}

/// Regression: `{"command":"call",...,"duration_s":1e30}` was taken, and the node's
/// `Duration::from_secs_f64` panicked on it once the call was answered (the CLI checks only
/// that the number is finite and not negative). Refused with a reason now.
#[test]
fn a_call_duration_no_duration_can_hold_is_refused() {
    for seconds in ["1e30", "1.8446744073709552e19", "-1", "-0.5"] {
        let line = format!(
            r#"{{"token":"t","request":{{"command":"call","target":"sip:bob@example.p2p","duration_s":{seconds}}}}}"#
        );
        let error = Hello::parse(line.as_bytes()).unwrap_err();
        assert!(error.contains("duration_s"), "{seconds}: {error}");
    }
    let line = r#"{"token":"t","request":{"command":"call","target":"sip:bob@example.p2p","duration_s":86400}}"#;
    assert!(Hello::parse(line.as_bytes()).is_ok());
}

#[test]
fn a_line_over_the_limit_or_not_utf8_is_refused() {
    let mut long = hello_lines().remove(0).into_bytes();
    long.resize(MAX_LINE + 1, b' ');
    assert!(Hello::parse(&long).unwrap_err().contains("too long"));
    assert!(
        Hello::parse(b"{\"token\":\"\xff\"}")
            .unwrap_err()
            .contains("UTF-8")
    );
}

#[test]
fn empty_and_cut_route_payloads_name_their_fault() {
    let empty = unframe(&[]).unwrap_err();
    assert!(empty.to_string().contains("empty"), "{empty}");
    let payload = frame(sip_messages().into_iter());
    let cut = unframe(&payload[..payload.len() - 1]).unwrap_err();
    assert!(cut.to_string().contains("cut short"), "{cut}");
    let not_sip = unframe(&frame([&b"hello"[..]].into_iter())).unwrap_err();
    assert!(not_sip.to_string().contains("not SIP"), "{not_sip}");
}

/// Writes the seeds into `node/fuzz/corpus/<target>/`, for `cargo fuzz run`:
/// `cargo test -p p2psip-node --test fuzz_props -- --ignored write_fuzz_corpora`.
#[test]
#[ignore = "writes files: run by hand to seed the fuzzers"]
fn write_fuzz_corpora() {
    let root = std::path::Path::new("fuzz/corpus");
    for (i, (target, input)) in seeds().into_iter().enumerate() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
    }
}
