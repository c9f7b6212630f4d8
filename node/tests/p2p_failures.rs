//! The P2PSIP node when calls fail, over real sockets on small overlays, with short SIP
//! timers (T1 = 25 ms, so Timer B and F are 1.6 s; Timer C 4 s). Devices are raw UDP sockets
//! that register at a node, then answer, ring or stay silent as each test says:
//!
//! - no device answers (a silent contact, a node that no longer has the device, a node that
//!   is gone): the caller gets 480 with a reason that says why;
//! - a device rings and never answers: Timer C cancels it and the caller gets 408, not 487;
//! - a CANCEL from the caller reaches both devices of an AOR, at two other nodes;
//! - a request for a URI outside the overlay goes out over plain SIP and is answered;
//! - a client that floods REGISTERs, then other requests, is refused with 503 and
//!   Retry-After while another client of the same node registers and calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use p2psip_node::limit::{self, Rate};
use p2psip_node::p2p;
use p2psip_overlay::identity::UserKey;
use p2psip_sip::header::CallId;
use p2psip_sip::{HeaderName, Message, Method, Request, Response, StatusCode, Transport};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

#[path = "support/udp.rs"]
pub mod udp;

#[path = "support/overlay.rs"]
pub mod overlay;

/// T1 of every node: Timer B and F are 64*T1 = 1.6 s.
const T1: Duration = Duration::from_millis(25);
/// Timer C of every node.
const TIMER_C: Duration = Duration::from_secs(4);
/// How long a test waits for anything.
const WAIT: Duration = Duration::from_secs(20);

/// Short timers, and registrations as short as 1 s.
fn short_timers(_: usize, config: &mut p2p::Config) {
    config.proxy.transactions.t1 = T1;
    config.proxy.timer_c = TIMER_C;
    config.registrar.min_expires = Duration::from_secs(1);
}

/// No device answers: its contact is silent (480 from its node, after Timer B there), its
/// node no longer has it (480 from its node at once), its node is gone (480 from the caller's
/// node, after Timer B or the overlay's error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answers_480_with_the_reason() {
    overlay::logs();
    let mut net = overlay::Nodes::start_with(4, short_timers).await;
    let caller = Sip::new().await;
    let at0 = net.sip(0, Transport::Udp);

    // A silent device at node 1: its node tries it until Timer B, then says 480.
    let silent = Sip::new().await;
    let ok = silent
        .register(net.sip(1, Transport::Udp), "sip:silent@example.p2p", 600)
        .await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");
    let (provisional, answer) = caller.call(at0, "sip:silent@example.p2p", "silent-1").await;
    assert!(provisional.iter().any(|r| r.status().as_u16() == 100));
    assert_eq!(
        answer.status(),
        StatusCode::TEMPORARILY_UNAVAILABLE,
        "{answer}"
    );
    assert_eq!(
        answer.reason(),
        "Temporarily Unavailable (no device answered)"
    );
    let seen = silent.drain_requests().await;
    assert!(
        seen.iter().any(|r| *r.method() == Method::Invite),
        "the INVITE reached the device: {seen:?}"
    );

    // The same for a MESSAGE (Timer F).
    let (_, answer) = caller
        .ask(
            at0,
            message("sip:silent@example.p2p", "silent-2", caller.port()),
        )
        .await;
    assert_eq!(
        answer.status(),
        StatusCode::TEMPORARILY_UNAVAILABLE,
        "{answer}"
    );

    // A device registered at node 2 for 4 s, and not renewed: once the binding expires,
    // node 2 publishes the AOR's entry again without the contact, so callers get 404 instead
    // of being sent to a device that is gone.
    let gone = Sip::new().await;
    let at2 = net.sip(2, Transport::Udp);
    let ok = gone.register(at2, "sip:gone@example.p2p", 4).await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");
    let deadline = Instant::now() + WAIT;
    loop {
        let devices = p2p::lookup(net.nodes[0].overlay(), "sip:gone@example.p2p")
            .await
            .unwrap_or_default();
        if !devices.is_empty() && devices.iter().all(|d| d.contacts.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired binding stayed in the overlay"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let bindings = Sip::new().await.query(at2, "sip:gone@example.p2p").await;
    assert!(
        !bindings.headers().contains(HeaderName::Contact),
        "{bindings}"
    );
    let (_, answer) = caller.call(at0, "sip:gone@example.p2p", "gone-1").await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{answer}");

    // A device at node 3, which then dies: its registration stays in the overlay for a while.
    let orphan = Sip::new().await;
    let ok = orphan
        .register(net.sip(3, Transport::Udp), "sip:orphan@example.p2p", 600)
        .await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");
    net.nodes.pop().unwrap().kill().await;
    let (_, answer) = caller.call(at0, "sip:orphan@example.p2p", "orphan-1").await;
    assert_eq!(
        answer.status(),
        StatusCode::TEMPORARILY_UNAVAILABLE,
        "{answer}"
    );
    assert_eq!(
        answer.reason(),
        "Temporarily Unavailable (no device answered)"
    );
    assert!(
        orphan.drain_requests().await.is_empty(),
        "nothing reached the device of the dead node"
    );
}

/// A device that rings and never answers: Timer C ends it with a CANCEL (§16.8), the device
/// answers the CANCEL 200 and the INVITE 487, and the caller gets 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_rings_forever_times_out_with_408() {
    overlay::logs();
    let net = overlay::Nodes::start_with(2, short_timers).await;
    let device = Sip::new().await;
    let ok = device
        .register(net.sip(1, Transport::Udp), "sip:ringer@example.p2p", 600)
        .await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");
    let device = device.ring_until_cancelled("ringer");

    let caller = Sip::new().await;
    let started = Instant::now();
    let (provisional, answer) = caller
        .call(
            net.sip(0, Transport::Udp),
            "sip:ringer@example.p2p",
            "ringer-1",
        )
        .await;
    assert!(
        provisional.iter().any(|r| r.status().as_u16() == 180),
        "{provisional:?}"
    );
    assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT, "{answer}");
    assert!(
        started.elapsed() >= TIMER_C - Duration::from_millis(500),
        "Timer C, not something sooner: {:?}",
        started.elapsed()
    );
    let seen = device.await.unwrap();
    assert_eq!(seen.cancels.len(), 1, "the device saw one CANCEL: {seen:?}");
    assert!(seen.acked, "the device's 487 was acknowledged");
}

