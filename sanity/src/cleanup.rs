//! What a case leaves behind, and the filesystem side of removing it.

use std::io;
use std::path::{Path, PathBuf};

/// One thing to undo after a case, run newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    DeleteVolume(String),
    DeleteSnapshot(String),
    ControllerUnpublish {
        volume_id: String,
        node_id: String,
    },
    NodeUnstage {
        volume_id: String,
        staging_path: String,
    },
    NodeUnpublish {
        volume_id: String,
        target_path: String,
    },
    /// A directory the suite created (never removed while anything under it
    /// is still mounted: that would delete the volume's data through it).
    RemoveDir(PathBuf),
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_points(&table)
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect())
}

/// Whether `path` is itself a mount point.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_points(&table).iter().any(|m| m == path))
}

/// The mount point column (5th field) of each mountinfo line, with the
/// kernel's octal escapes (`\040` for a space) undone.
pub fn mount_points(table: &str) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes `dir` and its contents unless something below it is mounted;
/// returns a description of what stayed behind.
pub fn remove_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let mounted =
        mounts_under(dir).map_err(|e| format!("{}: cannot read mounts: {e}", dir.display()))?;
    if !mounted.is_empty() {
        let list: Vec<_> = mounted.iter().map(|m| m.display().to_string()).collect();
        return Err(format!(
            "{}: not removed, still mounted: {}",
            dir.display(),
            list.join(", ")
        ));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 /vol /tmp/k/pods/a\\040b/mount rw - ext4 /dev/sda1 rw
41 22 0:35 /vol /tmp/k/plugins/x/globalmount rw - ext4 /dev/sda1 rw
";

    #[test]
    fn reads_mount_points_and_unescapes_spaces() {
        let points = mount_points(TABLE);
        assert_eq!(
            points,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/tmp/k/pods/a b/mount"),
                PathBuf::from("/tmp/k/plugins/x/globalmount"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape_octal("a\\b\\0"), "a\\b\\0");
        assert_eq!(unescape_octal("tab\\011x"), "tab\tx");
    }

    #[test]
    fn removes_unmounted_dirs_and_tolerates_missing_ones() {
        let base =
            std::env::temp_dir().join(format!("cairn-sanity-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), b"x").unwrap();
        assert_eq!(remove_dir(&base), Ok(()));
        assert!(!base.exists());
        assert_eq!(remove_dir(&base), Ok(()));
    }
}
