//! Shared checks of the fuzz targets: what the overlay makes of bytes a peer could send.
//!
//! The checks live in `overlay/tests/fuzz_support/mod.rs`, shared with the property tests
//! (`overlay/tests/fuzz_props.rs`), so that both feed the parsers the same way and assert the
//! same things.

#[path = "../../tests/fuzz_support/mod.rs"]
mod support;

pub use support::{exercise_envelope, exercise_store, exercise_values, seeds};
