//! The hops a node notes for each initial INVITE it sends ([`p2p::Node::invite_hops`]), over
//! real sockets: they are those of the Route message that carried the INVITE, keyed by its
//! Call-ID, at the caller's node only.
//!
//! - On a settled overlay of three nodes the caller's node sends the INVITE straight to the
//!   callee's (1 hop, as a PathTrack finds); a callee at the caller's own node is 0 hops; the
//!   callee's node and other requests note nothing.
//! - When the callee's node takes one connection only (to a middle node), the INVITE crosses
//!   the middle node: 2 hops, the path a PathTrack finds too.
//!
//! Devices and callers are raw UDP sockets; a device answers every INVITE 486, so that the
//! caller's final response says the INVITE arrived.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use p2psip_node::hops::InviteHops;
use p2psip_node::p2p::{self, Node};
use p2psip_overlay::identity::UserKey;
use p2psip_overlay::network::Relay;
use p2psip_sip::header::CallId;
use p2psip_sip::{HeaderName, Message, Method, Request, Response, StatusCode, Transport};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

#[path = "support/udp.rs"]
pub mod udp;

#[path = "support/overlay.rs"]
pub mod overlay;

/// How long a test waits for anything.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invites_hops_are_those_of_the_route_that_carried_it() {
    overlay::logs();
    let net = overlay::Nodes::start(3).await;
    let (caller_node, callee_node) = (&net.nodes[1], &net.nodes[2]);
    let bob = Sip::new().await;
    let carol = Sip::new().await;
    let at1 = net.sip(1, Transport::Udp);
    let at2 = net.sip(2, Transport::Udp);
    assert_status(bob.register(at2, "sip:bob@example.p2p").await, 200);
    assert_status(carol.register(at1, "sip:carol@example.p2p").await, 200);
    let bob_busy = bob.busy();
    let carol_busy = carol.busy();
    let alice = Sip::new().await;

    // A MESSAGE over the overlay link is not an INVITE: nothing is noted.
    alice
        .send(at1, alice.message("sip:bob@example.p2p", "hops-message"))
        .await;
    assert_status(alice.final_response("hops-message").await, 200);
    assert_eq!(caller_node.invite_hops("hops-message"), None);

    // Alice at node 1 calls Bob at node 2: the nodes know each other, one link.
    assert_status(
        alice.call(at1, "sip:bob@example.p2p", "hops-bob").await,
        486,
    );
    let noted = noted_hops(caller_node, "hops-bob").await;
    let path = caller_node
        .overlay()
        .path_track(callee_node.node_id())
        .await
        .unwrap();
    assert_eq!(
        noted,
        InviteHops {
            node: callee_node.node_id(),
            hops: 1,
        }
    );
    assert_eq!(usize::from(noted.hops), path.len() - 1, "{path:?}");
    assert_eq!(
        callee_node.invite_hops("hops-bob"),
        None,
        "the callee's node"
    );

    // Alice calls Carol, at her own node: the INVITE never enters the overlay.
    assert_status(
        alice.call(at1, "sip:carol@example.p2p", "hops-carol").await,
        486,
    );
    assert_eq!(
        noted_hops(caller_node, "hops-carol").await,
        InviteHops {
            node: caller_node.node_id(),
            hops: 0,
        }
    );
    assert_eq!(bob_busy.await.unwrap(), 1);
    assert_eq!(carol_busy.await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_through_a_middle_node_counts_both_links() {
    overlay::logs();
    let dir = tempfile::tempdir().unwrap();
    let middle = Node::start(quiet(overlay::config(
        &dir.path().join("middle"),
        Vec::new(),
    )))
    .await
    .unwrap();
    let bootstrap: Vec<Multiaddr> = middle.overlay().listen_addrs().await.unwrap();
    // The callee's node takes one connection only, the one to the middle node: the caller's
    // node cannot reach it directly. Its user's AOR is self-certifying, which a lookup reads
    // without a majority of the replica set (the callee's node is one of three, unreachable
    // from the caller's).
    let callee_dir = dir.path().join("callee");
    std::fs::create_dir_all(&callee_dir).unwrap();
    let bob_aor = UserKey::load_or_create(&callee_dir)
        .unwrap()
        .self_certifying_aor();
    let mut config = quiet(overlay::config(&callee_dir, bootstrap.clone()));
    config.overlay.network = config.overlay.network.clone().with_connection_limits(1, 1);
    let callee_node = Node::start(config).await.unwrap();
    let caller_node = Node::start(quiet(overlay::config(
        &dir.path().join("caller"),
        bootstrap,
    )))
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while middle
        .overlay()
        .network()
        .routing_table()
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the middle node knows both others"
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(2), caller_node.overlay().bootstrap()).await;
    }

    let bob = Sip::new().await;
    let at_callee = callee_node.sip_addr(Transport::Udp).unwrap();
    assert_status(bob.register(at_callee, &bob_aor).await, 200);
    let bob_busy = bob.busy();
    let alice = Sip::new().await;
    let at_caller = caller_node.sip_addr(Transport::Udp).unwrap();
    assert_status(alice.call(at_caller, &bob_aor, "hops-two").await, 486);
    assert_eq!(bob_busy.await.unwrap(), 1);

    let noted = noted_hops(&caller_node, "hops-two").await;
    assert_eq!(
        noted,
        InviteHops {
            node: callee_node.node_id(),
            hops: 2,
        }
    );
    assert!(middle.overlay().forwarded() >= 1, "through the middle node");
    let path = caller_node
        .overlay()
        .path_track(callee_node.node_id())
        .await
        .unwrap();
    assert_eq!(
        path,
        [
            caller_node.node_id(),
            middle.node_id(),
            callee_node.node_id()
        ]
    );
    assert_eq!(usize::from(noted.hops), path.len() - 1);
}

