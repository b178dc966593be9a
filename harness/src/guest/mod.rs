//! A throwaway QEMU guest with a real Linux NFS client and server, for the node tests.
//!
//! The host kernel has no NFS and its `/dev/kvm` can't run a stock kernel, so the guest is QEMU
//! with TCG (~10–15 s a boot) running Debian's stock kernel. It has no network card: its only
//! network is its own loopback. It sees the host's `/` read-only over 9p (with writable tmpfs
//! overlays), so host binaries such as `target/debug/cairn-csi` run inside unchanged.
//!
//! [`Guest::run`] boots, runs one shell script as root, and returns its exit status and output.
//! Files come back through the optional read-write share ([`GuestOptions::share`], `/share` in the
//! guest); the script also finds [`KNFSD_SH`] at `$CAIRN_HARNESS/knfsd.sh`.

mod cpio;
mod initramfs;
pub mod kernel;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{io_err, Error, Result};
use crate::process::POLL;
use crate::skip::find_program;
pub use initramfs::{cache_dir, target_dir};
use kernel::Kernel;

/// Shell functions to run knfsd on the guest's loopback (`knfsd_start DIR`, `knfsd_stop`).
pub const KNFSD_SH: &str = include_str!("knfsd.sh");

const STAGE2: &str = include_str!("stage2.sh");

/// Modules loaded before the script runs. Any other module of the guest kernel (from the host's
/// `/lib/modules/<version>`) loads with `modprobe`, and the kernel loads filesystems such as nfs,
/// nfs4 and nfsd on demand at `mount -t`; preloading them would cost ~2 s of TCG time a boot.
/// `loop` is not loaded on demand: `/dev/loop-control` exists only once it is.
pub const DEFAULT_MODULES: [&str; 1] = ["loop"];

/// How a guest is run.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    /// Hard limit for boot + script + power-off; QEMU is killed (SIGKILL, by pid) after it.
    pub timeout: Duration,
    pub memory_mib: u32,
    pub cpus: u32,
    /// A host directory mounted read-write at `/share` in the guest.
    pub share: Option<PathBuf>,
    /// Modules to load before the script runs.
    pub modules: Vec<String>,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            timeout: Duration::from_secs(180),
            memory_mib: 1024,
            cpus: 2,
            share: None,
            modules: DEFAULT_MODULES.iter().map(|m| m.to_string()).collect(),
        }
    }
}

/// What a guest run produced.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The script's exit status; `None` if it never finished (timeout, crash).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The script's stdout and stderr.
    pub output: String,
    /// The guest's serial console: kernel messages, init's progress, a copy of the output.
    pub console: String,
    /// Wall time from QEMU start to exit.
    pub elapsed: Duration,
}

