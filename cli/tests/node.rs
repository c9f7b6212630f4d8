//! `p2psip node` and the commands that talk to it, as a user runs them: two nodes on
//! 127.0.0.1 (the second bootstraps from the first's ready file), the built-in user agents
//! register, look each other up, call and message; Ctrl-C leaves. And every bad input is one
//! sentence and a non-zero exit: a data directory in use, a SIP port in use, an unreachable
//! bootstrap peer, a malformed multiaddr or AOR, an unknown AOR, no node running.

mod common;

use std::time::Duration;

use common::{Background, Sandbox};

const READY: Duration = Duration::from_secs(60);

/// Starts a node with its data in `name`, SIP on a free port, no mDNS, the overlay on
/// loopback QUIC; waits for its ready file and gives it parsed.
fn start(
    sandbox: &Sandbox,
    name: &str,
    bootstrap: Option<&str>,
) -> (Background, serde_json::Value) {
    let ready = format!("{name}/ready.json");
    let mut args = vec![
        "node",
        "--data-dir",
        name,
        "--sip-listen",
        "127.0.0.1:0",
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--no-mdns",
        "--ready-file",
        &ready,
    ];
    if let Some(peer) = bootstrap {
        args.extend(["--bootstrap", peer]);
    }
    let mut node = sandbox.spawn(name, &args);
    let text = node.wait_for_file(&sandbox.path(&ready), READY);
    let json: serde_json::Value = serde_json::from_str(&text).expect("ready file is JSON");
    (node, json)
}