/// The caller cancels a call to an AOR with two devices at two other nodes: both ring, both
/// get the CANCEL (and answer 200 and 487), the caller gets 200 for its CANCEL and 487.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_every_device_across_the_overlay() {
    overlay::logs();
    // Nodes 1 and 2 serve the same user (one user key), so both may register the AOR.
    let keys = tempfile::tempdir().unwrap();
    UserKey::load_or_create(keys.path()).unwrap();
    let net = overlay::Nodes::start_with(4, |i, config| {
        short_timers(i, config);
        if i == 1 || i == 2 {
            let dir = &config.overlay.data_dir;
            std::fs::create_dir_all(dir).unwrap();
            std::fs::copy(keys.path().join(UserKey::FILE), dir.join(UserKey::FILE)).unwrap();
        }
    })
    .await;
    let aor = "sip:twins@example.p2p";
    let mut devices = Vec::new();
    for (i, name) in [(1, "twin-d"), (2, "twin-e")] {
        let device = Sip::new().await;
        let ok = device.register(net.sip(i, Transport::Udp), aor, 600).await;
        assert_eq!(ok.status().as_u16(), 200, "node {i}: {ok}");
        devices.push(device.ring_until_cancelled(name));
    }

    let caller = Sip::new().await;
    let at0 = net.sip(0, Transport::Udp);
    let call_id = "twins-1";
    caller.send(at0, invite(aor, call_id, caller.port())).await;
    // Both ring (two To tags), then the caller cancels.
    let mut tags = HashSet::new();
    let deadline = Instant::now() + WAIT;
    while tags.len() < 2 {
        let response = caller.response(deadline).await.expect("both devices ring");
        if response.status().as_u16() == 180 {
            tags.insert(to_tag(&response));
        }
    }
    caller.send(at0, cancel(aor, call_id, caller.port())).await;
    let mut cancel_ok = false;
    let answer = loop {
        let response = caller.response(deadline).await.expect("a final answer");
        match (cseq_method(&response).as_str(), response.status().as_u16()) {
            ("CANCEL", 200) => cancel_ok = true,
            ("INVITE", code) if code >= 200 => break response,
            _ => {}
        }
    };
    assert_eq!(answer.status(), StatusCode::REQUEST_TERMINATED, "{answer}");
    assert!(cancel_ok, "the CANCEL was answered 200");
    for device in devices {
        let seen = device.await.unwrap();
        assert_eq!(seen.cancels.len(), 1, "one CANCEL: {seen:?}");
        assert!(seen.acked, "{seen:?}");
    }
}

