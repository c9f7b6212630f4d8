//! `p2p::unframe` on one Route payload (the SIP messages another node sends); what it reads,
//! printed and framed again with `p2p::frame`, must unframe to the same messages; a refusal
//! must be InvalidMessage with a sentence.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2psip_node_fuzz::exercise_payload(data);
});
