//! Runs the built `p2psip` in a sandbox: HOME is a temporary directory and none of the
//! variables p2psip reads come from the caller's environment.

#![allow(dead_code, unreachable_pub)] // each test file uses part of this module

use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary home directory to run `p2psip` in.
pub struct Sandbox {
    home: tempfile::TempDir,
}

/// What one run printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            home: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// The sandbox's home directory (also the working directory of each run).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A path in the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    /// Runs `p2psip args...`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// Starts `p2psip args...` in the background, its stdout and stderr going to
    /// `<name>.out` and `<name>.err` in the sandbox; killed when dropped.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Background {
        let out = std::fs::File::create(self.path(&format!("{name}.out"))).expect("out file");
        let err = std::fs::File::create(self.path(&format!("{name}.err"))).expect("err file");
        let mut command = self.command(args);
        command.stdout(out).stderr(err);
        Background {
            child: command.spawn().expect("p2psip starts"),
            out: self.path(&format!("{name}.out")),
            err: self.path(&format!("{name}.err")),
        }
    }

    /// Runs `p2psip args...` with these environment variables set.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("p2psip runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_p2psip"));
        command
            .args(args)
            .current_dir(self.home())
            .env("HOME", self.home())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("P2PSIP_DATA_DIR")
            .env_remove("P2PSIP_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE");
        command
    }
}

/// A `p2psip` running in the background.
pub struct Background {
    pub child: std::process::Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Background {
    /// Sends SIGINT (what Ctrl-C sends) and waits, at most `timeout`, for the exit code.
    pub fn interrupt(&mut self, timeout: std::time::Duration) -> i32 {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -INT {pid}");
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "p2psip did not stop within {timeout:?} of SIGINT"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// What it printed so far on stdout and stderr.
    pub fn output(&self) -> (String, String) {
        (
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default(),
        )
    }

    /// Waits, at most `timeout`, until `path` exists with content, and gives it; fails with
    /// what the process said when it exits first.
    pub fn wait_for_file(&mut self, path: &Path, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && !text.is_empty()
            {
                return text;
            }
            if let Some(status) = self.child.try_wait().expect("waitable") {
                panic!(
                    "p2psip exited ({status}) before writing {}: {:?}",
                    path.display(),
                    self.output()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {} within {timeout:?}: {:?}",
                path.display(),
                self.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    /// Asserts success with nothing on stderr; gives stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "p2psip failed: {self:?}");
        assert_eq!(self.stderr, "", "p2psip wrote to stderr: {self:?}");
        &self.stdout
    }

    /// Asserts failure with `code`, nothing on stdout and exactly one line `error: ...` on
    /// stderr; gives that line without `error: `.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "wrong exit code: {self:?}");
        assert_eq!(self.stdout, "", "a failure printed on stdout: {self:?}");
        let line = self
            .stderr
            .strip_suffix('\n')
            .expect("stderr ends with a newline");
        assert!(
            !line.contains('\n'),
            "more than one line on stderr: {self:?}"
        );
        assert!(
            !line.contains("Backtrace") && !line.contains("{ "),
            "Debug output: {self:?}"
        );
        line.strip_prefix("error: ")
            .expect("stderr starts with `error: `")
    }
}
