//! What the local root has promised: the sum of its volumes' capacities.
//!
//! Summed once at startup from the volumes' own records, then kept in
//! memory: creates and expansions reserve their bytes before they make
//! anything (and give them back if they fail), deletes release them once
//! the volume is gone. Every call is O(1); a crash loses nothing, because
//! the next start sums the records again.
//!
//! With `--overcommit=false`, what may still be promised is the smaller of
//! the filesystem's free space and its size minus what is promised, and a
//! volume that does not fit is refused. With overcommit (the default) the
//! sum is kept but nothing is refused for it.

use std::sync::Mutex;

use crate::error::{Error, Result};

#[derive(Debug)]
pub(super) struct Ledger {
    overcommit: bool,
    /// Bytes promised to existing volumes (and to ones being made).
    promised: Mutex<u64>,
}

/// The filesystem's size and free space, in bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Space {
    pub size: u64,
    pub free: u64,
}

impl Space {
    pub(super) fn of(st: &rustix::fs::StatVfs) -> Self {
        Self {
            size: st.f_blocks.saturating_mul(st.f_frsize),
            free: st.f_bavail.saturating_mul(st.f_frsize),
        }
    }
}

impl Ledger {
    pub(super) fn new(overcommit: bool, promised: u64) -> Self {
        Self {
            overcommit,
            promised: Mutex::new(promised),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.promised.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn overcommits(&self) -> bool {
        self.overcommit
    }

    /// Counts volumes found at startup, whatever the flag says: they exist.
    pub(super) fn record_existing(&self, bytes: u64) {
        let mut promised = self.lock();
        *promised = promised.saturating_add(bytes);
    }

    pub(super) fn promised(&self) -> u64 {
        *self.lock()
    }

    /// Bytes a new volume may still be promised.
    pub(super) fn available(&self, space: Space) -> u64 {
        if self.overcommit {
            space.free
        } else {
            space.free.min(space.size.saturating_sub(self.promised()))
        }
    }

    /// Promises `bytes` more, or refuses (ResourceExhausted: this node has
    /// no room; another may) when overcommit is off and they do not fit.
    /// Checked and added under one lock, so concurrent creates cannot both
    /// take the last room.
    pub(super) fn reserve(&self, bytes: u64, space: Space, what: &str) -> Result<()> {
        let mut promised = self.lock();
        if !self.overcommit {
            let room = space.free.min(space.size.saturating_sub(*promised));
            if bytes > room {
                return Err(Error::ResourceExhausted(format!(
                    "{what} needs {bytes} bytes; this node can promise {room} more \
                     ({} of {} promised to existing volumes, {} free; --overcommit=false)",
                    *promised, space.size, space.free
                )));
            }
        }
        *promised = promised.saturating_add(bytes);
        Ok(())
    }

    /// Gives back what a deleted volume (or a failed create) was promised.
    pub(super) fn release(&self, bytes: u64) {
        let mut promised = self.lock();
        *promised = promised.saturating_sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn without_overcommit_promises_never_exceed_the_filesystem() {
        let ledger = Ledger::new(false, 0);
        let space = Space {
            size: 100 * MI,
            free: 90 * MI,
        };
        assert_eq!(ledger.available(space), 90 * MI);
        ledger.reserve(60 * MI, space, "a").unwrap();
        assert_eq!(ledger.available(space), 40 * MI);
        let err = ledger.reserve(50 * MI, space, "b").unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        ledger.reserve(40 * MI, space, "c").unwrap();
        assert_eq!(ledger.available(space), 0);
        ledger.release(60 * MI);
        assert_eq!(ledger.promised(), 40 * MI);
        assert_eq!(ledger.available(space), 60 * MI);
    }

    #[test]
    fn free_space_caps_what_is_available() {
        let ledger = Ledger::new(false, 10 * MI);
        let space = Space {
            size: 100 * MI,
            free: 5 * MI,
        };
        assert_eq!(ledger.available(space), 5 * MI);
        assert!(ledger.reserve(6 * MI, space, "a").is_err());
    }

    #[test]
    fn overcommit_counts_but_never_refuses() {
        let ledger = Ledger::new(true, 0);
        let space = Space {
            size: 100 * MI,
            free: 90 * MI,
        };
        ledger.reserve(500 * MI, space, "a").unwrap();
        assert_eq!(ledger.promised(), 500 * MI);
        assert_eq!(ledger.available(space), 90 * MI);
    }
}
