//! The concurrency primitives the protocol uses, in one place, so that loom can replace them.
//!
//! Under `RUSTFLAGS="--cfg loom"` every atomic, mutex, condition variable and spin hint that the
//! lock / validate / commit protocol and the inevitable hand-over touch comes from `loom`, and
//! `tests/loom.rs` model-checks them. Statistics and the thread registry are not part of the
//! protocol and use `std` directly.

#[cfg(all(loom, feature = "async"))]
pub(crate) use loom::sync::MutexGuard;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex};

#[cfg(all(not(loom), feature = "async"))]
pub(crate) use std::sync::MutexGuard;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex};

/// Releases an orec: a Release store of `v`.
///
/// Under loom, a `swap` instead: loom 0.7.3 may put a plain store between the read and the write
/// of another thread's RMW on the same atomic (tokio-rs/loom#254, fix unreleased in #391), so a
/// waiter's `fetch_or(WAITERS)` could read a version that the committer had already replaced,
/// and sleep forever. As an RMW the release keeps its place in the modification order. (It
/// also continues release sequences that a store would end; no argument in this crate needs a
/// release sequence to end.)
#[inline(always)]
pub(crate) fn release_orec(a: &AtomicU64, v: u64) {
    #[cfg(loom)]
    a.swap(v, Ordering::Release);
    #[cfg(not(loom))]
    a.store(v, Ordering::Release);
}

/// One step of a bounded spin-then-yield wait.
///
/// Waits in this crate are for a lock that its holder releases without waiting on anyone (a
/// committer writing back), so a few spins usually suffice; past that the thread yields. Under
/// loom every step yields, so that the model checker can schedule the other thread.
#[derive(Debug)]
pub(crate) struct Spin {
    step: u32,
}

impl Spin {
    pub(crate) fn new() -> Self {
        Spin { step: 0 }
    }

    /// Spins (or yields) once, a little longer each time.
    #[cfg(not(loom))]
    pub(crate) fn spin(&mut self) {
        if self.step < 7 {
            for _ in 0..(1u32 << self.step) {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        self.step = self.step.saturating_add(1);
    }

    /// Under loom: yield to the model's scheduler.
    #[cfg(loom)]
    pub(crate) fn spin(&mut self) {
        self.step = self.step.saturating_add(1);
        loom::thread::yield_now();
    }

    /// Loads `a` (SeqCst) at the top of a wait loop that this `Spin` paces.
    #[inline]
    pub(crate) fn load(&self, a: &AtomicU64) -> u64 {
        // Acquire: callers pair it with the Release that published the value they wait for.
        // SeqCst: a transaction's orec loads take part in the single total order with the
        // committers' lock CAS and validation loads (see the protocol in `tx/mod.rs`). On x86-64 a
        // SeqCst load is the same plain load as an Acquire one.
        a.load(Ordering::SeqCst)
    }

    /// One step of waiting for `a` to change from `seen` (a lock to be released).
    ///
    /// Spins or yields, as [`Spin::spin`]. Under loom, blocks instead until the value changes:
    /// loom's scheduler may keep a spinning thread running forever (a yield is only a preemption
    /// point), which no fair scheduler does, so the model has committers signal every orec
    /// change (`Runtime::orec_written`) and waiters sleep on that signal.
    #[inline]
    pub(crate) fn spin_on(&mut self, a: &AtomicU64, seen: u64) {
        #[cfg(loom)]
        {
            self.step = self.step.saturating_add(1);
            crate::runtime::runtime().loom_wait_change(a, seen);
        }
        #[cfg(not(loom))]
        {
            let _ = (a, seen);
            self.spin();
        }
    }

    /// How many steps were taken so far.
    pub(crate) fn steps(&self) -> u32 {
        self.step
    }
}

/// A "something happened" event: a mutex and a condition variable, used the classic way.
///
/// A waiter checks its condition while holding the mutex and sleeps on the condition variable
/// (which releases the mutex atomically) until the condition holds. A notifier first makes the
/// condition true, then takes and drops the mutex, then wakes everyone. Either the waiter's check
/// comes after the notifier's critical section (the mutex orders the condition's write before the
/// check), or the waiter is already asleep and is woken. No wake-up is lost, and the argument
/// needs nothing from the atomics involved.
///
/// Every user is a cold path (the inevitable transaction's hand-over, commits that found a
/// `WAITERS` bit, `retry`), so `notify` always taking the mutex costs nothing that matters. An
/// earlier version skipped the mutex when a waiter count was zero; that needs a store-load order
/// between two variables, which loom reported as a lost wake-up.
#[derive(Debug)]
pub(crate) struct Event {
    mutex: Mutex<()>,
    cv: Condvar,
}

impl Event {
    pub(crate) fn new() -> Self {
        Event {
            mutex: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Sleeps until `done()` returns true; `done` runs with the mutex held.
    pub(crate) fn wait_until(&self, mut done: impl FnMut() -> bool) {
        let mut guard = self.mutex.lock().unwrap_or_else(|e| e.into_inner());
        while !done() {
            guard = self.cv.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Wakes every waiter; call it after making their condition true.
    pub(crate) fn notify(&self) {
        drop(self.mutex.lock().unwrap_or_else(|e| e.into_inner()));
        self.cv.notify_all();
    }
}
