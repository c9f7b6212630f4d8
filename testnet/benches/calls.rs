//! The call benchmark: for each overlay size (32 and 128 nodes by default), N P2PSIP nodes on
//! loopback in this process, and three figures of a call through them:
//!
//! - **RRD**, registration request delay (RFC 6076 §4.1): REGISTERs of distinct AORs, one at a
//!   time, each to a random node, each from a UDP socket of its own (a softphone per AOR); each
//!   timed from its first transmission to its final response. A final response other than
//!   2xx, or none within [`REGISTER_TIMEOUT`], is a failure.
//! - **SRD**, session request delay (RFC 6076 §4.2): sipp's UAS (`node/tests/sipp/uas-rr.xml`)
//!   registers an AOR at node B (`sipp/register-aor.xml`), and sipp's UAC
//!   (`node/tests/sipp/uac-proxy.xml`) calls it through node A, at a modest fixed rate (20
//!   calls/s by default: a delay, not a queue). Per call, the time from the INVITE sent to the
//!   180 received, read from sipp's short message trace (`-trace_shortmsg`, in microseconds).
//!   RFC 6076 ends SRD at the first response other than 100: when a 200 overtakes the 180 on
//!   its way through the overlay, the 200 ends it, and the output says how often that happened.
//! - **Calls/s**: the same two sipps, with an AOR of their own for each step of a ladder of
//!   offered rates ([`RATES`], [`STEP_SECONDS`] seconds' worth of calls each, at most a
//!   second's worth open at once: `-l`). The ladder stops at the first step where a call fails
//!   on either side, or where sipp reaches less than [`KEEP_UP`] of the offered rate (the calls
//!   take so long that the `-l` limit holds them back); the figure is the highest rate reached
//!   (successful calls over sipp's elapsed time) by a step with no failed call.
//!
//! The UAC sends each call from a UDP socket of its own (`-t un`), as many softphones would:
//! a node limits the out-of-dialog requests of each of its clients (address and port), and
//! one socket for all the calls would be one client flooding it. Before each of the three
//! measurements the bench waits, up to [`QUIET_LIMIT`], for the nodes to be quiet (their
//! periodic replication comes in bursts that keep both cores busy for seconds on 128 nodes),
//! and prints the share of the CPU the nodes used during each measurement.
//!
//! `cargo bench -p p2psip-testnet --bench calls -- --nodes 32,128 --calls 200 --registers 200
//! --srd-rate 20 --seed 1`
//!
//! Needs sipp (Debian package `sip-tester`). Every REGISTER has a deadline, every sipp run a
//! time limit and every wait a bound; nodes A and B and the registrars come from a seeded RNG,
//! so two runs with the same arguments use the same nodes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use p2psip_sip::{HeaderName, Message, StatusCode};
use p2psip_testnet::{Options, Testnet};
use tokio::net::UdpSocket;

#[path = "../../node/tests/support/sipp.rs"]
pub mod sipp;

use sipp::{Scenario, Sipp, SippReport};

