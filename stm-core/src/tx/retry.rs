//! Blocking `retry`: the attempt rolls back, then sleeps until a commit changes a word it read
//! (committers that find the `WAITERS` bit on an orec wake the sleepers).

use super::*;

impl<'t, 'env> Tx<'t, 'env> {
    /// Blocks until a word this attempt has read changes, then runs the body again (Haskell's
    /// `retry`): `return tx.retry();` when the transaction cannot go on yet.
    ///
    /// # Panics
    ///
    /// The runtime panics if the attempt read nothing (it would wait forever), or if the body
    /// asked to be inevitable (it cannot be rolled back).
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let ready = TVar::new(false);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| atomically(|tx| tx.write(&ready, true)));
    ///     // Sleeps (no spinning) until the other thread's commit changes `ready`.
    ///     atomically(|tx| if tx.read(&ready)? { Ok(()) } else { tx.retry() });
    /// });
    /// assert!(ready.load());
    /// ```
    pub fn retry<T>(&self) -> TxResult<T> {
        let s = self.st();
        if let Some(a) = s.doomed {
            // Already doomed by a conflict: that verdict stands (rerun, do not wait).
            return Err(a);
        }
        let a = Abort {
            cause: AbortCause::Retry,
        };
        s.doomed = Some(a);
        Err(a)
    }
}

impl State {
    /// Blocks until one of the words read by this (rolled-back) attempt changes.
    pub(super) fn wait_for_change(rt: &Runtime, reads: &[(&'static AtomicU64, u64)]) {
        rt.commits.wait_until(|| {
            reads.iter().any(|&(orec, version)| {
                // SeqCst RMW: either it precedes a committer's lock CAS (which then sees
                // WAITERS and notifies after releasing), or it follows it and returns the lock
                // or the new version. Setting the bit again on a later check is harmless.
                let o = orec.fetch_or(WAITERS, Ordering::SeqCst);
                o & LOCKED != 0 || o & !FLAGS != version
            })
        });
    }
}
