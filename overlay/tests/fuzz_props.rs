//! The fuzz targets of `overlay/fuzz` as bounded property tests, run with the workspace's
//! tests: arbitrary bytes and mutated valid inputs go through the same checks
//! (`fuzz_support`): the envelope decoder, the stored values' decoders and `check_store` never
//! panic, what decodes round-trips, and decoding allocates a bounded amount whatever the
//! input claims (measured by a counting allocator on the test's thread).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fuzz_support;

use fuzz_support::{
    AOR, NOW, exercise_envelope, exercise_store, exercise_values, keys, registration, seeds,
    user_claim,
};
use p2psip_overlay::data::{AorClaim, Contact, Delegation, RegistrationValue};
use p2psip_overlay::message::{DEFAULT_MAX_MESSAGE, MAX_MESSAGE_LIMIT, VERSION, decode};
use proptest::prelude::*;
use proptest::sample::Index;

/// Counts the bytes the allocations of the current thread hold, and their peak.
mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static HELD: Cell<i64> = const { Cell::new(0) };
        static PEAK: Cell<i64> = const { Cell::new(0) };
    }

    /// The system allocator, counting.
    pub(crate) struct Meter;

    fn add(bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let _ = HELD.try_with(|held| {
            let now = held.get().saturating_add(bytes);
            held.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    fn sub(bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let _ = HELD.try_with(|held| held.set(held.get().saturating_sub(bytes)));
    }

    // A global allocator cannot be written without `unsafe`; this one only counts and hands
    // every call to the system allocator unchanged. Test code only.
    #[allow(unsafe_code)]
    // SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
    // `GlobalAlloc` contract; the counting touches only thread-local integers (no allocation).
    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded unchanged.
            let ptr = unsafe { System.alloc(layout) };
            if !ptr.is_null() {
                add(layout.size());
            }
            ptr
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded unchanged.
            let ptr = unsafe { System.alloc_zeroed(layout) };
            if !ptr.is_null() {
                add(layout.size());
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded unchanged.
            unsafe { System.dealloc(ptr, layout) };
            sub(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded unchanged.
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            if !new.is_null() {
                sub(layout.size());
                add(new_size);
            }
            new
        }
    }

    /// Runs `f` and gives the most bytes it held at once on this thread.
    pub(crate) fn peak<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let start = HELD.with(Cell::get);
        PEAK.with(|peak| peak.set(start));
        let out = f();
        let peak = PEAK.with(Cell::get) - start;
        (out, u64::try_from(peak).unwrap_or(0))
    }
}

#[global_allocator]
static METER: meter::Meter = meter::Meter;

/// What one decode may hold at once, whatever the input: the overlay's message limit (a
/// length a message announces is never believed beyond it) a few times over, for the nested
/// sequences that each reserve room for what they announce before reading it.
const DECODE_BUDGET: u64 = 4 * MAX_MESSAGE_LIMIT as u64;

fn seeds_of(target: &'static str) -> Vec<Vec<u8>> {
    seeds()
        .into_iter()
        .filter(|(t, _)| *t == target)
        .map(|(_, input)| input)
        .collect()
}

/// One change to an input: xor a byte, insert one, remove one, cut the input short, or put a
/// bincode length marker (0xfb..=0xfe: a u16..u128 follows) with 0xff bytes after it, so that
/// a length announces far more than there is.
#[derive(Debug, Clone)]
enum Mutation {
    Xor(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Cut(Index),
    Huge(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=u8::MAX).prop_map(|(at, x)| Mutation::Xor(at, x)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Cut),
        (any::<Index>(), 0xfbu8..=0xfe).prop_map(|(at, m)| Mutation::Huge(at, m)),
    ]
}

fn mutate(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if input.is_empty() {
            break;
        }
        match *m {
            Mutation::Xor(ref at, x) => {
                let at = at.index(input.len());
                input[at] ^= x;
            }
            Mutation::Insert(ref at, b) => {
                let at = at.index(input.len() + 1);
                input.insert(at, b);
            }
            Mutation::Remove(ref at) => {
                input.remove(at.index(input.len()));
            }
            Mutation::Cut(ref at) => input.truncate(at.index(input.len())),
            Mutation::Huge(ref at, marker) => {
                let at = at.index(input.len());
                input[at] = marker;
                let width = 1usize << (marker - 0xfa);
                for b in input.iter_mut().skip(at + 1).take(width) {
                    *b = 0xff;
                }
            }
        }
    }
    input
}

