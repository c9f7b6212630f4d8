//! A real `p2psip node` process on a host of the lab, and the `p2psip` commands that talk to
//! it from inside the same host (its control API listens on that host's loopback).

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use super::Host;
use super::netns::{Namespace, checked};

/// The SIP address of every lab node: its own host's loopback.
pub const SIP: &str = "127.0.0.1:5060";
/// Where a lab's public relay node listens: QUIC on port 4001 of every address.
pub const RELAY_LISTEN: &str = "/ip4/0.0.0.0/udp/4001/quic-v1";

/// How often a wait for a node's file or state looks again.
const POLL: Duration = Duration::from_millis(50);
/// How many lines of a node's log an error quotes.
const LOG_LINES: usize = 30;

/// A `p2psip node` running inside a lab host, with its own data directory. Killed when
/// dropped (and with the lab's namespaces anyway). Its log (`RUST_LOG` from
/// `P2PSIP_LAB_LOG`, default `info`) is `node.log` in the data directory, which is kept when
/// the test fails or `P2PSIP_LAB_KEEP_LOGS` is set.
#[derive(Debug)]
pub struct NodeProcess {
    ns: Namespace,
    program: PathBuf,
    name: String,
    /// `None` only while dropping.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    child: Child,
    peer_id: String,
    overlay_addrs: Vec<String>,
}

impl NodeProcess {
    /// Starts `program node` (the `p2psip` binary) inside `ns` with `args` (listen,
    /// bootstrap, relay, SIP flags...) plus a data directory of its own, `--ready-file` and
    /// verbose logs, and waits up to `timeout` until it is ready.
    pub fn start(
        ns: &Namespace,
        program: &Path,
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<NodeProcess> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("p2psip-lab-{name}-"))
            .tempdir()
            .context("could not create a data directory")?;
        let ready = dir.path().join("ready.json");
        let log = File::create(dir.path().join("node.log")).context("could not create node.log")?;
        let child = ns
            .command(program)
            .arg("node")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("P2PSIP_LAB_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("could not share node.log")?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "could not start {} node in {}",
                    program.display(),
                    ns.name()
                )
            })?;
        let mut node = NodeProcess {
            ns: ns.clone(),
            program: program.to_owned(),
            name: name.to_owned(),
            root: dir.path().to_owned(),
            dir: Some(dir),
            child,
            peer_id: String::new(),
            overlay_addrs: Vec::new(),
        };
        let text = node.wait_for_file(&ready, timeout)?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{name}'s ready file is not JSON: {text}"))?;
        node.peer_id = json["peer_id"]
            .as_str()
            .ok_or_else(|| anyhow!("{name}'s ready file has no peer_id: {text}"))?
            .to_owned();
        node.overlay_addrs = json["overlay_addrs"]
            .as_array()
            .map(|addrs| {
                addrs
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(node)
    }

    /// A public bootstrap and relay node on `host` (relay on, QUIC on [`RELAY_LISTEN`], SIP on
    /// [`SIP`], no mDNS), named `name`; with the address other nodes bootstrap from: its
    /// address on the host's public IPv4.
    pub fn start_relay(
        host: &Host,
        program: &Path,
        name: &str,
        timeout: Duration,
    ) -> Result<(NodeProcess, String)> {
        let flags = words(&[
            "--listen",
            RELAY_LISTEN,
            "--relay",
            "on",
            "--no-mdns",
            "--sip-listen",
            SIP,
        ]);
        let relay = NodeProcess::start(host.namespace(), program, name, &flags, timeout)
            .with_context(|| format!("the relay node of {} did not start", host.name()))?;
        let bootstrap = relay.addr_on(IpAddr::V4(host.public_ipv4()))?;
        Ok((relay, bootstrap))
    }

    /// A node on `host`, named after it, that joins through `bootstrap`: QUIC on a port the
    /// system picks (IPv6 too on a dual-stack host), SIP on [`SIP`], no mDNS.
    pub fn start_joining(
        host: &Host,
        program: &Path,
        bootstrap: &str,
        timeout: Duration,
    ) -> Result<NodeProcess> {
        let mut flags = words(&["--listen", "/ip4/0.0.0.0/udp/0/quic-v1"]);
        if host.ipv6().is_some() {
            flags.extend(words(&["--listen", "/ip6/::/udp/0/quic-v1"]));
        }
        flags.extend(words(&[
            "--bootstrap",
            bootstrap,
            "--no-mdns",
            "--sip-listen",
            SIP,
        ]));
        NodeProcess::start(host.namespace(), program, host.name(), &flags, timeout)
            .with_context(|| format!("the node of {} ({}) did not start", host.name(), host.nat()))
    }

    /// The node's name in the lab (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its Node-ID.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        self.root.as_path()
    }

    /// Its overlay address on `ip` (with `/p2p/<peer id>`), to bootstrap other nodes from.
    pub fn addr_on(&self, ip: IpAddr) -> Result<String> {
        let prefix = match ip {
            IpAddr::V4(ip) => format!("/ip4/{ip}/"),
            IpAddr::V6(ip) => format!("/ip6/{ip}/"),
        };
        self.overlay_addrs
            .iter()
            .find(|a| a.starts_with(&prefix))
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "{} listens on no address of {ip}: {:?}",
                    self.name,
                    self.overlay_addrs
                )
            })
    }

    /// Runs `p2psip ARGS --data-dir DIR` inside the node's host; its standard output, or an
    /// error with its standard error.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        checked(
            self.ns
                .command(&self.program)
                .args(args)
                .arg("--data-dir")
                .arg(self.root.as_path()),
        )
        .with_context(|| format!("p2psip {} at {}", args.join(" "), self.name))
    }

    /// Runs `p2psip ARGS --json --data-dir DIR` inside the node's host and parses its output.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let out = self.run(&with_json)?;
        serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))
    }

    /// `p2psip status --json`.
    pub fn status(&self) -> Result<Value> {
        self.json(&["status"])
    }

    /// How this node is connected to `peer` now: `"direct"`, `"relayed"`, or `None`.
    pub fn path_to(&self, peer: &str) -> Result<Option<String>> {
        let peers = self.json(&["peers"])?;
        Ok(peers
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer_id"] == peer)
            .and_then(|p| p["path"].as_str().map(str::to_owned)))
    }

    /// Polls `status` until `ready` holds of it, for at most `timeout`; returns that status.
    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if let Ok(status) = status.as_ref()
                && ready(status)
            {
                return Ok(status.clone());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not get {what} within {timeout:?}; last status: {status:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.root.as_path().join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_LINES);
        format!("--- {} log ---\n{}", self.name, lines[start..].join("\n"))
    }

    /// Ctrl-C, as a user would stop it; waits up to `timeout` for it to leave the overlay.
    pub fn stop(mut self, timeout: Duration) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)
            .with_context(|| format!("could not interrupt {}", self.name))?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(anyhow!(
                        "{} ended with {status}\n{}",
                        self.name,
                        self.log_tail()
                    ))
                };
            }
            std::thread::sleep(POLL);
        }
        bail!(
            "{} did not stop within {timeout:?}\n{}",
            self.name,
            self.log_tail()
        )
    }

    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited with {status}\n{}", self.name, self.log_tail()),
        }
    }

    fn wait_for_file(&mut self, path: &Path, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && !text.is_empty()
            {
                return Ok(text);
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {timeout:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("P2PSIP_LAB_KEEP_LOGS").is_some() {
            // A failed test: keep the data directory and the log for reading.
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "{}'s data directory and log are kept in {}",
                    self.name,
                    kept.display()
                );
            }
        }
    }
}

/// Owned words of a command line.
fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}
