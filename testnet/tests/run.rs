//! `p2psip testnet run` end to end: a small plan registers every user and sets up every call
//! with its delays and the hops of its INVITE measured; a plan with churn kills and restarts nodes while calls
//! go, accounts for every call, and writes both report files.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::time::Duration;

use p2psip_testnet::run::{self, Plan, Progress};
use p2psip_testnet::{Options, report};

/// A run that takes longer than this is stuck.
const LIMIT: Duration = Duration::from_secs(120);

async fn run_plan(plan: &Plan) -> (report::Run, report::Report, Vec<Progress>) {
    let mut seen = Vec::new();
    let mut progress = |step: Progress| {
        eprintln!("{step}");
        seen.push(step);
    };
    let (run, report) =
        tokio::time::timeout(LIMIT, run::run(plan, Options::default(), &mut progress))
            .await
            .expect("the run is stuck")
            .unwrap();
    eprintln!("{}", report.summary());
    (run, report, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_registers_everyone_and_sets_up_every_call() {
    let plan = Plan {
        nodes: 6,
        users: 6,
        calls: 10,
        seed: Some(7),
        call_duration: Duration::from_millis(50),
        ..Plan::default()
    };
    let (run, report, seen) = run_plan(&plan).await;

    assert_eq!(seen.first(), Some(&Progress::Seed { seed: 7 }));
    assert!(seen.contains(&Progress::Starting { started: 6, of: 6 }));
    assert!(seen.iter().any(|p| matches!(p, Progress::Settled { .. })));
    assert!(seen.contains(&Progress::Calls {
        done: 10,
        of: 10,
        failed: 0
    }));
    assert_eq!(run.seed, 7);
    assert_eq!(run.nodes.len(), 6);

    let registrations = &report.registrations;
    assert_eq!(
        (registrations.attempted, registrations.succeeded),
        (6, 6),
        "{:?}",
        run.registrations
    );
    assert!(registrations.rrd_ms.p50.is_some());
    let calls = &report.calls;
    assert_eq!(
        (calls.attempted, calls.succeeded, calls.failed),
        (10, 10, 0),
        "{:?}",
        run.calls
    );
    for percentiles in [calls.srd_ms, calls.setup_ms] {
        assert!(percentiles.p50.is_some() && percentiles.p95.is_some());
        assert!(percentiles.p99.is_some() && percentiles.max.is_some());
    }
    for call in &run.calls {
        assert!(call.srd <= call.setup, "{call:?}");
        assert_eq!(call.status, Some(200));
        // The hops the caller's node noted for the call's INVITE: none between users of the
        // same node, at least one link otherwise, never more than the other nodes.
        let hops = call.hops.expect("every INVITE's hops are known");
        if call.from_node == call.to_node {
            assert_eq!(hops, 0, "{call:?}");
        } else {
            assert!((1..6).contains(&hops), "{call:?}");
        }
    }
    assert!(report.hops.mean.is_some(), "{:?}", run.calls);
    assert_eq!(report.hops.histogram.values().sum::<usize>(), 10);
    assert!(report.churn.killed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_churn_accounts_for_every_call_and_writes_its_report() {
    let plan = Plan {
        nodes: 8,
        users: 8,
        calls: 12,
        churn_percent: 20,
        seed: Some(11),
        call_duration: Duration::from_millis(50),
        call_timeout: Duration::from_secs(5),
        concurrency: 4,
    };
    let (run, report, seen) = run_plan(&plan).await;

    // ⌈20% of 8⌉ = 2 nodes, never node 0, each killed then restarted.
    let churn = &report.churn;
    assert_eq!(churn.percent, 20);
    assert_eq!(churn.killed.len(), 2, "{churn:?}");
    assert!(!churn.killed.contains(&0));
    assert_eq!(churn.restarted, churn.killed);
    for &node in &churn.killed {
        assert!(seen.contains(&Progress::Killed { node }));
    }

    // Every call is accounted for, and every first registration; the users of the restarted
    // nodes registered again.
    let calls = &report.calls;
    assert_eq!(calls.attempted, 12);
    assert_eq!(calls.succeeded + calls.failed, 12);
    assert_eq!(
        calls.failures_by_status.values().sum::<usize>() + calls.failures_without_status,
        calls.failed
    );
    assert!(calls.succeeded > 0, "{:?}", run.calls);
    let registrations = &report.registrations;
    assert!(registrations.attempted >= 8);
    assert_eq!(
        registrations.succeeded + registrations.failed,
        registrations.attempted
    );
    assert_eq!(
        seen.iter()
            .filter(|p| matches!(p, Progress::Calls { .. }))
            .count(),
        12
    );

    let dir = tempfile::tempdir().unwrap();
    let (json, html) = report::write(dir.path(), &run, &report).unwrap();
    assert!(json.is_file() && html.is_file());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(written["calls"]["attempted"], 12);
}
