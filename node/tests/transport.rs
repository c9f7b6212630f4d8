//! The SIP transports over loopback sockets (RFC 3261 §18, RFC 5626 §4.4.1): every test binds
//! port 0 on 127.0.0.1 and waits for events with a timeout, never for a fixed time.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use p2psip_node::transport::{
    Config, ConnectionId, Error, Incoming, Peer, Received, TlsIdentity, Transport, Transports,
    certificates_from_pem,
};
use p2psip_sip::{Frame, HeaderName, Message, StatusCode, StreamDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::{Instant, timeout};

/// The longest any awaited event may take before the test fails.
const WAIT: Duration = Duration::from_secs(5);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// UDP and TCP on free loopback ports, no TLS.
fn config() -> Config {
    Config::default().udp([any_port()]).tcp([any_port()])
}

/// A node with no listeners, that only connects out.
fn client_config() -> Config {
    Config::default().udp([]).tcp([])
}

fn options(call_id: &str, transport: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:5099;branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn ok(call_id: &str, transport: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:5099;branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>;tag=b1\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn call_id(message: &Message) -> &[u8] {
    message.headers().get(HeaderName::CallId).unwrap_or(b"")
}

fn status(message: &Message) -> Option<StatusCode> {
    message.as_response().map(|r| r.status())
}

async fn recv(incoming: &mut Incoming) -> Received {
    timeout(WAIT, incoming.recv())
        .await
        .expect("a message arrives in time")
        .expect("the transports are open")
}

/// The next frame a test client reads from a stream.
async fn read_frame(stream: &mut (impl AsyncRead + Unpin), decoder: &mut StreamDecoder) -> Frame {
    loop {
        if let Some(frame) = decoder.decode().expect("the node sends well-formed frames") {
            return frame;
        }
        let read = timeout(WAIT, stream.read_buf(decoder.buffer_mut()))
            .await
            .expect("a frame arrives in time")
            .expect("the stream reads");
        assert!(read > 0, "the node closed the stream before a whole frame");
    }
}

/// Reads the pong that answers a ping: exactly one CRLF.
async fn pong(stream: &mut TcpStream) {
    let mut pong = [0u8; 2];
    timeout(WAIT, stream.read_exact(&mut pong))
        .await
        .expect("the pong arrives in time")
        .expect("the stream reads");
    assert_eq!(pong, Frame::PONG);
}

/// Waits until the node closes `stream` (end of stream or reset), dropping what it reads.
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let waiting = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(WAIT, waiting)
        .await
        .expect("the node closes the connection in time");
}

#[tokio::test]
async fn rfc3261_18_2_1_udp_request_reports_exact_source_and_answer_goes_back() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let node_udp = node.local_addr(Transport::Udp).unwrap();
    assert_ne!(node_udp.port(), 0);
    let client = UdpSocket::bind(any_port()).await.unwrap();
    client
        .send_to(&options("udp1", "UDP"), node_udp)
        .await
        .unwrap();

    let received = recv(&mut incoming).await;
    assert_eq!(
        received.source,
        Peer::new(Transport::Udp, client.local_addr().unwrap())
    );
    assert_eq!(received.local, node_udp);
    assert_eq!(call_id(&received.message), b"udp1");

    node.send(received.source, Bytes::from(ok("udp1", "UDP")))
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let (len, from) = timeout(WAIT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, node_udp);
    let answer = Message::parse(buf[..len].to_vec()).unwrap();
    assert_eq!(status(&answer), Some(StatusCode::OK));
}

#[tokio::test]
async fn rfc3261_18_2_1_malformed_udp_request_gets_400_and_response_is_dropped() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let node_udp = node.local_addr(Transport::Udp).unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();

    let mut bad = options("udp-bad", "UDP");
    bad.splice(7..8, *b"  "); // "OPTIONS  sip:": the request line is malformed
    client.send_to(&bad, node_udp).await.unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = timeout(WAIT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = Message::parse(buf[..len].to_vec()).unwrap();
    assert_eq!(status(&answer), Some(StatusCode::BAD_REQUEST));
    assert_eq!(call_id(&answer), b"udp-bad");

    // A malformed response is dropped silently; keepalives are ignored; the next good
    // message is the first to arrive.
    let mut bad_response = ok("udp-bad-response", "UDP");
    bad_response.splice(0..3, *b"SIX");
    client.send_to(&bad_response, node_udp).await.unwrap();
    client.send_to(b"\r\n\r\n", node_udp).await.unwrap();
    client
        .send_to(&options("udp-good", "UDP"), node_udp)
        .await
        .unwrap();
    assert_eq!(call_id(&recv(&mut incoming).await.message), b"udp-good");
}

#[tokio::test]
async fn rfc3261_18_3_message_split_over_writes_arrives_once() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let mut client = TcpStream::connect(node.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    client.set_nodelay(true).unwrap();
    let message = options("split", "TCP");
    for part in message.chunks(17) {
        client.write_all(part).await.unwrap();
        client.flush().await.unwrap();
    }
    client.write_all(&options("after", "TCP")).await.unwrap();

    let first = recv(&mut incoming).await;
    assert_eq!(call_id(&first.message), b"split");
    assert_eq!(first.source.transport, Transport::Tcp);
    assert_eq!(first.source.addr, client.local_addr().unwrap());
    assert!(first.source.connection.is_some());
    assert_eq!(first.local, client.peer_addr().unwrap());
    let second = recv(&mut incoming).await;
    assert_eq!(call_id(&second.message), b"after", "the first arrived once");
    assert_eq!(second.source, first.source);
}

#[tokio::test]
async fn rfc3261_18_3_two_messages_in_one_write_arrive_as_two() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let mut client = TcpStream::connect(node.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    let both = [options("one", "TCP"), options("two", "TCP")].concat();
    client.write_all(&both).await.unwrap();

    let one = recv(&mut incoming).await;
    let two = recv(&mut incoming).await;
    assert_eq!(call_id(&one.message), b"one");
    assert_eq!(call_id(&two.message), b"two");
    assert_eq!(one.source, two.source);
}

#[tokio::test]
async fn rfc5626_4_4_1_ping_gets_pong() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let mut client = TcpStream::connect(node.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    client.write_all(Frame::PING).await.unwrap();
    pong(&mut client).await;

    // The stream is still in step: a message after the ping arrives and is answered.
    client
        .write_all(&options("after-ping", "TCP"))
        .await
        .unwrap();
    let received = recv(&mut incoming).await;
    assert_eq!(call_id(&received.message), b"after-ping");
    node.send(received.source, Bytes::from(ok("after-ping", "TCP")))
        .await
        .unwrap();
    let Frame::Message(answer) = read_frame(&mut client, &mut StreamDecoder::default()).await
    else {
        panic!("expected the 200");
    };
    assert_eq!(status(&answer), Some(StatusCode::OK));
}

#[tokio::test]
async fn rfc3261_18_3_malformed_request_gets_400_and_only_its_connection_closes() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let tcp = node.local_addr(Transport::Tcp).unwrap();
    let mut good = TcpStream::connect(tcp).await.unwrap();
    let mut bad = TcpStream::connect(tcp).await.unwrap();
    good.write_all(&options("good-1", "TCP")).await.unwrap();
    let first = recv(&mut incoming).await;
    assert_eq!(call_id(&first.message), b"good-1");

    let mut malformed = options("bad", "TCP");
    malformed.splice(7..8, *b"  ");
    bad.write_all(&malformed).await.unwrap();
    let mut decoder = StreamDecoder::default();
    let Frame::Message(answer) = read_frame(&mut bad, &mut decoder).await else {
        panic!("expected a 400");
    };
    assert_eq!(status(&answer), Some(StatusCode::BAD_REQUEST));
    assert_eq!(call_id(&answer), b"bad");
    closed(&mut bad).await;

    good.write_all(&options("good-2", "TCP")).await.unwrap();
    let second = recv(&mut incoming).await;
    assert_eq!(call_id(&second.message), b"good-2");
    assert_eq!(second.source, first.source);
    node.send(second.source, Bytes::from(ok("good-2", "TCP")))
        .await
        .unwrap();
    let Frame::Message(answer) = read_frame(&mut good, &mut StreamDecoder::default()).await else {
        panic!("expected the 200");
    };
    assert_eq!(status(&answer), Some(StatusCode::OK));
}

