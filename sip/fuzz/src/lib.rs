//! Shared checks of the fuzz targets: read everything a parsed message offers, and check
//! that printing it and parsing the print gives it back.
//!
//! The checks live in `sip/tests/support/mod.rs`, shared with the property tests
//! (`sip/tests/properties.rs`), so that both exercise the same accessors the same way.

#[path = "../../tests/support/mod.rs"]
mod support;

pub use support::{
    answer_raw, assert_round_trip, check_frame, exercise_datagram, exercise_message, exercise_uri,
    policies, show, typed_direct, typed_in_headers, visit_error, visit_uri,
};
