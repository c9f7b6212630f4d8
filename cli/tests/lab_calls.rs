//! Calls across real NATs: the network lab of `p2psip_testnet::lab` (network namespaces,
//! nftables NATs) runs one public relay node and two hosts behind NATs, each with a real
//! `p2psip node` process and a real headless baresip registered at it; the two baresips call
//! each other by AOR.
//!
//! Each case checks: AutoNAT's verdict on each node (public or behind NAT, and then a
//! relayed address), both registrations, the call answered on both sides, audio both ways at
//! the codec's rate (baresip's own RTP counters), the BYE ending it on both sides, and that the
//! media went through the two end nodes, and whether the nodes' connection ended up direct
//! (hole-punched, or to a public side) or relayed, as the NATs allow: relayed only between
//! two symmetric NATs. Also: the built-in agents call across the NATs, and two hosts of one
//! LAN find each other by mDNS.
//!
//! Needs root, `ip`, `nft` and baresip: skipped with a message without them, except in CI
//! (`CI` set), where that fails (CI runs as root and installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../node/tests/support/baresip.rs"]
pub mod baresip;

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baresip::{Baresip, MIN_SHARE};
use p2psip_testnet::lab::{self, Host, Lab, Nat, NodeProcess, SIP};

/// How long a node may take to start, and AutoNAT and the relays to settle.
const SETTLE: Duration = Duration::from_secs(60);
/// How long any one SIP step may take.
const LIMIT: Duration = Duration::from_secs(20);

fn p2psip() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_p2psip"))
}

/// Whether this machine can run the lab with baresip (see the module docs).
fn available() -> bool {
    lab::require_lab() && baresip::require_baresip()
}

/// A lab with a public relay node and two nodes, `alice` behind `a` and `bob` behind `b`.
struct Site {
    bob: NodeProcess,
    alice: NodeProcess,
    relay: NodeProcess,
    lab: Lab,
}

impl Site {
    fn start(a: Nat, b: Nat) -> Site {
        let lab = Lab::builder()
            .public_host("relay")
            .host("alice", a)
            .host("bob", b)
            .build()
            .expect("the lab");
        let relay_host = lab.host("relay").unwrap();
        let (relay, bootstrap) =
            NodeProcess::start_relay(relay_host, &p2psip(), "relay", SETTLE).expect("the relay");
        let start = |name: &str| {
            NodeProcess::start_joining(lab.host(name).unwrap(), &p2psip(), &bootstrap, SETTLE)
                .unwrap_or_else(|e| panic!("{name}'s node: {e:#}"))
        };
        let (alice, bob) = (start("alice"), start("bob"));
        let site = Site {
            bob,
            alice,
            relay,
            lab,
        };
        for node in [&site.alice, &site.bob] {
            let nat = site.lab.host(node.name()).unwrap().nat();
            let status = node
                .wait_status(SETTLE, "AutoNAT's verdict", |s| {
                    lab::scenario::settled(s, nat)
                })
                .unwrap_or_else(|e| panic!("{e:#}"));
            eprintln!(
                "{} ({nat}): {} {}",
                node.name(),
                status["nat"]["reachability"],
                status["nat"]["relayed_addrs"]
            );
        }
        site
    }

    fn host(&self, name: &str) -> &Host {
        self.lab.host(name).unwrap()
    }

