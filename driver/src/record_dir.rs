//! A directory of small records named after a path: which volume is staged
//! at a staging path, published at a target, staged from a volume. Every
//! such record is written whole (a temp name, then rename) and never
//! flushed: what it describes is a mount, and mounts do not survive a power
//! loss either; a record whose mount is gone is recognised as stale by its
//! reader. Names are a digest of the path, so any path makes one safe name.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a record being written is called until it is renamed into place.
const TEMP_EXTENSION: &str = "tmp";

/// The record name for `key` (a path, a volume id): hex SHA-256.
pub fn name_of(key: impl AsRef<[u8]>) -> String {
    Sha256::digest(key.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The record name for a path.
pub fn name_of_path(path: &Path) -> String {
    name_of(path.as_os_str().as_encoded_bytes())
}

#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    /// The records under `dir`; the directory is made on first write.
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes record `name` whole; the directory is made when missing
    /// (only then: a mkdir on every write costs a syscall per record).
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<()> {
        let file = self.dir.join(name);
        let temp = file.with_extension(TEMP_EXTENSION);
        match std::fs::write(&temp, contents) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir).map_err(Error::io("create", &self.dir))?;
                std::fs::write(&temp, contents)
            }
            written => written,
        }
        .map_err(Error::io("write", &temp))?;
        std::fs::rename(&temp, &file).map_err(Error::io("rename", &temp))
    }

    /// Record `name`, if it exists.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let file = self.dir.join(name);
        match std::fs::read(&file) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &file)(e)),
        }
    }

    /// Removes record `name`; none is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        let file = self.dir.join(name);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &file)(e)),
        }
    }

    /// Every record's contents (temps of interrupted writes left out); none
    /// when the directory does not exist.
    pub fn contents(&self) -> Result<Vec<Vec<u8>>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &self.dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let path = entry.map_err(Error::io("list", &self.dir))?.path();
            if path.extension().is_some() {
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => found.push(bytes),
                // Removed between the listing and the read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", &path)(e)),
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let records = RecordDir::at(dir.path().join("r"));
        assert!(records.contents().unwrap().is_empty());
        let name = name_of_path(Path::new("/k/pods/a/mount"));
        assert_eq!(name.len(), 64);
        assert_eq!(records.read(&name).unwrap(), None);
        records.write(&name, b"one").unwrap();
        records.write(&name, b"two").unwrap();
        std::fs::write(records.path().join("x.tmp"), b"torn").unwrap();
        assert_eq!(records.read(&name).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(records.contents().unwrap(), vec![b"two".to_vec()]);
        records.remove(&name).unwrap();
        records.remove(&name).unwrap();
        assert!(records.contents().unwrap().is_empty());
    }
}
