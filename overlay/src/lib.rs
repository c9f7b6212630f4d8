//! # p2psip-overlay: the peer-to-peer overlay
//!
//! The RELOAD-style (RFC 6940, RFC 7904) distributed hash table that replaces SIP's
//! registrar, location server and proxies: node identity (ed25519 keys, Node-ID = libp2p
//! `PeerId`), Resource-IDs (`blake3` of the normalized address-of-record), the kinds of stored
//! data with their signatures and access rules, the sled storage engine, the RELOAD-style
//! messages (Store, Fetch, Stat, Route, Ping, PathTrack) and the libp2p network that carries
//! them.
//!
//! A lookup of an AOR trusts no single replica: [`quorum`] decides by what a majority of the
//! replica set holds, every entry checked as a storing node checks it
//! ([`node::Overlay::fetch_verified`]).
//!
//! It depends on neither `p2psip-sip` nor `p2psip-node`. Only the libp2p glue (`network`) is
//! async; the data, access and message rules are plain functions of their inputs.
//!
//! Being built (milestone 1, issue 5): the modules below.

pub mod access;
pub mod auth;
pub mod core;
pub mod data;
pub mod error;
pub mod id;
pub mod identity;
pub mod message;
pub mod network;
pub mod node;
pub mod quorum;
pub mod rng;
pub mod sim;
pub mod store;
