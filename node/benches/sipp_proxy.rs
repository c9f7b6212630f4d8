//! The node's SIP server under sipp load on loopback, over UDP and TCP:
//!
//! - REGISTER per second: sipp's `register.xml` (one new address-of-record per call, each 200
//!   checked for its binding) against the registrar;
//! - calls per second through the proxy: sipp's `uac-proxy.xml` calls `sip:service@<server>`,
//!   which sipp's `uas-rr.xml` registered (`register-one.xml`); INVITE, 180, 200, ACK, BYE,
//!   200, every message through the record-routing proxy.
//!
//! For each offered rate, a second's worth of transactions (at least 2000) against a fresh
//! server, and the throughput reached; a step counts as failed if any registration or call
//! failed on either sipp side. Prints a table; stops at the first rate that loses anything.
//!
//! The server's transaction table is raised to 1 000 000 entries here (default 10 000, beyond
//! which requests get 503): finished transactions stay in it for 64*T1 = 32 s (Timer J for a
//! REGISTER over UDP, Timers L and M for every INVITE, RFC 6026), so with the default a burst
//! fails after about 10 000 REGISTERs over UDP, 2 500 calls over UDP or 5 000 over TCP,
//! whatever the rate. Set `SIPP_PROXY_MAX_TRANSACTIONS=10000` to measure with the default.
//!
//! Run with `cargo bench -p p2psip-node --bench sipp_proxy` (needs `sipp`, Debian package
//! `sip-tester`; one to two minutes).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2psip_node::server::{self, Server};
use p2psip_node::transport;

#[path = "../tests/support/sipp.rs"]
pub mod sipp;

use sipp::{Scenario, Sipp, SippReport, Transport};

/// Transactions per step: at least 2000, and at least one second's worth.
const MIN_CALLS: u64 = 2000;
const REGISTER_RATES: [u32; 6] = [1000, 2000, 4000, 8000, 16000, 32000];
const CALL_RATES: [u32; 6] = [500, 1000, 2000, 4000, 8000, 16000];
/// sipp's time limit per step: a step that stalls stops here.
const STEP_LIMIT: Duration = Duration::from_secs(25);
/// How long the callee may take to exit once the caller is done: its 0.5 s timewait, plus
/// a call that waited in vain for its ACK or BYE (5 s receive timeout).
const CALLEE_GRACE: Duration = Duration::from_secs(7);
/// The server's transaction table, unless `SIPP_PROXY_MAX_TRANSACTIONS` says otherwise.
const MAX_TRANSACTIONS: usize = 1_000_000;

/// What one step measured.
struct Step {
    successful: u64,
    failed: u64,
    elapsed: Duration,
    why: String,
}