    /// How alice's node reaches bob's now: `direct`, `relayed`, or not connected.
    fn path(&self) -> String {
        self.alice
            .path_to(self.bob.peer_id())
            .unwrap()
            .unwrap_or_else(|| "not connected".into())
    }
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// A baresip for `user`@example.p2p inside `host`, registering at the node of that host.
async fn softphone(host: &Host, user: &str) -> Baresip {
    let ns = host.namespace().clone();
    let launcher: Vec<OsString> = ["ip", "netns", "exec", ns.name()]
        .iter()
        .map(OsString::from)
        .collect();
    let connector: baresip::Connector = Arc::new(move |addr: SocketAddr| {
        ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .map_err(std::io::Error::other)?
    });
    let config = baresip::Config::new(format!("sip:{user}@example.p2p"))
        .outbound(SIP.parse().unwrap())
        .inside(launcher, connector);
    Baresip::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// alice calls bob for `length`, alice hangs up; everything of the module docs is checked.
async fn call(site: &Site, length: Duration) {
    let (alice, bob) = tokio::join!(
        softphone(site.host("alice"), "alice"),
        softphone(site.host("bob"), "bob")
    );
    let (caller, callee) =
        baresip::checked_call(&alice, &bob, "sip:bob@example.p2p", length, LIMIT).await;
    for (side, phone) in [(&caller, &alice), (&callee, &bob)] {
        // PCMU: 64 kbit/s of payload each way.
        assert!(
            side.rtp.receive.kbit_per_s >= 64.0 * MIN_SHARE,
            "{} received audio at {} kbit/s, not at PCMU's 64\n{}",
            phone.aor(),
            side.rtp.receive.kbit_per_s,
            phone.report()
        );
    }
    let expected = alice.config().packets_per_second() * caller.up().as_secs_f64();
    for node in [&site.alice, &site.bob] {
        let status = node.status().unwrap();
        let media = &status["media"];
        assert!(
            media["from_softphones"].as_u64().unwrap_or(0) as f64 >= expected * MIN_SHARE,
            "{}'s node carried its softphone's audio: {media}",
            node.name()
        );
    }
    let relay = site.relay.status().unwrap();
    eprintln!(
        "{} -> {}: {}; relay status: {}",
        site.host("alice").nat(),
        site.host("bob").nat(),
        site.path(),
        relay["nat"]
    );
}

/// One case of the matrix: a call of 3 s between hosts behind `a` and `b`, whose nodes end up
/// connected by `path`: `direct` where hole punching (or a public side) allows it, else
/// `relayed`.
async fn pair(a: Nat, b: Nat, path: &str) {
    if !available() {
        return;
    }
    let site = tokio::task::spawn_blocking(move || Site::start(a, b))
        .await
        .unwrap();
    call(&site, Duration::from_secs(3)).await;
    // Hole punching may still be under way when the call ends; it cannot undo itself.
    let deadline = std::time::Instant::now() + LIMIT;
    while path == "direct" && site.path() != path && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(site.path(), path, "{a} -> {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_restricted_calls_port_restricted() {
    pair(Nat::PortRestricted, Nat::PortRestricted, "direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cone_calls_symmetric() {
    pair(Nat::FullCone, Nat::Symmetric, "direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_calls_symmetric() {
    pair(Nat::Symmetric, Nat::Symmetric, "relayed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgnat_calls_port_restricted() {
    pair(Nat::Cgnat, Nat::PortRestricted, "direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_calls_symmetric() {
    pair(Nat::DualStack, Nat::Symmetric, "direct").await;
}

/// A call of 35 s between two symmetric NATs, whose media must cross the relay: libp2p's
/// default relay limits (2 minutes, 128 KiB) would cut it after about 8 s of G.711.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_call_keeps_its_audio_for_35_seconds() {
    if !available() {
        return;
    }
    let site = tokio::task::spawn_blocking(|| Site::start(Nat::Symmetric, Nat::Symmetric))
        .await
        .unwrap();
    call(&site, Duration::from_secs(35)).await;
    assert_eq!(
        site.path(),
        "relayed",
        "two symmetric NATs leave only the relay"
    );
}

/// The nodes' built-in agents register and call across the NATs (signalling only).
#[test]
fn built_in_agents_call_across_nats() {
    if !lab::require_lab() {
        return;
    }
    let site = Site::start(Nat::PortRestricted, Nat::Symmetric);
    let register = |node: &NodeProcess, aor: &str| {
        node.json(&["register", aor])
            .unwrap_or_else(|e| panic!("register {aor}: {e:#}"));
    };
    register(&site.bob, "sip:bob@example.p2p");
    register(&site.alice, "sip:alice@example.p2p");
    let call = site
        .alice
        .run(&["call", "sip:bob@example.p2p", "--duration", "1"])
        .unwrap_or_else(|e| {
            panic!(
                "call: {e:#}\n{}\n{}",
                site.alice.log_tail(),
                site.bob.log_tail()
            )
        });
    eprintln!("{call}");
    assert!(
        call.contains("answered") && call.contains("ended by you"),
        "{call}"
    );
}

/// Two hosts on one LAN segment, behind one NAT, find each other by mDNS with no bootstrap
/// address, and their built-in agents call each other.
#[test]
fn lan_neighbours_find_each_other_by_mdns() {
    if !lab::require_lab() {
        return;
    }
    let lab = Lab::builder()
        .lan("office", Nat::PortRestricted)
        .host_on("carol", "office")
        .host_on("dave", "office")
        .build()
        .expect("the lab");
    let start = |name: &str| {
        let flags = args(&[
            "--listen",
            "/ip4/0.0.0.0/udp/0/quic-v1",
            "--sip-listen",
            SIP,
        ]);
        NodeProcess::start(
            lab.host(name).unwrap().namespace(),
            &p2psip(),
            name,
            &flags,
            SETTLE,
        )
        .unwrap_or_else(|e| panic!("{name}'s node: {e:#}"))
    };
    let (carol, dave) = (start("carol"), start("dave"));
    carol
        .wait_status(
            SETTLE,
            "dave as a connected peer of its routing table",
            |s| s["connected"] == 1 && s["routing_table"] == 1,
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", dave.log_tail()));
    assert_eq!(
        carol.path_to(dave.peer_id()).unwrap().as_deref(),
        Some("direct"),
        "found on the LAN, reached directly"
    );
    dave.json(&["register", "sip:dave@example.p2p"]).unwrap();
    let call = carol
        .run(&["call", "sip:dave@example.p2p", "--duration", "1"])
        .unwrap_or_else(|e| panic!("call: {e:#}\n{}\n{}", carol.log_tail(), dave.log_tail()));
    assert!(call.contains("answered"), "{call}");
}