/// The allocator of the `p2psip` binary, so that the nodes here use memory as a node does.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long one REGISTER may wait for its final response.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 3261's T1: the first retransmission interval of a REGISTER over UDP (Timer E).
const T1: Duration = Duration::from_millis(500);
/// RFC 3261's T2: the longest retransmission interval of a non-INVITE request.
const T2: Duration = Duration::from_secs(4);
/// The registrations stop after this many failures in a row: the overlay does not work.
const MAX_FAILURES_IN_A_ROW: usize = 5;
/// The offered rates of the calls/s ladder, in calls per second.
const RATES: [u32; 9] = [25, 50, 100, 150, 200, 300, 400, 600, 800];
/// Each step of the ladder offers this many seconds' worth of calls.
const STEP_SECONDS: u32 = 3;
/// A step where sipp reaches less than this share of the offered rate ends the ladder.
const KEEP_UP: f64 = 0.8;
/// How long the callee sipp may take to exit once the caller is done: its 0.5 s timewait,
/// plus a call that waited in vain for its ACK or BYE (5 s receive timeout).
const CALLEE_GRACE: Duration = Duration::from_secs(7);
/// A sipp run's time limit beyond the time its calls take at the offered rate.
const SIPP_SLACK: Duration = Duration::from_secs(20);
/// The most UDP sockets sipp's UAC opens at once (one per call; beyond, calls share them).
/// sipp refuses to start when this is not below the limit of open files (`ulimit -n`).
const MAX_SOCKETS: u32 = 4096;
/// Before each measurement, the nodes are given time to become quiet: to use less than this
/// many cores. 128 idle nodes use 0.06 (0.26 in their busiest second); with the settle's
/// connections still open, each node's to most others, they used 0.3 to 0.45, and 1.5 to 2
/// while those connections closed: a threshold of 0.5 let the SRD be measured during that
/// (p50 208 ms, where it was 8 ms once they had closed).
const QUIET_CORES: f64 = 0.15;
/// The window over which the nodes' CPU use is measured while waiting for them to be quiet.
const QUIET_WINDOW: Duration = Duration::from_secs(1);
/// How long to wait at most for the nodes to be quiet; the measurement starts anyway then.
/// Right after the settle every node of 128 is connected to most others, and those
/// connections close only after the idle timeout (60 s) and the next ping (15 s): until then
/// the nodes kept 0.6 to 1.9 cores busy, and a 10 s limit measured that, not the calls.
const QUIET_LIMIT: Duration = Duration::from_secs(120);
/// How long the overlay may take to settle once started.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

/// Parses the command line, checks that sipp is there, and runs the bench on a tokio runtime.
fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    // The nodes' logs, as `RUST_LOG` asks (none by default).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    if !sipp::sipp_available() {
        bail!("sipp is not installed ({})", sipp::INSTALL_HINT);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?
        .block_on(run(args))
}

/// The command line: `--nodes N[,N...] --calls C --registers R --srd-rate S --seed S`
/// (cargo's `--bench` is ignored).
struct Args {
    /// The overlay sizes, one after the other.
    nodes: Vec<usize>,
    /// How many calls the SRD is measured on.
    calls: u64,
    /// How many REGISTERs the RRD is measured on.
    registers: usize,
    /// The rate of the SRD calls, in calls per second.
    srd_rate: u32,
    /// The seed of the choices of nodes.
    seed: u64,
}

impl Args {
    /// The arguments after the program's name; the defaults for those not given.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
        let mut parsed = Args {
            nodes: vec![32, 128],
            calls: 200,
            registers: 200,
            srd_rate: 20,
            seed: 1,
        };
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            let value = args.next().ok_or_else(|| anyhow!("{arg} needs a value"))?;
            let number = |value: &str| -> Result<u64> {
                value.parse().with_context(|| format!("{arg} {value}"))
            };
            match arg.as_str() {
                "--nodes" => {
                    parsed.nodes = value
                        .split(',')
                        .map(|n| Ok(usize::try_from(number(n)?)?))
                        .collect::<Result<_>>()?;
                }
                "--calls" => parsed.calls = number(&value)?,
                "--registers" => parsed.registers = usize::try_from(number(&value)?)?,
                "--srd-rate" => parsed.srd_rate = u32::try_from(number(&value)?)?,
                "--seed" => parsed.seed = number(&value)?,
                _ => bail!(
                    "unknown argument {arg}; use --nodes, --calls, --registers, --srd-rate, --seed"
                ),
            }
        }
        if parsed.nodes.iter().any(|&n| n < 2) {
            bail!("--nodes must be at least 2: the calls go through two nodes");
        }
        if parsed.calls == 0 || parsed.srd_rate == 0 {
            bail!("--calls and --srd-rate must be at least 1");
        }
        Ok(parsed)
    }
}

