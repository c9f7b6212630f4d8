//! The overlay benchmark: N nodes on loopback in this process; prints the time to start and
//! settle, store and fetch latencies, the hop counts of Route messages and the memory per node.
//!
//! `cargo bench -p p2psip-testnet --bench overlay -- --nodes 64 --ops 200 --routes 300 --seed 1`
//!
//! Every operation runs alone (one at a time) and has a deadline; the choices of nodes come
//! from a seeded RNG, so two runs with the same arguments do the same operations (the keys are
//! fresh each run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use p2psip_overlay::data::{AorClaim, Contact, Delegation, Kind, RegistrationValue, StoredData};
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::identity::UserKey;
use p2psip_overlay::node::Overlay;
use p2psip_testnet::{Options, Testnet};

/// The deadline of one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?
        .block_on(run(args))
}

/// The command line: `--nodes N --ops M --routes R --seed S` (cargo's `--bench` is ignored).
struct Args {
    nodes: usize,
    ops: usize,
    routes: usize,
    seed: u64,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
        let mut parsed = Args {
            nodes: 64,
            ops: 200,
            routes: 300,
            seed: 1,
        };
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            let value = args.next().ok_or_else(|| anyhow!("{arg} needs a value"))?;
            let number =
                || -> Result<usize> { value.parse().with_context(|| format!("{arg} {value}")) };
            match arg.as_str() {
                "--nodes" => parsed.nodes = number()?,
                "--ops" => parsed.ops = number()?,
                "--routes" => parsed.routes = number()?,
                "--seed" => parsed.seed = number()? as u64,
                _ => bail!("unknown argument {arg}; use --nodes, --ops, --routes, --seed"),
            }
        }
        if parsed.nodes < 2 {
            bail!("--nodes must be at least 2");
        }
        Ok(parsed)
    }
}

async fn run(args: Args) -> Result<()> {
    let n = args.nodes;
    let mut rng = Rng(args.seed);
    let rss_before = rss_kib()?;
    let started = Instant::now();
    let net = Testnet::start(n, Options::default()).await?;
    net.settle(Duration::from_secs(180)).await?;
    let settled = started.elapsed();
    let rss_after = rss_kib()?;
    println!(
        "{n} nodes: started and settled in {:.2} s",
        settled.as_secs_f64()
    );
    let per_node = rss_after.saturating_sub(rss_before) as f64 / n as f64 / 1024.0;
    println!(
        "memory: {per_node:.2} MiB per node; resident total {:.1} MiB (before start {:.1} MiB)",
        rss_after as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );

    // Stores: a user claims an AOR through a random node, then registers that node.
    let (mut claims, mut stores, mut failed) = (Vec::new(), Vec::new(), 0);
    let mut users = Vec::new();
    for op in 0..args.ops {
        let at = rng.below(n);
        let node = running(&net, at)?;
        let user = User::new(&format!("sip:bench{op}@example.org"))?;
        let (key, data) = user.claim()?;
        match timed(node.store(user.resource, Kind::AOR_CLAIM, key, data)).await {
            Some((took, _)) => claims.push(took),
            None => failed += 1,
        }
        let (key, data) = user.registration(node)?;
        let entry = (key.clone(), data.clone());
        match timed(node.store(user.resource, Kind::SIP_REGISTRATION, key, data)).await {
            Some((took, _)) => {
                stores.push(took);
                users.push((at, user, entry));
            }
            None => failed += 1,
        }
    }
    report("store AOR-CLAIM", &mut claims);
    report("store SIP-REGISTRATION", &mut stores);
    println!("store failures: {failed}");

    // Fetches: a random registration, from a random node other than the one that stored it.
    let (mut fetches, mut missed) = (Vec::new(), 0);
    let fetch_ops = if users.is_empty() { 0 } else { args.ops };
    for _ in 0..fetch_ops {
        let (at, user, entry) = &users[rng.below(users.len())];
        let from = (at + 1 + rng.below(n - 1)) % n;
        let node = running(&net, from)?;
        match timed(node.fetch(user.resource, Kind::SIP_REGISTRATION)).await {
            Some((took, entries)) if entries.contains(entry) => fetches.push(took),
            _ => missed += 1,
        }
    }
    report("fetch SIP-REGISTRATION", &mut fetches);
    println!("fetches failed or missing the entry: {missed}");

    // Routes: between random pairs of distinct nodes, answered by an echo.
    for (_, node) in net.live() {
        node.set_route_handler(Box::new(|_from, payload| Ok(payload)));
    }
    let (mut hops, mut routes, mut lost) = (BTreeMap::<u8, usize>::new(), Vec::new(), 0);
    for r in 0..args.routes {
        let from = rng.below(n);
        let to = (from + 1 + rng.below(n - 1)) % n;
        let to = running(&net, to)?.node_id();
        let payload = format!("route {r}").into_bytes();
        match timed(running(&net, from)?.route(to, payload.clone())).await {
            Some((took, (answer, count))) if answer == payload => {
                routes.push(took);
                *hops.entry(count).or_default() += 1;
            }
            _ => lost += 1,
        }
    }
    report("route", &mut routes);
    println!("route hops (hops: routes): {hops:?}; failed: {lost}");

    net.shutdown().await;
    Ok(())
}

