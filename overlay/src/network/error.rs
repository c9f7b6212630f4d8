//! The network layer's one error type.

use std::io;

use libp2p::{Multiaddr, PeerId};

/// What can go wrong in the network layer. Each message is a sentence for a person: what
/// happened and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; the text says which and why.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// The libp2p transports or behaviours could not be built.
    #[error("could not set up the libp2p stack: {0}")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Listening on an address failed.
    #[error("could not listen on {addr}: {reason}; is the address local and the port free?")]
    Listen {
        /// The address that could not be listened on.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A frame is larger than the configured limit, and was neither sent nor read.
    #[error("a frame of {len} bytes is larger than the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's length (or the length its prefix announced).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A connection could not be made.
    #[error("could not connect to {target}: {reason}")]
    Dial {
        /// The address or peer that was dialled.
        target: String,
        /// Why the dial failed.
        reason: String,
    },
    /// The peer does not speak this overlay's request protocol: it belongs to another overlay,
    /// or it is not a p2psip node.
    #[error("peer {peer} does not speak {protocol}: it is not a member of this overlay")]
    UnsupportedProtocol {
        /// The peer.
        peer: PeerId,
        /// Our protocol, which the peer refused.
        protocol: String,
    },
    /// No response arrived within the request timeout.
    #[error("no answer from {peer} within the request timeout")]
    Timeout {
        /// The peer that did not answer.
        peer: PeerId,
    },
    /// The connection closed before the response arrived.
    #[error("the connection to {peer} closed before its answer arrived")]
    ConnectionClosed {
        /// The peer.
        peer: PeerId,
    },
    /// The request's stream failed (reset by the peer, or broken).
    #[error("the exchange with {peer} failed: {source}")]
    Stream {
        /// The peer.
        peer: PeerId,
        /// The stream error.
        #[source]
        source: io::Error,
    },
    /// The routing table is empty, so there is nobody to ask.
    #[error("no known peers: give a bootstrap address, dial a peer, or enable mDNS")]
    NoKnownPeers,
    /// A DHT query found nothing before its timeout.
    #[error("the DHT query timed out without an answer")]
    QueryTimeout,
    /// Too many operations of one kind are already waiting.
    #[error("too many pending {what} (limit {limit}); try again later")]
    Busy {
        /// What is pending: requests, dials, queries.
        what: &'static str,
        /// The configured limit.
        limit: usize,
    },
    /// A peer sent more requests than this node takes from one peer: too many waiting for
    /// their answer at once, or too many per second.
    #[error("peer {peer} {why}; slow down")]
    PeerLimit {
        /// The peer.
        peer: PeerId,
        /// Which limit it reached, e.g. "has 32 requests waiting (the limit per peer)".
        why: String,
    },
    /// A node cannot send a request to itself over the network.
    #[error("a node cannot send a request to itself; handle it locally")]
    LocalPeer,
    /// The inbound request is no longer waiting for an answer: it timed out, its connection
    /// closed, or the network stopped.
    #[error("the request is no longer waiting for an answer (it timed out or the network stopped)")]
    RequestGone,
    /// The network task has stopped (after [`Network::shutdown`](super::Network::shutdown)).
    #[error("the network has stopped")]
    Stopped,
}
