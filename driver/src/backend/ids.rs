//! Volume and snapshot ids, one variant per backend: each backend owns its
//! format (`local::id`, `nfs::id`), and ids are self-describing — the first
//! tag names the backend — so every call can tell which backend (and, for
//! a local volume, which node) owns a volume without a lookup, and an id
//! that does not parse is refused before it touches storage.
//!
//! An id Cairn never issued names a volume that does not exist: NotFound,
//! which DeleteVolume answers with success (an unknown PV handle must still
//! be releasable). Only a missing one is InvalidArgument. Parsing never
//! touches the filesystem.

use std::fmt;

use super::local::id::{self as local_id, LocalSnapshotId, LocalVolumeId};
use super::nfs::id::{self as nfs_id, NfsSnapshotId, NfsVolumeId};
use super::BackendKind;
use crate::error::{quote, Error};
use crate::ids::{LockKey, NodeId, VolumeKey, MAX_ID_LEN};

/// A parsed, validated volume id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeId {
    /// `local:<node>:<key>`
    Local(LocalVolumeId),
    /// `nfs:<d|r|a>:<port>:<server>#<share>#<subdir>`
    Nfs(NfsVolumeId),
}

/// The NotFound for a string that is no id Cairn issues, quoting a bounded
/// part of it.
fn not_an_id(what: &str, raw: &str, why: &str) -> Error {
    Error::NotFound(format!(
        "{what} {} does not exist: it is not a Cairn {what} id ({why})",
        quote(raw)
    ))
}

/// The checks every id gets before its backend reads it.
fn check_length(what: &str, raw: &str) -> Result<(), Error> {
    if raw.is_empty() {
        return Err(Error::InvalidArgument(format!("{what}_id is required")));
    }
    if raw.len() > MAX_ID_LEN {
        let why = format!(
            "{} bytes long; Cairn ids are at most {MAX_ID_LEN}",
            raw.len()
        );
        return Err(not_an_id(what, raw, &why));
    }
    Ok(())
}

impl VolumeId {
    pub fn local(node: NodeId, key: VolumeKey) -> Self {
        VolumeId::Local(LocalVolumeId { node, key })
    }

    /// Parses a volume id from a request (see the module's comment for the
    /// codes).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        check_length("volume", raw)?;
        let malformed = |why: String| not_an_id("volume", raw, &why);
        let (tag, rest) = raw
            .split_once(':')
            .ok_or_else(|| malformed("expected <backend>:...".into()))?;
        match tag {
            local_id::VOLUME_TAG => LocalVolumeId::parse_rest(rest).map(VolumeId::Local),
            nfs_id::VOLUME_TAG => NfsVolumeId::parse_rest(rest).map(VolumeId::Nfs),
            other => Err(format!("unknown backend {other:?}")),
        }
        .map_err(malformed)
    }

    /// The backend that issued this id.
    pub fn kind(&self) -> BackendKind {
        match self {
            VolumeId::Local(_) => BackendKind::Local,
            VolumeId::Nfs(_) => BackendKind::Nfs,
        }
    }

    /// The key calls on this volume serialize on, whichever call names it
    /// (CreateVolume computes the id first and takes the same one).
    pub fn lock_key(&self) -> LockKey {
        match self {
            VolumeId::Local(id) => id.lock_key(),
            VolumeId::Nfs(id) => id.lock_key(),
        }
    }
}

/// Records keep a volume id as its text; one that does not parse is no
/// record of a volume (the record is unreadable).
impl serde::Serialize for VolumeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for VolumeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        VolumeId::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeId::Local(id) => id.fmt(f),
            VolumeId::Nfs(id) => id.fmt(f),
        }
    }
}

/// A parsed, validated snapshot id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotId {
    /// `snap:<node>:<key>`, the key made from the CreateSnapshot name like
    /// a volume's from its name.
    Local(LocalSnapshotId),
    /// A copy on an NFS export: `nfs-snap:<port>:<server>#<share>#<leaf>`.
    Nfs(NfsSnapshotId),
}

impl SnapshotId {
    pub fn local(node: NodeId, key: VolumeKey) -> Self {
        SnapshotId::Local(LocalSnapshotId { node, key })
    }

