//! Runs [baresip](https://github.com/baresip/baresip) 1.0 (Debian package `baresip-core`)
//! headless from integration tests, on 127.0.0.1 only: one SIP account per instance,
//! registering at (and sending every out-of-dialog request through) a registrar/proxy given
//! by address, a sine tone as the microphone, commands and events over baresip's `ctrl_tcp`
//! control socket, and the RTP counters baresip prints when a call ends.
//!
//! Include it from a test crate in `node/tests/` with
//!
//! ```ignore
//! #[path = "support/baresip.rs"]
//! pub mod baresip;
//! ```
//!
//! (`pub`, as the workspace warns about unreachable `pub` items in a private module). It needs
//! the dev-dependencies `serde_json` and tokio's `process` feature, and a tokio runtime.
//!
//! ```ignore
//! if !baresip::require_baresip() { return; }
//! let alice = Baresip::start(baresip::Config::new("sip:alice@example.p2p").outbound(proxy)).await?;
//! alice.wait_registered(LIMIT).await?;
//! alice.dial("sip:bob@example.p2p").await?;
//! let established = alice.wait_call_established(LIMIT).await?;
//! // ... hold the call ...
//! alice.hangup().await?;
//! let closed = alice.wait_call_closed(LIMIT).await?;
//! let rtp = alice.wait_rtp_summary(LIMIT).await?;
//! ```
//!
//! # What baresip is given
//!
//! A directory of its own (`baresip -f DIR`, under the test target's temporary directory) with
//! `config` and `accounts`:
//!
//! - `sip_listen 127.0.0.1:P` and `net_interface 127.0.0.1`: baresip binds UDP and TCP port P
//!   and TLS port P+1, and writes 127.0.0.1 into Contact and SDP. `dns_server 127.0.0.1:53`:
//!   nothing is ever resolved outside (use IP addresses; the outbound proxy is one).
//! - Modules, and nothing else (no STUN, TURN, ICE, sound card, UI on stdin): `g711` (PCMU,
//!   PCMA), `ausine` (the audio source: a sine tone), `account` (reads `accounts`), `menu`
//!   (the commands: `dial`, `hangup`, `accept`, `reginfo`...), `ctrl_tcp` (the control socket,
//!   `ctrl_tcp_listen 127.0.0.1:C`).
//! - `audio_source ausine,440` with `ausrc_srate 48000` and `ausrc_channels 2`: baresip 1.0's
//!   `ausine` refuses any other format, and baresip resamples to the codec's 8 kHz mono.
//! - No audio player at all (no player module is loaded): received audio is counted by the
//!   RTP layer but played nowhere. (`aufile` in 1.0 is a source only.)
//! - `rtp_ports` a range, `rtp_stats yes` (the RTP summary printed when a call ends, see
//!   [`RtpSummary`]), `statmode_default off` (no status line rewritten with `\r` every 100 ms),
//!   `ringback_disabled yes` (no ringback tone to play).
//! - One account: `<AOR>;outbound="sip:HOST:PORT;transport=udp";regint=..;answermode=auto;
//!   audio_codecs=pcmu;ptime=20`, plus `auth_pass`/`auth_user` when set (baresip only uses
//!   them when challenged). With an outbound proxy, every request outside a dialog, REGISTER
//!   included, is sent there with a loose `Route`; REGISTER's Request-URI is the AOR's domain.
//!   The Contact user is `<user>-0x<hex>`, not the AOR's user.
//!
//! # Control and events
//!
//! `ctrl_tcp` speaks netstrings (`LEN:JSON,`) both ways: a command is
//! `{"command":"dial","params":"sip:bob@example.p2p","token":"7"}`, its answer
//! `{"response":true,"ok":true,"data":"..","token":"7"}`, and every event of the user agent
//! comes unasked as `{"event":true,"class":"call","type":"CALL_ESTABLISHED","accountaor":..,
//! "direction":..,"peeruri":..,"id":<SIP Call-ID>,"param":..}`. Events reach only the clients
//! connected at that moment: a REGISTER answered before the harness connected leaves no
//! event, so [`Baresip::wait_registered`] asks `reginfo` as well.
//!
//! Every event is recorded with the instant it arrived. A `wait_*` method returns the first
//! recorded event of its kind that no earlier wait returned, waiting up to its timeout for one
//! to arrive: so a test reads each event once, in order, and never misses one that came before
//! it started waiting. [`Baresip::events`] lists all of them.
//!
//! stdout and stderr share one pipe (so their lines keep baresip's order); they go to
//! `output.log` in the directory and their last lines into every error message, with the last
//! events. The directory is removed when a [`Baresip`] is dropped, unless the thread is
//! panicking (a failed test), an error was reported, or `BARESIP_KEEP_LOGS` is set; the path is
//! then printed.
//!
//! Baresip 1.0 reports some failures only in its output and goes on: a module it cannot load,
//! `ctrl_tcp` finding its port taken. The harness reads the output up to `baresip is ready.`
//! and fails on a module error, and starts baresip again on other ports when a port was taken
//! (baresip exits when it cannot bind its SIP ports).
//!
//! Environment: `BARESIP_BIN` names another binary; `BARESIP_MODULE_PATH` the module directory
//! (default: the first of `/usr/lib/baresip/modules`, `/usr/local/lib/baresip/modules`,
//! `/usr/lib64/baresip/modules` that holds `ctrl_tcp.so`); `BARESIP_KEEP_LOGS` keeps the
//! directory; `CI` makes a missing baresip a failure instead of a skip ([`require_baresip`]).
//!
//! Written against baresip 1.0.0 with libre 1.1: newer releases renamed commands and config
//! items (`ausrc_channels`, `ctrl_tcp` events, the RTP summary's layout are the parts to check).

// Each test crate uses a part of this helper.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, PipeReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to get baresip on Debian or Ubuntu.
pub const INSTALL_HINT: &str = "apt-get install baresip-core";

/// How long baresip may take to print `baresip is ready.`.
const START_LIMIT: Duration = Duration::from_secs(10);

/// How long a command may take to be answered on the control socket.
const COMMAND_LIMIT: Duration = Duration::from_secs(5);

/// How many times baresip is started on new ports when one it was given is taken.
const PORT_ATTEMPTS: u32 = 5;

/// The most output lines kept in memory (all of them are in `output.log`).
const MAX_OUTPUT_LINES: usize = 2000;

/// The most events kept; older ones are dropped (and counted).
const MAX_EVENTS: usize = 10_000;

/// The most RTP summaries kept.
const MAX_SUMMARIES: usize = 1000;

/// The most warnings (red output lines) kept.
const MAX_WARNINGS: usize = 100;

/// The longest netstring accepted from the control socket.
const MAX_NETSTRING: usize = 1 << 20;

/// Output lines and events quoted in an error message.
const EXCERPT_LINES: usize = 40;
const EXCERPT_EVENTS: usize = 20;

/// Where baresip's modules are looked for, without `BARESIP_MODULE_PATH`.
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/baresip/modules",
    "/usr/local/lib/baresip/modules",
    "/usr/lib64/baresip/modules",
];

/// The modules always loaded, with the config item that loads them: `module` at start,
/// `module_tmp` loaded and unloaded after reading its file, `module_app` after the user agents.
const MODULES: &[(&str, &str)] = &[
    ("module", "g711.so"),
    ("module", "ausine.so"),
    ("module_tmp", "account.so"),
    ("module_app", "menu.so"),
    ("module_app", "ctrl_tcp.so"),
];

