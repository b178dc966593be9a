//! Making directory changes durable: data is flushed before the rename that
//! publishes it, and the parent directory is flushed after, so a crash shows
//! either the old state or the complete new one.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Flushes a directory's entries (a rename or create inside it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

/// Writes a new file and flushes it; the caller publishes it by renaming
/// its directory or the file itself.
pub fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::io("create", path))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", path))
}

/// Renames `from` to `to`, then flushes `durable_dir`: the one directory
/// whose change must survive a crash (the new name on create, the vanished
/// name on delete). On a journaling filesystem the rename is one
/// transaction, so flushing either side commits both.
pub fn rename(from: &Path, to: &Path, durable_dir: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(Error::io("rename", from))?;
    sync_dir(durable_dir)
}

/// Replaces the file at `path` whole: the new contents are written to
/// `temp` (in the same directory) and flushed, then renamed over `path`,
/// and the directory is flushed. A crash leaves the old file or the new
/// one, never a mix; a `temp` left by an earlier crash is removed first.
/// Callers serialize writers of one `path` (the volume lock).
pub fn replace_file(path: &Path, temp: &Path, contents: &[u8]) -> Result<()> {
    match std::fs::remove_file(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", temp)(e)),
    }
    write_new_file(temp, contents)?;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("{} has no parent", path.display())))?;
    rename(temp, path, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_swaps_contents_and_clears_a_stale_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        let temp = dir.path().join(".meta.json.tmp");
        std::fs::write(&path, b"old").unwrap();
        std::fs::write(&temp, b"left by a crash").unwrap();
        replace_file(&path, &temp, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temp.exists());
    }
}