impl GuestOutput {
    /// The script ran to the end and exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

impl fmt::Display for GuestOutput {
    /// A report for assertion messages: status, output, and the console's tail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "guest exit code {:?}{} after {:.1?}",
            self.exit_code,
            if self.timed_out { " (timed out)" } else { "" },
            self.elapsed
        )?;
        writeln!(f, "--- script output ---\n{}", self.output)?;
        let lines: Vec<&str> = self.console.lines().collect();
        writeln!(
            f,
            "--- console (last 40 lines) ---\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

/// A bootable guest: the kernel found on the host and a (cached) initramfs for it.
#[derive(Debug, Clone)]
pub struct Guest {
    kernel: Kernel,
    initramfs: PathBuf,
    qemu: PathBuf,
    setpriv: PathBuf,
    built_initramfs: bool,
}

impl Guest {
    /// Finds the kernel, QEMU and busybox, and builds the initramfs unless it is cached.
    pub fn prepare() -> Result<Guest> {
        let kernel = Kernel::find()?;
        let qemu = find_program("qemu-system-x86_64")
            .ok_or_else(|| Error::Missing("qemu-system-x86_64 (package qemu-system-x86)".into()))?;
        let setpriv = find_program("setpriv")
            .ok_or_else(|| Error::Missing("setpriv (package util-linux)".into()))?;
        let busybox = kernel::static_busybox()?;
        let (initramfs, built_initramfs) = initramfs::get_or_build(&kernel, &busybox)?;
        Ok(Guest {
            kernel,
            initramfs,
            qemu,
            setpriv,
            built_initramfs,
        })
    }

    /// The guest kernel's version, e.g. `6.1.0-56-amd64`.
    pub fn kernel_version(&self) -> &str {
        &self.kernel.version
    }

    /// The initramfs in use, and whether [`prepare`](Guest::prepare) had to build it.
    pub fn initramfs(&self) -> (&Path, bool) {
        (&self.initramfs, self.built_initramfs)
    }

    /// Boots the guest, runs `script` with `/bin/sh` as root, powers off. Errors are about the
    /// harness (QEMU missing, temp files); a failing or hanging script is reported in the output.
    pub fn run(&self, script: &str, options: &GuestOptions) -> Result<GuestOutput> {
        let ctl = tempfile::Builder::new()
            .prefix("cairn-guest-")
            .tempdir()
            .map_err(io_err("create guest control dir"))?;
        let c = ctl.path();
        let write = |name: &str, text: &str| {
            fs::write(c.join(name), text).map_err(io_err(format!("write {}/{name}", c.display())))
        };
        write("script.sh", script)?;
        write("stage2.sh", STAGE2)?;
        write("knfsd.sh", KNFSD_SH)?;
        write("modules", &options.modules.join("\n"))?;
        let console = c.join("console.log");

        let mut append = String::from("console=ttyS0 panic=-1 quiet");
        // setpriv execs QEMU (same pid) with a parent-death signal: if the test process is
        // killed outright (a CI timeout), QEMU dies with it instead of running on. Safe here
        // because `run` blocks the spawning thread until QEMU is gone.
        let mut cmd = Command::new(&self.setpriv);
        cmd.args(["--pdeathsig", "KILL"]).arg(&self.qemu);
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"])
            .args(["-smp", &options.cpus.to_string()])
            .args(["-m", &options.memory_mib.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-monitor", "none", "-no-reboot", "-nic", "none"])
            .arg("-serial")
            .arg(format!("file:{}", qemu_path(&console)?))
            .arg("-kernel")
            .arg(&self.kernel.image)
            .arg("-initrd")
            .arg(&self.initramfs)
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=harness,security_model=none,multidevs=remap",
                qemu_path(c)?
            ));
        if let Some(share) = &options.share {
            cmd.arg("-virtfs").arg(format!(
                "local,path={},mount_tag=share,security_model=none,multidevs=remap",
                qemu_path(share)?
            ));
            append.push_str(" cairn_share=1");
        }
        cmd.arg("-append").arg(append);
        let qemu_log = c.join("qemu.log");
        let log = fs::File::create(&qemu_log)
            .map_err(io_err(format!("create {}", qemu_log.display())))?;
        let log2 = log.try_clone().map_err(io_err("clone qemu log fd"))?;

        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err(format!("spawn {}", self.qemu.display())))?;
        let mut qemu = KillOnDrop(child);
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = qemu.0.try_wait().map_err(io_err("wait for qemu"))? {
                break Some(status);
            }
            if started.elapsed() > options.timeout {
                timed_out = true;
                break None;
            }
            sleep(POLL * 5);
        };
        drop(qemu); // kills it if it is still running
        let elapsed = started.elapsed();

        let read = |name: &str| fs::read_to_string(c.join(name)).unwrap_or_default();
        let mut console_text = read("console.log");
        let qemu_text = read("qemu.log");
        if !qemu_text.trim().is_empty() || status.is_some_and(|s| !s.success()) {
            console_text.push_str(&format!("\n--- qemu ({status:?}) ---\n{qemu_text}"));
        }
        Ok(GuestOutput {
            exit_code: read("exit_code").trim().parse().ok(),
            timed_out,
            output: read("output.log"),
            console: console_text,
            elapsed,
        })
    }
}

/// QEMU's option syntax splits on commas; refuse paths that would be misread.
fn qemu_path(path: &Path) -> Result<String> {
    let text = path.to_str().ok_or(Error::BadPath {
        path: path.to_path_buf(),
        why: "not UTF-8",
    })?;
    if text.contains(',') {
        return Err(Error::BadPath {
            path: path.to_path_buf(),
            why: "QEMU options can't take a comma here",
        });
    }
    Ok(text.to_string())
}

/// QEMU, killed (SIGKILL, by pid: it is our child and unreaped) and reaped on drop, so a timeout
/// or a panicking test never leaves a guest running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
