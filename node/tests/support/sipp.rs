//! Runs [sipp](https://sipp.sourceforge.net/) (Debian package `sip-tester`) from integration
//! tests, on 127.0.0.1 only, with a bounded number of calls and a time limit, and reads back
//! how many calls succeeded and failed.
//!
//! Include it from a test crate in `node/tests/` with
//!
//! ```ignore
//! #[path = "support/sipp.rs"]
//! pub mod sipp;
//! ```
//!
//! (`pub`, as the workspace warns about unreachable `pub` items in a private module). Only `std`
//! is used.
//!
//! Two ways to run sipp:
//!
//! - [`Sipp::run`]: sipp is the client (`uac`): it places its calls, exits, and the result is a
//!   [`SippReport`]. For sipp calling a UAS of ours.
//! - [`Sipp::spawn`]: sipp is the server (`uas`): it listens on [`RunningSipp::addr`] while a
//!   UAC of ours calls it, and exits by itself once it has handled its `-m` calls; collect the
//!   result with [`RunningSipp::wait`]. Dropping a [`RunningSipp`] kills sipp.
//!
//! ```ignore
//! require_sipp!(); // exported at the crate root: `crate::require_sipp!()` from a submodule
//! let report = Sipp::uac(our_uas_addr).transport(Transport::Tcp).calls(100).run().unwrap();
//! report.assert_all_successful(100);
//! ```
//!
//! What sipp is given every time: `-nostdin` (no keyboard, CI has no stdin), `-i 127.0.0.1`
//! and `-ci 127.0.0.1` (SIP, media and control sockets on loopback), an explicit `-p` (without
//! it sipp takes 5060 or the next free port above it), `-m` calls, `-timeout <s>s -timeout_error`
//! (sipp stops itself at the time limit, exit code 255), and the statistics file
//! (`-trace_stat -stf`), the unexpected-message log (`-trace_err`) and the final screens
//! (`-trace_screen`) in a directory of its own, which is also its working directory.
//!
//! How results are read: from the last line of the `-trace_stat` CSV (`;`-separated, one header
//! line), columns `SuccessfulCall(C)` and `FailedCall(C)` (cumulative); sipp writes that line
//! when it exits. The exit code alone is not enough: 0 means "no call failed", also when fewer
//! calls than asked were made.
//!
//! sipp's exit codes: 0 all calls successful; 1 at least one call failed; 97 exit on an
//! internal command (`q`, SIGUSR1, or `-timeout` without `-timeout_error`); 99 normal exit with
//! no call processed (also what `sipp -v` returns); 255 fatal error, and `-timeout` reached with
//! `-timeout_error`; 254 a socket could not be bound (a port collision: the helper then retries
//! on another port when it chose the port itself).
//!
//! sipp cannot bind port 0 (`-p 0` means "the default", 5060 and up) and tells no port in a
//! machine-readable way before it exits, so the helper picks a port free for both UDP and TCP
//! ([`free_port`]) and retries on a collision.
//!
//! What a peer of sipp's built-in scenarios must know (`node/tests/sipp/builtin-*.xml` are
//! `sipp -sd uac` and `sipp -sd uas`):
//!
//! - The built-in `uac` accepts only 100, 180 and 183 before the 200 to its INVITE, and only a
//!   200 to its BYE (a 100 to the BYE fails the call). It sends ACK and BYE to the address it
//!   was given, with the INVITE's Request-URI, ignoring Contact and Record-Route.
//! - The built-in `uas` takes every request with a new Call-ID as a new call (an OPTIONS counts
//!   against `-m` and fails), answers INVITE with 180 and 200 at once (no 100), and holds each
//!   call 4 s after the 200 to the BYE, so it exits 4 s after the last BYE.
//! - Over TCP, a UAC calling the built-in `uas` must keep its connection open until sipp has
//!   exited ([`RunningSipp::wait`]): closing it right after the last 200 to BYE makes sipp count
//!   that call failed (`FailedTcpClosed(C)`).
//!
//! Environment: `SIPP_BIN` names another sipp binary; `SIPP_KEEP_LOGS` keeps the files of
//! successful runs too (those of failed runs are always kept; the report says where); `CI` makes
//! a missing sipp a failure instead of a skip ([`require_sipp`]).

