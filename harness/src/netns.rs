//! Network namespaces whose only interface is `lo`.
//!
//! rpcbind (needed for NFSv3) always binds the wildcard for TCP, so it may never run in the host's
//! namespace; in a fresh namespace the wildcard is reachable only through that namespace's own
//! loopback. Each [`Netns`] has a unique name and is deleted on drop.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::error::{io_err, Error, Result};
use crate::process::run;
use crate::skip::find_program;

/// Every harness namespace is named `cairn-h<pid>-<n>`: unique per process and instance, and
/// recognisable as ours when a killed test run left one behind.
const PREFIX: &str = "cairn-h";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with only `lo` (up). Deleted on drop; processes still inside keep it alive
/// until they exit, so owners stop their daemons first.
#[derive(Debug)]
pub struct Netns {
    name: String,
    ip: std::path::PathBuf,
    handle: Option<File>,
}

impl Netns {
    /// Creates a fresh namespace and brings its loopback up.
    pub fn new() -> Result<Netns> {
        let ip = find_program("ip").ok_or_else(|| Error::Missing("`ip` (iproute2)".into()))?;
        remove_orphans(&ip);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new(&ip).args(["netns", "add", &name]))?;
        // From here on, dropping `ns` deletes the namespace even if a later step fails.
        let mut ns = Netns {
            name,
            ip,
            handle: None,
        };
        run(Command::new(&ns.ip).args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        let path = format!("/run/netns/{}", ns.name);
        ns.handle = Some(File::open(&path).map_err(io_err(format!("open {path}")))?);
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec <name> program`).
    /// `ip` execs the program, so the spawned child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a new thread that has joined the namespace, so sockets `f` opens live there.
    /// (Only that thread moves; the test process stays in the host's namespace.) A panic in `f`
    /// is passed on to the caller.
    pub fn in_netns<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let handle = self
            .handle
            .as_ref()
            .ok_or_else(|| Error::Missing(format!("netns {} handle", self.name)))?;
        let joined = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    move_into_link_name_space(handle.as_fd(), Some(LinkNameSpaceType::Network))
                        .map_err(|e| Error::Io {
                            what: format!("setns into netns {}", self.name),
                            source: e.into(),
                        })?;
                    Ok(f())
                })
                .join()
        });
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Names of the network interfaces inside the namespace (expected: just `lo`).
    pub fn interfaces(&self) -> Result<Vec<String>> {
        let out = run(Command::new(&self.ip).args(["-n", &self.name, "-o", "link", "show"]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.handle = None;
        if let Err(e) = run(Command::new(&self.ip).args(["netns", "del", &self.name])) {
            eprintln!("cairn-harness: deleting netns {}: {e}", self.name);
        }
    }
}

/// Deletes harness namespaces left by test processes that no longer exist (e.g. killed by a
/// timeout before their drop guards ran). Only names matching our own pattern with a dead pid.
fn remove_orphans(ip: &std::path::Path) {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new(ip).args(["netns", "del", &name]));
        }
    }
}