/// A Request-URI outside the overlay (an IP address that is not the node's) goes out over
/// plain SIP, through the node, and the answer comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_overlay_go_over_plain_sip() {
    overlay::logs();
    let net = overlay::Nodes::start_with(2, short_timers).await;
    let carol = Sip::new().await;
    let uri = format!("sip:carol@127.0.0.1:{}", carol.port());
    let answering = tokio::spawn(async move {
        let deadline = Instant::now() + WAIT;
        loop {
            let (request, from) = carol.request(deadline).await.expect("the INVITE");
            if *request.method() == Method::Invite {
                let mut ok = reply(&request, StatusCode::OK, "OK", Some("carol"));
                ok.headers_mut().push(
                    HeaderName::Contact,
                    format!("<sip:carol@127.0.0.1:{}>", carol.port()),
                );
                carol.send_response(from, &ok).await;
                return request;
            }
        }
    });
    let caller = Sip::new().await;
    let at0 = net.sip(0, Transport::Udp);
    let (_, answer) = caller
        .ask(at0, invite(&uri, "carol-1", caller.port()))
        .await;
    assert_eq!(answer.status(), StatusCode::OK, "{answer}");
    let request = answering.await.unwrap();
    assert_eq!(request.uri_str(), uri);
    let record_route = request
        .headers()
        .get(HeaderName::RecordRoute)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    assert!(
        record_route.contains(&format!("node={}", net.nodes[0].node_id())),
        "the node stays in the dialog: {record_route}"
    );
}

/// A client that floods REGISTERs gets 503 with Retry-After once its burst is spent; its other
/// requests have their own budget, also limited; meanwhile another client of the same node
/// registers and calls as if nothing happened. Every refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_limited_and_others_are_not() {
    overlay::logs();
    let net = overlay::Nodes::start_with(2, |i, config| {
        short_timers(i, config);
        config.limits = limit::Config {
            register: Rate::new(20, 1),
            requests: Rate::new(20, 1),
            ..limit::Config::default()
        };
    })
    .await;
    let at0 = net.sip(0, Transport::Udp);

    // The callee at node 1 answers.
    let callee = Sip::new().await;
    let ok = callee
        .register(net.sip(1, Transport::Udp), "sip:busy-bee@example.p2p", 600)
        .await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");
    let callee = callee.answer_one_call();

    let flood = async {
        // REGISTER queries (no Contact): the registrar answers them at once, so the flood
        // measures the limit, not the overlay.
        let flooder = Sip::new().await;
        let started = Instant::now();
        let mut answers = Vec::new();
        for i in 0..200 {
            let (_, answer) = flooder
                .ask(at0, flooder.query_request("sip:flood@example.p2p", i))
                .await;
            answers.push(answer);
        }
        let register_secs = started.elapsed().as_secs();
        // Then other requests: a budget of their own, full at first.
        let mut others = Vec::new();
        let started = Instant::now();
        for i in 0..40 {
            let (_, answer) = flooder
                .ask(
                    at0,
                    message(
                        "sip:nobody@example.p2p",
                        &format!("flood-m{i}"),
                        flooder.port(),
                    ),
                )
                .await;
            others.push(answer);
        }
        (answers, register_secs, others, started.elapsed().as_secs())
    };
    let other_client = async {
        let alice = Sip::new().await;
        let ok = alice.register(at0, "sip:alice@example.p2p", 600).await;
        let (_, call) = alice.call(at0, "sip:busy-bee@example.p2p", "bee-1").await;
        (ok, call)
    };
    let ((registers, register_secs, others, other_secs), (alice_ok, alice_call)) =
        tokio::join!(flood, other_client);

    assert_eq!(alice_ok.status().as_u16(), 200, "{alice_ok}");
    assert_eq!(alice_call.status().as_u16(), 200, "{alice_call}");
    assert!(callee.await.unwrap(), "the callee got the call");

    let limited = |answers: &[Response], secs: u64, what: &str| {
        let accepted = answers.iter().take_while(|r| r.status().as_u16() != 503);
        assert!(accepted.count() >= 20, "{what}: the burst goes through");
        let refused: Vec<&Response> = answers
            .iter()
            .filter(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
            .collect();
        // 20 at once, then one a second (and one more for the second under way).
        let most_accepted = 20 + secs as usize + 1;
        assert!(
            answers.len() - refused.len() <= most_accepted,
            "{what}: {} accepted in {secs} s",
            answers.len() - refused.len()
        );
        for r in &refused {
            assert_eq!(
                r.reason(),
                "Service Unavailable (too many requests from this client)"
            );
            let retry_after: u64 = r
                .headers()
                .get(HeaderName::RetryAfter)
                .map(|v| String::from_utf8_lossy(v).trim().parse().unwrap())
                .expect("a Retry-After");
            assert!((1..=60).contains(&retry_after), "{r}");
        }
        refused.len()
    };
    let refused_registers = limited(&registers, register_secs, "REGISTER");
    assert!(
        registers
            .iter()
            .all(|r| matches!(r.status().as_u16(), 200 | 503)),
        "{:?}",
        registers.iter().map(Response::status).collect::<Vec<_>>()
    );
    let refused_others = limited(&others, other_secs, "MESSAGE");
    assert!(
        others.iter().take(20).all(|r| r.status().as_u16() == 404),
        "the other budget was untouched by the REGISTER flood"
    );
    assert!(refused_registers >= 150, "{refused_registers}");
    assert!(refused_others >= 10, "{refused_others}");
    let counted = net.nodes[0].stats().refused.load(Ordering::Relaxed);
    assert!(
        counted >= (refused_registers + refused_others) as u64,
        "{counted}"
    );
}

