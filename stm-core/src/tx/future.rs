//! `atomically_async`: a transaction whose `retry` is awaited instead of blocking the thread
//! (feature `async`; no async runtime is needed, any executor's `Waker` will do).
//!
//! # The protocol
//!
//! Every poll runs whole attempts synchronously, exactly as [`atomically`] does. When an attempt
//! retries, its read set (orec, version) is copied into the future, and the future waits:
//!
//! 1. **Register**: under the runtime's waker-table mutex, a clone of the task's `Waker` is filed
//!    under every orec of the read set, with the future's registration id. (The clones are made,
//!    and dropped, outside the mutex: they run the executor's code.)
//! 2. **Check**: for each orec, `fetch_or(WAITERS, SeqCst)`. If one is locked or holds another
//!    version, a commit has already changed (or is changing) a word read: unregister and run the
//!    body again now. Otherwise return `Pending`.
//!
//! A committer that locks an orec whose value has `WAITERS` set takes, after releasing its
//! orecs, every `Waker` filed under it, and wakes them once the transaction has ended (a waker
//! may run code that starts a transaction of its own).
//!
//! **No wake-up is lost.** Take a commit that writes a word read by the waiting attempt, at
//! orec `o`. Its lock CAS on `o` and the future's `fetch_or` on `o` are RMWs of one atomic, so
//! one comes first in `o`'s modification order.
//! - CAS first: the `fetch_or` returns the locked value, or the newer version after the release:
//!   the future sees the change and runs again (step 2).
//! - `fetch_or` first: every later write to `o` before that CAS is either another waiter's RMW
//!   (which keeps the bit and continues the release sequence) or an earlier committer's lock and
//!   Release store (which found the bit and wakes the future itself, or, when it rolled back,
//!   stored the bit back). So the CAS reads `WAITERS`, and synchronises with the `fetch_or` (or
//!   with a Release store that happened after it): the registration, done before the
//!   `fetch_or`, happens before the committer takes the table's mutex, and it finds the waker.
//!   It wakes the task, which polls, finds a changed word, and runs again.
//!
//! A registration is removed when the future is polled again (by whoever woke it) and when it
//! is dropped, so a cancelled future leaves no `Waker` behind. A `WAITERS` bit outlives it and
//! costs the next committer of that orec one look at the table.

use super::run::{Mode, execute};
use super::*;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

/// The runtime's table of waiting futures: orec address -> (registration id, waker).
#[derive(Debug, Default)]
pub(crate) struct WakerTable {
    by_orec: HashMap<usize, Vec<(u64, Waker)>>,
    next_id: u64,
}

#[inline]
fn key(orec: &AtomicU64) -> usize {
    orec as *const AtomicU64 as usize
}

