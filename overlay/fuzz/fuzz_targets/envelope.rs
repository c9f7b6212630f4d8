//! `message::decode` on one message, under the default and the largest size limit; what
//! decodes must encode back to itself, no longer than it came, and every field a peer reads
//! from it (hops, destination, a Store's or Fetched entry through `check_store`) must not
//! panic. A refusal must be InvalidMessage or MessageTooLarge, with a sentence.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2psip_overlay_fuzz::exercise_envelope(data);
});
