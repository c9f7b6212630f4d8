//! Admission on loopback: in an overlay with an enrollment CA, a node without a certificate of
//! its own (one copied from another node included) never enters the routing table, the
//! lookups' answers or the peers used as replicas; with Node-ID work, a cheap Node-ID is never
//! used. Real libp2p swarms on 127.0.0.1; every wait is for a condition, under a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, identity::Keypair};
use p2psip_overlay::identity::{NodeCertificate, NodeKey, node_id_work};
use p2psip_overlay::network::{Config, Event, Events, Network};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn config() -> Config {
    Config::default()
        .with_overlay("admission")
        .with_listen(["/ip4/127.0.0.1/udp/0/quic-v1".parse::<Multiaddr>().unwrap()])
        .with_mdns(false)
}

async fn start(key: Keypair, config: Config) -> (Network, Events, Multiaddr) {
    let (net, events) = Network::start(key, config).await.unwrap();
    let addr = net.listen_addrs().await.unwrap()[0]
        .clone()
        .with_p2p(net.local_peer_id())
        .unwrap();
    (net, events, addr)
}

/// Waits until `net`'s routing table is exactly `peers` (in any order).
async fn routing_table_becomes(net: &Network, peers: &[PeerId]) {
    let mut want = peers.to_vec();
    want.sort();
    timeout(WAIT, async {
        loop {
            let mut table = net.routing_table().await.unwrap();
            table.sort();
            if table == want {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the routing table never became {want:?}"));
}

/// Waits for `events` to report that `peer` identified itself (as a member).
async fn identified(events: &mut Events, peer: PeerId) {
    timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::Identified { peer: p, .. } if p == peer) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{peer} never identified"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_own_certificate_a_node_is_kept_out() {
    let ca = Keypair::generate_ed25519();
    let certified = |key: &Keypair| {
        let certificate = NodeCertificate::issue(&ca, key.public().to_peer_id(), u64::MAX).unwrap();
        config().with_enrollment(ca.public(), Some(certificate))
    };
    let (a_key, c_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (a, mut a_events, _) = start(a_key.clone(), certified(&a_key)).await;
    let (c, _c_events, c_addr) = start(c_key.clone(), certified(&c_key)).await;
    // The attacker announces c's certificate as its own, and another one announces none.
    let stolen = certified(&c_key);
    let (thief, _t_events, thief_addr) = start(Keypair::generate_ed25519(), stolen).await;
    let bare = config().with_enrollment(ca.public(), None);
    let (stranger, _s_events, stranger_addr) = start(Keypair::generate_ed25519(), bare).await;

    for addr in [thief_addr, stranger_addr, c_addr] {
        timeout(WAIT, a.dial(addr)).await.unwrap().unwrap();
    }
    identified(&mut a_events, c.local_peer_id()).await;
    routing_table_becomes(&a, &[c.local_peer_id()]).await;
    for outsider in [thief.local_peer_id(), stranger.local_peer_id()] {
        assert!(!a.admits(&outsider), "{outsider} admitted");
    }
    assert!(a.admits(&c.local_peer_id()));
    let found = timeout(WAIT, a.closest_peers(b"resource".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert!(found.contains(&c.local_peer_id()), "{found:?}");
    assert!(!found.contains(&thief.local_peer_id()), "{found:?}");
    assert!(!found.contains(&stranger.local_peer_id()), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_without_the_overlays_work_is_never_used() {
    let work = 6;
    let costly = NodeKey::generate_with_work(work);
    let cheap = loop {
        let key = Keypair::generate_ed25519();
        if node_id_work(&key.public().to_peer_id()) < work {
            break key;
        }
    };
    let (a, _a_events, _) = start(
        NodeKey::generate_with_work(work).keypair().clone(),
        config().with_node_id_work(work),
    )
    .await;
    let (good, _g, good_addr) =
        start(costly.keypair().clone(), config().with_node_id_work(work)).await;
    let (bad, _b, bad_addr) = start(cheap, config().with_node_id_work(work)).await;
    for addr in [bad_addr, good_addr] {
        timeout(WAIT, a.dial(addr)).await.unwrap().unwrap();
    }
    routing_table_becomes(&a, &[good.local_peer_id()]).await;
    assert!(!a.admits(&bad.local_peer_id()));
    let found = timeout(WAIT, a.closest_peers(b"resource".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert!(!found.contains(&bad.local_peer_id()), "{found:?}");
}