/// The line baresip prints once its modules are loaded and its user agents started.
const READY_LINE: &str = "baresip is ready.";

/// The loopback address everything runs on.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The baresip binary: `$BARESIP_BIN` if set, else `baresip` from `PATH`.
pub fn baresip_program() -> OsString {
    std::env::var_os("BARESIP_BIN").unwrap_or_else(|| OsString::from("baresip"))
}

/// The module directory: `$BARESIP_MODULE_PATH`, else the first of the usual places that holds
/// `ctrl_tcp.so`.
pub fn module_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BARESIP_MODULE_PATH") {
        return Some(PathBuf::from(dir));
    }
    MODULE_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("ctrl_tcp.so").is_file())
}

/// Whether baresip can be run: `baresip -h` prints its banner (it exits with code 254), and
/// its module directory is found. Probed once per test process.
pub fn baresip_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let banner = std::process::Command::new(baresip_program())
            .arg("-h")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| {
                String::from_utf8_lossy(&out.stdout).contains("baresip v")
                    || String::from_utf8_lossy(&out.stderr).contains("baresip v")
            });
        banner && module_dir().is_some()
    })
}

/// Whether the tests run in CI: `CI` is set, and not to empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// For a test that needs baresip: true when it is available. When it is not: panics in CI (CI
/// must never skip silently), else prints `skipped: baresip not installed (apt-get install
/// baresip-core)` and returns false, and the test should return. Use as
/// `if !baresip::require_baresip() { return; }`.
pub fn require_baresip() -> bool {
    let available = baresip_available();
    if !available {
        if in_ci() {
            panic!(
                "baresip is not installed, or its modules were not found ({INSTALL_HINT}, or \
                 set BARESIP_BIN and BARESIP_MODULE_PATH), and CI is set: the baresip interop \
                 tests must run in CI"
            );
        }
        eprintln!("skipped: baresip not installed ({INSTALL_HINT})");
    }
    available
}

/// The SIP transport to the outbound proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    /// The value of the URI's `transport` parameter.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One baresip instance: its account and media. Build with [`Config::new`], adjust, then
/// [`Baresip::start`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The account's address-of-record, e.g. `sip:alice@example.p2p`. Its user part names the
    /// instance in logs and directory names.
    pub aor: String,
    /// Where every request outside a dialog goes, REGISTER included (the account's `outbound`
    /// proxy, loose-routed): the registrar/proxy under test, on 127.0.0.1. `None`: requests go
    /// where their Request-URI says (there is no DNS: use IP addresses), and the account does
    /// not register. Default: none.
    pub outbound: Option<SocketAddr>,
    /// The transport to the outbound proxy. Default: UDP.
    pub transport: Transport,
    /// The digest password (`auth_pass`); baresip only uses it when challenged. Default: none.
    pub password: Option<String>,
    /// The digest user name (`auth_user`), when it is not the AOR's user. Default: none.
    pub auth_user: Option<String>,
    /// The registration interval asked for (`regint`, whole seconds); zero: no REGISTER. Only
    /// used with an outbound proxy. Default: 3600 s.
    pub register_interval: Duration,
    /// Answer incoming calls at once (`answermode=auto`), or leave them ringing until
    /// [`Baresip::accept`] (`manual`). Default: auto.
    pub auto_answer: bool,
    /// The audio codecs offered and accepted, in order (`audio_codecs`, baresip's names:
    /// `pcmu`, `pcma`, `opus/48000/2`; all but G.711 need a module in
    /// [`Config::extra_modules`]). Default: `pcmu` alone.
    pub audio_codecs: Vec<String>,
    /// The packetisation time (`ptime`, whole milliseconds): one RTP packet per `ptime`. Default:
    /// 20 ms.
    pub ptime: Duration,
    /// The frequency of the sine tone sent (`audio_source ausine,HZ`). Default: 440 Hz.
    pub tone_hz: u32,
    /// The range RTP ports are drawn from at random (`rtp_ports`; baresip tries other ports of
    /// the range when one is taken). Default: 20000-29999.
    pub rtp_ports: (u16, u16),
    /// Modules loaded besides the required ones, e.g. `opus.so`.
    pub extra_modules: Vec<String>,
    /// Config lines appended as they are, as `(name, value)`, e.g.
    /// `("jitter_buffer_delay", "5-10")`.
    pub extra_config: Vec<(String, String)>,
    /// Print every SIP message sent and received into the output (`-s`). Default: off.
    pub sip_trace: bool,
    /// Where baresip runs: this process's network namespace (the default), or another one
    /// ([`Config::inside`]).
    pub place: Place,
}

/// Opens a TCP connection from inside another network namespace.
pub type Connector = Arc<dyn Fn(SocketAddr) -> io::Result<std::net::TcpStream> + Send + Sync>;

/// Where baresip runs. In another network namespace, its program is started through a
/// launcher (`ip netns exec NS`) and its control socket, on that namespace's loopback, is
/// reached through a [`Connector`] that connects from inside it.
#[derive(Clone, Default)]
pub struct Place {
    launcher: Vec<OsString>,
    connector: Option<Connector>,
}

impl fmt::Debug for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Place")
            .field("launcher", &self.launcher)
            .field("connector", &self.connector.is_some())
            .finish()
    }
}

impl Config {
    /// An account for `aor`, with the defaults of each field: no outbound proxy, UDP, no
    /// password, auto-answer, PCMU at 20 ms, a 440 Hz tone.
    pub fn new(aor: impl Into<String>) -> Self {
        Config {
            aor: aor.into(),
            outbound: None,
            transport: Transport::Udp,
            password: None,
            auth_user: None,
            register_interval: Duration::from_secs(3600),
            auto_answer: true,
            audio_codecs: vec!["pcmu".into()],
            ptime: Duration::from_millis(20),
            tone_hz: 440,
            rtp_ports: (20000, 29999),
            extra_modules: Vec::new(),
            extra_config: Vec::new(),
            sip_trace: false,
            place: Place::default(),
        }
    }

    /// Runs baresip in another network namespace: `launcher` is the program and arguments
    /// that run a command there (`["ip", "netns", "exec", NS]`), `connector` connects to an
    /// address from inside it. Ports are then chosen in this process's namespace and may be
    /// taken in the other one: the start is retried on other ports, as always.
    pub fn inside(mut self, launcher: Vec<OsString>, connector: Connector) -> Self {
        self.place = Place {
            launcher,
            connector: Some(connector),
        };
        self
    }

    /// The registrar/proxy every out-of-dialog request goes through.
    pub fn outbound(mut self, proxy: SocketAddr) -> Self {
        self.outbound = Some(proxy);
        self
    }

    /// The transport to the outbound proxy.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The digest password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The digest user name.
    pub fn auth_user(mut self, user: impl Into<String>) -> Self {
        self.auth_user = Some(user.into());
        self
    }

