//! Staging and target paths from the kubelet, confined to `--kubelet-dir`.
//!
//! A [`KubeletPath`] is checked lexically when the request arrives (absolute,
//! no `.`/`..`/empty components, under the kubelet dir) and resolved on disk
//! before use: every directory on the way down is checked with `lstat`, so a
//! symlink anywhere below the kubelet dir — at the target itself included —
//! is refused instead of followed.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::Error;
use crate::mount;

/// Linux PATH_MAX: nothing longer can be mounted on.
const MAX_PATH_LEN: usize = 4096;

/// The kubelet's root directory, as given and as resolved on disk (it may be
/// a symlink itself, e.g. `/var/lib/kubelet -> /data/kubelet`).
#[derive(Debug, Clone)]
pub struct KubeletDir {
    given: PathBuf,
    real: PathBuf,
}

/// A path under the kubelet dir, lexically valid. Use [`KubeletDir::resolve`]
/// before touching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletPath {
    /// Below the kubelet dir; never empty, never `..`.
    relative: PathBuf,
}

impl KubeletDir {
    pub fn open(given: &Path) -> io::Result<Self> {
        let real = given.canonicalize()?;
        Ok(Self {
            given: given.to_path_buf(),
            real,
        })
    }

    pub fn real(&self) -> &Path {
        &self.real
    }

    /// Checks a path from a request, naming `field` in errors.
    pub fn check(&self, raw: &str, field: &str) -> Result<KubeletPath, Error> {
        if raw.is_empty() {
            return Err(Error::InvalidArgument(format!("{field} is required")));
        }
        let invalid = |why: &str| {
            Error::InvalidArgument(format!("{field} {} {why}", crate::error::quote(raw)))
        };
        if raw.len() > MAX_PATH_LEN {
            return Err(invalid("is too long"));
        }
        if raw.contains('\0') {
            return Err(invalid("contains NUL"));
        }
        let path = Path::new(raw);
        if !path.is_absolute() {
            return Err(invalid("must be absolute"));
        }
        if raw.contains("//") || raw.split('/').any(|c| c == "." || c == "..") {
            return Err(invalid(
                "must be normalized (no '.', '..' or empty components)",
            ));
        }
        let relative = [&self.given, &self.real]
            .iter()
            .find_map(|base| path.strip_prefix(base).ok())
            .filter(|rest| rest.components().next().is_some())
            .ok_or_else(|| {
                invalid(&format!(
                    "is not under the kubelet directory {}",
                    self.given.display()
                ))
            })?;
        debug_assert!(relative
            .components()
            .all(|c| matches!(c, Component::Normal(_))));
        Ok(KubeletPath {
            relative: relative.to_path_buf(),
        })
    }

    /// Where `path` is on disk, without looking: what [`Self::resolve`]
    /// returns when nothing on the way is a symlink. For naming a path that
    /// may be gone (records keyed by staging path), never for touching it.
    pub fn lexical(&self, path: &KubeletPath) -> PathBuf {
        self.real.join(&path.relative)
    }

    /// Walks down to `path`'s parent refusing symlinks, creating missing
    /// directories when `create_parents` is set, and returns the real path.
    /// The final component is not created; it may be missing or a directory,
    /// never a symlink.
    pub fn resolve(&self, path: &KubeletPath, create_parents: bool) -> Result<PathBuf, Error> {
        let mut current = self.real.clone();
        let components: Vec<_> = path.relative.components().collect();
        let (last, parents) = components
            .split_last()
            .ok_or_else(|| Error::Internal("empty kubelet path".into()))?;
        for component in parents {
            current.push(component);
            match mount::inspect(&current).map_err(Error::io("inspect", &current))? {
                Some(state) if state.is_symlink => {
                    return Err(symlink_error(&current));
                }
                Some(state) if state.is_dir => {}
                Some(_) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} is not a directory",
                        current.display()
                    )))
                }
                None if create_parents => match std::fs::create_dir(&current) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("create", &current)(e)),
                },
                None => {
                    return Err(Error::NotFound(format!(
                        "{} does not exist",
                        current.display()
                    )))
                }
            }
        }
        current.push(last);
        if let Some(state) = mount::inspect(&current).map_err(Error::io("inspect", &current))? {
            if state.is_symlink {
                return Err(symlink_error(&current));
            }
        }
        Ok(current)
    }
}

fn symlink_error(path: &Path) -> Error {
    Error::InvalidArgument(format!(
        "{} is a symlink; refusing to follow it out of the kubelet directory",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelet() -> (tempfile::TempDir, KubeletDir) {
        let dir = tempfile::tempdir().unwrap();
        let k = KubeletDir::open(dir.path()).unwrap();
        (dir, k)
    }

    #[test]
    fn accepts_kubelet_style_paths() {
        let (dir, k) = kubelet();
        let raw = format!(
            "{}/pods/uid-1/volumes/kubernetes.io~csi/pv-1/mount",
            dir.path().display()
        );
        let p = k.check(&raw, "target_path").unwrap();
        assert_eq!(
            p.relative,
            Path::new("pods/uid-1/volumes/kubernetes.io~csi/pv-1/mount")
        );
    }

    #[test]
    fn refuses_paths_outside_or_unnormalized() {
        let (dir, k) = kubelet();
        let base = dir.path().display().to_string();
        for bad in [
            String::new(),
            "relative/path".into(),
            "/etc/passwd".into(),
            base.clone(),
            format!("{base}/"),
            format!("{base}/pods/../../etc"),
            format!("{base}/pods/./x"),
            format!("{base}//pods"),
            format!("{base}/pods/x\0y"),
            format!("{base}x/pods"),
            format!("{base}/{}", "a".repeat(5000)),
        ] {
            assert!(k.check(&bad, "target_path").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolve_refuses_symlinks_on_the_way_and_at_the_end() {
        let (dir, k) = kubelet();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pods/a")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("pods/link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("pods/a/mount")).unwrap();
        let base = dir.path().display();
        let through = k.check(&format!("{base}/pods/link/mount"), "t").unwrap();
        assert!(matches!(
            k.resolve(&through, true),
            Err(Error::InvalidArgument(_))
        ));
        let at_end = k.check(&format!("{base}/pods/a/mount"), "t").unwrap();
        assert!(matches!(
            k.resolve(&at_end, true),
            Err(Error::InvalidArgument(_))
        ));
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn resolve_creates_parents_only_when_asked() {
        let (dir, k) = kubelet();
        let p = k
            .check(&format!("{}/pods/u/v/mount", dir.path().display()), "t")
            .unwrap();
        assert!(matches!(k.resolve(&p, false), Err(Error::NotFound(_))));
        let real = k.resolve(&p, true).unwrap();
        assert!(real.parent().unwrap().is_dir());
        assert!(!real.exists());
    }
}