fn main() {
    if !sipp::sipp_available() {
        eprintln!("sipp is not installed (apt-get install sip-tester)");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    println!(
        "{:<9} {:<5} {:>10} {:>8} {:>7} {:>10}",
        "what", "proto", "offered/s", "done", "failed", "reached/s"
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        sweep("REGISTER", transport, &REGISTER_RATES, |rate| {
            runtime.block_on(registers(transport, rate))
        });
    }
    for transport in [Transport::Udp, Transport::Tcp] {
        sweep("call", transport, &CALL_RATES, |rate| {
            runtime.block_on(calls(transport, rate))
        });
    }
    println!(
        "total {:.1?} (transaction table: {})",
        started.elapsed(),
        max_transactions()
    );
}

/// Runs `step` at each rate until one loses something; prints a line per rate.
fn sweep(what: &str, transport: Transport, rates: &[u32], mut step: impl FnMut(u32) -> Step) {
    for &rate in rates {
        let s = step(rate);
        let reached = s.successful as f64 / s.elapsed.as_secs_f64();
        println!(
            "{:<9} {:<5} {:>10} {:>8} {:>7} {:>10.0}{}",
            what,
            format!("{transport:?}"),
            rate,
            s.successful,
            s.failed,
            reached,
            s.why
        );
        if s.failed > 0 {
            break;
        }
    }
}

/// A fresh server on 127.0.0.1 (UDP and TCP), and its address for `transport`.
async fn start_server(transport: Transport) -> (Server, SocketAddr) {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut config = server::Config {
        transports: transport::Config::default().udp(vec![any]).tcp(vec![any]),
        ..server::Config::default()
    };
    config.proxy.transactions.max_transactions = max_transactions();
    let server = Server::start(config).await.expect("server");
    let wanted = match transport {
        Transport::Udp => p2psip_sip::Transport::Udp,
        Transport::Tcp => p2psip_sip::Transport::Tcp,
    };
    let addr = server
        .local_addrs()
        .iter()
        .find(|p| p.transport == wanted)
        .expect("listening")
        .addr;
    (server, addr)
}

/// The size of the server's transaction table: `$SIPP_PROXY_MAX_TRANSACTIONS`, else
/// [`MAX_TRANSACTIONS`].
fn max_transactions() -> usize {
    std::env::var("SIPP_PROXY_MAX_TRANSACTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_TRANSACTIONS)
}

/// Runs a client sipp to the end on a blocking thread while the server runs.
async fn run(sipp: Sipp) -> SippReport {
    tokio::task::spawn_blocking(move || sipp.run())
        .await
        .expect("joined")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The non-zero failure counters of a report, for the table.
fn reasons(side: &str, report: &SippReport) -> String {
    let mut out = String::new();
    if report.failed > 0 || report.exit_code != 0 {
        out.push_str(&format!(
            "  {side}: exit {} {:?}",
            report.exit_code,
            report.failure_reasons()
        ));
        if let Some(dir) = &report.kept_files {
            out.push_str(&format!(" ({})", dir.display()));
        }
    }
    out
}

/// `max(2000, rate)` registrations at `rate` per second.
async fn registers(transport: Transport, rate: u32) -> Step {
    let (server, addr) = start_server(transport).await;
    let n = MIN_CALLS.max(u64::from(rate));
    let report = run(Sipp::new(Scenario::kept("register.xml"))
        .remote(addr)
        .transport(transport)
        .calls(n)
        .rate(rate)
        .max_concurrent(rate)
        .time_limit(STEP_LIMIT))
    .await;
    drop(server);
    Step {
        successful: report.successful,
        failed: report.failed + n.saturating_sub(report.successful + report.failed),
        elapsed: report.elapsed,
        why: reasons("register", &report),
    }
}

/// `max(2000, rate)` calls at `rate` per second through the proxy.
async fn calls(transport: Transport, rate: u32) -> Step {
    let (server, proxy) = start_server(transport).await;
    let n = MIN_CALLS.max(u64::from(rate));
    let callee = tokio::task::spawn_blocking(move || {
        Sipp::new(Scenario::kept("uas-rr.xml"))
            .transport(transport)
            .calls(n)
            .time_limit(STEP_LIMIT)
            .spawn()
    })
    .await
    .expect("joined")
    .unwrap_or_else(|e| panic!("{e}"));
    let registered = run(Sipp::new(Scenario::kept("register-one.xml"))
        .remote(proxy)
        .transport(transport)
        .arg("-key")
        .arg("contact_port")
        .arg(callee.port().to_string()))
    .await;
    registered.assert_all_successful(1);
    let caller = run(Sipp::new(Scenario::kept("uac-proxy.xml"))
        .remote(proxy)
        .transport(transport)
        .calls(n)
        .rate(rate)
        .max_concurrent(rate)
        .time_limit(STEP_LIMIT))
    .await;
    // The callee exits 0.5 s after its last BYE (its timewait); one still running after
    // that, and a receive timeout, is killed and the step failed.
    let deadline = Instant::now() + CALLEE_GRACE;
    let callee = tokio::task::spawn_blocking(move || callee.wait(deadline))
        .await
        .expect("joined");
    drop(server);
    let (callee_failed, callee_why) = match &callee {
        Ok(report) => (
            report.failed + n.saturating_sub(report.successful + report.failed),
            reasons("uas", report),
        ),
        Err(e) => (
            n,
            format!("  uas: {}", e.lines().next().unwrap_or_default()),
        ),
    };
    let caller_failed = caller.failed + n.saturating_sub(caller.successful + caller.failed);
    Step {
        successful: caller.successful,
        failed: caller_failed.max(callee_failed),
        elapsed: caller.elapsed,
        why: format!("{}{callee_why}", reasons("uac", &caller)),
    }
}