    /// The registration interval asked for; zero: no REGISTER.
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.register_interval = interval;
        self
    }

    /// Whether incoming calls are answered at once.
    pub fn auto_answer(mut self, on: bool) -> Self {
        self.auto_answer = on;
        self
    }

    /// The audio codecs, in order of preference.
    pub fn audio_codecs<S: Into<String>>(mut self, codecs: impl IntoIterator<Item = S>) -> Self {
        self.audio_codecs = codecs.into_iter().map(Into::into).collect();
        self
    }

    /// The packetisation time.
    pub fn ptime(mut self, ptime: Duration) -> Self {
        self.ptime = ptime;
        self
    }

    /// One more module to load, e.g. `opus.so`.
    pub fn module(mut self, module: impl Into<String>) -> Self {
        self.extra_modules.push(module.into());
        self
    }

    /// One more config line.
    pub fn config_line(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_config.push((name.into(), value.into()));
        self
    }

    /// Whether SIP messages are printed into the output.
    pub fn sip_trace(mut self, on: bool) -> Self {
        self.sip_trace = on;
        self
    }

    /// RTP packets per second each way while a call is up: one per [`Config::ptime`] (50 for
    /// 20 ms; for PCMU that is 64 kbit/s of 160-byte payloads).
    pub fn packets_per_second(&self) -> f64 {
        1.0 / self.ptime.as_secs_f64().max(0.001)
    }

    /// The AOR's user part, for names (`alice` of `sip:alice@example.p2p`).
    fn user(&self) -> String {
        let rest = self.aor.split_once(':').map_or(&*self.aor, |(_, r)| r);
        let user = rest.split('@').next().unwrap_or(rest);
        let clean: String = user
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(32)
            .collect();
        if clean.is_empty() {
            "baresip".into()
        } else {
            clean
        }
    }

    /// The text of the `config` file.
    fn config_file(&self, modules: &Path, sip_port: u16, ctrl_port: u16) -> String {
        let mut lines: Vec<(String, String)> = vec![
            ("poll_method".into(), "epoll".into()),
            ("module_path".into(), modules.display().to_string()),
            ("sip_listen".into(), format!("{LOOPBACK}:{sip_port}")),
            ("net_interface".into(), LOOPBACK.to_string()),
            ("dns_server".into(), format!("{LOOPBACK}:53")),
            ("call_max_calls".into(), "4".into()),
            ("audio_source".into(), format!("ausine,{}", self.tone_hz)),
            ("ausrc_srate".into(), "48000".into()),
            ("ausrc_channels".into(), "2".into()),
            (
                "rtp_ports".into(),
                format!("{}-{}", self.rtp_ports.0, self.rtp_ports.1),
            ),
            ("rtp_stats".into(), "yes".into()),
            ("statmode_default".into(), "off".into()),
            ("ringback_disabled".into(), "yes".into()),
            ("ctrl_tcp_listen".into(), format!("{LOOPBACK}:{ctrl_port}")),
        ];
        for (item, module) in MODULES {
            lines.push(((*item).into(), (*module).into()));
        }
        for module in &self.extra_modules {
            lines.push(("module".into(), module.clone()));
        }
        lines.extend(self.extra_config.iter().cloned());
        let mut text = String::from("# Written by node/tests/support/baresip.rs\n");
        for (name, value) in lines {
            text.push_str(&format!("{name:<24}{value}\n"));
        }
        text
    }

    /// The one line of the `accounts` file.
    fn account_line(&self) -> String {
        let mut line = format!("<{}>", self.aor);
        let regint = match self.outbound {
            Some(proxy) => {
                line.push_str(&format!(
                    ";outbound=\"sip:{proxy};transport={}\"",
                    self.transport.param()
                ));
                self.register_interval.as_secs()
            }
            None => 0,
        };
        line.push_str(&format!(";regint={regint}"));
        if let Some(password) = &self.password {
            line.push_str(&format!(";auth_pass={password}"));
        }
        if let Some(user) = &self.auth_user {
            line.push_str(&format!(";auth_user={user}"));
        }
        let answer = if self.auto_answer { "auto" } else { "manual" };
        line.push_str(&format!(";answermode={answer}"));
        if !self.audio_codecs.is_empty() {
            line.push_str(&format!(";audio_codecs={}", self.audio_codecs.join(",")));
        }
        line.push_str(&format!(";ptime={}", self.ptime.as_millis().max(1)));
        line.push('\n');
        line
    }
}

/// What an event of baresip's is about: its `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `REGISTERING`: a REGISTER was sent.
    Registering,
    /// `REGISTER_OK`: a 2xx to REGISTER (param: the status line).
    RegisterOk,
    /// `REGISTER_FAIL`: REGISTER failed (param: the reason, e.g. `404 Not Found`).
    RegisterFail,
    /// `UNREGISTERING`.
    Unregistering,
    /// `CALL_INCOMING`: a call arrived and was not answered at once (manual answer mode).
    CallIncoming,
    /// `CALL_RINGING`: our INVITE got a 180.
    CallRinging,
    /// `CALL_PROGRESS`: our INVITE got a 183 with SDP.
    CallProgress,
    /// `CALL_ESTABLISHED`: the call is up (caller: 200 received; callee: 200 sent).
    CallEstablished,
    /// `CALL_CLOSED` (param: the reason: `Connection reset by peer` when the peer's BYE
    /// ended it, `Connection reset by user` after our hangup, or a status line).
    CallClosed,
    /// `CALL_RTPESTAB`: the first RTP packet of a stream arrived (param: the media, `audio`).
    CallRtpEstablished,
    /// `CALL_RTCP`: an RTCP report arrived (with `rtcp_stats`).
    CallRtcp,
    /// Any other type, as baresip names it (`CALL_LOCAL_SDP`, `CALL_REMOTE_SDP`, `EXIT`...).
    Other(String),
}

impl EventKind {
    /// The kind of baresip's `type` name.
    pub fn parse(name: &str) -> Self {
        match name {
            "REGISTERING" => EventKind::Registering,
            "REGISTER_OK" => EventKind::RegisterOk,
            "REGISTER_FAIL" => EventKind::RegisterFail,
            "UNREGISTERING" => EventKind::Unregistering,
            "CALL_INCOMING" => EventKind::CallIncoming,
            "CALL_RINGING" => EventKind::CallRinging,
            "CALL_PROGRESS" => EventKind::CallProgress,
            "CALL_ESTABLISHED" => EventKind::CallEstablished,
            "CALL_CLOSED" => EventKind::CallClosed,
            "CALL_RTPESTAB" => EventKind::CallRtpEstablished,
            "CALL_RTCP" => EventKind::CallRtcp,
            other => EventKind::Other(other.to_owned()),
        }
    }

    /// baresip's name of the kind.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Registering => "REGISTERING",
            EventKind::RegisterOk => "REGISTER_OK",
            EventKind::RegisterFail => "REGISTER_FAIL",
            EventKind::Unregistering => "UNREGISTERING",
            EventKind::CallIncoming => "CALL_INCOMING",
            EventKind::CallRinging => "CALL_RINGING",
            EventKind::CallProgress => "CALL_PROGRESS",
            EventKind::CallEstablished => "CALL_ESTABLISHED",
            EventKind::CallClosed => "CALL_CLOSED",
            EventKind::CallRtpEstablished => "CALL_RTPESTAB",
            EventKind::CallRtcp => "CALL_RTCP",
            EventKind::Other(name) => name,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One event of baresip's control socket.
#[derive(Clone, Debug)]
pub struct Event {
    /// `type`.
    pub kind: EventKind,
    /// `class`: `register`, `call`, `other`...
    pub class: String,
    /// `accountaor`: the account's AOR.
    pub account_aor: String,
    /// `direction` of a call event: `incoming` or `outgoing`.
    pub direction: Option<String>,
    /// `peeruri` of a call event.
    pub peer_uri: Option<String>,
    /// `id` of a call event: the call's SIP Call-ID (the same on both sides of a call).
    pub call_id: Option<String>,
    /// `param`: what the event is about (reason, status line, media).
    pub param: Option<String>,
    /// When the harness read it.
    pub at: Instant,
    /// The whole event as baresip sent it.
    pub json: Value,
}

impl Event {
    /// Whether a `CALL_CLOSED` says the peer ended the call: its BYE arrived.
    pub fn closed_by_peer(&self) -> bool {
        self.kind == EventKind::CallClosed
            && self
                .param
                .as_deref()
                .is_some_and(|p| p.contains("reset by peer"))
    }

