//! The unix socket the driver serves on.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use rustix::fs::Mode;

/// The socket's mode: the kubelet and sidecars run as root or in the
/// owning group; nobody else may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Binds a listening socket at `path`. A socket file left by a crashed
/// process is replaced; a live one (something answers) or any other file is
/// an error, so two drivers never steal each other's socket.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process is serving on {}", path.display()),
                    ))
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; remove it or pick another --endpoint",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The socket is created with the mode the umask leaves: narrow the umask
    // around bind so there is no moment the socket is wider than 0660. This
    // runs at startup, before any other thread creates files.
    let previous = rustix::process::umask(Mode::from_raw_mode(0o777 & !SOCKET_MODE));
    let listener = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(previous);
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0660_and_replaces_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: refused.
        assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(first);
        // Stale (nobody listens): replaced.
        bind(&path).unwrap();
    }

    #[test]
    fn refuses_to_replace_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(bind(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
