//! Test harness for Cairn's NFS backend.
//!
//! The controller speaks NFS from userspace and the node mounts with the kernel, so the tests need
//! two kinds of NFS server that this machine (and CI) can run without touching the network:
//!
//! - [`Ganesha`]: nfs-ganesha serving NFSv4 on 127.0.0.1 only (no rpcbind needed), and
//!   [`NetnsGanesha`]: rpcbind + nfs-ganesha serving NFSv3 and v4 inside a fresh network namespace
//!   whose only interface is `lo` (rpcbind can't be kept on loopback in the host's namespace).
//! - [`Guest`]: a QEMU (TCG) guest running Debian's stock kernel, which has the NFS client and knfsd
//!   the host kernel lacks, with the host's `/` shared read-only, so host-built binaries run inside.
//! - [`LoopFs`]: a filesystem (XFS with reflink) on a loop device in a temporary directory.
//!
//! Everything these types start is stopped by pid and cleaned up on drop, also when a test panics.
//! [`skip`] decides whether a test may run here, for the whole workspace: a missing piece (root,
//! loop devices, packages, a cluster, a tool) skips loudly on a laptop and fails when `CI` is set
//! to anything but empty, `0` or `false` ([`skip::ci`]).

pub mod csi_sanity;
pub mod error;
pub mod ganesha;
pub mod guest;
pub mod loopfs;
pub mod netns;
pub mod process;
pub mod skip;
pub mod sockets;

pub use error::{Error, Result};
pub use ganesha::{Ganesha, NetnsGanesha};
pub use guest::{Guest, GuestOptions, GuestOutput};
pub use loopfs::{require_loop_xfs, LoopFs};
pub use netns::Netns;
pub use skip::{
    require_guest, require_loop_devices, require_nfs_lab, require_program, require_root,
};