    /// The event of a JSON object of the control socket.
    fn from_json(json: Value, at: Instant) -> Self {
        let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_owned);
        Event {
            kind: EventKind::parse(&text("type").unwrap_or_default()),
            class: text("class").unwrap_or_default(),
            account_aor: text("accountaor").unwrap_or_default(),
            direction: text("direction"),
            peer_uri: text("peeruri"),
            call_id: text("id"),
            param: text("param"),
            at,
            json,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(param) = &self.param {
            write!(f, " {param:?}")?;
        }
        if let Some(direction) = &self.direction {
            write!(f, " {direction}")?;
        }
        if let Some(peer) = &self.peer_uri {
            write!(f, " peer {peer}")?;
        }
        if let Some(id) = &self.call_id {
            write!(f, " call {id}")?;
        }
        Ok(())
    }
}

/// The RTP counters of one media stream that baresip prints (with `rtp_stats yes`) when the
/// stream ends, i.e. when its call is closed:
///
/// ```text
/// audio           Transmit:     Receive:
/// packets:            176          174
/// avg. bitrate:      63.6         62.9  (kbit/s)
/// errors:               0            0
/// pkt.report:         ...          ...      (only after an RTCP report was exchanged)
/// lost:               ...          ...
/// jitter:             0.0          0.1  (ms)
/// ```
#[derive(Clone, Debug)]
pub struct RtpSummary {
    /// The media: `audio`.
    pub media: String,
    /// What was sent.
    pub transmit: RtpCounters,
    /// What was received.
    pub receive: RtpCounters,
    /// When the harness read the summary's `errors:` line.
    pub at: Instant,
}

/// One direction of an [`RtpSummary`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RtpCounters {
    /// RTP packets.
    pub packets: u64,
    /// The average bitrate of the payload over the stream's life, in kbit/s (64 for PCMU).
    pub kbit_per_s: f64,
    /// Packets that failed (send errors; received packets that could not be decoded).
    pub errors: u64,
    /// Packets counted by the RTCP reports (`pkt.report`); `None` when no report was
    /// exchanged (calls of a few seconds) or when the line had not been read yet.
    pub reported: Option<u64>,
    /// Packets lost, by RTCP.
    pub lost: Option<i64>,
    /// Jitter, by RTCP, in ms.
    pub jitter_ms: Option<f64>,
}

impl fmt::Display for RtpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: sent {} packets ({:.1} kbit/s, {} errors), received {} packets ({:.1} kbit/s, \
             {} errors)",
            self.media,
            self.transmit.packets,
            self.transmit.kbit_per_s,
            self.transmit.errors,
            self.receive.packets,
            self.receive.kbit_per_s,
            self.receive.errors
        )
    }
}

/// A running baresip, with its control connection. Killed when dropped.
#[derive(Debug)]
pub struct Baresip {
    config: Config,
    /// The process; `kill_on_drop`.
    child: Mutex<Child>,
    shared: Arc<Shared>,
    /// The writing half of the control connection.
    ctrl: tokio::sync::Mutex<OwnedWriteHalf>,
    /// The task reading the control connection.
    reader: JoinHandle<()>,
    tokens: AtomicU64,
    sip_addr: SocketAddr,
    ctrl_addr: SocketAddr,
    command_line: String,
    dir: PathBuf,
    /// Set once an error was reported: the directory is then kept.
    keep: AtomicBool,
}

