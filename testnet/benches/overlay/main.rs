//! The overlay benchmark: N p2psip nodes on loopback in this process, then N OpenDHT nodes
//! (Debian's `python3-opendht`) in a Python process doing the same operations, side by side.
//! For our nodes it prints the time to start and settle, store and fetch latencies, the hop
//! counts of Route messages, the memory per node and the idle cost (CPU and memory while the
//! nodes sit idle after the operations); for OpenDHT the same except Routes; then a table of
//! both with the ratio ours / theirs.
//!
//! `cargo bench -p p2psip-testnet --bench overlay -- --nodes 64 --ops 200 --routes 300 --seed 1`
//!
//! `--sizes 64,128` runs each size in turn, both sides each, each size in a process of its own
//! (this bench again with `--nodes N`); `--idle S` sets the idle window (default 60 s: one
//! replication interval, so that the mean takes in each node's periodic pass once; the
//! busiest second is printed too), which for our nodes starts `--quiet S` after the
//! operations (default 90 s: the idle connection timeout, the 15 s between the pings that
//! wake a connection to see it idle, and a margin, so that the connections the operations
//! opened have closed);
//! `--opendht off` runs our side only; `--explain off` leaves out the paragraph on how to read
//! the ratios. When `import opendht` fails under
//! `/usr/bin/python3`, the bench installs `python3-opendht` with apt-get (through `sudo -n`
//! when it is not root); when that fails too, it says so in one line and runs our side only.
//!
//! Every operation runs alone (one at a time) and has a deadline; the choices of nodes come
//! from a seeded RNG, so two runs with the same arguments do the same operations (the keys are
//! fresh each run); the OpenDHT script uses the same RNG, so its puts and gets go through the
//! same node indices as our stores and fetches. The two sides never run at the same time: our
//! nodes are shut down before the Python process starts, and it is killed if it overruns.

mod opendht;
mod process;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use libp2p::identity::Keypair;
use nix::sys::resource::{UsageWho, getrusage};
use p2psip_overlay::data::{AorClaim, Contact, Delegation, Kind, RegistrationValue, StoredData};
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::identity::UserKey;
use p2psip_overlay::node::Overlay;
use p2psip_testnet::{Options, Testnet};

/// The allocator of the `p2psip` binary, so that the nodes here use memory as a node does.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The deadline of one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes of either side may take to settle, per [`SETTLE_PER`] nodes (and at
/// least this long): 256 nodes settled in about 160 s on the 2-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// The number of nodes [`SETTLE_TIMEOUT`] is for.
const SETTLE_PER: usize = 256;

