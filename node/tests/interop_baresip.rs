//! The node's SIP server (proxy and registrar) with two baresip user agents (Debian's
//! `baresip-core`) on 127.0.0.1, driven by `support/baresip.rs`:
//!
//! alice and bob register `sip:alice@example.p2p` and `sip:bob@example.p2p` at the server
//! (their outbound proxy); alice calls `sip:bob@example.p2p` through it; bob answers at once;
//! both send a sine tone in PCMU for about two seconds; alice hangs up. The test checks both
//! registrations, the 180 and the call established on both sides, RTP arriving on both
//! sides at the codec's rate (50 packets a second), and that alice's BYE reached bob.
//!
//! The same call then runs with no server at all: alice registers at node 1 and bob at node 3
//! of a 5-node P2PSIP overlay, and the call crosses the overlay.
//!
//! Skipped with a message where baresip is not installed, except in CI (`CI` set), where that
//! fails: CI installs it.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use p2psip_node::server::{self, Server};
use p2psip_node::transport;
use p2psip_sip::registrar;

#[path = "support/baresip.rs"]
pub mod baresip;
#[path = "support/overlay.rs"]
pub mod overlay;

use baresip::{Baresip, Event, EventKind, RtpSummary};

/// The domain of the AORs, served by the server's registrar.
const DOMAIN: &str = "example.p2p";

/// How long any one step may take.
const LIMIT: Duration = Duration::from_secs(10);

/// How long the call is held once RTP flows both ways.
const CALL_LENGTH: Duration = Duration::from_secs(2);

/// The least share of the packets the codec's rate predicts that must arrive.
const MIN_SHARE: f64 = 0.5;

/// The server on 127.0.0.1 (UDP and TCP, free ports): a record-routing stateful proxy and a
/// registrar for [`DOMAIN`], no authentication.
async fn start_server() -> Server {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = server::Config {
        transports: transport::Config::default().udp(vec![any]).tcp(vec![any]),
        registrar: registrar::Config::default().domain(DOMAIN),
        ..server::Config::default()
    };
    Server::start(config).await.unwrap()
}

/// The server's UDP address.
fn udp_addr(server: &Server) -> SocketAddr {
    server
        .local_addrs()
        .iter()
        .find(|p| p.transport == p2psip_sip::Transport::Udp)
        .unwrap()
        .addr
}

