//! The NFS backend's id formats. A volume's id carries everything needed
//! to find it again without a lookup —
//! `nfs:<d|r|a>:<port>:<server>#<share>#<subdir>`, the letter saying what
//! DeleteVolume does to its directory — and a snapshot's
//! `nfs-snap:<port>:<server>#<share>#<leaf>`.

use std::fmt;

use crate::error::{quote, Error};
use crate::ids::{check_safe, LockKey, VolumeName, MAX_ID_LEN};

/// The first tag of an NFS volume's id.
pub const VOLUME_TAG: &str = "nfs";

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

impl NfsVolumeId {
    /// Parses what follows `nfs:`; why not, when it is not an NFS volume id.
    pub fn parse_rest(rest: &str) -> Result<Self, String> {
        let shape = || "expected nfs:<d|r|a>:<port>:<server>#<share>#<subdir>".to_string();
        let mut head = rest.splitn(3, ':');
        let (Some(policy), Some(port), Some(location)) = (head.next(), head.next(), head.next())
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
        Ok(Self {
            server: NfsServer::parse(server).map_err(|e| e.to_string())?,
            port,
            share: SharePath::parse(share).map_err(|e| e.to_string())?,
            subdir: SubDir::parse(subdir).map_err(|e| e.to_string())?,
            on_delete,
        })
    }

    /// Calls on an NFS volume serialize on its whole id (server, share and
    /// directory: two exports may hold the same subDir).
    pub fn lock_key(&self) -> LockKey {
        LockKey::of_id(self.to_string())
    }
}

impl fmt::Display for NfsVolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VOLUME_TAG}:{}:{}:{}#{}#{}",
            self.on_delete.tag(),
            self.port,
            self.server.as_str(),
            self.share.as_str(),
            self.subdir.as_str()
        )
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

impl NfsSnapshotId {
    /// Never equal to a volume's (`nfs:`), nor a local snapshot's (`snap:`).
    pub fn lock_key(&self) -> LockKey {
        LockKey::of_id(self.to_string())
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
        assert!(NfsVolumeId::parse_rest("a:01:0#/a#a").is_err());
        assert!(NfsSnapshotId::parse("+2049:127.0.0.1#/export#s").is_err());
    }
}