/// Measures each overlay size in turn, then prints one line of figures per size.
async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let mut figures = Vec::new();
    for &n in &args.nodes {
        figures.push(bench(n, &args).await?);
    }
    println!();
    for figure in &figures {
        println!("{figure}");
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// What one overlay size measured.
struct Figures {
    /// The overlay size.
    nodes: usize,
    /// Session request delays.
    srd: Delays,
    /// Registration request delays.
    rrd: Delays,
    /// The best step of the ladder, if one lost no call.
    calls_per_second: Option<Rung>,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nodes {}: SRD {} | RRD {} | calls/s at 0 failures: ",
            self.nodes, self.srd, self.rrd
        )?;
        match &self.calls_per_second {
            Some(rung) => write!(
                f,
                "{:.0} ({} calls offered at {}/s)",
                rung.reached, rung.calls, rung.offered
            ),
            None => f.write_str("none (the lowest rate lost calls)"),
        }
    }
}

/// Per-operation delays and how many operations failed.
#[derive(Default)]
struct Delays {
    /// One per successful operation.
    samples: Vec<Duration>,
    /// Operations that failed (and have no sample).
    failed: usize,
}

impl Delays {
    /// The `p`th percentile (nearest rank) in ms; `None` without a sample.
    fn percentile(&self, p: usize) -> Option<f64> {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let rank = (sorted.len() * p).div_ceil(100).max(1) - 1;
        sorted.get(rank).map(|d| d.as_secs_f64() * 1000.0)
    }
}

impl fmt::Display for Delays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in [50, 95, 99] {
            match self.percentile(p) {
                Some(ms) => write!(f, "p{p} {ms:.2} ms ")?,
                None => write!(f, "p{p} - ")?,
            }
        }
        write!(f, "(n={}, failed {})", self.samples.len(), self.failed)
    }
}

/// A step of the calls/s ladder without a failed call.
struct Rung {
    /// The offered rate, in calls per second.
    offered: u32,
    /// The rate reached: successful calls over sipp's elapsed time.
    reached: f64,
    /// The successful calls.
    calls: u64,
}

