//! A node under a flood from one peer still serves the others (issue 13, item 4).
//!
//! One overlay node on 127.0.0.1; four well-behaved peers each send a Ping every 10 ms and
//! wait for its answer; one flooding peer keeps 96 requests in flight that each hold a slot
//! of the node for seconds: Route messages towards an accomplice that never answers, so the
//! node forwards each and waits for its request timeout. Three
//! runs of a few seconds each: no flood, a flood against the per-peer limits (the default),
//! and a flood with the per-peer limits turned off (only the global ones). For each, the
//! well-behaved peers' requests served, refused and failed, and their latency; and what the
//! flooder got. Prints its figures and stops by itself.
//!
//! `cargo bench -p p2psip-overlay --bench flood`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use p2psip_overlay::error::ErrorCode;
use p2psip_overlay::message::{
    Body, DEFAULT_MAX_MESSAGE, Envelope, Request, Response, decode, encode,
};
use p2psip_overlay::network::{self, Network};
use p2psip_overlay::node::{self, Overlay};
use p2psip_overlay::rng::Rng;

const RUN: Duration = Duration::from_secs(4);
const GOOD_PEERS: usize = 4;
const GOOD_INTERVAL: Duration = Duration::from_millis(10);
/// Under libp2p request-response's 100 streams per connection.
const FLOOD_IN_FLIGHT: usize = 96;
/// The node's global bound on inbound requests waiting (its per-peer one is the default, 32).
const NODE_MAX_PENDING: usize = 64;

fn net_config() -> network::Config {
    network::Config::default()
        .with_overlay("flood-bench")
        .with_listen(["/ip4/127.0.0.1/udp/0/quic-v1".parse::<Multiaddr>().unwrap()])
        .with_mdns(false)
        .with_max_pending(4 * FLOOD_IN_FLIGHT)
}

#[derive(Default)]
struct Tally {
    served: u64,
    busy: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

/// One Ping from `net` to `to`: Pong, an error code, or a failure.
async fn ping(net: &Network, to: PeerId, rng: &Rng) -> Result<Response, String> {
    send(net, to, Envelope::request(rng.u64(), None, Request::Ping)).await
}

/// One Route message from `key`'s `net` through `to` towards `towards`.
async fn route(
    net: &Network,
    key: &Keypair,
    to: PeerId,
    towards: PeerId,
    rng: &Rng,
) -> Result<Response, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let request = Request::route(key, &towards, rng.bytes(), now, b"flood".to_vec()).unwrap();
    send(
        net,
        to,
        Envelope::request(rng.u64(), Some(&towards), request),
    )
    .await
}

async fn send(net: &Network, to: PeerId, mut envelope: Envelope) -> Result<Response, String> {
    envelope.hop(&net.local_peer_id()).unwrap();
    let frame = net
        .request(to, encode(&envelope))
        .await
        .map_err(|e| e.to_string())?;
    match decode(&frame, DEFAULT_MAX_MESSAGE)
        .map_err(|e| e.to_string())?
        .body
    {
        Body::Response(response) => Ok(response),
        Body::Request(_) => Err("a request came back".into()),
    }
}

fn count(tally: &mut Tally, answer: Result<Response, String>, took: Duration) {
    match answer {
        Ok(Response::Pong) => {
            tally.served += 1;
            tally.latencies.push(took);
        }
        Ok(Response::Error { .. }) => tally.busy += 1,
        _ => tally.failed += 1,
    }
}

