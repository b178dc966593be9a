//! Whether a test can run here: the one skip rule of the whole workspace.
//!
//! A test that needs root, loop devices, the NFS lab, the QEMU guest, a Kubernetes cluster, a
//! reference file or a tool binary checks with [`require!`](crate::require). On a laptop without
//! the piece it skips, loudly; in CI ([`ci`]) a missing piece is a failure, so a broken install
//! can't turn the suite green by skipping everything.

use std::env;
use std::ffi::OsStr;
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

/// Whether this run is CI: `CI` is set to anything but the empty string, `0` or `false` (in any
/// case). The only definition of CI in the workspace's tests: every skip goes through [`skip`].
pub fn ci() -> bool {
    ci_from(env::var_os("CI").as_deref())
}

fn ci_from(value: Option<&OsStr>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let value = value.to_string_lossy();
    !(value.is_empty() || value == "0" || value.eq_ignore_ascii_case("false"))
}

/// `Ok` if we are root (mounts, loop devices, quotas, servers and network namespaces need it).
pub fn require_root() -> Result<(), String> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err("not root (mounts, loop devices, servers and network namespaces need it)".into())
    }
}

/// `Ok` if loop devices can be attached here: root and `/dev/loop-control`.
pub fn require_loop_devices() -> Result<(), String> {
    require_root()?;
    if Path::new("/dev/loop-control").exists() {
        Ok(())
    } else {
        Err("no /dev/loop-control: the kernel has no loop device support".into())
    }
}

/// The path of program `name` (see [`find_program`]), or why it is missing.
pub fn require_program(name: &str) -> Result<PathBuf, String> {
    find_program(name).ok_or_else(|| format!("missing program: {name}"))
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

/// Reports a test that can't run here: a panic under CI ([`ci`]), a loud message otherwise.
/// The test's name comes from its thread (libtest names each test's thread after it).
/// Use through [`require!`](crate::require).
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let hint =
        "what tests need: README.md, \"Run all the tests\"; as root, harness/install-deps.sh";
    if ci() {
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
/// `Result` such as [`require_nfs_lab()`] whose error says what is missing — is an error, and
/// otherwise evaluates to the `Ok` value (`let path = require!(require_program("losetup"));`).
#[macro_export]
macro_rules! require {
    ($check:expr) => {
        match $check {
            ::core::result::Result::Ok(value) => value,
            ::core::result::Result::Err(reason) => {
                $crate::skip::skip(&::std::string::ToString::to_string(&reason));
                return;
            }
        }
    };
}

/// Reports an opt-in suite that was not asked for (the e2e stories without `CAIRN_E2E=1`): as
/// loudly as a skip, but never a failure, even in CI. Not asking is a choice, not a missing
/// piece: CI asks for that suite in its own step (`.ci/e2e.sh`), and the workspace's test
/// command must not install Cairn into whatever cluster a shell points at.
pub fn not_asked_for(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! NOT RUN {test}: {reason}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        for (value, expected) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("False"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
            (Some("woodpecker"), true),
        ] {
            assert_eq!(ci_from(value.map(OsStr::new)), expected, "CI={value:?}");
        }
    }

    #[test]
    fn require_evaluates_to_the_ok_value() {
        fn run(check: Result<u32, String>, out: &mut Option<u32>) {
            let value = crate::require!(check);
            *out = Some(value);
        }
        let mut out = None;
        run(Ok(7), &mut out);
        assert_eq!(out, Some(7));
    }
}