/// Starts an overlay of `n` nodes, measures it, and stops it.
async fn bench(n: usize, args: &Args) -> Result<Figures> {
    let started = Instant::now();
    let net = Testnet::start(n, Options::default()).await?;
    net.settle(SETTLE_TIMEOUT).await?;
    println!(
        "{n} nodes: started and settled in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let figures = measure(&net, args).await;
    net.shutdown().await;
    figures
}

/// RRD, SRD and the calls/s ladder on a settled overlay.
async fn measure(net: &Testnet, args: &Args) -> Result<Figures> {
    let n = net.len();
    let mut rng = Rng(args.seed);
    wait_quiet().await?;
    let (rrd, cpu) = with_cpu(registration_delays(net, args.registers, &mut rng)).await?;
    println!("  RRD {rrd} [the nodes used {cpu:.2} cores]");

    let a = rng.below(n);
    let b = (a + 1 + rng.below(n - 1)) % n;
    let pair = Pair {
        caller: sip_udp(net, a)?,
        registrar: sip_udp(net, b)?,
    };
    println!(
        "  calls into node {a} ({}) for AORs registered at node {b} ({})",
        pair.caller, pair.registrar
    );
    wait_quiet().await?;
    let lookups = || net.node(a).map(|node| node.lookups()).unwrap_or_default();
    let before = lookups();
    let (srd, cpu) = with_cpu(session_delays(&pair, args.calls, args.srd_rate)).await?;
    println!("  SRD {srd} [the nodes used {cpu:.2} cores]");
    let after = lookups();
    println!(
        "  node {a}'s lookups: {} in one round trip, {} through a Kademlia lookup",
        after.one_round_trip - before.one_round_trip,
        after.full - before.full
    );
    wait_quiet().await?;
    let calls_per_second = ladder(&pair).await?;
    Ok(Figures {
        nodes: n,
        srd,
        rrd,
        calls_per_second,
    })
}

/// The SIP UDP address of node `i`, which must be running.
fn sip_udp(net: &Testnet, i: usize) -> Result<SocketAddr> {
    net.peer(i)
        .ok_or_else(|| anyhow!("node {i} is not running"))?
        .sip_addr(p2psip_sip::Transport::Udp)
        .ok_or_else(|| anyhow!("node {i} has no SIP UDP socket"))
}

// ---------------------------------------------------------------------------------------------
// RRD: REGISTERs from this process.

/// `count` REGISTERs of distinct AORs, one at a time, each to a random node, each from a
/// socket of its own (a softphone per AOR: the node limits the REGISTERs of each client).
async fn registration_delays(net: &Testnet, count: usize, rng: &mut Rng) -> Result<Delays> {
    let run = format!("{}-{}", std::process::id(), net.len());
    let mut delays = Delays::default();
    let mut refusals = BTreeMap::<u16, usize>::new();
    let mut in_a_row = 0;
    for i in 0..count {
        let to = sip_udp(net, rng.below(net.len()))?;
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("cannot bind a REGISTER socket")?;
        let port = socket.local_addr()?.port();
        let call_id = format!("rrd-{run}-{i}");
        let request = register_request(&format!("sip:rrd{i}@p2psip"), &call_id, to, port);
        match register(&socket, to, &request, &call_id).await? {
            Some((took, status)) if status.is_success() => {
                delays.samples.push(took);
                in_a_row = 0;
                continue;
            }
            Some((_, status)) => *refusals.entry(status.as_u16()).or_default() += 1,
            None => *refusals.entry(0).or_default() += 1,
        }
        delays.failed += 1;
        in_a_row += 1;
        if in_a_row == MAX_FAILURES_IN_A_ROW {
            println!(
                "  RRD: {in_a_row} failures in a row, stopped after {} REGISTERs",
                i + 1
            );
            break;
        }
    }
    if !refusals.is_empty() {
        println!("  RRD failures (status: count, 0 = no final response): {refusals:?}");
    }
    Ok(delays)
}

/// A REGISTER of `aor` at `to` for one contact at this bench's `port` (nobody calls it).
fn register_request(aor: &str, call_id: &str, to: SocketAddr, port: u16) -> String {
    format!(
        "REGISTER sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\n\
         From: <{aor}>;tag=r{port}\r\n\
         To: <{aor}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:device@127.0.0.1:{port}>\r\n\
         Expires: 600\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends `request` to `to`, retransmitting it as RFC 3261's Timer E says, and waits for the
/// final response with Call-ID `call_id`: its status and the time since the first
/// transmission, or `None` after [`REGISTER_TIMEOUT`].
async fn register(
    socket: &UdpSocket,
    to: SocketAddr,
    request: &str,
    call_id: &str,
) -> Result<Option<(Duration, StatusCode)>> {
    let start = Instant::now();
    let deadline = start + REGISTER_TIMEOUT;
    let (mut next_send, mut interval) = (start, T1);
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now >= next_send {
            socket.send_to(request.as_bytes(), to).await?;
            next_send = now + interval;
            interval = (interval * 2).min(T2);
        }
        let wait = next_send
            .min(deadline)
            .saturating_duration_since(Instant::now());
        if let Ok(received) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            let (len, _) = received?;
            if let Some(status) = final_status(&buf[..len], call_id) {
                return Ok(Some((start.elapsed(), status)));
            }
        }
    }
}

/// The status of `datagram` when it is a final response with Call-ID `call_id`.
fn final_status(datagram: &[u8], call_id: &str) -> Option<StatusCode> {
    let message = Message::parse(datagram.to_vec()).ok()?;
    let response = message.as_response()?;
    let id = response.headers().get(HeaderName::CallId)?;
    (id.trim_ascii() == call_id.as_bytes() && response.status().is_final())
        .then(|| response.status())
}

// ---------------------------------------------------------------------------------------------
// SRD and calls/s: sipp's UAC at node A, sipp's UAS registered at node B.

/// The two nodes of the calls: the caller's proxy (A) and the callee's registrar (B).
struct Pair {
    /// Node A's SIP UDP address: the UAC sends its INVITEs there.
    caller: SocketAddr,
    /// Node B's SIP UDP address: the UAS registers there.
    registrar: SocketAddr,
}

/// What one sipp run of calls measured.
struct Step {
    /// Calls that went through on the caller's side.
    successful: u64,
    /// Calls that failed or were never made, on the side that lost more.
    failed: u64,
    /// The caller sipp's run, from start to exit.
    elapsed: Duration,
    /// Why calls failed, for the output; empty when none did.
    why: String,
}

/// `calls` calls at `rate` per second, with sipp's short message trace; the SRD of each call.
async fn session_delays(pair: &Pair, calls: u64, rate: u32) -> Result<Delays> {
    let dir = tempfile::Builder::new()
        .prefix("p2psip-calls-")
        .tempdir()
        .context("cannot create a directory for sipp's trace")?;
    let trace = dir.path().join("srd-shortmsg.log");
    let step = call_step(pair, "srd", calls, rate, Some(&trace)).await?;
    // No trace when no call was placed: then every call counts as failed.
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let delays = srd_from_trace(&text);
    println!(
        "  SRD calls: {} successful, {} failed; {} ended by a 200 before any 180{}",
        step.successful, step.failed, delays.by_2xx, step.why
    );
    let unanswered = usize::try_from(calls)?.saturating_sub(delays.samples.len());
    Ok(Delays {
        samples: delays.samples,
        failed: unanswered.max(usize::try_from(step.failed)?),
    })
}

/// The SRD samples of a short message trace.
struct TraceDelays {
    /// Per call: first INVITE sent to first response to it other than 100 received.
    samples: Vec<Duration>,
    /// How many calls saw a 2xx before any 1xx other than 100.
    by_2xx: usize,
}

/// Reads sipp's `-trace_shortmsg` file: tab-separated date, time, Unix time in seconds with
/// microseconds, `S` (sent) or `R` (received), Call-ID, `CSeq:<n> <method>`, the first line.
fn srd_from_trace(trace: &str) -> TraceDelays {
    /// When a call's INVITE was sent and its first response other than 100 came, in µs.
    #[derive(Default)]
    struct Call {
        sent: Option<u64>,
        answered: Option<(u64, u16)>,
    }
    let mut calls = HashMap::<&str, Call>::new();
    for line in trace.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [_, _, time, direction, call_id, cseq, first, ..] = fields[..] else {
            continue;
        };
        let Some(micros) = micros(time) else {
            continue;
        };
        if !cseq.trim().ends_with(" INVITE") {
            continue;
        }
        let call = calls.entry(call_id).or_default();
        match direction {
            "S" if first.starts_with("INVITE ") => {
                call.sent.get_or_insert(micros);
            }
            "R" => {
                if let Some(code) = status_of(first)
                    && (101..300).contains(&code)
                    && call.answered.is_none()
                {
                    call.answered = Some((micros, code));
                }
            }
            _ => {}
        }
    }
    let mut delays = TraceDelays {
        samples: Vec::new(),
        by_2xx: 0,
    };
    for call in calls.values() {
        if let (Some(sent), Some((answered, code))) = (call.sent, call.answered) {
            delays
                .samples
                .push(Duration::from_micros(answered.saturating_sub(sent)));
            delays.by_2xx += usize::from(code >= 200);
        }
    }
    delays
}