/// How long `n` nodes may take to settle.
fn settle_timeout(n: usize) -> Duration {
    SETTLE_TIMEOUT * u32::try_from(n.div_ceil(SETTLE_PER).max(1)).unwrap_or(u32::MAX)
}
/// How long the process of one size may run (with `--sizes`) before it is killed.
const SIZE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What one operation is on each side, so that the ratios are read fairly.
const WHAT_IS_MEASURED: &str = "\
How to read the ratios. p2psip store (SIP-REGISTRATION; its AOR-CLAIM was stored just \
before, not counted here): the entry, signed by the device's ed25519 key and carrying the \
user's ed25519 delegation, sent to the 3 nodes the storer believes closest at once; each \
replica checks both signatures and the AOR's claim, writes the entry to sled and flushes it \
to disk before it answers (sled's flush: on Linux a sync_file_range of the written log, \
which waits for the data but flushes neither metadata nor the drive's cache), and says \
whether it is a replica as far as it knows; when all 3 say so, the store took one round \
trip, else a Kademlia lookup of the resource's closest peers (cut short after 2 s) finds \
where to send it again (the bench prints how many stores took one round trip); a store \
succeeds on a majority (2) of acknowledgements. p2psip fetch: the 3 peers the node believes \
closest asked at once and their entries merged (signatures not checked again), in one round \
trip when each says it is a replica and one holds the entry; else a Kademlia lookup first \
(the bench prints how many fetches took one round trip). OpenDHT put: an unsigned \
value, a search for the key's closest nodes, then the value stored in memory by the 8 \
closest (its TARGET_NODES); done when all 8 acknowledged. OpenDHT get: a search that ends \
when the 8 closest nodes have answered. Memory per node: resident memory once settled \
minus the process's before the first node (ours: the bench with its tokio runtime; \
OpenDHT: the interpreter with opendht imported), divided by N; each p2psip node is a whole \
P2PSIP node (its SIP side too), on jemalloc as in the `p2psip` binary. Settled: ours, when \
every routing table holds min(N - 1, 20) peers (libp2p's Kademlia k, peers it reached); \
OpenDHT, when every node has a good node in its table (its own sense of connected) and finds \
a probe value the first node put: OpenDHT fills its tables only as far as its searches need, \
so a table size is no settle rule for it.";

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let opendht = if args.opendht {
        match opendht::prepare() {
            Ok(version) => Some(version),
            Err(error) => {
                println!("OpenDHT side skipped: {error:#}");
                None
            }
        }
    } else {
        None
    };
    let failed = match args.sizes[..] {
        [n] => one_size(&args, n, opendht.as_deref())?,
        _ => each_size_in_a_process(&args, opendht.is_some())?,
    };
    if opendht.is_some() && args.explain {
        println!("\n{WHAT_IS_MEASURED}");
    }
    if !failed.is_empty() {
        bail!("no figures from {} (see above)", failed.join(", "));
    }
    Ok(())
}

/// Runs both sides for `n` nodes and prints their table; gives what gave no figures.
fn one_size(args: &Args, n: usize, opendht: Option<&str>) -> Result<Vec<String>> {
    let mut failed = Vec::new();
    println!("\n== {n} nodes: p2psip");
    // A runtime of its own, shut down before OpenDHT's side starts: no task of a node that
    // failed to stop can run on in the background.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let ours = runtime.block_on(run(args, n));
    runtime.shutdown_timeout(Duration::from_secs(10));
    let ours = ours
        .inspect_err(|error| {
            println!("p2psip side, {n} nodes: no figures: {error:#}");
            failed.push(format!("p2psip at {n} nodes"));
        })
        .ok();
    let theirs = match opendht {
        Some(version) => {
            println!("\n== {n} nodes: OpenDHT {version}");
            let params = opendht::Params {
                nodes: n,
                ops: args.ops,
                seed: args.seed,
                value_size: registration_size()?,
                idle: args.idle,
                settle_timeout: settle_timeout(n),
                op_timeout: OP_TIMEOUT,
            };
            match opendht::run(&params) {
                Ok(figures) => {
                    report_opendht(n, &figures);
                    Some(figures)
                }
                Err(error) => {
                    println!("OpenDHT side, {n} nodes: no figures: {error:#}");
                    failed.push(format!("OpenDHT at {n} nodes"));
                    None
                }
            }
        }
        None => None,
    };
    let table = side_by_side(n, args.idle, ours.as_ref(), theirs.as_ref(), opendht);
    println!("\n{table}");
    Ok(failed)
}