async fn run(name: &str, flood: bool, peer_limits: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut network = net_config().with_max_pending(NODE_MAX_PENDING);
    if !peer_limits {
        network = network.with_peer_limits(1 << 20, 1 << 20, 1 << 20);
    }
    let node = Overlay::start(node::Config::new(dir.path()).with_network(network))
        .await
        .unwrap();
    let addr = node.listen_addrs().await.unwrap().remove(0);
    let target = node.node_id();
    let stop = Arc::new(AtomicBool::new(false));

    let flood_sent = Arc::new(AtomicU64::new(0));
    let flood_served = Arc::new(AtomicU64::new(0));
    let flood_busy = Arc::new(AtomicU64::new(0));
    let flood_failed = Arc::new(AtomicU64::new(0));
    let flooder = if flood {
        // The accomplice: takes every request and never answers.
        let (sink, mut sink_events) = Network::start(
            Keypair::generate_ed25519(),
            net_config().with_peer_limits(1 << 20, 1 << 20, 1 << 20),
        )
        .await
        .unwrap();
        sink.dial(addr.clone()).await.unwrap();
        let sink_id = sink.local_peer_id();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(event) = sink_events.recv().await {
                if let network::Event::Request { responder, .. } = event {
                    held.push(responder);
                }
            }
        });
        let key = Keypair::generate_ed25519();
        let (net, _events) = Network::start(key.clone(), net_config()).await.unwrap();
        net.dial(addr.clone()).await.unwrap();
        let (busy, failed) = (flood_busy.clone(), flood_failed.clone());
        let (stop, sent, served) = (stop.clone(), flood_sent.clone(), flood_served.clone());
        let flood_net = net.clone();
        let task = tokio::spawn(async move {
            let rng = Rng::os();
            let mut in_flight = FuturesUnordered::new();
            while !stop.load(Ordering::Relaxed) {
                while in_flight.len() < FLOOD_IN_FLIGHT {
                    sent.fetch_add(1, Ordering::Relaxed);
                    in_flight.push(route(&flood_net, &key, target, sink_id, &rng));
                }
                match in_flight.next().await {
                    Some(Ok(Response::Error {
                        code: ErrorCode::Busy,
                        ..
                    })) => {
                        busy.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            println!("first flood failure: {other:?}");
                        }
                    }
                }
            }
        });
        Some((net, task, sink))
    } else {
        None
    };

    let mut good = Vec::new();
    for _ in 0..GOOD_PEERS {
        let (net, _events) = Network::start(Keypair::generate_ed25519(), net_config())
            .await
            .unwrap();
        net.dial(addr.clone()).await.unwrap();
        let stop = stop.clone();
        good.push(tokio::spawn(async move {
            let rng = Rng::os();
            let mut tally = Tally::default();
            let mut tick = tokio::time::interval(GOOD_INTERVAL);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let started = Instant::now();
                let answer = tokio::time::timeout(Duration::from_secs(5), ping(&net, target, &rng))
                    .await
                    .unwrap_or_else(|_| Err("timeout".into()));
                count(&mut tally, answer, started.elapsed());
            }
            let _ = net.shutdown().await;
            tally
        }));
    }

    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for peer in good {
        let tally = peer.await.unwrap();
        total.served += tally.served;
        total.busy += tally.busy;
        total.failed += tally.failed;
        total.latencies.extend(tally.latencies);
    }
    if let Some((net, task, sink)) = flooder {
        task.abort();
        let _ = net.shutdown().await;
        let _ = sink.shutdown().await;
    }
    total.latencies.sort();
    let pct = |p: usize| {
        total
            .latencies
            .get((total.latencies.len() * p / 100).min(total.latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let refused = node.refused();
    println!(
        "{name:<34} good peers: served {:>5}, refused {:>4}, failed {:>4}; latency p50 {:>8.2?} \
         p99 {:>8.2?} max {:>8.2?} | flooder: sent {:>6}, answered {:>5}, refused busy {:>6}, \
         failed {:>5}; node refused {:>6}",
        total.served,
        total.busy,
        total.failed,
        pct(50),
        pct(99),
        total.latencies.last().copied().unwrap_or_default(),
        flood_sent.load(Ordering::Relaxed),
        flood_served.load(Ordering::Relaxed),
        flood_busy.load(Ordering::Relaxed),
        flood_failed.load(Ordering::Relaxed),
        refused.busy,
    );
    node.kill().await;
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args: a quick smoke run
    // is not worth minutes of flooding, so only `cargo bench` (which passes --bench) runs it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("flood bench: run with `cargo bench -p p2psip-overlay --bench flood`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{GOOD_PEERS} well-behaved peers (a Ping every {GOOD_INTERVAL:?}), one flooder \
             ({FLOOD_IN_FLIGHT} requests in flight), node: {NODE_MAX_PENDING} inbound slots, \
             {RUN:?} per run, 127.0.0.1, QUIC"
        );
        println!("(the flooder's requests: Route messages that hold a slot of the node for its request timeout)");
        run("no flood", false, true).await;
        run("flood, per-peer limits (default)", true, true).await;
        run("flood, global limits only", true, false).await;
    });
}
