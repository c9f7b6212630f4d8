//! The report of a testnet run: what `p2psip testnet run` measured ([`Run`]), the figures
//! computed from it ([`Report`]), and the two files it leaves ([`write()`]): `report.json` and a
//! self-contained `report.html` with charts.
//!
//! Pure code: no networking, no clock. The runner fills a [`Run`] as calls go, then calls
//! [`Report::from_run`], prints [`Report::summary`] and calls [`write()`].
//!
//! # Figures
//!
//! - Percentiles are by the nearest-rank method: the p-th percentile of n sorted samples is
//!   the sample of rank ⌈p·n/100⌉ (counting from 1). It is always one of the samples, never
//!   an interpolation between two.
//! - A figure over no sample (no registration succeeded, no call got a 180, no call recorded
//!   its hops) is `None`: `null` in the JSON, `n/a` in the summary, `–` in the HTML. It is
//!   never 0, which would read as a measurement.
//! - Delays are in milliseconds, rounded to the microsecond.
//!
//! # Runs in the network lab
//!
//! A run of real node processes on hosts behind NATs (`p2psip testnet run --lab`,
//! [`crate::lab::scenario`]) names each node's host and NAT ([`NodeInfo::host`]) and each
//! call's path ([`CallSample::path`]); [`Report::lab`] then adds what only such a run has:
//! the SRD split by the path between the two nodes, the RRD by NAT kind, and a row per call
//! (the HTML page's table of calls).
//!
//! # Files
//!
//! [`write()`] replaces each file atomically (a temporary file in the same directory, then a
//! rename), so a reader never sees half a report. The HTML page holds its CSS and its SVG
//! charts inline: no script, no image, no reference to anything outside the file. Every string
//! from the run is escaped before it goes into it.

use std::collections::BTreeMap;
use std::f64::consts::{FRAC_PI_2, TAU};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2psip_overlay::network::Path as NodePath;
use serde::Serialize;

use crate::lab::Nat;

/// The name of the JSON report in the report directory.
pub const JSON_FILE: &str = "report.json";
/// The name of the HTML report in the report directory.
pub const HTML_FILE: &str = "report.html";

/// What a testnet run measured: the raw samples, filled by the runner as it goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// The seed of the run's random choices (the users' nodes, the call pairs, the churned
    /// nodes).
    pub seed: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// The testnet's nodes.
    pub nodes: Vec<NodeInfo>,
    /// One sample per REGISTER sent.
    pub registrations: Vec<RegistrationSample>,
    /// One sample per call placed.
    pub calls: Vec<CallSample>,
    /// The nodes killed and restarted while the calls were placed.
    pub churn: Churn,
}

/// One node of the testnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's index in the testnet; samples and [`Churn`] name nodes by it.
    pub index: usize,
    /// The node's Node-ID, as printed.
    pub node_id: String,
    /// Where the node's SIP side listens (`host:port`).
    pub sip_addr: String,
    /// For a node of the network lab: its host and NAT; `None` in other runs.
    pub host: Option<LabHost>,
}

/// Where a node of a run in the network lab sat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabHost {
    /// The host's name in the lab.
    pub name: String,
    /// The NAT it sat behind.
    pub nat: Nat,
    /// AutoNAT's verdict on its node once it settled (`public`, `private`).
    pub reachability: String,
}

/// One registration: a user's REGISTER sent to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSample {
    /// The user's address of record.
    pub user: String,
    /// The index of the node the REGISTER was sent to.
    pub node: usize,
    /// Whether a 2xx answered it.
    pub ok: bool,
    /// The registration request delay: from sending the REGISTER to its final response (or to
    /// the failure). Only the delays of successful registrations count in
    /// [`Registrations::rrd_ms`].
    pub rrd: Duration,
    /// What went wrong, for a failed registration.
    pub error: Option<String>,
}

/// One call: an INVITE from a user on one node to a user on another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSample {
    /// The index of the caller's node.
    pub from_node: usize,
    /// The index of the callee's node.
    pub to_node: usize,
    /// Whether the call was set up (a 2xx to the INVITE).
    pub ok: bool,
    /// The session request delay: from sending the INVITE to the 180; `None` when no 180 came.
    pub srd: Option<Duration>,
    /// From sending the INVITE to the 200; `None` when no 200 came.
    pub setup: Option<Duration>,
    /// The status code of the final response; `None` when none came (timeout, transport
    /// error).
    pub status: Option<u16>,
    /// How many overlay links the INVITE crossed from the caller's node to the callee's node,
    /// on the path it really took (the Route message that carried it): 0 when both are the
    /// same node, 1 when the caller's node sent it straight to the callee's, one more for
    /// each node between. `None` when unknown (the INVITE never got there).
    pub hops: Option<u32>,
    /// How the caller's node was connected to the callee's right after the call (lab runs):
    /// directly or through a relay; `None` when unknown or not connected.
    pub path: Option<NodePath>,
    /// What went wrong, for a failed call.
    pub error: Option<String>,
}

/// The churn of a run: the share of the nodes killed and restarted while calls were placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Churn {
    /// The share of the nodes churned, in percent.
    pub percent: u8,
    /// The indices of the nodes killed, in the order they were killed.
    pub killed: Vec<usize>,
    /// The indices of the nodes restarted, in the order they were restarted.
    pub restarted: Vec<usize>,
}

/// The figures of a run, as written to `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// How many nodes the testnet had.
    pub nodes: usize,
    /// The seed of the run.
    pub seed: u64,
    /// How long the run took, in seconds.
    pub elapsed_s: f64,
    /// The registrations.
    pub registrations: Registrations,
    /// The calls.
    pub calls: Calls,
    /// The overlay hops of the calls' INVITEs ([`CallSample::hops`]).
    pub hops: Hops,
    /// The churn.
    pub churn: Churn,
    /// What a run in the network lab adds; `None` (and left out of the JSON) for other runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<LabFigures>,
}

/// The figures only a run in the network lab has: its nodes are on hosts behind NATs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LabFigures {
    /// The registrations (with their delays) by the NAT of the host whose node took them,
    /// keyed by [`Nat::name`].
    pub registrations_by_nat: BTreeMap<String, Registrations>,
    /// The session request delays of the calls whose nodes were connected directly right
    /// after the call.
    pub srd_ms_direct: Percentiles,
    /// The session request delays of the calls whose nodes were connected through a relay
    /// right after the call.
    pub srd_ms_relayed: Percentiles,
    /// How many calls ended with their nodes connected directly.
    pub direct: usize,
    /// How many ended with their nodes connected through a relay.
    pub relayed: usize,
    /// How many ended with no known path between their nodes.
    pub unknown_path: usize,
    /// Every call, in the order they were placed.
    pub calls: Vec<LabCall>,
}

/// One call of a run in the network lab.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LabCall {
    /// The caller's host.
    pub from: String,
    /// The NAT the caller's host sat behind.
    pub from_nat: Option<Nat>,
    /// The callee's host.
    pub to: String,
    /// The NAT the callee's host sat behind.
    pub to_nat: Option<Nat>,
    /// Whether the call was set up.
    pub ok: bool,
    /// The status code of the final response; `None` when none came.
    pub status: Option<u16>,
    /// INVITE to 180, in milliseconds.
    pub srd_ms: Option<f64>,
    /// INVITE to 200, in milliseconds.
    pub setup_ms: Option<f64>,
    /// The path between the two nodes right after the call; `None` when unknown.
    pub path: Option<NodePath>,
    /// The overlay links the call's INVITE crossed from the caller's node to the callee's
    /// ([`CallSample::hops`]).
    pub hops: Option<u32>,
    /// What went wrong, for a failed call.
    pub error: Option<String>,
}

/// The registrations of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Registrations {
    /// How many REGISTERs were sent.
    pub attempted: usize,
    /// How many got a 2xx.
    pub succeeded: usize,
    /// How many did not.
    pub failed: usize,
    /// The registration request delays of the successful registrations.
    pub rrd_ms: Percentiles,
    /// What went wrong with the failed ones: each distinct error and how often (at most
    /// `MAX_ERRORS` errors; the rest are counted under "other errors").
    pub errors: BTreeMap<String, usize>,
}