#[tokio::test]
async fn rfc3261_18_1_1_send_opens_a_connection_and_its_reply_arrives_on_it() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let far = TcpListener::bind(any_port()).await.unwrap();
    let far_addr = far.local_addr().unwrap();

    node.send(
        Peer::new(Transport::Tcp, far_addr),
        Bytes::from(options("out", "TCP")),
    )
    .await
    .unwrap();
    let (mut accepted, _) = timeout(WAIT, far.accept()).await.unwrap().unwrap();
    let mut decoder = StreamDecoder::default();
    let Frame::Message(request) = read_frame(&mut accepted, &mut decoder).await else {
        panic!("expected the OPTIONS");
    };
    assert_eq!(call_id(&request), b"out");

    accepted.write_all(&ok("out", "TCP")).await.unwrap();
    let reply = recv(&mut incoming).await;
    assert_eq!(status(&reply.message), Some(StatusCode::OK));
    assert_eq!(reply.source.transport, Transport::Tcp);
    assert_eq!(reply.source.addr, far_addr);
    assert!(reply.source.connection.is_some());
    assert_eq!(reply.local, accepted.peer_addr().unwrap());

    // Sending again, without a connection or with this one, reuses it.
    node.send(
        Peer::new(Transport::Tcp, far_addr),
        Bytes::from(options("again", "TCP")),
    )
    .await
    .unwrap();
    node.send(reply.source, Bytes::from(options("on-it", "TCP")))
        .await
        .unwrap();
    for expected in [&b"again"[..], b"on-it"] {
        let Frame::Message(request) = read_frame(&mut accepted, &mut decoder).await else {
            panic!("expected an OPTIONS");
        };
        assert_eq!(call_id(&request), expected);
    }
}

