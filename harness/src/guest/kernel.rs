//! The guest's kernel: Debian's stock kernel package, installed on the host (the host itself runs
//! a kernel without NFS). The guest boots its `/boot/vmlinuz-<version>` and, because it sees the
//! host's `/` over 9p, loads any module from the host's `/lib/modules/<version>` with `modprobe`.
//! Only what's needed to reach that `/` (virtio, 9p, overlay) goes into the initramfs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Error, Result};
use crate::skip::find_program;

/// Set to a version (e.g. `6.1.0-56-amd64`) to pick one kernel when several are installed.
pub const KERNEL_ENV: &str = "CAIRN_GUEST_KERNEL";

/// An installed Debian kernel with its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub version: String,
    pub image: PathBuf,
    pub modules: PathBuf,
}

impl Kernel {
    /// The newest installed Debian kernel (`/boot/vmlinuz-<v>` with `/lib/modules/<v>/modules.dep`),
    /// or the one named by `CAIRN_GUEST_KERNEL`.
    pub fn find() -> Result<Kernel> {
        let wanted = std::env::var(KERNEL_ENV).ok();
        let mut found: Vec<Kernel> = fs::read_dir("/lib/modules")
            .map_err(|_| no_kernel())?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_string_lossy().into_owned();
                let kernel = Kernel {
                    image: PathBuf::from(format!("/boot/vmlinuz-{version}")),
                    modules: e.path(),
                    version,
                };
                (kernel.image.is_file() && kernel.modules.join("modules.dep").is_file())
                    .then_some(kernel)
            })
            .filter(|k| wanted.as_ref().is_none_or(|w| *w == k.version))
            .collect();
        found.sort_by_key(|k| version_key(&k.version));
        found.pop().ok_or_else(no_kernel)
    }

    /// The module files to load for `wanted` (by name), dependencies first, each once. Built-in
    /// modules are skipped. Fails if a module is neither a file nor built in, or is compressed
    /// (busybox's insmod in the initramfs loads plain `.ko` files only).
    pub fn module_files(&self, wanted: &[&str]) -> Result<Vec<PathBuf>> {
        let dep_path = self.modules.join("modules.dep");
        let deps = parse_modules_dep(
            &fs::read_to_string(&dep_path)
                .map_err(io_err(format!("read {}", dep_path.display())))?,
        );
        let builtin: HashSet<String> = fs::read_to_string(self.modules.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(module_name)
            .collect();
        let by_name: HashMap<String, &str> = deps
            .keys()
            .map(|path| (module_name(path), path.as_str()))
            .collect();
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            let key = normalize(name);
            match by_name.get(&key) {
                Some(path) => visit(path, &deps, &mut seen, &mut order),
                None if builtin.contains(&key) => {}
                None => {
                    return Err(Error::Missing(format!(
                        "kernel module {name} not in {} (kernel {})",
                        dep_path.display(),
                        self.version
                    )))
                }
            }
        }
        order
            .into_iter()
            .map(|rel| {
                if !rel.ends_with(".ko") {
                    return Err(Error::Missing(format!(
                        "module {rel} is compressed; the initramfs needs plain .ko files"
                    )));
                }
                Ok(self.modules.join(rel))
            })
            .collect()
    }
}

fn no_kernel() -> Error {
    Error::Missing(
        "no Debian kernel for the guest (/boot/vmlinuz-<v> with /lib/modules/<v>/modules.dep; \
         package linux-image-amd64)"
            .into(),
    )
}

/// Depth-first, dependencies before the module itself.
fn visit(
    path: &str,
    deps: &HashMap<String, Vec<String>>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_string()) {
        return;
    }
    for dep in deps.get(path).into_iter().flatten() {
        visit(dep, deps, seen, order);
    }
    order.push(path.to_string());
}

/// `kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko` lines into a map.
fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| {
            (
                module.trim().to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

/// `kernel/net/9p/9pnet_virtio.ko.xz` -> `9pnet_virtio`; `-` and `_` are the same to the kernel.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    normalize(file.split(".ko").next().unwrap_or(file))
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `6.1.0-56-amd64` -> [6, 1, 0, 56, ...] so that -56 sorts after -9.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The host's busybox, which must be statically linked: it runs in the initramfs before any
/// library is reachable (package busybox-static).
pub fn static_busybox() -> Result<PathBuf> {
    let path = find_program("busybox")
        .ok_or_else(|| Error::Missing("busybox (package busybox-static)".into()))?;
    let bytes = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    if has_interpreter(&bytes) {
        return Err(Error::Missing(format!(
            "{} is dynamically linked; install busybox-static",
            path.display()
        )));
    }
    Ok(path)
}

/// True if an ELF64 file has a PT_INTERP program header, i.e. is dynamically linked.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        u32_at(phoff as usize + i * usize::from(phentsize)) == Some(3) // PT_INTERP
    })
}

/// Path, size and mtime of a file: part of the initramfs cache key, so an upgraded busybox or
/// module rebuilds it.
pub(crate) fn file_stamp(path: &Path) -> String {
    fs::metadata(path)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{}:{}:{}", path.display(), m.len(), m.mtime())
        })
        .unwrap_or_else(|_| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_once() {
        let deps = parse_modules_dep(
            "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n\
             kernel/net/9p/9pnet.ko:\n\
             kernel/fs/netfs/netfs.ko:\n\
             kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n",
        );
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for m in ["kernel/net/9p/9pnet_virtio.ko", "kernel/fs/9p/9p.ko"] {
            visit(m, &deps, &mut seen, &mut order);
        }
        assert_eq!(
            order,
            [
                "kernel/net/9p/9pnet.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/net/9p/9pnet_virtio.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/fs/9p/9p.ko"
            ]
        );
    }

    #[test]
    fn module_names_normalise() {
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko"), "9pnet_virtio");
        assert_eq!(module_name("kernel/fs/nfs/nfs-x.ko.xz"), "nfs_x");
    }

    #[test]
    fn versions_sort_numerically() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
    }

    #[test]
    fn detects_dynamic_elf() {
        // Our own test binary is dynamically linked (glibc target).
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"not an elf"));
    }
}
