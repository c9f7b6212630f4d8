//! Small testnets: a node that leaves gracefully hands its data over first; testnets with
//! different overlay names never exchange a message.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod support;

use std::collections::HashSet;

use libp2p::PeerId;
use p2psip_overlay::data::Kind;
use p2psip_testnet::Options;
use support::{User, fetches, testnet, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_leave_gracefully_hand_their_data_over() {
    let mut net = testnet(8, Options::default()).await;
    let dave = User::claim(net.node(0).unwrap(), "sip:dave@example.org").await;
    // Stored once, not published: only the handovers can keep it.
    let entry = dave.register(net.node(0).unwrap(), 3600).await;

    // Every holder leaves, one after the other; each hands over before it goes.
    let first = dave.holders(&net, &entry.0);
    assert!(first.len() >= 2, "held by {first:?}");
    for &holder in &first {
        within("leave", 60, net.stop(holder)).await.unwrap();
        let now = dave.holders(&net, &entry.0);
        assert!(!now.is_empty(), "nobody holds it after node {holder} left");
    }
    let left: HashSet<usize> = first.clone();
    let now = dave.holders(&net, &entry.0);
    assert!(now.is_disjoint(&left));
    for (i, node) in net.live() {
        assert!(fetches(node, &dave, &entry).await, "node {i} misses it");
    }
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnets_with_different_names_never_exchange_a_message() {
    let alpha = testnet(4, Options::default().with_overlay("alpha")).await;
    let beta = testnet(4, Options::default().with_overlay("beta")).await;
    let alpha_ids: HashSet<PeerId> = alpha.live().map(|(_, node)| node.node_id()).collect();
    let beta_ids: HashSet<PeerId> = beta.live().map(|(_, node)| node.node_id()).collect();

    // A registration in alpha is not found from beta.
    let carol = User::claim(alpha.node(1).unwrap(), "sip:carol@example.org").await;
    let entry = carol.register(alpha.node(1).unwrap(), 3600).await;
    assert!(fetches(alpha.node(2).unwrap(), &carol, &entry).await);
    let from_beta = beta
        .node(2)
        .unwrap()
        .fetch(carol.resource, Kind::SIP_REGISTRATION)
        .await
        .unwrap();
    assert!(from_beta.is_empty());

    // Even connected at the transport level, a node of beta does not speak alpha's protocol.
    let a = alpha.node(0).unwrap();
    let b = beta.node(0).unwrap();
    let b_addr = b.listen_addrs().await.unwrap().remove(0);
    let _ = a.network().dial(b_addr).await;
    let refused = within("ping", 30, a.ping(b.node_id())).await.unwrap_err();
    assert!(refused.to_string().contains("does not speak"), "{refused}");
    let refused = within("route", 30, a.route(b.node_id(), b"hi".to_vec()))
        .await
        .unwrap_err();
    eprintln!("route across overlays: {refused}");

    for (net, others) in [(&alpha, &beta_ids), (&beta, &alpha_ids)] {
        for (_, node) in net.live() {
            let table: HashSet<PeerId> = node
                .network()
                .routing_table()
                .await
                .unwrap()
                .into_iter()
                .collect();
            assert!(table.is_disjoint(others));
            assert_eq!(node.bad_messages(), 0);
        }
    }
    alpha.shutdown().await;
    beta.shutdown().await;
}
