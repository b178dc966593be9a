//! Userspace NFS client steps shared by the ganesha tests (nfs-rs, the client the controller uses).
#![allow(dead_code)] // each test file uses a different subset

use bytes::Bytes;

/// Runs a future on a fresh current-thread runtime (also on a thread that joined a netns).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Reads `name` (up to 4 KiB) over NFS at `url`.
pub async fn nfs_read(url: &str, name: &str) -> nfs_rs::Result<Vec<u8>> {
    let mount = nfs_rs::parse_url_and_mount(url).await?;
    let file = mount.open_path(name, nfs_rs::OPEN_READ).await?;
    let data = mount.read(file.fh.clone(), 0, 4096).await?;
    mount.close(file.fh).await?;
    mount.umount().await?;
    Ok(data.to_vec())
}

/// Creates `name` with `data` over NFS at `url`.
pub async fn nfs_write(url: &str, name: &str, data: &'static [u8]) -> nfs_rs::Result<()> {
    let mount = nfs_rs::parse_url_and_mount(url).await?;
    let file = mount.create_path(name, Some(0o640)).await?;
    nfs_rs::write_all(&*mount, file.fh.clone(), 0, Bytes::from_static(data)).await?;
    mount.close(file.fh).await?;
    mount.umount().await?;
    Ok(())
}
