//! Processes the harness starts: each one is stopped by its own pid, never by name, so a test can't
//! touch daemons that belong to someone else on a shared machine.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::error::{io_err, Error, Result};

/// How often start-up and shutdown loops look again; short enough that ganesha's ~0.1 s start
/// isn't padded, long enough not to burn a shared core.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// A child process owned by the harness. Dropping it stops it: SIGTERM, then SIGKILL if it is still
/// alive after the stop timeout (ganesha takes 1–3.5 s to exit on SIGTERM).
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    stop_timeout: Duration,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Daemon> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("open log {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("clone log fd {}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!("spawn {name} ({cmd:?})")))?;
        Ok(Daemon {
            name: name.to_string(),
            child,
            stop_timeout: Duration::from_secs(10),
            exited: None,
        })
    }

    /// The name used in errors and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (of the daemon itself: wrappers like `ip netns exec` exec, not fork).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited (it is reaped here, so its pid can't be reused
    /// while we still hold it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Stops the process: SIGTERM, wait up to the stop timeout, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exit_status() {
            return Some(status);
        }
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            // The child is unreaped, so this pid is still ours.
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + self.stop_timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            sleep(POLL);
        }
        eprintln!(
            "cairn-harness: {} (pid {}) ignored SIGTERM for {:?}; sending SIGKILL",
            self.name,
            self.child.id(),
            self.stop_timeout
        );
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        self.exited
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a short helper command to completion and turns a non-zero exit into an error that carries
/// its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run {cmd:?}")))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{cmd:?}"),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `lines` lines of a log file, for error messages (empty if unreadable).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