/// Runs each size in a process of its own (this bench with `--nodes N`): a process that ran
/// the nodes of an earlier size keeps their memory in its allocator, and the next size would
/// reuse it unseen. Gives the sizes that gave no figures.
fn each_size_in_a_process(args: &Args, opendht: bool) -> Result<Vec<String>> {
    let bench = std::env::current_exe().context("cannot find this bench's executable")?;
    let mut failed = Vec::new();
    for &n in &args.sizes {
        let mut child = Command::new(&bench)
            .args(["--nodes", &n.to_string()])
            .args(["--ops", &args.ops.to_string()])
            .args(["--routes", &args.routes.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .args(["--idle", &args.idle.as_secs().to_string()])
            .args(["--quiet", &args.quiet.as_secs().to_string()])
            .args(["--opendht", if opendht { "on" } else { "off" }])
            .args(["--explain", "off"])
            .spawn()
            .with_context(|| format!("cannot start {}", bench.display()))?;
        match process::wait(&mut child, SIZE_TIMEOUT) {
            Ok(status) if status.success() => {}
            Ok(status) => failed.push(format!("the run of {n} nodes ({status})")),
            Err(error) => failed.push(format!("the run of {n} nodes ({error:#})")),
        }
    }
    Ok(failed)
}

/// The command line: `--nodes N` or `--sizes N,M,..`, `--ops M --routes R --seed S --idle S
/// --quiet S --opendht on|off --explain on|off` (cargo's `--bench` is ignored).
struct Args {
    sizes: Vec<usize>,
    ops: usize,
    routes: usize,
    seed: u64,
    idle: Duration,
    /// How long our nodes sit before the idle window: the network's idle connection
    /// timeout (60 s) and a margin, so that the connections the operations opened are gone.
    quiet: Duration,
    opendht: bool,
    /// Whether to print how to read the ratios.
    explain: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
        let mut parsed = Args {
            sizes: vec![64],
            ops: 200,
            routes: 300,
            seed: 1,
            idle: Duration::from_secs(60),
            quiet: Duration::from_secs(90),
            opendht: true,
            explain: true,
        };
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            let value = args.next().ok_or_else(|| anyhow!("{arg} needs a value"))?;
            let number = |value: &str| -> Result<usize> {
                value.parse().with_context(|| format!("{arg} {value}"))
            };
            match arg.as_str() {
                "--nodes" => parsed.sizes = vec![number(&value)?],
                "--sizes" => {
                    parsed.sizes = value.split(',').map(number).collect::<Result<_>>()?;
                }
                "--ops" => parsed.ops = number(&value)?,
                "--routes" => parsed.routes = number(&value)?,
                "--seed" => parsed.seed = number(&value)? as u64,
                "--idle" => parsed.idle = Duration::from_secs(number(&value)? as u64),
                "--quiet" => parsed.quiet = Duration::from_secs(number(&value)? as u64),
                "--opendht" => parsed.opendht = on_off(&arg, &value)?,
                "--explain" => parsed.explain = on_off(&arg, &value)?,
                _ => bail!(
                    "unknown argument {arg}; use --nodes, --sizes, --ops, --routes, --seed, \
                     --idle, --quiet, --opendht, --explain"
                ),
            }
        }
        if parsed.sizes.iter().any(|&n| n < 2) {
            bail!("every size must be at least 2 nodes");
        }
        Ok(parsed)
    }
}

fn on_off(arg: &str, value: &str) -> Result<bool> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => bail!("{arg} takes on or off, not {value}"),
    }
}

/// What our side measured for one size.
struct Ours {
    settle: Duration,
    /// Resident memory once settled, minus the process's before the first node, per node.
    mem_per_node_mib: f64,
    stores: Vec<Duration>,
    fetches: Vec<Duration>,
    idle: Idle,
}

/// The cost of N nodes sitting idle.
struct Idle {
    /// This process's CPU time (user + system, every thread) over the window, % of one core.
    cpu_percent: f64,
    /// The same over the window's busiest second: periodic work that all nodes do at once
    /// shows here, not in the mean.
    peak_percent: f64,
    /// Resident memory at the window's end, minus the process's before the first node, per node.
    mem_per_node_mib: f64,
}