// Each test crate uses a part of this helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How to get sipp on Debian or Ubuntu.
pub const INSTALL_HINT: &str = "apt-get install sip-tester";

/// How often a running sipp is checked for exit (and, when starting, for its listening socket).
const POLL: Duration = Duration::from_millis(5);

/// How long after its own `-timeout` sipp is given to exit before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long a server sipp may take to open its listening socket.
const START_LIMIT: Duration = Duration::from_secs(5);

/// How many ports are tried when sipp finds the one it was given taken (exit code 254).
const PORT_ATTEMPTS: u32 = 5;

/// sipp's exit code when it could not bind a socket.
const EXIT_BIND_FAILED: i32 = 254;

/// The loopback address everything runs on.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The sipp binary: `$SIPP_BIN` if set, else `sipp` from `PATH`.
pub fn sipp_program() -> OsString {
    std::env::var_os("SIPP_BIN").unwrap_or_else(|| OsString::from("sipp"))
}

/// Whether sipp can be run: `sipp -v` starts and prints its banner (it exits with code 99).
/// Probed once per test process.
pub fn sipp_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| crate::__sipp_probe!())
}

/// Whether the tests run in CI: `CI` is set, and not to empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// For a test that needs sipp: true when sipp is available. When it is not: panics in CI (CI
/// must never skip silently), else prints `skipped: sipp not installed (apt-get install
/// sip-tester)` and returns false, and the test should return. Use as
/// `if !require_sipp() { return; }`, or the [`require_sipp!`] macro.
pub fn require_sipp() -> bool {
    crate::__sipp_require!()
}

/// Returns from the enclosing test (which must return `()`) when sipp is not installed, after
/// printing `skipped: sipp not installed (apt-get install sip-tester)`; fails the test instead
/// when `CI` is set. See [`require_sipp`].
#[macro_export]
macro_rules! require_sipp {
    () => {
        if !$crate::__sipp_require!() {
            return;
        }
    };
}

/// The body of [`require_sipp`] and [`require_sipp!`] (a macro, so that `require_sipp!` works
/// wherever this module is mounted).
#[doc(hidden)]
#[macro_export]
macro_rules! __sipp_require {
    () => {{
        let available = $crate::__sipp_probe!();
        if !available {
            let ci =
                ::std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
            if ci {
                panic!(
                    "sipp is not installed (apt-get install sip-tester, or set SIPP_BIN), \
                     and CI is set: the sipp interop tests must run in CI"
                );
            }
            eprintln!("skipped: sipp not installed (apt-get install sip-tester)");
        }
        available
    }};
}

/// Whether `sipp -v` (or `$SIPP_BIN -v`) runs and prints the SIPp banner.
#[doc(hidden)]
#[macro_export]
macro_rules! __sipp_probe {
    () => {{
        let program =
            ::std::env::var_os("SIPP_BIN").unwrap_or_else(|| ::std::ffi::OsString::from("sipp"));
        ::std::process::Command::new(program)
            .arg("-v")
            .stdin(::std::process::Stdio::null())
            .stderr(::std::process::Stdio::null())
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("SIPp"))
    }};
}

