//! A node remembers the peers it met (their identify listen addresses, in its sled peer
//! cache) and, restarted from its data directory with no bootstrap address, rejoins through
//! them.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use libp2p::Multiaddr;
use p2psip_overlay::network;
use p2psip_overlay::node::{self, Overlay};

fn config(dir: &std::path::Path, bootstrap: Vec<Multiaddr>) -> node::Config {
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    let network = network::Config::default()
        .with_overlay("rejoin-test")
        .with_listen([quic])
        .with_bootstrap(bootstrap)
        .with_mdns(false);
    node::Config::new(dir).with_network(network)
}

/// Polls `condition` until it holds, for at most 10 s.
async fn eventually(mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_through_peers_it_learned() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Overlay::start(config(dirs[0].path(), vec![]))
        .await
        .unwrap();
    let a_addr = a.listen_addrs().await.unwrap().remove(0);
    let b = Overlay::start(config(dirs[1].path(), vec![a_addr.clone()]))
        .await
        .unwrap();
    let c = Overlay::start(config(dirs[2].path(), vec![a_addr]))
        .await
        .unwrap();
    // C learns B through the overlay (kad, identify), not from its configuration.
    let b_id = b.node_id();
    c.bootstrap().await.ok();
    eventually(async || {
        c.local_store()
            .peers()
            .unwrap()
            .iter()
            .any(|(p, addrs)| *p == b_id && !addrs.is_empty())
    })
    .await;
    let c_id = c.node_id();
    c.kill().await;
    drop(c); // the last handle: the store closes
    a.kill().await;
    // No bootstrap address, and the bootstrap node is gone: only what C remembered of B helps.
    let c = Overlay::start(config(dirs[2].path(), vec![]))
        .await
        .unwrap();
    assert_eq!(c.node_id(), c_id, "same key, same Node-ID");
    eventually(async || c.network().routing_table().await.unwrap().contains(&b_id)).await;
}
