//! The overlay network on loopback: real libp2p swarms (QUIC or TCP) on 127.0.0.1, port 0,
//! mDNS off. Every wait is for an event or an answer, under a timeout; nothing sleeps.

// Helpers outside #[test] functions may unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, future::Future, num::NonZeroUsize, time::Duration};

use libp2p::{Multiaddr, PeerId, identity::Keypair, kad::KBucketKey};
use p2psip_overlay::network::{Config, Error, Event, Events, Network};
use tokio::{sync::mpsc, time::timeout};

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn config(overlay: &str, listen: Multiaddr) -> Config {
    Config::default()
        .with_overlay(overlay)
        .with_listen([listen])
        .with_mdns(false)
}

/// A running node whose inbound requests are answered `re:<request>` by a background task;
/// its other events are forwarded to `events`.
struct Node {
    net: Network,
    peer: PeerId,
    /// Its first listen address, with `/p2p/<peer id>`.
    addr: Multiaddr,
    events: mpsc::Receiver<Event>,
}

/// Starts a node without a background task: the caller reads its events.
async fn start(config: Config) -> (Network, Events, Multiaddr) {
    let (net, events) = Network::start(Keypair::generate_ed25519(), config)
        .await
        .unwrap();
    let addr = net.listen_addrs().await.unwrap()[0]
        .clone()
        .with_p2p(net.local_peer_id())
        .unwrap();
    (net, events, addr)
}

/// Starts a node that answers every request with `re:` and the request.
async fn echo_node(config: Config) -> Node {
    let (net, mut events, addr) = start(config).await;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Request {
                    frame, responder, ..
                } => {
                    let _ = responder.respond([b"re:".as_slice(), &frame].concat());
                }
                other => {
                    let _ = tx.try_send(other);
                }
            }
        }
    });
    Node {
        peer: net.local_peer_id(),
        net,
        addr,
        events: rx,
    }
}

/// Waits (at most [`WAIT`]) for `future`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits for the first event that `pick` accepts, skipping the others.
async fn wait_for<T>(
    what: &str,
    events: &mut mpsc::Receiver<Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            let event = events.recv().await.expect("the network stopped");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
}

/// Waits until `events` has reported every peer of `peers` entering the routing table.
async fn wait_for_routing(events: &mut mpsc::Receiver<Event>, peers: &[PeerId]) {
    let mut missing: HashSet<PeerId> = peers.iter().copied().collect();
    while !missing.is_empty() {
        let peer = wait_for("routing table updates", events, |event| match event {
            Event::RoutingUpdated(peer) => Some(*peer),
            _ => None,
        })
        .await;
        missing.remove(&peer);
    }
}

