//! Two user agents on real sockets (127.0.0.1, port 0) calling each other: the sans-IO core
//! driven by the node's task and transports.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use p2psip_node::agent::Agent;
use p2psip_node::transport;
use p2psip_sip::Transport;
use p2psip_sip::ua::{self, Event};

const WAIT: Duration = Duration::from_secs(10);

async fn agent(auto_answer: bool, seed: u64) -> Agent {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sockets = transport::Config::default().udp(vec![any]).tcp(vec![any]);
    let config = ua::Config {
        auto_answer,
        sdp: Some("v=0\r\n".into()),
        ..ua::Config::default()
    };
    Agent::start(sockets, config, seed).await.unwrap()
}

/// Waits for the first event that `pick` accepts.
async fn wait_for(agent: &mut Agent, pick: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = agent.next_event().await.expect("agent stopped");
            if pick(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event in time")
}

async fn call_and_hang_up(transport: Transport) {
    let mut alice = agent(false, 1).await;
    let mut bob = agent(true, 2).await;
    let bob_addr = bob
        .local_addrs()
        .iter()
        .find(|p| p.transport == transport)
        .unwrap()
        .addr;
    let param = if transport == Transport::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    let call = alice
        .invite(&format!("sip:bob@{bob_addr}{param}"))
        .await
        .unwrap();
    wait_for(&mut alice, |e| *e == Event::Established { call }).await;
    wait_for(&mut bob, |e| matches!(e, Event::Established { .. })).await;
    alice.hangup(call).await.unwrap();
    wait_for(&mut alice, |e| {
        *e == Event::Ended {
            call,
            by_peer: false,
        }
    })
    .await;
    wait_for(&mut bob, |e| {
        matches!(e, Event::Ended { by_peer: true, .. })
    })
    .await;
}

#[tokio::test]
async fn call_over_udp() {
    call_and_hang_up(Transport::Udp).await;
}

#[tokio::test]
async fn call_over_tcp() {
    call_and_hang_up(Transport::Tcp).await;
}

/// A call to nobody fails with 408 after Timer B; on paused time that takes no real time.
#[tokio::test(start_paused = true)]
async fn call_to_nobody_times_out() {
    let mut alice = agent(false, 3).await;
    // A socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call = alice
        .invite(&format!("sip:nobody@{}", silent.local_addr().unwrap()))
        .await
        .unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(Event::Failed { call: c, status }) = alice.next_event().await
                && c == call
            {
                return status.as_u16();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(failed, 408);
}
