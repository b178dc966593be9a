//! Whether the NFS tests can run here. On a laptop without the packages they skip, loudly; in CI
//! (`CI` set) a missing piece is a failure, so a broken install can't turn the suite green by
//! skipping everything.

use std::env;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::guest::kernel;

/// Directories searched for helper programs: `PATH` as the test runner got it may lack the sbin
/// directories where rpcbind and ganesha live.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Finds an executable by name in `PATH` and the usual system directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn require_root() -> Result<(), String> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err("not root (servers, network namespaces and 9p shares need it)".into())
    }
}

fn require_programs(names: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| find_program(n).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing programs: {}", missing.join(", ")))
    }
}

/// `Ok` if nfs-ganesha (with its VFS backend), rpcbind and `ip` are installed and we are root;
/// otherwise the reason the ganesha tests can't run.
pub fn require_nfs_lab() -> Result<(), String> {
    require_root()?;
    require_programs(&["ganesha.nfsd", "rpcbind", "ip"])?;
    crate::ganesha::plugins_dir()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `Ok` if a QEMU guest can be booted: root, qemu, a static busybox, a Debian kernel with its
/// modules, and the knfsd/NFS-client userland the guest runs from the host's `/`.
pub fn require_guest() -> Result<(), String> {
    require_root()?;
    require_programs(&[
        "qemu-system-x86_64",
        "busybox",
        "modprobe",
        "ip",
        "rpc.nfsd",
        "exportfs",
        "mount.nfs",
    ])?;
    kernel::Kernel::find()
        .map(|_| ())
        .map_err(|e| e.to_string())?;
    kernel::static_busybox()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reports a test that can't run here: a panic when `CI` is set, a loud message otherwise.
/// The test's name comes from its thread (libtest names each test's thread after it).
/// Use through [`require!`](crate::require).
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let hint = "as root, run harness/install-deps.sh";
    if env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: cannot run: {reason}; CI is set, so this is a failure ({hint})");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a skip
    // nobody sees is how a suite goes quietly green.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED {test}: {reason}\n!!!!!!!! {hint}; with CI set this is a failure\n"
    );
}

/// `require!(check)` returns early from a test (after reporting via [`skip`]) if `check` — a
/// `Result<(), String>` such as [`require_nfs_lab()`] — is an error.
#[macro_export]
macro_rules! require {
    ($check:expr) => {
        if let Err(reason) = $check {
            $crate::skip::skip(&reason);
            return;
        }
    };
}
