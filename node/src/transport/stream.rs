//! SIP over TCP and TLS (RFC 3261 §18.3): accepting, connecting, and one task per connection
//! that reads frames, answers keepalives (RFC 5626 §4.4.1), writes what is sent on it, and
//! closes it when it is idle, out of step or closed by the peer.
//!
//! The connection task owns its socket; everything else reaches it through the [`Table`] and
//! a bounded queue of writes. It stops reading while a received message waits for room in
//! `Incoming`, but goes on writing: a consumer that sends while `Incoming` is full cannot
//! deadlock against it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use p2psip_sip::{ConnectionId, Frame, Peer, StreamDecoder, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info_span, trace, warn};

use super::{Error, Received, Shared, rejection, tls};

/// Writes that may wait for one connection.
const WRITE_QUEUE: usize = 64;
/// Room made in the receive buffer before each read. Small, because a message delivered
/// keeps the buffer it was read into alive (zero-copy), and most SIP messages are under 2 KiB.
const READ_CHUNK: usize = 4 * 1024;
/// The pause after a failed accept (out of file descriptors, say), so as not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The open connections: by id, and the newest per transport and remote address.
#[derive(Debug, Default)]
pub(super) struct Table {
    by_id: HashMap<ConnectionId, Entry>,
    by_addr: HashMap<(Transport, SocketAddr), ConnectionId>,
    /// Set when the last handle went: no connection may be added.
    closed: bool,
}

#[derive(Debug)]
struct Entry {
    peer: Peer,
    writes: mpsc::Sender<Write>,
    task: Option<AbortHandle>,
}

impl Table {
    /// Closes every connection, and the table for good.
    pub(super) fn close_all(&mut self) {
        self.closed = true;
        self.by_addr.clear();
        for (_, entry) in self.by_id.drain() {
            if let Some(task) = entry.task {
                task.abort();
            }
        }
    }

    /// Adds a connection; `false` once the table is closed.
    fn insert(&mut self, peer: Peer, id: ConnectionId, writes: mpsc::Sender<Write>) -> bool {
        if self.closed {
            return false;
        }
        let entry = Entry {
            peer,
            writes,
            task: None,
        };
        self.by_id.insert(id, entry);
        self.by_addr.insert((peer.transport, peer.addr), id);
        true
    }

    /// Records the task of a connection, so that closing the table ends it.
    fn set_task(&mut self, id: ConnectionId, task: AbortHandle) {
        match self.by_id.get_mut(&id) {
            Some(entry) => entry.task = Some(task),
            // The table closed between insert and now.
            None if self.closed => task.abort(),
            // The connection has already ended.
            None => {}
        }
    }

    /// Forgets a connection that ended; another open one to the same address takes its place
    /// for reuse.
    fn remove(&mut self, id: ConnectionId) {
        let Some(entry) = self.by_id.remove(&id) else {
            return;
        };
        let key = (entry.peer.transport, entry.peer.addr);
        if self.by_addr.get(&key) == Some(&id) {
            self.by_addr.remove(&key);
            let other = self
                .by_id
                .iter()
                .find(|(_, e)| (e.peer.transport, e.peer.addr) == key)
                .map(|(&other, _)| other);
            if let Some(other) = other {
                self.by_addr.insert(key, other);
            }
        }
    }

    /// The connection `id`, if it is open and of `transport`.
    fn writer(
        &self,
        id: ConnectionId,
        transport: Transport,
    ) -> Option<(Peer, mpsc::Sender<Write>)> {
        self.by_id
            .get(&id)
            .filter(|e| e.peer.transport == transport)
            .map(|e| (e.peer, e.writes.clone()))
    }

    /// An open connection to `addr` over `transport`.
    fn writer_to(
        &self,
        transport: Transport,
        addr: SocketAddr,
    ) -> Option<(Peer, mpsc::Sender<Write>)> {
        let id = self.by_addr.get(&(transport, addr))?;
        self.writer(*id, transport)
    }
}

/// Accepts connections on `listener` until the task is aborted; `tls` is the acceptor of a
/// TLS listener.
pub(super) async fn accept(
    transport: Transport,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            warn!(
                peer = %remote,
                limit = shared.max_connections,
                "connection refused: the node has its maximum of connections open"
            );
            continue;
        };
        let local = match tcp.local_addr() {
            Ok(local) => local,
            Err(e) => {
                debug!(peer = %remote, error = %e, "accepted connection already gone");
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(peer = %remote, error = %e, "cannot turn Nagle's algorithm off");
        }
        let stream = match &tls {
            Some(acceptor) => Stream::Accepting(tcp, acceptor.clone()),
            None => Stream::Tcp(tcp),
        };
        open(&shared, transport, stream, remote, local, permit);
    }
}

