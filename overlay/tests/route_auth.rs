//! Route messages are authenticated end to end (issue 13, item 2), shown by attacks on real
//! sockets (127.0.0.1, port 0, mDNS off): the attacker is a bare [`Network`] of the same
//! overlay, which speaks the reload protocol and sends whatever frames it likes.
//!
//! - a forged origin is refused (`a_forged_origin_is_refused`);
//! - a payload rewritten on the way is refused, and a replayed or stale message too
//!   (`a_rewritten_payload_a_replay_and_a_stale_message_are_refused`);
//! - a middle hop that answers `Routed` itself is caught by the origin
//!   (`a_faked_delivery_by_a_middle_hop_is_detected`);
//! - a genuine route over two hops still works (`a_genuine_two_hop_route_is_delivered`).

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use p2psip_overlay::auth::{self, RouteId};
use p2psip_overlay::error::ErrorCode;
use p2psip_overlay::message::{
    Body, DEFAULT_MAX_MESSAGE, Envelope, Request, Response, decode, encode,
};
use p2psip_overlay::network::{self, Event, Network};
use p2psip_overlay::node::{self, Overlay};

const OVERLAY: &str = "route-auth";
const WAIT: Duration = Duration::from_secs(15);

fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

fn net_config(bootstrap: Vec<Multiaddr>) -> network::Config {
    network::Config::default()
        .with_overlay(OVERLAY)
        .with_listen([quic()])
        .with_bootstrap(bootstrap)
        .with_mdns(false)
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a destination's handler was given: (origin, payload).
type Delivered = Arc<Mutex<Vec<(PeerId, Vec<u8>)>>>;

/// An overlay node whose Route handler records what it gets and answers `ok:<payload>`.
async fn destination(
    dir: &std::path::Path,
    network: network::Config,
) -> (Overlay, Multiaddr, Delivered) {
    let overlay = Overlay::start(node::Config::new(dir).with_network(network))
        .await
        .unwrap();
    let delivered: Delivered = Arc::default();
    let log = delivered.clone();
    overlay.set_route_handler(Box::new(move |origin, payload| {
        log.lock().unwrap().push((origin, payload.clone()));
        Ok([b"ok:".as_slice(), &payload].concat())
    }));
    let addr = overlay.listen_addrs().await.unwrap().remove(0);
    (overlay, addr, delivered)
}

/// A bare network of the overlay: the attacker.
async fn attacker(bootstrap: Vec<Multiaddr>) -> (Keypair, Network, network::Events, Multiaddr) {
    let key = Keypair::generate_ed25519();
    let (net, events) = Network::start(key.clone(), net_config(bootstrap))
        .await
        .unwrap();
    let addr = net.listen_addrs().await.unwrap()[0]
        .clone()
        .with_p2p(net.local_peer_id())
        .unwrap();
    (key, net, events, addr)
}

/// Sends `envelope` from `net` to `to` and gives the response.
async fn send(net: &Network, to: PeerId, envelope: &Envelope) -> Response {
    let frame = within("an answer", net.request(to, encode(envelope)))
        .await
        .unwrap();
    match decode(&frame, DEFAULT_MAX_MESSAGE).unwrap().body {
        Body::Response(response) => response,
        Body::Request(request) => panic!("a request came back: {request:?}"),
    }
}

fn code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A Route envelope as it leaves `via` (each entry a hop, in order).
fn routed(request: Request, destination: PeerId, via: &[PeerId]) -> Envelope {
    let mut envelope = Envelope::request(rand_u64(), Some(&destination), request);
    for hop in via {
        envelope.hop(hop).unwrap();
    }
    envelope
}

fn rand_u64() -> u64 {
    p2psip_overlay::rng::Rng::os().u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_origin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d, d_addr, delivered) = destination(dir.path(), net_config(vec![])).await;
    let (m_key, m, _events, _) = attacker(vec![]).await;
    within("dial", m.dial(d_addr)).await.unwrap();
    let m_id = m.local_peer_id();
    let victim = Keypair::generate_ed25519().public().to_peer_id();
    let now = now_ms();

    // 1. The attacker claims to be the victim, sending straight: its Via list names the
    //    victim, but the victim is not the libp2p peer that sent it.
    let forged = Request::route(&m_key, &d.node_id(), [1; 16], now, b"INVITE".to_vec()).unwrap();
    let Request::Route {
        destination,
        payload,
        nonce,
        timestamp_ms,
        ..
    } = forged
    else {
        unreachable!()
    };
    let id = RouteId {
        origin: victim,
        destination: d.node_id(),
        nonce,
        timestamp_ms,
    };
    let as_victim = Request::Route {
        destination,
        payload: payload.clone(),
        origin: victim.to_bytes(),
        nonce,
        timestamp_ms,
        // Signed with the attacker's key: the only key it has.
        signature: auth::sign_request(&m_key, &id, &payload).unwrap(),
    };
    let answer = send(
        &m,
        d.node_id(),
        &routed(as_victim.clone(), d.node_id(), &[victim]),
    )
    .await;
    assert_eq!(code(&answer), Some(ErrorCode::Forbidden), "{answer:?}");
    assert_eq!(d.refused().wrong_sender, 1);

    // 2. The same, with itself as a middle hop: the origin's signature does not verify.
    let answer = send(
        &m,
        d.node_id(),
        &routed(as_victim, d.node_id(), &[victim, m_id]),
    )
    .await;
    assert_eq!(code(&answer), Some(ErrorCode::Forbidden), "{answer:?}");
    let Response::Error { message, .. } = &answer else {
        unreachable!()
    };
    assert!(message.contains("signature does not verify"), "{message}");
    assert_eq!(d.refused().bad_signature, 1);

    assert!(
        delivered.lock().unwrap().is_empty(),
        "nothing reached the handler"
    );
    // In its own name the attacker is heard, and named as itself.
    let own = Request::route(&m_key, &d.node_id(), [2; 16], now, b"hi".to_vec()).unwrap();
    let answer = send(&m, d.node_id(), &routed(own, d.node_id(), &[m_id])).await;
    assert!(matches!(answer, Response::Routed { .. }), "{answer:?}");
    assert_eq!(delivered.lock().unwrap()[0].0, m_id);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_payload_a_replay_and_a_stale_message_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d, d_addr, delivered) = destination(dir.path(), net_config(vec![])).await;
    let (_, m, _events, _) = attacker(vec![]).await;
    within("dial", m.dial(d_addr)).await.unwrap();
    let m_id = m.local_peer_id();
    // The genuine origin signed an INVITE; the attacker is the middle hop that carries it.
    let alice = Keypair::generate_ed25519();
    let alice_id = alice.public().to_peer_id();
    let genuine = Request::route(
        &alice,
        &d.node_id(),
        [9; 16],
        now_ms(),
        b"INVITE Contact: <sip:alice@10.0.0.1>".to_vec(),
    )
    .unwrap();

    // Rewritten on the way: refused, nothing delivered.
    let mut rewritten = genuine.clone();
    if let Request::Route { payload, .. } = &mut rewritten {
        *payload = b"INVITE Contact: <sip:mallory@10.6.6.6>".to_vec();
    }
    let answer = send(
        &m,
        d.node_id(),
        &routed(rewritten, d.node_id(), &[alice_id, m_id]),
    )
    .await;
    assert_eq!(code(&answer), Some(ErrorCode::Forbidden), "{answer:?}");
    assert_eq!(d.refused().bad_signature, 1);
    assert!(delivered.lock().unwrap().is_empty());

    // Carried unchanged: delivered, from Alice, and the answer is signed by the destination.
    let envelope = routed(genuine.clone(), d.node_id(), &[alice_id, m_id]);
    let answer = send(&m, d.node_id(), &envelope).await;
    let Response::Routed { payload, signature } = answer else {
        panic!("not delivered: {answer:?}");
    };
    let Request::Route {
        payload: request,
        nonce,
        timestamp_ms,
        ..
    } = &genuine
    else {
        unreachable!()
    };
    let id = RouteId {
        origin: alice_id,
        destination: d.node_id(),
        nonce: *nonce,
        timestamp_ms: *timestamp_ms,
    };
    auth::verify_answer(&id, request, &payload, &signature).unwrap();
    assert_eq!(delivered.lock().unwrap().len(), 1);
    assert_eq!(delivered.lock().unwrap()[0].0, alice_id);

    // Replayed (even under a new transaction id): refused.
    let replay = routed(genuine, d.node_id(), &[alice_id, m_id]);
    let answer = send(&m, d.node_id(), &replay).await;
    assert_eq!(code(&answer), Some(ErrorCode::Replayed), "{answer:?}");
    assert_eq!(d.refused().replayed, 1);

    // Signed ten minutes ago (a capture kept for later): stale.
    let old = Request::route(
        &alice,
        &d.node_id(),
        [10; 16],
        now_ms() - 600_000,
        b"x".into(),
    )
    .unwrap();
    let answer = send(
        &m,
        d.node_id(),
        &routed(old, d.node_id(), &[alice_id, m_id]),
    )
    .await;
    assert_eq!(code(&answer), Some(ErrorCode::Stale), "{answer:?}");
    assert_eq!(d.refused().stale, 1);
    assert_eq!(delivered.lock().unwrap().len(), 1, "delivered once only");
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faked_delivery_by_a_middle_hop_is_detected() {
    // The attacker is the only peer the origin knows: every route goes through it, and it
    // answers Routed itself, signed with its own key, without forwarding anything.
    let (m_key, m, mut events, m_addr) = attacker(vec![]).await;
    let forwarded = Arc::new(Mutex::new(0));
    let seen = forwarded.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Event::Request {
                frame, responder, ..
            } = event
            else {
                continue;
            };
            let Ok(envelope) = decode(&frame, DEFAULT_MAX_MESSAGE) else {
                continue;
            };
            let answer = match &envelope.body {
                Body::Request(Request::Route {
                    destination,
                    payload,
                    origin,
                    nonce,
                    timestamp_ms,
                    ..
                }) => {
                    *seen.lock().unwrap() += 1;
                    let id = RouteId {
                        origin: PeerId::from_bytes(origin).unwrap(),
                        destination: PeerId::from_bytes(destination).unwrap(),
                        nonce: *nonce,
                        timestamp_ms: *timestamp_ms,
                    };
                    let fake = b"SIP/2.0 200 OK (from the attacker)".to_vec();
                    let signature = auth::sign_answer(&m_key, &id, payload, &fake).unwrap();
                    Response::Routed {
                        payload: fake,
                        signature,
                    }
                }
                _ => Response::Pong,
            };
            let _ = responder.respond(encode(&envelope.reply(answer)));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let a = Overlay::start(node::Config::new(dir.path()).with_network(net_config(vec![m_addr])))
        .await
        .unwrap();
    let bob = Keypair::generate_ed25519().public().to_peer_id();
    let result = within("the route", a.route(bob, b"INVITE".to_vec())).await;
    assert_eq!(
        *forwarded.lock().unwrap(),
        1,
        "the route went through the attacker"
    );
    let error = result.expect_err("a faked delivery must not be accepted");
    assert_eq!(error.code(), Some(ErrorCode::Forbidden), "{error}");
    assert!(
        error.to_string().contains("not signed by its destination"),
        "{error}"
    );
    assert_eq!(a.refused().forged_answers, 1);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_two_hop_route_is_delivered() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = Overlay::start(node::Config::new(dirs[0].path()).with_network(net_config(vec![])))
        .await
        .unwrap();
    let b_addr = b.listen_addrs().await.unwrap().remove(0);
    // The destination takes one connection only (to B): the origin cannot reach it directly.
    let (d, _, delivered) = destination(
        dirs[1].path(),
        net_config(vec![b_addr.clone()]).with_connection_limits(1, 1),
    )
    .await;
    let a =
        Overlay::start(node::Config::new(dirs[2].path()).with_network(net_config(vec![b_addr])))
            .await
            .unwrap();
    let (answer, hops) = within("the route", a.route(d.node_id(), b"INVITE".to_vec()))
        .await
        .unwrap();
    assert_eq!(answer, b"ok:INVITE");
    assert_eq!(hops, 2, "A then B");
    assert_eq!(b.forwarded(), 1);
    assert_eq!(
        delivered.lock().unwrap()[0],
        (a.node_id(), b"INVITE".to_vec())
    );
    assert_eq!(
        a.refused().total() + b.refused().total() + d.refused().total(),
        0
    );
}