/// `1795249403.552250` (seconds, microseconds) in µs.
fn micros(time: &str) -> Option<u64> {
    let (seconds, fraction) = time.trim().split_once('.')?;
    let fraction = format!("{fraction:0<6}");
    Some(seconds.parse::<u64>().ok()? * 1_000_000 + fraction.get(..6)?.parse::<u64>().ok()?)
}

/// The status code of a status line (`SIP/2.0 180 Ringing`).
fn status_of(first_line: &str) -> Option<u16> {
    let rest = first_line.trim().strip_prefix("SIP/2.0 ")?;
    rest.split(' ').next()?.parse().ok()
}

/// The ladder of offered rates; the highest rate reached by a step with no failed call.
async fn ladder(pair: &Pair) -> Result<Option<Rung>> {
    println!(
        "  {:>9} {:>7} {:>7} {:>9}",
        "offered/s", "calls", "failed", "reached/s"
    );
    let mut best: Option<Rung> = None;
    for rate in RATES {
        let calls = u64::from(rate * STEP_SECONDS);
        let step = call_step(pair, &format!("cps{rate}"), calls, rate, None).await?;
        let reached = step.successful as f64 / step.elapsed.as_secs_f64().max(1e-3);
        println!(
            "  {:>9} {:>7} {:>7} {:>9.0}{}",
            rate, step.successful, step.failed, reached, step.why
        );
        if step.failed > 0 {
            break;
        }
        if best.as_ref().is_none_or(|b| reached > b.reached) {
            best = Some(Rung {
                offered: rate,
                reached,
                calls: step.successful,
            });
        }
        if reached < KEEP_UP * f64::from(rate) {
            println!("  sipp reached less than {KEEP_UP} of the offered rate: stop");
            break;
        }
    }
    Ok(best)
}

