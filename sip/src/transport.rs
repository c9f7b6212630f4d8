//! Where messages go and come from, as the sans-IO layers see it: a transport protocol, an
//! address, and (for connection-oriented transports) which connection. The sockets live in
//! `p2psip-node`; this crate only names them.

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport protocol (RFC 3261 §18, the Via transport token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: unreliable, so the transaction layer retransmits.
    Udp,
    /// TCP: reliable.
    Tcp,
    /// TLS over TCP (`sips:`): reliable.
    Tls,
}

impl Transport {
    /// Whether the transport delivers reliably, which turns the retransmission timers off
    /// and the wait timers to zero (RFC 3261 Table 4).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The transport named by a Via token or a `transport=` URI parameter, in any case.
    pub fn from_token(token: &str) -> Option<Transport> {
        [Transport::Udp, Transport::Tcp, Transport::Tls]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(token))
    }

    /// The default port: 5061 for TLS, 5060 otherwise (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identifier the transport layer gives each connection, so that a response goes back over
/// the connection its request came on (RFC 3261 §18.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// The far end of a message: the transport, the peer's address, and the connection when
/// there is one. A message received comes from a `Peer`; one to send goes to a `Peer` (with no
/// connection, the transport opens or reuses one to `addr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport.
    pub transport: Transport,
    /// The peer's address.
    pub addr: SocketAddr,
    /// The connection, for TCP and TLS.
    pub connection: Option<ConnectionId>,
}

impl Peer {
    /// A peer reached over `transport` at `addr`, on any connection.
    pub fn new(transport: Transport, addr: SocketAddr) -> Peer {
        Peer {
            transport,
            addr,
            connection: None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transport, self.addr)?;
        if let Some(c) = self.connection {
            write!(f, "#{}", c.0)?;
        }
        Ok(())
    }
}

/// RFC 3261 §18.1.1: a request larger than this (with the path MTU unknown) must go over a
/// congestion-controlled transport such as TCP instead of UDP.
pub const UDP_REQUEST_LIMIT: usize = 1300;
