//! `Message::parse` on one datagram; what parses must print and parse back to itself, and
//! everything readable from it must not panic; what does not parse (or does not pass the
//! checks) must get an answer that prints and parses back.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2psip_sip_fuzz::exercise_datagram(data);
});
