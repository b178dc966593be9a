//! The controller's NFS client: the share is reached from userspace (no
//! kernel mount, no privileges, nothing left behind if we crash), and every
//! operation is bounded by a deadline so a dead server costs a timeout,
//! never a stuck call.

use std::future::Future;
use std::io::ErrorKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nfs_rs::{Mount, NfsError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::id::{NfsServer, SharePath};
use crate::error::{Error, Result};
use crate::json_record;

/// Object types in NFSv3 and NFSv4 attributes (ftype3 / nfs_ftype4 agree).
const TYPE_REGULAR: u32 = 1;
const TYPE_DIRECTORY: u32 = 2;
const TYPE_SYMLINK: u32 = 5;
/// Bytes gathered before one committed write while copying a file.
const COPY_CHUNK: usize = 4 << 20;
/// The largest record file we ever read.
const MAX_RECORD: u32 = 64 * 1024;

/// What [`Share::copy_tree`] copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyCount {
    pub files: u64,
    /// Bytes of the regular files copied.
    pub bytes: u64,
    /// Devices, fifos and sockets, which a copy over NFS cannot recreate.
    pub skipped: u64,
}

/// What a path names, as far as the records care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Other,
}

pub(super) struct Entry {
    pub name: String,
    kind: u32,
    mode: u32,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == TYPE_DIRECTORY
    }

    pub fn is_file(&self) -> bool {
        self.kind == TYPE_REGULAR
    }
}

/// An open connection to one share.
pub struct Share {
    mount: Box<dyn Mount>,
    label: String,
    deadline: Duration,
}

/// Versions the controller tries, in order, when the mount options name
/// none: 4.1, then 3 (through rpcbind).
const DEFAULT_VERSIONS: &[&str] = &["4.1", "3"];

fn url(server: &NfsServer, port: u16, share: &SharePath, version: &str) -> String {
    let host = server.host();
    format!(
        "nfs://{host}:{port}{}?nfsport={port}&version={version}",
        share.as_str()
    )
}

/// Whether what was addressed is not there: never was, or was removed
/// while we held its handle (a concurrent delete between LOOKUP and READ
/// answers STALE, not NOENT).
fn is_gone(err: &NfsError) -> bool {
    err.is_not_found()
        || matches!(
            err,
            NfsError::Nfs3(nfs_rs::Nfs3ErrorCode::NFS3ERR_STALE)
                | NfsError::Nfs4(nfs_rs::Nfs4ErrorCode::NFS4ERR_STALE)
        )
}

/// Whether a path named a file where a directory had to be, or the other
/// way round (NOTDIR, ISDIR): for a read, there is no file at that path.
fn is_wrong_kind(err: &NfsError) -> bool {
    use nfs_rs::{Nfs3ErrorCode as V3, Nfs4ErrorCode as V4};
    matches!(
        err,
        NfsError::Nfs3(V3::NFS3ERR_NOTDIR | V3::NFS3ERR_ISDIR)
            | NfsError::Nfs4(V4::NFS4ERR_NOTDIR | V4::NFS4ERR_ISDIR)
    )
}

/// How the caller can act on an NFS failure: the one place NFS client
/// errors become the driver's error codes.
fn classify(err: &NfsError) -> fn(String) -> Error {
    if is_gone(err) {
        return Error::NotFound;
    }
    match err.kind() {
        ErrorKind::PermissionDenied => Error::PermissionDenied,
        ErrorKind::NotFound => Error::NotFound,
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::TimedOut
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => Error::Unavailable,
        _ if err.is_connection_lost() || err.is_server_busy() => Error::Unavailable,
        _ => Error::Internal,
    }
}

/// Maps an NFS failure to the code the caller can act on.
fn map_error(label: &str, action: &str, err: NfsError) -> Error {
    classify(&err)(format!("NFS {label}: {action}: {err}"))
}

