//! # p2psip-testnet: many nodes on one machine
//!
//! [`Testnet::start`] starts N P2PSIP nodes ([`Node`]: an [`Overlay`] node and its SIP side)
//! in this process, on 127.0.0.1 (overlay over QUIC, SIP over UDP and TCP, every port chosen
//! by the system, mDNS off), each with its own data directory under one temporary directory:
//! node 0 first, then the others, a few at a time, each bootstrapping from a few of the nodes
//! started before it (chosen by a fixed rule, so that N nodes are wired alike every time). The
//! nodes can then
//! be killed (abruptly), stopped (gracefully, handing their data over) and restarted from
//! their data directory (same Node-ID, same data). The multi-node integration tests are built
//! on it, and the `p2psip testnet` command.
//!
//! Waiting is always for a condition, with a deadline: [`Testnet::settle`] polls the routing
//! tables until each node knows enough peers.
//!
//! [`run`] is the scenario behind `p2psip testnet run` (users register, call each other,
//! nodes churn); [`report`] holds what it measured and the report it writes.
//!
//! [`lab`] is the network lab: hosts in Linux network namespaces behind real nftables NATs
//! (full cone, port-restricted, symmetric, CGNAT, dual stack), for real node and softphone
//! processes, with a NAT probe; it needs root.

pub mod lab;
pub mod report;
pub mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use libp2p::Multiaddr;
use p2psip_node::p2p::{self, Node};
use p2psip_overlay::network;
use p2psip_overlay::node::{self, Overlay};

/// How long [`Testnet::settle`] sleeps between two looks at the routing tables.
const POLL: Duration = Duration::from_millis(100);
/// How many nodes join at the same time.
const START_BATCH: usize = 16;
/// How many earlier nodes a joining node bootstraps from. Several, so that the first node
/// is not everyone's way in: with one, a testnet of hundreds of nodes stopped at node 0's
/// connection limit and never settled.
const BOOTSTRAP_PEERS: usize = 3;
/// Kademlia's bucket size: a routing table holds at least this many peers when it can.
const K: usize = 20;

/// How a testnet is set up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The overlay's name; testnets with different names never exchange a message.
    /// Default `testnet`.
    pub overlay: String,
    /// The replication factor of every node. Default 3.
    pub replicas: usize,
    /// Where the nodes' data directories go (`node-<i>` under it); default a temporary
    /// directory deleted with the testnet.
    pub base_dir: Option<PathBuf>,
    /// The request timeout of the nodes (overlay and network). Default 5 s.
    pub request_timeout: Duration,
    /// The periodic replication interval of the nodes. Default 10 s.
    pub replication_interval: Duration,
    /// How often the nodes delete expired entries. Default 10 s.
    pub sweep_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            overlay: "testnet".to_owned(),
            replicas: 3,
            base_dir: None,
            request_timeout: Duration::from_secs(5),
            replication_interval: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(10),
        }
    }
}

impl Options {
    /// Sets the overlay name.
    pub fn with_overlay(mut self, name: impl Into<String>) -> Options {
        self.overlay = name.into();
        self
    }

    /// Sets the replication factor.
    pub fn with_replicas(mut self, replicas: usize) -> Options {
        self.replicas = replicas;
        self
    }
}

/// N overlay nodes in this process.
#[derive(Debug)]
pub struct Testnet {
    options: Options,
    base: PathBuf,
    nodes: Vec<Option<Node>>,
    _temp: Option<tempfile::TempDir>,
}

impl Testnet {
    /// Starts `n` nodes: node 0 alone, then the others, each bootstrapping from up to
    /// `BOOTSTRAP_PEERS` nodes started before its batch.
    pub async fn start(n: usize, options: Options) -> Result<Testnet> {
        Testnet::start_with_progress(n, options, |_, _| {}).await
    }