/// `config` without AutoNAT probes and relays during a test: their dial-backs and
/// reservations open and close connections, and a node that takes one connection only would
/// lose the one to the middle node to them.
fn quiet(mut config: p2p::Config) -> p2p::Config {
    let hour = Duration::from_secs(3600);
    config.overlay.network = config
        .overlay
        .network
        .clone()
        .with_relay(Relay::Off)
        .with_relay_reservations(0)
        .with_autonat(hour, hour);
    config
}

/// What `node` noted for the INVITE of `call_id`: the caller's final response can arrive
/// just before the node has read the answer to the Route that carried the INVITE.
async fn noted_hops(node: &Node, call_id: &str) -> InviteHops {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(hops) = node.invite_hops(call_id) {
                return hops;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no hops noted for {call_id} within {WAIT:?}"))
}

/// A UDP SIP endpoint on 127.0.0.1: a caller or a device.
struct Sip {
    socket: UdpSocket,
}

impl Sip {
    async fn new() -> Sip {
        Sip {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    async fn send(&self, to: SocketAddr, text: String) {
        self.socket.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// The next message before `deadline`.
    async fn next(&self, deadline: Instant) -> Option<(Message, SocketAddr)> {
        udp::next_message(&self.socket, deadline).await
    }

    /// The final response to the request of `call_id`.
    async fn final_response(&self, call_id: &str) -> Response {
        let deadline = Instant::now() + WAIT;
        loop {
            let Some((message, _)) = self.next(deadline).await else {
                panic!("no final answer to {call_id} within {WAIT:?}");
            };
            let Message::Response(response) = message else {
                continue;
            };
            let id = response.headers().typed::<CallId>().and_then(Result::ok);
            if id.is_some_and(|id| id.0 == call_id) && !response.status().is_provisional() {
                return response;
            }
        }
    }

    /// Registers this endpoint's address under `aor` at the node `to`; gives the answer.
    async fn register(&self, to: SocketAddr, aor: &str) -> Response {
        let port = self.port();
        let call_id = format!("reg-{port}");
        let text = format!(
            "REGISTER sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <{aor}>;tag=r{port}\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:device@127.0.0.1:{port}>\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        self.send(to, text).await;
        self.final_response(&call_id).await
    }

    /// INVITEs `uri` through the node at `to`; gives the final response.
    async fn call(&self, to: SocketAddr, uri: &str, call_id: &str) -> Response {
        let port = self.port();
        let text = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <sip:alice@example.p2p>;tag=c-{call_id}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        self.send(to, text).await;
        self.final_response(call_id).await
    }

    /// A MESSAGE to `uri`.
    fn message(&self, uri: &str, call_id: &str) -> String {
        let port = self.port();
        format!(
            "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <sip:alice@example.p2p>;tag=m-{call_id}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        )
    }

    /// Plays a device that answers any request 200 until an INVITE comes, which it answers
    /// 486 Busy Here; gives how many INVITEs came (0 when none came within [`WAIT`]).
    fn busy(self) -> JoinHandle<usize> {
        tokio::spawn(async move {
            let mut invites = 0;
            while let Some((message, from)) = self.next(Instant::now() + WAIT).await {
                let Message::Request(request) = message else {
                    continue;
                };
                let answer = match request.method() {
                    Method::Ack => continue,
                    Method::Invite => {
                        invites += 1;
                        reply(&request, StatusCode::new(486).unwrap(), "Busy Here")
                    }
                    _ => reply(&request, StatusCode::OK, "OK"),
                };
                self.socket.send_to(&answer.to_bytes(), from).await.unwrap();
                if invites > 0 {
                    return invites;
                }
            }
            invites
        })
    }
}

/// Fails unless `response` has `status`, showing the response.
fn assert_status(response: Response, status: u16) {
    assert_eq!(response.status().as_u16(), status, "{response}");
}

/// A response to `request`, with a To tag.
fn reply(request: &Request, status: StatusCode, reason: &str) -> Response {
    let mut response = Response::for_request(request, status, reason, Some("dev"));
    response.headers_mut().push(HeaderName::ContentLength, "0");
    response
}