/// A loopback port free for both UDP and TCP right now (bound on port 0, read, released). sipp
/// may still lose it to someone else before it binds it; [`Sipp`] then retries.
pub fn free_port() -> io::Result<u16> {
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind((LOOPBACK, 0))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind((LOOPBACK, port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// The directory of the scenario files kept with the tests: `node/tests/sipp` (cargo runs
/// tests in their package's directory; a path fixed at compile time would name wherever the
/// test was built, which a shared build cache may have done elsewhere).
pub fn scenario_dir() -> PathBuf {
    std::env::current_dir()
        .expect("the package directory")
        .join("tests")
        .join("sipp")
}

/// The SIP transport sipp uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP, one socket for all calls (`-t u1`).
    Udp,
    /// TCP, one connection for all calls (`-t t1`).
    Tcp,
}

impl Transport {
    /// The value of sipp's `-t` option.
    pub fn flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// What sipp plays: a scenario built into sipp (`-sn`) or an XML file (`-sf`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A built-in scenario by name (`uac`, `uas`, `regexp`, `branchc`, `branchs`...); `sipp -sd
    /// NAME` prints it (see `node/tests/sipp/builtin-*.xml`).
    Builtin(String),
    /// A scenario file (`-sf`); a relative path is taken from the test's working directory (the
    /// package root, `node/`).
    File(PathBuf),
}

impl Scenario {
    /// The built-in `uac`: INVITE (with SDP), optional 100/180/183, 200, ACK, pause (`-d`),
    /// BYE, 200.
    pub fn uac() -> Self {
        Scenario::Builtin("uac".into())
    }

    /// The built-in `uas`: INVITE, 180, 200 (with SDP), optional ACK, BYE, 200, 4 s timewait.
    pub fn uas() -> Self {
        Scenario::Builtin("uas".into())
    }

    /// A file of [`scenario_dir`] by name, e.g. `Scenario::kept("uac-tcp-linger.xml")`.
    pub fn kept(name: &str) -> Self {
        Scenario::File(scenario_dir().join(name))
    }

    /// A short name for logs and directory names.
    fn label(&self) -> String {
        match self {
            Scenario::Builtin(name) => name.clone(),
            Scenario::File(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into()),
        }
    }
}

/// How to run sipp once: scenario, transport, addresses, number and pace of calls, limits.
/// Build with [`Sipp::uac`], [`Sipp::uas`] or [`Sipp::new`], adjust, then [`Sipp::run`] or
/// [`Sipp::spawn`].
#[derive(Clone, Debug)]
pub struct Sipp {
    /// `-sn` or `-sf`.
    scenario: Scenario,
    /// `-t`.
    transport: Transport,
    /// The first argument; `None` for a server.
    remote: Option<SocketAddr>,
    /// `-p`; `None`: a free port.
    local_port: Option<u16>,
    /// `-m`.
    calls: u64,
    /// `-r`.
    rate: u32,
    /// `-rp`.
    rate_period: Duration,
    /// `-l`.
    max_concurrent: Option<u32>,
    /// `-d`.
    call_length: Duration,
    /// `-recv_timeout`.
    call_timeout: Option<Duration>,
    /// `-timeout`, and the kill deadline (plus [`KILL_GRACE`]).
    time_limit: Duration,
    /// `-trace_msg`.
    trace_messages: bool,
    /// Appended as they are.
    extra_args: Vec<OsString>,
}

impl Sipp {
    /// sipp playing `scenario`, over UDP, with no remote address (a server) and the defaults:
    /// 1 call, 200 calls per second, calls of length 0 (`-d 0`), 5 s receive timeout per
    /// expected message (`-recv_timeout`), 30 s time limit, a free local port.
    pub fn new(scenario: Scenario) -> Self {
        Sipp {
            scenario,
            transport: Transport::Udp,
            remote: None,
            local_port: None,
            calls: 1,
            rate: 200,
            rate_period: Duration::from_secs(1),
            max_concurrent: None,
            call_length: Duration::ZERO,
            call_timeout: Some(Duration::from_secs(5)),
            time_limit: Duration::from_secs(30),
            trace_messages: false,
            extra_args: Vec::new(),
        }
    }

    /// sipp's built-in `uac` calling `remote`.
    pub fn uac(remote: SocketAddr) -> Self {
        Sipp::new(Scenario::uac()).remote(remote)
    }

    /// sipp's built-in `uas`, waiting for calls.
    pub fn uas() -> Self {
        Sipp::new(Scenario::uas())
    }

    /// The scenario played.
    pub fn scenario(mut self, scenario: Scenario) -> Self {
        self.scenario = scenario;
        self
    }

    /// The transport (`-t u1` or `-t t1`).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The address sipp sends its requests to (makes sipp a client). Must be on 127.0.0.1.
    pub fn remote(mut self, remote: SocketAddr) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The local port (`-p`); by default a free one is picked, and another one tried if sipp
    /// finds it taken.
    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    /// How many calls sipp makes or accepts before it exits (`-m`). A server sipp counts every
    /// request with a new Call-ID as a call, OPTIONS or REGISTER included.
    pub fn calls(mut self, calls: u64) -> Self {
        self.calls = calls;
        self
    }

    /// How many calls a client sipp starts per [`Sipp::rate_period`] (`-r`).
    pub fn rate(mut self, calls: u32) -> Self {
        self.rate = calls;
        self
    }

    /// The period of [`Sipp::rate`] (`-rp`, default 1 s).
    pub fn rate_period(mut self, period: Duration) -> Self {
        self.rate_period = period;
        self
    }

    /// At most this many calls at once (`-l`); sipp's default is 3 x call length x rate.
    pub fn max_concurrent(mut self, calls: u32) -> Self {
        self.max_concurrent = Some(calls);
        self
    }

    /// The length of the scenario's `<pause/>` without a duration (`-d`): in the built-in
    /// `uac`, the time between ACK and BYE. Default 0.
    pub fn call_length(mut self, length: Duration) -> Self {
        self.call_length = length;
        self
    }

    /// How long each call waits for each message it expects before it fails
    /// (`-recv_timeout`; `None`: for ever, bounded only by the time limit). Default 5 s.
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The time limit of the whole run: sipp stops itself then (`-timeout`, whole seconds,
    /// rounded up; exit code 255), and is killed 5 s later if still running. Default 30 s.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Also log every message sent and received (`-trace_msg`) to `messages.log` in the run's
    /// directory, and quote its end in the report.
    pub fn trace_messages(mut self, on: bool) -> Self {
        self.trace_messages = on;
        self
    }

    /// One more command-line argument, passed as is after the others (e.g. `-aa`, `-s`,
    /// `-nd`, `-max_recv_loops`).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.extra_args.push(arg.as_ref().to_owned());
        self
    }

    /// The arguments sipp gets with local port `port`, its files in `dir`.
    pub fn args(&self, port: u16, dir: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &dyn AsRef<OsStr>| a.push(s.as_ref().to_owned());
        if let Some(remote) = self.remote {
            push(&remote.to_string());
        }
        match &self.scenario {
            Scenario::Builtin(name) => {
                push(&"-sn");
                push(name);
            }
            Scenario::File(path) => {
                push(&"-sf");
                push(&std::path::absolute(path).unwrap_or_else(|_| path.clone()));
            }
        }
        push(&"-t");
        push(&self.transport.flag());
        push(&"-i");
        push(&LOOPBACK.to_string());
        push(&"-ci");
        push(&LOOPBACK.to_string());
        push(&"-p");
        push(&port.to_string());
        push(&"-m");
        push(&self.calls.to_string());
        if self.remote.is_some() {
            push(&"-r");
            push(&self.rate.to_string());
            push(&"-rp");
            push(&format!("{}ms", self.rate_period.as_millis().max(1)));
        }
        if let Some(l) = self.max_concurrent {
            push(&"-l");
            push(&l.to_string());
        }
        push(&"-d");
        push(&format!("{}ms", self.call_length.as_millis()));
        if let Some(t) = self.call_timeout {
            push(&"-recv_timeout");
            push(&format!("{}ms", t.as_millis().max(1)));
        }
        push(&"-timeout");
        push(&format!("{}s", whole_seconds(self.time_limit)));
        push(&"-timeout_error");
        push(&"-nostdin");
        push(&"-trace_stat");
        push(&"-stf");
        push(&dir.join(STAT_FILE));
        push(&"-trace_err");
        push(&"-error_file");
        push(&dir.join(ERROR_FILE));
        push(&"-trace_screen");
        push(&"-screen_file");
        push(&dir.join(SCREEN_FILE));
        if self.trace_messages {
            push(&"-trace_msg");
            push(&"-message_file");
            push(&dir.join(MESSAGE_FILE));
        }
        for extra in &self.extra_args {
            push(extra);
        }
        a
    }

    /// Runs sipp to the end (all its calls made, or its time limit reached) and reports. For a
    /// client sipp; a server sipp would wait for calls nobody makes (use [`Sipp::spawn`]).
    /// Errors: sipp could not be started or had to be killed. When sipp finds the port it was
    /// given taken (exit code 254, before any call), it is run again on another free port,
    /// unless the port was set with [`Sipp::local_port`].
    pub fn run(&self) -> Result<SippReport, String> {
        let mut attempt = 1;
        loop {
            let report = self.start_on(self.port()?)?.wait_inner()?;
            if report.exit_code != EXIT_BIND_FAILED
                || self.local_port.is_some()
                || attempt == PORT_ATTEMPTS
            {
                return Ok(report);
            }
            attempt += 1;
        }
    }

    /// Starts sipp and returns once its SIP socket is bound on 127.0.0.1
    /// ([`RunningSipp::addr`]), for a server sipp that a UAC of ours then calls. When sipp
    /// finds the port taken (exit code 254), it is started again on another free port, unless
    /// the port was set with [`Sipp::local_port`]. Errors: sipp could not be started, exited
    /// before it listened, or did not listen within 5 s.
    pub fn spawn(&self) -> Result<RunningSipp, String> {
        let mut attempt = 1;
        'attempts: loop {
            let port = self.port()?;
            let mut running = self.start_on(port)?;
            let limit = Instant::now() + START_LIMIT;
            loop {
                if let Some(code) = running.exit_code()? {
                    if code == EXIT_BIND_FAILED
                        && self.local_port.is_none()
                        && attempt < PORT_ATTEMPTS
                    {
                        attempt += 1;
                        continue 'attempts;
                    }
                    return Err(format!(
                        "sipp exited with code {code} before it listened on port {port}\n{}",
                        running.describe()
                    ));
                }
                if port_bound(self.transport, port) {
                    return Ok(running);
                }
                let now = Instant::now();
                if now >= limit {
                    return Err(format!(
                        "sipp did not bind port {port} within {START_LIMIT:?}\n{}",
                        running.describe()
                    ));
                }
                thread::sleep(POLL.min(limit - now));
            }
        }
    }

    /// The port to give sipp: the one set, or a free one.
    fn port(&self) -> Result<u16, String> {
        match self.local_port {
            Some(port) => Ok(port),
            None => free_port().map_err(|e| format!("no free port for sipp: {e}")),
        }
    }

    /// Starts sipp on `port`, with a new directory for its files.
    fn start_on(&self, port: u16) -> Result<RunningSipp, String> {
        let dir = new_run_dir(&self.scenario.label())?;
        let args = self.args(port, &dir);
        let program = sipp_program();
        let command = shell_line(&program, &args);
        let stdout = File::create(dir.join(STDOUT_FILE)).map_err(|e| format!("{dir:?}: {e}"))?;
        let stderr = File::create(dir.join(STDERR_FILE)).map_err(|e| format!("{dir:?}: {e}"))?;
        let started = Instant::now();
        let child = Command::new(&program)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {command}: {e} ({INSTALL_HINT})"))?;
        Ok(RunningSipp {
            child: Some(child),
            port,
            transport: self.transport,
            command,
            dir,
            started,
            deadline: started + self.time_limit.max(Duration::from_secs(1)) + KILL_GRACE,
            trace_messages: self.trace_messages,
        })
    }
}

/// A sipp process started by [`Sipp::spawn`] (or [`Sipp::run`]). Killed when dropped.
#[derive(Debug)]
pub struct RunningSipp {
    /// The process; `None` once killed.
    child: Option<Child>,
    /// `-p`.
    port: u16,
    /// `-t`.
    transport: Transport,
    /// The command line, for reports.
    command: String,
    /// The run's directory (files and working directory).
    dir: PathBuf,
    /// When the process was started.
    started: Instant,
    /// When it is killed if still running.
    deadline: Instant,
    /// Whether `-trace_msg` was given.
    trace_messages: bool,
}

impl RunningSipp {
    /// The address sipp's SIP socket is bound to: 127.0.0.1 and its `-p` port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.port))
    }

    /// sipp's local port (`-p`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The transport sipp listens on.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The command line sipp was started with, quoted for a shell.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The directory of sipp's files (statistics, errors, screens, stdout, stderr).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// When sipp will be killed if it has not exited: its time limit plus 5 s.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits until sipp exits by itself (its `-m` calls handled, or its `-timeout`), at the
    /// latest until `deadline`, when it is killed and this fails. Then reports.
    pub fn wait(mut self, deadline: Instant) -> Result<SippReport, String> {
        self.deadline = self.deadline.min(deadline);
        self.wait_inner()
    }

    /// [`RunningSipp::wait`] until [`RunningSipp::deadline`].
    fn wait_inner(mut self) -> Result<SippReport, String> {
        let code = loop {
            if let Some(code) = self.exit_code()? {
                break code;
            }
            let now = Instant::now();
            if now >= self.deadline {
                self.kill();
                return Err(format!(
                    "sipp was still running after {:?}, and was killed\n{}",
                    now - self.started,
                    self.describe()
                ));
            }
            thread::sleep(POLL.min(self.deadline - now));
        };
        let stats = read_stats(&self.dir.join(STAT_FILE));
        let count = |column: &str| {
            stats
                .get(column)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let mut report = SippReport {
            successful: count("SuccessfulCall(C)"),
            failed: count("FailedCall(C)"),
            exit_code: code,
            elapsed: self.started.elapsed(),
            command: self.command.clone(),
            log_excerpt: self.excerpt(),
            stats,
            kept_files: None,
        };
        if code == 0 && std::env::var_os("SIPP_KEEP_LOGS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            report.kept_files = Some(self.dir.clone());
        }
        Ok(report)
    }

    /// sipp's exit code if it has exited (-1 when killed by a signal), else `None`.
    fn exit_code(&mut self) -> Result<Option<i32>, String> {
        let Some(child) = self.child.as_mut() else {
            return Ok(Some(-1));
        };
        match child.try_wait() {
            Ok(Some(status)) => Ok(Some(status.code().unwrap_or(-1))),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("cannot wait for sipp: {e}")),
        }
    }

    /// Kills sipp (if still running) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The command line, the directory, and the excerpt of sipp's output.
    fn describe(&self) -> String {
        format!(
            "command: {}\nfiles: {}\n{}",
            self.command,
            self.dir.display(),
            self.excerpt()
        )
    }

    /// The end of stderr and of the error log, the scenario screen, and with
    /// [`Sipp::trace_messages`] the end of the message log.
    fn excerpt(&self) -> String {
        let mut out = String::new();
        let stderr = read_lossy(&self.dir.join(STDERR_FILE));
        // sipp prints each warning twice; keep one.
        let mut lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        lines.dedup();
        let stderr = lines.join("\n");
        section(&mut out, "stderr", &tail(&stderr, 2000));
        section(
            &mut out,
            "unexpected messages (-trace_err)",
            &tail(&read_lossy(&self.dir.join(ERROR_FILE)), 2000),
        );
        let screens = read_lossy(&self.dir.join(SCREEN_FILE));
        let scenario_screen = screens
            .split("----------------------------- Statistics Screen")
            .next()
            .unwrap_or_default();
        section(&mut out, "scenario screen", scenario_screen.trim_end());
        if self.trace_messages {
            section(
                &mut out,
                "messages (-trace_msg)",
                &tail(&read_lossy(&self.dir.join(MESSAGE_FILE)), 4000),
            );
        }
        out
    }
}