impl Runtime {
    fn waker_table(&self) -> crate::sync::MutexGuard<'_, WakerTable> {
        // A panic while the table is held (an allocation failure) leaves it consistent: every
        // method below changes it with single `Vec`/`HashMap` operations.
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Step 1 and 2 of the protocol (module doc), for the orecs `keys` (those of `wait`,
    /// sorted, without repeats): `Some(id)` if the future may sleep, `None` if a word read has
    /// changed already (nothing stays registered then).
    fn register(&self, waker: &Waker, keys: &[usize], wait: &WaitList) -> Option<u64> {
        // Cloned before the mutex is taken: a waker's `clone` (and `drop`, see `unregister`) is
        // the executor's code, which must not run while the table is locked.
        let mut clones: Vec<Waker> = keys.iter().map(|_| waker.clone()).collect();
        let id = {
            let mut t = self.waker_table();
            t.next_id += 1;
            let id = t.next_id;
            for (&k, w) in keys.iter().zip(clones.drain(..)) {
                t.by_orec.entry(k).or_default().push((id, w));
            }
            id
        };
        // After the mutex is released: the committer that finds WAITERS takes the mutex after
        // its lock CAS, which synchronises with this RMW (module doc).
        let changed = wait.iter().any(|&(orec, version)| {
            // SeqCst RMW: ordered with the committers' lock CAS on the same orec, see above.
            let o = orec.fetch_or(WAITERS, Ordering::SeqCst);
            self.orec_written();
            o & LOCKED != 0 || o & !FLAGS != version
        });
        if changed {
            self.unregister(id, keys);
            None
        } else {
            Some(id)
        }
    }

    /// Removes what `register` filed under `id` (what a committer has not taken already).
    fn unregister(&self, id: u64, keys: &[usize]) {
        let mut removed = Vec::new();
        {
            let mut t = self.waker_table();
            for k in keys {
                if let Some(v) = t.by_orec.get_mut(k) {
                    removed.extend(v.extract_if(.., |e| e.0 == id));
                    if v.is_empty() {
                        t.by_orec.remove(k);
                    }
                }
            }
        }
        // The wakers are dropped here, after the mutex.
        drop(removed);
    }

    /// Called by a committer that released `orec` with `WAITERS` set: moves the wakers filed
    /// under it to `out`, to be woken after the transaction has ended.
    pub(super) fn take_wakers(&self, orec: &AtomicU64, out: &mut Vec<Waker>) {
        let mut t = self.waker_table();
        if let Some(v) = t.by_orec.remove(&key(orec)) {
            out.extend(v.into_iter().map(|(_, w)| w));
        }
    }
}

impl State {
    /// After a commit that released orecs with `WAITERS` set: collects the async waiters of
    /// those orecs (the blocked threads are woken through `Runtime::commits`).
    #[cold]
    pub(super) fn collect_wakers(&mut self) {
        let rt = self.rt;
        for w in &self.writes {
            if w.prev & WAITERS != 0 {
                rt.take_wakers(w.orec, &mut self.to_wake);
            }
        }
    }
}

/// The futures a commit collected, woken when this is dropped: after the transaction has
/// ended, or while unwinding from a panic in a `Drop` that `release` ran.
pub(super) struct Wakeups(pub(super) Vec<Waker>);

impl Drop for Wakeups {
    fn drop(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

/// The future of [`try_atomically_async`] (and, wrapped, of [`atomically_async`]).
///
/// Each poll runs the body to a commit, a user error, or a `retry`. On `retry` it returns
/// `Pending` until a commit changes a word the retrying attempt read. It is `Send` when the
/// body is, and it is `Unpin`. Dropping it while it waits removes its waker from the runtime.
#[must_use = "futures do nothing unless polled"]
pub struct TxFuture<F, R, E> {
    body: F,
    /// The caller of the entry point: decides whether the first attempt keeps a read set (see
    /// `run::execute`).
    site: SourceLocation,
    /// The read set of the last attempt, which retried (empty when not waiting).
    wait: WaitList,
    /// The distinct orecs of `wait` (their addresses, sorted).
    keys: Vec<usize>,
    /// The waker registration, while waiting.
    registered: Option<u64>,
    /// It returned `Ready`: polling it again is a bug of the caller (as for an `async fn`).
    done: bool,
    _out: PhantomData<fn() -> Result<R, E>>,
}

impl<F, R, E> core::fmt::Debug for TxFuture<F, R, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxFuture")
            .field("waiting", &self.registered.is_some())
            .field("words_read", &self.wait.len())
            .finish_non_exhaustive()
    }
}

// The body is only ever called through `&mut F`, never pinned: no field is structurally pinned.
impl<F, R, E> Unpin for TxFuture<F, R, E> {}

impl<F, R, E> TxFuture<F, R, E> {
    fn unregister(&mut self) {
        if let Some(id) = self.registered.take() {
            runtime().unregister(id, &self.keys);
        }
    }
}

impl<'env, F, R, E> Future for TxFuture<F, R, E>
where
    F: for<'t> FnMut(&mut Tx<'t, 'env>) -> Result<R, TxError<E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R, E>> {
        let this = self.get_mut();
        assert!(!this.done, "`TxFuture` polled after completion");
        let rt = runtime();
        if this.registered.is_some() {
            // Woken (or polled for another reason): wait on, unless a word read changed.
            this.unregister();
            if let Some(id) = rt.register(cx.waker(), &this.keys, &this.wait) {
                this.registered = Some(id);
                return Poll::Pending;
            }
        }
        loop {
            this.wait.clear();
            match execute(
                &mut this.body,
                Mode::Normal,
                this.site,
                Some(&mut this.wait),
            ) {
                Some(r) => {
                    this.done = true;
                    this.wait = Vec::new();
                    this.keys = Vec::new();
                    return Poll::Ready(r);
                }
                None => {
                    this.keys.clear();
                    this.keys.extend(this.wait.iter().map(|&(o, _)| key(o)));
                    this.keys.sort_unstable();
                    this.keys.dedup();
                    if let Some(id) = rt.register(cx.waker(), &this.keys, &this.wait) {
                        this.registered = Some(id);
                        return Poll::Pending;
                    }
                    // A word read has changed since: run the body again.
                }
            }
        }
    }
}

