//! The concurrency primitives the protocol uses, in one place, so that loom can replace them.
//!
//! Under `RUSTFLAGS="--cfg loom"` every atomic, mutex, condition variable and spin hint that the
//! lock / validate / commit protocol and the inevitable hand-over touch comes from `loom`, and
//! `tests/loom.rs` model-checks them. Statistics and the thread registry are not part of the
//! protocol and use `std` directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex};

/// One step of a bounded spin-then-yield wait.
///
/// Waits in this crate are for a lock that its holder releases without waiting on anyone (a
/// committer writing back), so a few spins usually suffice; past that the thread yields. Under
/// loom every step yields, so that the model checker can schedule the other thread.
#[derive(Debug, Default)]
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

    /// How many steps were taken so far.
    pub(crate) fn steps(&self) -> u32 {
        self.step
    }
}

/// A "something happened" event: a generation counter plus a condition variable, with a waiter
/// count so that `notify` costs one atomic load when nobody waits.
///
/// Protocol (all `SeqCst`, so the four operations below sit in one total order):
/// a waiter calls [`Event::prepare`] (registers, then reads the generation), then checks its own
/// condition, then either [`Event::cancel`]s or [`Event::wait`]s for the generation to move.
/// A notifier first makes the condition true, then calls [`Event::notify`] (bumps the generation,
/// then reads the waiter count). Either the waiter's generation read comes after the bump (so its
/// condition check, later still, sees the change), or the notifier's waiter-count read comes after
/// the registration and it takes the mutex to wake the waiter, who re-checks the generation under
/// that mutex before sleeping. No wake-up is lost.
#[derive(Debug)]
pub(crate) struct Event {
    generation: AtomicU64,
    waiters: AtomicUsize,
    mutex: Mutex<()>,
    cv: Condvar,
}

impl Event {
    pub(crate) fn new() -> Self {
        Event {
            generation: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            mutex: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Registers a waiter and returns the generation to wait past.
    pub(crate) fn prepare(&self) -> u64 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.generation.load(Ordering::SeqCst)
    }

    /// Unregisters a waiter that decided not to sleep.
    pub(crate) fn cancel(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleeps until the generation differs from `seen`, then unregisters.
    pub(crate) fn wait(&self, seen: u64) {
        let mut guard = self.mutex.lock().unwrap_or_else(|e| e.into_inner());
        while self.generation.load(Ordering::SeqCst) == seen {
            guard = self.cv.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Wakes every waiter registered before this call.
    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            drop(self.mutex.lock().unwrap_or_else(|e| e.into_inner()));
            self.cv.notify_all();
        }
    }
}