async fn request_response_over(listen: fn() -> Multiaddr) {
    let a = echo_node(config("test", listen())).await;
    let mut b = echo_node(config("test", listen())).await;

    // `a` knows where `b` is but is not connected: `request` dials.
    a.net.add_address(b.peer, b.addr.clone()).await.unwrap();
    let answer = within("the response", a.net.request(b.peer, b"hello".to_vec())).await;
    assert_eq!(answer.unwrap(), b"re:hello");
    wait_for("b sees a connect", &mut b.events, |event| {
        matches!(event, Event::PeerConnected(peer) if *peer == a.peer).then_some(())
    })
    .await;

    // Both ways, many at once, on the same connection.
    let requests = (0..20u8).map(|i| b.net.request(a.peer, vec![i; 1000]));
    let answers = within("20 responses", futures::future::join_all(requests)).await;
    for (i, answer) in (0..20u8).zip(answers) {
        assert_eq!(answer.unwrap(), [b"re:".as_slice(), &[i; 1000]].concat());
    }
    assert_eq!(a.net.connected_peers().await.unwrap(), vec![b.peer]);

    // After shutdown the handle reports that the network has stopped.
    a.net.shutdown().await.unwrap();
    assert!(matches!(
        a.net.request(b.peer, b"late".to_vec()).await,
        Err(Error::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_a_request_over_quic() {
    request_response_over(quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_a_request_over_tcp() {
    let a = echo_node(config("test", tcp())).await;
    assert!(a.addr.to_string().contains("/tcp/"), "{}", a.addr);
    request_response_over(tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_returns_the_peer_id() {
    let a = echo_node(config("test", quic())).await;
    let b = echo_node(config("test", quic())).await;
    let plain: Multiaddr = b.net.listen_addrs().await.unwrap()[0].clone();
    assert_eq!(within("dial", a.net.dial(plain)).await.unwrap(), b.peer);
    // Dialling a connected peer by its full address returns at once.
    assert_eq!(
        within("dial", a.net.dial(b.addr.clone())).await.unwrap(),
        b.peer
    );
    // Nobody listens here: the dial fails with a reason.
    let nobody: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    assert!(matches!(
        within("failed dial", a.net.dial(nobody)).await,
        Err(Error::Dial { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_bootstrapping_from_one_agree_on_the_closest_peers() {
    let mut first = echo_node(config("eight", quic())).await;
    let mut nodes = Vec::new();
    for _ in 1..8 {
        let config = config("eight", quic()).with_bootstrap([first.addr.clone()]);
        nodes.push(echo_node(config).await);
    }
    let others: Vec<PeerId> = nodes.iter().map(|node| node.peer).collect();
    // The first node learns everyone as they connect and identify themselves.
    wait_for_routing(&mut first.events, &others).await;

    let bootstraps = nodes.iter().map(|node| node.net.bootstrap());
    for result in within("8 bootstraps", futures::future::join_all(bootstraps)).await {
        result.unwrap();
    }
    nodes.push(first);

    let everyone: Vec<PeerId> = nodes.iter().map(|node| node.peer).collect();
    for key in [
        b"sip:alice@example.org".to_vec(),
        b"sip:bob@example.org".to_vec(),
    ] {
        let target = KBucketKey::new(key.clone());
        let mut expected = everyone.clone();
        expected.sort_by_key(|peer| target.distance(&KBucketKey::from(*peer)));

        let lookups = nodes.iter().map(|node| node.net.closest_peers(key.clone()));
        for (node, found) in nodes
            .iter()
            .zip(within("8 lookups", futures::future::join_all(lookups)).await)
        {
            assert_eq!(found.unwrap(), expected, "as seen by {}", node.peer);
        }

        // A lookup with time enough ends on its own, after hearing from the 6 closest.
        let six = NonZeroUsize::new(6).unwrap();
        let node = &nodes[0];
        let found = within(
            "a lookup of 6",
            node.net
                .closest_n_within(key.clone(), six, Duration::from_secs(10)),
        )
        .await
        .unwrap();
        assert_eq!(found[..6], expected[..6]);
        // One cut short at once still answers, with what it heard by then: this node at
        // least (before, the caller only heard that the query had timed out).
        let cut = within(
            "a lookup cut short",
            node.net.closest_n_within(key.clone(), six, Duration::ZERO),
        )
        .await
        .unwrap();
        assert!(cut.contains(&node.peer), "{cut:?}");
    }
    // And every routing table ends up holding the 7 others (an inbound peer enters once its
    // identify arrives, so wait for the ones not there yet).
    for node in &mut nodes {
        let table = node.net.routing_table().await.unwrap();
        assert!(!table.contains(&node.peer));
        let missing: Vec<PeerId> = everyone
            .iter()
            .copied()
            .filter(|peer| *peer != node.peer && !table.contains(peer))
            .collect();
        wait_for_routing(&mut node.events, &missing).await;
        assert_eq!(node.net.routing_table().await.unwrap().len(), 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_with_different_names_do_not_mix() {
    let mut a = echo_node(config("alpha", quic())).await;
    let b = echo_node(config("beta", quic())).await;
    let mut c = echo_node(config("alpha", quic())).await;

    // A connection between overlays is possible, but neither speaks the other's protocols.
    assert_eq!(
        within("dial", a.net.dial(b.addr.clone())).await.unwrap(),
        b.peer
    );
    let refused = within("a refused request", a.net.request(b.peer, b"hi".to_vec())).await;
    assert!(
        matches!(&refused, Err(Error::UnsupportedProtocol { peer, protocol })
            if *peer == b.peer && protocol == "/p2psip/alpha/reload/1"),
        "{refused:?}"
    );
    let refused = within("b refused request", b.net.request(a.peer, b"hi".to_vec())).await;
    assert!(
        matches!(refused, Err(Error::UnsupportedProtocol { .. })),
        "{refused:?}"
    );

    // A peer of the same overlay does enter the routing table (both ways)...
    within("dial", a.net.dial(c.addr.clone())).await.unwrap();
    wait_for_routing(&mut a.events, &[c.peer]).await;
    wait_for_routing(&mut c.events, &[a.peer]).await;
    assert_eq!(
        a.net.request(c.peer, b"hi".to_vec()).await.unwrap(),
        b"re:hi"
    );

    // ...the other overlay's never does.
    assert_eq!(a.net.routing_table().await.unwrap(), vec![c.peer]);
    assert_eq!(c.net.routing_table().await.unwrap(), vec![a.peer]);
    assert!(b.net.routing_table().await.unwrap().is_empty());
    assert!(matches!(b.net.bootstrap().await, Err(Error::NoKnownPeers)));
    let found = within("a lookup", a.net.closest_peers(b"key".to_vec()))
        .await
        .unwrap();
    assert!(!found.contains(&b.peer), "{found:?}");
    assert_eq!(found.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_and_a_peer_sending_them_is_disconnected() {
    const SMALL: usize = 1024;
    // The receiver accepts small frames only and drops a peer after 3 bad ones; the sender's
    // own limit is large, so it does send what the receiver refuses.
    let receiver_config = config("limits", quic())
        .with_max_frame_size(SMALL)
        .with_max_bad_frames(3);
    let (receiver, mut receiver_events, receiver_addr) = start(receiver_config).await;
    let mut sender = echo_node(config("limits", quic()).with_max_frame_size(1 << 20)).await;
    let sender_peer = sender.peer;
    let receiver_peer = receiver.local_peer_id();

    // A frame over one's own limit never leaves: the request fails at once.
    assert!(matches!(
        receiver.request(sender_peer, vec![0; SMALL + 1]).await,
        Err(Error::FrameTooLarge { len, max: SMALL }) if len == SMALL as u64 + 1
    ));

    within("dial", sender.net.dial(receiver_addr))
        .await
        .unwrap();

    // A frame at the limit passes; an answer over the limit is refused by the responder, and
    // the request then fails at the requester.
    let request = sender.net.clone();
    let small = tokio::spawn(async move { request.request(receiver_peer, vec![1; SMALL]).await });
    let responder = within("the request", async {
        loop {
            match receiver_events.recv().await.unwrap() {
                Event::Request {
                    peer,
                    frame,
                    responder,
                } => {
                    assert_eq!((peer, frame.len()), (sender_peer, SMALL));
                    return responder;
                }
                _ => continue,
            }
        }
    })
    .await;
    assert!(matches!(
        responder.respond(vec![0; SMALL + 1]),
        Err(Error::FrameTooLarge { .. })
    ));
    assert!(within("the failed request", small).await.unwrap().is_err());

    // Three frames over the receiver's limit: each fails, each is reported, and the third
    // gets the sender disconnected.
    for _ in 0..3 {
        let answer = within(
            "a refused frame",
            sender.net.request(receiver_peer, vec![2; 4 * SMALL]),
        )
        .await;
        assert!(answer.is_err(), "{answer:?}");
    }
    let mut bad_frames = 0;
    within("the bad frames and the disconnection", async {
        loop {
            match receiver_events.recv().await.unwrap() {
                Event::BadFrame { peer } => {
                    assert_eq!(peer, sender_peer);
                    bad_frames += 1;
                }
                Event::PeerDisconnected { peer, .. } if peer == sender_peer => break,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(bad_frames, 3);
    wait_for(
        "the sender sees the disconnection",
        &mut sender.events,
        |event| {
            matches!(event, Event::PeerDisconnected { peer, .. } if *peer == receiver_peer)
                .then_some(())
        },
    )
    .await;
    assert!(
        !receiver
            .connected_peers()
            .await
            .unwrap()
            .contains(&sender_peer)
    );
}

/// A member passed on in the membership exchange enters the directory, is dialled on the
/// addresses it came with (no connection, no routing table entry before), and leaves it when
/// a dial to it fails, not to be learned again for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_passed_on_is_dialled_on_its_addresses_and_leaves_when_it_cannot_be() {
    use p2psip_overlay::network::Member;
    let mut a = echo_node(config("test", quic())).await;
    let b = echo_node(config("test", quic())).await;
    let c = echo_node(config("test", quic())).await;
    let listen = |node: &Node| node.addr.clone().with_p2p(node.peer).unwrap();
    let member = |node: &Node, addrs: Vec<Multiaddr>| Member {
        peer: node.peer,
        addrs,
        certificate: None,
    };

    within("a dials b", a.net.dial(b.addr.clone()))
        .await
        .unwrap();
    wait_for("b identified", &mut a.events, |event| {
        matches!(event, Event::Identified { peer, .. } if *peer == b.peer).then_some(())
    })
    .await;
    assert_eq!(
        a.net.directory(),
        vec![b.peer],
        "identify put b in the directory"
    );

    // From a peer not on this machine, a loopback address names the wrong machine.
    let stranger = PeerId::random();
    assert!(
        a.net
            .learn_members(&stranger, vec![member(&c, vec![listen(&c)])])
            .is_empty()
    );
    // An address naming another peer is dropped too.
    assert!(
        a.net
            .learn_members(&b.peer, vec![member(&c, vec![listen(&b)])])
            .is_empty()
    );
    assert_eq!(a.net.members_refused(), 2);

    assert_eq!(
        a.net
            .learn_members(&b.peer, vec![member(&c, vec![listen(&c)])]),
        vec![c.peer]
    );
    assert!(!a.net.connected_peers().await.unwrap().contains(&c.peer));
    assert!(!a.net.routing_table().await.unwrap().contains(&c.peer));
    let answer = within("c's answer", a.net.request(c.peer, b"hi".to_vec())).await;
    assert_eq!(answer.unwrap(), b"re:hi");

    // A member that has gone: the dial fails, and it leaves the directory.
    let d = echo_node(config("test", quic())).await;
    let d_addr = listen(&d);
    d.net.shutdown().await.unwrap();
    assert_eq!(
        a.net
            .learn_members(&b.peer, vec![member(&d, vec![d_addr.clone()])]),
        vec![d.peer]
    );
    assert!(
        within("the failed dial", a.net.request(d.peer, b"hi".to_vec()))
            .await
            .is_err()
    );
    within("d leaving the directory", async {
        while a.net.directory().contains(&d.peer) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Peers that have not noticed yet cannot bring it back at once.
    assert!(
        a.net
            .learn_members(&b.peer, vec![member(&d, vec![d_addr])])
            .is_empty()
    );
    assert_eq!(a.net.members_refused(), 3);
}

/// In an overlay with an enrollment CA, a member passed on enters the directory only with a
/// valid certificate of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_ca_a_member_passed_on_needs_its_own_certificate() {
    use p2psip_overlay::{identity::NodeCertificate, network::Member};
    let ca = Keypair::generate_ed25519();
    let me = Keypair::generate_ed25519();
    let certificate = NodeCertificate::issue(&ca, me.public().to_peer_id(), u64::MAX).unwrap();
    let enrolled = config("test", quic()).with_enrollment(ca.public(), Some(certificate));
    let (net, _events) = Network::start(me, enrolled).await.unwrap();
    let from = PeerId::random();
    let addr: Multiaddr = "/ip4/192.0.2.7/udp/4000/quic-v1".parse().unwrap();
    let member = |peer: PeerId, certificate: Option<String>| Member {
        peer,
        addrs: vec![addr.clone()],
        certificate,
    };
    let other = PeerId::random();
    let theirs = NodeCertificate::issue(&ca, other, u64::MAX)
        .unwrap()
        .to_text();
    let forged = NodeCertificate::issue(&Keypair::generate_ed25519(), other, u64::MAX)
        .unwrap()
        .to_text();
    let stolen = member(PeerId::random(), Some(theirs.clone()));
    let oversized = member(other, Some(format!("{theirs} {}", "0".repeat(4096))));
    let refused = vec![
        member(other, None),
        member(other, Some(forged)),
        stolen,
        oversized,
    ];
    assert!(net.learn_members(&from, refused).is_empty());
    assert_eq!(net.members_refused(), 4);
    assert!(!net.admits(&other));
    assert_eq!(
        net.learn_members(&from, vec![member(other, Some(theirs))]),
        vec![other]
    );
    assert!(
        net.admits(&other),
        "a certified member of the directory is admitted"
    );
}
