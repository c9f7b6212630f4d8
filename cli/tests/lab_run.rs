//! `p2psip testnet run --lab`: the scenario of `p2psip_testnet::lab::scenario` from the
//! command line, end to end: a network lab with a public relay and one host behind each NAT
//! kind, a real node process on each, every ordered pair of NAT hosts calling once; the report
//! files are checked, every call answered and every call with the path between its nodes.
//!
//! Needs root, `ip` and `nft`: skipped with a message without them, except in CI (`CI` set),
//! where that fails. Without root, the command says so in one line (checked here when not
//! root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use p2psip_testnet::lab;
use serde_json::Value;

/// The NAT kinds the lab has a host for.
const NATS: [&str; 5] = [
    "full-cone",
    "port-restricted",
    "symmetric",
    "cgnat",
    "dual-stack",
];

fn p2psip() -> Command {
    Command::new(env!("CARGO_BIN_EXE_p2psip"))
}

#[test]
fn lab_run_calls_across_every_pair_of_nats_and_reports_each_path() {
    if !lab::require_lab() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = p2psip()
        .args(["testnet", "run", "--lab", "--report"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    for line in [
        "testnet run in the network lab: 6 nodes",
        "calls 20/20",
        "SRD direct",
        "SRD relayed",
        "RRD by NAT",
        "INVITE hops mean",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["nodes"], 6);
    assert_eq!(
        json["registrations"]["succeeded"], 5,
        "{}",
        json["registrations"]
    );
    let lab = &json["lab"];
    let calls = lab["calls"].as_array().unwrap();
    assert_eq!(
        calls.len(),
        20,
        "every ordered pair of the 5 NAT hosts once"
    );
    let mut pairs = std::collections::BTreeSet::new();
    for call in calls {
        assert_eq!(call["ok"], true, "answered: {call}");
        assert!(call["srd_ms"].as_f64().is_some(), "an SRD: {call}");
        assert!(call["setup_ms"].as_f64().is_some(), "a setup delay: {call}");
        assert!(
            call["path"] == "direct" || call["path"] == "relayed",
            "a path: {call}"
        );
        // The hops the caller's node noted for the INVITE: two distinct nodes, at least one
        // link, and never more than the other nodes.
        assert!(
            call["hops"]
                .as_u64()
                .is_some_and(|hops| (1..=5).contains(&hops)),
            "the INVITE's hops: {call}"
        );
        let (from, to) = (
            call["from_nat"].as_str().unwrap(),
            call["to_nat"].as_str().unwrap(),
        );
        assert!(
            NATS.contains(&from) && NATS.contains(&to) && from != to,
            "{call}"
        );
        pairs.insert((from.to_owned(), to.to_owned()));
    }
    assert_eq!(pairs.len(), 20);
    let direct = lab["direct"].as_u64().unwrap();
    let relayed = lab["relayed"].as_u64().unwrap();
    assert_eq!(direct + relayed, 20);
    assert_eq!(lab["unknown_path"], 0);
    let by_nat = lab["registrations_by_nat"].as_object().unwrap();
    for nat in NATS {
        assert_eq!(by_nat[nat]["succeeded"], 1, "{nat}: {}", by_nat[nat]);
        assert!(by_nat[nat]["rrd_ms"]["p50"].as_f64().is_some(), "{nat}");
    }

    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(page.contains("<h2>Calls across NATs</h2>"));
    // The header row and a row per call in the table of calls.
    let rows = page
        .matches("</td><td class=\"text\">answered</td>")
        .count();
    assert_eq!(rows, 20, "a row per answered call");
    for reference in ["http://", "https://", "src=", "<script"] {
        assert!(!page.contains(reference), "{reference} in the page");
    }
}

#[test]
fn lab_run_says_in_one_line_that_it_needs_root() {
    if lab::scenario::is_root() {
        eprintln!("skipped: runs as root, so the refusal cannot be seen");
        return;
    }
    let out = p2psip().args(["testnet", "run", "--lab"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "the lab needs root (network namespaces and nftables); run as root, or drop --lab"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn lab_run_refuses_the_flags_that_do_not_apply() {
    for flag in [["--nodes", "4"], ["--users", "8"], ["--churn", "10"]] {
        let out = p2psip()
            .args(["testnet", "run", "--lab"])
            .args(flag)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag:?}");
        assert!(stderr.contains("cannot be used with"), "{flag:?}: {stderr}");
    }
}