/// One sipp run: a UAS registered as `sip:<aor>@127.0.0.1` at the pair's registrar takes
/// `calls` calls that a UAC places at `rate` per second through the pair's caller node;
/// with `trace`, the UAC writes its short message trace there.
async fn call_step(
    pair: &Pair,
    aor: &str,
    calls: u64,
    rate: u32,
    trace: Option<&Path>,
) -> Result<Step> {
    let limit = Duration::from_secs_f64(calls as f64 / f64::from(rate)) + SIPP_SLACK;
    let uas = Sipp::new(node_scenario("uas-rr.xml"))
        .calls(calls)
        .time_limit(limit);
    let callee = blocking(move || uas.spawn()).await?;
    let register = Sipp::new(bench_scenario("register-aor.xml"))
        .remote(pair.registrar)
        .arg("-s")
        .arg(aor)
        .arg("-key")
        .arg("contact_port")
        .arg(callee.port().to_string())
        .call_timeout(Some(REGISTER_TIMEOUT))
        .time_limit(REGISTER_TIMEOUT * 2);
    let registered = blocking(move || register.run()).await?;
    if !registered.all_successful(1) {
        // The calls of this step cannot be placed: all of them count as failed.
        return Ok(Step {
            successful: 0,
            failed: calls,
            elapsed: Duration::ZERO,
            why: reasons("register", &registered),
        });
    }
    let mut uac = Sipp::new(node_scenario("uac-proxy.xml"))
        .remote(pair.caller)
        .calls(calls)
        .rate(rate)
        .max_concurrent(rate)
        .time_limit(limit)
        .arg("-s")
        .arg(aor)
        // One UDP socket per call (after the harness's `-t u1`, so it wins): each call comes
        // from a client of its own, as from many softphones, not one client flooding the
        // node past its per-client budget.
        .arg("-t")
        .arg("un")
        .arg("-max_socket")
        .arg(MAX_SOCKETS.to_string());
    if let Some(trace) = trace {
        uac = uac
            .arg("-trace_shortmsg")
            .arg("-shortmessage_file")
            .arg(trace);
    }
    let caller = blocking(move || uac.run()).await?;
    let deadline = Instant::now() + CALLEE_GRACE;
    let callee = tokio::task::spawn_blocking(move || callee.wait(deadline))
        .await
        .context("the thread waiting for sipp panicked")?;
    let lost = |report: &SippReport| {
        report.failed + calls.saturating_sub(report.successful + report.failed)
    };
    // A callee that had to be killed waited for a call the caller gave up: its count of
    // failed calls is unknown, and at least one.
    let (callee_failed, callee_why) = match &callee {
        Ok(report) => (lost(report), reasons("uas", report)),
        Err(e) => (
            1,
            format!("  uas: {}", e.lines().next().unwrap_or_default()),
        ),
    };
    Ok(Step {
        successful: caller.successful,
        failed: lost(&caller).max(callee_failed),
        elapsed: caller.elapsed,
        why: format!("{}{callee_why}", reasons("uac", &caller)),
    })
}

