//! Accepting connections on the driver's socket without letting clients
//! that never talk hold the driver hostage.
//!
//! - At most [`Limits::max`] connections are open at once (well under the
//!   process's file limit); more wait in the socket's backlog.
//! - A connection that sends nothing within [`Limits::handshake`] of being
//!   accepted (a real gRPC client sends its preface at once) is closed, and
//!   so is one from which nothing was read for [`Limits::idle`]: gRPC
//!   clients reconnect on their next call, so closing an idle kubelet
//!   connection costs nothing (no CSI call waits that long in silence).
//! - Running out of file descriptors backs off instead of retrying
//!   `accept` in a loop (tonic logs an accept error and polls again at
//!   once: a busy loop while the table stays full).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub handshake: Duration,
    pub idle: Duration,
}

/// Pause after `accept` fails for want of file descriptors or memory.
const BACKOFF: Duration = Duration::from_millis(100);

impl Limits {
    /// The driver's limits: up to 256 connections (the kubelet and the
    /// sidecars use a handful), never more than a quarter of the file limit.
    pub fn for_this_process() -> Self {
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let max = usize::try_from(files / 4)
            .unwrap_or(usize::MAX)
            .clamp(8, 256);
        Self {
            max,
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

/// An accepted connection: the stream, its place among the [`Limits::max`],
/// and its idle deadline.
pub struct Connection {
    stream: UnixStream,
    _slot: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
}

impl Connection {
    fn touched(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Whether the idle deadline has passed (registering a wake-up if not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touched();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Silent past its deadline: end of stream, and the HTTP/2
            // server closes the connection.
            Poll::Pending if self.expired(cx) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Only what the client sends keeps a connection alive: the
        // server's own greeting must not reset a silent client's deadline.
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Whether an accept error means "out of descriptors or memory": worth a
/// pause, not a retry at once.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The connections accepted on `listener`, within `limits`.
pub fn accept(
    listener: UnixListener,
    limits: Limits,
) -> impl Stream<Item = io::Result<Connection>> {
    let slots = Arc::new(Semaphore::new(limits.max));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        // A free slot first: past the limit, clients wait in the backlog.
        let slot = slots.clone().acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let connection = Connection {
                        stream,
                        _slot: slot,
                        deadline: Box::pin(tokio::time::sleep(limits.handshake)),
                        idle: limits.idle,
                    };
                    return Some((Ok(connection), (listener, slots)));
                }
                Err(e) if is_exhaustion(&e) => {
                    tracing::warn!(error = %e, "cannot accept a connection; backing off");
                    tokio::time::sleep(BACKOFF).await;
                }
                // The peer gave up before we accepted (ECONNABORTED...).
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            }
        }
    })
}