impl Baresip {
    /// Writes the directory, starts baresip, waits for `baresip is ready.` and connects to its
    /// control socket. Errors: baresip could not be started, could not load a module, exited,
    /// or was not ready within 10 s; with its output.
    pub async fn start(config: Config) -> Result<Baresip, String> {
        let modules = module_dir().ok_or_else(|| {
            format!(
                "no baresip module directory found (looked for ctrl_tcp.so in {MODULE_DIRS:?}; \
                 {INSTALL_HINT}, or set BARESIP_MODULE_PATH)"
            )
        })?;
        let mut attempt = 1;
        loop {
            match Baresip::start_once(&config, &modules).await {
                Ok(baresip) => return Ok(baresip),
                Err(StartError::PortTaken(message)) if attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "baresip {}: a port was taken, starting again ({message})",
                        config.user()
                    );
                    attempt += 1;
                }
                Err(StartError::PortTaken(message) | StartError::Failed(message)) => {
                    return Err(message);
                }
            }
        }
    }

    /// The account's address-of-record.
    pub fn aor(&self) -> &str {
        &self.config.aor
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where baresip's SIP sockets are bound (UDP and TCP; TLS on the next port).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// baresip's control socket.
    pub fn ctrl_addr(&self) -> SocketAddr {
        self.ctrl_addr
    }

    /// The directory of its `config`, `accounts`, `output.log` and `events.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The command line it was started with.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Runs a command of the `menu` module (`dial`, `hangup`, `accept`, `reginfo`,
    /// `listcalls`, `callstat`...) with its parameters, and returns its `data` (its text).
    /// Errors: the control connection failed, baresip answered `ok: false`, or no answer
    /// within 5 s.
    pub async fn command(&self, command: &str, params: &str) -> Result<String, String> {
        let token = self.tokens.fetch_add(1, Ordering::Relaxed).to_string();
        let body = serde_json::json!({
            "command": command,
            "params": params,
            "token": token,
        })
        .to_string();
        let frame = format!("{}:{body},", body.len());
        {
            let mut ctrl = self.ctrl.lock().await;
            if let Err(e) = ctrl.write_all(frame.as_bytes()).await {
                return Err(self.failure(&format!(
                    "cannot send `{command} {params}` to the control socket: {e}"
                )));
            }
        }
        let what = format!("the answer to `{command} {params}`");
        let answer = self
            .wait_for(&what, COMMAND_LIMIT, |state| state.responses.remove(&token))
            .await?;
        if answer.ok {
            Ok(answer.data)
        } else {
            Err(self.failure(&format!(
                "baresip refused `{command} {params}`: {}",
                answer.data
            )))
        }
    }

    /// Calls `uri` (`dial`); follow with [`Baresip::wait_call_established`].
    pub async fn dial(&self, uri: &str) -> Result<(), String> {
        self.command("dial", uri).await.map(drop)
    }

    /// Ends the current call (`hangup`): BYE when it is up, CANCEL or a rejection before.
    pub async fn hangup(&self) -> Result<(), String> {
        self.command("hangup", "").await.map(drop)
    }

    /// Answers the ringing call (`accept`), with manual answer mode.
    pub async fn accept(&self) -> Result<(), String> {
        self.command("accept", "").await.map(drop)
    }

    /// Whether `reginfo` says the account is registered (`OK`).
    pub async fn is_registered(&self) -> Result<bool, String> {
        let info = self.command("reginfo", "").await?;
        Ok(info
            .lines()
            .map(strip_ansi)
            .filter(|line| line.contains(&self.config.aor))
            .any(|line| line.split_whitespace().any(|word| word == "OK")))
    }

    /// Waits until the account is registered: a `REGISTER_OK` no earlier wait returned, or, for
    /// a registration done before the control connection was open (whose event nobody heard),
    /// `reginfo` saying `OK`. Returns the `REGISTER_OK`, or in the second case an event made up
    /// by the harness (param `(from reginfo)`). Errors: `REGISTER_FAIL`, or neither within
    /// `timeout`.
    pub async fn wait_registered(&self, timeout: Duration) -> Result<Event, String> {
        let registered =
            |kind: &EventKind| matches!(kind, EventKind::RegisterOk | EventKind::RegisterFail);
        // The answer to reginfo comes after every event sent before it, on the same connection.
        let already = self.is_registered().await?;
        let event = match self.take_event(|e| registered(&e.kind)) {
            Some(event) => event,
            None if already => return Ok(self.synthetic_event(EventKind::RegisterOk, "reginfo")),
            None => {
                self.wait_event_where("REGISTER_OK", timeout, |e| registered(&e.kind))
                    .await?
            }
        };
        match event.kind {
            EventKind::RegisterOk => Ok(event),
            _ => Err(self.failure(&format!("registration failed: {event}"))),
        }
    }

    /// Waits for the next `CALL_ESTABLISHED`. Errors: a `CALL_CLOSED` came first (the call
    /// failed; the error gives its reason), or neither within `timeout`.
    pub async fn wait_call_established(&self, timeout: Duration) -> Result<Event, String> {
        let event = self
            .wait_event_where("CALL_ESTABLISHED", timeout, |e| {
                matches!(e.kind, EventKind::CallEstablished | EventKind::CallClosed)
            })
            .await?;
        match event.kind {
            EventKind::CallEstablished => Ok(event),
            _ => Err(self.failure(&format!(
                "the call closed before it was established: {event}"
            ))),
        }
    }

    /// Waits for the next `CALL_CLOSED`.
    pub async fn wait_call_closed(&self, timeout: Duration) -> Result<Event, String> {
        self.wait_event(EventKind::CallClosed, timeout).await
    }

    /// Waits for the next event of `kind` that no earlier wait returned.
    pub async fn wait_event(&self, kind: EventKind, timeout: Duration) -> Result<Event, String> {
        let what = kind.name().to_owned();
        self.wait_event_where(&what, timeout, move |e| e.kind == kind)
            .await
    }

    /// Waits for the next event that no earlier wait returned and `matches`; `what` names it
    /// in the error.
    pub async fn wait_event_where(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> Result<Event, String> {
        self.wait_for(what, timeout, |state| state.take_event(&matches))
            .await
    }

    /// Waits for the next RTP summary (printed when a call's stream ends, after its
    /// `CALL_CLOSED`) that no earlier wait returned.
    pub async fn wait_rtp_summary(&self, timeout: Duration) -> Result<RtpSummary, String> {
        self.wait_for("the RTP summary of the call", timeout, |state| {
            state.take_summary()
        })
        .await
    }

    /// Every event recorded so far (the last 10 000), returned by a wait or not.
    pub fn events(&self) -> Vec<Event> {
        self.shared
            .lock()
            .events
            .iter()
            .map(|r| r.event.clone())
            .collect()
    }

    /// The last `lines` lines of baresip's output (stdout and stderr, colours removed).
    pub fn output_tail(&self, lines: usize) -> String {
        let state = self.shared.lock();
        let skip = state.output.len().saturating_sub(lines);
        state
            .output
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last events and output lines, where the files are, and whether baresip still
    /// runs: for assertion messages. Keeps the directory.
    pub fn report(&self) -> String {
        self.keep.store(true, Ordering::Relaxed);
        let status = match self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_wait()
        {
            Ok(Some(status)) => format!("exited: {status}"),
            Ok(None) => "running".to_owned(),
            Err(e) => format!("unknown ({e})"),
        };
        let state = self.shared.lock();
        let mut out = format!(
            "baresip {} ({status}; SIP {}, control {})\ncommand: {}\nfiles: {}\n",
            self.config.aor,
            self.sip_addr,
            self.ctrl_addr,
            self.command_line,
            self.dir.display()
        );
        if let Some(reason) = &state.ctrl_closed {
            out.push_str(&format!("control connection: {reason}\n"));
        }
        if state.events_dropped > 0 {
            out.push_str(&format!(
                "({} older events dropped)\n",
                state.events_dropped
            ));
        }
        let skip = state.events.len().saturating_sub(EXCERPT_EVENTS);
        out.push_str(&format!(
            "--- last events ({} in all) ---\n",
            state.events.len()
        ));
        for recorded in state.events.iter().skip(skip) {
            let mark = if recorded.taken { "  " } else { "* " };
            out.push_str(&format!("{mark}{}\n", recorded.event));
        }
        out.push_str("  (* = not returned by a wait yet)\n");
        let skip = state.output.len().saturating_sub(EXCERPT_LINES);
        out.push_str(&format!(
            "--- last output lines ({} in all) ---\n",
            state.output_total
        ));
        for line in state.output.iter().skip(skip) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Asks baresip to quit (`quit`: it unregisters, ends its calls and exits) and waits up to
    /// `timeout` for it to exit; kills it then, and fails.
    pub async fn quit(mut self, timeout: Duration) -> Result<ExitStatus, String> {
        // No answer is awaited: baresip may exit before it sends one.
        let body =
            serde_json::json!({"command": "quit", "params": "", "token": "quit"}).to_string();
        let frame = format!("{}:{body},", body.len());
        let sent = self.ctrl.get_mut().write_all(frame.as_bytes()).await;
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(self.failure(&format!("cannot wait for baresip: {e}"))),
            Err(_) => {
                let _ = child.start_kill();
                Err(self.failure(&format!(
                    "baresip did not exit within {timeout:?} of `quit` (sent: {sent:?}), and was \
                     killed"
                )))
            }
        }
    }

    /// Starts baresip once, on new ports.
    async fn start_once(config: &Config, modules: &Path) -> Result<Baresip, StartError> {
        let failed = StartError::Failed;
        let sip_port = free_sip_port().map_err(|e| failed(format!("no free SIP port: {e}")))?;
        let ctrl_port = free_tcp_port().map_err(|e| failed(format!("no free TCP port: {e}")))?;
        let dir = new_run_dir(&config.user()).map_err(failed)?;
        let write = |name: &str, text: String| {
            fs::write(dir.join(name), text)
                .map_err(|e| failed(format!("cannot write {}: {e}", dir.join(name).display())))
        };
        write("config", config.config_file(modules, sip_port, ctrl_port))?;
        write("accounts", config.account_line())?;

        let mut args: Vec<OsString> = config.place.launcher.clone();
        let program = if args.is_empty() {
            baresip_program()
        } else {
            let launcher = args.remove(0);
            args.push(baresip_program());
            launcher
        };
        args.extend(["-f".into(), dir.clone().into_os_string()]);
        if config.sip_trace {
            args.push("-s".into());
        }
        let command_line = std::iter::once(&program)
            .chain(&args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let (reader, writer) =
            io::pipe().map_err(|e| failed(format!("cannot create a pipe: {e}")))?;
        let log = File::create(dir.join(OUTPUT_FILE))
            .map_err(|e| failed(format!("cannot create {OUTPUT_FILE}: {e}")))?;
        // In a block: the command holds the pipe's writing end, which must be closed here for
        // the reader to see the end of the output when baresip exits.
        let child = {
            let stderr = writer
                .try_clone()
                .map_err(|e| failed(format!("cannot clone a pipe: {e}")))?;
            Command::new(&program)
                .args(&args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(writer)
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| failed(format!("cannot start {command_line}: {e} ({INSTALL_HINT})")))?
        };
        let shared = Arc::new(Shared::new());
        let output_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("baresip-{}-output", config.user()))
            .spawn(move || read_output(reader, log, &output_shared))
            .map_err(|e| failed(format!("cannot start the output thread: {e}")))?;

        let ctrl_addr = SocketAddr::from((LOOPBACK, ctrl_port));
        let mut baresip = Starting {
            config: config.clone(),
            child: Some(child),
            shared,
            sip_addr: SocketAddr::from((LOOPBACK, sip_port)),
            ctrl_addr,
            command_line,
            dir,
        };
        baresip.wait_ready().await?;
        baresip.connect().await
    }

    /// Takes the first event that no wait returned and that `matches`, without waiting.
    fn take_event(&self, matches: impl Fn(&Event) -> bool) -> Option<Event> {
        self.shared.lock().take_event(matches)
    }

    /// An event the harness made up, for a state learnt otherwise than by an event.
    fn synthetic_event(&self, kind: EventKind, source: &str) -> Event {
        Event {
            class: "register".into(),
            account_aor: self.config.aor.clone(),
            direction: None,
            peer_uri: None,
            call_id: None,
            param: Some(format!("(from {source})")),
            at: Instant::now(),
            json: serde_json::json!({"type": kind.name(), "synthetic": source}),
            kind,
        }
    }

    /// Waits until `ready` returns something, for up to `timeout`; fails when baresip's
    /// output or control connection ends first.
    async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, String> {
        wait_for(&self.shared, what, timeout, ready)
            .await
            .map_err(|e| self.failure(&e))
    }

    /// `message` with the report; keeps the directory.
    fn failure(&self, message: &str) -> String {
        format!("{message}\n{}", self.report())
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.reader.abort();
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        let _ = child.start_kill();
        let keep = std::thread::panicking()
            || self.keep.load(Ordering::Relaxed)
            || std::env::var_os("BARESIP_KEEP_LOGS").is_some();
        if keep {
            eprintln!(
                "baresip {}: files kept in {}",
                self.config.aor,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Why one start failed.
enum StartError {
    /// A port was taken: try again on others.
    PortTaken(String),
    /// Anything else.
    Failed(String),
}

/// A baresip started but not ready yet: killed, and its directory kept, when dropped.
struct Starting {
    config: Config,
    child: Option<Child>,
    shared: Arc<Shared>,
    sip_addr: SocketAddr,
    ctrl_addr: SocketAddr,
    command_line: String,
    dir: PathBuf,
}

impl Starting {
    /// Waits for `baresip is ready.`, then checks that every module loaded and no port was
    /// taken.
    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let waited = wait_for(&self.shared, READY_LINE, START_LIMIT, |state| {
            state.ready.then_some(())
        })
        .await;
        let state = self.shared.lock();
        let port_taken = state
            .warnings
            .iter()
            .any(|w| w.contains("Address already in use"));
        let module_errors: Vec<String> = state
            .warnings
            .iter()
            .filter(|w| w.starts_with("module ") && w.contains(".so: "))
            .cloned()
            .collect();
        let problem = match waited {
            Err(e) => Some(e),
            Ok(()) if !module_errors.is_empty() => Some(format!(
                "baresip could not load modules: {module_errors:?} (module_path {:?}; \
                 {INSTALL_HINT}, or set BARESIP_MODULE_PATH)",
                module_dir()
            )),
            Ok(()) if port_taken => Some("a port was taken".into()),
            Ok(()) => None,
        };
        let Some(problem) = problem else {
            return Ok(());
        };
        let message = format!(
            "baresip {} did not start: {problem}\ncommand: {}\nfiles: {}\n--- output ---\n{}",
            self.config.aor,
            self.command_line,
            self.dir.display(),
            tail_lines(&state.output, EXCERPT_LINES)
        );
        drop(state);
        if port_taken && module_errors.is_empty() {
            if let Some(mut child) = self.child.take() {
                let _ = child.start_kill();
            }
            let _ = fs::remove_dir_all(&self.dir);
            Err(StartError::PortTaken(problem))
        } else {
            Err(StartError::Failed(message))
        }
    }

    /// Connects to the control socket and starts reading it.
    async fn connect(mut self) -> Result<Baresip, StartError> {
        let connected = match self.config.place.connector.clone() {
            None => TcpStream::connect(self.ctrl_addr).await,
            Some(connector) => {
                let addr = self.ctrl_addr;
                match tokio::task::spawn_blocking(move || connector(addr)).await {
                    Ok(Ok(stream)) => stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(stream)),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(io::Error::other(e)),
                }
            }
        };
        let stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                return Err(StartError::Failed(format!(
                    "cannot connect to baresip's control socket {}: {e}\ncommand: {}\nfiles: {}\n\
                     --- output ---\n{}",
                    self.ctrl_addr,
                    self.command_line,
                    self.dir.display(),
                    tail_lines(&self.shared.lock().output, EXCERPT_LINES)
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let events_log = File::create(self.dir.join(EVENTS_FILE)).ok();
        let reader = tokio::spawn(read_ctrl(read, events_log, Arc::clone(&self.shared)));
        let Some(child) = self.child.take() else {
            return Err(StartError::Failed("baresip was already stopped".into()));
        };
        Ok(Baresip {
            config: self.config.clone(),
            child: Mutex::new(child),
            shared: Arc::clone(&self.shared),
            ctrl: tokio::sync::Mutex::new(write),
            reader,
            tokens: AtomicU64::new(1),
            sip_addr: self.sip_addr,
            ctrl_addr: self.ctrl_addr,
            command_line: std::mem::take(&mut self.command_line),
            dir: std::mem::take(&mut self.dir),
            keep: AtomicBool::new(false),
        })
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if !self.dir.as_os_str().is_empty() {
                eprintln!(
                    "baresip {}: files kept in {}",
                    self.config.aor,
                    self.dir.display()
                );
            }
        }
    }
}

/// baresip's stdout and stderr, in its directory.
const OUTPUT_FILE: &str = "output.log";
/// The events of the control socket as received, one JSON object a line.
const EVENTS_FILE: &str = "events.log";

/// What the output thread and the control reader found, and the signal that it changed.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped after every change of `state`.
    changed: watch::Sender<()>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes the waiters.
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.send_modify(|()| {});
    }
}

#[derive(Debug, Default)]
struct State {
    /// The last output lines, colours removed.
    output: VecDeque<String>,
    output_total: usize,
    /// Lines baresip printed in red (its warnings and errors).
    warnings: VecDeque<String>,
    /// `baresip is ready.` was printed.
    ready: bool,
    /// The output ended: baresip exited.
    output_closed: bool,
    events: VecDeque<RecordedEvent>,
    events_dropped: usize,
    /// Answers by token, until a command takes its own.
    responses: HashMap<String, Answer>,
    summaries: VecDeque<RecordedSummary>,
    /// The summary being read, or the last one (its RTCP lines may follow).
    parsing: Parsing,
    /// Why the control connection ended.
    ctrl_closed: Option<String>,
}

#[derive(Debug)]
struct RecordedEvent {
    event: Event,
    /// Returned by a wait.
    taken: bool,
}

#[derive(Debug)]
struct RecordedSummary {
    summary: RtpSummary,
    taken: bool,
}

#[derive(Debug)]
struct Answer {
    ok: bool,
    data: String,
}

/// Where the reader of an RTP summary is.
#[derive(Debug, Default)]
enum Parsing {
    /// Not in a summary.
    #[default]
    Outside,
    /// After the header line, before `errors:`.
    Summary(RtpSummary),
    /// After `errors:`: the summary is published; `pkt.report:`, `lost:` and `jitter:` lines
    /// may follow and amend it.
    Rtcp,
}

impl State {
    fn take_event(&mut self, matches: impl Fn(&Event) -> bool) -> Option<Event> {
        let recorded = self
            .events
            .iter_mut()
            .find(|r| !r.taken && matches(&r.event))?;
        recorded.taken = true;
        Some(recorded.event.clone())
    }

    fn take_summary(&mut self) -> Option<RtpSummary> {
        let recorded = self.summaries.iter_mut().find(|r| !r.taken)?;
        recorded.taken = true;
        Some(recorded.summary.clone())
    }

    /// Why nothing more will come, if so.
    fn ended(&self) -> Option<String> {
        if self.output_closed {
            Some("baresip exited (its output ended)".into())
        } else {
            self.ctrl_closed
                .as_ref()
                .map(|reason| format!("the control connection ended: {reason}"))
        }
    }

    /// One line of output.
    fn push_line(&mut self, raw: &str) {
        let red = raw.contains("\u{1b}[31m");
        let line = strip_ansi(raw);
        let line = line.trim_end().to_owned();
        if line == READY_LINE {
            self.ready = true;
        }
        if red && !line.is_empty() {
            if self.warnings.len() == MAX_WARNINGS {
                self.warnings.pop_front();
            }
            self.warnings.push_back(line.clone());
        }
        self.parse_summary(&line);
        if self.output.len() == MAX_OUTPUT_LINES {
            self.output.pop_front();
        }
        self.output.push_back(line);
        self.output_total += 1;
    }

    /// Reads the lines of an RTP summary.
    fn parse_summary(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [media, "Transmit:", "Receive:"] = words[..] {
            self.parsing = Parsing::Summary(RtpSummary {
                media: media.to_owned(),
                transmit: RtpCounters::default(),
                receive: RtpCounters::default(),
                at: Instant::now(),
            });
            return;
        }
        let Some((key, values)) = line.split_once(':') else {
            self.parsing = Parsing::Outside;
            return;
        };
        let numbers: Vec<&str> = values.split_whitespace().take(2).collect();
        let [tx, rx] = numbers[..] else {
            self.parsing = Parsing::Outside;
            return;
        };
        match (&mut self.parsing, key.trim()) {
            (Parsing::Summary(s), "packets") => {
                s.transmit.packets = tx.parse().unwrap_or(0);
                s.receive.packets = rx.parse().unwrap_or(0);
            }
            (Parsing::Summary(s), "avg. bitrate") => {
                s.transmit.kbit_per_s = tx.parse().unwrap_or(0.0);
                s.receive.kbit_per_s = rx.parse().unwrap_or(0.0);
            }
            (Parsing::Summary(s), "errors") => {
                s.transmit.errors = tx.parse().unwrap_or(0);
                s.receive.errors = rx.parse().unwrap_or(0);
                s.at = Instant::now();
                let summary = s.clone();
                if self.summaries.len() == MAX_SUMMARIES {
                    self.summaries.pop_front();
                }
                self.summaries.push_back(RecordedSummary {
                    summary,
                    taken: false,
                });
                self.parsing = Parsing::Rtcp;
            }
            (Parsing::Rtcp, key @ ("pkt.report" | "lost" | "jitter")) => {
                if let Some(last) = self.summaries.back_mut() {
                    let s = &mut last.summary;
                    match key {
                        "pkt.report" => {
                            s.transmit.reported = tx.parse().ok();
                            s.receive.reported = rx.parse().ok();
                        }
                        "lost" => {
                            s.transmit.lost = tx.parse().ok();
                            s.receive.lost = rx.parse().ok();
                        }
                        _ => {
                            s.transmit.jitter_ms = tx.parse().ok();
                            s.receive.jitter_ms = rx.parse().ok();
                        }
                    }
                }
            }
            _ => self.parsing = Parsing::Outside,
        }
    }

    /// One message of the control socket.
    fn push_ctrl(&mut self, json: Value) {
        if json.get("event").and_then(Value::as_bool) == Some(true) {
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
                self.events_dropped += 1;
            }
            self.events.push_back(RecordedEvent {
                event: Event::from_json(json, Instant::now()),
                taken: false,
            });
        } else if json.get("response").and_then(Value::as_bool) == Some(true) {
            let token = json
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let answer = Answer {
                ok: json.get("ok").and_then(Value::as_bool).unwrap_or(false),
                data: json
                    .get("data")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            };
            // Bounded: only answers to our own commands, each taken by its command (or left by
            // one that timed out).
            if self.responses.len() < MAX_EVENTS {
                self.responses.insert(token, answer);
            }
        }
    }
}

/// Waits until `ready` returns something, for up to `timeout`. Errors (without the report):
/// the timeout, or the end of baresip's output or control connection.
async fn wait_for<T>(
    shared: &Shared,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut(&mut State) -> Option<T>,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    // Subscribed before looking: a change after the look wakes the wait.
    let mut changed = shared.changed.subscribe();
    loop {
        {
            let mut state = shared.lock();
            if let Some(found) = ready(&mut state) {
                return Ok(found);
            }
            if let Some(reason) = state.ended() {
                return Err(format!("{reason} while waiting for {what}"));
            }
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(format!("the harness stopped while waiting for {what}")),
            Err(_) => return Err(format!("timed out after {timeout:?} waiting for {what}")),
        }
    }
}

/// Reads baresip's output (stdout and stderr) line by line until it ends: into `output.log`
/// and the state.
fn read_output(reader: PipeReader, mut log: File, shared: &Shared) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let _ = log.write_all(&line);
                let text = String::from_utf8_lossy(&line);
                shared.update(|state| state.push_line(&text));
            }
        }
    }
    shared.update(|state| state.output_closed = true);
}

