//! Copies that outlive the call that started them.
//!
//! A full copy of a large volume takes longer than a CSI call should wait:
//! CreateSnapshot answers `ready_to_use: false` and the copy goes on; a
//! CreateVolume whose caller gave up (deadline) leaves its restore running.
//! The CO then repeats the call, which must join the running copy rather
//! than start a second one. A [`Jobs`] table holds the copies running in
//! this process, by key; a finished copy leaves the table after its result
//! is on disk (renamed into place) or has failed, so a later call finds
//! either the finished thing on disk or nothing and starts over.
//!
//! Copies wait for one of a few slots before they take a thread of the
//! blocking pool, so a burst of long copies cannot occupy every thread that
//! mount and filesystem calls need.
//!
//! Nothing here survives a restart, by design: a copy interrupted by a
//! crash left only a scratch directory under `tmp/`, which startup removes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Semaphore};

use crate::error::{Error, Result};
use crate::ids::VolumeKey;

type Outcome<T> = Option<Result<T, Arc<Error>>>;
type Table<P, T> = Arc<Mutex<HashMap<VolumeKey, Arc<Job<P, T>>>>>;

/// One running copy: what it was asked to make (`plan`), a cancel flag the
/// copy checks between files, and its outcome once known.
#[derive(Debug)]
pub struct Job<P, T> {
    pub plan: P,
    cancel: AtomicBool,
    outcome: watch::Sender<Outcome<T>>,
}

impl<P, T: Clone> Job<P, T> {
    /// Asks the copy to stop; it fails with Aborted and removes its scratch.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the copy to finish. Dropping the future (a caller's
    /// deadline) leaves the copy running.
    pub async fn wait(&self) -> Result<T> {
        let mut rx = self.outcome.subscribe();
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Internal("copy ended without a result".into()))?;
        match outcome.as_ref() {
            Some(Ok(value)) => Ok(value.clone()),
            Some(Err(e)) => Err(replay(e)),
            None => Err(Error::Internal("copy ended without a result".into())),
        }
    }
}

/// The copies of one kind running in this process, by the key of what
/// they make.
#[derive(Debug)]
pub struct Jobs<P, T> {
    running: Table<P, T>,
    /// Copies allowed to run at once (shared with other tables).
    slots: Arc<Semaphore>,
}

