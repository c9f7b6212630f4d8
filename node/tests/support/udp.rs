//! Raw SIP over UDP on 127.0.0.1, for tests that play a phone by hand.

use std::net::SocketAddr;
use std::time::Instant;

use p2psip_sip::Message;
use tokio::net::UdpSocket;

/// The next SIP message `socket` receives before `deadline`, and where it came from;
/// datagrams that do not parse are skipped.
pub async fn next_message(socket: &UdpSocket, deadline: Instant) -> Option<(Message, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (n, from) = tokio::time::timeout(left, socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        if let Ok(message) = Message::parse(buf[..n].to_vec()) {
            return Some((message, from));
        }
    }
}