/// Reads the control connection until it ends: netstrings of JSON, into the state and
/// `events.log`.
async fn read_ctrl(mut read: OwnedReadHalf, mut log: Option<File>, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let reason = 'read: loop {
        match read.read(&mut chunk).await {
            Ok(0) => break "baresip closed it".to_owned(),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("read error: {e}"),
        }
        loop {
            match take_netstring(&mut buffer) {
                Ok(Some(payload)) => {
                    if let Some(log) = log.as_mut() {
                        let _ = log.write_all(&payload);
                        let _ = log.write_all(b"\n");
                    }
                    match serde_json::from_slice::<Value>(&payload) {
                        Ok(json) => shared.update(|state| state.push_ctrl(json)),
                        Err(e) => {
                            break 'read format!(
                                "not JSON ({e}): {}",
                                String::from_utf8_lossy(&payload)
                            );
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => break 'read e,
            }
        }
    };
    shared.update(|state| state.ctrl_closed = Some(reason));
}

/// Takes one netstring (`LEN:PAYLOAD,`) off the front of `buffer`: `None` until it is whole.
fn take_netstring(buffer: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    let Some(colon) = buffer.iter().take(12).position(|b| *b == b':') else {
        if buffer.len() >= 12 || !buffer.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "not a netstring: {:?}",
                String::from_utf8_lossy(&buffer[..buffer.len().min(40)])
            ));
        }
        return Ok(None);
    };
    let len: usize = std::str::from_utf8(&buffer[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|len| *len <= MAX_NETSTRING)
        .ok_or_else(|| {
            format!(
                "bad netstring length {:?}",
                String::from_utf8_lossy(&buffer[..colon])
            )
        })?;
    let end = colon + 1 + len;
    if buffer.len() <= end {
        return Ok(None);
    }
    if buffer[end] != b',' {
        return Err("netstring not ended by ','".into());
    }
    let payload = buffer[colon + 1..end].to_vec();
    buffer.drain(..=end);
    Ok(Some(payload))
}

