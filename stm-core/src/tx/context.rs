//! The per-thread context: the thread's id, its reusable transaction state, the abort count of
//! the progress guarantee, and the "in a transaction" flag.

use super::*;

pub(super) struct ThreadCtx {
    pub(super) id: u64,
    /// Consecutive conflict aborts of the transaction now running on this thread (0 outside
    /// one: `Active` resets it).
    pub(super) aborts: Cell<u32>,
    /// A transaction (or its after-commit actions' caller) is running on this thread.
    pub(super) active: Cell<bool>,
    pub(super) counters: Arc<Counters>,
    /// The transaction state, reused by every attempt of this thread (built on first use):
    /// nothing is allocated, copied or dropped per attempt, and spilled read/write sets keep
    /// their capacity. Reached only through raw pointers while `active` is set.
    pub(super) state: UnsafeCell<Option<State>>,
    /// `TBox` values that the epoch collector retired while this thread was inside a transaction
    /// (collection runs inside any `pin()`): their `Drop` may run a transaction, which must not
    /// start inside another one, so they wait here for the next `release` (or thread exit).
    #[cfg(not(loom))]
    pub(super) late: core::cell::RefCell<Vec<(u64, DropFn)>>,
    /// `late` may be non-empty: `release` must take its slow path.
    pub(super) late_pending: Cell<bool>,
}

impl ThreadCtx {
    pub(super) fn new() -> Self {
        // Thread ids only label threads (locks, logs); std atomic, Relaxed: uniqueness is all
        // that matters and the RMW gives it.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        ThreadCtx {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            aborts: Cell::new(0),
            active: Cell::new(false),
            counters: stats::register(),
            state: UnsafeCell::new(None),
            #[cfg(not(loom))]
            late: core::cell::RefCell::new(Vec::new()),
            late_pending: Cell::new(false),
        }
    }
}

impl Drop for ThreadCtx {
    fn drop(&mut self) {
        stats::unregister(&self.counters);
        #[cfg(not(loom))]
        for (v, d) in self.late.get_mut().drain(..) {
            // SAFETY: retired values whose grace period is over (see `drop_retired`); the
            // thread is exiting, outside any transaction.
            unsafe { d(v) };
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    pub(super) static CTX: ThreadCtx = ThreadCtx::new();
}
#[cfg(loom)]
loom::thread_local! {
    pub(super) static CTX: ThreadCtx = ThreadCtx::new();
}

/// The runtime's id of the calling thread (the `thread` of its events).
pub fn thread_id() -> u64 {
    CTX.with(|c| c.id)
}

/// Clears the thread's "in a transaction" flag and its abort count on every exit, unwinding
/// included.
pub(super) struct Active<'a>(pub(super) &'a ThreadCtx);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.set(false);
        self.0.aborts.set(0);
    }
}

#[cold]
pub(super) fn nested() -> ! {
    panic!(
        "stm: atomically/inevitably called inside a transaction; nested transactions are not \
         supported: pass the outer `&mut Tx` down instead"
    )
}

pub(super) fn backoff(aborts: u32) {
    let mut spin = Spin::new();
    for _ in 0..aborts.min(12) {
        spin.spin();
    }
}
