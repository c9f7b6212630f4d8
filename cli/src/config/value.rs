//! Checked values of the config file. Each parses from the string (or number) a user writes
//! and prints back the same way, so a bad value fails where it is read, and the error points
//! at its line.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::str::FromStr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use p2psip_overlay::identity::MAX_NODE_ID_WORK;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The most replicas an overlay may ask for: far more than churn needs, few enough that a
/// store never waits on dozens of peers.
pub(crate) const MAX_REPLICAS: u8 = 16;

/// An overlay's name: part of every protocol name, so overlays with different names never
/// mix. Checked by the overlay's own rule (letters, digits, `-`, `_`, `.`; 1 to 64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub(crate) struct OverlayName(String);

/// An address to listen on for the overlay, e.g. `/ip4/0.0.0.0/udp/0/quic-v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub(crate) struct ListenAddr(Multiaddr);

/// The address of a peer to join through, ending with its `/p2p/<peer id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub(crate) struct PeerAddr(Multiaddr);

/// The replication factor: how many peers hold each resource, 1 to [`MAX_REPLICAS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub(crate) struct Replicas(u8);

/// The Node-ID work an overlay asks for (S/Kademlia's static puzzle), 0 to
/// [`MAX_NODE_ID_WORK`] bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub(crate) struct NodeIdWork(u32);

/// A SIP listen address: `udp:`, `tcp:` or `tls:` and a socket address, or a bare socket
/// address for both UDP and TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub(crate) struct SipListen {
    /// The one transport, or `None` for UDP and TCP.
    transport: Option<SipTransport>,
    /// The local address and port.
    addr: SocketAddr,
}

/// A SIP transport a node listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

/// `Deserialize` for values written as strings. The check runs inside the visitor, so the
/// toml deserializer pins an error to the value itself (one item of a list, not the list).
macro_rules! string_values {
    ($($type:ty: $expecting:literal,)*) => {$(
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$type, D::Error> {
                deserializer.deserialize_str(Checked::<$type>(PhantomData, $expecting))
            }
        }
    )*};
}

string_values! {
    OverlayName: "an overlay name in quotes, e.g. \"p2psip\"",
    ListenAddr: "a multiaddr in quotes, e.g. \"/ip4/0.0.0.0/udp/0/quic-v1\"",
    PeerAddr: "a multiaddr in quotes, ending with /p2p/<peer id>",
    SipListen: "an address in quotes, e.g. \"127.0.0.1:5060\"",
}

/// The visitor of [`string_values!`]: a string checked by `T::try_from`.
struct Checked<T>(PhantomData<T>, &'static str);

impl<T: TryFrom<String, Error = String>> Visitor<'_> for Checked<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        T::try_from(text.to_owned()).map_err(E::custom)
    }
}

impl OverlayName {
    /// The default overlay, `p2psip`.
    pub(crate) fn p2psip() -> OverlayName {
        OverlayName("p2psip".to_owned())
    }

    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OverlayName {
    type Error = String;

    fn try_from(name: String) -> Result<OverlayName, String> {
        let network = p2psip_overlay::network::Config::default().with_overlay(name.clone());
        match network.validate() {
            Ok(()) => Ok(OverlayName(name)),
            Err(p2psip_overlay::network::Error::Config(reason)) => Err(reason),
            Err(other) => Err(other.to_string()),
        }
    }
}

impl From<OverlayName> for String {
    fn from(name: OverlayName) -> String {
        name.0
    }
}

impl ListenAddr {
    /// QUIC on every IPv4 address, on a port the system picks.
    pub(crate) fn any_quic() -> ListenAddr {
        ListenAddr(
            Multiaddr::empty()
                .with(Protocol::Ip4([0, 0, 0, 0].into()))
                .with(Protocol::Udp(0))
                .with(Protocol::QuicV1),
        )
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;

    fn try_from(text: String) -> Result<ListenAddr, String> {
        parse_multiaddr(&text, "/ip4/0.0.0.0/udp/0/quic-v1").map(ListenAddr)
    }
}

impl From<ListenAddr> for String {
    fn from(addr: ListenAddr) -> String {
        addr.0.to_string()
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = String;

    fn try_from(text: String) -> Result<PeerAddr, String> {
        let example = "/ip4/192.0.2.1/udp/4001/quic-v1/p2p/12D3KooW...";
        let addr = parse_multiaddr(&text, example)?;
        match addr.iter().last() {
            Some(Protocol::P2p(_)) => Ok(PeerAddr(addr)),
            _ => Err(format!(
                "`{text}` does not end with the peer's /p2p/<peer id>; add it, e.g. {example}"
            )),
        }
    }
}

impl From<PeerAddr> for String {
    fn from(addr: PeerAddr) -> String {
        addr.0.to_string()
    }
}

impl Replicas {
    /// Three replicas: a resource survives two of its peers leaving at once.
    pub(crate) const DEFAULT: Replicas = Replicas(3);
}

impl TryFrom<i64> for Replicas {
    type Error = String;

    fn try_from(n: i64) -> Result<Replicas, String> {
        match u8::try_from(n) {
            Ok(n @ 1..=MAX_REPLICAS) => Ok(Replicas(n)),
            _ => Err(format!(
                "{n} replicas: write a number from 1 to {MAX_REPLICAS}"
            )),
        }
    }
}

impl From<Replicas> for u8 {
    fn from(replicas: Replicas) -> u8 {
        replicas.0
    }
}

impl TryFrom<i64> for NodeIdWork {
    type Error = String;

