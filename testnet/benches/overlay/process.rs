//! Child processes with a deadline: run to their end, or killed when they overrun.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// A process that ended by itself.
pub(crate) struct Finished {
    /// How it ended.
    pub(crate) status: ExitStatus,
    /// All it wrote on stdout.
    pub(crate) stdout: String,
    /// All it wrote on stderr, when the caller piped it (else empty).
    pub(crate) stderr: String,
}

/// Runs `command` to its end, reading its stdout (and its stderr when the caller piped it);
/// kills it when it is still running after `timeout`.
pub(crate) fn bounded(command: &mut Command, timeout: Duration) -> Result<Finished> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait(&mut child, timeout).with_context(|| program.clone())?;
    Ok(Finished {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Waits for `child`, polling, until `timeout`; then kills it and fails.
pub(crate) fn wait(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill().context("cannot kill it")?;
            child.wait()?;
            bail!("killed after {timeout:?}, its deadline");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A thread reading a pipe to its end (when the process exits or is killed).
fn reader(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    pipe.map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            // A read error leaves what was read so far.
            let _ = pipe.read_to_string(&mut text);
            text
        })
    })
}

fn collect(reader: Option<JoinHandle<String>>) -> String {
    reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default()
}