/// Runs a blocking sipp call on a thread of its own.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("the thread running sipp panicked")?
        .map_err(|e| anyhow!(e))
}

/// The non-zero failure counters of a sipp run that did not end well, for the output.
fn reasons(side: &str, report: &SippReport) -> String {
    if report.failed == 0 && report.exit_code == 0 {
        return String::new();
    }
    let mut out = format!(
        "  {side}: exit {} {:?}",
        report.exit_code,
        report.failure_reasons()
    );
    if let Some(dir) = &report.kept_files {
        let unexpected = unexpected_messages(dir);
        if !unexpected.is_empty() {
            out.push_str(&format!(" unexpected {unexpected:?}"));
        }
        out.push_str(&format!(" ({})", dir.display()));
    }
    out
}

/// The first lines of the unexpected messages that made calls fail, with their counts, from
/// the error log (`-trace_err`, `errors.log`) of a sipp run the harness kept: `Aborting call
/// on unexpected message ...: while expecting '180' (index 2), received 'SIP/2.0 503 ...`.
fn unexpected_messages(dir: &Path) -> BTreeMap<String, usize> {
    let log = std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for message in log.split("received '").skip(1) {
        let first = message
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches('\'');
        *counts.entry(first.to_owned()).or_default() += 1;
    }
    counts
}

/// A scenario of the node's sipp tests (`node/tests/sipp`).
fn node_scenario(name: &str) -> Scenario {
    Scenario::File(manifest_dir().join("../node/tests/sipp").join(name))
}

/// A scenario of this bench (`testnet/benches/sipp`).
fn bench_scenario(name: &str) -> Scenario {
    Scenario::File(manifest_dir().join("benches/sipp").join(name))
}

/// This package's directory (`testnet/`).
fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Waits until the nodes use less than [`QUIET_CORES`] over a [`QUIET_WINDOW`], at most
/// [`QUIET_LIMIT`]; says how long it took.
async fn wait_quiet() -> Result<()> {
    let start = Instant::now();
    loop {
        let busy = busy_cores(QUIET_WINDOW).await?;
        let waited = start.elapsed().as_secs_f64();
        if busy < QUIET_CORES {
            println!("  quiet after {waited:.0} s (the nodes use {busy:.2} cores)");
            return Ok(());
        }
        if start.elapsed() >= QUIET_LIMIT {
            println!(
                "  not quiet after {waited:.0} s (the nodes use {busy:.2} cores): measuring anyway"
            );
            return Ok(());
        }
    }
}

/// Runs `work`, and says how many cores this process (the nodes, not sipp) kept busy meanwhile.
async fn with_cpu<T>(work: impl Future<Output = Result<T>>) -> Result<(T, f64)> {
    let (before, start) = (cpu_time()?, Instant::now());
    let result = work.await?;
    let busy = (cpu_time()? - before).as_secs_f64() / start.elapsed().as_secs_f64();
    Ok((result, busy))
}

/// How many cores this process kept busy, on average, during the next `window`.
async fn busy_cores(window: Duration) -> Result<f64> {
    let before = cpu_time()?;
    tokio::time::sleep(window).await;
    Ok((cpu_time()? - before).as_secs_f64() / window.as_secs_f64())
}

/// The CPU time (user and system) of this process so far: `utime` and `stime` of
/// `/proc/self/stat`, in clock ticks of 10 ms (Linux's `USER_HZ` is 100).
fn cpu_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // The fields after the command name (in parentheses): state is field 3, utime 14, stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("/proc/self/stat: {stat}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        let field = fields
            .get(i)
            .ok_or_else(|| anyhow!("/proc/self/stat: {stat}"))?;
        Ok(field.parse()?)
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
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
