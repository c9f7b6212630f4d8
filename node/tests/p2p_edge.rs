//! The edge of a P2PSIP node under attack, over real sockets: each test carries out one attack
//! with raw SIP over UDP (or raw Route messages over the overlay) and checks it is refused,
//! with the reason, and that nothing got through:
//!
//! - digest authentication: a REGISTER and an INVITE without credentials get 401 and 407 and
//!   nothing is published; with them they work; a user registers only its own AORs; a node
//!   beyond loopback without users does not start;
//! - a Route to a foreign URI is refused, not relayed (the foreign socket hears nothing),
//!   outside a dialog and inside one, ACKs included;
//! - a BYE for a dialog the node does not know gets 481, and the contact it names hears
//!   nothing;
//! - an in-dialog request over the overlay from a node that is not the dialog's other end is
//!   refused, while the real end's BYE goes through;
//! - requests with a To tag are held to the client's flood budget;
//! - branches are unpredictable: the same node (same Node-ID) started twice gives other
//!   branches, not those of a generator seeded from the Node-ID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use p2psip_node::agent::Agent;
use p2psip_node::limit::{self, Rate};
use p2psip_node::p2p::{self, Node};
use p2psip_sip::header::{CallId, ProxyAuthenticate, Via, WwwAuthenticate};
use p2psip_sip::ua;
use p2psip_sip::{
    HeaderName, Ids, Message, Method, Request, Response, StatusCode, Transport, auth,
};
use tokio::net::UdpSocket;

#[path = "support/udp.rs"]
pub mod udp;

#[path = "support/overlay.rs"]
pub mod overlay;

/// How long a test waits for anything.
const WAIT: Duration = Duration::from_secs(20);
/// How long a socket that must hear nothing is listened to after the refusal came back.
const QUIET: Duration = Duration::from_millis(300);

