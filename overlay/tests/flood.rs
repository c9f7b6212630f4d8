//! One peer cannot starve a node (issue 13, item 4, network side), shown on real sockets
//! (127.0.0.1, port 0, mDNS off):
//!
//! - a peer that holds many requests open cannot take every inbound slot: the others are
//!   still served, and its surplus is refused with an answer that says why
//!   (`a_peer_that_floods_cannot_take_every_slot`);
//! - a peer that sends faster than its rate is refused beyond its burst
//!   (`a_peer_over_its_rate_is_refused`);
//! - a full event queue never loses a peer's disconnect
//!   (`a_full_event_queue_loses_no_disconnect`);
//! - an overlay node answers such a refusal with the error code `Busy` and a sentence, and
//!   counts it (`an_overlay_node_answers_a_refused_request_with_busy_and_counts_it`).

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use p2psip_overlay::network::{Config, Error, Event, Events, Network, Refusal};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

fn config() -> Config {
    Config::default()
        .with_overlay("flood-test")
        .with_listen(["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()])
        .with_mdns(false)
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Refused requests are answered `busy:<reason>`.
fn refusal() -> Refusal {
    Arc::new(|_: &[u8], error: &Error| Some(format!("busy:{error}").into_bytes()))
}

async fn start(config: Config) -> (Network, Events, Multiaddr) {
    let (net, events) = Network::start_with_refusal(Keypair::generate_ed25519(), config, refusal())
        .await
        .unwrap();
    let addr = net.listen_addrs().await.unwrap()[0]
        .clone()
        .with_p2p(net.local_peer_id())
        .unwrap();
    (net, events, addr)
}

/// Answers every request `re:<request>` at once, except those of `hold`, which it keeps
/// unanswered (counted in `held`).
fn serve(mut events: Events, hold: Option<PeerId>, held: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(event) = events.recv().await {
            if let Event::Request {
                peer,
                frame,
                responder,
            } = event
            {
                if Some(peer) == hold {
                    kept.push(responder);
                    held.fetch_add(1, Ordering::SeqCst);
                } else {
                    let _ = responder.respond([b"re:".as_slice(), &frame].concat());
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_cannot_take_every_slot() {
    // Eight slots in all, four per peer.
    let (flooder, _f_events, _) = start(config()).await;
    let (node, events, node_addr) = start(
        config()
            .with_max_pending(8)
            .with_peer_limits(4, 10_000, 10_000),
    )
    .await;
    let held = Arc::new(AtomicUsize::new(0));
    serve(events, Some(flooder.local_peer_id()), held.clone());
    within("dial", flooder.dial(node_addr.clone()))
        .await
        .unwrap();

    // The flooder sends 20 requests at once and never gets them answered.
    let (tx, mut answers) = tokio::sync::mpsc::channel(32);
    for i in 0..20u8 {
        let (flooder, tx, to) = (flooder.clone(), tx.clone(), node.local_peer_id());
        tokio::spawn(async move {
            let _ = tx.send(flooder.request(to, vec![i]).await).await;
        });
    }
    let mut refused = Vec::new();
    within("the node to take or refuse all 20", async {
        while refused.len() + held.load(Ordering::SeqCst) < 20 {
            let answer = answers.recv().await.unwrap().unwrap();
            refused.push(String::from_utf8(answer).unwrap());
        }
    })
    .await;
    assert_eq!(
        held.load(Ordering::SeqCst),
        4,
        "four held, the per-peer limit"
    );
    assert_eq!(refused.len(), 16);
    assert!(
        refused
            .iter()
            .all(|answer| answer.starts_with("busy:") && answer.contains("requests waiting")),
        "{refused:?}"
    );
    assert_eq!(node.refused_requests(), 16);

    // Meanwhile a well-behaved peer is served.
    let (good, good_events, _) = start(config()).await;
    serve(good_events, None, Arc::default());
    within("dial", good.dial(node_addr)).await.unwrap();
    for i in 0..4u8 {
        let answer = within("an answer", good.request(node.local_peer_id(), vec![i]))
            .await
            .unwrap();
        assert_eq!(answer, [b"re:".as_slice(), &[i]].concat());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_rate_is_refused() {
    let (flooder, _f_events, _) = start(config()).await;
    // Bursts of 5, then one request a second.
    let (node, events, node_addr) = start(config().with_peer_limits(100, 1, 5)).await;
    serve(events, None, Arc::default());
    within("dial", flooder.dial(node_addr.clone()))
        .await
        .unwrap();
    let to = node.local_peer_id();
    let answers = within(
        "20 answers",
        futures::future::join_all((0..20u8).map(|i| flooder.request(to, vec![i]))),
    )
    .await;
    let answers: Vec<String> = answers
        .into_iter()
        .map(|answer| String::from_utf8(answer.unwrap()).unwrap())
        .collect();
    let served = answers.iter().filter(|a| a.starts_with("re:")).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.starts_with("busy:")).collect();
    assert!((5..=7).contains(&served), "{answers:?}");
    assert_eq!(served + busy.len(), 20);
    assert!(busy.iter().all(|a| a.contains("per second")), "{busy:?}");
    assert_eq!(node.refused_requests() as usize, busy.len());

    // Another peer has a bucket of its own.
    let (good, _g_events, _) = start(config()).await;
    within("dial", good.dial(node_addr)).await.unwrap();
    let answer = within("an answer", good.request(to, b"hi".to_vec()))
        .await
        .unwrap();
    assert_eq!(answer, b"re:hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_queue_loses_no_disconnect() {
    // A queue of one event, full from the start (the listen address), never read until the
    // end.
    let (node, mut events, node_addr) = start(config().with_event_buffer(1)).await;
    let mut peers = Vec::new();
    for _ in 0..4 {
        let (peer, _events, _) = start(config()).await;
        within("dial", peer.dial(node_addr.clone())).await.unwrap();
        peers.push(peer);
    }
    let ids: HashSet<PeerId> = peers.iter().map(Network::local_peer_id).collect();
    for peer in &peers {
        peer.shutdown().await.unwrap();
    }
    within("the node to see every peer go", async {
        while !node.connected_peers().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut gone = HashSet::new();
    within("every disconnect", async {
        while gone != ids {
            if let Event::PeerDisconnected { peer, .. } = events.recv().await.unwrap() {
                gone.insert(peer);
            }
        }
    })
    .await;
    assert_eq!(gone, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlay_node_answers_a_refused_request_with_busy_and_counts_it() {
    use p2psip_overlay::error::ErrorCode;
    use p2psip_overlay::message::{Body, DEFAULT_MAX_MESSAGE, Envelope, Request, Response};
    use p2psip_overlay::node::{self, Overlay};

    let dir = tempfile::tempdir().unwrap();
    // Bursts of 2, then one request a second.
    let node = Overlay::start(
        node::Config::new(dir.path()).with_network(config().with_peer_limits(100, 1, 2)),
    )
    .await
    .unwrap();
    let addr = node.listen_addrs().await.unwrap().remove(0);
    let (flooder, _events, _) = start(config()).await;
    within("dial", flooder.dial(addr)).await.unwrap();
    let pings = (0..6u64).map(|transaction| {
        let mut envelope = Envelope::request(transaction, None, Request::Ping);
        envelope.hop(&flooder.local_peer_id()).unwrap();
        flooder.request(node.node_id(), p2psip_overlay::message::encode(&envelope))
    });
    let answers = within("6 answers", futures::future::join_all(pings)).await;
    let mut busy = 0;
    for answer in answers {
        let reply = p2psip_overlay::message::decode(&answer.unwrap(), DEFAULT_MAX_MESSAGE).unwrap();
        match reply.body {
            Body::Response(Response::Pong) => {}
            Body::Response(Response::Error { code, message }) => {
                assert_eq!(code, ErrorCode::Busy, "{message}");
                assert!(message.contains("per second"), "{message}");
                busy += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(busy >= 3, "{busy} refused");
    assert_eq!(node.refused().busy, busy);
}
