//! `RegistrationValue::decode` and `AorClaim::decode` (the delegation inside included) on the
//! input; what decodes must encode back to itself, and its checks (delegation signature,
//! certificate, resource) must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2psip_overlay_fuzz::exercise_values(data);
});
