//! A [`Mounter`] that keeps the paths it was told about in memory and
//! records every call that would change something, so a unit test can
//! assert on what the node flow did (a repeat makes no second bind) and
//! run as any user: nothing here reaches the kernel.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::Mounter;
use crate::mount::{BindFlags, PathState};

/// A call that changes the model, as made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateDir(PathBuf),
    CreateFile(PathBuf),
    Bind {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
    },
    BindFile {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
    },
    UnmountAll(PathBuf),
    Remove(PathBuf),
}

/// What a mount at a path shows: its source's inode and type.
#[derive(Debug, Clone, Copy)]
struct Mounted {
    ino: u64,
    is_dir: bool,
    read_only: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    ino: u64,
    is_dir: bool,
    /// Stacked mounts, the last one on top.
    mounts: Vec<Mounted>,
    /// Holds files nobody in the model made (a directory not empty).
    foreign_files: bool,
}

impl Entry {
    /// The inode and type the path shows: its top mount's, or its own.
    fn shows(&self) -> (u64, bool) {
        self.mounts
            .last()
            .map_or((self.ino, self.is_dir), |m| (m.ino, m.is_dir))
    }
}

#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<PathBuf, Entry>,
    next_ino: u64,
    calls: Vec<Call>,
    /// Errors the next binds fail with, first one first.
    failing_binds: Vec<io::ErrorKind>,
}

impl Model {
    fn add(&mut self, path: &Path, is_dir: bool) -> u64 {
        self.next_ino += 1;
        let ino = self.next_ino + 100;
        self.entries.insert(
            path.to_path_buf(),
            Entry {
                ino,
                is_dir,
                mounts: Vec::new(),
                foreign_files: false,
            },
        );
        ino
    }

    /// Mounts what `source` shows on `target`, which must be a directory
    /// (`want_dir`) or a file.
    fn mount(
        &mut self,
        source: &Path,
        target: &Path,
        flags: BindFlags,
        want_dir: bool,
    ) -> io::Result<()> {
        if !self.failing_binds.is_empty() {
            return Err(self.failing_binds.remove(0).into());
        }
        let (ino, is_dir) = self
            .entries
            .get(source)
            .ok_or(io::ErrorKind::NotFound)?
            .shows();
        let target = self
            .entries
            .get_mut(target)
            .ok_or(io::ErrorKind::NotFound)?;
        if target.shows().1 != want_dir {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        target.mounts.push(Mounted {
            ino,
            is_dir,
            read_only: flags.is_read_only(),
        });
        Ok(())
    }
}

/// The in-memory double. Paths not added (or created through it) do not
/// exist.
#[derive(Debug, Default)]
pub struct FakeMounter {
    model: Mutex<Model>,
}

impl FakeMounter {
    fn model(&self) -> MutexGuard<'_, Model> {
        // A test that panicked while holding it has failed already.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a directory (a volume's data directory, a target) made by
    /// someone else; returns its inode.
    pub fn add_dir(&self, path: &Path) -> u64 {
        self.model().add(path, true)
    }

    /// Adds a regular file (a device node, a stray file) made by someone else.
    pub fn add_file(&self, path: &Path) -> u64 {
        self.model().add(path, false)
    }

    /// Puts a file Cairn did not make inside the directory `path`.
    pub fn add_foreign_file_in(&self, path: &Path) {
        if let Some(entry) = self.model().entries.get_mut(path) {
            entry.foreign_files = true;
        }
    }

    /// Mounts `source` at `target` behind the flow's back (another volume
    /// published by hand, say); not recorded as a call.
    pub fn mount_behind(&self, source: &Path, target: &Path, read_only: bool) {
        let flags = if read_only {
            BindFlags::default().read_only()
        } else {
            BindFlags::default()
        };
        let mut model = self.model();
        if let Err(e) = model.mount(source, target, flags, true) {
            panic!(
                "fake mount of {} at {}: {e}",
                source.display(),
                target.display()
            );
        }
    }

    /// Unmounts everything at `path` behind the flow's back (a reboot, an
    /// unmount by hand, an earlier attempt); not recorded as a call.
    pub fn unmount_behind(&self, path: &Path) {
        if let Some(entry) = self.model().entries.get_mut(path) {
            entry.mounts.clear();
        }
    }

    /// The next bind (directory or file) fails with `kind`.
    pub fn fail_next_bind(&self, kind: io::ErrorKind) {
        self.model().failing_binds.push(kind);
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.model().calls.clone()
    }

    /// The binds (directory or file) made at `target` so far.
    pub fn binds_at(&self, target: &Path) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|call| {
                matches!(call, Call::Bind { target: t, .. } | Call::BindFile { target: t, .. }
                    if t == target)
            })
            .collect()
    }

    /// How many mounts are stacked at `path`.
    pub fn mounts_at(&self, path: &Path) -> usize {
        self.model().entries.get(path).map_or(0, |e| e.mounts.len())
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.model().entries.contains_key(path)
    }
}

impl Mounter for FakeMounter {
    fn inspect(&self, path: &Path) -> io::Result<Option<PathState>> {
        Ok(self.model().entries.get(path).map(|entry| {
            let (ino, is_dir) = entry.shows();
            PathState {
                dev: (0, 42),
                ino,
                is_dir,
                is_symlink: false,
                is_mount_root: !entry.mounts.is_empty(),
            }
        }))
    }

    fn is_read_only(&self, path: &Path) -> io::Result<bool> {
        let model = self.model();
        let entry = model.entries.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(entry.mounts.last().is_some_and(|m| m.read_only))
    }

    fn is_regular_file(&self, path: &Path) -> io::Result<bool> {
        let model = self.model();
        let entry = model.entries.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(!entry.is_dir)
    }

    fn create_dir(&self, path: &Path, _mode: u32) -> io::Result<bool> {
        let mut model = self.model();
        model.calls.push(Call::CreateDir(path.to_path_buf()));
        if model.entries.contains_key(path) {
            return Ok(false);
        }
        model.add(path, true);
        Ok(true)
    }

    fn create_file(&self, path: &Path, _mode: u32) -> io::Result<()> {
        let mut model = self.model();
        model.calls.push(Call::CreateFile(path.to_path_buf()));
        if !model.entries.contains_key(path) {
            model.add(path, false);
        }
        Ok(())
    }

    fn bind(&self, source: &Path, target: &Path, flags: BindFlags) -> io::Result<()> {
        let mut model = self.model();
        model.calls.push(Call::Bind {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            read_only: flags.is_read_only(),
        });
        model.mount(source, target, flags, true)
    }

    fn bind_file(&self, source: &Path, target: &Path, flags: BindFlags) -> io::Result<()> {
        let mut model = self.model();
        model.calls.push(Call::BindFile {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            read_only: flags.is_read_only(),
        });
        model.mount(source, target, flags, false)
    }

    fn unmount_all(&self, path: &Path) -> io::Result<bool> {
        let mut model = self.model();
        model.calls.push(Call::UnmountAll(path.to_path_buf()));
        Ok(model
            .entries
            .get_mut(path)
            .is_some_and(|entry| !std::mem::take(&mut entry.mounts).is_empty()))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut model = self.model();
        model.calls.push(Call::Remove(path.to_path_buf()));
        let entry = model.entries.get(path).ok_or(io::ErrorKind::NotFound)?;
        if !entry.mounts.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        if entry.foreign_files {
            return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        }
        model.entries.remove(path);
        Ok(())
    }
}
