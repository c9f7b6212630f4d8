//! P2PSIP nodes in this process on 127.0.0.1: node 0 first, the others bootstrapping from it;
//! [`Nodes::settle`] waits until every routing table knows every other node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use p2psip_node::p2p::{self, Node};
use p2psip_overlay::{network, node as overlay_node};

/// Logs to stderr when `RUST_LOG` is set.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Nodes on loopback, with their data directories.
pub struct Nodes {
    /// The nodes, node 0 first.
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// The configuration of a test node with its data in `dir`, on loopback, joining through
/// `bootstrap` (none: a node alone).
pub fn config(dir: &std::path::Path, bootstrap: Vec<Multiaddr>) -> p2p::Config {
    let listen = Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Udp(0))
        .with(Protocol::QuicV1);
    let network = network::Config::default()
        .with_overlay("p2psip-test")
        .with_listen([listen])
        .with_bootstrap(bootstrap)
        .with_mdns(false);
    let mut overlay = overlay_node::Config::new(dir).with_network(network);
    overlay.repair_delay = Duration::from_millis(200);
    overlay.lookup_timeout = Duration::from_millis(500);
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    p2p::Config::new(dir, loopback).with_overlay(overlay)
}

impl Nodes {
    /// Starts `n` nodes and waits until they know each other.
    pub async fn start(n: usize) -> Nodes {
        Nodes::start_with(n, |_, _| {}).await
    }

    /// Starts `n` nodes, each configured by `tweak(i, &mut config)` first (its data
    /// directory is `config.overlay.data_dir`), and waits until they know each other.
    pub async fn start_with(n: usize, tweak: impl Fn(usize, &mut p2p::Config)) -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        let configure = |i: usize, bootstrap: Vec<Multiaddr>| {
            let mut config = config(&dir.path().join(format!("node-{i}")), bootstrap);
            tweak(i, &mut config);
            config
        };
        let first = Node::start(configure(0, Vec::new())).await.unwrap();
        let bootstrap = first.overlay().listen_addrs().await.unwrap();
        let others: Vec<_> = (1..n)
            .map(|i| Node::start(configure(i, bootstrap.clone())))
            .collect();
        let mut nodes = vec![first];
        for node in futures::future::join_all(others).await {
            nodes.push(node.unwrap());
        }
        let nodes = Nodes { nodes, _dir: dir };
        nodes.settle().await;
        nodes
    }

    /// Waits until every node's routing table holds every other node.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let want = self.nodes.len() - 1;
        loop {
            let mut lagging = 0;
            for node in &self.nodes {
                let table = node.overlay().network().routing_table().await.unwrap();
                if table.len() < want.min(20) {
                    lagging += 1;
                }
            }
            if lagging == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{lagging} nodes have not settled"
            );
            for node in &self.nodes {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), node.overlay().bootstrap()).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The SIP address of node `i` for `transport`.
    pub fn sip(&self, i: usize, transport: p2psip_sip::Transport) -> SocketAddr {
        self.nodes[i].sip_addr(transport).unwrap()
    }
}
