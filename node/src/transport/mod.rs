//! The SIP transports (RFC 3261 §18): UDP, TCP and TLS sockets that turn datagrams and byte
//! streams into parsed [`Message`]s, and bytes into datagrams and stream writes.
//!
//! [`Transports::bind`] binds every socket of a [`Config`] and returns a cloneable send handle,
//! [`Transports`], and the receiver of everything that arrives, [`Incoming`]. Each message
//! comes as a [`Received`] that names its exact source [`Peer`]: the transport does not touch
//! messages, so the transaction layer stamps `received`/`rport` (RFC 3261 §18.2.1, RFC 3581)
//! from it, and answers over `source.connection` on TCP and TLS (§18.2.2).
//!
//! What the transports do on their own:
//! - frame streams with [`p2psip_sip::StreamDecoder`] and answer CRLF CRLF keepalive pings
//!   with a CRLF pong (RFC 5626 §4.4.1);
//! - answer a request that does not parse with 400 (513 when too large), and on a stream then
//!   close the connection, which is out of step (§18.3); responses that do not parse are
//!   dropped (§18.1.2);
//! - cap the number of connections ([`Config::max_connections`]) and close those idle for
//!   [`Config::idle_timeout`].
//!
//! Every queue is bounded: [`Incoming`] holds [`Config::incoming_capacity`] messages, and a
//! connection stops reading while its message waits for room there. Dropping the last
//! [`Transports`] clone closes every socket and connection, and [`Incoming::recv`] then ends.

mod config;
mod error;
mod stream;
mod tls;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use p2psip_sip::{Limits, Message, Policy, Rejection};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tracing::{Instrument, info_span, trace};

pub use config::{Config, TlsIdentity};
pub use error::Error;
pub use p2psip_sip::{ConnectionId, Peer, Transport};
pub use rustls::pki_types::CertificateDer;
pub use tls::certificates_from_pem;

/// A message that arrived, and where from.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message, as received: the transport changes nothing in it.
    pub message: Message,
    /// Where it came from: the exact source address and port of the datagram or connection,
    /// and for TCP and TLS the connection it came on (answer over it, RFC 3261 §18.2.2).
    pub source: Peer,
    /// The local address it arrived at: the connection's local address for TCP and TLS, the
    /// socket's for UDP (so an unspecified address for a socket bound to one).
    pub local: SocketAddr,
}

/// The messages that arrive on every transport, in the order each socket read them.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Received>,
}

impl Incoming {
    /// The next message; `None` once the last [`Transports`] handle is dropped.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }
}

/// The send handle of the transports. Clones share the sockets and connections; dropping the
/// last clone closes them all.
#[derive(Debug, Clone)]
pub struct Transports {
    handle: Arc<Handle>,
}

impl Transports {
    /// Binds every listen address of `config` (port 0 picks a free port; see
    /// [`Transports::local_addrs`]), starts reading from them, and returns the send handle and
    /// the receiver of incoming messages. Nothing keeps running if an address cannot be bound.
    pub async fn bind(config: Config) -> Result<(Transports, Incoming), Error> {
        config.validate()?;
        let server_tls = if config.tls.is_empty() {
            None
        } else {
            Some(tls::server(&config)?)
        };
        let connector = tls::client(&config)?;

        let mut udp = Vec::new();
        for &addr in &config.udp {
            let socket = UdpSocket::bind(addr).await.map_err(|source| Error::Bind {
                transport: Transport::Udp,
                addr,
                source,
            })?;
            let local = socket.local_addr().map_err(|source| Error::Bind {
                transport: Transport::Udp,
                addr,
                source,
            })?;
            udp.push((Arc::new(socket), local));
        }
        let mut listeners = Vec::new();
        for (transport, addrs) in [(Transport::Tcp, &config.tcp), (Transport::Tls, &config.tls)] {
            for &addr in addrs {
                let bind_error = |source| Error::Bind {
                    transport,
                    addr,
                    source,
                };
                let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
                let local = listener.local_addr().map_err(bind_error)?;
                listeners.push((transport, listener, local));
            }
        }

        let (tx, rx) = mpsc::channel(config.incoming_capacity);
        let (acceptor, certificate) = match server_tls {
            Some((acceptor, certificate)) => (Some(acceptor), Some(certificate)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            incoming: tx,
            limits: config.limits.clone(),
            idle_timeout: config.idle_timeout,
            connect_timeout: config.connect_timeout,
            max_connections: config.max_connections,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            connections: std::sync::Mutex::new(stream::Table::default()),
            next_connection: AtomicU64::new(1),
            connector,
        });

        let mut local = Vec::new();
        let mut tasks = Vec::new();
        for (socket, addr) in &udp {
            local.push(Peer::new(Transport::Udp, *addr));
            let span = info_span!("sip_listener", transport = "UDP", local = %addr);
            let task = udp::receive(socket.clone(), *addr, shared.clone()).instrument(span);
            tasks.push(tokio::spawn(task).abort_handle());
        }
        for (transport, listener, addr) in listeners {
            local.push(Peer::new(transport, addr));
            let tls = match transport {
                Transport::Tls => acceptor.clone(),
                _ => None,
            };
            let span = info_span!("sip_listener", %transport, local = %addr);
            let task = stream::accept(transport, listener, tls, shared.clone()).instrument(span);
            tasks.push(tokio::spawn(task).abort_handle());
        }
        let handle = Handle {
            shared,
            udp,
            local,
            certificate,
            tasks,
        };
        Ok((
            Transports {
                handle: Arc::new(handle),
            },
            Incoming { rx },
        ))
    }