impl Drop for RunningSipp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a sipp run ended with.
#[derive(Clone, Debug)]
pub struct SippReport {
    /// Calls that went through the whole scenario (`SuccessfulCall(C)`).
    pub successful: u64,
    /// Calls that failed (`FailedCall(C)`): unexpected message, timeout, retransmissions
    /// exhausted, TCP connection closed...; see [`SippReport::failure_reasons`].
    pub failed: u64,
    /// sipp's exit code: 0 all calls successful, 1 some failed, 97 internal exit, 99 no call,
    /// 255 fatal error or time limit, 254 port taken; -1 killed by a signal.
    pub exit_code: i32,
    /// From start to exit.
    pub elapsed: Duration,
    /// The command line, quoted for a shell.
    pub command: String,
    /// The last line of sipp's statistics file, by column name (`SuccessfulCall(C)`,
    /// `FailedUnexpectedMessage(C)`, `Retransmissions(C)`, `OutOfCallMsgs(C)`...); empty if
    /// sipp wrote none.
    pub stats: BTreeMap<String, String>,
    /// The end of stderr and of the unexpected-message log, and the final scenario screen
    /// (messages per step, retransmissions, timeouts, unexpected messages).
    pub log_excerpt: String,
    /// Where sipp's files were kept (runs that did not exit with 0, or with `SIPP_KEEP_LOGS`).
    pub kept_files: Option<PathBuf>,
}