/// The calls of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Calls {
    /// How many calls were placed.
    pub attempted: usize,
    /// How many were set up.
    pub succeeded: usize,
    /// How many were not.
    pub failed: usize,
    /// The failed calls by the status code of their final response.
    pub failures_by_status: BTreeMap<u16, usize>,
    /// The failed calls that got no final response (timeout, transport error).
    pub failures_without_status: usize,
    /// The session request delays (INVITE to 180) of the calls that got a 180.
    pub srd_ms: Percentiles,
    /// The setup delays (INVITE to 200) of the calls that got a 200.
    pub setup_ms: Percentiles,
}

/// The overlay hops of the calls whose INVITE's path is known ([`CallSample::hops`]): the
/// links the INVITE really crossed, not a later probe of the path between the two nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Hops {
    /// The mean number of hops, rounded to the thousandth; `None` with no sample.
    pub mean: Option<f64>,
    /// The largest number of hops; `None` with no sample.
    pub max: Option<u32>,
    /// How many calls took each number of hops.
    pub histogram: BTreeMap<u32, usize>,
}

/// Nearest-rank percentiles of a set of delays, in milliseconds; each `None` with no sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// The median.
    pub p50: Option<f64>,
    /// The 95th percentile.
    pub p95: Option<f64>,
    /// The 99th percentile.
    pub p99: Option<f64>,
    /// The largest sample.
    pub max: Option<f64>,
}

impl Report {
    /// Computes the figures of `run`.
    pub fn from_run(run: &Run) -> Report {
        Report {
            nodes: run.nodes.len(),
            seed: run.seed,
            elapsed_s: round3(run.elapsed.as_secs_f64()),
            registrations: Registrations::from_samples(&run.registrations),
            calls: Calls::from_samples(&run.calls),
            hops: Hops::from_samples(&run.calls),
            churn: run.churn.clone(),
            lab: LabFigures::from_run(run),
        }
    }

    /// A few lines for the terminal: registrations, calls, failures, hops and churn.
    pub fn summary(&self) -> String {
        let registrations = &self.registrations;
        let calls = &self.calls;
        let heading = match &self.lab {
            None => format!(
                "testnet run: {} nodes, seed {}, {:.1} s",
                self.nodes, self.seed, self.elapsed_s
            ),
            Some(_) => format!(
                "testnet run in the network lab: {} nodes, {:.1} s",
                self.nodes, self.elapsed_s
            ),
        };
        let mut lines = vec![
            heading,
            format!(
                "registrations {}/{}  RRD {}",
                registrations.succeeded,
                registrations.attempted,
                registrations.rrd_ms.summary()
            ),
            format!(
                "calls {}/{}  SRD {}",
                calls.succeeded,
                calls.attempted,
                calls.srd_ms.summary()
            ),
            format!("call setup {}", calls.setup_ms.summary()),
        ];
        for (error, count) in &registrations.errors {
            lines.push(format!("registrations failed: {error} ×{count}"));
        }
        if calls.failed > 0 {
            lines.push(format!("calls failed: {}", calls.failures_text()));
        }
        lines.push(format!(
            "INVITE hops mean {} max {}",
            self.hops
                .mean
                .map_or_else(not_available, |mean| format!("{mean:.2}")),
            self.hops
                .max
                .map_or_else(not_available, |max| max.to_string())
        ));
        match &self.lab {
            None => lines.push(self.churn.summary()),
            Some(lab) => lines.extend(lab.summary()),
        }
        lines.join("\n")
    }
}

impl LabFigures {
    /// The lab figures of `run`; `None` unless one of its nodes sat on a lab host.
    fn from_run(run: &Run) -> Option<LabFigures> {
        if run.nodes.iter().all(|node| node.host.is_none()) {
            return None;
        }
        let host = |index: usize| {
            run.nodes
                .iter()
                .find(|node| node.index == index)
                .and_then(|node| node.host.as_ref())
        };
        let mut by_nat: BTreeMap<String, Vec<RegistrationSample>> = BTreeMap::new();
        for sample in &run.registrations {
            if let Some(host) = host(sample.node) {
                let samples = by_nat.entry(host.nat.name().to_owned()).or_default();
                samples.push(sample.clone());
            }
        }
        let srd_on = |wanted: NodePath| {
            Percentiles::of(
                run.calls
                    .iter()
                    .filter(|call| call.path == Some(wanted))
                    .filter_map(|call| call.srd),
            )
        };
        let on = |wanted: Option<NodePath>| run.calls.iter().filter(|c| c.path == wanted).count();
        let name =
            |index: usize| host(index).map_or_else(|| format!("node {index}"), |h| h.name.clone());
        let calls = run
            .calls
            .iter()
            .map(|call| LabCall {
                from: name(call.from_node),
                from_nat: host(call.from_node).map(|h| h.nat),
                to: name(call.to_node),
                to_nat: host(call.to_node).map(|h| h.nat),
                ok: call.ok,
                status: call.status,
                srd_ms: call.srd.map(millis),
                setup_ms: call.setup.map(millis),
                path: call.path,
                hops: call.hops,
                error: call.error.clone(),
            })
            .collect();
        Some(LabFigures {
            registrations_by_nat: by_nat
                .into_iter()
                .map(|(nat, samples)| (nat, Registrations::from_samples(&samples)))
                .collect(),
            srd_ms_direct: srd_on(NodePath::Direct),
            srd_ms_relayed: srd_on(NodePath::Relayed),
            direct: on(Some(NodePath::Direct)),
            relayed: on(Some(NodePath::Relayed)),
            unknown_path: on(None),
            calls,
        })
    }

    /// The summary's lines: the paths, the SRD by path, the RRD by NAT.
    fn summary(&self) -> Vec<String> {
        let rrd: Vec<String> = self
            .registrations_by_nat
            .iter()
            .map(|(nat, registrations)| format!("{nat} {}", ms_text(registrations.rrd_ms.p50)))
            .collect();
        vec![
            format!(
                "paths after the calls: direct {}, relayed {}, unknown {}",
                self.direct, self.relayed, self.unknown_path
            ),
            format!("SRD direct  {}", self.srd_ms_direct.summary()),
            format!("SRD relayed {}", self.srd_ms_relayed.summary()),
            format!(
                "RRD by NAT (p50): {}",
                if rrd.is_empty() {
                    not_available()
                } else {
                    rrd.join(", ")
                }
            ),
        ]
    }
}

impl Registrations {
    fn from_samples(samples: &[RegistrationSample]) -> Registrations {
        let succeeded = samples.iter().filter(|sample| sample.ok).count();
        let delays = samples
            .iter()
            .filter(|sample| sample.ok)
            .map(|sample| sample.rrd);
        let mut errors = BTreeMap::new();
        for sample in samples.iter().filter(|sample| !sample.ok) {
            let error = sample
                .error
                .clone()
                .unwrap_or_else(|| "no reason given".to_owned());
            let key = if errors.len() < MAX_ERRORS || errors.contains_key(&error) {
                error
            } else {
                "other errors".to_owned()
            };
            *errors.entry(key).or_insert(0) += 1;
        }
        Registrations {
            attempted: samples.len(),
            succeeded,
            failed: samples.len() - succeeded,
            rrd_ms: Percentiles::of(delays),
            errors,
        }
    }
}

impl Calls {
    fn from_samples(samples: &[CallSample]) -> Calls {
        let succeeded = samples.iter().filter(|sample| sample.ok).count();
        let mut failures_by_status = BTreeMap::new();
        let mut failures_without_status = 0;
        for sample in samples.iter().filter(|sample| !sample.ok) {
            match sample.status {
                Some(status) => *failures_by_status.entry(status).or_insert(0) += 1,
                None => failures_without_status += 1,
            }
        }
        Calls {
            attempted: samples.len(),
            succeeded,
            failed: samples.len() - succeeded,
            failures_by_status,
            failures_without_status,
            srd_ms: Percentiles::of(samples.iter().filter_map(|sample| sample.srd)),
            setup_ms: Percentiles::of(samples.iter().filter_map(|sample| sample.setup)),
        }
    }