#[test]
fn two_nodes_register_look_up_call_message_and_leave() {
    let sandbox = Sandbox::new();
    let (mut one, ready) = start(&sandbox, "one", None);
    for key in ["peer_id", "overlay_addrs", "sip_addrs", "control_addr"] {
        assert!(!ready[key].is_null(), "{key} missing from {ready}");
    }
    let peer_id = ready["peer_id"].as_str().expect("peer_id");
    let bootstrap = ready["overlay_addrs"][0]
        .as_str()
        .expect("an overlay address");
    assert!(
        bootstrap.ends_with(&format!("/p2p/{peer_id}")),
        "{bootstrap}"
    );
    let sip = ready["sip_addrs"].as_array().expect("sip_addrs");
    assert!(
        sip.iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("udp:127.0.0.1:")))
    );
    assert!(
        sip.iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("tcp:127.0.0.1:")))
    );
    let printed = one.output().0;
    assert!(
        printed.contains(&format!("p2psip node --bootstrap {bootstrap}")),
        "{printed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sandbox.path("one/control.json"))
            .expect("control.json")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the control token is the user's only");
    }

    let (mut two, _) = start(&sandbox, "two", Some(bootstrap));
    let status = sandbox.run(&["status", "--data-dir", "two", "--json"]);
    let status: serde_json::Value = serde_json::from_str(status.ok()).expect("JSON");
    assert!(status["routing_table"].as_u64() >= Some(1), "{status}");
    let peers = sandbox.run(&["peers", "--data-dir", "two"]);
    assert!(peers.ok().contains(peer_id), "node two knows node one");

    let alice = "sip:alice@cli.p2p";
    let bob = "sip:bob@cli.p2p";
    assert!(
        sandbox
            .run(&["register", alice, "--data-dir", "one"])
            .ok()
            .contains("registered")
    );
    assert!(
        sandbox
            .run(&["register", bob, "--data-dir", "two"])
            .ok()
            .contains("registered")
    );

    let found = sandbox.run(&["lookup", bob, "--data-dir", "one", "--json"]);
    let found: serde_json::Value = serde_json::from_str(found.ok()).expect("JSON");
    let devices = found["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{found}");
    assert_ne!(
        devices[0]["node"],
        serde_json::Value::from(peer_id),
        "Bob is at node two"
    );
    assert_eq!(devices[0]["hops"], 1);
    // In an overlay of two, the lookup asked both nodes at once: one round trip.
    let status = sandbox.run(&["status", "--data-dir", "one", "--json"]);
    let status: serde_json::Value = serde_json::from_str(status.ok()).expect("JSON");
    assert!(
        status["lookups_one_round_trip"].as_u64() >= Some(1),
        "{status}"
    );
    let status = sandbox.run(&["status", "--data-dir", "one"]);
    assert!(status.ok().contains("in one round trip"));

    let call = sandbox.run(&["call", bob, "--duration", "0.5", "--data-dir", "one"]);
    let text = call.ok();
    for step in [
        "calling sip:bob@cli.p2p",
        "ringing",
        "answered",
        "ended by you",
    ] {
        assert!(text.contains(step), "no {step:?} in {text}");
    }
    let message = sandbox.run(&["message", alice, "hello alice", "--data-dir", "two"]);
    assert!(
        message
            .ok()
            .starts_with("delivered to sip:alice@cli.p2p (200 OK)")
    );

    // An unknown AOR: one sentence, for lookup and for a call.
    let unknown = "sip:nobody@cli.p2p";
    let line = sandbox
        .run(&["lookup", unknown, "--data-dir", "one"])
        .fails(1)
        .to_owned();
    assert!(
        line.starts_with("nobody is registered as sip:nobody@cli.p2p"),
        "{line}"
    );
    let line = sandbox.run(&["call", unknown, "--data-dir", "one"]);
    assert_eq!(line.code, 1);
    assert!(line.stderr.contains("answered 404"), "{line:?}");

    // A second node on the same data directory is refused before it touches anything.
    let held = sandbox.run(&[
        "node",
        "-qq",
        "--data-dir",
        "one",
        "--sip-listen",
        "127.0.0.1:0",
    ]);
    assert!(held.fails(1).contains("is in use by another running node"));

    // A SIP port in use: node one's.
    let taken = sip[0]
        .as_str()
        .and_then(|a| a.strip_prefix("udp:"))
        .expect("udp address");
    let busy = sandbox.run(&[
        "node",
        "-qq",
        "--data-dir",
        "three",
        "--sip-listen",
        taken,
        "--no-mdns",
    ]);
    let line = busy.fails(1);
    assert!(
        line.contains(taken) && line.contains("--sip-listen"),
        "{line}"
    );
    let written: Vec<_> = std::fs::read_dir(sandbox.path("three"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(written, ["node.lock"], "nothing but the lock is written");

    // Ctrl-C: the nodes leave and say so.
    assert_eq!(two.interrupt(Duration::from_secs(30)), 0);
    assert!(two.output().1.contains("left"));
    assert!(
        !sandbox.path("two/control.json").exists(),
        "control.json removed"
    );
    assert_eq!(one.interrupt(Duration::from_secs(30)), 0);
    let after = sandbox.run(&["status", "--data-dir", "one"]);
    assert!(
        after
            .fails(1)
            .starts_with("no node is running with the data directory")
    );
}

#[test]
fn bad_input_is_one_sentence_and_a_non_zero_exit() {
    let sandbox = Sandbox::new();
    let line = sandbox
        .run(&["node", "--data-dir", "d", "--bootstrap", "/ip4/1.2.3/udp/1"])
        .fails(2)
        .to_owned();
    assert!(line.contains("is not a multiaddr"), "{line}");
    let line = sandbox
        .run(&["lookup", "alice", "--data-dir", "d"])
        .fails(1)
        .to_owned();
    assert!(line.contains("is not an address-of-record"), "{line}");
    let line = sandbox
        .run(&["status", "--data-dir", "d"])
        .fails(1)
        .to_owned();
    assert!(
        line.contains("start one with `p2psip node --data-dir"),
        "{line}"
    );

    // A bootstrap peer nobody answers at: a sentence after the bootstrap timeout.
    let silent =
        "/ip4/127.0.0.1/udp/9/quic-v1/p2p/12D3KooWRNL7HpV4czEfd5RBwzdgn15Suaz7DcnVXMxBNiRhpL3F";
    let line = sandbox
        .run(&[
            "node",
            "-qq",
            "--data-dir",
            "d",
            "--sip-listen",
            "127.0.0.1:0",
            "--no-mdns",
            "--bootstrap",
            silent,
        ])
        .fails(1)
        .to_owned();
    assert!(line.starts_with("no bootstrap peer answered"), "{line}");
}

#[test]
fn a_node_beyond_loopback_needs_a_user_and_user_add_writes_one() {
    let sandbox = Sandbox::new();
    let line = sandbox
        .run(&[
            "node",
            "-qq",
            "--data-dir",
            "d",
            "--sip-listen",
            "0.0.0.0:0",
            "--no-mdns",
        ])
        .fails(1)
        .to_owned();
    assert!(
        line.contains("beyond loopback") && line.contains("`p2psip user add NAME`"),
        "{line}"
    );

    sandbox
        .run(&[
            "user",
            "add",
            "alice",
            "--password",
            "wonderland",
            "--data-dir",
            "d",
        ])
        .ok();
    let config = std::fs::read_to_string(sandbox.path("d/config.toml")).unwrap();
    assert!(config.contains("[sip.users.alice]"), "{config}");
    assert!(
        !config.contains("wonderland"),
        "the password is stored: {config}"
    );
    let users = sandbox
        .run(&["user", "list", "--data-dir", "d"])
        .ok()
        .to_owned();
    assert_eq!(users.trim(), "alice");
    let line = sandbox
        .run(&[
            "user",
            "add",
            "alice",
            "--password",
            "again",
            "--data-dir",
            "d",
        ])
        .fails(1)
        .to_owned();
    assert!(line.contains("already a user"), "{line}");
    sandbox
        .run(&["user", "remove", "alice", "--data-dir", "d"])
        .ok();
    let users = sandbox
        .run(&["user", "list", "--data-dir", "d"])
        .ok()
        .to_owned();
    assert_eq!(users.trim(), "");
}

/// `p2psip ca`: a CA certifies two nodes' Node-IDs and one user's AOR; with its certificate
/// that user registers the AOR and the other node finds it; an AOR without one is refused.
#[test]
fn with_an_enrollment_ca_a_certified_aor_registers_and_another_does_not() {
    let sandbox = Sandbox::new();
    assert!(sandbox.run(&["ca", "init", "ca"]).ok().contains("ca.pub"));
    let line = sandbox.run(&["ca", "init", "ca"]).fails(1).to_owned();
    assert!(line.contains("never replaced"), "{line}");
    let alice = "sip:alice@ca.p2p";
    for name in ["one", "two"] {
        let init = sandbox.run(&["init", "--data-dir", name, "--json"]);
        let init: serde_json::Value = serde_json::from_str(init.ok()).expect("JSON");
        let node_id = init["node_id"].as_str().expect("node_id");
        let certificate = sandbox.run(&["ca", "node", node_id, "--ca", "ca"]);
        std::fs::write(sandbox.path(&format!("{name}/node.cert")), certificate.ok())
            .expect("node.cert");
        let mut config =
            "[overlay]\nenrollment_ca = \"../ca/ca.pub\"\nnode_certificate = \"node.cert\"\n"
                .to_owned();
        if name == "one" {
            let user_key = init["user_key"].as_str().expect("user_key");
            let certificate = sandbox.run(&["ca", "aor", alice, user_key, "--ca", "ca"]);
            std::fs::write(sandbox.path("one/alice.cert"), certificate.ok()).expect("cert");
            config.push_str("aor_certificates = [\"alice.cert\"]\n");
        }
        std::fs::write(sandbox.path(&format!("{name}/config.toml")), config).expect("config");
    }
    let (mut one, ready) = start(&sandbox, "one", None);
    let bootstrap = ready["overlay_addrs"][0].as_str().expect("address");
    let (mut two, _) = start(&sandbox, "two", Some(bootstrap));

    let registered = sandbox.run(&["register", alice, "--data-dir", "one"]);
    assert!(registered.ok().contains("registered"), "{registered:?}");
    let found = sandbox.run(&["lookup", alice, "--data-dir", "two", "--json"]);
    let found: serde_json::Value = serde_json::from_str(found.ok()).expect("JSON");
    assert_eq!(
        found["devices"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );

    let refused = sandbox.run(&["register", "sip:bob@ca.p2p", "--data-dir", "one"]);
    let line = refused.fails(1);
    assert!(line.contains("certificate"), "{line}");

    // Bad input: one sentence each.
    let line = sandbox
        .run(&["ca", "aor", alice, "zz", "--ca", "ca"])
        .fails(1)
        .to_owned();
    assert!(line.contains("not hexadecimal"), "{line}");
    let line = sandbox
        .run(&["ca", "node", "12D3KooW", "--ca", "ca"])
        .fails(1)
        .to_owned();
    assert!(line.contains("is not a Node-ID"), "{line}");
    let line = sandbox
        .run(&[
            "ca",
            "node",
            ready["peer_id"].as_str().expect("id"),
            "--ca",
            "nowhere",
        ])
        .fails(1)
        .to_owned();
    assert!(line.contains("p2psip ca init"), "{line}");

    assert_eq!(two.interrupt(Duration::from_secs(30)), 0);
    assert_eq!(one.interrupt(Duration::from_secs(30)), 0);
}

/// `p2psip user add` on a terminal (a pseudo-terminal made by `script`): the prompt turns the
/// echo off, so the password typed never shows.
#[test]
fn the_password_prompt_does_not_echo() {
    use std::io::{Read as _, Write as _};
    use std::process::{Command, Stdio};
    let sandbox = Sandbox::new();
    let command = format!(
        "{} user add alice --data-dir d",
        env!("CARGO_BIN_EXE_p2psip")
    );
    let mut script = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(sandbox.home())
        .env("HOME", sandbox.home())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (bsdutils) runs");
    let mut stdout = script.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(": ") {
        let n = stdout.read(&mut buffer).expect("read the prompt");
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    let mut stdin = script.stdin.take().expect("stdin");
    stdin.write_all(b"sekrit-pw\n").expect("type the password");
    stdout.read_to_end(&mut seen).expect("read the rest");
    assert!(script.wait().expect("script ends").success());
    let shown = String::from_utf8_lossy(&seen);
    assert!(shown.contains("written"), "{shown}");
    assert!(
        !shown.contains("sekrit"),
        "the password was echoed: {shown}"
    );
    let config = std::fs::read_to_string(sandbox.path("d/config.toml")).expect("config");
    assert!(config.contains("ha1_sha256") && !config.contains("sekrit"));
}
