//! `control::Hello::parse` on one line a control client sends, and the line as a `Reply` a
//! client reads; what parses must print as JSON that parses back to it, an accepted call
//! duration must fit a `Duration`, and a refusal must say why.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2psip_node_fuzz::exercise_control_line(data);
});
