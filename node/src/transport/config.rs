//! What the transports listen on, whom they trust, and their bounds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use p2psip_sip::Limits;
use rustls::pki_types::CertificateDer;

use super::Error;

/// The SIP port on the loopback address: by default a node serves the softphones of its own
/// machine only (DESIGN §7).
const LOOPBACK_SIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);

/// The configuration of [`super::Transports`]. Build it from [`Config::default`] with the
/// builder methods, one per field.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP listen addresses. Port 0 picks a free port. Default: `127.0.0.1:5060`.
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses. Port 0 picks a free port. Default: `127.0.0.1:5060`.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses (RFC 3261 §26.2; the usual port is 5061). Default: none.
    pub tls: Vec<SocketAddr>,
    /// The certificate chain and private key the TLS listeners present. `None`: a
    /// self-signed certificate for the IP addresses of [`Config::tls`] (and `localhost`),
    /// made at bind time, which peers trust only if told to (for tests and local use).
    /// Default: `None`.
    pub tls_identity: Option<TlsIdentity>,
    /// The certificates an outgoing TLS connection trusts as roots: the server's chain must
    /// lead to one of them and name the IP address connected to. There are no built-in roots
    /// (a node may run offline), so with none every outgoing TLS connection fails. Load a PEM
    /// bundle with [`super::certificates_from_pem`]. Default: none.
    pub tls_roots: Vec<CertificateDer<'static>>,
    /// Accept any server certificate on outgoing TLS connections, without checking it. This
    /// gives up TLS's protection against an attacker in the middle: for tests only.
    /// Default: `false`.
    pub dangerous_accept_any_server_certificate: bool,
    /// Bounds on each received message (size, header count, line length). Default:
    /// [`Limits::default`].
    pub limits: Limits,
    /// The most TCP and TLS connections open at once, incoming and outgoing together; an
    /// incoming one beyond it is closed at once, an outgoing one is refused with
    /// [`Error::TooManyConnections`]. Default: 1024.
    pub max_connections: usize,
    /// A TCP or TLS connection with no traffic in either direction for this long is closed;
    /// so is one whose peer takes longer than this to accept what is written to it.
    /// Default: 5 minutes.
    pub idle_timeout: Duration,
    /// The longest an outgoing connection may take to connect, TLS handshake included, and an
    /// incoming TLS connection to finish its handshake. Default: 10 seconds.
    pub connect_timeout: Duration,
    /// How many received messages wait for [`super::Incoming::recv`] before the sockets stop
    /// reading. Default: 1024.
    pub incoming_capacity: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            udp: vec![LOOPBACK_SIP],
            tcp: vec![LOOPBACK_SIP],
            tls: Vec::new(),
            tls_identity: None,
            tls_roots: Vec::new(),
            dangerous_accept_any_server_certificate: false,
            limits: Limits::default(),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(5 * 60),
            connect_timeout: Duration::from_secs(10),
            incoming_capacity: 1024,
        }
    }
}

impl Config {
    /// Sets [`Config::udp`].
    pub fn udp(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Config {
        self.udp = addrs.into_iter().collect();
        self
    }

    /// Sets [`Config::tcp`].
    pub fn tcp(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Config {
        self.tcp = addrs.into_iter().collect();
        self
    }

    /// Sets [`Config::tls`].
    pub fn tls(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Config {
        self.tls = addrs.into_iter().collect();
        self
    }

    /// Sets [`Config::tls_identity`].
    pub fn tls_identity(mut self, identity: TlsIdentity) -> Config {
        self.tls_identity = Some(identity);
        self
    }

    /// Sets [`Config::tls_roots`].
    pub fn tls_roots(mut self, roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Config {
        self.tls_roots = roots.into_iter().collect();
        self
    }

    /// Sets [`Config::dangerous_accept_any_server_certificate`]: for tests only.
    pub fn dangerous_accept_any_server_certificate(mut self, accept: bool) -> Config {
        self.dangerous_accept_any_server_certificate = accept;
        self
    }

    /// Sets [`Config::limits`].
    pub fn limits(mut self, limits: Limits) -> Config {
        self.limits = limits;
        self
    }

    /// Sets [`Config::max_connections`].
    pub fn max_connections(mut self, max: usize) -> Config {
        self.max_connections = max;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Config {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Config::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Config {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`Config::incoming_capacity`].
    pub fn incoming_capacity(mut self, capacity: usize) -> Config {
        self.incoming_capacity = capacity;
        self
    }

    /// Refuses values the transports cannot run with.
    pub(super) fn validate(&self) -> Result<(), Error> {
        let problem = if self.incoming_capacity == 0 {
            "incoming_capacity must be at least 1".to_owned()
        } else if self.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            format!(
                "max_connections must be at most {}",
                tokio::sync::Semaphore::MAX_PERMITS
            )
        } else if self.idle_timeout.is_zero() {
            "idle_timeout must be longer than zero".to_owned()
        } else if self.connect_timeout.is_zero() {
            "connect_timeout must be longer than zero".to_owned()
        } else {
            return Ok(());
        };
        Err(Error::Config { problem })
    }
}

/// A TLS certificate chain and its private key, in PEM, as read from files.
#[derive(Clone)]
pub struct TlsIdentity {
    pub(super) chain_pem: Vec<u8>,
    pub(super) key_pem: Vec<u8>,
}

impl TlsIdentity {
    /// The chain (the node's certificate first, then any intermediates) and the private key
    /// (PKCS#8, PKCS#1 or SEC1), both PEM. They are checked at [`super::Transports::bind`].
    pub fn from_pem(chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> TlsIdentity {
        TlsIdentity {
            chain_pem: chain.into(),
            key_pem: key.into(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}