    /// The failures as text: `408 ×3, 486 ×1, no final response ×2`, or `none`.
    fn failures_text(&self) -> String {
        let mut parts: Vec<String> = self
            .failures_by_status
            .iter()
            .map(|(status, count)| format!("{status} ×{count}"))
            .collect();
        if self.failures_without_status > 0 {
            parts.push(format!(
                "no final response ×{}",
                self.failures_without_status
            ));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

impl Hops {
    fn from_samples(samples: &[CallSample]) -> Hops {
        let hops: Vec<u32> = samples.iter().filter_map(|sample| sample.hops).collect();
        let mut histogram = BTreeMap::new();
        for &count in &hops {
            *histogram.entry(count).or_insert(0) += 1;
        }
        let total: u64 = hops.iter().map(|&count| u64::from(count)).sum();
        let mean = (!hops.is_empty()).then(|| round3(total as f64 / hops.len() as f64));
        Hops {
            mean,
            max: hops.iter().copied().max(),
            histogram,
        }
    }
}

impl Percentiles {
    /// The percentiles of `delays`, in any order.
    fn of(delays: impl Iterator<Item = Duration>) -> Percentiles {
        let mut sorted: Vec<Duration> = delays.collect();
        sorted.sort_unstable();
        let at = |percent| nearest_rank(&sorted, percent).map(millis);
        Percentiles {
            p50: at(50),
            p95: at(95),
            p99: at(99),
            max: sorted.last().copied().map(millis),
        }
    }

    /// `p50 12.1 ms, p95 20.3 ms, p99 25.0 ms, max 30.2 ms`, with `n/a` for a missing value.
    fn summary(&self) -> String {
        format!(
            "p50 {}, p95 {}, p99 {}, max {}",
            ms_text(self.p50),
            ms_text(self.p95),
            ms_text(self.p99),
            ms_text(self.max)
        )
    }
}

impl Churn {
    /// `churn 10%: killed 3, restarted 3`, or `churn none`.
    fn summary(&self) -> String {
        if self.percent == 0 && self.killed.is_empty() && self.restarted.is_empty() {
            return "churn none".to_owned();
        }
        format!(
            "churn {}%: killed {}, restarted {}",
            self.percent,
            self.killed.len(),
            self.restarted.len()
        )
    }
}

/// Writes `report.json` (the [`Report`], pretty-printed) and `report.html` (the page with the
/// charts) into `dir`, creating it if needed, and returns their paths. Each file is replaced
/// atomically: no half-written file and no temporary file is left behind, even on failure.
pub fn write(dir: &Path, run: &Run, report: &Report) -> io::Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir)?;
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    let json_path = write_atomically(dir, JSON_FILE, json.as_bytes())?;
    let html_path = write_atomically(dir, HTML_FILE, html(run, report).as_bytes())?;
    Ok((json_path, html_path))
}

/// The HTML page of a run: the figures as a table (for a lab run, then the calls across the
/// NATs), then SVG charts of the SRD distribution, of the hop histogram and of the overlay
/// with the calls, then the error messages.
pub fn html(run: &Run, report: &Report) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>p2psip testnet run</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <h1>p2psip testnet run</h1>\n{figures}{lab}\
         <h2>Session request delay (INVITE to 180)</h2>\n{srd}\
         <h2>Overlay hops of each call's INVITE</h2>\n{hops}\
         <h2>The overlay and the calls</h2>\n{overlay}\
         <h2>Errors</h2>\n{errors}</body>\n</html>\n",
        figures = figures_table(report),
        lab = report.lab.as_ref().map_or_else(String::new, lab_section),
        srd = srd_chart(run),
        hops = hops_chart(report),
        overlay = overlay_chart(run),
        errors = errors_section(run),
    )
}

/// Writes `contents` to `dir/name` through a temporary file in `dir` renamed over it.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // As `File::create` would (tempfile's default is owner-only): the umask decides.
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(contents)?;
    file.as_file().sync_all()?;
    // On failure the temporary file is deleted when `PersistError` drops.
    file.persist(&path)?;
    Ok(path)
}