#[tokio::test]
async fn rfc3261_18_2_2_send_on_a_closed_connection_fails() {
    let (node, _incoming) = Transports::bind(config()).await.unwrap();
    let gone = Peer {
        connection: Some(ConnectionId(999_999)),
        ..Peer::new(Transport::Tcp, any_port())
    };
    let error = node.send(gone, Bytes::from_static(b"x")).await.unwrap_err();
    assert!(
        matches!(error, Error::ConnectionClosed { peer } if peer == gone),
        "{error:?}"
    );
}

#[tokio::test]
async fn rfc3261_26_2_tls_round_trip_with_self_signed_certificate() {
    let (server, mut server_in) = Transports::bind(client_config().tls([any_port()]))
        .await
        .unwrap();
    let certificate = server.tls_certificate().unwrap().clone();
    let server_tls = server.local_addr(Transport::Tls).unwrap();
    let (client, mut client_in) = Transports::bind(client_config().tls_roots([certificate]))
        .await
        .unwrap();

    client
        .send(
            Peer::new(Transport::Tls, server_tls),
            Bytes::from(options("tls", "TLS")),
        )
        .await
        .unwrap();
    let request = recv(&mut server_in).await;
    assert_eq!(call_id(&request.message), b"tls");
    assert_eq!(request.source.transport, Transport::Tls);
    assert!(request.source.connection.is_some());

    server
        .send(request.source, Bytes::from(ok("tls", "TLS")))
        .await
        .unwrap();
    let reply = recv(&mut client_in).await;
    assert_eq!(status(&reply.message), Some(StatusCode::OK));
    assert_eq!(reply.source.transport, Transport::Tls);
    assert_eq!(reply.source.addr, server_tls);
    assert!(reply.source.connection.is_some());
}

#[tokio::test]
async fn rfc3261_26_2_tls_identity_from_pem() {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let identity = TlsIdentity::from_pem(made.cert.pem(), made.signing_key.serialize_pem());
    let (server, mut server_in) =
        Transports::bind(client_config().tls([any_port()]).tls_identity(identity))
            .await
            .unwrap();
    assert_eq!(server.tls_certificate(), Some(made.cert.der()));
    let roots = certificates_from_pem(made.cert.pem().as_bytes()).unwrap();
    let (client, _client_in) = Transports::bind(client_config().tls_roots(roots))
        .await
        .unwrap();
    let to = Peer::new(Transport::Tls, server.local_addr(Transport::Tls).unwrap());
    client
        .send(to, Bytes::from(options("pem", "TLS")))
        .await
        .unwrap();
    assert_eq!(call_id(&recv(&mut server_in).await.message), b"pem");
}

