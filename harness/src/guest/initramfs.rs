//! Builds the guest's initramfs (static busybox, the modules needed to reach the host's `/`, and
//! our `/init`) and caches it under `target/`, keyed by kernel version and a hash of everything
//! that goes in, so only the first boot after a change pays for the build.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::cpio::Cpio;
use super::kernel::{file_stamp, Kernel};
use crate::error::{io_err, Result};

/// PID 1 of the guest.
const INIT: &str = include_str!("init.sh");

/// Loaded by `/init` before the host's `/` is reachable; everything else comes from the host's
/// `/lib/modules` via modprobe later.
const EARLY_MODULES: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The workspace's cargo target directory: `$CARGO_TARGET_DIR`, else `target/` beside this crate.
/// Tests use it to find host-built binaries such as `debug/cairn-csi`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
            crate_dir.parent().unwrap_or(crate_dir).join("target")
        })
}

/// Where built artefacts are cached: `$CAIRN_HARNESS_CACHE`, else `<target dir>/cairn-harness`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CAIRN_HARNESS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("cairn-harness"))
}

/// Returns the path of an initramfs for `kernel`, building it if the cache has none for exactly
/// these inputs. Returns whether it was built (`true`) or reused.
pub fn get_or_build(kernel: &Kernel, busybox: &Path) -> Result<(PathBuf, bool)> {
    let modules = kernel.module_files(&EARLY_MODULES)?;
    let mut hasher = DefaultHasher::new();
    INIT.hash(&mut hasher);
    kernel.version.hash(&mut hasher);
    file_stamp(busybox).hash(&mut hasher);
    for m in &modules {
        file_stamp(m).hash(&mut hasher);
    }
    let dir = cache_dir().join("guest");
    let path = dir.join(format!(
        "initramfs-{}-{:016x}.cpio",
        kernel.version,
        hasher.finish()
    ));
    if path.is_file() {
        return Ok((path, false));
    }
    fs::create_dir_all(&dir).map_err(io_err(format!("mkdir {}", dir.display())))?;
    // Build under a unique name, then rename: concurrent builders never see half a file.
    let tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .tempfile_in(&dir)
        .map_err(io_err(format!("temp file in {}", dir.display())))?;
    write_archive(BufWriter::new(tmp.as_file()), busybox, &modules)
        .map_err(io_err(format!("write initramfs {}", tmp.path().display())))?;
    tmp.persist(&path)
        .map_err(|e| io_err(format!("rename to {}", path.display()))(e.error))?;
    remove_stale(&dir, &kernel.version, &path);
    Ok((path, true))
}

fn write_archive(
    out: impl std::io::Write,
    busybox: &Path,
    modules: &[PathBuf],
) -> std::io::Result<()> {
    let mut cpio = Cpio::new(out);
    for dir in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/lower",
        "/upper",
        "/newroot",
        "/lib",
        "/lib/modules",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.char_device("/dev/console", 0o600, 5, 1)?;
    cpio.file("/bin/busybox", 0o755, &fs::read(busybox)?)?;
    cpio.file("/init", 0o755, INIT.as_bytes())?;
    let mut order = String::new();
    for m in modules {
        let name = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cpio.file(&format!("/lib/modules/{name}"), 0o644, &fs::read(m)?)?;
        order.push_str(&name);
        order.push('\n');
    }
    cpio.file("/lib/modules/load-order", 0o644, order.as_bytes())?;
    cpio.finish()?.flush()?;
    Ok(())
}

/// Older builds for the same kernel are dead weight once a new one exists.
fn remove_stale(dir: &Path, version: &str, keep: &Path) {
    let prefix = format!("initramfs-{version}-");
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && p != keep {
            let _ = fs::remove_file(p);
        }
    }
}
