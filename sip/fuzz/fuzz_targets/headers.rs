//! Every typed header parser (`TypedHeader::parse`) on the input as one header value.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2psip_sip_fuzz::typed_direct(data);
});