/// What a ringing device saw.
#[derive(Debug, Default)]
struct Seen {
    /// The CANCEL transactions (their branches: a retransmission is the same one).
    cancels: HashSet<String>,
    acked: bool,
}

/// A UDP SIP endpoint on 127.0.0.1: a softphone, a device or a plain SIP server.
struct Sip {
    socket: UdpSocket,
    /// Numbers the queries of [`Sip::query`].
    queries: AtomicU32,
}

impl Sip {
    async fn new() -> Sip {
        Sip {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            queries: AtomicU32::new(1_000),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    async fn send(&self, to: SocketAddr, text: String) {
        self.socket.send_to(text.as_bytes(), to).await.unwrap();
    }

    async fn send_response(&self, to: SocketAddr, response: &Response) {
        self.socket.send_to(&response.to_bytes(), to).await.unwrap();
    }

    /// The next message before `deadline`.
    async fn next(&self, deadline: Instant) -> Option<(Message, SocketAddr)> {
        udp::next_message(&self.socket, deadline).await
    }

    /// The next response before `deadline`.
    async fn response(&self, deadline: Instant) -> Option<Response> {
        loop {
            if let (Message::Response(r), _) = self.next(deadline).await? {
                return Some(r);
            }
        }
    }

    /// The next request before `deadline`, and where it came from.
    async fn request(&self, deadline: Instant) -> Option<(Request, SocketAddr)> {
        loop {
            if let (Message::Request(r), from) = self.next(deadline).await? {
                return Some((r, from));
            }
        }
    }

    /// The requests received so far (none is waited for).
    async fn drain_requests(&self) -> Vec<Request> {
        let mut requests = Vec::new();
        let soon = Instant::now() + Duration::from_millis(1);
        while let Some((request, _)) = self.request(soon).await {
            requests.push(request);
        }
        requests
    }

    /// Sends `request` to `to` and gives the provisional responses and the final response
    /// with its Call-ID.
    async fn ask(&self, to: SocketAddr, request: String) -> (Vec<Response>, Response) {
        let call_id = Message::parse(request.clone().into_bytes())
            .ok()
            .and_then(|m| Some(m.headers().typed::<CallId>()?.ok()?.0.to_owned()))
            .unwrap();
        self.send(to, request).await;
        let deadline = Instant::now() + WAIT;
        let mut provisional = Vec::new();
        loop {
            let response = self
                .response(deadline)
                .await
                .unwrap_or_else(|| panic!("no final answer to {call_id} within {WAIT:?}"));
            if response_call_id(&response) != call_id {
                continue;
            }
            if response.status().is_provisional() {
                provisional.push(response);
            } else {
                return (provisional, response);
            }
        }
    }

    /// INVITEs `uri` through the node at `to`.
    async fn call(&self, to: SocketAddr, uri: &str, call_id: &str) -> (Vec<Response>, Response) {
        self.ask(to, invite(uri, call_id, self.port())).await
    }

    /// Registers this endpoint's address under `aor` at the node `to`.
    async fn register(&self, to: SocketAddr, aor: &str, expires: u32) -> Response {
        let port = self.port();
        let call_id = format!("reg-{port}-{expires}");
        let text = format!(
            "REGISTER sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <{aor}>;tag=r{port}\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:device@127.0.0.1:{port}>\r\nExpires: {expires}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        self.ask(to, text).await.1
    }

    /// A REGISTER that only asks for the bindings of `aor` (no Contact, §10.2.3).
    fn query_request(&self, aor: &str, n: u32) -> String {
        let port = self.port();
        format!(
            "REGISTER sip:example.p2p SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-q{port}-{n};rport\r\nFrom: <{aor}>;tag=q{port}\r\nTo: <{aor}>\r\nCall-ID: query-{port}-{n}\r\nCSeq: {} REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            n + 1
        )
    }

    /// The bindings of `aor` at the node `to`: the 200 of a query.
    async fn query(&self, to: SocketAddr, aor: &str) -> Response {
        let n = self.queries.fetch_add(1, Ordering::Relaxed);
        let (_, answer) = self.ask(to, self.query_request(aor, n)).await;
        assert_eq!(answer.status().as_u16(), 200, "{answer}");
        answer
    }

    /// Plays a device that rings: 180 to every INVITE, then 200 and 487 to the CANCEL; ends
    /// with the ACK of the 487. Gives what it saw.
    fn ring_until_cancelled(self, tag: &'static str) -> JoinHandle<Seen> {
        tokio::spawn(async move {
            let deadline = Instant::now() + WAIT;
            let mut seen = Seen::default();
            let mut invite: Option<Request> = None;
            while let Some((request, from)) = self.request(deadline).await {
                match request.method() {
                    Method::Invite => {
                        let ringing = reply(
                            &request,
                            StatusCode::new(180).unwrap(),
                            "Ringing",
                            Some(tag),
                        );
                        self.send_response(from, &ringing).await;
                        invite = Some(request);
                    }
                    Method::Cancel => {
                        seen.cancels.insert(top_branch(&request));
                        let ok = reply(&request, StatusCode::OK, "OK", Some(tag));
                        self.send_response(from, &ok).await;
                        if let Some(invite) = &invite {
                            let terminated = reply(
                                invite,
                                StatusCode::REQUEST_TERMINATED,
                                "Request Terminated",
                                Some(tag),
                            );
                            self.send_response(from, &terminated).await;
                        }
                    }
                    Method::Ack => {
                        seen.acked = true;
                        break;
                    }
                    _ => {}
                }
            }
            seen
        })
    }

    /// Plays a device that answers the first INVITE 200 (and its retransmissions). Gives
    /// whether a call came.
    fn answer_one_call(self) -> JoinHandle<bool> {
        tokio::spawn(async move {
            let deadline = Instant::now() + WAIT;
            while let Some((request, from)) = self.request(deadline).await {
                if *request.method() == Method::Invite {
                    let mut ok = reply(&request, StatusCode::OK, "OK", Some("bee"));
                    ok.headers_mut().push(
                        HeaderName::Contact,
                        format!("<sip:device@127.0.0.1:{}>", self.port()),
                    );
                    self.send_response(from, &ok).await;
                    return true;
                }
            }
            false
        })
    }
}

/// A response to `request`, with a To tag.
fn reply(request: &Request, status: StatusCode, reason: &str, tag: Option<&str>) -> Response {
    let mut response = Response::for_request(request, status, reason, tag);
    response.headers_mut().push(HeaderName::ContentLength, "0");
    response
}

fn invite(uri: &str, call_id: &str, port: u16) -> String {
    format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <sip:caller@example.p2p>;tag=c-{call_id}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The CANCEL of [`invite`] (§9.1: same Request-URI, top Via, From, To, Call-ID, CSeq number).
fn cancel(uri: &str, call_id: &str, port: u16) -> String {
    format!(
        "CANCEL {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <sip:caller@example.p2p>;tag=c-{call_id}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn message(uri: &str, call_id: &str, port: u16) -> String {
    format!(
        "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <sip:caller@example.p2p>;tag=m-{call_id}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nMax-Forwards: 70\r\nContent-Length: 5\r\n\r\nhello"
    )
}

fn response_call_id(response: &Response) -> String {
    response
        .headers()
        .typed::<CallId>()
        .and_then(Result::ok)
        .map_or_else(String::new, |c| c.0.to_owned())
}

fn cseq_method(response: &Response) -> String {
    response
        .headers()
        .get(HeaderName::CSeq)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default()
}

fn to_tag(response: &Response) -> String {
    response
        .headers()
        .typed::<p2psip_sip::header::To>()
        .and_then(Result::ok)
        .and_then(|to| to.tag().map(str::to_owned))
        .unwrap_or_default()
}

fn top_branch(request: &Request) -> String {
    request
        .headers()
        .typed::<p2psip_sip::header::Via>()
        .and_then(Result::ok)
        .and_then(|via| via.branch().map(str::to_owned))
        .unwrap_or_default()
}