    fn try_from(n: i64) -> Result<NodeIdWork, String> {
        match u32::try_from(n) {
            Ok(n) if n <= MAX_NODE_ID_WORK => Ok(NodeIdWork(n)),
            _ => Err(format!(
                "{n} bits of Node-ID work: write a number from 0 to {MAX_NODE_ID_WORK}"
            )),
        }
    }
}

impl From<NodeIdWork> for u32 {
    fn from(work: NodeIdWork) -> u32 {
        work.0
    }
}

impl ListenAddr {
    /// The multiaddr.
    pub(crate) fn multiaddr(&self) -> &Multiaddr {
        &self.0
    }
}

impl PeerAddr {
    /// The multiaddr, with its `/p2p/<peer id>`.
    pub(crate) fn multiaddr(&self) -> &Multiaddr {
        &self.0
    }
}

impl SipListen {
    /// The local address and port.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it listens on UDP, TCP and TLS.
    pub(crate) fn transports(&self) -> (bool, bool, bool) {
        match self.transport {
            None => (true, true, false),
            Some(SipTransport::Udp) => (true, false, false),
            Some(SipTransport::Tcp) => (false, true, false),
            Some(SipTransport::Tls) => (false, false, true),
        }
    }

    /// UDP and TCP on 127.0.0.1:5060: a node serves the softphones of its own machine.
    pub(crate) fn loopback() -> SipListen {
        SipListen {
            transport: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
        }
    }
}

impl FromStr for SipListen {
    type Err = String;

    fn from_str(text: &str) -> Result<SipListen, String> {
        let bad = || {
            format!(
                "`{text}` is not a SIP listen address; write an IP address and port for UDP and \
                 TCP (127.0.0.1:5060), or one transport first (udp:127.0.0.1:5060, tcp:..., \
                 tls:127.0.0.1:5061)"
            )
        };
        let (transport, addr) = match text.split_once(':') {
            Some((scheme, rest)) if scheme.chars().all(|c| c.is_ascii_alphabetic()) => {
                let transport = match scheme.to_ascii_lowercase().as_str() {
                    "udp" => SipTransport::Udp,
                    "tcp" => SipTransport::Tcp,
                    "tls" => SipTransport::Tls,
                    _ => return Err(bad()),
                };
                (Some(transport), rest)
            }
            _ => (None, text),
        };
        let addr = addr.parse().map_err(|_| bad())?;
        Ok(SipListen { transport, addr })
    }
}

impl TryFrom<String> for SipListen {
    type Error = String;

    fn try_from(text: String) -> Result<SipListen, String> {
        text.parse()
    }
}

impl fmt::Display for SipListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            None => write!(f, "{}", self.addr),
            Some(SipTransport::Udp) => write!(f, "udp:{}", self.addr),
            Some(SipTransport::Tcp) => write!(f, "tcp:{}", self.addr),
            Some(SipTransport::Tls) => write!(f, "tls:{}", self.addr),
        }
    }
}

impl From<SipListen> for String {
    fn from(listen: SipListen) -> String {
        listen.to_string()
    }
}

fn parse_multiaddr(text: &str, example: &str) -> Result<Multiaddr, String> {
    text.parse::<Multiaddr>()
        .map_err(|error| format!("`{text}` is not a multiaddr ({error}); write e.g. {example}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_listen_addresses_print_as_they_parse() {
        for text in [
            "127.0.0.1:5060",
            "udp:127.0.0.1:5060",
            "tcp:[::1]:5060",
            "tls:0.0.0.0:5061",
        ] {
            assert_eq!(
                text.parse::<SipListen>().map(|l| l.to_string()),
                Ok(text.into())
            );
        }
        assert_eq!(
            "UDP:127.0.0.1:5060"
                .parse::<SipListen>()
                .map(|l| l.to_string()),
            Ok("udp:127.0.0.1:5060".into())
        );
        for bad in ["sctp:127.0.0.1:5060", "127.0.0.1", "localhost:5060", "udp:"] {
            assert!(bad.parse::<SipListen>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bootstrap_addresses_name_their_peer() {
        let peer = libp2p::PeerId::random();
        let with = format!("/ip4/192.0.2.1/udp/4001/quic-v1/p2p/{peer}");
        assert!(PeerAddr::try_from(with).is_ok());
        let without = PeerAddr::try_from("/ip4/192.0.2.1/udp/4001/quic-v1".to_owned());
        assert!(without.is_err_and(|e| e.contains("/p2p/")));
    }

    #[test]
    fn replicas_and_overlay_names_are_bounded() {
        assert_eq!(Replicas::try_from(3), Ok(Replicas::DEFAULT));
        assert!(Replicas::try_from(0).is_err());
        assert!(Replicas::try_from(17).is_err());
        assert!(Replicas::try_from(-1).is_err());
        assert!(OverlayName::try_from("my-overlay.1".to_owned()).is_ok());
        assert!(OverlayName::try_from("two words".to_owned()).is_err());
        assert!(OverlayName::try_from(String::new()).is_err());
    }
}