#[tokio::test]
async fn rfc3261_26_2_tls_client_refuses_an_untrusted_certificate() {
    let (server, mut server_in) = Transports::bind(client_config().tls([any_port()]))
        .await
        .unwrap();
    let to = Peer::new(Transport::Tls, server.local_addr(Transport::Tls).unwrap());

    let (strict, _strict_in) = Transports::bind(client_config()).await.unwrap();
    let error = strict
        .send(to, Bytes::from(options("untrusted", "TLS")))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");

    // Only the explicit test-only switch turns the check off.
    let (trusting, _trusting_in) =
        Transports::bind(client_config().dangerous_accept_any_server_certificate(true))
            .await
            .unwrap();
    trusting
        .send(to, Bytes::from(options("accepted", "TLS")))
        .await
        .unwrap();
    assert_eq!(call_id(&recv(&mut server_in).await.message), b"accepted");
}

#[tokio::test]
async fn max_connections_closes_extra_connections() {
    let (node, _incoming) = Transports::bind(config().max_connections(1)).await.unwrap();
    let tcp = node.local_addr(Transport::Tcp).unwrap();
    let mut first = TcpStream::connect(tcp).await.unwrap();
    first.write_all(Frame::PING).await.unwrap();
    pong(&mut first).await;

    let mut second = TcpStream::connect(tcp).await.unwrap();
    closed(&mut second).await;

    let far = TcpListener::bind(any_port()).await.unwrap();
    let error = node
        .send(
            Peer::new(Transport::Tcp, far.local_addr().unwrap()),
            Bytes::from(options("over", "TCP")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::TooManyConnections { limit: 1, .. }),
        "{error:?}"
    );

    // The first connection still works.
    first.write_all(Frame::PING).await.unwrap();
    pong(&mut first).await;
}

#[tokio::test]
async fn idle_timeout_closes_a_connection() {
    let idle = Duration::from_millis(200);
    let (node, _incoming) = Transports::bind(config().idle_timeout(idle)).await.unwrap();
    let started = Instant::now();
    let mut client = TcpStream::connect(node.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    closed(&mut client).await;
    assert!(
        started.elapsed() >= idle,
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_full_incoming_queue_does_not_block_sends() {
    let (node, mut incoming) = Transports::bind(config().incoming_capacity(1))
        .await
        .unwrap();
    let mut client = TcpStream::connect(node.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    let many = [
        options("q1", "TCP"),
        options("q2", "TCP"),
        options("q3", "TCP"),
    ]
    .concat();
    client.write_all(&many).await.unwrap();
    let first = recv(&mut incoming).await;
    // q2 fills the queue and q3 waits in the connection: the answer still goes out.
    timeout(WAIT, node.send(first.source, Bytes::from(ok("q1", "TCP"))))
        .await
        .expect("the send is not stuck behind the full queue")
        .unwrap();
    let Frame::Message(answer) = read_frame(&mut client, &mut StreamDecoder::default()).await
    else {
        panic!("expected the 200");
    };
    assert_eq!(call_id(&answer), b"q1");
    for expected in [&b"q2"[..], b"q3"] {
        assert_eq!(call_id(&recv(&mut incoming).await.message), expected);
    }
}

#[tokio::test]
async fn bind_reports_an_address_in_use() {
    let (node, _incoming) = Transports::bind(config()).await.unwrap();
    let taken = node.local_addr(Transport::Udp).unwrap();
    let error = Transports::bind(client_config().udp([taken]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Bind { transport: Transport::Udp, addr, .. } if addr == taken),
        "{error:?}"
    );
    assert!(error.to_string().contains("cannot listen for SIP over UDP"));
}

#[tokio::test]
async fn config_with_zero_capacity_is_refused() {
    let error = Transports::bind(config().incoming_capacity(0))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
}

#[tokio::test]
async fn dropping_the_transports_ends_incoming() {
    let (node, mut incoming) = Transports::bind(config()).await.unwrap();
    let tcp = node.local_addr(Transport::Tcp).unwrap();
    let mut client = TcpStream::connect(tcp).await.unwrap();
    client.write_all(&options("last", "TCP")).await.unwrap();
    assert_eq!(call_id(&recv(&mut incoming).await.message), b"last");
    drop(node);
    let end = timeout(WAIT, incoming.recv()).await.expect("incoming ends");
    assert!(end.is_none());
    closed(&mut client).await;
}
