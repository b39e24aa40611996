//! `or_else` (Haskell's `orElse`): a branch that retries has its writes and after-commit
//! actions undone, from an undo list of the values it overwrote, and the alternative runs.

use super::*;

/// Where a running `or_else` branch started: the lengths of the sets it may grow.
#[derive(Clone, Copy)]
pub(super) struct Branch {
    pub(super) writes: usize,
    pub(super) after: usize,
    pub(super) undo: usize,
    /// This branch's number (from 1, unique within the thread's attempts): the write-set
    /// entries it has saved an undo record for carry it in `WriteEntry::saved_by`.
    pub(super) id: u32,
}

/// A write-set entry's value before an `or_else` branch overwrote it.
pub(super) struct Undo {
    pub(super) index: usize,
    pub(super) value: u64,
    pub(super) loc: SourceLocation,
    /// The entry's `saved_by` before this record.
    pub(super) saved_by: u32,
}

impl<'t, 'env> Tx<'t, 'env> {
    /// Runs `first`; if it calls [`retry`](Tx::retry), undoes what it wrote (and the
    /// after-commit actions it added) and runs `second` instead (Haskell's `orElse`).
    ///
    /// If `second` retries too, the whole transaction retries, waking when anything either
    /// branch read changes. Conflicts are not alternatives: an `Err` from a conflict leaves
    /// `or_else` at once, like any other operation. Calls nest. The reads of an undone `first`
    /// stay in the transaction's read set (the choice of `second` depends on them).
    ///
    /// Only the transaction's own effects are undone: I/O that an inevitable `first` did
    /// directly stays done (do I/O in [`after_commit`](Tx::after_commit) actions, which are
    /// undone with the branch). An inevitable transaction stays inevitable.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let (a, b) = (TVar::new(0u32), TVar::new(5u32));
    /// // Take one unit from the first of the two that has one.
    /// let took_from_b = atomically(|tx| {
    ///     tx.or_else(
    ///         |tx| {
    ///             let x = tx.read(&a)?;
    ///             if x == 0 {
    ///                 return tx.retry();
    ///             }
    ///             tx.write(&a, x - 1)?;
    ///             Ok(false)
    ///         },
    ///         |tx| {
    ///             tx.modify(&b, |y| y - 1)?;
    ///             Ok(true)
    ///         },
    ///     )
    /// });
    /// assert!(took_from_b);
    /// assert_eq!((a.load(), b.load()), (0, 4));
    /// ```
    pub fn or_else<T>(
        &mut self,
        first: impl FnOnce(&mut Tx<'t, 'env>) -> TxResult<T>,
        second: impl FnOnce(&mut Tx<'t, 'env>) -> TxResult<T>,
    ) -> TxResult<T> {
        let s = self.st();
        if let Some(a) = s.doomed {
            return Err(a);
        }
        s.branch_start();
        /// Ends the branch if `first` unwinds: a body may catch the panic and go on, and the
        /// branch's writes must not outlive it (nor its records reach later transactions).
        pub(super) struct Unwinding(*mut State);
        impl Drop for Unwinding {
            fn drop(&mut self) {
                // SAFETY: runs only while unwinding out of `first` (it is forgotten otherwise),
                // when every frame that held a reference to the state has been left; `self.0`
                // is this thread's state, alive as long as the thread (see `Tx::st`).
                unsafe { (*self.0).branch_undo() };
            }
        }
        let unwinding = Unwinding(self.s);
        let r = first(self);
        core::mem::forget(unwinding);
        let s = self.st();
        let retried = matches!(s.doomed, Some(a) if a.cause == AbortCause::Retry);
        match r {
            Err(_) if retried => {
                s.branch_undo();
                s.doomed = None;
                second(self)
            }
            r => {
                s.branch_keep();
                r
            }
        }
    }
}

impl State {
    /// Drops every undo record (when the last branch ends, keeping what it did): the entries keep
    /// their current values, and the superseded `TBox` allocations go to `garbage`.
    pub(super) fn settle_undo(&mut self) {
        for u in self.undo.drain(..) {
            if let Some(d) = self.writes.get(u.index).and_then(|w| w.drop_box) {
                self.garbage.push((u.value, d));
                self.extra = true;
            }
        }
    }

    /// Starts an `or_else` branch.
    pub(super) fn branch_start(&mut self) {
        self.branch_ids = self.branch_ids.wrapping_add(1).max(1);
        self.branches.push(Branch {
            writes: self.writes.len(),
            after: self.after.len(),
            undo: self.undo.len(),
            id: self.branch_ids,
        });
    }

    /// Ends the innermost branch, keeping what it did.
    pub(super) fn branch_keep(&mut self) {
        if self.branches.pop().is_some() && self.branches.is_empty() {
            // No branch left to undo: the superseded values are garbage now.
            self.settle_undo();
        }
    }

    /// Ends the innermost branch, undoing its writes and after-commit actions. Its reads stay
    /// in the read set: the choice of the other branch depends on them.
    pub(super) fn branch_undo(&mut self) {
        let Some(b) = self.branches.pop() else {
            return;
        };
        while self.undo.len() > b.undo {
            let Some(u) = self.undo.pop() else { break };
            let w = &mut self.writes[u.index];
            if let Some(d) = w.drop_box {
                self.garbage.push((w.value, d));
                self.extra = true;
            }
            w.value = u.value;
            w.loc = u.loc;
            w.saved_by = u.saved_by;
        }
        for w in self.writes.drain(b.writes..) {
            debug_assert!(!w.owned);
            if let Some(d) = w.drop_box {
                self.garbage.push((w.value, d));
                self.extra = true;
            }
            // An inevitable attempt keeps the orec locked until it ends: harmless.
        }
        // The filter may keep bits of the undone words: a false positive costs only a search.
        self.reindex();
        // Dropped in `release`, outside the transaction (captures may run one).
        self.dropped_actions.extend(self.after.drain(b.after..));
        // The outermost branch started with no undo record (records exist only while a branch
        // runs, and are settled when the last one ends), so none is left after it.
        debug_assert!(!self.branches.is_empty() || self.undo.is_empty());
    }
}
