//! A writer for the `newc` cpio format the kernel unpacks as an initramfs. Written here rather than
//! shelling out to `cpio` so the archive can hold a `/dev/console` device node (the kernel opens
//! it for init's stdio before devtmpfs is mounted) without creating one on the host, and so the
//! build needs no extra package. No compression: the kernel takes a plain archive.

use std::io::{self, Write};

const MODE_DIR: u32 = 0o040_000;
const MODE_FILE: u32 = 0o100_000;
const MODE_CHAR: u32 = 0o020_000;

/// Appends entries to a `newc` archive; [`finish`](Cpio::finish) writes the trailer.
pub struct Cpio<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Cpio {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// A directory (parents must be added first).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, MODE_DIR | perm, 2, (0, 0), b"")
    }

    /// A regular file with the given contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, MODE_FILE | perm, 1, (0, 0), data)
    }

    /// A character device node.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, MODE_CHAR | perm, 1, (major, minor), b"")
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 1, (0, 0), 0, 0)?;
        self.pad()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: over 4 GiB"))
        })?;
        self.header(path.trim_start_matches('/'), mode, nlink, rdev, size, ino)?;
        self.write(data)?;
        self.pad()
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: u32,
        ino: u32,
    ) -> io::Result<()> {
        let namesize = name.len() as u32 + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(b"\0")?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// newc aligns every header and every file body to 4 bytes.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_newc() {
        let mut c = Cpio::new(Vec::new());
        c.dir("/bin", 0o755).unwrap();
        c.file("/init", 0o755, b"hello").unwrap();
        c.char_device("/dev/console", 0o600, 5, 1).unwrap();
        let out = c.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        // header of "bin": ino 1, mode 040755, namesize 4 ("bin\0")
        assert!(text.starts_with("07070100000001000041ED"));
        assert_eq!(&out[110..114], b"bin\0");
        // "init" header starts at 110 + 4 = 114 -> padded to 116; body after 110 + 5 = 115 -> 116
        assert_eq!(&out[116..122], b"070701");
        assert_eq!(&out[116 + 110..116 + 115], b"init\0");
        assert_eq!(&out[232..237], b"hello");
        assert!(text.contains("dev/console"));
        assert!(text.contains("TRAILER!!!"));
    }
}