/// Writes `bytes` on the connection `to.connection`, or on one to `to.addr`, opened if need be.
pub(super) async fn send(shared: &Arc<Shared>, to: Peer, bytes: Bytes) -> Result<(), Error> {
    let found = match to.connection {
        Some(id) => {
            let found = shared.table().writer(id, to.transport);
            Some(found.ok_or(Error::ConnectionClosed { peer: to })?)
        }
        None => shared.table().writer_to(to.transport, to.addr),
    };
    let (mut peer, mut writes) = match found {
        Some(found) => found,
        None => connect(shared, to).await?,
    };
    let (done, outcome) = oneshot::channel();
    if let Err(mpsc::error::SendError(write)) = writes.send(Write { bytes, done }).await {
        // The connection ended before it took the bytes. Unless that one was asked for, a
        // new connection carries them.
        if to.connection.is_some() {
            return Err(Error::ConnectionClosed { peer });
        }
        (peer, writes) = connect(shared, to).await?;
        if writes.send(write).await.is_err() {
            return Err(Error::ConnectionClosed { peer });
        }
    }
    match outcome.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(Error::Io { peer, source }),
        Err(_) => Err(Error::ConnectionClosed { peer }),
    }
}

/// Bytes to write, and who waits for the outcome.
#[derive(Debug)]
struct Write {
    bytes: Bytes,
    done: oneshot::Sender<io::Result<()>>,
}

/// A socket for a connection task.
enum Stream {
    Tcp(TcpStream),
    /// An outgoing TLS connection, handshake done.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An incoming TLS connection, handshake to do.
    Accepting(TcpStream, TlsAcceptor),
}

/// Opens a new connection to `to` (TCP connect, then the TLS handshake for TLS).
async fn connect(shared: &Arc<Shared>, to: Peer) -> Result<(Peer, mpsc::Sender<Write>), Error> {
    let to = Peer::new(to.transport, to.addr);
    let permit =
        shared
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyConnections {
                peer: to,
                limit: shared.max_connections,
            })?;
    let connecting = async {
        let tcp = TcpStream::connect(to.addr).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let stream = match to.transport {
            Transport::Tls => {
                let name = tls::server_name(to.addr.ip());
                Stream::TlsClient(Box::new(shared.connector.connect(name, tcp).await?))
            }
            _ => Stream::Tcp(tcp),
        };
        Ok::<_, io::Error>((stream, local))
    };
    let limit = shared.connect_timeout;
    let (stream, local) = timeout(limit, connecting)
        .await
        .unwrap_or_else(|_| Err(timed_out("no connection", limit)))
        .map_err(|source| Error::Connect { peer: to, source })?;
    open(shared, to.transport, stream, to.addr, local, permit)
        .ok_or(Error::ConnectionClosed { peer: to })
}