async fn run(args: &Args, n: usize) -> Result<Ours> {
    let mut rng = Rng(args.seed);
    let rss_before = rss_kib()?;
    let started = Instant::now();
    // The product's replication and sweep intervals (60 s), not the testnet's 10 s: the
    // idle cost is a deployed node's.
    let mut options = Options::default();
    options.replication_interval = Duration::from_secs(60);
    options.sweep_interval = Duration::from_secs(60);
    let net = Testnet::start(n, options).await?;
    if let Err(error) = net.settle(settle_timeout(n)).await {
        // What a join needs first: a connection to the bootstrap node.
        let connected = match net.node(0) {
            Some(node) => match node.network().connected_peers().await {
                Ok(peers) => format!("has {} connected peers", peers.len()),
                Err(error) => format!("cannot tell its connected peers: {error}"),
            },
            None => "is not running".to_owned(),
        };
        net.shutdown().await;
        bail!("{error:#} (node 0, which every node bootstraps from, {connected})");
    }
    let settled = started.elapsed();
    let rss_after = rss_kib()?;
    println!(
        "{n} nodes: started and settled in {:.2} s",
        settled.as_secs_f64()
    );
    let per_node = mib(rss_after.saturating_sub(rss_before)) / n as f64;
    println!(
        "memory: {per_node:.2} MiB per node; resident total {:.1} MiB (before start {:.1} MiB)",
        mib(rss_after),
        mib(rss_before)
    );
    println!("connections once settled: {}", connections(&net).await);

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
        let (key, data) = user.registration(node.keypair())?;
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
    let (direct, full) = net.live().fold((0, 0), |(direct, full), (_, node)| {
        let lookups = node.lookups();
        (
            direct + lookups.stores_one_round_trip,
            full + lookups.stores_full,
        )
    });
    println!("stores in one round trip: {direct}; through a Kademlia lookup: {full}");

    // Fetches: a random registration, from a random node other than the one that stored it.
    let (mut fetches, mut missed) = (Vec::new(), 0);
    let fetch_ops = if users.is_empty() { 0 } else { args.ops };
    for _ in 0..fetch_ops {
        let (at, user, entry) = &users[rng.below(users.len())];
        let from = (at + 1 + rng.below(n - 1)) % n;
        let node = running(&net, from)?;
        match timed(node.fetch(user.resource, Kind::SIP_REGISTRATION)).await {
            Some((took, entries)) if entries.contains(entry) => fetches.push(took),
            Some((took, entries)) => {
                println!(
                    "  answered after {took:.1?} without the entry ({} others)",
                    entries.len()
                );
                missed += 1;
            }
            None => missed += 1,
        }
    }
    report("fetch SIP-REGISTRATION", &mut fetches);
    println!("fetches failed or missing the entry: {missed}");
    let (direct, full) = net.live().fold((0, 0), |(direct, full), (_, node)| {
        let lookups = node.lookups();
        (
            direct + lookups.fetches_one_round_trip,
            full + lookups.fetches_full,
        )
    });
    println!("fetches in one round trip: {direct}; through a Kademlia lookup: {full}");

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

    // Idle: the nodes keep their tables and replicas up, and nothing else. The connections
    // the operations opened close once unused for the idle connection timeout; the window
    // starts after that (`--quiet`), so that it measures idle nodes, not the tail of the
    // operations.
    tokio::time::sleep(args.quiet).await;
    println!(
        "connections after {:.0} s of quiet: {}",
        args.quiet.as_secs_f64(),
        connections(&net).await
    );
    let (window, cpu, peak) = idle_window(args.idle).await?;
    let rss_idle = rss_kib()?;
    let idle = Idle {
        cpu_percent: 100.0 * cpu.as_secs_f64() / window.as_secs_f64(),
        peak_percent: 100.0 * peak,
        mem_per_node_mib: mib(rss_idle.saturating_sub(rss_before)) / n as f64,
    };
    println!(
        "idle for {:.1} s: CPU {:.1} % of one core for the {n} nodes ({:.2} % per node), \
         {:.0} % in the busiest second; memory {:.2} MiB per node",
        window.as_secs_f64(),
        idle.cpu_percent,
        idle.cpu_percent / n as f64,
        idle.peak_percent,
        idle.mem_per_node_mib
    );
    println!(
        "connections after the idle window: {}",
        connections(&net).await
    );

    net.shutdown().await;
    Ok(Ours {
        settle: settled,
        mem_per_node_mib: per_node,
        stores,
        fetches,
        idle,
    })
}