    /// As [`Testnet::start`], calling `progress(started, n)` each time a node has started.
    pub async fn start_with_progress(
        n: usize,
        options: Options,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Testnet> {
        if n == 0 {
            bail!("a testnet needs at least one node");
        }
        let (temp, base) = match &options.base_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("p2psip-testnet-")
                    .tempdir()
                    .context("cannot create the testnet's temporary directory")?;
                let base = temp.path().to_path_buf();
                (Some(temp), base)
            }
        };
        let mut testnet = Testnet {
            options,
            base,
            nodes: Vec::with_capacity(n),
            _temp: temp,
        };
        let first = testnet.launch(0, Vec::new()).await?;
        testnet.nodes.push(Some(first));
        progress(1, n);
        // The listen addresses of the nodes started so far.
        let mut addrs = vec![testnet.bootstrap_addrs(0).await?];
        // The others join at once, a few at a time: each start mostly waits for its
        // Kademlia bootstrap.
        for batch in (1..n).collect::<Vec<_>>().chunks(START_BATCH) {
            let starts = batch.iter().map(|&i| {
                let bootstrap = bootstrap_peers(i, addrs.len())
                    .into_iter()
                    .flat_map(|j| addrs[j].iter().cloned())
                    .collect();
                testnet.launch(i, bootstrap)
            });
            let started = futures::future::join_all(starts).await;
            for node in started {
                testnet.nodes.push(Some(node?));
                progress(testnet.nodes.len(), n);
            }
            for &i in batch {
                addrs.push(testnet.bootstrap_addrs(i).await?);
            }
        }
        Ok(testnet)
    }

    /// How many nodes the testnet has (killed and stopped ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the testnet has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`, when it runs.
    pub fn node(&self, i: usize) -> Option<&Overlay> {
        self.peer(i).map(Node::overlay)
    }

    /// P2PSIP node `i` (its overlay node and its SIP side), when it runs.
    pub fn peer(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// The running nodes with their index.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Overlay)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| node.as_ref().map(|node| (i, node.overlay())))
    }

    /// The data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.base.join(format!("node-{i}"))
    }

    /// Waits until every running node's routing table holds at least `min(live - 1, k)`
    /// peers, re-running a Kademlia bootstrap on the nodes that lag now and then.
    pub async fn settle(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut round = 0u32;
        loop {
            let live = self.live().count();
            let want = live.saturating_sub(1).min(K);
            let mut lagging = Vec::new();
            for (i, node) in self.live() {
                let table = node.network().routing_table().await?;
                if table.len() < want {
                    lagging.push((i, table.len()));
                }
            }
            if lagging.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the testnet did not settle within {timeout:?}: (node, peers known) {lagging:?}, {want} wanted"
                );
            }
            round += 1;
            if round.is_multiple_of(10) {
                let bootstraps = lagging
                    .iter()
                    .filter_map(|&(i, _)| self.node(i))
                    .map(|node| tokio::time::timeout(Duration::from_secs(5), node.bootstrap()));
                futures::future::join_all(bootstraps).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills node `i` abruptly: no handover, its task aborted and its network closed.
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        let node = self.take(i)?;
        node.kill().await;
        Ok(())
    }

    /// Stops node `i` gracefully: it hands its data over, then stops.
    pub async fn stop(&mut self, i: usize) -> Result<()> {
        let node = self.take(i)?;
        node.leave().await.context("the node's handover failed")?;
        Ok(())
    }

    /// Starts node `i` again from its data directory (same Node-ID, same data), bootstrapping
    /// from a running node.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        if self.node(i).is_some() {
            bail!("node {i} is running");
        }
        let slot = self
            .nodes
            .get(i)
            .ok_or_else(|| anyhow!("there is no node {i}"))?;
        debug_assert!(slot.is_none());
        let bootstrap = match self.live().next() {
            Some((j, _)) => self.bootstrap_addrs(j).await?,
            None => Vec::new(),
        };
        // A killed node's last tasks may hold its store for a moment after it stopped.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let node = loop {
            match self.launch(i, bootstrap.clone()).await {
                Err(error)
                    if format!("{error:#}").contains("in use")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL).await;
                }
                result => break result?,
            }
        };
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Kills every running node.
    pub async fn shutdown(mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.kill().await;
        }
    }

    fn take(&mut self, i: usize) -> Result<Node> {
        self.nodes
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("node {i} is not running"))
    }

    async fn bootstrap_addrs(&self, i: usize) -> Result<Vec<Multiaddr>> {
        let node = self
            .node(i)
            .ok_or_else(|| anyhow!("node {i} is not running"))?;
        Ok(node.listen_addrs().await?)
    }

    async fn launch(&self, i: usize, bootstrap: Vec<Multiaddr>) -> Result<Node> {
        let overlay = node_config(&self.options, &self.data_dir(i), bootstrap);
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        // A testnet is a load lab: sipp and benchmarks send from one port far faster than a
        // softphone, so the per-client flood limits are off.
        let config = p2p::Config::new(self.data_dir(i), loopback)
            .with_overlay(overlay)
            .with_limits(p2psip_node::limit::Config::unlimited());
        Node::start(config)
            .await
            .with_context(|| format!("node {i} did not start"))
    }
}

/// Which of the `started` nodes before it node `i` bootstraps from: up to
/// [`BOOTSTRAP_PEERS`] distinct ones, drawn by [`run`]'s SplitMix64 seeded with `i` (the
/// same every run) from all of them, so the first nodes are not everyone's way in.
fn bootstrap_peers(i: usize, started: usize) -> Vec<usize> {
    let want = BOOTSTRAP_PEERS.min(started);
    let mut picked = Vec::with_capacity(want);
    let mut rng = run::Rng(i as u64);
    while picked.len() < want {
        let j = rng.below(started);
        if !picked.contains(&j) {
            picked.push(j);
        }
    }
    picked
}

/// The configuration of one testnet node.
fn node_config(options: &Options, dir: &Path, bootstrap: Vec<Multiaddr>) -> node::Config {
    let listen: Multiaddr = Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4([127, 0, 0, 1].into()))
        .with(libp2p::multiaddr::Protocol::Udp(0))
        .with(libp2p::multiaddr::Protocol::QuicV1);
    let network = network::Config::default()
        .with_overlay(options.overlay.clone())
        .with_listen([listen])
        .with_bootstrap(bootstrap)
        .with_mdns(false)
        .with_request_timeout(options.request_timeout)
        .with_query_timeout(Duration::from_secs(10));
    let mut config = node::Config::new(dir)
        .with_network(network)
        .with_replicas(options.replicas);
    config.request_timeout = options.request_timeout;
    config.replication_interval = options.replication_interval;
    config.sweep_interval = options.sweep_interval;
    config.repair_delay = Duration::from_millis(200);
    config.lookup_timeout = Duration::from_millis(500);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_nodes_bootstrap_from_distinct_earlier_nodes() {
        assert_eq!(bootstrap_peers(1, 1), vec![0]);
        for (i, started) in [(2, 2), (9, 9), (500, 496), (999, 993)] {
            let picked = bootstrap_peers(i, started);
            assert_eq!(picked.len(), BOOTSTRAP_PEERS.min(started));
            assert!(picked.iter().all(|&j| j < started), "{picked:?}");
            let mut distinct = picked.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), picked.len(), "{picked:?}");
        }
        // Spread: the nodes of a large testnet do not all pick node 0.
        let zeros = (1..1000)
            .filter(|&i| bootstrap_peers(i, i).contains(&0))
            .count();
        assert!(zeros < 50, "{zeros} of 999 nodes bootstrap from node 0");
    }
}
