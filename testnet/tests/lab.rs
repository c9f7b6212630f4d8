//! The network lab: every NAT kind behaves as its RFC 4787 description says (probed with UDP
//! and TCP), CGNAT goes through two NATs, dual-stack hosts reach each other over IPv6 without
//! a NAT, two hosts share a LAN, commands and threads run inside their host, and a lab leaves
//! nothing behind: not after a drop, not after a panic, not after its process died.
//!
//! Needs root: each test (but the plan checks) skips with a message without it, and fails
//! when `CI` is set.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use p2psip_testnet::lab::{self, Filtering, Host, Lab, Mapping, Nat, Probe, Report};

/// How long a datagram or a process exit that must happen may take.
const LIMIT: Duration = Duration::from_secs(5);

/// A lab with two probe servers and one client host of kind `nat`.
fn probe_lab(nat: Nat) -> Lab {
    Lab::builder()
        .public_host("stun1")
        .public_host("stun2")
        .host("client", nat)
        .build()
        .unwrap()
}

/// The UDP and the TCP report of a probe from `client` to the lab's two probe servers.
fn probe(lab: &Lab) -> [Report; 2] {
    let client = lab.host("client").unwrap();
    let probe = Probe::new(
        client,
        lab.host("stun1").unwrap(),
        lab.host("stun2").unwrap(),
    );
    [probe.udp().unwrap(), probe.tcp().unwrap()]
}

#[test]
fn full_cone_maps_and_filters_independently_of_the_endpoint() {
    if !lab::require_lab() {
        return;
    }
    let lab = probe_lab(Nat::FullCone);
    let client = lab.host("client").unwrap();
    for report in probe(&lab) {
        assert_eq!(report.mapping, Mapping::EndpointIndependent, "{report:#?}");
        assert_eq!(
            report.filtering,
            Filtering::EndpointIndependent,
            "{report:#?}"
        );
        let mapped = report.mapped().unwrap();
        assert_eq!(mapped.ip(), client.public_ipv4(), "{report:#?}");
        assert_eq!(
            mapped.port(),
            report.local.port(),
            "port preserved: {report:#?}"
        );
    }
    assert_eq!(Nat::FullCone.mapping(), Mapping::EndpointIndependent);
    assert_eq!(Nat::FullCone.filtering(), Filtering::EndpointIndependent);
}

#[test]
fn port_restricted_maps_independently_and_filters_by_address_and_port() {
    if !lab::require_lab() {
        return;
    }
    let lab = probe_lab(Nat::PortRestricted);
    let client = lab.host("client").unwrap();
    for report in probe(&lab) {
        assert_eq!(report.mapping, Mapping::EndpointIndependent, "{report:#?}");
        assert_eq!(
            report.filtering,
            Filtering::AddressAndPortDependent,
            "{report:#?}"
        );
        let mapped = report.mapped().unwrap();
        assert_eq!(mapped.ip(), client.public_ipv4(), "{report:#?}");
        assert_eq!(
            mapped.port(),
            report.local.port(),
            "port preserved: {report:#?}"
        );
        assert_eq!(report.mapping, Nat::PortRestricted.mapping());
        assert_eq!(report.filtering, Nat::PortRestricted.filtering());
    }
}

#[test]
fn symmetric_maps_per_endpoint() {
    if !lab::require_lab() {
        return;
    }
    let lab = probe_lab(Nat::Symmetric);
    let client = lab.host("client").unwrap();
    for report in probe(&lab) {
        // Random ports: the first server's two ports get the same one with a chance of
        // 1 in 64512, so the test asks for endpoint-dependent mapping, not for APDM.
        assert!(report.mapping.is_endpoint_dependent(), "{report:#?}");
        assert!(Nat::Symmetric.mapping().is_endpoint_dependent());
        assert_eq!(
            report.filtering,
            Filtering::AddressAndPortDependent,
            "{report:#?}"
        );
        assert!(
            report
                .observed
                .iter()
                .all(|o| o.mapped.ip() == client.public_ipv4()),
            "{report:#?}"
        );
    }
}

