//! Validated names and ids. A value of these types is already safe to turn
//! into a path component: no `/`, no `..`, no NUL, bounded length.
//!
//! Volume ids are self-describing — `local:<node>:<key>` — so every call can
//! tell which backend and node own a volume without a lookup, and an id that
//! does not parse is refused before it touches the disk.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::backend::BackendKind;
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

fn check_safe(what: &str, value: &str, max_len: usize) -> Result<(), Error> {
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

/// A local volume's id: the node that holds it and its directory key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVolumeId {
    pub node: NodeId,
    pub key: VolumeKey,
}

/// What DeleteVolume does to an NFS volume's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// Remove the directory and everything in it.
    Delete,
    /// Leave the directory as it is.
    Retain,
    /// Rename it out of the way, with a timestamp.
    Archive,
}

impl OnDelete {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "delete" => Ok(OnDelete::Delete),
            "retain" => Ok(OnDelete::Retain),
            "archive" => Ok(OnDelete::Archive),
            other => Err(Error::InvalidArgument(format!(
                "onDelete {other:?} must be delete, retain or archive"
            ))),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            OnDelete::Delete => "d",
            OnDelete::Retain => "r",
            OnDelete::Archive => "a",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        match tag {
            "d" => Some(OnDelete::Delete),
            "r" => Some(OnDelete::Retain),
            "a" => Some(OnDelete::Archive),
            _ => None,
        }
    }
}

/// An NFS server: a host name or an IP address (IPv6 without brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsServer(String);

impl NfsServer {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let valid = !raw.is_empty()
            && raw.len() <= 253
            && !raw.starts_with('-')
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "server {raw:?} must be a host name or an IP address"
            )));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server as it stands before a port or path: an IPv6 address in
    /// brackets (`[fd00::5]`), anything else as it is.
    pub fn host(&self) -> String {
        if self.0.contains(':') {
            format!("[{}]", self.0)
        } else {
            self.0.clone()
        }
    }
}

/// A relative path of safe components: no `..`, no leading `/` or `.`.
fn check_components(what: &str, raw: &str) -> Result<(), Error> {
    if raw
        .split('/')
        .any(|c| check_safe(what, c, MAX_ID_LEN).is_err())
    {
        return Err(Error::InvalidArgument(format!(
            "{what} {raw:?} must be made of names of letters, digits, '-', '_' and '.' \
             separated by '/', none empty or starting with '.'"
        )));
    }
    Ok(())
}

/// The exported path on the NFS server, e.g. `/exports/k8s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePath(String);

impl SharePath {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let rest = raw.strip_prefix('/').ok_or_else(|| {
            Error::InvalidArgument(format!("share {raw:?} must be an absolute path"))
        })?;
        if !rest.is_empty() {
            check_components("share", rest)?;
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A volume's directory below its share, e.g. `pvc-1` or `team/pvc-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubDir(String);

impl SubDir {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::InvalidArgument("subDir must not be empty".into()));
        }
        check_components("subDir", raw)?;
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// An NFS volume's id: everything needed to find the volume again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsVolumeId {
    pub server: NfsServer,
    pub port: u16,
    pub share: SharePath,
    pub subdir: SubDir,
    pub on_delete: OnDelete,
}

/// A parsed, validated volume id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeId {
    /// `local:<node>:<key>`
    Local(LocalVolumeId),
    /// `nfs:<d|r|a>:<port>:<server>#<share>#<subdir>`
    Nfs(NfsVolumeId),
}

impl VolumeId {
    pub fn local(node: NodeId, key: VolumeKey) -> Self {
        VolumeId::Local(LocalVolumeId { node, key })
    }

