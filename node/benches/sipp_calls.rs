//! Calls per second between sipp's built-in `uac` and our auto-answering UAS on loopback
//! (INVITE, 100, 200, ACK, BYE, 200), over UDP and TCP: for each offered rate, a second's worth
//! of calls (at least 2000),
//! and the throughput reached with no failed call. Prints a table; stops at the first rate
//! that loses calls.
//!
//! Run with `cargo bench -p p2psip-node --bench sipp_calls` (needs `sipp`, Debian package
//! `sip-tester`; about a minute).

use std::net::SocketAddr;
use std::time::Duration;

use p2psip_node::agent::Agent;
use p2psip_node::transport;
use p2psip_sip::ua;

#[path = "../tests/support/sipp.rs"]
pub mod sipp;

use sipp::{Sipp, Transport};

/// Calls per step: at least 2000, and at least one second's worth.
const MIN_CALLS: u64 = 2000;
const RATES: [u32; 6] = [500, 1000, 2000, 4000, 8000, 16000];

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
    println!(
        "{:<5} {:>12} {:>10} {:>8} {:>12}",
        "proto", "offered/s", "calls", "failed", "reached/s"
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        for rate in RATES {
            let (successful, failed, elapsed) = runtime.block_on(run(transport, rate));
            let reached = successful as f64 / elapsed.as_secs_f64();
            println!(
                "{:<5} {:>12} {:>10} {:>8} {:>12.0}",
                format!("{transport:?}"),
                rate,
                successful,
                failed,
                reached
            );
            if failed > 0 {
                break;
            }
        }
    }
}

async fn run(transport: Transport, rate: u32) -> (u64, u64, Duration) {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let sockets = transport::Config::default().udp(vec![any]).tcp(vec![any]);
    let config = ua::Config {
        auto_answer: true,
        sdp: Some("v=0\r\n".into()),
        ..ua::Config::default()
    };
    let mut uas = Agent::start(sockets, config, 7).await.expect("agent");
    let wanted = match transport {
        Transport::Udp => p2psip_sip::Transport::Udp,
        Transport::Tcp => p2psip_sip::Transport::Tcp,
    };
    let addr = uas
        .local_addrs()
        .iter()
        .find(|p| p.transport == wanted)
        .expect("listening")
        .addr;
    let sipp = tokio::task::spawn_blocking(move || {
        Sipp::uac(addr)
            .transport(transport)
            .calls(MIN_CALLS.max(u64::from(rate)))
            .rate(rate)
            .max_concurrent(rate)
            .time_limit(Duration::from_secs(60))
            .run()
    });
    tokio::pin!(sipp);
    let report = loop {
        tokio::select! {
            report = &mut sipp => break report.expect("joined").expect("sipp ran"),
            Some(_) = uas.next_event() => {}
        }
    };
    (report.successful, report.failed, report.elapsed)
}