/// Node 0 demands digest authentication (on 127.0.0.1, as it would beyond loopback) from
/// alice (password) and bob (an HA1 hash).
fn with_users(i: usize, config: &mut p2p::Config) {
    if i == 0 {
        let mut users = HashMap::new();
        users.insert(
            "alice".to_owned(),
            auth::Credential::Password("wonderland".into()),
        );
        let ha1 = auth::ha1(auth::Hash::Sha256, "bob", "p2psip.test", "builder");
        users.insert(
            "bob".to_owned(),
            auth::Credential::Ha1(vec![(auth::Hash::Sha256, ha1)]),
        );
        config.auth = Some(p2p::Auth {
            realm: "p2psip.test".into(),
            users,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_nothing_is_registered_or_relayed() {
    overlay::logs();
    let net = overlay::Nodes::start_with(2, with_users).await;
    let at0 = net.sip(0, Transport::Udp);
    let alice = Sip::new().await;
    let aor = "sip:alice@example.p2p";

    // The attack: register and call without credentials.
    let answer = alice
        .ask(at0, alice.register_request(at0, aor, 1, None))
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer.headers().contains(HeaderName::WwwAuthenticate));
    let foreign = Sip::new().await;
    let outside = format!("sip:carol@127.0.0.1:{}", foreign.port());
    let answer = alice
        .ask(at0, invite(&outside, "noauth-1", alice.port(), ""))
        .await
        .1;
    assert_eq!(
        answer.status(),
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "{answer}"
    );
    assert!(answer.headers().contains(HeaderName::ProxyAuthenticate));
    let devices = p2p::lookup(net.nodes[1].overlay(), aor).await.unwrap();
    assert!(
        devices.is_empty(),
        "published without credentials: {devices:?}"
    );
    assert!(
        foreign.silent().await,
        "relayed for a client without credentials"
    );
    assert!(net.nodes[0].stats().challenged.load(Ordering::Relaxed) >= 2);

    // A wrong password is refused too, and counted.
    let refused = net.nodes[0].stats().refused.load(Ordering::Relaxed);
    let challenged = answer_of(&alice, at0, aor).await;
    let challenge = www_challenge(&challenged);
    let uri = format!("sip:{at0}");
    let wrong = alice_register(&challenge, &uri, "guess", 1);
    let answer = alice
        .ask(at0, alice.register_request(at0, aor, 3, Some(&wrong)))
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{answer}");
    assert!(net.nodes[0].stats().refused.load(Ordering::Relaxed) > refused);

    // With credentials: registered and published.
    let challenge_response = answer_of(&alice, at0, aor).await;
    let challenge = www_challenge(&challenge_response);
    let right = alice_register(&challenge, &uri, "wonderland", 1);
    let answer = alice
        .ask(at0, alice.register_request(at0, aor, 5, Some(&right)))
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::OK, "{answer}");
    let devices = p2p::lookup(net.nodes[1].overlay(), aor).await.unwrap();
    assert!(
        devices.iter().any(|d| !d.contacts.is_empty()),
        "{devices:?}"
    );

    // alice's credentials do not register bob's AOR.
    let bob_aor = "sip:bob@example.p2p";
    let answer = alice
        .ask(at0, alice.register_request(at0, bob_aor, 7, None))
        .await
        .1;
    let challenge = www_challenge(&answer);
    let right = alice_register(&challenge, &uri, "wonderland", 2);
    let answer = alice
        .ask(at0, alice.register_request(at0, bob_aor, 9, Some(&right)))
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(
        answer.reason(),
        "Forbidden (user alice may register only AORs of user alice)"
    );
    assert!(
        p2p::lookup(net.nodes[1].overlay(), bob_aor)
            .await
            .unwrap()
            .is_empty()
    );

    // bob (an HA1 hash in the config) calls out with credentials: relayed.
    let bob = Sip::new().await;
    let answer = bob
        .ask(at0, invite(&outside, "auth-2", bob.port(), ""))
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    let challenge = answer
        .headers()
        .typed::<ProxyAuthenticate>()
        .unwrap()
        .unwrap();
    let credentials = auth::answer(
        &challenge.0,
        &Method::Invite,
        &outside,
        "bob",
        "builder",
        "beef",
        1,
    )
    .unwrap();
    let header = format!("Proxy-Authorization: {credentials}\r\n");
    bob.send(at0, invite(&outside, "auth-3", bob.port(), &header))
        .await;
    let (request, _) = foreign
        .request(Instant::now() + WAIT)
        .await
        .expect("relayed");
    assert_eq!(*request.method(), Method::Invite);
}

/// A challenge to a fresh REGISTER of `aor` (a new nonce).
async fn answer_of(sip: &Sip, to: SocketAddr, aor: &str) -> Response {
    let n = sip.next_cseq();
    sip.ask(to, sip.register_request(to, aor, n, None)).await.1
}

fn www_challenge(response: &Response) -> WwwAuthenticate<'_> {
    response
        .headers()
        .typed::<WwwAuthenticate>()
        .expect("a challenge")
        .unwrap()
}

/// The node's built-in agent has no password: the node lets its socket in
/// ([`Node::trust`]), and only that socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_trusted_built_in_agent_registers_without_credentials() {
    overlay::logs();
    let net = overlay::Nodes::start_with(2, with_users).await;
    let at0 = net.sip(0, Transport::Udp);
    let mut stranger = Agent::for_node(at0, "mallory", false, None, 1)
        .await
        .unwrap();
    let mut agent = Agent::for_node(at0, "p2psip", false, None, 2)
        .await
        .unwrap();
    for peer in agent.local_addrs() {
        if peer.transport == Transport::Udp {
            net.nodes[0].trust(peer.addr);
        }
    }
    stranger
        .register("sip:mallory@example.p2p", 600)
        .await
        .unwrap();
    let failed = registration(&mut stranger).await;
    assert!(
        matches!(failed, ua::Event::RegistrationFailed { .. }),
        "{failed:?}"
    );
    agent.register("sip:p2psip@example.p2p", 600).await.unwrap();
    let ok = registration(&mut agent).await;
    assert!(matches!(ok, ua::Event::Registered { .. }), "{ok:?}");
    let devices = p2p::lookup(net.nodes[1].overlay(), "sip:p2psip@example.p2p")
        .await
        .unwrap();
    assert!(
        devices.iter().any(|d| !d.contacts.is_empty()),
        "{devices:?}"
    );
    let nothing = p2p::lookup(net.nodes[1].overlay(), "sip:mallory@example.p2p")
        .await
        .unwrap();
    assert!(nothing.is_empty(), "{nothing:?}");
}

/// The agent's next registration outcome.
async fn registration(agent: &mut Agent) -> ua::Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = agent.next_event().await.expect("the agent runs");
            if matches!(
                event,
                ua::Event::Registered { .. } | ua::Event::RegistrationFailed { .. }
            ) {
                return event;
            }
        }
    })
    .await
    .expect("a registration outcome")
}