/// `text` without its ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines, one string.
fn tail_lines(lines: &VecDeque<String>, n: usize) -> String {
    let skip = lines.len().saturating_sub(n);
    lines
        .iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loopback port P free right now for UDP and TCP, with P+1 free for TCP (baresip's TLS
/// listener). baresip may still lose it before it binds; [`Baresip::start`] then retries.
fn free_sip_port() -> io::Result<u16> {
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind((LOOPBACK, 0))?;
        let port = udp.local_addr()?.port();
        if port == u16::MAX {
            continue;
        }
        match (
            TcpListener::bind((LOOPBACK, port)),
            TcpListener::bind((LOOPBACK, port + 1)),
        ) {
            (Ok(_), Ok(_)) => return Ok(port),
            (Err(e), _) | (_, Err(e)) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// A loopback TCP port free right now.
fn free_tcp_port() -> io::Result<u16> {
    Ok(TcpListener::bind((LOOPBACK, 0))?.local_addr()?.port())
}

/// A new directory for one instance, under the test target's temporary directory.
fn new_run_dir(label: &str) -> Result<PathBuf, String> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("baresip");
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

/// The least share of the packets the codec's rate predicts that a checked call must carry
/// each way.
pub const MIN_SHARE: f64 = 0.5;

/// What [`checked_call`] saw of one side.
#[derive(Clone, Debug)]
pub struct Side {
    /// Its `CALL_ESTABLISHED`.
    pub established: Event,
    /// Its `CALL_CLOSED`.
    pub closed: Event,
    /// Its RTP counters.
    pub rtp: RtpSummary,
}

impl Side {
    /// How long the call was up on this side.
    pub fn up(&self) -> Duration {
        self.closed.at - self.established.at
    }
}

/// The call a test expects of two registered-to-be instances: both register; `caller` dials
/// `uri` and `callee` answers (auto-answer), with a 180 first; both see one call, outgoing and
/// incoming, and RTP on both sides; it is held for `hold`; the caller hangs up and its BYE
/// ends the callee's call; each side received and sent RTP at the codec's rate for as long
/// as the call was up (at least [`MIN_SHARE`] of it, with no errors), and no side received
/// more than the other sent. Each step waits at most `limit`. Panics with both reports on
/// the first thing that does not hold: it is a test's assertion.
pub async fn checked_call(
    caller: &Baresip,
    callee: &Baresip,
    uri: &str,
    hold: Duration,
    limit: Duration,
) -> (Side, Side) {
    let ok = |result: Result<Event, String>| result.unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = tokio::join!(caller.wait_registered(limit), callee.wait_registered(limit));
    ok(a);
    ok(b);

    caller.dial(uri).await.unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = tokio::join!(
        caller.wait_call_established(limit),
        callee.wait_call_established(limit)
    );
    let (established_a, established_b) = (ok(a), ok(b));
    // The callee answers at once, but with a 180 first.
    let ringing = ok(caller.wait_event(EventKind::CallRinging, limit).await);
    assert!(
        ringing.at <= established_a.at,
        "the 180 came after the 200: {ringing}\n{}",
        caller.report()
    );
    assert_eq!(
        established_a.call_id,
        established_b.call_id,
        "caller and callee are not in the same call\n{}\n{}",
        caller.report(),
        callee.report()
    );
    assert_eq!(established_a.direction.as_deref(), Some("outgoing"));
    assert_eq!(established_b.direction.as_deref(), Some("incoming"));
    // The first RTP packet arrived on both sides.
    let (a, b) = tokio::join!(
        caller.wait_event(EventKind::CallRtpEstablished, limit),
        callee.wait_event(EventKind::CallRtpEstablished, limit)
    );
    ok(a);
    ok(b);

    // The one deliberate sleep: the call is held while the tone flows both ways.
    tokio::time::sleep(hold).await;
    caller.hangup().await.unwrap_or_else(|e| panic!("{e}"));

    let (a, b) = tokio::join!(
        caller.wait_call_closed(limit),
        callee.wait_call_closed(limit)
    );
    let (closed_a, closed_b) = (ok(a), ok(b));
    assert!(
        closed_b.closed_by_peer(),
        "the callee's call did not end by the caller's BYE: {closed_b}\n{}",
        callee.report()
    );
    let (a, b) = tokio::join!(
        caller.wait_rtp_summary(limit),
        callee.wait_rtp_summary(limit)
    );
    let summary = |result: Result<RtpSummary, String>| result.unwrap_or_else(|e| panic!("{e}"));
    let sides = (
        Side {
            established: established_a,
            closed: closed_a,
            rtp: summary(a),
        },
        Side {
            established: established_b,
            closed: closed_b,
            rtp: summary(b),
        },
    );
    eprintln!(
        "{}: {}, up {:.2?}\n{}: {}, up {:.2?}",
        caller.aor(),
        sides.0.rtp,
        sides.0.up(),
        callee.aor(),
        sides.1.rtp,
        sides.1.up()
    );
    assert_rate(caller, &sides.0);
    assert_rate(callee, &sides.1);
    // Nothing arrives that was not sent: no packet duplicated or looped.
    assert!(
        sides.0.rtp.receive.packets <= sides.1.rtp.transmit.packets
            && sides.1.rtp.receive.packets <= sides.0.rtp.transmit.packets,
        "more RTP received than sent: {}; {}",
        sides.0.rtp,
        sides.1.rtp
    );
    sides
}

/// `who` sent and received RTP at its codec's rate while `side` was up.
fn assert_rate(who: &Baresip, side: &Side) {
    let (up, summary) = (side.up(), &side.rtp);
    let expected = up.as_secs_f64() * who.config().packets_per_second();
    let in_range = |packets: u64| {
        let packets = packets as f64;
        packets >= MIN_SHARE * expected && packets <= 1.5 * expected + 5.0
    };
    assert!(
        summary.media == "audio" && in_range(summary.receive.packets),
        "{} received {} RTP packets in {up:.2?}, expected about {expected:.0} \
         ({} a second): {summary}\n{}",
        who.aor(),
        summary.receive.packets,
        who.config().packets_per_second(),
        who.report()
    );
    assert!(
        in_range(summary.transmit.packets),
        "{} sent {} RTP packets in {up:.2?}, expected about {expected:.0}: {summary}\n{}",
        who.aor(),
        summary.transmit.packets,
        who.report()
    );
    assert_eq!(
        summary.receive.errors,
        0,
        "{}: RTP packets that could not be used: {summary}",
        who.aor()
    );
}
