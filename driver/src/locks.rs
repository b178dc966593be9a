//! Per-key serialization: calls on the same volume wait for each other,
//! calls on different volumes run in parallel. Entries live only while
//! someone holds or waits for them, so the map never grows with history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::ids::LockKey;

#[derive(Debug, Default)]
pub struct KeyedLocks {
    // A std mutex: it is held only to look up or drop an entry, never across `.await`.
    entries: Mutex<HashMap<LockKey, Arc<AsyncMutex<()>>>>,
}

/// Held while working on one key; dropping it releases the key.
pub struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: LockKey,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &LockKey) -> KeyGuard<'_> {
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.entry(key.clone()).or_default().clone()
        };
        let guard = entry.lock_owned().await;
        KeyGuard {
            locks: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut entries = self.locks.entries.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.guard.take());
        // Only the map still refers to the mutex: nobody holds or waits for it.
        if entries
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::VolumeId;
    use futures_util::FutureExt as _;
    use std::time::Duration;

    fn key(volume: &str) -> LockKey {
        VolumeId::parse(&format!("local:n:{volume}"))
            .unwrap()
            .lock_key()
    }

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = KeyedLocks::default();
        let (key_a, key_b) = (key("a"), key("b"));
        let a = locks.lock(&key_a).await;
        // One poll each, no timing: a free key is taken at once, a held one
        // is not. The pinned future stays queued for "a".
        let _b = locks
            .lock(&key_b)
            .now_or_never()
            .expect("a lock on another key waited");
        let mut again = Box::pin(locks.lock(&key_a));
        assert!(
            (&mut again).now_or_never().is_none(),
            "second lock on 'a' did not wait"
        );
        drop(a);
        // Released: the queued lock gets it (the bound only turns a lost
        // wakeup into a failure instead of a hang).
        tokio::time::timeout(Duration::from_secs(60), again)
            .await
            .expect("the waiting lock on 'a' was never granted");
    }

    #[tokio::test]
    async fn entries_are_dropped_when_unused() {
        let locks = KeyedLocks::default();
        drop(locks.lock(&key("x")).await);
        drop(locks.lock(&key("y")).await);
        assert_eq!(locks.len(), 0);
    }
}
