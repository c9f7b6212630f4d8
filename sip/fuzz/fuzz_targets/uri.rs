//! `Uri::parse` on the input as UTF-8; a URI that parses must make a request that prints and
//! parses back.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        p2psip_sip_fuzz::exercise_uri(s);
    }
});