/// A baresip for `user`@[`DOMAIN`], registering at and calling through `proxy`.
async fn start_user(user: &str, proxy: SocketAddr) -> Baresip {
    let config = baresip::Config::new(format!("sip:{user}@{DOMAIN}"))
        .outbound(proxy)
        .password(format!("{user}-secret"));
    Baresip::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Unwraps a harness result, panicking with its message (which has baresip's report).
#[track_caller]
fn ok<T>(result: Result<T, String>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_baresip_through_the_proxy() {
    if !baresip::require_baresip() {
        return;
    }
    let server = start_server().await;
    let proxy = udp_addr(&server);
    call(proxy, proxy).await;
    drop(server);
}

/// Alice registers at node 1 and Bob at node 3 of a 5-node overlay; the call crosses the
/// overlay, with no server anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_baresip_across_a_5_node_overlay() {
    if !baresip::require_baresip() {
        return;
    }
    let net = overlay::Nodes::start(5).await;
    let udp = p2psip_sip::Transport::Udp;
    call(net.sip(1, udp), net.sip(3, udp)).await;
    let third = &net.nodes[0];
    assert_eq!(
        third
            .stats()
            .overlay_in_dialog
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// Alice (registered through `alice_proxy`) calls Bob (through `bob_proxy`) for
/// [`CALL_LENGTH`] and hangs up; checks the call on both sides and the RTP both ways.
async fn call(alice_proxy: SocketAddr, bob_proxy: SocketAddr) {
    let (alice, bob) = tokio::join!(
        start_user("alice", alice_proxy),
        start_user("bob", bob_proxy)
    );

    let (registered_a, registered_b) =
        tokio::join!(alice.wait_registered(LIMIT), bob.wait_registered(LIMIT));
    ok(registered_a);
    ok(registered_b);

    ok(alice.dial(&format!("sip:bob@{DOMAIN}")).await);
    let (established_a, established_b) = tokio::join!(
        alice.wait_call_established(LIMIT),
        bob.wait_call_established(LIMIT)
    );
    let (established_a, established_b) = (ok(established_a), ok(established_b));
    // bob answers at once, but with a 180 first, forwarded by the proxy.
    let ringing = ok(alice.wait_event(EventKind::CallRinging, LIMIT).await);
    assert!(
        ringing.at <= established_a.at,
        "the 180 came after the 200: {ringing}\n{}",
        alice.report()
    );
    assert_eq!(
        established_a.call_id,
        established_b.call_id,
        "alice and bob are not in the same call\n{}\n{}",
        alice.report(),
        bob.report()
    );
    assert_eq!(established_a.direction.as_deref(), Some("outgoing"));
    assert_eq!(established_b.direction.as_deref(), Some("incoming"));
    // The first RTP packet arrived on both sides.
    let (rtp_a, rtp_b) = tokio::join!(
        alice.wait_event(EventKind::CallRtpEstablished, LIMIT),
        bob.wait_event(EventKind::CallRtpEstablished, LIMIT)
    );
    ok(rtp_a);
    ok(rtp_b);

    // The one deliberate sleep: the call is held while the tone flows both ways.
    tokio::time::sleep(CALL_LENGTH).await;
    ok(alice.hangup().await);

    let (closed_a, closed_b) =
        tokio::join!(alice.wait_call_closed(LIMIT), bob.wait_call_closed(LIMIT));
    let (closed_a, closed_b) = (ok(closed_a), ok(closed_b));
    // bob's call ended by alice's BYE, through the proxy along the route set.
    assert!(
        closed_b.closed_by_peer(),
        "bob's call did not end by alice's BYE: {closed_b}\n{}",
        bob.report()
    );
    let (summary_a, summary_b) =
        tokio::join!(alice.wait_rtp_summary(LIMIT), bob.wait_rtp_summary(LIMIT));
    let (summary_a, summary_b) = (ok(summary_a), ok(summary_b));
    eprintln!(
        "alice: {summary_a}, up {:.2?}\nbob: {summary_b}, up {:.2?}",
        closed_a.at - established_a.at,
        closed_b.at - established_b.at
    );

    assert_rate(&alice, &summary_a, &established_a, &closed_a);
    assert_rate(&bob, &summary_b, &established_b, &closed_b);
    // Nothing arrives that was not sent: no packet duplicated or looped.
    assert!(
        summary_a.receive.packets <= summary_b.transmit.packets
            && summary_b.receive.packets <= summary_a.transmit.packets,
        "more RTP received than sent: alice {summary_a}; bob {summary_b}"
    );
}

/// Checks that `who` sent and received RTP at about the codec's rate while the call was up,
/// from its `CALL_ESTABLISHED` to its `CALL_CLOSED`.
#[track_caller]
fn assert_rate(who: &Baresip, summary: &RtpSummary, established: &Event, closed: &Event) {
    let up = closed.at - established.at;
    let expected = up.as_secs_f64() * who.config().packets_per_second();
    let in_range = |packets: u64| {
        let packets = packets as f64;
        packets >= MIN_SHARE * expected && packets <= 1.5 * expected + 5.0
    };
    assert!(
        summary.media == "audio" && in_range(summary.receive.packets),
        "{} received {} RTP packets in {up:.2?}, expected about {expected:.0} \
         ({} a second): {summary}\n{}",
        who.aor(),
        summary.receive.packets,
        who.config().packets_per_second(),
        who.report()
    );
    assert!(
        in_range(summary.transmit.packets),
        "{} sent {} RTP packets in {up:.2?}, expected about {expected:.0}: {summary}\n{}",
        who.aor(),
        summary.transmit.packets,
        who.report()
    );
    assert_eq!(
        summary.receive.errors,
        0,
        "{}: RTP packets that could not be used: {summary}",
        who.aor()
    );
}