impl<F, R, E> Drop for TxFuture<F, R, E> {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Like [`try_atomically`], as a future: [`Tx::retry`] returns `Pending` instead of blocking the
/// thread, until a commit changes a word the retrying attempt read (feature `async`).
///
/// Each poll runs whole attempts synchronously, so the body cannot `.await`; keep it short, as a
/// poll should be. The future is `Send` when the body is, and needs no particular executor.
///
/// ```
/// use stm_core::{TVar, TxError, try_atomically_async};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// let stock = TVar::new(3u32);
/// let r: Result<u32, &str> = block_on(try_atomically_async(|tx| {
///     let s = tx.read(&stock)?;
///     if s == 0 {
///         return Err(TxError::User("sold out"));
///     }
///     tx.write(&stock, s - 1)?;
///     Ok(s - 1)
/// }));
/// assert_eq!(r, Ok(2));
/// ```
#[track_caller]
pub fn try_atomically_async<'env, R, E, F>(f: F) -> TxFuture<F, R, E>
where
    F: for<'t> FnMut(&mut Tx<'t, 'env>) -> Result<R, TxError<E>>,
{
    TxFuture {
        body: f,
        site: Location::caller(),
        wait: Vec::new(),
        keys: Vec::new(),
        registered: None,
        done: false,
        _out: PhantomData,
    }
}

/// Like [`atomically`], as a future: [`Tx::retry`] returns `Pending` instead of blocking the
/// thread, until a commit changes a word the retrying attempt read (feature `async`).
///
/// Each poll runs whole attempts synchronously (as [`atomically`] does), so the body cannot
/// `.await`; keep it short, as a poll should be. The future is `Send` when the body is, needs no
/// particular executor, and leaves nothing registered when dropped while it waits.
///
/// In a spawned task, let the task own the shared state and the body borrow it:
///
/// ```
/// use stm_core::{TVar, atomically, atomically_async};
/// use std::sync::Arc;
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct T(std::thread::Thread);
/// #     impl std::task::Wake for T { fn wake(self: Arc<Self>) { self.0.unpark() } }
/// #     let waker = std::task::Waker::from(Arc::new(T(std::thread::current())));
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
/// #         std::thread::park();
/// #     }
/// # }
/// let jobs = Arc::new(TVar::new(0u32));
/// let consumer = {
///     let jobs = jobs.clone();
///     async move {
///         // Waits, without blocking its thread, until there is a job.
///         atomically_async(|tx| {
///             let n = tx.read(&*jobs)?;
///             if n == 0 {
///                 return tx.retry();
///             }
///             tx.write(&*jobs, n - 1)?;
///             Ok(n)
///         })
///         .await
///     }
/// };
/// let producer = std::thread::spawn(move || atomically(|tx| tx.write(&*jobs, 5)));
/// assert_eq!(block_on(consumer), 5);
/// producer.join().unwrap();
/// ```
#[track_caller]
pub fn atomically_async<'env, R, F>(mut f: F) -> impl Future<Output = R>
where
    F: for<'t> FnMut(&mut Tx<'t, 'env>) -> TxResult<R>,
{
    let inner = try_atomically_async(move |tx: &mut Tx<'_, 'env>| {
        f(tx).map_err(TxError::<core::convert::Infallible>::Abort)
    });
    async move {
        match inner.await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}