impl<P, T> Jobs<P, T>
where
    P: Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    pub fn new(slots: Arc<Semaphore>) -> Self {
        Self {
            running: Arc::default(),
            slots,
        }
    }

    /// The copy running (or waiting for a slot) for `key`, if any.
    pub fn get(&self, key: &VolumeKey) -> Option<Arc<Job<P, T>>> {
        self.table().get(key).cloned()
    }

    /// Keys of every running copy.
    pub fn keys(&self) -> Vec<VolumeKey> {
        self.table().keys().cloned().collect()
    }

    /// Registers `work` under `key` and runs it on the blocking pool once a
    /// slot is free. The caller holds the key's lock and has checked that
    /// nothing runs for it. Must be called inside the async runtime.
    pub fn start(
        &self,
        key: VolumeKey,
        plan: P,
        work: impl FnOnce(&Job<P, T>) -> Result<T> + Send + 'static,
    ) -> Arc<Job<P, T>> {
        let job = Arc::new(Job {
            plan,
            cancel: AtomicBool::new(false),
            outcome: watch::Sender::new(None),
        });
        self.table().insert(key.clone(), job.clone());
        let running = self.running.clone();
        let slots = self.slots.clone();
        let mine = job.clone();
        tokio::spawn(async move {
            // Never closed, so this only waits.
            let permit = slots.acquire_owned().await;
            let copy = mine.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                work(&copy)
            })
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("copy task failed: {e}"))))
            .map_err(Arc::new);
            // Leave the table first: whoever sees the outcome and calls
            // again must find the result on disk, not this job.
            {
                let mut table = running.lock().unwrap_or_else(|p| p.into_inner());
                if table.get(&key).is_some_and(|j| Arc::ptr_eq(j, &mine)) {
                    table.remove(&key);
                }
            }
            mine.outcome.send_replace(Some(outcome));
        });
        job
    }

    /// Asks every running copy to stop (at shutdown, so the process does not
    /// wait for long copies; their scratch is removed now or at next start).
    pub fn cancel_all(&self) {
        for job in self.table().values() {
            job.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<VolumeKey, Arc<Job<P, T>>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<P, T> Job<P, T> {
    /// The flag the copy checks (see [`crate::copy::copy`]).
    pub fn cancelled(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// The same error again, for every caller that waited on one copy (the
/// error type is not `Clone`: it carries an `io::Error`).
fn replay(e: &Error) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::AlreadyExists(m) => Error::AlreadyExists(m.clone()),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
        Error::OutOfRange(m) => Error::OutOfRange(m.clone()),
        Error::ResourceExhausted(m) => Error::ResourceExhausted(m.clone()),
        Error::Aborted(m) => Error::Aborted(m.clone()),
        Error::Unimplemented(m) => Error::Unimplemented(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::PermissionDenied(m) => Error::PermissionDenied(m.clone()),
        Error::Internal(m) => Error::Internal(m.clone()),
        Error::Io {
            action,
            path,
            source,
        } => Error::Io {
            action,
            path: path.clone(),
            source: match source.raw_os_error() {
                Some(errno) => std::io::Error::from_raw_os_error(errno),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;
    use std::time::{Duration, Instant};

    fn key(k: &str) -> VolumeKey {
        VolumeKey::parse(k).unwrap()
    }

    #[tokio::test]
    async fn waiters_share_one_outcome_and_the_table_empties() {
        let jobs: Jobs<&'static str, u32> = Jobs::new(Arc::new(Semaphore::new(1)));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let job = jobs.start(key("a"), "plan", move |_| {
            go_rx.recv().unwrap();
            Ok(7)
        });
        assert!(jobs.get(&key("a")).is_some());
        let again = jobs.get(&key("a")).unwrap();
        assert_eq!(again.plan, "plan");
        // The copy is held at `go`, so it has no outcome: a waiter polled
        // now must not answer (one poll reads the outcome; no timing).
        assert!(
            again.wait().now_or_never().is_none(),
            "a waiter answered before the copy ended"
        );
        go_tx.send(()).unwrap();
        assert_eq!(job.wait().await.unwrap(), 7);
        assert_eq!(again.wait().await.unwrap(), 7);
        assert!(jobs.get(&key("a")).is_none());
    }

    #[tokio::test]
    async fn copies_beyond_the_slots_wait_their_turn() {
        let jobs: Jobs<(), bool> = Jobs::new(Arc::new(Semaphore::new(1)));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        // Set by the first copy as its last act, before it gives its slot back.
        let first_ended = Arc::new(AtomicBool::new(false));
        let ended = first_ended.clone();
        let first = jobs.start(key("a"), (), move |_| {
            go_rx.recv().unwrap();
            ended.store(true, Ordering::SeqCst);
            Ok(true)
        });
        // The second copy reports whether the first had ended when it began:
        // with one slot it cannot begin before, however the threads run.
        let ended = first_ended.clone();
        let second = jobs.start(key("b"), (), move |_| Ok(ended.load(Ordering::SeqCst)));
        // Let both spawned tasks run up to their slot: a copy that did not
        // wait for one is then queued on the blocking pool, which takes work
        // in order, so one more piece of work through it lets that copy
        // begin before the first can end. (Its beginning is what cannot be
        // observed without a hook in `Jobs`; what it saw is, below.)
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        assert!(jobs.get(&key("b")).is_some(), "a waiting copy is joinable");
        go_tx.send(()).unwrap();
        assert!(first.wait().await.unwrap());
        assert!(
            second.wait().await.unwrap(),
            "the second copy ran while the first held the only slot"
        );
    }

    #[tokio::test]
    async fn cancel_reaches_the_copy_and_errors_replay() {
        let jobs: Jobs<(), u32> = Jobs::new(Arc::new(Semaphore::new(1)));
        let job = jobs.start(key("b"), (), |job| {
            // Polls the flag as the real copy does between files; the
            // deadline turns a cancel that never arrives into a failure
            // rather than a hung test.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !job.cancelled().load(Ordering::Relaxed) {
                if Instant::now() >= deadline {
                    return Err(Error::Internal("the cancel never reached the copy".into()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Error::Io {
                action: "copy",
                path: "x".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            })
        });
        jobs.cancel_all();
        let err = job.wait().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
        assert_eq!(
            job.wait().await.unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }
}