/// A seed of `target`, mutated.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds_of(target);
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 1..6),
    )
        .prop_map(|(seed, mutations)| mutate(seed, &mutations))
}

fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn registration_value() -> impl Strategy<Value = RegistrationValue> {
    (
        bytes(40),
        prop::collection::vec((".{0,60}", prop::option::of(any::<u16>())), 0..4),
        (bytes(40), bytes(40), any::<u64>(), bytes(70)),
    )
        .prop_map(
            |(destination, contacts, (user_key, device_key, expires_ms, signature))| {
                RegistrationValue {
                    destination,
                    contacts: contacts
                        .into_iter()
                        .map(|(uri, q)| Contact { uri, q })
                        .collect(),
                    delegation: Delegation {
                        user_key,
                        device_key,
                        expires_ms,
                        signature,
                    },
                }
            },
        )
}

fn aor_claim() -> impl Strategy<Value = AorClaim> {
    (
        ".{0,80}",
        bytes(40),
        any::<u64>(),
        prop::option::of(bytes(70)),
    )
        .prop_map(|(aor, user_key, expires_ms, ca_signature)| AorClaim {
            aor,
            user_key,
            expires_ms,
            ca_signature,
        })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn envelope_noise_is_refused_or_round_trips(noise in noise(), versioned in any::<bool>()) {
        let mut input = noise;
        if versioned {
            input.insert(0, VERSION);
        }
        exercise_envelope(&input);
    }

    #[test]
    fn mutated_envelopes_are_refused_or_round_trip(input in mutated("envelope")) {
        exercise_envelope(&input);
    }

    #[test]
    fn envelope_decoding_allocates_a_bounded_amount(input in mutated("envelope")) {
        for limit in [DEFAULT_MAX_MESSAGE, MAX_MESSAGE_LIMIT] {
            let (_, peak) = meter::peak(|| decode(&input, limit));
            prop_assert!(peak <= DECODE_BUDGET, "{peak} bytes held to decode {} bytes", input.len());
        }
    }

    #[test]
    fn value_noise_and_mutated_values_never_panic(noise in noise(), input in mutated("values")) {
        exercise_values(&noise);
        let (_, peak) = meter::peak(|| exercise_values(&input));
        prop_assert!(peak <= DECODE_BUDGET, "{peak} bytes held to decode {} bytes", input.len());
    }

    #[test]
    fn registration_values_round_trip(value in registration_value()) {
        let encoded = value.encode();
        let decoded = RegistrationValue::decode(&encoded).unwrap();
        prop_assert_eq!(&decoded, &value);
        prop_assert_eq!(decoded.encode(), encoded);
    }

    #[test]
    fn aor_claims_round_trip(claim in aor_claim()) {
        let encoded = claim.encode();
        let decoded = AorClaim::decode(&encoded).unwrap();
        prop_assert_eq!(&decoded, &claim);
        prop_assert_eq!(decoded.encode(), encoded);
    }
}

proptest! {
    // Each case signs and verifies a few times (ed25519 takes milliseconds in debug builds):
    // fewer cases; the fuzzer goes deeper.
    #![proptest_config(config(32))]

    #[test]
    fn store_checks_hold_for_noise_and_mutated_values(
        mode in any::<u8>(),
        noise in noise(),
        input in mutated("store"),
    ) {
        let mut with_mode = vec![mode];
        with_mode.extend(noise);
        exercise_store(&with_mode);
        exercise_store(&input);
    }
}

