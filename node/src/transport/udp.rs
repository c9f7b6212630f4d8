//! SIP over UDP: one datagram, one message (RFC 3261 §18.1.1, §18.2.1).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use p2psip_sip::{Message, Peer, Transport};
use tokio::net::UdpSocket;
use tracing::{debug, error, trace, warn};

use super::{Error, Received, Shared, rejection};

/// Room for the largest UDP payload.
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// Reads datagrams from `socket` until the task is aborted (or the socket fails for good).
pub(super) async fn receive(socket: Arc<UdpSocket>, local: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; DATAGRAM_BUFFER];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // An ICMP error for an earlier send (reported by some systems) says nothing
            // about this socket.
            Err(e) if is_transient(&e) => {
                debug!(error = %e, "UDP receive error ignored");
                continue;
            }
            Err(e) => {
                error!(error = %e, "UDP socket failed; no more datagrams are read from it");
                return;
            }
        };
        let datagram = &buf[..len];
        let source = Peer::new(Transport::Udp, from);
        // Keepalives: CRLFs alone carry nothing (RFC 3261 §7.5, RFC 5626 §3.5.1).
        if datagram.iter().all(|&b| b == b'\r' || b == b'\n') {
            trace!(peer = %source, "UDP keepalive");
            continue;
        }
        match Message::parse_with(Bytes::copy_from_slice(datagram), &shared.limits) {
            Ok(message) => {
                shared
                    .deliver(Received {
                        message,
                        source,
                        local,
                    })
                    .await;
            }
            Err(e) => {
                warn!(peer = %source, error = %e, "malformed SIP datagram");
                // §18.2.1: a request with problems gets 400; a response is dropped.
                if let Some(response) = rejection(datagram, &e)
                    && let Err(e) = socket.send_to(&response, from).await
                {
                    debug!(peer = %source, error = %e, "could not answer the malformed datagram");
                }
            }
        }
    }
}

/// Sends one datagram to `to` from the first socket of its address family.
pub(super) async fn send(
    sockets: &[(Arc<UdpSocket>, SocketAddr)],
    to: Peer,
    bytes: &[u8],
) -> Result<(), Error> {
    let socket = sockets
        .iter()
        .find(|(_, local)| local.is_ipv4() == to.addr.is_ipv4())
        .or_else(|| sockets.first())
        .map(|(socket, _)| socket)
        .ok_or(Error::Unavailable {
            transport: Transport::Udp,
        })?;
    socket
        .send_to(bytes, to.addr)
        .await
        .map(drop)
        .map_err(|source| Error::Io { peer: to, source })
}

/// Errors after which the socket still works.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