/// One user owning one AOR.
struct User {
    key: UserKey,
    aor: String,
    resource: ResourceId,
}

impl User {
    fn new(aor: &str) -> Result<User> {
        Ok(User {
            key: UserKey::generate(),
            aor: aor.to_owned(),
            resource: ResourceId::for_aor(aor)?,
        })
    }

    /// The signed AOR-CLAIM entry of the user's AOR.
    fn claim(&self) -> Result<(Vec<u8>, StoredData)> {
        let claim = AorClaim::new(&self.aor, &self.key.public(), now_ms()? + 3_600_000)?;
        Ok(claim.entry(self.key.keypair(), now_ms()?, 3600, 1)?)
    }

    /// A registration of the device `node` under the user's AOR, signed by the node's key.
    fn registration(&self, node: &Overlay) -> Result<(Vec<u8>, StoredData)> {
        let device = node.keypair();
        let delegation = Delegation::sign(
            self.key.keypair(),
            &self.resource,
            &device.public(),
            now_ms()? + 3_600_000,
        )?;
        let value = RegistrationValue {
            destination: node.node_id().to_bytes(),
            contacts: vec![Contact {
                uri: format!("sip:{}@127.0.0.1:5062", self.aor),
                q: None,
            }],
            delegation,
        };
        Ok(value.entry(device, &self.resource, now_ms()?, 3600, 1)?)
    }
}

/// Node `i` of the testnet, which must be running.
fn running(net: &Testnet, i: usize) -> Result<&Overlay> {
    net.node(i)
        .ok_or_else(|| anyhow!("node {i} is not running"))
}

/// How long an operation took and its result, or `None` when it failed or timed out.
async fn timed<T, E>(op: impl Future<Output = Result<T, E>>) -> Option<(Duration, T)> {
    let start = Instant::now();
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(Ok(result)) => Some((start.elapsed(), result)),
        _ => None,
    }
}

/// Prints the p50 and p99 (nearest rank) of `samples`, in ms.
fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let rank = |p: usize| {
        let i = (samples.len() * p).div_ceil(100).max(1) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    if samples.is_empty() {
        println!("{what}: no sample");
    } else {
        println!(
            "{what}: p50 {:.2} ms, p99 {:.2} ms ({} ops)",
            rank(50),
            rank(99),
            samples.len()
        );
    }
}

/// This process's resident set size, in KiB (`VmRSS` in `/proc/self/status`).
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS in /proc/self/status"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("VmRSS {kib}"))
}

fn now_ms() -> Result<u64> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH)?;
    Ok(u64::try_from(since.as_millis())?)
}

/// A seeded splitmix64: the same seed gives the same choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}