#[test]
fn every_seed_passes_its_own_target() {
    for (target, input) in seeds() {
        match target {
            "envelope" => {
                assert!(decode(&input, DEFAULT_MAX_MESSAGE).is_ok());
                exercise_envelope(&input);
            }
            "values" => {
                assert!(
                    RegistrationValue::decode(&input).is_ok() || AorClaim::decode(&input).is_ok()
                );
                exercise_values(&input);
            }
            _ => exercise_store(&input),
        }
    }
}

#[test]
fn the_seeds_stores_are_accepted() {
    // The store seeds that must pass every rule do: the targets reach the accepting path.
    use p2psip_overlay::access::{AccessPolicy, check_store};
    use p2psip_overlay::data::Kind;
    let keys = keys();
    let resource = fuzz_support::resource();
    let claim = user_claim(NOW + 86_400_000);
    let (key, entry) = registration()
        .entry(&keys.device, &resource, NOW - 1_000, 3_600, 1)
        .unwrap();
    let policy = AccessPolicy::default();
    check_store(
        &resource,
        Kind::SIP_REGISTRATION,
        &key,
        None,
        Some(&claim),
        &entry,
        NOW,
        &policy,
    )
    .unwrap();
    let (_, claim_entry) = claim.entry(&keys.user, NOW - 1_000, 3_600, 1).unwrap();
    check_store(
        &claim.resource().unwrap(),
        Kind::AOR_CLAIM,
        &[],
        None,
        None,
        &claim_entry,
        NOW,
        &policy,
    )
    .unwrap();
    assert_eq!(claim.aor, p2psip_overlay::id::normalize_aor(AOR).unwrap());
}

/// Writes the seeds into `overlay/fuzz/corpus/<target>/`, for `cargo fuzz run`:
/// `cargo test -p p2psip-overlay --test fuzz_props -- --ignored write_fuzz_corpora`.
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

#[test]
fn the_meter_counts_what_a_thread_holds() {
    let (buffer, peak) = meter::peak(|| vec![0u8; 1 << 20]);
    assert!(peak >= 1 << 20, "{peak}");
    drop(buffer);
    let (_, peak) = meter::peak(|| ());
    assert_eq!(peak, 0);
}

/// A message of a few bytes that announces a Via list of 40,000 entries whose first entry
/// announces a MiB: serde reserves room for what a sequence announces (up to a MiB) before
/// reading it, so such a message makes a peer hold about 2 MiB for a moment (measured:
/// 2,008,576 bytes for 13 bytes; 2,097,136 for a Fetched response of 17 bytes). Bounded by
/// the budget, not by the message's size; the memory is reserved, never written.
#[test]
fn a_tiny_message_announcing_huge_lengths_holds_a_bounded_amount() {
    let mut via = vec![VERSION, 0, 0, 0xfc];
    via.extend(40_000u32.to_le_bytes());
    via.push(0xfc);
    via.extend((1u32 << 20).to_le_bytes());
    // version, transaction, ttl, no Via, no destination, a Fetched response of 40,000 entries
    // whose first key announces a MiB.
    let mut fetched = vec![VERSION, 0, 0, 0, 0, 1, 1, 0xfc];
    fetched.extend(40_000u32.to_le_bytes());
    fetched.push(0xfc);
    fetched.extend((1u32 << 20).to_le_bytes());
    for input in [via, fetched] {
        let (result, peak) = meter::peak(|| decode(&input, MAX_MESSAGE_LIMIT));
        let error = result.unwrap_err();
        assert!(error.to_string().contains("does not decode"), "{error}");
        assert!(
            peak <= DECODE_BUDGET,
            "{peak} bytes held for {} bytes",
            input.len()
        );
    }
}
