//! `Message::parse` on one datagram; what parses must print and parse back to itself, and
//! everything readable from it must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2psip_sip::{Message, check_request};
use p2psip_sip_fuzz::{answer_raw, assert_round_trip, exercise_message, policies};

fuzz_target!(|data: &[u8]| {
    match Message::parse(data.to_vec()) {
        Ok(m) => {
            assert_round_trip(&m);
            exercise_message(&m);
            if let Some(r) = m.as_request() {
                for policy in policies() {
                    if let Err(rej) = check_request(r, &policy)
                        && let Some(resp) = rej.response_to_raw(data, Some("fuzz"), &policy)
                    {
                        assert_round_trip(&Message::Response(resp));
                    }
                }
            }
        }
        Err(e) => answer_raw(&e, data),
    }
});
