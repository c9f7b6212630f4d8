//! What can go wrong in the transports, in words for the person running the node.

use std::io;
use std::net::SocketAddr;

use p2psip_sip::{Peer, Transport};

/// An error of the SIP transports. The underlying cause, when there is one, is the
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration holds a value the transports cannot run with.
    #[error("the SIP transport configuration is invalid: {problem}")]
    Config {
        /// What is wrong, and the bound it breaks.
        problem: String,
    },
    /// A listen socket could not be bound.
    #[error(
        "cannot listen for SIP over {transport} on {addr}: another program may be using the \
         port, or the address is not one of this machine's"
    )]
    Bind {
        /// The transport of the socket.
        transport: Transport,
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The TLS certificate, key or trusted roots could not be used.
    #[error("cannot set up TLS: {problem}")]
    Tls {
        /// What is wrong with them.
        problem: String,
    },
    /// A message was to go over a transport the node has no socket for.
    #[error(
        "cannot send over {transport}: the node has no {transport} socket; add a {transport} \
         listen address to the configuration"
    )]
    Unavailable {
        /// The transport asked for.
        transport: Transport,
    },
    /// A new connection could not be made (refused, unreachable, timed out, or the TLS
    /// handshake failed, for instance because the server's certificate is not trusted).
    #[error("cannot connect to {peer}")]
    Connect {
        /// Where to.
        peer: Peer,
        /// Why not.
        #[source]
        source: io::Error,
    },
    /// No new connection may be opened: [`super::Config::max_connections`] are open.
    #[error(
        "cannot connect to {peer}: the node already has its maximum of {limit} connections \
         open (max_connections)"
    )]
    TooManyConnections {
        /// Where to.
        peer: Peer,
        /// The limit.
        limit: usize,
    },
    /// The connection named by the peer is closed (or never existed). Sending without a
    /// connection opens a new one.
    #[error("the connection {peer} is closed; the message was not sent")]
    ConnectionClosed {
        /// The peer, with the connection.
        peer: Peer,
    },
    /// Writing to the socket or connection failed.
    #[error("sending to {peer} failed")]
    Io {
        /// Where to.
        peer: Peer,
        /// What the operating system or TLS said.
        #[source]
        source: io::Error,
    },
}