/// The connected peers of the running nodes: their mean and the most of one node.
async fn connections(net: &Testnet) -> String {
    let (mut total, mut most, mut nodes) = (0, 0, 0);
    let (mut known, mut least_known) = (0, usize::MAX);
    for (_, node) in net.live() {
        let peers = node
            .network()
            .connected_peers()
            .await
            .map_or(0, |p| p.len());
        total += peers;
        most = most.max(peers);
        nodes += 1;
        let table = node.network().routing_table().await.map_or(0, |t| t.len());
        known += table;
        least_known = least_known.min(table);
    }
    format!(
        "{:.1} peers per node on average, {most} at most; routing tables hold {:.1} peers on \
         average, {least_known} at least",
        total as f64 / nodes.max(1) as f64,
        known as f64 / nodes.max(1) as f64
    )
}

/// Prints what the OpenDHT side measured, as our side's lines.
fn report_opendht(n: usize, figures: &opendht::Figures) {
    println!(
        "{n} nodes: started and settled in {:.2} s (smallest routing table then: {} nodes, {} good)",
        figures.settle_s, figures.known_min, figures.good_min
    );
    println!(
        "memory: {:.2} MiB per node (the interpreter's {:.1} MiB before the first node subtracted)",
        figures.mem_per_node_mib,
        mib(figures.rss_baseline_kib)
    );
    println!(
        "values of {} bytes (the size of our registration entries)",
        figures.value_size
    );
    for (what, latency) in [("put", &figures.put), ("get", &figures.get)] {
        match (latency.p50_ms, latency.p99_ms) {
            (Some(p50), Some(p99)) => println!(
                "{what}: p50 {p50:.2} ms, p99 {p99:.2} ms ({} ops)",
                latency.ok
            ),
            _ => println!("{what}: no sample"),
        }
        println!("{what} failures: {} {:?}", latency.failed, latency.failures);
    }
    let idle = &figures.idle;
    println!(
        "idle for {:.1} s: CPU {:.1} % of one core for the {n} nodes ({:.2} % per node); \
         memory {:.2} MiB per node",
        idle.window_s,
        idle.cpu_percent,
        idle.cpu_percent / n as f64,
        idle.mem_per_node_mib
    );
    if figures.truncated {
        println!("the OpenDHT side ran out of its time budget: not every op was done");
    }
}

/// The side-by-side table of one size, in Markdown.
fn side_by_side(
    n: usize,
    idle: Duration,
    ours: Option<&Ours>,
    theirs: Option<&opendht::Figures>,
    version: Option<&str>,
) -> String {
    let ms = |samples: &[Duration], p| percentile(samples, p).map(|d| d.as_secs_f64() * 1000.0);
    let rows: [(&str, &str, Option<f64>, Option<f64>); 9] = [
        (
            "start and settle",
            "s",
            ours.map(|o| o.settle.as_secs_f64()),
            theirs.map(|t| t.settle_s),
        ),
        (
            "store / put p50",
            "ms",
            ours.and_then(|o| ms(&o.stores, 50)),
            theirs.and_then(|t| t.put.p50_ms),
        ),
        (
            "store / put p99",
            "ms",
            ours.and_then(|o| ms(&o.stores, 99)),
            theirs.and_then(|t| t.put.p99_ms),
        ),
        (
            "fetch / get p50",
            "ms",
            ours.and_then(|o| ms(&o.fetches, 50)),
            theirs.and_then(|t| t.get.p50_ms),
        ),
        (
            "fetch / get p99",
            "ms",
            ours.and_then(|o| ms(&o.fetches, 99)),
            theirs.and_then(|t| t.get.p99_ms),
        ),
        (
            "memory per node, settled",
            "MiB",
            ours.map(|o| o.mem_per_node_mib),
            theirs.map(|t| t.mem_per_node_mib),
        ),
        (
            "idle CPU, all nodes",
            "% of a core",
            ours.map(|o| o.idle.cpu_percent),
            theirs.map(|t| t.idle.cpu_percent),
        ),
        (
            "idle CPU per node",
            "% of a core",
            ours.map(|o| o.idle.cpu_percent / n as f64),
            theirs.map(|t| t.idle.cpu_percent / n as f64),
        ),
        (
            "memory per node, idle after the ops",
            "MiB",
            ours.map(|o| o.idle.mem_per_node_mib),
            theirs.map(|t| t.idle.mem_per_node_mib),
        ),
    ];
    let version = version.unwrap_or("(not run)");
    let mut table = format!(
        "{n} nodes, idle window {:.0} s | p2psip | OpenDHT {version} | ratio p2psip / OpenDHT\n\
         --- | --- | --- | ---\n",
        idle.as_secs_f64()
    );
    for (what, unit, ours, theirs) in rows {
        let cell = |value: Option<f64>| match value {
            Some(value) => format!("{} {unit}", figure(value)),
            None => "-".to_owned(),
        };
        let ratio = match (ours, theirs) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => figure(ours / theirs),
            _ => "-".to_owned(),
        };
        table.push_str(&format!(
            "{what} | {} | {} | {ratio}\n",
            cell(ours),
            cell(theirs)
        ));
    }
    table
}

