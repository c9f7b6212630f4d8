//! # p2psip-node: the running peer
//!
//! The async layer of p2psip, on tokio: it moves bytes between sockets, the sans-IO state
//! machines of `p2psip-sip` and the overlay of `p2psip-overlay`, and wakes their timers.
//!
//! ## Entry points
//! - [`transport`]: the SIP transports (RFC 3261 §18) over UDP, TCP and TLS.
//!   [`transport::Transports::bind`] opens the sockets of a [`transport::Config`] and returns
//!   the send handle and [`transport::Incoming`], where every received message arrives as a
//!   [`transport::Received`] with its exact source [`transport::Peer`].
//! - [`p2p`]: the P2PSIP node, [`p2p::Node`]: registrations in the overlay, requests routed
//!   through peers, dialogs end to end; [`hops`]: how far each call's INVITE travelled in the
//!   overlay ([`p2p::Node::invite_hops`]).
//! - [`media`]: the media of a node's softphones anchored at the node and carried to the
//!   other end node over libp2p streams ([`media::Media`]).
//! - [`server`]: a plain SIP proxy and registrar; [`agent`]: a user agent over its own
//!   sockets.
//!
//! ## Invariants
//! - Nothing a peer sends panics the node; every received message is bounded by
//!   [`p2psip_sip::Limits`], every queue and the number of connections are bounded.
//! - The transports never change a message: the layers above stamp `received`/`rport` from
//!   the source they report.
//! - Dropping the last [`transport::Transports`] handle closes every socket and connection.

pub mod agent;
mod clock;
pub mod control;
pub mod edge;
pub mod hops;
pub mod limit;
pub mod media;
pub mod p2p;
pub mod server;
pub mod transport;
