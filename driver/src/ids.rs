//! Validated names, keys and node ids, shared by every backend. A value of
//! these types is already safe to turn into a path component: no `/`, no
//! `..`, no NUL, bounded length.
//!
//! Volume and snapshot ids are the backends' own formats
//! (`backend::ids`), re-exported here.

use std::fmt;

use sha2::{Digest, Sha256};

pub use crate::backend::ids::{SnapshotId, VolumeId};
use crate::error::{quote, Error};

/// CSI's general limit for strings, ids included (spec.md, "Size Limits").
pub const MAX_ID_LEN: usize = 128;
/// CreateVolume names up to this length are stored verbatim; longer ones
/// are stored under a digest so the id stays within [`MAX_ID_LEN`].
pub const MAX_VERBATIM_NAME_LEN: usize = 48;
/// Longest node id that still leaves room for any volume key in an id.
pub const MAX_NODE_ID_LEN: usize = MAX_ID_LEN - "local::".len() - MAX_VERBATIM_NAME_LEN;
const DIGEST_PREFIX: char = '~';
const DIGEST_HEX_LEN: usize = 32;

/// Characters allowed in names, keys and node ids: what Kubernetes object
/// names use, plus `_` and upper case, and nothing a path could abuse.
fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

pub(crate) fn check_safe(what: &str, value: &str, max_len: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} is required")));
    }
    if value.len() > max_len {
        return Err(Error::InvalidArgument(format!(
            "{what} is {} bytes long; at most {max_len} are allowed",
            value.len()
        )));
    }
    if let Some(bad) = value.chars().find(|c| !is_safe_char(*c)) {
        return Err(Error::InvalidArgument(format!(
            "{what} {} contains {bad:?}; only letters, digits, '-', '_' and '.' are allowed",
            quote(value)
        )));
    }
    if value.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "{what} {} must not start with '.'",
            quote(value)
        )));
    }
    Ok(())
}

/// A CreateVolume name (e.g. `pvc-<uid>` from external-provisioner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        check_safe("name", raw, MAX_ID_LEN)?;
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory name this volume is stored under.
    pub fn key(&self) -> VolumeKey {
        if self.0.len() <= MAX_VERBATIM_NAME_LEN {
            return VolumeKey(self.0.clone());
        }
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        VolumeKey(format!("{DIGEST_PREFIX}{}", &hex[..DIGEST_HEX_LEN]))
    }
}

impl VolumeName {
    /// A directory name for this volume on a shared export: the name itself
    /// when short, else its start and a digest, so ids stay within
    /// [`MAX_ID_LEN`] and different names never share a directory.
    pub fn short_dir_name(&self) -> String {
        if self.0.len() <= MAX_VERBATIM_NAME_LEN {
            return self.0.clone();
        }
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}", &self.0[..MAX_VERBATIM_NAME_LEN - 17])
    }
}

/// The on-disk directory name of a volume: its name, or `~` and a digest
/// of a long name (`~` cannot occur in a name, so the two never collide).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeKey(String);

impl VolumeKey {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if let Some(hex) = raw.strip_prefix(DIGEST_PREFIX) {
            let valid = hex.len() == DIGEST_HEX_LEN
                && hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            if !valid {
                return Err(Error::InvalidArgument(format!(
                    "volume key {raw:?} is not a valid digest key"
                )));
            }
            return Ok(Self(raw.to_string()));
        }
        check_safe("volume key", raw, MAX_VERBATIM_NAME_LEN)?;
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// This node's id, as the kubelet knows it (`spec.nodeName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId(String);

impl NodeId {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        check_safe("node id", raw, MAX_NODE_ID_LEN)?;
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What calls serialize on (`locks.rs`): one key per volume or snapshot,
/// made only from its id, so every call on one volume takes the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockKey(String);

impl LockKey {
    /// Made only by the ids' own `lock_key` methods, from their text.
    pub(crate) fn of_id(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a new volume is filled from (CreateVolume's `volume_content_source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    Snapshot(SnapshotId),
    Volume(VolumeId),
}

impl fmt::Display for ContentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentSource::Snapshot(id) => write!(f, "snapshot {id}"),
            ContentSource::Volume(id) => write!(f, "volume {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::nfs::id::SubDir;

    #[test]
    fn short_names_are_their_own_key() {
        let name = VolumeName::parse("pvc-0b6f5e1c-9b1a-4a8e-8d3c-0c6c3f9f2a11").unwrap();
        assert_eq!(name.key().as_str(), name.as_str());
    }

    #[test]
    fn short_dir_names_are_bounded_and_distinct() {
        let a = VolumeName::parse(&"a".repeat(128))
            .unwrap()
            .short_dir_name();
        let b = VolumeName::parse(&format!("{}b", "a".repeat(127)))
            .unwrap()
            .short_dir_name();
        assert!(a.len() <= MAX_VERBATIM_NAME_LEN && a != b);
        assert!(SubDir::parse(&a).is_ok());
        assert_eq!(
            VolumeName::parse("pvc-1").unwrap().short_dir_name(),
            "pvc-1"
        );
    }

    #[test]
    fn digests_differ_for_different_names() {
        let a = VolumeName::parse(&"a".repeat(100)).unwrap().key();
        let b = VolumeName::parse(&format!("{}b", "a".repeat(99)))
            .unwrap()
            .key();
        assert_ne!(a, b);
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a\0b",
            "../../etc",
            "a b",
            "é",
            "a:b",
            "~abc",
        ] {
            assert!(VolumeName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(VolumeName::parse(&"a".repeat(129)).is_err());
        assert!(VolumeName::parse(&"a".repeat(128)).is_ok());
    }
}
