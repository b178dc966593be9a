//! Making directory changes durable: data is flushed before the rename that
//! publishes it, and the parent directory is flushed after, so a crash shows
//! either the old state or the complete new one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

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

/// One directory flushed on behalf of every caller that changed it: a
/// caller whose change (a rename into or out of it) was made before a
/// flush began is covered by that flush, so concurrent creates and deletes
/// share one fsync instead of queueing for one each (group commit). A
/// caller never returns before a flush that began after its change has
/// succeeded; a failed flush covers no one, and its waiters flush again.
#[derive(Debug)]
pub struct GroupSync {
    dir: PathBuf,
    state: Mutex<Flushes>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct Flushes {
    /// Tickets handed out: one per change waiting to be durable.
    requested: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A flush is running.
    running: bool,
}

impl GroupSync {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            state: Mutex::new(Flushes::default()),
            finished: Condvar::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn flushes(&self) -> MutexGuard<'_, Flushes> {
        // The state is two counters and a flag, consistent at every unlock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once a flush of the directory that began after this call
    /// did has succeeded: the caller's earlier changes to it are durable.
    pub fn sync(&self) -> Result<()> {
        let mut flushes = self.flushes();
        flushes.requested += 1;
        let ticket = flushes.requested;
        loop {
            if flushes.durable >= ticket {
                return Ok(());
            }
            if !flushes.running {
                flushes.running = true;
                let covered = flushes.requested;
                drop(flushes);
                let result = sync_dir(&self.dir);
                let mut flushes = self.flushes();
                flushes.running = false;
                if result.is_ok() {
                    flushes.durable = flushes.durable.max(covered);
                }
                self.finished.notify_all();
                return result;
            }
            flushes = self
                .finished
                .wait(flushes)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// [`rename`], with the flush of this directory shared.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        std::fs::rename(from, to).map_err(Error::io("rename", from))?;
        self.sync()
    }
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
    fn group_sync_covers_every_caller_and_shares_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let group = std::sync::Arc::new(GroupSync::new(dir.path().to_path_buf()));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let group = group.clone();
                std::thread::spawn(move || {
                    for j in 0..50 {
                        std::fs::create_dir(group.dir().join(format!("{i}-{j}"))).unwrap();
                        group.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let flushes = group.flushes();
        assert_eq!(flushes.requested, 400);
        assert_eq!(flushes.durable, 400, "every ticket was covered");
        assert!(!flushes.running);
    }

    #[test]
    fn a_failed_group_flush_is_an_error_and_covers_no_one() {
        let dir = tempfile::tempdir().unwrap();
        let group = GroupSync::new(dir.path().join("missing"));
        assert!(group.sync().is_err());
        assert_eq!(group.flushes().durable, 0);
        std::fs::create_dir(dir.path().join("missing")).unwrap();
        group.sync().unwrap();
        assert_eq!(group.flushes().durable, 2);
    }

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
