//! The media path of the P2PSIP node under abuse, over real sockets on a 2-node overlay. Bob's
//! softphone (raw UDP sockets: one for SIP, one for RTP) registers at node B (node 1); Alice's
//! calls him through node A (node 0):
//!
//! - an offer whose SDP does not parse is answered 488 by B with the parser's reason; Bob
//!   never sees it and neither node keeps a media session;
//! - in a call each softphone's SDP names its own node's port; RTP crosses both nodes either
//!   way, and a packet to A's port from anyone but Alice's latched socket is dropped;
//! - after BYE the ports are closed: what is sent to them reaches nobody, and they are free;
//! - beyond `media::Config::max_sessions` B answers 480 with the reason (not 503: node A's
//!   proxy would turn that into a bare 500, RFC 3261 §16.7), and the call it already carries
//!   keeps its media.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2psip_node::p2p::{self, Node};
use p2psip_sip::header::CallId;
use p2psip_sip::{HeaderName, Message, Method, Request, Response, StatusCode, Transport};
use tokio::net::UdpSocket;

#[path = "support/udp.rs"]
pub mod udp;

#[path = "support/overlay.rs"]
pub mod overlay;

/// How long a test waits for anything that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to be sure that something does not happen.
const QUIET: Duration = Duration::from_millis(300);
/// Bob's address of record.
const BOB: &str = "sip:bob@example.p2p";

/// A softphone: a SIP socket and an RTP socket on 127.0.0.1.
struct Phone {
    sip: UdpSocket,
    rtp: UdpSocket,
}