/// The sample of rank ⌈percent·n/100⌉ (from 1) in `sorted`; `None` when it is empty.
fn nearest_rank<T: Copy>(sorted: &[T], percent: usize) -> Option<T> {
    let rank = (percent * sorted.len())
        .div_ceil(100)
        .clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// A duration in milliseconds, rounded to the microsecond.
fn millis(duration: Duration) -> f64 {
    round3(duration.as_secs_f64() * 1000.0)
}

/// `value` rounded to three decimals.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// What the summary prints for a figure without samples.
fn not_available() -> String {
    "n/a".to_owned()
}

/// `12.1 ms`, or `n/a`.
fn ms_text(value: Option<f64>) -> String {
    value.map_or_else(not_available, |ms| format!("{ms:.1} ms"))
}

// ---------------------------------------------------------------------------------------------
// The HTML page.

/// The page's CSS; the SVG charts are styled by it too.
const STYLE: &str = "\
body { font-family: system-ui, sans-serif; color: #1a202c; max-width: 980px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #e2e8f0; }
p.run { color: #4a5568; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #e2e8f0; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
svg { display: block; max-width: 100%; height: auto; font-size: 11px; }
svg .axis { stroke: #4a5568; stroke-width: 1; }
svg .grid { stroke: #e2e8f0; stroke-width: 1; }
svg .bar { fill: #3182ce; }
svg .bar:hover { fill: #2c5282; }
svg text { fill: #2d3748; }
svg text.empty { font-size: 14px; fill: #718096; }
svg .ring { fill: none; stroke: #edf2f7; stroke-width: 1; }
svg .call { stroke: #3182ce; fill: none; stroke-linecap: round; }
svg .call.failed { stroke: #e53e3e; stroke-dasharray: 6 4; }
svg .node circle { fill: #38a169; stroke: #fff; stroke-width: 1.5; }
svg .node.killed circle { fill: #e53e3e; }
svg .node.restarted circle { fill: #dd6b20; }
.legend span { display: inline-block; margin-right: 1.5em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 50%; vertical-align: -0.1em; margin-right: 0.3em; }
.swatch.line { border-radius: 0; height: 0.25em; vertical-align: 0.2em; }
";

/// The size of a bar chart.
const CHART_WIDTH: f64 = 640.0;
const CHART_HEIGHT: f64 = 260.0;
/// The margins of a bar chart's plot area: room for the axes' labels and titles.
const MARGIN_LEFT: f64 = 52.0;
const MARGIN_RIGHT: f64 = 12.0;
const MARGIN_TOP: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 44.0;
/// At most this many buckets in the SRD histogram, and labels under a bar chart.
const MAX_BUCKETS: usize = 24;
const MAX_X_LABELS: usize = 12;
/// Hop histograms up to this many hops show every count from 0, the empty ones too.
const MAX_DENSE_HOPS: u32 = 48;

/// The size of the overlay drawing, and the radius of its ring of nodes.
const OVERLAY_SIZE: f64 = 640.0;
const RING_RADIUS: f64 = 260.0;

/// At most this many distinct error messages are listed per kind.
const MAX_ERRORS: usize = 20;

/// One bar of a bar chart.
struct Bar {
    /// The label under the bar.
    label: String,
    /// The tooltip of the bar.
    tooltip: String,
    /// The bar's height.
    count: usize,
}

/// The calls between two nodes, for the overlay drawing.
#[derive(Default)]
struct PairCalls {
    ok: usize,
    failed: usize,
}

/// The figures of the report as tables, with a line about the run above them.
fn figures_table(report: &Report) -> String {
    let registrations = &report.registrations;
    let calls = &report.calls;
    let rows = [
        delay_row(
            "Registrations, RRD",
            registrations.succeeded,
            registrations.attempted,
            &registrations.rrd_ms,
        ),
        delay_row(
            "Calls, SRD",
            calls.succeeded,
            calls.attempted,
            &calls.srd_ms,
        ),
        delay_row(
            "Calls, setup (INVITE to 200)",
            calls.succeeded,
            calls.attempted,
            &calls.setup_ms,
        ),
    ]
    .concat();
    let churn = &report.churn;
    let about = match report.lab {
        None => format!("seed {}", report.seed),
        Some(_) => "in the network lab".to_owned(),
    };
    format!(
        "<p class=\"run\">{nodes} nodes, {about}, {elapsed:.1} s</p>\n\
         <table>\n<tr><th></th><th>succeeded</th><th>p50 (ms)</th><th>p95 (ms)</th>\
         <th>p99 (ms)</th><th>max (ms)</th></tr>\n{rows}</table>\n\
         <table>\n\
         <tr><td>Failed calls by status</td><td class=\"text\">{failures}</td></tr>\n\
         <tr><td>Overlay hops of the INVITEs</td><td class=\"text\">mean {mean}, max {max}</td></tr>\n\
         <tr><td>Churn</td><td class=\"text\">{percent}%: killed {killed}, restarted {restarted}</td></tr>\n\
         </table>\n",
        nodes = report.nodes,
        elapsed = report.elapsed_s,
        failures = escape(&calls.failures_text()),
        mean = report
            .hops
            .mean
            .map_or_else(dash, |mean| format!("{mean:.2}")),
        max = report.hops.max.map_or_else(dash, |max| max.to_string()),
        percent = churn.percent,
        killed = node_list(&churn.killed),
        restarted = node_list(&churn.restarted),
    )
}

/// The calls of a lab run: the SRD by path and the RRD by NAT as a delays table, then a row
/// per call with the NATs of its two hosts, its outcome, its delays and the path between its
/// nodes.
fn lab_section(lab: &LabFigures) -> String {
    let (direct, relayed) = (lab.direct, lab.relayed);
    let rang = |wanted: NodePath| {
        lab.calls
            .iter()
            .filter(|call| call.path == Some(wanted) && call.srd_ms.is_some())
            .count()
    };
    let mut rows = [
        delay_row(
            "Calls, direct, SRD",
            rang(NodePath::Direct),
            direct,
            &lab.srd_ms_direct,
        ),
        delay_row(
            "Calls, relayed, SRD",
            rang(NodePath::Relayed),
            relayed,
            &lab.srd_ms_relayed,
        ),
    ]
    .concat();
    for (nat, registrations) in &lab.registrations_by_nat {
        rows.push_str(&delay_row(
            &format!("Registrations behind {nat}, RRD"),
            registrations.succeeded,
            registrations.attempted,
            &registrations.rrd_ms,
        ));
    }
    let ms = |value: Option<f64>| value.map_or_else(dash, |ms| format!("{ms:.1}"));
    let nat = |nat: Option<Nat>| nat.map_or_else(dash, |nat| nat.name().to_owned());
    let calls: String = lab
        .calls
        .iter()
        .map(|call| {
            let outcome = if call.ok { "answered" } else { "failed" };
            let path = match call.path {
                Some(NodePath::Direct) => "direct",
                Some(NodePath::Relayed) => "relayed",
                _ => "–",
            };
            format!(
                "<tr><td>{from}</td><td class=\"text\">{from_nat}</td><td class=\"text\">{to}</td>\
                 <td class=\"text\">{to_nat}</td><td class=\"text\">{outcome}</td><td>{status}</td>\
                 <td>{srd}</td><td>{setup}</td><td class=\"text\">{path}</td><td>{hops}</td></tr>\n",
                from = escape(&call.from),
                from_nat = nat(call.from_nat),
                to = escape(&call.to),
                to_nat = nat(call.to_nat),
                status = call.status.map_or_else(dash, |s| s.to_string()),
                srd = ms(call.srd_ms),
                setup = ms(call.setup_ms),
                hops = call.hops.map_or_else(dash, |h| h.to_string()),
            )
        })
        .collect();
    format!(
        "<h2>Calls across NATs</h2>\n\
         <p>The path is how the caller's node reached the callee's right after the call: \
         direct {direct}, relayed {relayed}, unknown {unknown}.</p>\n\
         <table>\n<tr><th></th><th>succeeded</th><th>p50 (ms)</th><th>p95 (ms)</th>\
         <th>p99 (ms)</th><th>max (ms)</th></tr>\n{rows}</table>\n\
         <table>\n<tr><th>caller</th><th>NAT</th><th>callee</th><th>NAT</th><th>outcome</th>\
         <th>status</th><th>SRD (ms)</th><th>setup (ms)</th><th>path</th><th>hops</th></tr>\n\
         {calls}</table>\n",
        unknown = lab.unknown_path,
    )
}

/// One row of the delays table.
fn delay_row(what: &str, succeeded: usize, attempted: usize, delays: &Percentiles) -> String {
    let ms = |value: Option<f64>| value.map_or_else(dash, |ms| format!("{ms:.1}"));
    format!(
        "<tr><td>{what}</td><td>{succeeded}/{attempted}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td></tr>\n",
        ms(delays.p50),
        ms(delays.p95),
        ms(delays.p99),
        ms(delays.max),
        what = escape(what),
    )
}

/// `3 (4, 9, 17)`: how many nodes, and which.
fn node_list(nodes: &[usize]) -> String {
    if nodes.is_empty() {
        return "0".to_owned();
    }
    let indices: Vec<String> = nodes.iter().map(usize::to_string).collect();
    format!("{} ({})", nodes.len(), indices.join(", "))
}

/// What the page shows for a figure without samples.
fn dash() -> String {
    "–".to_owned()
}

/// The histogram of the calls' session request delays, in millisecond buckets.
fn srd_chart(run: &Run) -> String {
    let delays: Vec<Duration> = run.calls.iter().filter_map(|call| call.srd).collect();
    bar_chart(
        "Histogram of the session request delays",
        &srd_bars(&delays),
        "SRD (ms)",
        "calls",
    )
}

/// The buckets of the SRD histogram: as many as needed, at most [`MAX_BUCKETS`], of a round
/// width. Computed in whole microseconds, so a delay on a bucket's edge lands in the bucket it
/// starts.
fn srd_bars(delays: &[Duration]) -> Vec<Bar> {
    let Some(longest) = delays.iter().copied().max() else {
        return Vec::new();
    };
    let width = bucket_width(micros(longest));
    let buckets = usize::try_from(micros(longest) / width).unwrap_or(0) + 1;
    let mut counts = vec![0; buckets];
    for &delay in delays {
        let bucket = usize::try_from(micros(delay) / width).unwrap_or(buckets);
        if let Some(count) = counts.get_mut(bucket) {
            *count += 1;
        }
    }
    let decimals = if width < 1000 { 1 } else { 0 };
    counts
        .into_iter()
        .zip(0u64..)
        .map(|(count, i)| {
            let low = (i * width) as f64 / 1000.0;
            let high = ((i + 1) * width) as f64 / 1000.0;
            Bar {
                label: format!("{low:.decimals$}"),
                tooltip: format!(
                    "{low:.decimals$}–{high:.decimals$} ms: {}",
                    count_of(count, "call")
                ),
                count,
            }
        })
        .collect()
}

/// The smallest round bucket width in microseconds (1, 2 or 5 times a power of ten, from
/// 0.1 ms) that puts a delay of `longest` microseconds in one of at most [`MAX_BUCKETS`]
/// buckets.
fn bucket_width(longest: u64) -> u64 {
    let buckets = MAX_BUCKETS as u64;
    (2..=18)
        .flat_map(|exponent| [1, 2, 5].map(|mantissa| mantissa * 10u64.pow(exponent)))
        .find(|&width| longest / width < buckets)
        .unwrap_or(longest / buckets + 1)
}

/// A duration in whole microseconds.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The histogram of the calls' overlay hops.
fn hops_chart(report: &Report) -> String {
    bar_chart(
        "Histogram of the overlay hops of the calls' INVITEs",
        &hop_bars(&report.hops.histogram),
        "overlay hops",
        "calls",
    )
}

/// One bar per number of hops: every number from 0 to the largest when it is small, else
/// only the numbers seen.
fn hop_bars(histogram: &BTreeMap<u32, usize>) -> Vec<Bar> {
    let bar = |hops: u32, count: usize| Bar {
        label: hops.to_string(),
        tooltip: format!("{}: {}", count_of(hops, "hop"), count_of(count, "call")),
        count,
    };
    match histogram.keys().next_back() {
        None => Vec::new(),
        Some(&most) if most <= MAX_DENSE_HOPS => (0..=most)
            .map(|hops| bar(hops, histogram.get(&hops).copied().unwrap_or(0)))
            .collect(),
        Some(_) => histogram
            .iter()
            .map(|(&hops, &count)| bar(hops, count))
            .collect(),
    }
}

/// An SVG bar chart with labelled axes; a note instead of bars when there is none.
fn bar_chart(title: &str, bars: &[Bar], x_title: &str, y_title: &str) -> String {
    let open = format!(
        "<svg viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" width=\"{CHART_WIDTH}\" \
         height=\"{CHART_HEIGHT}\" role=\"img\" aria-label=\"{}\">\n",
        escape(title)
    );
    if bars.is_empty() {
        return format!(
            "{open}<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no samples</text>\n</svg>\n",
            CHART_WIDTH / 2.0,
            CHART_HEIGHT / 2.0
        );
    }
    let tallest = bars.iter().map(|bar| bar.count).max().unwrap_or(0).max(1);
    format!(
        "{open}{axes}{bars}</svg>\n",
        axes = chart_axes(tallest, x_title, y_title),
        bars = chart_bars(bars, tallest),
    )
}

/// The axes of a bar chart: the lines, the count scale and the titles.
fn chart_axes(tallest: usize, x_title: &str, y_title: &str) -> String {
    let bottom = CHART_HEIGHT - MARGIN_BOTTOM;
    let right = CHART_WIDTH - MARGIN_RIGHT;
    let middle_y = MARGIN_TOP + (bottom - MARGIN_TOP) / 2.0;
    format!(
        "<line class=\"grid\" x1=\"{MARGIN_LEFT}\" y1=\"{MARGIN_TOP}\" x2=\"{right}\" y2=\"{MARGIN_TOP}\"/>\n\
         <line class=\"axis\" x1=\"{MARGIN_LEFT}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\"/>\n\
         <line class=\"axis\" x1=\"{MARGIN_LEFT}\" y1=\"{MARGIN_TOP}\" x2=\"{MARGIN_LEFT}\" y2=\"{bottom}\"/>\n\
         <text x=\"{label_x}\" y=\"{top_y}\" text-anchor=\"end\">{tallest}</text>\n\
         <text x=\"{label_x}\" y=\"{bottom_y}\" text-anchor=\"end\">0</text>\n\
         <text x=\"{center_x}\" y=\"{x_title_y}\" text-anchor=\"middle\">{x_title}</text>\n\
         <text x=\"14\" y=\"{middle_y}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {middle_y})\">{y_title}</text>\n",
        label_x = MARGIN_LEFT - 6.0,
        top_y = MARGIN_TOP + 4.0,
        bottom_y = bottom + 4.0,
        center_x = MARGIN_LEFT + (right - MARGIN_LEFT) / 2.0,
        x_title_y = CHART_HEIGHT - 6.0,
        x_title = escape(x_title),
        y_title = escape(y_title),
    )
}

/// The bars of a bar chart, each with its tooltip, and a label under every few of them.
fn chart_bars(bars: &[Bar], tallest: usize) -> String {
    let bottom = CHART_HEIGHT - MARGIN_BOTTOM;
    let plot_height = bottom - MARGIN_TOP;
    let slot = (CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / bars.len() as f64;
    let label_every = bars.len().div_ceil(MAX_X_LABELS);
    bars.iter()
        .enumerate()
        .map(|(i, bar)| {
            let height = plot_height * bar.count as f64 / tallest as f64;
            let x = MARGIN_LEFT + slot * i as f64;
            let label = if i % label_every == 0 {
                format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                    x + slot / 2.0,
                    bottom + 16.0,
                    escape(&bar.label)
                )
            } else {
                String::new()
            };
            format!(
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\">\
                 <title>{}</title></rect>\n{label}",
                x + slot * 0.075,
                bottom - height,
                slot * 0.85,
                escape(&bar.tooltip)
            )
        })
        .collect()
}

/// The overlay: the nodes on a ring, labelled by index, and a line per pair of nodes that
/// calls joined (blue when set up, dashed red when failed, thicker and darker with more calls),
/// with a legend under it.
fn overlay_chart(run: &Run) -> String {
    let positions: BTreeMap<usize, (f64, f64)> = run
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.index, ring_point(i, run.nodes.len(), RING_RADIUS)))
        .collect();
    let open = format!(
        "<svg viewBox=\"0 0 {OVERLAY_SIZE} {OVERLAY_SIZE}\" width=\"{OVERLAY_SIZE}\" \
         height=\"{OVERLAY_SIZE}\" role=\"img\" aria-label=\"The overlay's nodes and the calls between them\">\n"
    );
    if positions.is_empty() {
        return format!(
            "{open}<text class=\"empty\" x=\"{half}\" y=\"{half}\" text-anchor=\"middle\">no nodes</text>\n</svg>\n",
            half = OVERLAY_SIZE / 2.0
        );
    }
    format!(
        "{open}<circle class=\"ring\" cx=\"{half}\" cy=\"{half}\" r=\"{RING_RADIUS}\"/>\n\
         {calls}{nodes}</svg>\n{legend}",
        half = OVERLAY_SIZE / 2.0,
        calls = call_lines(run, &positions),
        nodes = node_marks(run),
        legend = OVERLAY_LEGEND,
    )
}

/// The legend of the overlay drawing.
const OVERLAY_LEGEND: &str = "<p class=\"legend\">\
<span><span class=\"swatch\" style=\"background:#38a169\"></span>node</span>\
<span><span class=\"swatch\" style=\"background:#e53e3e\"></span>killed</span>\
<span><span class=\"swatch\" style=\"background:#dd6b20\"></span>killed, then restarted</span>\
<span><span class=\"swatch line\" style=\"background:#3182ce\"></span>calls set up</span>\
<span><span class=\"swatch line\" style=\"background:#e53e3e\"></span>calls failed</span>\
</p>\n";

/// Point `i` of `count` evenly spread on a circle of `radius` around the drawing's center,
/// the first at the top.
fn ring_point(i: usize, count: usize, radius: f64) -> (f64, f64) {
    let angle = TAU * i as f64 / count.max(1) as f64 - FRAC_PI_2;
    let center = OVERLAY_SIZE / 2.0;
    (center + radius * angle.cos(), center + radius * angle.sin())
}

/// The lines of the calls, one per pair of nodes and outcome; a call within one node is a
/// small loop beside it. Calls naming a node the run does not list are left out.
fn call_lines(run: &Run, positions: &BTreeMap<usize, (f64, f64)>) -> String {
    let mut pairs: BTreeMap<(usize, usize), PairCalls> = BTreeMap::new();
    for call in &run.calls {
        let pair = (
            call.from_node.min(call.to_node),
            call.from_node.max(call.to_node),
        );
        let calls = pairs.entry(pair).or_default();
        if call.ok {
            calls.ok += 1;
        } else {
            calls.failed += 1;
        }
    }
    let busiest = pairs
        .values()
        .map(|calls| calls.ok.max(calls.failed))
        .max()
        .unwrap_or(1);
    let mut lines = String::new();
    for (&(a, b), calls) in &pairs {
        let (Some(&from), Some(&to)) = (positions.get(&a), positions.get(&b)) else {
            continue;
        };
        let tooltip = format!(
            "nodes {a} and {b}: {} set up, {} failed",
            count_of(calls.ok, "call"),
            calls.failed
        );
        for (count, class) in [(calls.ok, "call"), (calls.failed, "call failed")] {
            if count > 0 {
                lines.push_str(&call_line(from, to, count, busiest, class, &tooltip));
            }
        }
    }
    lines
}

/// The line of `count` calls between two points (a loop when they are one), thicker and more
/// opaque the closer `count` is to `busiest`.
fn call_line(
    from: (f64, f64),
    to: (f64, f64),
    count: usize,
    busiest: usize,
    class: &str,
    tooltip: &str,
) -> String {
    let share = count as f64 / busiest.max(1) as f64;
    let style = format!(
        "class=\"{class}\" stroke-width=\"{:.2}\" stroke-opacity=\"{:.2}\"",
        1.0 + 4.0 * share,
        0.35 + 0.65 * share
    );
    let title = format!("<title>{}</title>", escape(tooltip));
    if from == to {
        // A loop just outside the ring, beside the node.
        let center = OVERLAY_SIZE / 2.0;
        let (dx, dy) = (from.0 - center, from.1 - center);
        let scale = (RING_RADIUS + 14.0) / RING_RADIUS;
        return format!(
            "<circle {style} cx=\"{:.1}\" cy=\"{:.1}\" r=\"10\">{title}</circle>\n",
            center + dx * scale,
            center + dy * scale
        );
    }
    format!(
        "<line {style} x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\">{title}</line>\n",
        from.0, from.1, to.0, to.1
    )
}

/// The nodes on the ring: a dot coloured by what churn did to it, its index outside the ring
/// and a tooltip with its Node-ID and SIP address.
fn node_marks(run: &Run) -> String {
    let count = run.nodes.len();
    let radius = if count <= 32 {
        9.0
    } else {
        (9.0 * 32.0 / count as f64).max(3.0)
    };
    let font = if count <= 64 { 11 } else { 8 };
    run.nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (x, y) = ring_point(i, count, RING_RADIUS);
            let (label_x, label_y) = ring_point(i, count, RING_RADIUS + radius + 26.0);
            let restarted = run.churn.restarted.contains(&node.index);
            let (class, fate) = if restarted {
                ("node restarted", "\nkilled, then restarted")
            } else if run.churn.killed.contains(&node.index) {
                ("node killed", "\nkilled")
            } else {
                ("node", "")
            };
            let site = node.host.as_ref().map_or_else(String::new, |host| {
                format!("\nhost {} behind {}, {}", host.name, host.nat, host.reachability)
            });
            format!(
                "<g class=\"{class}\"><circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{radius:.1}\">\
                 <title>{title}</title></circle><text x=\"{label_x:.1}\" y=\"{label_y:.1}\" \
                 font-size=\"{font}\" text-anchor=\"middle\" dominant-baseline=\"middle\">{index}</text></g>\n",
                title = escape(&format!(
                    "node {}\nNode-ID {}\nSIP {}{site}{fate}",
                    node.index, node.node_id, node.sip_addr
                )),
                index = node.index,
            )
        })
        .collect()
}

/// The distinct error messages of the registrations and the calls, most frequent first.
fn errors_section(run: &Run) -> String {
    let registrations = run.registrations.iter().filter_map(|r| r.error.as_deref());
    let calls = run.calls.iter().filter_map(|c| c.error.as_deref());
    format!(
        "{}{}",
        error_table("Registrations", registrations),
        error_table("Calls", calls)
    )
}

/// A table of the distinct messages among `errors` with their counts, at most
/// [`MAX_ERRORS`] of them; a sentence when there is none.
fn error_table<'a>(what: &str, errors: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for error in errors {
        *counts.entry(error).or_insert(0) += 1;
    }
    if counts.is_empty() {
        return format!("<p>{}: no error.</p>\n", escape(what));
    }
    let mut sorted: Vec<(&str, usize)> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let rows: String = sorted
        .iter()
        .take(MAX_ERRORS)
        .map(|(message, count)| {
            format!(
                "<tr><td class=\"text\">{}</td><td>{count}</td></tr>\n",
                escape(message)
            )
        })
        .collect();
    let more = match sorted.len().saturating_sub(MAX_ERRORS) {
        0 => String::new(),
        left => format!("<p>and {left} other messages.</p>\n"),
    };
    format!(
        "<table>\n<tr><th>{} errors</th><th>count</th></tr>\n{rows}</table>\n{more}",
        escape(what)
    )
}

/// `1 call`, `2 calls`: a count and its noun.
fn count_of(count: impl std::fmt::Display, noun: &str) -> String {
    let count = count.to_string();
    let plural = if count == "1" { "" } else { "s" };
    format!("{count} {noun}{plural}")
}

/// `text` with the characters that mean something in HTML (and in attribute values) escaped.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn node(index: usize) -> NodeInfo {
        NodeInfo {
            index,
            node_id: format!("id{index:02}"),
            sip_addr: format!("127.0.0.1:{}", 5060 + index),
            host: None,
        }
    }

    fn call(from_node: usize, to_node: usize, srd: u64, hops: u32) -> CallSample {
        CallSample {
            from_node,
            to_node,
            ok: true,
            srd: Some(ms(srd)),
            setup: Some(ms(srd + 5)),
            status: Some(200),
            hops: Some(hops),
            path: None,
            error: None,
        }
    }

    fn failed_call(from_node: usize, to_node: usize, status: Option<u16>) -> CallSample {
        CallSample {
            from_node,
            to_node,
            ok: false,
            srd: None,
            setup: None,
            status,
            hops: None,
            path: None,
            error: Some(format!("call failed with {status:?}")),
        }
    }

    fn registration(user: &str, node: usize, ok: bool, rrd: u64) -> RegistrationSample {
        RegistrationSample {
            user: user.to_owned(),
            node,
            ok,
            rrd: ms(rrd),
            error: (!ok).then(|| "timed out".to_owned()),
        }
    }

    /// 4 nodes, 3 registrations (one failed), 5 calls (two failed), node 2 killed and
    /// restarted, node 3 killed.
    fn sample_run() -> Run {
        Run {
            seed: 42,
            elapsed: Duration::from_millis(12_345),
            nodes: (0..4).map(node).collect(),
            registrations: vec![
                registration("sip:alice@example.com", 0, true, 10),
                registration("sip:bob@example.com", 1, true, 30),
                registration("sip:carol@example.com", 2, false, 5000),
            ],
            calls: vec![
                call(0, 1, 12, 1),
                call(1, 0, 20, 3),
                call(2, 2, 7, 0),
                failed_call(0, 3, Some(408)),
                failed_call(1, 3, None),
            ],
            churn: Churn {
                percent: 50,
                killed: vec![2, 3],
                restarted: vec![2],
            },
        }
    }

    #[test]
    fn nearest_rank_picks_the_sample_of_rank_ceil_p_n_over_100() {
        // The classic example: 15, 20, 35, 40, 50.
        let sorted = [15, 20, 35, 40, 50];
        assert_eq!(nearest_rank(&sorted, 5), Some(15));
        assert_eq!(nearest_rank(&sorted, 30), Some(20));
        assert_eq!(nearest_rank(&sorted, 40), Some(20));
        assert_eq!(nearest_rank(&sorted, 50), Some(35));
        assert_eq!(nearest_rank(&sorted, 100), Some(50));
        assert_eq!(nearest_rank(&sorted, 0), Some(15));
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&hundred, 50), Some(50));
        assert_eq!(nearest_rank(&hundred, 95), Some(95));
        assert_eq!(nearest_rank(&hundred, 99), Some(99));
        assert_eq!(nearest_rank(&[7], 99), Some(7));
        assert_eq!(nearest_rank::<u32>(&[], 50), None);
    }

    #[test]
    fn percentiles_sort_their_samples_and_are_in_milliseconds() {
        let delays = [9, 1, 10, 3, 2, 8, 4, 7, 5, 6].map(ms);
        let percentiles = Percentiles::of(delays.into_iter());
        assert_eq!(percentiles.p50, Some(5.0));
        assert_eq!(percentiles.p95, Some(10.0));
        assert_eq!(percentiles.p99, Some(10.0));
        assert_eq!(percentiles.max, Some(10.0));
        let fine = Percentiles::of([Duration::from_micros(12_345)].into_iter());
        assert_eq!(fine.p50, Some(12.345));
    }

    #[test]
    fn figures_count_successes_failures_and_hops() {
        let report = Report::from_run(&sample_run());
        assert_eq!(report.nodes, 4);
        assert_eq!(report.seed, 42);
        assert_eq!(report.elapsed_s, 12.345);
        assert_eq!(
            (
                report.registrations.attempted,
                report.registrations.succeeded,
                report.registrations.failed
            ),
            (3, 2, 1)
        );
        // Only the successful registrations' delays count: 10 and 30 ms, not 5000.
        assert_eq!(report.registrations.rrd_ms.p50, Some(10.0));
        assert_eq!(report.registrations.rrd_ms.max, Some(30.0));
        assert_eq!(
            (
                report.calls.attempted,
                report.calls.succeeded,
                report.calls.failed
            ),
            (5, 3, 2)
        );
        assert_eq!(report.calls.failures_by_status, BTreeMap::from([(408, 1)]));
        assert_eq!(report.calls.failures_without_status, 1);
        assert_eq!(report.calls.srd_ms.p50, Some(12.0));
        assert_eq!(report.calls.srd_ms.max, Some(20.0));
        assert_eq!(report.calls.setup_ms.p50, Some(17.0));
        // Hops 1, 3 and 0 over the three calls that have them.
        assert_eq!(report.hops.mean, Some(1.333));
        assert_eq!(report.hops.max, Some(3));
        assert_eq!(
            report.hops.histogram,
            BTreeMap::from([(0, 1), (1, 1), (3, 1)])
        );
        assert_eq!(report.churn, sample_run().churn);
    }

    #[test]
    fn json_has_every_required_key() {
        let report = Report::from_run(&sample_run());
        let json = serde_json::to_string_pretty(&report).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["nodes"], 4);
        assert_eq!(v["seed"], 42);
        assert_eq!(v["elapsed_s"], 12.345);
        assert_eq!(v["registrations"]["attempted"], 3);
        assert_eq!(v["registrations"]["succeeded"], 2);
        assert_eq!(v["registrations"]["failed"], 1);
        assert_eq!(v["registrations"]["rrd_ms"]["p50"], 10.0);
        assert_eq!(v["calls"]["attempted"], 5);
        assert_eq!(v["calls"]["succeeded"], 3);
        assert_eq!(v["calls"]["failed"], 2);
        assert_eq!(v["calls"]["failures_by_status"]["408"], 1);
        assert_eq!(v["calls"]["failures_without_status"], 1);
        assert_eq!(v["calls"]["srd_ms"]["p50"], 12.0);
        assert_eq!(v["calls"]["srd_ms"]["p95"], 20.0);
        assert_eq!(v["calls"]["srd_ms"]["p99"], 20.0);
        assert_eq!(v["calls"]["srd_ms"]["max"], 20.0);
        assert_eq!(v["calls"]["setup_ms"]["p99"], 25.0);
        assert_eq!(v["hops"]["mean"], 1.333);
        assert_eq!(v["hops"]["max"], 3);
        assert_eq!(v["hops"]["histogram"]["3"], 1);
        assert_eq!(v["churn"]["percent"], 50);
        assert_eq!(v["churn"]["killed"], serde_json::json!([2, 3]));
        assert_eq!(v["churn"]["restarted"], serde_json::json!([2]));
    }

    #[test]
    fn figures_without_samples_are_null_in_json() {
        let report = Report::from_run(&Run::default());
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["calls"]["attempted"], 0);
        for path in [
            &v["registrations"]["rrd_ms"],
            &v["calls"]["srd_ms"],
            &v["calls"]["setup_ms"],
        ] {
            for key in ["p50", "p95", "p99", "max"] {
                assert!(path.get(key).is_some_and(|value| value.is_null()), "{key}");
            }
        }
        assert!(v["hops"].get("mean").is_some_and(|value| value.is_null()));
        assert!(v["hops"].get("max").is_some_and(|value| value.is_null()));
        assert_eq!(v["hops"]["histogram"], serde_json::json!({}));
    }

    #[test]
    fn summary_gives_the_figures_and_n_a_without_samples() {
        let summary = Report::from_run(&sample_run()).summary();
        assert!(
            summary.contains("registrations 2/3  RRD p50 10.0 ms"),
            "{summary}"
        );
        assert!(
            summary.contains("calls 3/5  SRD p50 12.0 ms, p95 20.0 ms"),
            "{summary}"
        );
        assert!(
            summary.contains("registrations failed: timed out ×1"),
            "{summary}"
        );
        assert!(
            summary.contains("calls failed: 408 ×1, no final response ×1"),
            "{summary}"
        );
        assert!(summary.contains("INVITE hops mean 1.33 max 3"), "{summary}");
        assert!(
            summary.contains("churn 50%: killed 2, restarted 1"),
            "{summary}"
        );
        let empty = Report::from_run(&Run::default()).summary();
        assert!(empty.contains("calls 0/0  SRD p50 n/a, p95 n/a"), "{empty}");
        assert!(empty.contains("INVITE hops mean n/a max n/a"), "{empty}");
        assert!(empty.contains("churn none"), "{empty}");
        assert!(!empty.contains("calls failed"), "{empty}");
    }

    #[test]
    fn html_is_self_contained_with_three_charts() {
        for run in [sample_run(), Run::default()] {
            let page = html(&run, &Report::from_run(&run));
            assert!(page.starts_with("<!DOCTYPE html>"));
            assert!(page.trim_end().ends_with("</html>"));
            assert_eq!(page.matches("<svg").count(), 3, "{page}");
            assert_eq!(page.matches("</svg>").count(), 3);
            for reference in ["http://", "https://", "src=", "<script", "href=", "url("] {
                assert!(!page.contains(reference), "{reference} in the page");
            }
        }
    }

    #[test]
    fn html_draws_nodes_calls_and_churn() {
        let run = sample_run();
        let page = html(&run, &Report::from_run(&run));
        assert_eq!(page.matches("<g class=\"node").count(), 4);
        assert_eq!(page.matches("class=\"node killed\"").count(), 1);
        assert_eq!(page.matches("class=\"node restarted\"").count(), 1);
        // Pairs (0,1) twice set up, (2,2) a loop, (0,3) and (1,3) failed.
        assert_eq!(page.matches("<line class=\"call\"").count(), 1);
        assert_eq!(page.matches("<circle class=\"call\"").count(), 1);
        assert_eq!(page.matches("class=\"call failed\"").count(), 2);
        assert!(page.contains("nodes 0 and 1: 2 calls set up, 0 failed"));
        assert!(page.contains("Node-ID id03"));
        assert!(page.contains("SIP 127.0.0.1:5062"));
        // Hops 0 to 3: four bars, the one for 2 hops empty.
        assert!(page.contains("<title>2 hops: 0 calls</title>"));
        assert!(page.contains("<title>3 hops: 1 call</title>"));
        assert!(page.contains("timed out"));
    }

    #[test]
    fn html_escapes_every_string_from_the_run() {
        let mut run = sample_run();
        run.nodes[1].node_id = "<script>alert(1)</script>".to_owned();
        run.nodes[2].sip_addr = "\"a\" & 'b'".to_owned();
        run.calls[3].error = Some("<b>bad</b>".to_owned());
        let page = html(&run, &Report::from_run(&run));
        assert!(!page.contains("<script"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&quot;a&quot; &amp; &#39;b&#39;"));
        assert!(!page.contains("<b>bad</b>"));
        assert!(page.contains("&lt;b&gt;bad&lt;/b&gt;"));
    }

    /// A lab run: the relay (node 0) and three NAT hosts; four calls, two direct, one
    /// relayed, one failed with no path; the symmetric host's registration failed.
    fn lab_run() -> Run {
        let mut run = Run::default();
        let hosts = [
            ("relay", Nat::Public),
            ("full-cone", Nat::FullCone),
            ("symmetric", Nat::Symmetric),
            ("<cgnat>", Nat::Cgnat),
        ];
        for (index, (name, nat)) in hosts.into_iter().enumerate() {
            let mut info = node(index);
            info.host = Some(LabHost {
                name: name.to_owned(),
                nat,
                reachability: "private".to_owned(),
            });
            run.nodes.push(info);
        }
        run.registrations = vec![
            registration("sip:full-cone@lab.p2p", 1, true, 40),
            registration("sip:symmetric@lab.p2p", 2, false, 30_000),
            registration("sip:cgnat@lab.p2p", 3, true, 60),
        ];
        let on = |mut call: CallSample, path| {
            call.path = Some(path);
            call
        };
        run.calls = vec![
            on(call(1, 2, 10, 1), NodePath::Direct),
            on(call(2, 3, 30, 1), NodePath::Direct),
            on(call(3, 1, 200, 1), NodePath::Relayed),
            failed_call(1, 3, Some(480)),
        ];
        run
    }

    #[test]
    fn lab_figures_split_the_srd_by_path_and_the_rrd_by_nat() {
        let report = Report::from_run(&lab_run());
        let lab = report.lab.as_ref().expect("a lab run has lab figures");
        assert_eq!((lab.direct, lab.relayed, lab.unknown_path), (2, 1, 1));
        assert_eq!(lab.srd_ms_direct.p50, Some(10.0));
        assert_eq!(lab.srd_ms_direct.max, Some(30.0));
        assert_eq!(lab.srd_ms_relayed.p50, Some(200.0));
        let nats: Vec<&str> = lab
            .registrations_by_nat
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(nats, ["cgnat", "full-cone", "symmetric"]);
        assert_eq!(lab.registrations_by_nat["full-cone"].rrd_ms.p50, Some(40.0));
        assert_eq!(lab.registrations_by_nat["symmetric"].failed, 1);
        assert_eq!(lab.registrations_by_nat["symmetric"].rrd_ms.p50, None);
        assert_eq!(lab.calls.len(), 4);
        let first = &lab.calls[0];
        assert_eq!(
            (
                first.from.as_str(),
                first.from_nat,
                first.to.as_str(),
                first.to_nat
            ),
            (
                "full-cone",
                Some(Nat::FullCone),
                "symmetric",
                Some(Nat::Symmetric)
            )
        );
        assert_eq!(lab.calls[3].path, None);
        assert_eq!(lab.calls[3].status, Some(480));

        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["lab"]["calls"][0]["from_nat"], "full-cone");
        assert_eq!(v["lab"]["calls"][0]["path"], "direct");
        assert_eq!(v["lab"]["calls"][2]["path"], "relayed");
        assert!(v["lab"]["calls"][3]["path"].is_null());
        assert_eq!(v["lab"]["srd_ms_relayed"]["p50"], 200.0);
        assert_eq!(
            v["lab"]["registrations_by_nat"]["cgnat"]["rrd_ms"]["p50"],
            60.0
        );
        // Outside the lab, the JSON is what it was.
        let plain = serde_json::to_value(Report::from_run(&sample_run())).unwrap();
        assert!(plain.get("lab").is_none(), "{plain}");
    }

    #[test]
    fn lab_summary_gives_the_paths_the_srd_by_path_and_the_rrd_by_nat() {
        let summary = Report::from_run(&lab_run()).summary();
        for line in [
            "testnet run in the network lab: 4 nodes",
            "paths after the calls: direct 2, relayed 1, unknown 1",
            "SRD direct  p50 10.0 ms",
            "SRD relayed p50 200.0 ms",
            "RRD by NAT (p50): cgnat 60.0 ms, full-cone 40.0 ms, symmetric n/a",
        ] {
            assert!(summary.contains(line), "{line:?} in\n{summary}");
        }
        assert!(!summary.contains("churn"), "{summary}");
    }

    #[test]
    fn lab_html_has_a_row_per_call_with_its_nats_and_path() {
        let run = lab_run();
        let page = html(&run, &Report::from_run(&run));
        assert!(page.contains("<h2>Calls across NATs</h2>"));
        assert_eq!(page.matches("<svg").count(), 3);
        assert_eq!(page.matches("class=\"text\">answered</td>").count(), 3);
        assert_eq!(page.matches("class=\"text\">failed</td>").count(), 1);
        assert!(page.contains(
            "<tr><td>full-cone</td><td class=\"text\">full-cone</td><td class=\"text\">symmetric</td>\
             <td class=\"text\">symmetric</td><td class=\"text\">answered</td><td>200</td>\
             <td>10.0</td><td>15.0</td><td class=\"text\">direct</td><td>1</td></tr>"
        ), "{page}");
        assert!(page.contains("<td class=\"text\">relayed</td>"));
        assert!(page.contains("Registrations behind symmetric, RRD</td><td>0/1</td>"));
        assert!(page.contains("host full-cone behind full-cone, private"));
        // Host names are escaped like every string of the run.
        assert!(!page.contains("<cgnat>"));
        assert!(page.contains("&lt;cgnat&gt;"));
    }

    #[test]
    fn srd_buckets_have_a_round_width_and_hold_every_sample() {
        assert_eq!(bucket_width(0), 100);
        assert_eq!(bucket_width(2_000), 100);
        assert_eq!(bucket_width(2_400), 200);
        assert_eq!(bucket_width(23_000), 1_000);
        assert_eq!(bucket_width(24_000), 2_000);
        assert_eq!(bucket_width(1_000_000), 50_000);
        let delays = [0, 3_200, 9_999, 10_000, 47_900, 120_000].map(Duration::from_micros);
        let bars = srd_bars(&delays);
        // 120 ms in buckets of 10 ms: 0-10, ..., 120-130.
        assert_eq!(bars.len(), 13);
        assert_eq!(
            bars.iter().map(|bar| bar.count).sum::<usize>(),
            delays.len()
        );
        assert_eq!((bars[0].label.as_str(), bars[0].count), ("0", 3));
        assert_eq!((bars[1].label.as_str(), bars[1].count), ("10", 1));
        assert_eq!(bars[4].count, 1);
        assert_eq!(bars[12].tooltip, "120–130 ms: 1 call");
        let fine = srd_bars(&[Duration::from_micros(300), Duration::from_micros(1_000)]);
        assert_eq!(fine.len(), 11);
        assert_eq!((fine[3].label.as_str(), fine[3].count), ("0.3", 1));
        assert!(srd_bars(&[]).is_empty());
    }

    #[test]
    fn write_leaves_exactly_the_two_reports() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("out").join("run-1");
        let run = sample_run();
        let report = Report::from_run(&run);
        // Twice: the second replaces the first, leaving nothing else.
        for _ in 0..2 {
            let (json, page) = write(&dir, &run, &report).unwrap();
            assert_eq!(json, dir.join("report.json"));
            assert_eq!(page, dir.join("report.html"));
            let mut names: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["report.html", "report.json"]);
        }
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join(JSON_FILE)).unwrap()).unwrap();
        assert_eq!(v["calls"]["attempted"], 5);
        let page = fs::read_to_string(dir.join(HTML_FILE)).unwrap();
        assert_eq!(page, html(&run, &report));
    }

    #[cfg(unix)]
    #[test]
    fn written_reports_have_the_permissions_of_a_created_file() {
        let temp = tempfile::tempdir().unwrap();
        let run = sample_run();
        let (json, page) = write(temp.path(), &run, &Report::from_run(&run)).unwrap();
        let created = temp.path().join("created");
        fs::File::create(&created).unwrap();
        let expected = fs::metadata(&created).unwrap().permissions();
        assert_eq!(fs::metadata(json).unwrap().permissions(), expected);
        assert_eq!(fs::metadata(page).unwrap().permissions(), expected);
    }
}
