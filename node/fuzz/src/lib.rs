//! Shared checks of the fuzz targets: what the node makes of bytes another node or a control
//! client could send.
//!
//! The checks live in `node/tests/fuzz_support/mod.rs`, shared with the property tests
//! (`node/tests/fuzz_props.rs`), so that both feed the parsers the same way and assert the
//! same things.

#[path = "../../tests/fuzz_support/mod.rs"]
mod support;

pub use support::{exercise_control_line, exercise_payload, seeds};
