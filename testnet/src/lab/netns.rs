//! Named network namespaces (`ip netns`): creating and deleting them, running programs and
//! threads inside them, killing what runs there, and sweeping the ones dead labs left.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where `ip netns` keeps its namespaces (one bind-mounted file each).
const NETNS_DIR: &str = "/var/run/netns";

/// What every lab namespace name starts with, followed by `<pid>x<n>-`.
pub(crate) const LAB_MARK: &str = "p2l";

/// A named network namespace of a lab.
///
/// Cloning it clones the name only: the lab that made it deletes it, after which
/// [`Namespace::run`] and [`Namespace::spawn`] fail and [`Namespace::command`]'s programs
/// cannot start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec <name> program`);
    /// add arguments and spawn it as usual. Whatever it starts there is killed when the lab
    /// is dropped. (For tokio, `tokio::process::Command::from` takes it.)
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `f` on a fresh thread whose network namespace is this one, waits for it and
    /// returns what it returned; a panic in `f` is resumed here. Sockets `f` creates belong
    /// to this namespace for good, so `f` may return them to be used from any thread.
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = self.open()?;
        thread::scope(|scope| {
            let thread = thread::Builder::new()
                .name(format!("netns {}", self.name))
                .spawn_scoped(scope, move || {
                    setns(&file, CloneFlags::CLONE_NEWNET)?;
                    drop(file);
                    Ok(f())
                })
                .context("could not spawn a thread")?;
            match thread.join() {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(errno)) => Err(self.setns_error(errno)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Spawns a thread whose network namespace is this one and runs `f` on it: for servers
    /// and agents that live on while the test goes on. Fails, without running `f`, when the
    /// thread could not enter the namespace. The thread is not stopped by the lab: end it
    /// (and join it) before the lab is dropped.
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let file = self.open()?;
        let (entered, has_entered) = mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name(format!("netns {}", self.name))
            .spawn(move || {
                let result = setns(&file, CloneFlags::CLONE_NEWNET);
                drop(file);
                let failed = result.is_err();
                // The spawner waits for this message, so the send cannot fail.
                let _ = entered.send(result);
                if failed {
                    // The spawner reports the error and drops this handle: unwind without
                    // running `f` and without the panic hook's message.
                    std::panic::resume_unwind(Box::new("setns failed"));
                }
                f()
            })
            .context("could not spawn a thread")?;
        match has_entered.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(errno)) => Err(self.setns_error(errno)),
            Err(_) => Err(anyhow!(
                "the thread for namespace {} ended before entering it",
                self.name
            )),
        }
    }

    /// The processes whose network namespace this is (`ip netns pids`), without this one.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = checked(Command::new("ip").args(["netns", "pids", &self.name]))?;
        let me = std::process::id();
        Ok(out
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .filter(|&pid| pid != me)
            .collect())
    }

    /// A handle on the namespace `name`, which may not exist (yet).
    pub(crate) fn named(name: String) -> Namespace {
        Namespace { name }
    }

    /// Creates the namespace `name` (`ip netns add`).
    pub(crate) fn add(name: String) -> Result<Namespace> {
        checked(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(Namespace { name })
    }

    /// Runs `ip -n <name> <args>`.
    pub(crate) fn ip(&self, args: &[&str]) -> Result<()> {
        checked(Command::new("ip").args(["-n", &self.name]).args(args)).map(drop)
    }

    /// Loads an nftables ruleset into the namespace (`nft -f -`).
    pub(crate) fn nft(&self, ruleset: &str) -> Result<()> {
        let mut command = self.command("nft");
        command.args(["-f", "-"]);
        checked_with_input(&mut command, ruleset)
            .with_context(|| format!("the ruleset was:\n{ruleset}"))
            .map(drop)
    }

    /// Sets a sysctl of the namespace (`key` with dots, e.g. `net.ipv4.ip_forward`): written
    /// to /proc/sys from a thread inside it, as /proc/sys/net belongs to the writer's
    /// namespace.
    pub(crate) fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.run(|| fs::write(&path, value))?
            .with_context(|| format!("could not set {key} = {value} in namespace {}", self.name))
    }

    /// Kills (SIGKILL) every process in the namespace; returns what went wrong, if anything.
    pub(crate) fn kill_all(&self) -> Result<()> {
        for pid in self.pids()? {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(errno) => bail!("could not kill process {pid} in {}: {errno}", self.name),
            }
        }
        Ok(())
    }

    /// Deletes the namespace (`ip netns delete`); its interfaces go with it.
    pub(crate) fn delete(&self) -> Result<()> {
        checked(Command::new("ip").args(["netns", "delete", &self.name])).map(drop)
    }

    /// Opens the namespace's file, for `setns`.
    fn open(&self) -> Result<File> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        File::open(&path)
            .with_context(|| format!("could not open {} (was the lab dropped?)", path.display()))
    }

    /// The error of a failed `setns` into this namespace.
    fn setns_error(&self, errno: nix::errno::Errno) -> anyhow::Error {
        anyhow!(
            "could not enter network namespace {} (setns: {errno}); the lab needs root",
            self.name
        )
    }
}

/// Deletes the lab namespaces whose process is gone (`p2l<pid>x<n>-...` where no process
/// `<pid>` exists), killing what still runs in them first; returns how many were removed.
/// Namespaces another process deletes at the same time are skipped.
pub(crate) fn sweep_dead() -> Result<usize> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("could not list {NETNS_DIR}")),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("could not list {NETNS_DIR}"))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(pid) = lab_pid(&name) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let namespace = Namespace { name };
        // Another process may be sweeping the same leftovers: losing the race is fine.
        let _ = namespace.kill_all();
        if namespace.delete().is_ok() {
            tracing::debug!(netns = namespace.name(), "removed a dead lab's namespace");
            removed += 1;
        }
    }
    Ok(removed)
}

/// The pid in a lab namespace name `p2l<pid>x<n>-...`, or `None` for any other name.
pub(crate) fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(LAB_MARK)?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, _) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Runs a command to its end; its stdout when it succeeded, else an error naming the
/// command line, the exit status and its stderr.
pub(crate) fn checked(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{}`{}", line(command), hint(command)))?;
    outcome(command, output)
}

/// [`checked`] with `input` written to the command's stdin.
fn checked_with_input(command: &mut Command, input: &str) -> Result<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not run `{}`{}", line(command), hint(command)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("could not write to `{}`", line(command)))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("could not wait for `{}`", line(command)))?;
    outcome(command, output)
}

/// The result of a finished command, as [`checked`] describes it.
fn outcome(command: &Command, output: Output) -> Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    bail!(
        "`{}` failed ({}): {}",
        line(command),
        output.status,
        stderr.trim()
    )
}

/// A command as one would type it.
fn line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let _ = write!(line, " {}", arg.to_string_lossy());
    }
    line
}

/// Where to get the lab's tools, for a program that could not be started.
fn hint(command: &Command) -> &'static str {
    let args: Vec<_> = command.get_args().collect();
    if args.iter().any(|a| *a == "nft") {
        " (is nftables installed? apt-get install nftables)"
    } else if command.get_program() == "ip" {
        " (is iproute2 installed? apt-get install iproute2)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_carry_their_pid() {
        assert_eq!(lab_pid("p2l1234x0-inet"), Some(1234));
        assert_eq!(lab_pid("p2l1234x17-h-alice"), Some(1234));
        for other in [
            "p2l-inet",
            "p2lx0-inet",
            "p2l12x-inet",
            "p2l12y0-inet",
            "p2l1x2",
        ] {
            assert_eq!(lab_pid(other), None, "{other}");
        }
    }
}
