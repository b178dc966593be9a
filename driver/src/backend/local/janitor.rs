//! Removing deleted trees off the caller's path. DeleteVolume and
//! DeleteSnapshot are done once the tree is renamed into `trash/` and that
//! rename is durable: from then on the volume is gone for every reader, and
//! a crash leaves only trash, which the next start clears. Removing the
//! files themselves (one unlink per file, as long as the volume is big) is
//! handed to one background thread, so a delete costs the same whatever
//! the volume holds.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Trees waiting to be removed, and the thread that removes them (started
/// on the first delete: an idle node plugin keeps no thread for it).
#[derive(Debug, Default)]
pub(super) struct Janitor {
    queue: Mutex<Option<Sender<PathBuf>>>,
    pending: Arc<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    count: Mutex<usize>,
    emptied: Condvar,
}

impl Pending {
    fn count(&self) -> MutexGuard<'_, usize> {
        // A counter: consistent at every unlock.
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self) {
        let mut count = self.count();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.emptied.notify_all();
        }
    }
}

impl Janitor {
    /// Removes `tree` soon, on the janitor's thread; here and now if that
    /// thread cannot be started.
    pub(super) fn remove(&self, tree: PathBuf) {
        *self.pending.count() += 1;
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_none() {
            *queue = self.start();
        }
        let unsent = match queue.as_ref() {
            Some(sender) => sender.send(tree).err().map(|e| e.0),
            None => Some(tree),
        };
        if let Some(tree) = unsent {
            *queue = None;
            drop(queue);
            remove_tree(&tree);
            self.pending.done();
        }
    }

    fn start(&self) -> Option<Sender<PathBuf>> {
        let (sender, receiver) = channel::<PathBuf>();
        let pending = self.pending.clone();
        let started = std::thread::Builder::new()
            .name("cairn-trash".into())
            .spawn(move || {
                for tree in receiver {
                    remove_tree(&tree);
                    pending.done();
                }
            });
        match started {
            Ok(_) => Some(sender),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for removing deleted trees; removing them inline");
                None
            }
        }
    }

    /// Waits until every tree handed over so far is removed, at most
    /// `limit`; returns whether it was.
    pub(super) fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut count = self.pending.count();
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self
                .pending
                .emptied
                .wait_timeout(count, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// A tree left here (a failure, a crash) is trash still, cleared at the
/// next start.
fn remove_tree(tree: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(tree) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %tree.display(), error = %e, "could not remove a deleted tree; the next start retries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_handed_over_are_removed_and_settle_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let janitor = Janitor::default();
        for i in 0..20 {
            let tree = dir.path().join(format!("t{i}"));
            std::fs::create_dir_all(tree.join("a/b")).unwrap();
            std::fs::write(tree.join("a/b/f"), b"x").unwrap();
            janitor.remove(tree);
        }
        assert!(janitor.settle(Duration::from_secs(30)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A tree already gone is no error, and nothing is pending after it.
        janitor.remove(dir.path().join("never-there"));
        assert!(janitor.settle(Duration::from_secs(30)));
    }
}
