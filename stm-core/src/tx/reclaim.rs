//! Reclamation: `TBox` values replaced by a commit are retired through crossbeam-epoch;
//! allocations an attempt made and never published, dropped after-commit actions and held
//! `Arc`s are freed by `release`, once the attempt has ended and no reference to the state is
//! alive (their `Drop` may run a transaction of its own).

use super::*;

/// Frees a boxed value of a `TBox` write, type-erased.
pub(super) type DropFn = unsafe fn(u64);

/// Frees a `TBox` value retired by a commit, when the epoch says no attempt can still see it.
/// Runs inside whatever `pin()` collects it: if that is inside a transaction on this thread, the
/// value waits in `ThreadCtx::late` until the transaction has ended (its `Drop` may run one).
///
/// # Safety
///
/// `bits` and `d` as for a `DropFn`: an allocation of the type `d` frees, owned by the caller.
#[cfg(not(loom))]
pub(super) unsafe fn drop_retired(bits: u64, d: DropFn) {
    let queued = CTX
        .try_with(|c| {
            if c.active.get() {
                c.late.borrow_mut().push((bits, d));
                c.late_pending.set(true);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !queued {
        // SAFETY: the caller's contract.
        unsafe { d(bits) };
    }
}

/// Frees the values that `drop_retired` queued on this thread (outside any transaction).
#[cfg(not(loom))]
pub(super) fn drop_late() {
    loop {
        let late = CTX
            .try_with(|c| {
                c.late_pending.set(false);
                core::mem::take(&mut *c.late.borrow_mut())
            })
            .unwrap_or_default();
        if late.is_empty() {
            break;
        }
        for (v, d) in late {
            // SAFETY: queued by `drop_retired`, whose caller handed over the allocation.
            unsafe { d(v) };
        }
    }
}

#[cfg(not(loom))]
pub(super) unsafe fn drop_box<T>(bits: u64) {
    // SAFETY: caller passes an allocation made by `Box::<T>::into_raw` and owned by it.
    drop(unsafe { Box::from_raw(bits as usize as *mut T) });
}

/// Drops an `Arc` clone that `Tx::hold` kept for the attempt (boxed: a thin pointer even for an
/// unsized `T`).
pub(super) unsafe fn drop_held<T: ?Sized>(bits: u64) {
    // SAFETY: caller passes an allocation made by `Box::<Arc<T>>::into_raw` and owned by it.
    drop(unsafe { Box::from_raw(bits as usize as *mut Arc<T>) });
}

impl<'t, 'env> Tx<'t, 'env> {
    /// Pins the epoch for the rest of the attempt. Pinning may run deferred destructors (user
    /// `Drop` code), so no reference to the state is held across it.
    #[cfg(not(loom))]
    pub(super) fn pin_epoch(&self) {
        if self.st().guard.is_none() {
            let g = crossbeam_epoch::pin();
            let s = self.st();
            s.guard = Some(g);
            s.extra = true;
        }
    }
}

impl State {
    #[inline(always)]
    pub(super) fn guard_is_none(&self) -> bool {
        #[cfg(not(loom))]
        return self.guard.is_none();
        #[cfg(loom)]
        return true;
    }

    /// Empties the write set; its unpublished `TBox` allocations go to `garbage`. Clears the
    /// filter (all ones in an unlogged attempt, see `State::unlogged`) and the index. A committed
    /// attempt's write set is empty already (its values are published), as is a read-only one's:
    /// no loop then (an empty `drain` still cost about ten instructions per update commit).
    #[inline]
    pub(super) fn free_pending(&mut self) {
        if !self.writes.is_empty() {
            for w in self.writes.drain(..) {
                if let Some(d) = w.drop_box {
                    self.garbage.push((w.value, d));
                    self.extra = true;
                }
            }
        }
        self.filter = 0;
        if self.index.is_some() {
            self.index = None;
        }
    }

    /// Frees `garbage` in place: only for the thread-exit destructor, where no transaction can
    /// start from a `Drop` any more (see `release` for the normal path).
    pub(super) fn free_garbage(&mut self) {
        for (v, d) in self.garbage.drain(..) {
            // SAFETY: superseded or discarded allocations of this attempt, never published, and
            // `hold`'s clones; the body has returned, so no `read_box` or `hold` reference to
            // them is alive.
            unsafe { d(v) };
        }
    }
}

/// Runs a committed transaction's after-commit actions, then gives the emptied list back to the
/// state to keep its capacity. Out of line: most commits have no actions.
#[cold]
#[inline(never)]
pub(super) fn run_after_commit(state: *mut State, mut after: Vec<Box<dyn FnOnce()>>) {
    for f in after.drain(..) {
        f();
    }
    // SAFETY: no `Tx` and no reference to the state is alive here (the transaction has ended;
    // actions that ran transactions of their own ended them too, leaving `after` empty).
    let slot = unsafe { &mut (*state).after };
    if slot.capacity() == 0 {
        *slot = after;
    }
}

/// Frees what the ended attempt left in `garbage` and unpins the epoch, with no reference to
/// the state alive: the values' `Drop` code may run anything, including a transaction of its
/// own or, through an epoch collection, other frees.
#[inline]
pub(super) fn release(ctx: &ThreadCtx, p: *mut State) {
    // SAFETY: as below; a read-only look for the common case of nothing to do.
    let nothing = unsafe {
        (*p).garbage.is_empty() && (*p).dropped_actions.is_empty() && (*p).guard_is_none()
    } && !ctx.late_pending.get();
    if !nothing {
        release_slow(p);
    }
}

/// `release` between two attempts of one transaction: the thread is briefly not in a
/// transaction, so that a freed value's `Drop` may run one of its own (it uses the same state,
/// which `end` has emptied, and leaves it empty; the next attempt's `begin` resets the rest).
#[inline]
pub(super) fn release_between_attempts(ctx: &ThreadCtx, p: *mut State) {
    ctx.active.set(false);
    // A transaction run by a freed value's `Drop` starts with its own abort count and must not
    // reset ours (the progress guarantee counts this transaction's aborts).
    let aborts = ctx.aborts.replace(0);
    release(ctx, p);
    ctx.aborts.set(aborts);
    ctx.active.set(true);
}

#[inline(never)]
pub(super) fn release_slow(p: *mut State) {
    // Unpin first: nothing freed below needs the guard (unpublished values, dropped actions, and
    // values whose grace period is over), and a panic in one of their `Drop`s must not leave the
    // epoch pinned.
    #[cfg(not(loom))]
    // SAFETY: `p` is this thread's state (see `Tx::st`); the reference lives only for this
    // statement, and no other reference to the state is alive in the caller.
    drop(unsafe { (*p).guard.take() });
    loop {
        // SAFETY: `p` is this thread's state (see `Tx::st`); the reference lives only for this
        // statement, and no other reference to the state is alive in the caller.
        let mut garbage = core::mem::take(unsafe { &mut (*p).garbage });
        if garbage.is_empty() {
            // Put the (empty) vector back to keep its capacity.
            // SAFETY: as above.
            unsafe { (*p).garbage = garbage };
            break;
        }
        for (v, d) in garbage.drain(..) {
            // SAFETY: allocations of the ended attempt that were never published (superseded,
            // discarded or rolled back), and the `Arc` clones `hold` kept; the attempt has
            // committed or rolled back and the body has returned, so no `read_box` or `hold`
            // reference to them is alive and no redo-log entry points into them.
            unsafe { d(v) };
        }
        // SAFETY: as above. A `Drop` that ran just now and started a transaction of its own
        // released that one's garbage itself; loop in case anything was added.
        unsafe { (*p).garbage = garbage };
    }
    // SAFETY: as above.
    let actions = core::mem::take(unsafe { &mut (*p).dropped_actions });
    drop(actions);
    #[cfg(not(loom))]
    drop_late();
}