    /// Parses a volume id from a request. Empty is InvalidArgument (a
    /// required field is missing); anything else that is not an id Cairn
    /// issues names a volume that does not exist: NotFound, which
    /// DeleteVolume answers with success (an unknown PV handle must still
    /// be releasable). Parsing never touches the filesystem.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::InvalidArgument("volume_id is required".into()));
        }
        let malformed = |why: String| {
            Error::NotFound(format!(
                "volume {} does not exist: it is not a Cairn volume id ({why})",
                quote(raw)
            ))
        };
        if raw.len() > MAX_ID_LEN {
            return Err(malformed(format!(
                "{} bytes long; Cairn ids are at most {MAX_ID_LEN}",
                raw.len()
            )));
        }
        let (tag, rest) = raw
            .split_once(':')
            .ok_or_else(|| malformed("expected <backend>:...".into()))?;
        match tag {
            "local" => {
                let (node, key) = rest
                    .split_once(':')
                    .ok_or_else(|| malformed("expected local:<node>:<volume>".into()))?;
                let node = NodeId::parse(node).map_err(|e| malformed(e.to_string()))?;
                let key = VolumeKey::parse(key).map_err(|e| malformed(e.to_string()))?;
                Ok(Self::local(node, key))
            }
            "nfs" => {
                let shape =
                    || malformed("expected nfs:<d|r|a>:<port>:<server>#<share>#<subdir>".into());
                let mut head = rest.splitn(3, ':');
                let (Some(policy), Some(port), Some(location)) =
                    (head.next(), head.next(), head.next())
                else {
                    return Err(shape());
                };
                let on_delete = OnDelete::from_tag(policy).ok_or_else(shape)?;
                let port = parse_port(port).ok_or_else(shape)?;
                let mut parts = location.split('#');
                let (Some(server), Some(share), Some(subdir), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(shape());
                };
                Ok(VolumeId::Nfs(NfsVolumeId {
                    server: NfsServer::parse(server).map_err(|e| malformed(e.to_string()))?,
                    port,
                    share: SharePath::parse(share).map_err(|e| malformed(e.to_string()))?,
                    subdir: SubDir::parse(subdir).map_err(|e| malformed(e.to_string()))?,
                    on_delete,
                }))
            }
            other => Err(malformed(format!("unknown backend {other:?}"))),
        }
    }

    /// The key calls on this volume serialize on, whichever call names it
    /// (CreateVolume computes the id first and takes the same one).
    /// The backend that issued this id.
    pub fn kind(&self) -> BackendKind {
        match self {
            VolumeId::Local(_) => BackendKind::Local,
            VolumeId::Nfs(_) => BackendKind::Nfs,
        }
    }

    pub fn lock_key(&self) -> LockKey {
        match self {
            VolumeId::Local(id) => LockKey(id.key.to_string()),
            VolumeId::Nfs(_) => LockKey(self.to_string()),
        }
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeId::Local(id) => write!(f, "local:{}:{}", id.node, id.key),
            VolumeId::Nfs(id) => write!(
                f,
                "nfs:{}:{}:{}#{}#{}",
                id.on_delete.tag(),
                id.port,
                id.server.as_str(),
                id.share.as_str(),
                id.subdir.as_str()
            ),
        }
    }
}

/// The first tag of an NFS snapshot's id.
pub const NFS_SNAPSHOT_TAG: &str = "nfs-snap";

/// A port as Cairn writes it into ids: 1-65535 in plain decimal. Another
/// spelling of the same number ("01", "+1") is not an id Cairn issued, and
/// reading it as one would give one volume two ids.
fn parse_port(text: &str) -> Option<u16> {
    let canonical =
        !text.is_empty() && !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit());
    canonical.then(|| text.parse::<u16>().ok()).flatten()
}

/// An NFS snapshot's id: `nfs-snap:<port>:<server>#<share>#<leaf>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsSnapshotId {
    pub server: NfsServer,
    pub port: u16,
    pub share: SharePath,
    /// The snapshot's directory name under the share's `.cairn-snapshots/`.
    pub leaf: String,
}

impl NfsSnapshotId {
    /// Parses the part after `nfs-snap:`.
    pub fn parse(rest: &str) -> Result<Self, Error> {
        let malformed = || {
            Error::NotFound(format!(
                "snapshot {} does not exist: it is not a Cairn NFS snapshot id \
                 ({NFS_SNAPSHOT_TAG}:<port>:<server>#<share>#<name>)",
                quote(&format!("{NFS_SNAPSHOT_TAG}:{rest}"))
            ))
        };
        let (port, location) = rest.split_once(':').ok_or_else(malformed)?;
        let port = parse_port(port).ok_or_else(malformed)?;
        let mut parts = location.split('#');
        let (Some(server), Some(share), Some(leaf), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        // A leaf is what `short_dir_name` makes of a valid name.
        VolumeName::parse(leaf).map_err(|_| malformed())?;
        Ok(Self {
            server: NfsServer::parse(server).map_err(|_| malformed())?,
            port,
            share: SharePath::parse(share).map_err(|_| malformed())?,
            leaf: leaf.to_string(),
        })
    }
}

impl fmt::Display for NfsSnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{NFS_SNAPSHOT_TAG}:{}:{}#{}#{}",
            self.port,
            self.server.as_str(),
            self.share.as_str(),
            self.leaf
        )
    }
}