/// Which failure of several connection attempts (one per version) the
/// caller hears of: a server's own answer (no permission, no such export)
/// says more than a refused connection, which says more than the rest. A
/// server that only refused or was unreachable is Unavailable: retry later.
fn first_telling(failures: Vec<Error>) -> Error {
    let rank = |e: &Error| match e {
        Error::PermissionDenied(_) | Error::NotFound(_) => 0,
        Error::Unavailable(_) => 1,
        _ => 2,
    };
    let messages: Vec<String> = failures.iter().map(ToString::to_string).collect();
    let chosen = failures
        .into_iter()
        .min_by_key(rank)
        .unwrap_or_else(|| Error::Internal("no NFS version to try".into()));
    let message = messages.join("; ");
    match chosen {
        Error::PermissionDenied(_) => Error::PermissionDenied(message),
        Error::NotFound(_) => Error::NotFound(message),
        Error::Unavailable(_) => Error::Unavailable(message),
        _ => Error::Internal(message),
    }
}

/// Resolves the server's name before the client (or mount.nfs) does: a
/// name that does not resolve (a typo, DNS down) reaches us from them only
/// as words, which differ by version and setup, and is as unreachable as a
/// refused connection.
pub(super) async fn resolve(label: &str, server: &NfsServer, port: u16) -> Result<()> {
    let found = tokio::net::lookup_host((server.as_str(), port))
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "NFS {label}: cannot resolve {}: {e}",
                server.as_str()
            ))
        })?;
    if found.count() == 0 {
        return Err(Error::Unavailable(format!(
            "NFS {label}: {} resolves to no address",
            server.as_str()
        )));
    }
    Ok(())
}

async fn bounded<T>(
    label: &str,
    action: &str,
    deadline: Duration,
    work: impl Future<Output = nfs_rs::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result.map_err(|e| map_error(label, action, e)),
        Err(_) => Err(Error::Unavailable(format!(
            "NFS {label}: {action}: no answer within {deadline:?}"
        ))),
    }
}

/// A temporary name beside `path` that is this call's own (pid and time in
/// nanoseconds): several nodes' plugins, each pid 1 of its container, may
/// write one record at once.
/// It starts with '.', which no volume's directory or record name does.
fn temp_name(path: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (parent, leaf) = match path.rsplit_once('/') {
        Some((parent, leaf)) => (format!("{parent}/"), leaf),
        None => (String::new(), path),
    };
    format!("{parent}.{leaf}.tmp-{}-{nanos}", std::process::id())
}