/// Registers a connection and starts its task; `None` when the transports are closing.
fn open(
    shared: &Arc<Shared>,
    transport: Transport,
    stream: Stream,
    remote: SocketAddr,
    local: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> Option<(Peer, mpsc::Sender<Write>)> {
    let id = ConnectionId(shared.next_connection.fetch_add(1, Ordering::Relaxed));
    let peer = Peer {
        transport,
        addr: remote,
        connection: Some(id),
    };
    let (writes, queue) = mpsc::channel(WRITE_QUEUE);
    if !shared.table().insert(peer, id, writes.clone()) {
        return None;
    }
    let span = info_span!(
        "sip_connection",
        %transport,
        peer = %remote,
        connection = id.0,
        %local
    );
    let connection = Connection {
        shared: shared.clone(),
        peer,
        local,
    };
    let task = tokio::spawn(connection.run(stream, queue, permit).instrument(span));
    shared.table().set_task(id, task.abort_handle());
    Some((peer, writes))
}

/// One connection's task.
struct Connection {
    shared: Arc<Shared>,
    peer: Peer,
    local: SocketAddr,
}

/// Why a connection ended.
enum End {
    PeerClosed,
    Idle,
    Malformed,
    Shutdown,
    Handshake(io::Error),
    Failed(io::Error),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::PeerClosed => f.write_str("closed by the peer"),
            End::Idle => f.write_str("idle for too long"),
            End::Malformed => f.write_str("malformed message"),
            End::Shutdown => f.write_str("transports closed"),
            End::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            End::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl Connection {
    /// Serves the connection until it ends, then forgets it; the permit goes with it.
    async fn run(
        self,
        stream: Stream,
        mut writes: mpsc::Receiver<Write>,
        _permit: OwnedSemaphorePermit,
    ) {
        debug!("connection open");
        let end = match stream {
            Stream::Tcp(tcp) => self.serve(tcp, &mut writes).await,
            Stream::TlsClient(tls) => self.serve(tls, &mut writes).await,
            Stream::Accepting(tcp, acceptor) => {
                let limit = self.shared.connect_timeout;
                match timeout(limit, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => self.serve(tls, &mut writes).await,
                    Ok(Err(e)) => End::Handshake(e),
                    Err(_) => End::Handshake(timed_out("no TLS handshake", limit)),
                }
            }
        };
        if let Some(id) = self.peer.connection {
            self.shared.table().remove(id);
        }
        debug!(reason = %end, "connection closed");
    }

    /// Reads, delivers and writes until the connection ends.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        writes: &mut mpsc::Receiver<Write>,
    ) -> End {
        let idle_timeout = self.shared.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let mut decoder = StreamDecoder::new(self.shared.limits.clone());
        // A message read and not yet taken by `Incoming`: no reading until it is.
        let mut pending: Option<Received> = None;
        loop {
            while pending.is_none() {
                match decoder.decode() {
                    Ok(None) => break,
                    Ok(Some(Frame::Message(message))) => {
                        pending = Some(Received {
                            message,
                            source: self.peer,
                            local: self.local,
                        });
                    }
                    Ok(Some(Frame::Ping)) => {
                        trace!("keepalive ping");
                        if let Err(e) = write_all(&mut stream, Frame::PONG, idle_timeout).await {
                            return End::Failed(e);
                        }
                    }
                    Ok(Some(Frame::Pong)) => trace!("keepalive pong"),
                    Err(e) => {
                        warn!(
                            peer = %self.peer,
                            error = %e,
                            "malformed SIP message; closing the connection"
                        );
                        // §18.3: the stream is out of step. Answer a request, then close.
                        if let Some(response) = rejection(decoder.buffer_mut(), &e)
                            && let Err(e) = write_all(&mut stream, &response, idle_timeout).await
                        {
                            debug!(error = %e, "could not answer the malformed message");
                        }
                        let _ = timeout(idle_timeout, stream.shutdown()).await;
                        return End::Malformed;
                    }
                }
            }
            if pending.is_none() {
                decoder.buffer_mut().reserve(READ_CHUNK);
            }
            tokio::select! {
                room = self.shared.incoming.reserve(), if pending.is_some() => {
                    match (room, pending.take()) {
                        (Ok(room), Some(received)) => room.send(received),
                        _ => trace!("incoming messages are no longer read; message dropped"),
                    }
                    // The wait was the node's, not the peer's.
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                }
                read = stream.read_buf(decoder.buffer_mut()), if pending.is_none() => {
                    match read {
                        Ok(0) => return End::PeerClosed,
                        Ok(_) => idle.as_mut().reset(Instant::now() + idle_timeout),
                        Err(e) => return End::Failed(e),
                    }
                }
                write = writes.recv() => {
                    let Some(Write { bytes, done }) = write else {
                        return End::Shutdown;
                    };
                    let result = write_all(&mut stream, &bytes, idle_timeout).await;
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    match result {
                        Ok(()) => {
                            let _ = done.send(Ok(()));
                        }
                        Err(e) => {
                            let end = io::Error::new(e.kind(), e.to_string());
                            let _ = done.send(Err(e));
                            return End::Failed(end);
                        }
                    }
                }
                () = &mut idle, if pending.is_none() => return End::Idle,
            }
        }
    }
}

/// Writes and flushes `bytes`, within `limit`.
async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let writing = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    timeout(limit, writing)
        .await
        .unwrap_or_else(|_| Err(timed_out("the peer took no data", limit)))
}

fn timed_out(what: &str, limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} within {} ms", limit.as_millis()),
    )
}