/// A call as Alice's softphone sees it after the ACK.
struct Call {
    call_id: String,
    /// Bob's Contact: the Request-URI of in-dialog requests.
    target: String,
    /// The route set: the 200's Record-Route, reversed.
    route: Vec<String>,
    to_tag: String,
    /// Where the SDP Alice got tells her to send RTP (node A's port).
    alice_sends_to: SocketAddr,
    /// Where the SDP Bob got tells him to send RTP (node B's port).
    bob_sends_to: SocketAddr,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_does_not_parse_is_488_with_the_reason_and_sets_up_nothing() {
    overlay::logs();
    let net = overlay::Nodes::start(2).await;
    let (alice, bob) = (Phone::new().await, Phone::new().await);
    bob.register(net.sip(1, Transport::Udp)).await;

    let bad = "v=0\r\no=broken\r\n";
    let invite = alice.invite("bad-sdp-1", bad);
    alice.send(net.sip(0, Transport::Udp), &invite).await;
    let answer = alice.final_response("bad-sdp-1").await;

    // What Alice sees: 488, and the reason is the SDP parser's own words.
    let parser = sdp_types::Session::parse(bad.as_bytes())
        .unwrap_err()
        .to_string();
    assert_eq!(answer.status(), StatusCode::NOT_ACCEPTABLE_HERE, "{answer}");
    assert_eq!(
        answer.reason(),
        format!("Not Acceptable Here (bad SDP: {parser})")
    );
    alice
        .ack_failure(net.sip(0, Transport::Udp), "bad-sdp-1", &answer)
        .await;

    // Bob's phone never rang; no media session is left at either node, and none was set up
    // at B, the node that refused.
    assert!(
        bob.requests_within(QUIET).await.is_empty(),
        "Bob's phone got a request"
    );
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(media(node).sessions, 0, "node {i}");
    }
    let b = media(&net.nodes[1]);
    assert_eq!((b.sessions_started, b.refused), (0, 1), "node B: {b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_anchors_rtp_at_both_nodes_and_drops_a_stranger_s_packets() {
    overlay::logs();
    let net = overlay::Nodes::start(2).await;
    let (alice, bob) = (Phone::new().await, Phone::new().await);
    bob.register(net.sip(1, Transport::Udp)).await;
    let call = establish(&net, &alice, &bob, "good-1").await;

    // Each SDP names its softphone's node and a port the node holds, never the other phone.
    assert_eq!(call.bob_sends_to.ip(), net.sip(1, Transport::Udp).ip());
    assert_eq!(call.alice_sends_to.ip(), net.sip(0, Transport::Udp).ip());
    for port in [call.bob_sends_to, call.alice_sends_to] {
        assert_ne!(port, alice.rtp_addr());
        assert_ne!(port, bob.rtp_addr());
        assert_eq!(port.port() % 2, 0, "{port}: RTP is the even port of a pair");
        assert!(UdpSocket::bind(port).await.is_err(), "{port} is not bound");
    }
    assert_ne!(call.bob_sends_to, call.alice_sends_to);

    // Alice -> A -> B -> Bob, and back, each time from the port the phone's SDP named.
    send_media(&alice, call.alice_sends_to, b"rtp from alice").await;
    let from = receive_media(&bob, b"rtp from alice").await;
    assert_eq!(from, call.bob_sends_to, "Bob gets RTP from B's port");
    send_media(&bob, call.bob_sends_to, b"rtp from bob").await;
    let from = receive_media(&alice, b"rtp from bob").await;
    assert_eq!(from, call.alice_sends_to, "Alice gets RTP from A's port");

    // A stranger on Alice's own IP sends to A's port after Alice latched it: dropped there.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let foreign_before = media(&net.nodes[0]).dropped_foreign;
    stranger
        .send_to(b"injected by a stranger", call.alice_sends_to)
        .await
        .unwrap();
    assert_eq!(
        arrival_within(&bob.rtp, QUIET).await,
        None,
        "the stranger's packet reached Bob"
    );
    wait_until("A counts the stranger's packet as foreign", || {
        media(&net.nodes[0]).dropped_foreign > foreign_before
    })
    .await;
    assert_eq!(media(&net.nodes[0]).dropped_foreign, foreign_before + 1);
    // And Alice's own media still goes through.
    send_media(&alice, call.alice_sends_to, b"alice again").await;
    receive_media(&bob, b"alice again").await;

    for (i, node) in net.nodes.iter().enumerate() {
        let m = media(node);
        assert_eq!((m.sessions, m.sessions_started), (1, 1), "node {i}: {m:?}");
    }
    hang_up(&net, &alice, &bob, &call).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_bye_the_media_ports_are_closed_and_free() {
    overlay::logs();
    let net = overlay::Nodes::start(2).await;
    let (alice, bob) = (Phone::new().await, Phone::new().await);
    bob.register(net.sip(1, Transport::Udp)).await;
    let call = establish(&net, &alice, &bob, "bye-1").await;
    send_media(&alice, call.alice_sends_to, b"before bye").await;
    receive_media(&bob, b"before bye").await;
    send_media(&bob, call.bob_sends_to, b"before bye, back").await;
    receive_media(&alice, b"before bye, back").await;

    hang_up(&net, &alice, &bob, &call).await;

    // The sessions ended at both nodes.
    for (i, node) in net.nodes.iter().enumerate() {
        wait_until("the session ends", || media(node).sessions == 0).await;
        let m = media(node);
        assert_eq!((m.sessions_started, m.sessions), (1, 0), "node {i}: {m:?}");
    }
    // Both ports of each pair are released: the test can bind them itself (and so nothing
    // of the node reads them any more).
    for rtp in [call.alice_sends_to, call.bob_sends_to] {
        let rtcp = SocketAddr::new(rtp.ip(), rtp.port() + 1);
        for port in [rtp, rtcp] {
            let taken = bind_within(port).await;
            drop(taken);
        }
    }
    // What either phone sends to its former port reaches nobody.
    send_media(&alice, call.alice_sends_to, b"after bye").await;
    send_media(&bob, call.bob_sends_to, b"after bye, back").await;
    assert_eq!(arrival_within(&bob.rtp, QUIET).await, None);
    assert_eq!(arrival_within(&alice.rtp, QUIET).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_sessions_a_call_is_480_with_the_reason_and_the_first_keeps_its_media() {
    overlay::logs();
    let net = overlay::Nodes::start_with(2, |i, config: &mut p2p::Config| {
        if i == 1 {
            config.media = config.media.clone().max_sessions(1);
        }
    })
    .await;
    let (alice, bob) = (Phone::new().await, Phone::new().await);
    bob.register(net.sip(1, Transport::Udp)).await;
    let first = establish(&net, &alice, &bob, "cap-1").await;

    // A second call from another softphone at A: B has no room for its media.
    let carol = Phone::new().await;
    let invite = carol.invite("cap-2", &offer(carol.rtp_addr()));
    carol.send(net.sip(0, Transport::Udp), &invite).await;
    let answer = carol.final_response("cap-2").await;
    assert_eq!(
        answer.status(),
        StatusCode::TEMPORARILY_UNAVAILABLE,
        "{answer}"
    );
    assert_eq!(
        answer.reason(),
        "Temporarily Unavailable (too many media sessions at this node (1))"
    );
    carol
        .ack_failure(net.sip(0, Transport::Udp), "cap-2", &answer)
        .await;
    assert!(
        bob.requests_within(QUIET).await.is_empty(),
        "the refused call reached Bob"
    );
    let b = media(&net.nodes[1]);
    assert_eq!((b.sessions, b.sessions_started, b.refused), (1, 1, 1));
    // A set up a session for the second call when Carol's offer went out; the 480 ended it.
    wait_until("A ends the refused call's session", || {
        media(&net.nodes[0]).sessions == 1
    })
    .await;

    // The first call's media still crosses both ways.
    send_media(&alice, first.alice_sends_to, b"still here").await;
    receive_media(&bob, b"still here").await;
    send_media(&bob, first.bob_sends_to, b"still here, back").await;
    receive_media(&alice, b"still here, back").await;

    // The cap counts sessions that exist: once the first call ends, a new one gets through.
    hang_up(&net, &alice, &bob, &first).await;
    wait_until("B ends the first session", || {
        media(&net.nodes[1]).sessions == 0
    })
    .await;
    let again = establish(&net, &carol, &bob, "cap-3").await;
    send_media(&carol, again.alice_sends_to, b"carol").await;
    receive_media(&bob, b"carol").await;
    hang_up(&net, &carol, &bob, &again).await;
}

/// Alice's softphone calls Bob with an offer; Bob's answers 200 with his; Alice ACKs.
async fn establish(net: &overlay::Nodes, alice: &Phone, bob: &Phone, call_id: &str) -> Call {
    let invite = alice.invite(call_id, &offer(alice.rtp_addr()));
    alice.send(net.sip(0, Transport::Udp), &invite).await;

    let deadline = Instant::now() + WAIT;
    let (request, from) = loop {
        let (request, from) = bob.request(deadline).await.expect("the INVITE reaches Bob");
        if *request.method() == Method::Invite {
            break (request, from);
        }
    };
    let bob_sends_to = media_address(request.body());
    let mut ok = Response::for_request(&request, StatusCode::OK, "OK", Some("bob"));
    for field in request.headers().get_all(HeaderName::RecordRoute) {
        ok.headers_mut().push(HeaderName::RecordRoute, field.value);
    }
    ok.headers_mut().push(
        HeaderName::Contact,
        format!("<sip:bob@{}>", bob.sip.local_addr().unwrap()),
    );
    ok.set_body("application/sdp", offer(bob.rtp_addr()).into_bytes());
    bob.sip.send_to(&ok.to_bytes(), from).await.unwrap();

    let answer = alice.final_response(call_id).await;
    assert_eq!(answer.status(), StatusCode::OK, "{answer}");
    let mut route: Vec<String> = answer
        .headers()
        .get_all(HeaderName::RecordRoute)
        .flat_map(|field| {
            String::from_utf8_lossy(field.value)
                .split(',')
                .map(|r| r.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    route.reverse();
    let contact = String::from_utf8_lossy(answer.headers().get(HeaderName::Contact).unwrap())
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    let to_tag = answer
        .headers()
        .typed::<p2psip_sip::header::To>()
        .unwrap()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    let call = Call {
        call_id: call_id.to_owned(),
        target: contact,
        route,
        to_tag,
        alice_sends_to: media_address(answer.body()),
        bob_sends_to,
    };
    alice
        .send(
            net.sip(0, Transport::Udp),
            &alice.in_dialog(&call, Method::Ack, 1),
        )
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (request, _) = bob.request(deadline).await.expect("the ACK reaches Bob");
        if *request.method() == Method::Ack {
            break;
        }
    }
    call
}

/// Alice's softphone sends BYE; Bob's answers 200; Alice gets it.
async fn hang_up(net: &overlay::Nodes, alice: &Phone, bob: &Phone, call: &Call) {
    alice
        .send(
            net.sip(0, Transport::Udp),
            &alice.in_dialog(call, Method::Bye, 2),
        )
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (request, from) = bob.request(deadline).await.expect("the BYE reaches Bob");
        if *request.method() == Method::Bye {
            let ok = ok(&request);
            bob.sip.send_to(&ok.to_bytes(), from).await.unwrap();
            break;
        }
    }
    let answer = alice.final_response(&call.call_id).await;
    assert_eq!(answer.status(), StatusCode::OK, "{answer}");
}

impl Phone {
    async fn new() -> Phone {
        Phone {
            sip: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            rtp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn sip_port(&self) -> u16 {
        self.sip.local_addr().unwrap().port()
    }

    fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    async fn send(&self, to: SocketAddr, text: &str) {
        self.sip.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// Registers this phone's SIP socket as Bob's contact at the node `to`.
    async fn register(&self, to: SocketAddr) {
        let port = self.sip_port();
        let text = format!(
            "REGISTER sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-reg{port};rport\r\nFrom: <{BOB}>;tag=r{port}\r\nTo: <{BOB}>\r\nCall-ID: reg-{port}\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:{port}>\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        self.send(to, &text).await;
        let ok = self.final_response(&format!("reg-{port}")).await;
        assert_eq!(ok.status(), StatusCode::OK, "{ok}");
    }

    /// An INVITE for Bob, with `sdp` as its body.
    fn invite(&self, call_id: &str, sdp: &str) -> String {
        let port = self.sip_port();
        format!(
            "INVITE {BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <sip:caller@example.p2p>;tag=c-{call_id}\r\nTo: <{BOB}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }

    /// The ACK of a non-2xx final response to [`Phone::invite`] (hop by hop, §17.1.1.3).
    async fn ack_failure(&self, node: SocketAddr, call_id: &str, answer: &Response) {
        let port = self.sip_port();
        let to = String::from_utf8_lossy(answer.headers().get(HeaderName::To).unwrap());
        let text = format!(
            "ACK {BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <sip:caller@example.p2p>;tag=c-{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        self.send(node, &text).await;
    }

    /// An ACK or BYE of `call` (§12.2.1.1: Request-URI the remote target, the route set).
    fn in_dialog(&self, call: &Call, method: Method, seq: u32) -> String {
        let port = self.sip_port();
        let Call {
            call_id,
            target,
            to_tag,
            ..
        } = call;
        let routes: String = call
            .route
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id}-{seq}{method};rport\r\n{routes}From: <sip:caller@example.p2p>;tag=c-{call_id}\r\nTo: <{BOB}>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// The next SIP message before `deadline`, and where it came from.
    async fn next(&self, deadline: Instant) -> Option<(Message, SocketAddr)> {
        udp::next_message(&self.sip, deadline).await
    }

    /// The next request before `deadline`, and where it came from.
    async fn request(&self, deadline: Instant) -> Option<(Request, SocketAddr)> {
        loop {
            if let (Message::Request(r), from) = self.next(deadline).await? {
                return Some((r, from));
            }
        }
    }

    /// The requests that arrive within `quiet`.
    async fn requests_within(&self, quiet: Duration) -> Vec<Request> {
        let deadline = Instant::now() + quiet;
        let mut requests = Vec::new();
        while let Some((request, _)) = self.request(deadline).await {
            requests.push(request);
        }
        requests
    }

    /// The final response of Call-ID `call_id`, within [`WAIT`].
    async fn final_response(&self, call_id: &str) -> Response {
        let deadline = Instant::now() + WAIT;
        loop {
            let (message, _) = self
                .next(deadline)
                .await
                .unwrap_or_else(|| panic!("no final response in {call_id} within {WAIT:?}"));
            let Message::Response(response) = message else {
                continue;
            };
            let same = response
                .headers()
                .typed::<CallId>()
                .and_then(Result::ok)
                .is_some_and(|c| c.0 == call_id);
            if same && !response.status().is_provisional() {
                return response;
            }
        }
    }
}

/// An audio offer or answer with its media at `rtp`.
fn offer(rtp: SocketAddr) -> String {
    let (ip, port) = (rtp.ip(), rtp.port());
    format!(
        "v=0\r\no=phone 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// The RTP address an SDP names: its `c=` and its first `m=`.
fn media_address(body: &[u8]) -> SocketAddr {
    let text = std::str::from_utf8(body).unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
            .to_owned()
    };
    let ip = line("c=IN IP4 ").trim().parse().unwrap();
    let port = line("m=audio ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    SocketAddr::new(ip, port)
}

/// A 200 to `request` with Bob's tag.
fn ok(request: &Request) -> Response {
    let mut response = Response::for_request(request, StatusCode::OK, "OK", Some("bob"));
    response.headers_mut().push(HeaderName::ContentLength, "0");
    response
}

fn media(node: &Node) -> p2psip_node::media::Snapshot {
    node.stats().media.snapshot()
}

async fn send_media(phone: &Phone, to: SocketAddr, payload: &[u8]) {
    phone.rtp.send_to(payload, to).await.unwrap();
}

/// Waits for `payload` at the phone's RTP socket and says where it came from.
async fn receive_media(phone: &Phone, payload: &[u8]) -> SocketAddr {
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, phone.rtp.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{:?} did not arrive", String::from_utf8_lossy(payload)))
        .unwrap();
    assert_eq!(&buf[..n], payload);
    from
}

/// What arrives at `socket` within `quiet`, if anything.
async fn arrival_within(socket: &UdpSocket, quiet: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(quiet, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some((buf[..n].to_vec(), from))
}

/// Binds `addr` as soon as it is free, within [`WAIT`].
async fn bind_within(addr: SocketAddr) -> UdpSocket {
    let deadline = Instant::now() + WAIT;
    loop {
        match UdpSocket::bind(addr).await {
            Ok(socket) => return socket,
            Err(error) => assert!(
                Instant::now() < deadline,
                "{addr} still taken after {WAIT:?}: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `done` holds, within [`WAIT`] (checking every 10 ms).
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
