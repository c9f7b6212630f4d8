//! # p2psip-overlay: the peer-to-peer overlay
//!
//! This crate will hold the RELOAD-style (RFC 6940, RFC 7904) distributed hash table that
//! replaces SIP's registrar, location server and proxies: node identity (ed25519 keys,
//! Node-ID = libp2p `PeerId`), Resource-IDs (`blake3` of the normalized address-of-record),
//! the kinds of stored data and their signatures and access rules, the sled storage engine,
//! replication, routed messages (Store, Fetch, Stat, Route, Ping, PathTrack) and the libp2p
//! network behaviour that carries them.
//!
//! It depends on neither `p2psip-sip` nor `p2psip-node`. Only the libp2p glue is async; the
//! routing and storage decisions are plain functions of their inputs.
//!
//! Nothing lives here yet: the overlay is issue 5 of milestone 1.
