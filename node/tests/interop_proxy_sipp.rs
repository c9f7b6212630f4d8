//! The node's SIP server (proxy and registrar) against sipp (Debian's `sip-tester`) on
//! 127.0.0.1, with scenario files of our own in `node/tests/sipp/`:
//!
//! - `register.xml`: 100 users register, and every 200 lists the new binding;
//! - `uas-rr.xml` registers as `service` (through `register-one.xml`), and `uac-proxy.xml`
//!   places 100 calls to `sip:service@<server>` through the proxy, over UDP and over TCP:
//!   INVITE, 180, 200 (Record-Route mirrored by the callee), then ACK and BYE along the route
//!   set, through the proxy again, with no failed call on either side.
//!
//! Skipped with a message where sipp is not installed, except in CI (`CI` set), where that
//! fails: CI installs it.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2psip_node::server::{self, Server};
use p2psip_node::transport;

#[path = "support/sipp.rs"]
pub mod sipp;

use sipp::{Scenario, Sipp, SippReport, Transport};

const CALLS: u64 = 100;
const LIMIT: Duration = Duration::from_secs(30);

/// The server on 127.0.0.1 (UDP and TCP, free ports), with its default configuration: a
/// record-routing stateful proxy, a registrar for its own addresses, no authentication.
async fn start_server() -> Server {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = server::Config {
        transports: transport::Config::default().udp(vec![any]).tcp(vec![any]),
        ..server::Config::default()
    };
    Server::start(config).await.unwrap()
}

/// The server's address for sipp's transport.
fn server_addr(server: &Server, transport: Transport) -> SocketAddr {
    let wanted = match transport {
        Transport::Udp => p2psip_sip::Transport::Udp,
        Transport::Tcp => p2psip_sip::Transport::Tcp,
    };
    server
        .local_addrs()
        .iter()
        .find(|p| p.transport == wanted)
        .unwrap()
        .addr
}

/// Runs a client sipp to the end on a blocking thread, while the server keeps running.
async fn run(sipp: Sipp) -> SippReport {
    tokio::task::spawn_blocking(move || sipp.run())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_100_users() {
    if !sipp::require_sipp() {
        return;
    }
    let server = start_server().await;
    let registrar = server_addr(&server, Transport::Udp);
    let report = run(Sipp::new(Scenario::kept("register.xml"))
        .remote(registrar)
        .calls(CALLS)
        .rate(200)
        .time_limit(LIMIT))
    .await;
    // A 200 that does not list the new binding fails its call (check_it in register.xml).
    report.assert_all_successful(CALLS);
    drop(server);
}

/// sipp's `uas-rr.xml` registers as `service`, and sipp's `uac-proxy.xml` calls it
/// [`CALLS`] times through the server.
async fn calls_through_the_proxy(transport: Transport) {
    if !sipp::require_sipp() {
        return;
    }
    let started = Instant::now();
    let server = start_server().await;
    let proxy = server_addr(&server, transport);
    let callee = tokio::task::spawn_blocking(move || {
        Sipp::new(Scenario::kept("uas-rr.xml"))
            .transport(transport)
            .calls(CALLS)
            .time_limit(LIMIT)
            .trace_messages(true)
            .spawn()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let registered = run(Sipp::new(Scenario::kept("register-one.xml"))
        .remote(proxy)
        .transport(transport)
        .arg("-key")
        .arg("contact_port")
        .arg(callee.port().to_string())
        .time_limit(Duration::from_secs(10)))
    .await;
    registered.assert_all_successful(1);
    let caller = run(Sipp::new(Scenario::kept("uac-proxy.xml"))
        .remote(proxy)
        .transport(transport)
        .calls(CALLS)
        .rate(100)
        .time_limit(LIMIT)
        .trace_messages(true))
    .await;
    // The callee ends each call 0.5 s after its BYE, then exits; the server stays up meanwhile.
    // A call that lost its ACK or BYE times out there 5 s after its last message.
    let deadline = Instant::now() + Duration::from_secs(10);
    let callee = tokio::task::spawn_blocking(move || callee.wait(deadline))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    caller.assert_all_successful(CALLS);
    // Each callee call checked that the INVITE was record-routed, and that ACK and BYE came
    // through the proxy (two Vias) with the proxy's Route removed (uas-rr.xml).
    callee.assert_all_successful(CALLS);
    drop(server);
    eprintln!(
        "{transport:?}: {CALLS} calls through the proxy in {:.2?} (caller {:.2?})",
        started.elapsed(),
        caller.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_through_the_proxy_over_udp() {
    calls_through_the_proxy(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_through_the_proxy_over_tcp() {
    calls_through_the_proxy(Transport::Tcp).await;
}