    /// Like a volume id: what Cairn never issued does not exist.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        check_length("snapshot", raw)?;
        let (tag, rest) = raw.split_once(':').unwrap_or((raw, ""));
        match tag {
            nfs_id::NFS_SNAPSHOT_TAG => NfsSnapshotId::parse(rest).map(SnapshotId::Nfs),
            local_id::SNAPSHOT_TAG => LocalSnapshotId::parse_rest(rest)
                .map(SnapshotId::Local)
                .map_err(|why| not_an_id("snapshot", raw, &why)),
            _ => Err(not_an_id(
                "snapshot",
                raw,
                &format!("expected {}:<node>:<snapshot>", local_id::SNAPSHOT_TAG),
            )),
        }
    }

    /// The backend that issued this id.
    pub fn kind(&self) -> BackendKind {
        match self {
            SnapshotId::Local(_) => BackendKind::Local,
            SnapshotId::Nfs(_) => BackendKind::Nfs,
        }
    }

    /// The key calls on this snapshot serialize on; never equal to a
    /// volume's (a local volume's has no `:`, an NFS volume's starts
    /// `nfs:`, a snapshot's `snap:` or `nfs-snap:`).
    pub fn lock_key(&self) -> LockKey {
        match self {
            SnapshotId::Local(id) => id.lock_key(),
            SnapshotId::Nfs(id) => id.lock_key(),
        }
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotId::Local(id) => id.fmt(f),
            SnapshotId::Nfs(id) => id.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{VolumeName, MAX_NODE_ID_LEN, MAX_VERBATIM_NAME_LEN};

    #[test]
    fn long_names_get_a_digest_key_that_fits_in_an_id() {
        let name = VolumeName::parse(&"a".repeat(128)).unwrap();
        let key = name.key();
        assert!(key.as_str().starts_with('~'));
        let node = NodeId::parse(&"n".repeat(MAX_NODE_ID_LEN)).unwrap();
        let id = VolumeId::local(node, key).to_string();
        assert!(id.len() <= MAX_ID_LEN, "{} bytes", id.len());
        assert_eq!(VolumeId::parse(&id).unwrap().to_string(), id);
    }

    #[test]
    fn ids_round_trip() {
        let id = VolumeId::parse("local:node-a:pvc-1").unwrap();
        let VolumeId::Local(local) = &id else {
            panic!("{id:?}")
        };
        assert_eq!(local.node.as_str(), "node-a");
        assert_eq!(local.key.as_str(), "pvc-1");
        assert_eq!(id.to_string(), "local:node-a:pvc-1");
        for raw in [
            "nfs:d:2049:10.0.0.5#/exports/k8s#pvc-1",
            "nfs:a:20490:fd00::5#/#team/pvc-1",
            "nfs:r:2049:nfs.example.com#/srv#a/b/c",
        ] {
            assert_eq!(VolumeId::parse(raw).unwrap().to_string(), raw);
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "pvc-1",
            "local:node-a",
            "nfs:node-a:pvc-1",
            "nfs:x:2049:h#/e#v",
            "nfs:d:0:h#/e#v",
            "nfs:d:2049:h#e#v",
            "nfs:d:2049:h#/e#../v",
            "nfs:d:2049:h#/e#/v",
            "nfs:d:2049:h#/e/../x#v",
            "nfs:d:2049:h#/e#v#x",
            "nfs:d:2049:h#/e#.hidden",
            "nfs:d:2049:h/x#/e#v",
            "nfs:d:2049:h#/e#a//b",
            "local:node-a:../x",
            "local:node-a:..",
            "local:node/a:pvc",
            "local::pvc",
            "local:node-a:",
            "local:node-a:a:b",
            "local:node-a:~zz",
            "local:node-a:~0123456789ABCDEF0123456789abcdef",
            "local:node-a:pvc\0",
        ] {
            let code = VolumeId::parse(bad).expect_err(bad).code();
            // An id Cairn never issued names no volume; only a missing one
            // is a bad request.
            let expected = if bad.is_empty() {
                tonic::Code::InvalidArgument
            } else {
                tonic::Code::NotFound
            };
            assert_eq!(code, expected, "{bad:?}");
        }
        let long = format!("local:n:{}", "a".repeat(100_000));
        let err = VolumeId::parse(&long).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(
            err.to_string().len() < 400,
            "the message quotes the whole id"
        );
    }

    #[test]
    fn nfs_snapshot_ids_round_trip_and_hostile_ones_are_refused() {
        let raw = "nfs-snap:2049:127.0.0.1#/export#snap-1";
        let id = SnapshotId::parse(raw).unwrap();
        assert!(matches!(&id, SnapshotId::Nfs(n) if n.leaf == "snap-1"));
        assert_eq!(id.to_string(), raw);
        for bad in [
            "nfs-snap:2049:127.0.0.1#/export#../x",
            "nfs-snap:2049:127.0.0.1#/export#a/b",
            "nfs-snap:0:127.0.0.1#/export#s",
            "nfs-snap:2049:127.0.0.1#export#s",
            "nfs-snap:2049:127.0.0.1#/export",
            "nfs-snap:2049:127.0.0.1#/export#s#t",
            "nfs-snap:2049:127.0.0.1#/export#.hidden",
            "nfs-snap:2049:127.0.0.1#/../etc#s",
        ] {
            assert!(SnapshotId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshot_ids_round_trip_and_fit() {
        let id = SnapshotId::parse("snap:node-a:snapshot-1").unwrap();
        assert_eq!(id.to_string(), "snap:node-a:snapshot-1");
        assert_eq!(id.lock_key().as_str(), "snap:snapshot-1");
        let node = NodeId::parse(&"n".repeat(MAX_NODE_ID_LEN)).unwrap();
        for name in ["s".repeat(MAX_VERBATIM_NAME_LEN), "s".repeat(128)] {
            let key = VolumeName::parse(&name).unwrap().key();
            let id = SnapshotId::local(node.clone(), key).to_string();
            assert!(id.len() <= MAX_ID_LEN, "{} bytes", id.len());
            assert_eq!(SnapshotId::parse(&id).unwrap().to_string(), id);
        }
    }

    #[test]
    fn malformed_snapshot_ids_are_refused() {
        for bad in [
            "",
            "snap",
            "snap:node-a",
            "snap:node-a:",
            "snap::s",
            "local:node-a:s",
            "snap:node-a:../x",
            "snap:node-a:..",
            "snap:node/a:s",
            "snap:node-a:a:b",
            "snap:node-a:~zz",
            "snap:node-a:s\0",
            "SNAP:node-a:s",
        ] {
            let code = SnapshotId::parse(bad).expect_err(bad).code();
            let expected = if bad.is_empty() {
                tonic::Code::InvalidArgument
            } else {
                tonic::Code::NotFound
            };
            assert_eq!(code, expected, "{bad:?}");
        }
        assert_eq!(
            SnapshotId::parse(&format!("snap:n:{}", "a".repeat(200)))
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
    }
}