#[test]
fn cgnat_goes_through_two_nats_and_shows_the_carriers_address() {
    if !lab::require_lab() {
        return;
    }
    let lab = probe_lab(Nat::Cgnat);
    let client = lab.host("client").unwrap();
    let home = lab.lan("client").unwrap();
    let carrier = home.carrier().unwrap();
    // The home router's outside is on the carrier segment, the carrier's on the internet.
    assert_eq!(home.router().outside_ipv4().octets()[..3], [192, 0, 2]);
    assert_eq!(carrier.outside_ipv4().octets()[..3], [203, 0, 113]);
    assert_eq!(client.public_ipv4(), carrier.outside_ipv4());
    assert_eq!(home.public_ipv4(), carrier.outside_ipv4());

    // The first NAT: the carrier sees the home router's address.
    let inside = carrier.inside_ipv4();
    let at_carrier = carrier
        .namespace()
        .run(move || UdpSocket::bind((inside, 0)))
        .unwrap()
        .unwrap();
    let from = udp_bind(client, client.ipv4());
    let seen = deliver(&from, &at_carrier);
    assert_eq!(seen.ip(), home.router().outside_ipv4());

    // The second: the internet sees the carrier's, and the two NATs together keep the port
    // and filter by address and port.
    for report in probe(&lab) {
        assert_eq!(
            report.mapped().unwrap().ip(),
            carrier.outside_ipv4(),
            "{report:#?}"
        );
        assert_eq!(report.mapping, Nat::Cgnat.mapping(), "{report:#?}");
        assert_eq!(report.mapping, Mapping::EndpointIndependent);
        assert_eq!(
            report.filtering,
            Filtering::AddressAndPortDependent,
            "{report:#?}"
        );
    }
}

#[test]
fn dual_stack_hosts_reach_each_other_over_ipv6_without_a_nat() {
    if !lab::require_lab() {
        return;
    }
    let lab = Lab::builder()
        .public_host("relay")
        .host("carol", Nat::DualStack)
        .host("dave", Nat::DualStack)
        .host("erin", Nat::DualStack)
        .build()
        .unwrap();
    let [relay, carol, dave, erin] =
        ["relay", "carol", "dave", "erin"].map(|name| lab.host(name).unwrap());
    assert_eq!(relay.ipv6(), None);
    let v6 = carol.ipv6().unwrap();
    assert_eq!(v6.segments()[..3], [0x2001, 0xdb8, 1]);
    assert_eq!(carol.public_ipv4(), carol.ipv4());

    // Over IPv6: no mapping (the servers see carol's own address and port), no filtering.
    let over_v6 = Probe::new(carol, dave, erin).ipv6();
    for report in [over_v6.udp().unwrap(), over_v6.tcp().unwrap()] {
        assert_eq!(report.mapping, Mapping::Direct, "{report:#?}");
        assert_eq!(
            report.filtering,
            Filtering::EndpointIndependent,
            "{report:#?}"
        );
        assert_eq!(report.mapped().unwrap().ip(), v6, "{report:#?}");
        assert_eq!(report.mapping, Nat::DualStack.mapping());
    }
    // A plain public host is reached directly over IPv4 as well.
    let report = Probe::new(relay, carol, dave).udp().unwrap();
    assert_eq!(report.mapping, Mapping::Direct, "{report:#?}");
    assert_eq!(
        report.filtering,
        Filtering::EndpointIndependent,
        "{report:#?}"
    );
    assert_eq!(report.mapping, Nat::Public.mapping());
}

#[test]
fn two_hosts_share_one_lan_behind_one_nat() {
    if !lab::require_lab() {
        return;
    }
    let lab = Lab::builder()
        .public_host("stun1")
        .public_host("stun2")
        .lan("home", Nat::PortRestricted)
        .host_on("alice", "home")
        .host_on("bob", "home")
        .build()
        .unwrap();
    let [alice, bob] = ["alice", "bob"].map(|name| lab.host(name).unwrap());
    let home = lab.lan("home").unwrap();
    assert_eq!(home.hosts().collect::<Vec<_>>(), ["alice", "bob"]);
    assert_eq!(alice.gateway(), Some(home.router().inside_ipv4()));
    assert_eq!(alice.public_ipv4(), bob.public_ipv4());

    // Directly on the LAN, unicast and multicast (mDNS's group and port).
    let at_bob = udp_bind(bob, bob.ipv4());
    let from_alice = udp_bind(alice, alice.ipv4());
    assert_eq!(deliver(&from_alice, &at_bob).ip(), alice.ipv4());
    let mdns = Ipv4Addr::new(224, 0, 0, 251);
    let bob_ip = bob.ipv4();
    let group = bob
        .run(move || -> std::io::Result<UdpSocket> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353))?;
            socket.join_multicast_v4(&mdns, &bob_ip)?;
            Ok(socket)
        })
        .unwrap()
        .unwrap();
    let seen = deliver_to(&from_alice, SocketAddr::from((mdns, 5353)), &group);
    assert_eq!(seen.ip(), alice.ipv4());

    // Both behind the same NAT address.
    for host in [alice, bob] {
        let report = Probe::new(host, lab.host("stun1").unwrap(), lab.host("stun2").unwrap())
            .udp()
            .unwrap();
        assert_eq!(
            report.mapped().unwrap().ip(),
            home.public_ipv4(),
            "{report:#?}"
        );
    }
}

