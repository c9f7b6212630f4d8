//! # p2psip-testnet: many nodes on one machine
//!
//! This crate will start N p2psip nodes on 127.0.0.1, in one process or as child processes,
//! run scenarios against them (registrations, calls, churn, fault injection) and report what
//! happened as text, JSON and a self-contained HTML page. The `p2psip testnet` command and the
//! multi-node integration tests are built on it.
//!
//! Nothing lives here yet: it arrives with the overlay, issue 5 of milestone 1.