impl SippReport {
    /// A cumulative counter of the statistics file by column name, e.g.
    /// `counter("Retransmissions(C)")`.
    pub fn counter(&self, column: &str) -> Option<u64> {
        self.stats.get(column)?.trim().parse().ok()
    }

    /// The non-zero `Failed...(C)` counters other than the total, e.g.
    /// `[("FailedTimeoutOnRecv(C)", 3)]`.
    pub fn failure_reasons(&self) -> Vec<(String, u64)> {
        self.stats
            .iter()
            .filter(|(k, _)| k.starts_with("Failed") && k.ends_with("(C)") && *k != "FailedCall(C)")
            .filter_map(|(k, v)| Some((k.clone(), v.trim().parse().ok()?)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Whether exactly `calls` calls succeeded, none failed, and sipp exited with 0.
    pub fn all_successful(&self, calls: u64) -> bool {
        self.exit_code == 0 && self.successful == calls && self.failed == 0
    }

    /// Panics, with the whole report, unless [`SippReport::all_successful`].
    #[track_caller]
    pub fn assert_all_successful(&self, calls: u64) {
        assert!(
            self.all_successful(calls),
            "expected {calls} successful calls and none failed (exit code 0)\n{self}"
        );
    }
}

impl fmt::Display for SippReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sipp: {} successful, {} failed, exit code {}, {:.2?}",
            self.successful, self.failed, self.exit_code, self.elapsed
        )?;
        let reasons = self.failure_reasons();
        if !reasons.is_empty() {
            writeln!(f, "failures: {reasons:?}")?;
        }
        writeln!(f, "command: {}", self.command)?;
        if let Some(dir) = &self.kept_files {
            writeln!(f, "files: {}", dir.display())?;
        }
        f.write_str(&self.log_excerpt)
    }
}