#[test]
fn commands_and_threads_run_inside_their_host() {
    if !lab::require_lab() {
        return;
    }
    let lab = probe_lab(Nat::FullCone);
    let client = lab.host("client").unwrap();
    let output = client
        .command("ip")
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("{}/28", client.ipv4())), "{text}");

    // The host's address can be bound inside it, not outside it.
    let ip = client.ipv4();
    assert!(
        client
            .run(move || UdpSocket::bind((ip, 0)))
            .unwrap()
            .is_ok()
    );
    assert!(UdpSocket::bind((ip, 0)).is_err());
    let thread = client
        .spawn(move || UdpSocket::bind((ip, 0)).is_ok())
        .unwrap();
    assert!(thread.join().unwrap());
    // A panic inside comes back out.
    let caught = panic::catch_unwind(AssertUnwindSafe(|| client.run(|| panic!("inside"))));
    assert!(caught.is_err());
    // The router forwards, and its rules are the full cone's.
    let router = lab.lan("client").unwrap().router();
    let rules = router
        .namespace()
        .command("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.contains("map cone"), "{rules}");
}

#[test]
fn a_dropped_lab_leaves_nothing_and_kills_its_processes() {
    if !lab::require_lab() {
        return;
    }
    let lab = Lab::builder()
        .public_host("relay")
        .host("alice", Nat::FullCone)
        .host("bob", Nat::Cgnat)
        .host("carol", Nat::DualStack)
        .build()
        .unwrap();
    let prefix = lab.prefix().to_owned();
    assert_eq!(namespaces(&prefix).len(), lab.namespaces().len());
    let mut child = lab
        .host("bob")
        .unwrap()
        .command("sleep")
        .arg("60")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    drop(lab);
    assert_eq!(namespaces(&prefix), Vec::<String>::new());
    // The process was killed: wait for its exit on a thread, with a deadline.
    let (exited, has_exited) = mpsc::sync_channel(1);
    std::thread::spawn(move || exited.send(child.wait()));
    let status = has_exited
        .recv_timeout(LIMIT)
        .expect("sleep still runs")
        .unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(started.elapsed() < LIMIT);
}

#[test]
fn a_lab_is_removed_when_the_test_panics() {
    if !lab::require_lab() {
        return;
    }
    let prefix = Mutex::new(None);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let lab = probe_lab(Nat::Symmetric);
        *prefix.lock().unwrap() = Some(lab.prefix().to_owned());
        assert!(!namespaces(lab.prefix()).is_empty());
        panic!("a test body fails with its lab alive");
    }));
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap().unwrap();
    assert_eq!(namespaces(&prefix), Vec::<String>::new());
}

