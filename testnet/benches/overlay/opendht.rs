//! OpenDHT's side of the overlay benchmark: makes sure Debian's `python3-opendht` is there
//! (installing it with apt-get when it is missing), runs `opendht_bench.py` with
//! `/usr/bin/python3` for one size, bounded by a deadline, and reads the JSON it prints.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;

use crate::process::bounded;

/// The interpreter Debian's binding is built for.
const PYTHON: &str = "/usr/bin/python3";
/// The script, next to this file.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/overlay/opendht_bench.py"
);
/// The Debian package of the binding.
const PACKAGE: &str = "python3-opendht";
/// The deadline of one apt-get run.
const APT_TIMEOUT: Duration = Duration::from_secs(600);
/// The deadline of a short check (an import, a dpkg query).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// What the script may take beyond its settle timeout, op budget and idle window: starting
/// the interpreter, the last op's deadline, shutting the nodes down.
const SLACK: Duration = Duration::from_secs(90);

/// Makes sure `import opendht` works under `/usr/bin/python3`, installing the package when it
/// does not; gives the package's version. The error says why the OpenDHT side cannot run.
pub(crate) fn prepare() -> Result<String> {
    if !Path::new(PYTHON).exists() {
        bail!("{PYTHON} does not exist");
    }
    if !imports()? {
        println!("OpenDHT: `import opendht` fails under {PYTHON}; installing {PACKAGE}");
        if install().is_err() {
            // The package lists may be missing or stale (a fresh container).
            apt(&["update", "-qq"])?;
            install()?;
        }
        if !imports()? {
            bail!("{PACKAGE} is installed but `import opendht` still fails under {PYTHON}");
        }
    }
    let query = bounded(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", PACKAGE])
            .stderr(Stdio::piped()),
        CHECK_TIMEOUT,
    )?;
    Ok(if query.status.success() {
        query.stdout.trim().to_owned()
    } else {
        "(version unknown)".to_owned()
    })
}

/// What one run of the script is asked to do.
pub(crate) struct Params {
    /// How many nodes.
    pub(crate) nodes: usize,
    /// How many puts, then how many gets.
    pub(crate) ops: usize,
    /// The seed of the node choices (the same splitmix64 as the Rust side).
    pub(crate) seed: u64,
    /// The size of each value, in bytes.
    pub(crate) value_size: usize,
    /// The idle window.
    pub(crate) idle: Duration,
    /// How long the nodes may take to settle.
    pub(crate) settle_timeout: Duration,
    /// The deadline of one put or get.
    pub(crate) op_timeout: Duration,
}

/// What the script measured (its JSON).
#[derive(Debug, Deserialize)]
pub(crate) struct Figures {
    /// The size of each value put, in bytes.
    pub(crate) value_size: usize,
    /// Start and settle, seconds.
    pub(crate) settle_s: f64,
    /// The fewest nodes a routing table listed once settled.
    pub(crate) known_min: usize,
    /// The fewest good nodes a routing table listed once settled.
    pub(crate) good_min: usize,
    /// The puts.
    pub(crate) put: Latency,
    /// The gets.
    pub(crate) get: Latency,
    /// The interpreter's resident memory with `opendht` imported, before any node, in KiB.
    pub(crate) rss_baseline_kib: u64,
    /// Resident memory once settled, minus the baseline, per node, in MiB.
    pub(crate) mem_per_node_mib: f64,
    /// The idle window after the operations.
    pub(crate) idle: Idle,
    /// Whether the op budget ran out before every op was done.
    pub(crate) truncated: bool,
}

/// Latencies of one kind of operation.
#[derive(Debug, Deserialize)]
pub(crate) struct Latency {
    /// Median, in ms (`None` when no operation succeeded).
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile, in ms.
    pub(crate) p99_ms: Option<f64>,
    /// How many succeeded.
    pub(crate) ok: usize,
    /// How many failed, timed out or missed the value.
    pub(crate) failed: usize,
    /// The failures by reason (`timeout`, `failed`, `value missing`).
    #[serde(default)]
    pub(crate) failures: std::collections::BTreeMap<String, usize>,
}

/// The idle window.
#[derive(Debug, Deserialize)]
pub(crate) struct Idle {
    /// Its length, seconds.
    pub(crate) window_s: f64,
    /// The process's CPU time (user + system, every thread) over it, as % of one core.
    pub(crate) cpu_percent: f64,
    /// Resident memory at its end, minus the baseline, per node, in MiB.
    pub(crate) mem_per_node_mib: f64,
}

/// Runs the script for one size; fails when it fails, overruns its deadline (it is then
/// killed) or prints no JSON.
pub(crate) fn run(params: &Params) -> Result<Figures> {
    // Every op ends by its deadline, but a budget keeps a slow run short: the script stops
    // starting ops once it is spent, and says so.
    let budget = Duration::from_secs(60 + 4 * params.ops as u64);
    let deadline = params.settle_timeout + budget + params.op_timeout + params.idle + SLACK;
    let mut command = Command::new(PYTHON);
    command
        .arg(SCRIPT)
        .args(["--nodes", &params.nodes.to_string()])
        .args(["--ops", &params.ops.to_string()])
        .args(["--seed", &params.seed.to_string()])
        .args(["--value-size", &params.value_size.to_string()])
        .args(["--idle", &params.idle.as_secs_f64().to_string()])
        .args(["--settle-timeout", &secs(params.settle_timeout)])
        .args(["--op-timeout", &secs(params.op_timeout)])
        .args(["--budget", &secs(budget)])
        // Its progress lines and errors go straight to our stderr.
        .stderr(Stdio::inherit());
    let finished = bounded(&mut command, deadline)?;
    if !finished.status.success() {
        bail!("{SCRIPT} failed ({}); its error is above", finished.status);
    }
    let line = finished
        .stdout
        .lines()
        .last()
        .ok_or_else(|| anyhow!("{SCRIPT} printed nothing"))?;
    serde_json::from_str(line).with_context(|| format!("the JSON of {SCRIPT}: {line}"))
}

/// Whether `import opendht` works.
fn imports() -> Result<bool> {
    let check = bounded(
        Command::new(PYTHON)
            .args(["-c", "import opendht"])
            .stderr(Stdio::piped()),
        CHECK_TIMEOUT,
    )?;
    Ok(check.status.success())
}

fn install() -> Result<()> {
    apt(&["install", "-y", "-qq", PACKAGE])
}

/// Runs apt-get with `args`, as root (through `sudo -n` when we are not root: it never asks
/// for a password).
fn apt(args: &[&str]) -> Result<()> {
    let mut command = if nix::unistd::geteuid().is_root() {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "apt-get"]);
        sudo
    };
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stderr(Stdio::piped());
    let finished = bounded(&mut command, APT_TIMEOUT)?;
    if !finished.status.success() {
        let last = finished
            .stderr
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_owned();
        bail!(
            "apt-get {} failed ({}): {last}",
            args.join(" "),
            finished.status
        );
    }
    Ok(())
}

fn secs(duration: Duration) -> String {
    duration.as_secs_f64().to_string()
}