/// A local snapshot's id: the node that holds it and its directory key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSnapshotId {
    pub node: NodeId,
    pub key: VolumeKey,
}

/// A parsed, validated snapshot id: `snap:<node>:<key>`, the key made from
/// the CreateSnapshot name like a volume's from its name. (Not
/// `snap:local:...`: with the longest node id and key that would exceed
/// [`MAX_ID_LEN`]; another kind of snapshot gets another first tag.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotId {
    Local(LocalSnapshotId),
    /// A copy on an NFS export: `nfs-snap:<port>:<server>#<share>#<leaf>`.
    Nfs(NfsSnapshotId),
}

const SNAPSHOT_TAG: &str = "snap";

impl SnapshotId {
    pub fn local(node: NodeId, key: VolumeKey) -> Self {
        SnapshotId::Local(LocalSnapshotId { node, key })
    }

    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::InvalidArgument("snapshot_id is required".into()));
        }
        // Like a volume id: what Cairn never issued does not exist.
        let malformed = |why: String| {
            Error::NotFound(format!(
                "snapshot {} does not exist: it is not a Cairn snapshot id ({why})",
                quote(raw)
            ))
        };
        if raw.len() > MAX_ID_LEN {
            return Err(malformed(format!(
                "{} bytes long; Cairn ids are at most {MAX_ID_LEN}",
                raw.len()
            )));
        }
        if let Some(rest) = raw
            .strip_prefix(NFS_SNAPSHOT_TAG)
            .and_then(|r| r.strip_prefix(':'))
        {
            return NfsSnapshotId::parse(rest).map(SnapshotId::Nfs);
        }
        let mut parts = raw.splitn(3, ':');
        let (Some(SNAPSHOT_TAG), Some(node), Some(key)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(format!(
                "expected {SNAPSHOT_TAG}:<node>:<snapshot>"
            )));
        };
        let node = NodeId::parse(node).map_err(|e| malformed(e.to_string()))?;
        let key = VolumeKey::parse(key).map_err(|e| malformed(e.to_string()))?;
        Ok(Self::local(node, key))
    }

    /// The key calls on this snapshot serialize on; never equal to a
    /// volume's (a local volume's has no `:`, an NFS volume's starts
    /// `nfs:`, a snapshot's `snap:` or `nfs-snap:`).
    /// The backend that issued this id.
    pub fn kind(&self) -> BackendKind {
        match self {
            SnapshotId::Local(_) => BackendKind::Local,
            SnapshotId::Nfs(_) => BackendKind::Nfs,
        }
    }

    pub fn lock_key(&self) -> LockKey {
        match self {
            SnapshotId::Local(id) => LockKey(format!("{SNAPSHOT_TAG}:{}", id.key)),
            SnapshotId::Nfs(_) => LockKey(self.to_string()),
        }
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotId::Local(id) => write!(f, "{SNAPSHOT_TAG}:{}:{}", id.node, id.key),
            SnapshotId::Nfs(id) => id.fmt(f),
        }
    }
}

/// What calls serialize on (`locks.rs`): one key per volume or snapshot,
/// made only from its id, so every call on one volume takes the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockKey(String);

impl LockKey {
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

    #[test]
    fn ports_in_ids_have_one_spelling() {
        assert_eq!(parse_port("2049"), Some(2049));
        assert_eq!(parse_port("65535"), Some(65535));
        for other in ["", "0", "01", "+1", "65536", " 1", "1 "] {
            assert_eq!(parse_port(other), None, "{other:?}");
        }
        assert!(VolumeId::parse("nfs:a:01:0#/a#a").is_err());
        assert!(SnapshotId::parse("nfs-snap:+2049:127.0.0.1#/export#s").is_err());
    }

    #[test]
    fn short_names_are_their_own_key() {
        let name = VolumeName::parse("pvc-0b6f5e1c-9b1a-4a8e-8d3c-0c6c3f9f2a11").unwrap();
        assert_eq!(name.key().as_str(), name.as_str());
    }

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