#[test]
fn namespaces_of_dead_processes_are_removed_by_the_next_build() {
    if !lab::require_lab() {
        return;
    }
    // A pid above pid_max belongs to no process, ever; the counter is this process's pid,
    // so that test runs in parallel processes each have a leftover of their own.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stale = format!("p2l{}x{}-inet", pid_max + 1, std::process::id());
    // A lab building in another process may sweep it while `ip netns add` makes it (the
    // file is there before its bind mount): try again then.
    let add = || {
        Command::new("ip")
            .args(["netns", "add", &stale])
            .output()
            .unwrap()
    };
    let added = (0..3).map(|_| add()).find(|out| out.status.success());
    assert!(added.is_some(), "{:?}", add());
    let built = Lab::builder().public_host("relay").build();
    let left = namespaces(&stale);
    if !left.is_empty() {
        let _ = Command::new("ip")
            .args(["netns", "delete", &stale])
            .status();
    }
    built.unwrap();
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn bad_plans_are_refused_with_a_reason() {
    // No root needed: the plan is checked first.
    let refused = |builder: lab::Builder, says: &str| {
        let error = format!("{:#}", builder.build().unwrap_err());
        assert!(error.contains(says), "{error}");
    };
    refused(
        Lab::builder().public_host("a").host("a", Nat::FullCone),
        "two hosts",
    );
    refused(
        Lab::builder()
            .lan("x", Nat::PortRestricted)
            .host_on("a", "y"),
        "not declared",
    );
    refused(Lab::builder().lan("x", Nat::Public), "no NAT");
    refused(Lab::builder().public_host("Alice"), "a-z");
    refused(Lab::builder().public_host(""), "a-z");
    let mut crowded = Lab::builder().lan("x", Nat::Symmetric);
    for i in 0..14 {
        crowded = crowded.host_on(format!("h{i}"), "x");
    }
    refused(crowded, "at most 13");
    assert_eq!("cgnat".parse::<Nat>().unwrap(), Nat::Cgnat);
}

/// The namespaces whose name starts with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// A UDP socket on `ip` (any port) inside `host`.
fn udp_bind(host: &Host, ip: Ipv4Addr) -> UdpSocket {
    host.run(move || UdpSocket::bind((ip, 0))).unwrap().unwrap()
}

/// Sends from `from` to `to`'s address until `to` reads it; the source it saw.
fn deliver(from: &UdpSocket, to: &UdpSocket) -> SocketAddr {
    deliver_to(from, to.local_addr().unwrap(), to)
}

/// Sends from `from` to `addr` every 200 ms until `receiver` reads it (at most [`LIMIT`]);
/// the source it saw.
fn deliver_to(from: &UdpSocket, addr: SocketAddr, receiver: &UdpSocket) -> SocketAddr {
    let deadline = Instant::now() + LIMIT;
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0; 64];
    while Instant::now() < deadline {
        from.send_to(b"lab test", addr).unwrap();
        if let Ok((n, source)) = receiver.recv_from(&mut buf)
            && &buf[..n] == b"lab test"
        {
            return source;
        }
    }
    panic!("nothing from {:?} reached {addr}", from.local_addr());
}

/// UDP hole punching between two port-restricted NATs (what DCUtR relies on): each host
/// learns the other's public address and port (here from the plan: the NAT keeps the port),
/// both send at once, and each then hears the other. Between two symmetric NATs the same
/// exchange fails: the ports the NATs pick differ from the ones announced.
#[test]
fn udp_hole_punching_works_through_port_restricted_nats_only() {
    if !lab::require_lab() {
        return;
    }
    for (nat, works) in [(Nat::PortRestricted, true), (Nat::Symmetric, false)] {
        let lab = Lab::builder()
            .host("a", nat)
            .host("b", nat)
            .build()
            .unwrap();
        let (a, b) = (lab.host("a").unwrap(), lab.host("b").unwrap());
        let port = 40_000;
        let bind = |host: &Host| {
            host.run(move || UdpSocket::bind(("0.0.0.0", port)))
                .unwrap()
                .unwrap()
        };
        let (sa, sb) = (bind(a), bind(b));
        let to_b = SocketAddr::from((b.public_ipv4(), port));
        let to_a = SocketAddr::from((a.public_ipv4(), port));
        // Both punch, then both listen: a few rounds, as a real hole puncher does.
        let mut heard = (false, false);
        for _ in 0..5 {
            sa.send_to(b"punch from a", to_b).unwrap();
            sb.send_to(b"punch from b", to_a).unwrap();
            for (socket, got) in [(&sa, &mut heard.0), (&sb, &mut heard.1)] {
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut buf = [0u8; 64];
                while let Ok((n, _)) = socket.recv_from(&mut buf) {
                    *got |= buf[..n].starts_with(b"punch from");
                }
            }
        }
        assert_eq!(
            heard,
            (works, works),
            "{nat}: hole punching should {}work",
            if works { "" } else { "not " }
        );
    }
}
