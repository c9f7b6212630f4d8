//! Two built-in user agents on two nodes of a 16-node overlay, over real sockets: each
//! registers its AOR through its node (published in the overlay), Alice calls Bob by AOR with
//! an SDP offer (ringing, answered, timed), the dialog runs end node to end node (no third
//! node sees an in-dialog message), Alice hangs up; Bob sends Alice a MESSAGE, Alice pings
//! Bob with OPTIONS; once Bob unregisters, a call to him is 404.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use p2psip_node::agent::{self, Agent, Report};
use p2psip_sip::ua::Event;
use p2psip_sip::{Method, StatusCode, Transport};

#[path = "support/overlay.rs"]
pub mod overlay;

const WAIT: Duration = Duration::from_secs(20);
const ALICE: &str = "sip:alice@p2psip.test";
const BOB: &str = "sip:bob@p2psip.test";

/// Waits for the first report that `pick` accepts.
async fn wait_for(agent: &mut Agent, what: &str, pick: impl Fn(&Event) -> bool) -> Report {
    tokio::time::timeout(WAIT, async {
        loop {
            let report = agent.next_report().await.expect("agent stopped");
            if pick(&report.event) {
                return report;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

async fn phone(net: &overlay::Nodes, node: usize, user: &str, auto: bool) -> Agent {
    let offer = agent::audio_offer(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000 + node as u16, 1);
    Agent::for_node(
        net.sip(node, Transport::Udp),
        user,
        auto,
        Some(offer),
        node as u64,
    )
    .await
    .unwrap()
}

async fn register(agent: &mut Agent, aor: &str) {
    agent.register(aor, 600).await.unwrap();
    let report = wait_for(agent, "registration", |e| {
        matches!(
            e,
            Event::Registered { .. } | Event::RegistrationFailed { .. }
        )
    })
    .await;
    assert!(
        matches!(report.event, Event::Registered { aor: ref got, .. } if got == aor),
        "{:?}",
        report.event
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_agents_call_and_message_across_16_nodes() {
    overlay::logs();
    let net = overlay::Nodes::start(16).await;
    let (a, b) = (3, 12);
    let mut alice = phone(&net, a, "alice", false).await;
    let mut bob = phone(&net, b, "bob", true).await;
    register(&mut alice, ALICE).await;
    register(&mut bob, BOB).await;

    // The call: ringing, answered, both sides up, timed from the INVITE.
    let call = alice.invite(BOB).await.unwrap();
    let ringing = wait_for(&mut alice, "180", |e| *e == Event::Ringing { call }).await;
    let srd = ringing.timings.unwrap().ringing.unwrap();
    let up = wait_for(&mut alice, "answer", |e| *e == Event::Established { call }).await;
    let timings = up.timings.unwrap();
    assert!(timings.answered.unwrap() >= srd, "{timings:?}");
    let incoming = wait_for(&mut bob, "incoming", |e| {
        matches!(e, Event::Incoming { .. })
    })
    .await;
    let Event::Incoming { request, .. } = incoming.event else {
        unreachable!()
    };
    // Alice's offer, anchored by Bob's node: its codecs, the node's port instead of hers.
    let offer = String::from_utf8_lossy(request.body()).into_owned();
    assert!(
        offer.contains(" RTP/AVP 0 8 101") && !offer.contains("m=audio 40003 "),
        "Bob got Alice's offer, anchored at his node:\n{offer}"
    );
    wait_for(&mut bob, "ACK", |e| matches!(e, Event::Established { .. })).await;

    alice.hangup(call).await.unwrap();
    let ended = wait_for(
        &mut alice,
        "end",
        |e| matches!(e, Event::Ended { call: c, by_peer: false } if *c == call),
    )
    .await;
    assert!(ended.timings.unwrap().duration().is_some());
    wait_for(&mut bob, "BYE", |e| {
        matches!(e, Event::Ended { by_peer: true, .. })
    })
    .await;

    // A MESSAGE from Bob to Alice, an OPTIONS from Alice to Bob, by AOR.
    let sent = bob.message(ALICE, "hello from bob").await.unwrap();
    let done = wait_for(
        &mut bob,
        "MESSAGE answer",
        |e| matches!(e, Event::Completed { request, .. } if *request == sent),
    )
    .await;
    assert!(
        matches!(
            done.event,
            Event::Completed {
                status: StatusCode::OK,
                method: Method::Message,
                ..
            }
        ),
        "{:?}",
        done.event
    );
    let got = wait_for(&mut alice, "MESSAGE", |e| {
        matches!(e, Event::Message { .. })
    })
    .await;
    let Event::Message { request } = got.event else {
        unreachable!()
    };
    assert_eq!(&request.body()[..], b"hello from bob");
    let ping = alice.options(BOB).await.unwrap();
    let pong = wait_for(
        &mut alice,
        "OPTIONS answer",
        |e| matches!(e, Event::Completed { request, .. } if *request == ping),
    )
    .await;
    assert!(matches!(
        pong.event,
        Event::Completed {
            status: StatusCode::OK,
            ..
        }
    ));

    // The dialog went end node to end node: no third node saw an in-dialog request (the ACK
    // and the BYE) or forwarded a Route for the two.
    let (ends, third): (Vec<_>, Vec<_>) = net
        .nodes
        .iter()
        .enumerate()
        .partition(|(i, _)| *i == a || *i == b);
    assert!(ends[1].1.stats().overlay_in_dialog.load(Ordering::Relaxed) >= 2);
    for (i, node) in third {
        assert_eq!(
            node.stats().overlay_in_dialog.load(Ordering::Relaxed),
            0,
            "node {i}"
        );
        assert_eq!(
            node.stats().overlay_requests.load(Ordering::Relaxed),
            0,
            "node {i}"
        );
    }

    // Unregistered, Bob cannot be called.
    bob.unregister(BOB).await.unwrap();
    wait_for(&mut bob, "unregistered", |e| {
        matches!(e, Event::Unregistered { .. })
    })
    .await;
    let call = alice.invite(BOB).await.unwrap();
    let failed = wait_for(&mut alice, "404", |e| matches!(e, Event::Failed { .. })).await;
    assert_eq!(
        failed.event,
        Event::Failed {
            call,
            status: StatusCode::NOT_FOUND
        }
    );
}