/// A figure with three significant digits or so.
fn figure(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// The CPU time this process spends over an idle window of `length`: (the window as it
/// was, the CPU time of every thread, user and system, the most cores it kept busy over one
/// second of it).
async fn idle_window(length: Duration) -> Result<(Duration, Duration, f64)> {
    let (start, cpu) = (Instant::now(), cpu_time()?);
    let (mut peak, mut last, mut at) = (0.0_f64, cpu, start);
    while start.elapsed() < length {
        tokio::time::sleep((length - start.elapsed()).min(Duration::from_secs(1))).await;
        let (now, elapsed) = (cpu_time()?, at.elapsed());
        peak = peak.max(now.saturating_sub(last).as_secs_f64() / elapsed.as_secs_f64());
        (last, at) = (now, Instant::now());
    }
    Ok((start.elapsed(), last.saturating_sub(cpu), peak))
}

/// This process's CPU time so far (every thread, user and system), from getrusage.
fn cpu_time() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let micros = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec()).unwrap_or(0)
    };
    Ok(Duration::from_micros(
        micros(usage.user_time()) + micros(usage.system_time()),
    ))
}

/// The bytes of one registration entry as the bench stores them (its dictionary key and its
/// fields): the size of OpenDHT's values.
fn registration_size() -> Result<usize> {
    let user = User::new("sip:bench100@example.org")?;
    let (key, data) = user.registration(&Keypair::generate_ed25519())?;
    Ok(key.len() + 8 + 4 + 8 + data.value.len() + data.signer.len() + data.signature.len())
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

    /// A registration of the device `device` (a node's key) under the user's AOR, signed by
    /// it.
    fn registration(&self, device: &Keypair) -> Result<(Vec<u8>, StoredData)> {
        let delegation = Delegation::sign(
            self.key.keypair(),
            &self.resource,
            &device.public(),
            now_ms()? + 3_600_000,
        )?;
        let value = RegistrationValue {
            destination: device.public().to_peer_id().to_bytes(),
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
/// Runs one operation within [`OP_TIMEOUT`]; a failure is printed with its reason.
async fn timed<T, E: std::fmt::Display>(
    op: impl Future<Output = Result<T, E>>,
) -> Option<(Duration, T)> {
    let start = Instant::now();
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(Ok(result)) => Some((start.elapsed(), result)),
        Ok(Err(error)) => {
            println!("  failed after {:.1?}: {error}", start.elapsed());
            None
        }
        Err(_) => {
            println!("  no answer within {OP_TIMEOUT:?}");
            None
        }
    }
}

/// Prints the p50 and p99 (nearest rank) of `samples`, in ms; sorts them.
fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    match (percentile(samples, 50), percentile(samples, 99)) {
        (Some(p50), Some(p99)) => println!(
            "{what}: p50 {:.2} ms, p99 {:.2} ms ({} ops)",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            samples.len()
        ),
        _ => println!("{what}: no sample"),
    }
}

/// The `p`th percentile (nearest rank) of sorted `samples`.
fn percentile(samples: &[Duration], p: usize) -> Option<Duration> {
    let i = (samples.len() * p).div_ceil(100).max(1) - 1;
    samples.get(i).copied()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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