impl Share {
    pub async fn connect(
        server: &NfsServer,
        port: u16,
        share: &SharePath,
        version: Option<&str>,
        deadline: Duration,
    ) -> Result<Self> {
        let label = format!("{}:{}", server.as_str(), share.as_str());
        let versions = version.map_or(DEFAULT_VERSIONS.to_vec(), |v| vec![v]);
        // One version at a time, so each failure keeps its kind (the
        // client's own fallback joins them into one string).
        let attempts = async {
            resolve(&label, server, port).await?;
            let mut failures = Vec::new();
            for version in versions {
                let url = url(server, port, share, version);
                match nfs_rs::parse_url_and_mount(&url).await {
                    Ok(mount) => return Ok(mount),
                    Err(e) => {
                        failures.push(map_error(&label, &format!("connect (NFS {version})"), e))
                    }
                }
            }
            Err(first_telling(failures))
        };
        let mount = match tokio::time::timeout(deadline, attempts).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "NFS {label}: connect: no answer within {deadline:?}"
                )))
            }
        };
        Ok(Self {
            mount,
            label,
            deadline,
        })
    }

    async fn call<T>(
        &self,
        action: &str,
        work: impl Future<Output = nfs_rs::Result<T>>,
    ) -> Result<T> {
        bounded(&self.label, action, self.deadline, work).await
    }

    /// Creates `path` and any missing parents with `mode`. Returns whether
    /// the last directory was created (false: it already existed).
    pub async fn mkdir_all(&self, path: &str, mode: u32) -> Result<bool> {
        let mut current = String::new();
        let mut created = false;
        for component in path.split('/') {
            if !current.is_empty() {
                current.push('/');
            }
            current.push_str(component);
            created = match self.mount.mkdir_path(&current, mode).await {
                Ok(_) => true,
                Err(e) if e.is_exist() => false,
                Err(e) => return Err(map_error(&self.label, &format!("mkdir {current}"), e)),
            };
        }
        Ok(created)
    }

    /// Creates the one directory `path` (its parent must exist). Returns
    /// whether this call created it (false: it already existed); MKDIR is
    /// exclusive on the server, so of two callers only one gets true.
    pub async fn mkdir(&self, path: &str, mode: u32) -> Result<bool> {
        match self.mount.mkdir_path(path, mode).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_exist() => Ok(false),
            Err(e) => Err(map_error(&self.label, &format!("mkdir {path}"), e)),
        }
    }

    /// Whether the directory `path` holds no entries at all.
    pub async fn is_empty_dir(&self, path: &str) -> Result<bool> {
        Ok(self.entries(path).await?.is_empty())
    }

    /// Writes a file whole under `path` only if nothing is there: the
    /// contents go to a temporary name of this call's own, which is then
    /// hard-linked to `path` (LINK fails when the name exists, on every
    /// server, where CREATE's exclusive modes vary by version). Returns
    /// false, writing nothing, when `path` already exists.
    pub async fn write_new(&self, path: &str, contents: Vec<u8>) -> Result<bool> {
        let temp = temp_name(path);
        let file = self
            .call("create", self.mount.create_path(&temp, Some(0o600)))
            .await?;
        let written = self
            .call(
                "write",
                nfs_rs::write_all(&*self.mount, file.fh.clone(), 0, Bytes::from(contents)),
            )
            .await;
        let _ = self.mount.close(file.fh).await;
        let linked = match written {
            Ok(_) => match self.mount.link_path(&temp, path).await {
                Ok(_) => Ok(true),
                Err(e) if e.is_exist() => Ok(false),
                Err(e) => Err(map_error(&self.label, &format!("link {path}"), e)),
            },
            Err(e) => Err(e),
        };
        self.remove_file(&temp).await?;
        linked
    }

    /// Whether `path` exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.mount.lookup_path(path).await {
            Ok(_) => Ok(true),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(map_error(&self.label, &format!("lookup {path}"), e)),
        }
    }

    /// What is at `path`, `None` when nothing is.
    pub async fn kind(&self, path: &str) -> Result<Option<Kind>> {
        match self.mount.getattr_path(path).await {
            Ok(attr) => Ok(Some(match attr.type_ {
                TYPE_DIRECTORY => Kind::Directory,
                TYPE_REGULAR => Kind::File,
                _ => Kind::Other,
            })),
            Err(e) if is_gone(&e) || is_wrong_kind(&e) => Ok(None),
            Err(e) => Err(map_error(&self.label, &format!("getattr {path}"), e)),
        }
    }

    /// A small file's contents, `None` when there is no file at `path`
    /// (nothing, or a directory, or a file where a parent should be).
    pub async fn read_small(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.mount.read_path(path, 0, MAX_RECORD).await {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(e) if is_gone(&e) || is_wrong_kind(&e) => Ok(None),
            Err(e) => Err(map_error(&self.label, &format!("read {path}"), e)),
        }
    }

    /// A small JSON record, `None` when the file does not exist.
    pub async fn read_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let Some(bytes) = self.read_small(path).await? else {
            return Ok(None);
        };
        json_record::decode(&bytes, "record", format_args!("{path} on {}", self.label)).map(Some)
    }

    /// Writes a JSON record whole ([`Self::write_atomic`]).
    pub async fn write_json<T: Serialize>(&self, path: &str, record: &T) -> Result<()> {
        let bytes = json_record::encode(record, path)?;
        self.write_atomic(path, bytes).await
    }

    /// Writes a JSON record only if none is there ([`Self::write_new`]).
    pub async fn write_json_new<T: Serialize>(&self, path: &str, record: &T) -> Result<bool> {
        let bytes = json_record::encode(record, path)?;
        self.write_new(path, bytes).await
    }

    /// Writes a file whole: a temporary name first, then a rename, so a
    /// reader sees the old contents or the new, never half. The temporary
    /// name is this call's own (pid and time in nanoseconds): several nodes'
    /// plugins, each pid 1 of its container, may write one record at once
    /// (every node's resizer expanding one volume); the last rename wins.
    pub async fn write_atomic(&self, path: &str, contents: Vec<u8>) -> Result<()> {
        let temp = temp_name(path);
        let file = self
            .call("create", self.mount.create_path(&temp, Some(0o600)))
            .await?;
        self.call(
            "write",
            nfs_rs::write_all(&*self.mount, file.fh.clone(), 0, Bytes::from(contents)),
        )
        .await?;
        let _ = self.mount.close(file.fh).await;
        self.call("rename", self.mount.rename_path(&temp, path))
            .await
    }

    /// Removes a file; a missing one is already removed.
    pub async fn remove_file(&self, path: &str) -> Result<()> {
        match self.mount.remove_path(path).await {
            Ok(()) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(map_error(&self.label, &format!("remove {path}"), e)),
        }
    }

    /// Removes the directory `path` if it is empty; returns whether it is
    /// gone. Not empty, or not there: false, nothing touched (RMDIR is
    /// refused on the server, so an entry made meanwhile is never lost).
    pub async fn remove_empty_dir(&self, path: &str) -> Result<bool> {
        use nfs_rs::{Nfs3ErrorCode as V3, Nfs4ErrorCode as V4};
        match self.mount.rmdir_path(path).await {
            Ok(()) => Ok(true),
            Err(e) if is_gone(&e) || is_wrong_kind(&e) => Ok(false),
            Err(
                NfsError::Nfs3(V3::NFS3ERR_NOTEMPTY | V3::NFS3ERR_EXIST)
                | NfsError::Nfs4(V4::NFS4ERR_NOTEMPTY | V4::NFS4ERR_EXIST),
            ) => Ok(false),
            Err(e) => Err(map_error(&self.label, &format!("rmdir {path}"), e)),
        }
    }

    /// Renames; returns false when `from` does not exist.
    pub async fn rename(&self, from: &str, to: &str) -> Result<bool> {
        match self.mount.rename_path(from, to).await {
            Ok(()) => Ok(true),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(map_error(&self.label, &format!("rename {from}"), e)),
        }
    }

    /// Removes `path` and everything below it; nothing above it is touched.
    /// A missing path is already removed.
    pub async fn remove_tree(&self, path: &str) -> Result<()> {
        // Depth-first with an explicit stack: a hostile tree cannot overflow ours.
        let mut pending = vec![(path.to_string(), false)];
        while let Some((dir, listed)) = pending.pop() {
            if listed {
                match self.mount.rmdir_path(&dir).await {
                    Ok(()) => {}
                    Err(e) if is_gone(&e) => {}
                    Err(e) => return Err(map_error(&self.label, &format!("rmdir {dir}"), e)),
                }
                continue;
            }
            let entries = match self.entries(&dir).await {
                Ok(entries) => entries,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            pending.push((dir.clone(), true));
            for entry in entries {
                let child = format!("{dir}/{}", entry.name);
                if entry.kind == TYPE_DIRECTORY {
                    pending.push((child, false));
                } else {
                    self.remove_file(&child).await?;
                }
            }
        }
        Ok(())
    }

    /// Copies the tree at `from` to `to` (which must not exist) on this
    /// share, through this client: directories, regular files and symlinks
    /// with their permission bits. Symlinks are copied as links, never
    /// followed, so a volume cannot make the copy read outside itself.
    /// Returns how many entries of other kinds (devices, fifos, sockets) were
    /// left out.
    pub async fn copy_tree(&self, from: &str, to: &str) -> Result<CopyCount> {
        let mode = self
            .call("getattr", self.mount.getattr_path(from))
            .await?
            .file_mode;
        self.call("mkdir", self.mount.mkdir_path(to, mode & 0o7777))
            .await?;
        let mut count = CopyCount::default();
        // An explicit stack: a deep tree cannot overflow ours.
        let mut pending = vec![(from.to_string(), to.to_string())];
        while let Some((src_dir, dst_dir)) = pending.pop() {
            for entry in self.entries(&src_dir).await? {
                let src = format!("{src_dir}/{}", entry.name);
                let dst = format!("{dst_dir}/{}", entry.name);
                match entry.kind {
                    TYPE_DIRECTORY => {
                        self.call("mkdir", self.mount.mkdir_path(&dst, entry.mode))
                            .await?;
                        pending.push((src, dst));
                    }
                    TYPE_REGULAR => {
                        count.bytes += self.copy_file(&src, &dst, entry.mode).await?;
                        count.files += 1;
                    }
                    TYPE_SYMLINK => {
                        let target = self
                            .call("readlink", self.mount.readlink_path(&src))
                            .await?;
                        self.call("symlink", self.mount.symlink_path(&target, &dst))
                            .await?;
                    }
                    _ => count.skipped += 1,
                }
            }
        }
        Ok(count)
    }

    /// Copies one file's contents; returns the bytes written.
    async fn copy_file(&self, from: &str, to: &str, mode: u32) -> Result<u64> {
        let source = self.call("lookup", self.mount.lookup_path(from)).await?;
        let target = self
            .call("create", self.mount.create_path(to, Some(mode)))
            .await?;
        let read_size = self.mount.get_max_read_size().max(4096);
        let mut offset = 0u64;
        let mut written = 0u64;
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = self
                .call(
                    "read",
                    self.mount.read(source.fh.clone(), offset, read_size),
                )
                .await?;
            let done = chunk.is_empty();
            offset += chunk.len() as u64;
            buffer.extend_from_slice(&chunk);
            if done || buffer.len() >= COPY_CHUNK {
                let data = Bytes::from(std::mem::take(&mut buffer));
                let len = data.len() as u64;
                if len > 0 {
                    self.call(
                        "write",
                        nfs_rs::write_all(&*self.mount, target.fh.clone(), written, data),
                    )
                    .await?;
                    written += len;
                }
            }
            if done {
                break;
            }
        }
        let _ = self.mount.close(target.fh).await;
        Ok(written)
    }

    /// Entries of `dir` with type and permission bits (`.`/`..` left out;
    /// an entry gone before its attributes could be read is left out too).
    pub(super) async fn entries(&self, dir: &str) -> Result<Vec<Entry>> {
        use futures_util::StreamExt;
        let mut stream = match self.mount.readdirplus_path(dir).await {
            Ok(stream) => stream,
            Err(e) => return Err(map_error(&self.label, &format!("readdir {dir}"), e)),
        };
        let mut entries = Vec::new();
        while let Some(entry) = stream.next().await {
            let entry = entry.map_err(|e| map_error(&self.label, &format!("readdir {dir}"), e))?;
            if entry.file_name == "." || entry.file_name == ".." {
                continue;
            }
            let attr = match entry.attr {
                Some(attr) => attr,
                None => {
                    let path = format!("{dir}/{}", entry.file_name);
                    match self.call("getattr", self.mount.getattr_path(&path)).await {
                        Ok(attr) => attr,
                        Err(Error::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            entries.push(Entry {
                name: entry.file_name,
                kind: attr.type_,
                mode: attr.file_mode & 0o7777,
            });
        }
        Ok(entries)
    }

    /// Bytes available to us on the export.
    pub async fn available_bytes(&self) -> Result<u64> {
        Ok(self.call("fsstat", self.mount.fsstat()).await?.abytes)
    }

    /// Ends the session politely; failures here change nothing for the caller.
    pub async fn close(self) {
        let _ = tokio::time::timeout(self.deadline, self.mount.umount()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_and_carry_the_port() {
        let share = SharePath::parse("/export").unwrap();
        assert_eq!(
            url(
                &NfsServer::parse("127.0.0.1").unwrap(),
                20490,
                &share,
                "4.1"
            ),
            "nfs://127.0.0.1:20490/export?nfsport=20490&version=4.1"
        );
        assert_eq!(
            url(&NfsServer::parse("fd00::5").unwrap(), 2049, &share, "3"),
            "nfs://[fd00::5]:2049/export?nfsport=2049&version=3"
        );
    }

    #[test]
    fn a_server_answer_outranks_a_refused_connection_which_outranks_the_rest() {
        let refused = || Error::Unavailable("4.1: connection refused".into());
        let odd = || Error::Internal("3: portmapper said something odd".into());
        let denied = || Error::PermissionDenied("3: access denied".into());
        let chosen = first_telling(vec![refused(), odd()]);
        assert!(matches!(chosen, Error::Unavailable(_)), "{chosen:?}");
        // Every attempt's failure stays in the message.
        assert!(chosen.to_string().contains("portmapper"), "{chosen}");
        let chosen = first_telling(vec![refused(), denied()]);
        assert!(matches!(chosen, Error::PermissionDenied(_)), "{chosen:?}");
        assert!(matches!(first_telling(vec![odd()]), Error::Internal(_)));
    }
}
