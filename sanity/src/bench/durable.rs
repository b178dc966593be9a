//! The durable writes a crash-safe driver cannot skip, with no driver: at
//! create, the volume's directory and a small record of it are made, the
//! record is flushed (fsync) and then its directory, so both entries survive
//! a crash once the call is answered; at delete, the record and directory
//! go and the directory is flushed again. Two fsyncs at create and one at
//! delete is the least such a driver can do per volume.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// A directory holding volumes and their records side by side, so one
/// directory fsync makes both new entries durable.
pub struct Records {
    dir: PathBuf,
    /// Kept open: flushing a directory needs a handle on it, and opening it
    /// per call would add a path lookup no driver needs to make.
    handle: File,
}

impl Records {
    /// Creates `dir` if needed and opens it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            handle: File::open(dir)?,
        })
    }

    /// CreateVolume's floor: makes the volume's directory and its record
    /// durable, and returns the directory (what is then mounted).
    pub fn create(&self, name: &str) -> io::Result<PathBuf> {
        let volume = self.dir.join(name);
        fs::create_dir(&volume)?;
        let mut record = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.record(name))?;
        record.write_all(record_text(name).as_bytes())?;
        record.sync_all()?;
        self.handle.sync_all()?;
        Ok(volume)
    }

    /// DeleteVolume's floor: removes the record and the (empty, unmounted)
    /// directory, and makes their removal durable.
    pub fn delete(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.record(name))?;
        fs::remove_dir(self.dir.join(name))?;
        self.handle.sync_all()
    }

    fn record(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }
}

/// About the size of what a driver records of a volume: its name, size,
/// parameters and a version.
fn record_text(name: &str) -> String {
    format!(
        "{{\"version\":1,\"name\":\"{name}\",\"capacity_bytes\":1048576,\
         \"access_type\":\"mount\",\"parameters\":{{}},\"created_by\":\"cairn-bench floor\"}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_delete_leaves_the_directory_empty() {
        let dir = std::env::temp_dir().join(format!("cairn-bench-durable-{}", std::process::id()));
        let records = Records::open(&dir).unwrap();
        let volume = records.create("v1").unwrap();
        assert!(volume.is_dir());
        let text = fs::read_to_string(dir.join("v1.json")).unwrap();
        assert!(text.contains("\"name\":\"v1\""), "{text}");
        // A name is created once: a second create must not reuse it silently.
        assert!(records.create("v1").is_err());
        records.delete("v1").unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert!(records.delete("v1").is_err());
        fs::remove_dir(&dir).unwrap();
    }
}