    /// The bound addresses, one [`Peer`] (without connection) per listen socket: UDP first,
    /// then TCP, then TLS, each in the order of the [`Config`].
    pub fn local_addrs(&self) -> &[Peer] {
        &self.handle.local
    }

    /// The first bound address of `transport`, if it has one.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.handle
            .local
            .iter()
            .find(|p| p.transport == transport)
            .map(|p| p.addr)
    }

    /// The certificate the TLS listeners present (the leaf of the chain), if TLS listens.
    /// With no [`Config::tls_identity`] it is the self-signed one made at bind time: a peer
    /// that should trust this node takes it into its [`Config::tls_roots`].
    pub fn tls_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.handle.certificate.as_ref()
    }

    /// Sends `bytes` to `to`, and returns once they are handed to the operating system.
    ///
    /// UDP sends one datagram from the first UDP socket of the destination's address family.
    /// TCP and TLS write on `to.connection` when it is given (an error if that connection is
    /// gone); otherwise on an open connection to `to.addr` over that transport, or on a new
    /// one, which is then read like any other: what comes back on it arrives at [`Incoming`]
    /// with its [`ConnectionId`]. A TLS connection checks the server's certificate against
    /// [`Config::tls_roots`] for the IP address of `to.addr`.
    ///
    /// Choosing the transport (RFC 3261 §18.1.1: TCP for a request over
    /// [`p2psip_sip::UDP_REQUEST_LIMIT`]) is the caller's business.
    pub async fn send(&self, to: Peer, bytes: Bytes) -> Result<(), Error> {
        match to.transport {
            Transport::Udp => udp::send(&self.handle.udp, to, &bytes).await,
            Transport::Tcp | Transport::Tls => stream::send(&self.handle.shared, to, bytes).await,
        }
    }
}

/// What the handles share; closes everything when the last one goes.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    udp: Vec<(Arc<UdpSocket>, SocketAddr)>,
    local: Vec<Peer>,
    certificate: Option<CertificateDer<'static>>,
    /// The listener tasks.
    tasks: Vec<AbortHandle>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.table().close_all();
    }
}

/// What the socket and connection tasks share.
struct Shared {
    incoming: mpsc::Sender<Received>,
    limits: Limits,
    idle_timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
    max_connections: usize,
    /// One permit per open connection, incoming or outgoing.
    permits: Arc<Semaphore>,
    connections: std::sync::Mutex<stream::Table>,
    next_connection: AtomicU64,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("free_connections", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The connection table. A panic while it was held cannot leave it inconsistent (every
    /// change is one map operation), so a poisoned lock is taken as it is.
    fn table(&self) -> std::sync::MutexGuard<'_, stream::Table> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a message to [`Incoming`], waiting for room.
    async fn deliver(&self, received: Received) {
        if self.incoming.send(received).await.is_err() {
            trace!("incoming messages are no longer read; message dropped");
        }
    }
}

/// The To tag of the 400 that answers a request that did not parse.
const REJECTION_TO_TAG: &str = "p2psip-bad";

/// The answer to `raw`, a message that failed to parse with `error`: `None` unless it is a
/// request with a Via to answer to (responses are never answered).
fn rejection(raw: &[u8], error: &p2psip_sip::Error) -> Option<Bytes> {
    Rejection::from_error(error)
        .response_to_raw(raw, Some(REJECTION_TO_TAG), &Policy::default())
        .map(|response| response.to_bytes())
}
