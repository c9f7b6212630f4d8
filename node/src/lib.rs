//! # p2psip-node: the running peer
//!
//! This crate will hold what runs on every machine: the tokio runtime, the SIP transports
//! (UDP, TCP, TLS), the drivers that feed the sans-IO state machines of `p2psip-sip` with
//! bytes and time, the P2PSIP logic that joins them to the overlay of `p2psip-overlay`, the
//! built-in user agent, the local control API, metrics and configuration.
//!
//! Nothing lives here yet: the transports arrive with issue 3 of milestone 1.
