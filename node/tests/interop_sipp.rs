//! Interoperability with sipp (Debian's `sip-tester`) on 127.0.0.1, RFC 3261 calls end to end:
//! sipp's built-in `uac` places 100 calls to our auto-answering UAS, and our UAC places 100
//! calls to sipp's built-in `uas`, over UDP and over TCP, with no failed call.
//!
//! Skipped with a message where sipp is not installed, except in CI (`CI` set), where that
//! fails: CI installs it.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2psip_node::agent::Agent;
use p2psip_node::transport;
use p2psip_sip::ua::{self, Event};

#[path = "support/sipp.rs"]
pub mod sipp;

use sipp::{Sipp, Transport};

const CALLS: u64 = 100;
const LIMIT: Duration = Duration::from_secs(60);
const SDP: &str = "v=0\r\no=p2psip 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

async fn agent(auto_answer: bool) -> Agent {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sockets = transport::Config::default().udp(vec![any]).tcp(vec![any]);
    let config = ua::Config {
        auto_answer,
        sdp: Some(SDP.into()),
        ..ua::Config::default()
    };
    Agent::start(sockets, config, 42).await.unwrap()
}

fn ours(t: Transport) -> p2psip_sip::Transport {
    match t {
        Transport::Udp => p2psip_sip::Transport::Udp,
        Transport::Tcp => p2psip_sip::Transport::Tcp,
    }
}

/// sipp's `uac` calls our UAS, which answers every call at once.
async fn sipp_calls_us(transport: Transport) {
    let mut uas = agent(true).await;
    let addr = uas
        .local_addrs()
        .iter()
        .find(|p| p.transport == ours(transport))
        .unwrap()
        .addr;
    let sipp = tokio::task::spawn_blocking(move || {
        Sipp::uac(addr)
            .transport(transport)
            .calls(CALLS)
            .rate(200)
            .time_limit(LIMIT)
            .run()
    });
    tokio::pin!(sipp);
    // Keep the agent running, and read its events, until sipp is done.
    let mut established = 0;
    let report = loop {
        tokio::select! {
            report = &mut sipp => break report.unwrap().unwrap_or_else(|e| panic!("{e}")),
            Some(event) = uas.next_event() => {
                if matches!(event, Event::Established { .. }) {
                    established += 1;
                }
            }
        }
    };
    report.assert_all_successful(CALLS);
    assert_eq!(established, CALLS, "our UAS saw every ACK");
}

/// Our UAC calls sipp's `uas` [`CALLS`] times, one call after the other: INVITE, ACK, BYE.
async fn we_call_sipp(transport: Transport) {
    if !sipp::require_sipp() {
        return;
    }
    let server = Sipp::uas()
        .transport(transport)
        .calls(CALLS)
        .time_limit(LIMIT)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut uac = agent(false).await;
    let param = if transport == Transport::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    let target = format!("sip:service@{}{param}", server.addr());
    for n in 0..CALLS {
        let call = uac.invite(&target).await.unwrap();
        wait_for(&mut uac, n, |e| *e == Event::Established { call }).await;
        uac.hangup(call).await.unwrap();
        wait_for(&mut uac, n, |e| {
            *e == Event::Ended {
                call,
                by_peer: false,
            }
        })
        .await;
    }
    // sipp's uas keeps each call 4 s after its BYE; our connections stay open meanwhile.
    let deadline = Instant::now() + LIMIT;
    let report = tokio::task::spawn_blocking(move || server.wait(deadline))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    report.assert_all_successful(CALLS);
    drop(uac);
}

async fn wait_for(agent: &mut Agent, n: u64, pick: impl Fn(&Event) -> bool) {
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match agent.next_event().await {
                Some(e) if pick(&e) => return Ok(()),
                Some(Event::Failed { status, .. }) => {
                    return Err(format!("call {n} failed: {status}"));
                }
                Some(_) => {}
                None => return Err("the agent stopped".to_owned()),
            }
        }
    })
    .await;
    match seen {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("call {n}: no event in 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_calls_our_uas_over_udp() {
    if sipp::require_sipp() {
        sipp_calls_us(Transport::Udp).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_calls_our_uas_over_tcp() {
    if sipp::require_sipp() {
        sipp_calls_us(Transport::Tcp).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_uac_calls_sipp_uas_over_udp() {
    we_call_sipp(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_uac_calls_sipp_uas_over_tcp() {
    we_call_sipp(Transport::Tcp).await;
}