#[tokio::test]
async fn a_node_beyond_loopback_without_users_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let wide = SocketAddr::from(([0, 0, 0, 0], 0));
    let error = Node::start(p2p::Config::new(dir.path(), wide))
        .await
        .expect_err("started without authentication");
    assert!(
        error.to_string().contains("without digest authentication"),
        "{error}"
    );
    let config = p2p::Config::new(dir.path(), wide).with_auth(p2p::Auth::default());
    let error = Node::start(config)
        .await
        .expect_err("started without users");
    assert!(error.to_string().contains("no users"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_a_foreign_uri_is_refused_not_relayed() {
    overlay::logs();
    let net = overlay::Nodes::start(1).await;
    let at0 = net.sip(0, Transport::Udp);
    let client = Sip::new().await;
    let foreign = Sip::new().await;
    let route = format!("Route: <sip:127.0.0.1:{};lr>\r\n", foreign.port());
    let refused = net.nodes[0].stats().refused.load(Ordering::Relaxed);

    // Outside a dialog: an INVITE for a local AOR with a Route to elsewhere.
    let answer = client
        .ask(
            at0,
            invite("sip:x@example.p2p", "route-1", client.port(), &route),
        )
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(
        answer.reason(),
        "Forbidden (a Route to elsewhere than this node outside a dialog)"
    );

    // Inside a made-up dialog: a MESSAGE with a To tag and the same Route.
    let answer = client
        .ask(
            at0,
            in_dialog(
                "MESSAGE",
                "sip:x@example.p2p",
                "route-2",
                client.port(),
                &route,
            ),
        )
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::CALL_DOES_NOT_EXIST, "{answer}");

    // An ACK (never answered) with that Route; the OPTIONS after it shows it was handled.
    client
        .send(
            at0,
            in_dialog("ACK", "sip:x@example.p2p", "route-3", client.port(), &route),
        )
        .await;
    let answer = client
        .ask(
            at0,
            in_dialog(
                "OPTIONS",
                "sip:x@example.p2p",
                "route-4",
                client.port(),
                &route,
            ),
        )
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::CALL_DOES_NOT_EXIST, "{answer}");

    assert!(
        foreign.silent().await,
        "the node relayed to a foreign Route"
    );
    assert!(net.nodes[0].stats().refused.load(Ordering::Relaxed) >= refused + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_for_an_unknown_dialog_is_refused() {
    overlay::logs();
    let net = overlay::Nodes::start(1).await;
    let at0 = net.sip(0, Transport::Udp);
    let victim = Sip::new().await;
    let ok = victim
        .ask(
            at0,
            victim.register_request(at0, "sip:victim@example.p2p", 1, None),
        )
        .await
        .1;
    assert_eq!(ok.status(), StatusCode::OK, "{ok}");
    let attacker = Sip::new().await;
    // A BYE straight at the victim's contact, as if a dialog with it existed.
    let contact = format!("sip:device@127.0.0.1:{}", victim.port());
    let answer = attacker
        .ask(
            at0,
            in_dialog("BYE", &contact, "bye-1", attacker.port(), ""),
        )
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::CALL_DOES_NOT_EXIST, "{answer}");
    assert_eq!(
        answer.reason(),
        "Call/Transaction Does Not Exist (no such dialog at this node)"
    );
    assert!(
        victim.silent().await,
        "a BYE of no dialog reached the device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dialog_requests_come_only_from_the_dialogs_end_node() {
    overlay::logs();
    let net = overlay::Nodes::start(3).await;
    let (at0, at1) = (net.sip(0, Transport::Udp), net.sip(1, Transport::Udp));
    let callee = Sip::new().await;
    let ok = callee
        .ask(
            at1,
            callee.register_request(at1, "sip:callee@example.p2p", 1, None),
        )
        .await
        .1;
    assert_eq!(ok.status(), StatusCode::OK, "{ok}");
    let caller = Sip::new().await;

    // A call from node 0 to the callee at node 1.
    caller
        .send(
            at0,
            invite("sip:callee@example.p2p", "dlg-1", caller.port(), ""),
        )
        .await;
    let (invite_in, from) = callee.request(Instant::now() + WAIT).await.expect("INVITE");
    assert_eq!(*invite_in.method(), Method::Invite);
    let mut ok = reply(&invite_in, StatusCode::OK, "OK", Some("callee-tag"));
    // A UAS copies the Record-Route into its 2xx (RFC 3261 §12.1.1).
    for field in invite_in.headers().get_all(HeaderName::RecordRoute) {
        let value = String::from_utf8_lossy(field.value).into_owned();
        ok.headers_mut().push(HeaderName::RecordRoute, value);
    }
    ok.headers_mut().push(
        HeaderName::Contact,
        format!("<sip:device@127.0.0.1:{}>", callee.port()),
    );
    callee.send_response(from, &ok).await;
    let answer = caller.final_response("dlg-1", "INVITE").await;
    assert_eq!(answer.status(), StatusCode::OK, "{answer}");
    let record_route: Vec<String> = answer
        .headers()
        .get_all(HeaderName::RecordRoute)
        .flat_map(|f| {
            String::from_utf8_lossy(f.value)
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let node1 = net.nodes[1].node_id().to_string();
    let node1_route = record_route
        .iter()
        .find(|r| r.contains(&node1))
        .expect("node 1 record-routed")
        .clone();

    // The attack: node 2, a stranger to the dialog, sends the callee a BYE over the overlay.
    let refused = net.nodes[1].stats().refused.load(Ordering::Relaxed);
    let forged = format!(
        "BYE sip:device@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TCP [100::9]:5060;branch=z9hG4bK-evil\r\nRoute: {node1_route}\r\nFrom: <sip:caller@example.p2p>;tag=c-dlg-1\r\nTo: <sip:callee@example.p2p>;tag=callee-tag\r\nCall-ID: dlg-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        callee.port()
    );
    net.nodes[2]
        .overlay()
        .route(net.nodes[1].node_id(), frame(forged.as_bytes()))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while net.nodes[1].stats().refused.load(Ordering::Relaxed) == refused {
        assert!(
            Instant::now() < deadline,
            "node 1 did not refuse the forged BYE"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        callee.silent().await,
        "a BYE from a stranger node reached the callee"
    );

    // The caller's own BYE, through node 0, ends the call.
    let route: Vec<&str> = record_route.iter().rev().map(String::as_str).collect();
    let bye = format!(
        "BYE sip:device@127.0.0.1:{callee_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bye-dlg-1;rport\r\nRoute: {route}\r\nFrom: <sip:caller@example.p2p>;tag=c-dlg-1\r\nTo: <sip:callee@example.p2p>;tag=callee-tag\r\nCall-ID: dlg-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        callee_port = callee.port(),
        port = caller.port(),
        route = route.join(", ")
    );
    caller.send(at0, bye).await;
    let (bye_in, from) = callee
        .request(Instant::now() + WAIT)
        .await
        .expect("the BYE");
    assert_eq!(*bye_in.method(), Method::Bye);
    callee
        .send_response(from, &reply(&bye_in, StatusCode::OK, "OK", None))
        .await;
    let answer = caller.final_response("dlg-1", "BYE").await;
    assert_eq!(answer.status(), StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_limits_hold_for_requests_with_a_to_tag() {
    overlay::logs();
    let net = overlay::Nodes::start_with(1, |_, config| {
        config.limits = limit::Config {
            in_dialog: Rate::new(3, 0),
            ..limit::Config::default()
        };
    })
    .await;
    let at0 = net.sip(0, Transport::Udp);
    let flooder = Sip::new().await;
    let mut statuses = Vec::new();
    for n in 0..5 {
        let call_id = format!("flood-{n}");
        let answer = flooder
            .ask(
                at0,
                in_dialog("INFO", "sip:x@example.p2p", &call_id, flooder.port(), ""),
            )
            .await
            .1;
        statuses.push(answer.status().as_u16());
        if n == 4 {
            assert!(
                answer.headers().contains(HeaderName::RetryAfter),
                "{answer}"
            );
        }
    }
    assert_eq!(statuses, [481, 481, 481, 503, 503]);
    // Another client still has its budget.
    let other = Sip::new().await;
    let answer = other
        .ask(
            at0,
            in_dialog("INFO", "sip:x@example.p2p", "other-1", other.port(), ""),
        )
        .await
        .1;
    assert_eq!(answer.status(), StatusCode::CALL_DOES_NOT_EXIST, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_are_not_derived_from_the_node_id() {
    overlay::logs();
    let dir = tempfile::tempdir().unwrap();
    let foreign = Sip::new().await;
    let outside = format!("sip:carol@127.0.0.1:{}", foreign.port());
    let mut branches = Vec::new();
    let mut ids = Vec::new();
    for run in 0..2 {
        let node = Node::start(overlay::config(dir.path(), Vec::new()))
            .await
            .unwrap();
        ids.push(node.node_id());
        let client = Sip::new().await;
        let call_id = format!("ids-{run}");
        client
            .send(
                node.sip_addr(Transport::Udp).unwrap(),
                invite(&outside, &call_id, client.port(), ""),
            )
            .await;
        let (request, _) = foreign
            .request(Instant::now() + WAIT)
            .await
            .expect("relayed");
        let via = request.headers().typed::<Via>().unwrap().unwrap();
        branches.push(via.branch().unwrap().to_owned());
        node.kill().await;
    }
    assert_eq!(ids[0], ids[1], "the same node twice");
    assert_ne!(
        branches[0], branches[1],
        "the same node made the same branch twice"
    );
    // The generator of before: SplitMix64 seeded from blake3 of the Node-ID.
    let hash = blake3::hash(&ids[0].to_bytes());
    let seed = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap());
    let mut predicted = Ids::new(seed);
    let guesses: Vec<String> = (0..16).map(|_| predicted.branch()).collect();
    for branch in &branches {
        assert!(
            !guesses.iter().any(|g| branch.starts_with(g.as_str())),
            "{branch} was predicted from the Node-ID"
        );
    }
}

/// alice's credentials for a REGISTER challenge, with `password` and nonce count `nc`.
fn alice_register(challenge: &WwwAuthenticate<'_>, uri: &str, password: &str, nc: u32) -> String {
    auth::answer(
        &challenge.0,
        &Method::Register,
        uri,
        "alice",
        password,
        "c0ffee",
        nc,
    )
    .unwrap()
}

/// A SIP message as one frame of a Route payload (4 bytes of length, big-endian).
fn frame(message: &[u8]) -> Vec<u8> {
    let mut payload = (message.len() as u32).to_be_bytes().to_vec();
    payload.extend_from_slice(message);
    payload
}

/// A raw SIP endpoint on a UDP socket of 127.0.0.1.
struct Sip {
    socket: UdpSocket,
    cseq: std::sync::atomic::AtomicU32,
}

impl Sip {
    async fn new() -> Sip {
        Sip {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            cseq: std::sync::atomic::AtomicU32::new(100),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn next_cseq(&self) -> u32 {
        self.cseq.fetch_add(2, Ordering::Relaxed)
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

    /// The next request before `deadline`, and where it came from.
    async fn request(&self, deadline: Instant) -> Option<(Request, SocketAddr)> {
        loop {
            if let (Message::Request(r), from) = self.next(deadline).await? {
                return Some((r, from));
            }
        }
    }

    /// Whether nothing arrives for [`QUIET`] (called after the refusal came back, so a
    /// relayed copy would already be on its way).
    async fn silent(&self) -> bool {
        self.next(Instant::now() + QUIET).await.is_none()
    }

    /// The final response with this Call-ID to a request of `method`.
    async fn final_response(&self, call_id: &str, method: &str) -> Response {
        let deadline = Instant::now() + WAIT;
        loop {
            let (message, _) = self
                .next(deadline)
                .await
                .unwrap_or_else(|| panic!("no final answer to {call_id} within {WAIT:?}"));
            if let Message::Response(r) = message
                && response_call_id(&r) == call_id
                && cseq_method(&r) == method
                && !r.status().is_provisional()
            {
                return r;
            }
        }
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
            let (message, _) = self
                .next(deadline)
                .await
                .unwrap_or_else(|| panic!("no final answer to {call_id} within {WAIT:?}"));
            let Message::Response(response) = message else {
                continue;
            };
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

    /// A REGISTER of this endpoint's address under `aor` at `to`, CSeq `n`, with these
    /// credentials.
    fn register_request(
        &self,
        to: SocketAddr,
        aor: &str,
        n: u32,
        authorization: Option<&str>,
    ) -> String {
        let port = self.port();
        let authorization = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-reg-{port}-{n};rport\r\nFrom: <{aor}>;tag=r{port}\r\nTo: <{aor}>\r\nCall-ID: reg-{port}\r\nCSeq: {n} REGISTER\r\nContact: <sip:device@127.0.0.1:{port}>\r\nExpires: 600\r\n{authorization}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }
}

/// A response to `request`, with a To tag.
fn reply(request: &Request, status: StatusCode, reason: &str, tag: Option<&str>) -> Response {
    let mut response = Response::for_request(request, status, reason, tag);
    response.headers_mut().push(HeaderName::ContentLength, "0");
    response
}

/// An INVITE outside a dialog, with `extra` header lines.
fn invite(uri: &str, call_id: &str, port: u16, extra: &str) -> String {
    format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\n{extra}From: <sip:caller@example.p2p>;tag=c-{call_id}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A `method` request inside a made-up dialog (a To tag), with `extra` header lines.
fn in_dialog(method: &str, uri: &str, call_id: &str, port: u16, extra: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\n{extra}From: <sip:caller@example.p2p>;tag=c-{call_id}\r\nTo: <{uri}>;tag=made-up\r\nCall-ID: {call_id}\r\nCSeq: 2 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn cseq_method(response: &Response) -> String {
    response
        .headers()
        .get(HeaderName::CSeq)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default()
}

fn response_call_id(response: &Response) -> String {
    response
        .headers()
        .typed::<CallId>()
        .and_then(Result::ok)
        .map_or_else(String::new, |c| c.0.to_owned())
}
