//! Cairn's records are small JSON files: a volume's and a snapshot's
//! `meta.json`, a block volume's attachments, the node's publication
//! records, the records on NFS exports. One place encodes them and reads
//! them back, so every record is written the same way and a corrupt one is
//! reported the same way: Internal, naming what it is and where.

use std::fmt::Display;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The bytes of `record` (indented: operators read these files).
pub fn encode<T: Serialize>(record: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(record).map_err(|e| Error::Internal(format!("encode {what}: {e}")))
}

/// The record in `bytes`, read from `place`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str, place: impl Display) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("corrupt {what} {place}: {e}")))
}

/// The record in the file at `path`; `None` when there is no such file.
pub fn read_file<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path)(e)),
    };
    decode(&bytes, what, path.display()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_a_missing_one_is_none_and_a_corrupt_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        assert_eq!(read_file::<Vec<u32>>(&path, "test record").unwrap(), None);
        std::fs::write(&path, encode(&vec![1u32, 2], "test record").unwrap()).unwrap();
        assert_eq!(
            read_file::<Vec<u32>>(&path, "test record").unwrap(),
            Some(vec![1, 2])
        );
        std::fs::write(&path, b"{torn").unwrap();
        let err = read_file::<Vec<u32>>(&path, "test record").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.to_string().contains("corrupt test record"), "{err}");
        assert!(err.to_string().contains("meta.json"), "{err}");
    }
}
