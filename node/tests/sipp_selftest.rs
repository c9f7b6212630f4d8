//! Checks the sipp harness (`tests/support/sipp.rs`) with sipp against itself on 127.0.0.1:
//! sipp's built-in `uac` calling sipp's built-in `uas`, 20 calls over UDP and 20 over TCP, all
//! successful on both sides; and that failed calls and the time limit are reported as such.
//!
//! Skipped with a message when sipp is not installed (`apt-get install sip-tester`), except in
//! CI (`CI` set), where that fails. The tests take about 4.5 s, run in parallel: the built-in
//! `uas` keeps each call 4 s after its BYE (a `timewait` for retransmitted BYEs), and exits
//! only then.

use std::time::{Duration, Instant};

#[path = "support/sipp.rs"]
pub mod sipp;

use sipp::{Scenario, Sipp, SippReport, Transport};

/// Calls per transport.
const CALLS: u64 = 20;

/// The limit of each sipp run; the runs take about 4.5 s.
const LIMIT: Duration = Duration::from_secs(20);

/// sipp's `uas` on a free port, sipp's `uac` (or `uac` scenario) placing [`CALLS`] calls to
/// it; both must count all of them successful.
fn uac_to_uas(transport: Transport, uac: Scenario) {
    let uas = Sipp::uas()
        .transport(transport)
        .calls(CALLS)
        .time_limit(LIMIT)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let client = Sipp::new(uac)
        .remote(uas.addr())
        .transport(transport)
        .calls(CALLS)
        .rate(200)
        .call_length(Duration::ZERO)
        .time_limit(LIMIT)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let server = uas
        .wait(Instant::now() + LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    client.assert_all_successful(CALLS);
    server.assert_all_successful(CALLS);
}

/// The built-in `uac` calls the built-in `uas` over UDP.
#[test]
fn builtin_uac_calls_builtin_uas_over_udp() {
    require_sipp!();
    uac_to_uas(Transport::Udp, Scenario::uac());
}

/// Over TCP the client is the built-in `uac` plus a final timewait
/// (`tests/sipp/uac-tcp-linger.xml`): the built-in `uac` closes its connection as soon as its
/// last call ends, and sipp's `uas` then counts its last call as failed (FailedTcpClosed).
#[test]
fn builtin_uac_calls_builtin_uas_over_tcp() {
    require_sipp!();
    uac_to_uas(Transport::Tcp, Scenario::kept("uac-tcp-linger.xml"));
}

/// Calls to a port where nobody answers fail on their receive timeout, and are counted failed.
#[test]
fn unanswered_calls_are_reported_failed() {
    require_sipp!();
    let nobody = (
        [127, 0, 0, 1],
        sipp::free_port().unwrap_or_else(|e| panic!("{e}")),
    )
        .into();
    let report = Sipp::uac(nobody)
        .calls(3)
        .call_timeout(Some(Duration::from_millis(300)))
        .time_limit(LIMIT)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.all_successful(3), "{report}");
    assert_eq!(
        (report.successful, report.failed, report.exit_code),
        (0, 3, 1),
        "{report}"
    );
    assert_eq!(
        report.counter("FailedTimeoutOnRecv(C)"),
        Some(3),
        "{report}"
    );
    forget_files(&report);
}

/// A sipp `uas` nobody calls stops at its time limit with exit code 255 and no call.
#[test]
fn time_limit_stops_sipp() {
    require_sipp!();
    let started = Instant::now();
    let uas = Sipp::uas()
        .time_limit(Duration::from_secs(1))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let report = uas
        .wait(Instant::now() + LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (report.successful, report.failed, report.exit_code),
        (0, 0, 255),
        "{report}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{report}");
    forget_files(&report);
}

/// Removes the files the helper keeps for a run that did not exit with 0 (these tests expect
/// such runs), so that they do not pile up in the target directory.
fn forget_files(report: &SippReport) {
    let dir = report
        .kept_files
        .as_ref()
        .unwrap_or_else(|| panic!("files not kept\n{report}"));
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
}