/// The statistics file (`-stf`), in the run's directory.
const STAT_FILE: &str = "stat.csv";
/// The unexpected-message log (`-error_file`).
const ERROR_FILE: &str = "errors.log";
/// The final screens (`-screen_file`).
const SCREEN_FILE: &str = "screens.log";
/// The message log (`-message_file`).
const MESSAGE_FILE: &str = "messages.log";
/// sipp's stdout (its screen, refreshed every second).
const STDOUT_FILE: &str = "stdout.log";
/// sipp's stderr (warnings and errors).
const STDERR_FILE: &str = "stderr.log";

/// A new directory for one run's files, under the test target's temporary directory.
fn new_run_dir(label: &str) -> Result<PathBuf, String> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("sipp");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!(
        "{label}-{}-{}-{nanos:09}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The last line of sipp's statistics CSV, by the column names of its first line.
fn read_stats(path: &Path) -> BTreeMap<String, String> {
    let text = read_lossy(path);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [header, .., last] = lines[..] else {
        return BTreeMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// Whether something is bound to loopback (or any address) port `port`: UDP sockets and TCP
/// listeners from `/proc/net`, or, where that cannot be read, a bind attempt that finds the
/// port in use.
fn port_bound(transport: Transport, port: u16) -> bool {
    let (files, state) = match transport {
        Transport::Udp => (["/proc/net/udp", "/proc/net/udp6"], "07"),
        Transport::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], "0A"),
    };
    let mut readable = false;
    for file in files {
        let Ok(table) = fs::read_to_string(file) else {
            continue;
        };
        readable = true;
        for line in table.lines().skip(1) {
            let mut cols = line.split_whitespace();
            let (Some(_), Some(local), Some(_), Some(st)) =
                (cols.next(), cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && st == state {
                return true;
            }
        }
    }
    if readable {
        return false;
    }
    let taken = |r: io::Result<()>| matches!(r, Err(e) if e.kind() == io::ErrorKind::AddrInUse);
    match transport {
        Transport::Udp => taken(UdpSocket::bind((LOOPBACK, port)).map(drop)),
        Transport::Tcp => taken(TcpListener::bind((LOOPBACK, port)).map(drop)),
    }
}

/// A duration in whole seconds, rounded up, at least 1 (sipp's `-timeout` ignores fractions:
/// `700ms` would mean no limit at all).
fn whole_seconds(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

/// A file's text, lossily decoded; empty if it cannot be read.
fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `max` bytes of `text` (cut at a line start), marked when cut.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    let cut = cut.find('\n').map_or(cut, |i| &cut[i + 1..]);
    format!("[...]\n{cut}")
}

/// Appends a titled section to `out` if `body` is not empty.
fn section(out: &mut String, title: &str, body: &str) {
    if !body.trim().is_empty() {
        out.push_str(&format!("--- {title} ---\n{body}\n"));
    }
}

/// `program` and `args` as one shell line, quoting what needs it.
fn shell_line(program: &OsStr, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| {
            let s = a.to_string_lossy();
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
