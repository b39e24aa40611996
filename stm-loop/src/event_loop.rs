//! [`EventLoop`]: the article's modified Tornado loop.
//!
//! ```text
//! loop {
//!     move due timers to the callbacks
//!     run all pending callbacks as one batch          (TransactionQueue::run)
//!     poll the source (no wait if callbacks are pending, else until the next timer)
//!     run the handlers of all ready tokens as one batch
//! }
//! ```
//!
//! Callbacks and handlers are transactions: they run in parallel, and the result is as if they
//! had run one at a time. Each gets the loop's shared state (`&S`, for the attempt) beside the
//! transaction, so the `TVar`s and collections inside it are theirs to read and write. Their
//! output goes through [`Tx::after_commit`] (or an inevitable transaction), so no I/O is ever
//! rolled back; their input (bytes read from a socket) must be kept outside the transaction by
//! the handler, so that an attempt that runs again does not read again (see `docs/guide.md`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stm_core::{Tx, TxResult};

use crate::queue::{RunStats, TaskPanic, TransactionQueue};
use crate::source::{EventSource, Readiness};

/// A callback as stored: a transaction body that gets the loop's state.
type Callback<S> =
    Box<dyn for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static>;
/// A handler as stored: a transaction body that gets the loop's state and the readiness.
type Handler<S> =
    Box<dyn for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, Readiness) -> TxResult<()> + Send + 'static>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few container operations that cannot leave the data
    // inconsistent; a handler that panicked while holding its own mutex is reported by the
    // batch, and its state is the user's to judge.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Identifies a timer, for [`LoopHandle::cancel_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

struct Timers<S> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Callback<S>>,
}

impl<S> Default for Timers<S> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            pending: HashMap::new(),
        }
    }
}

struct LoopInner<S> {
    callbacks: Mutex<Vec<Callback<S>>>,
    timers: Mutex<Timers<S>>,
    handlers: Mutex<HashMap<usize, Arc<Mutex<Handler<S>>>>>,
    stop: AtomicBool,
    next_timer: AtomicU64,
    wake: Box<dyn Fn() -> io::Result<()> + Send + Sync>,
}

/// A thread-safe handle to an [`EventLoop`]: add callbacks, timers and handlers, stop it.
///
/// Everything takes effect at once, from any thread. Inside a transaction, call these from
/// [`Tx::after_commit`], so that an attempt that is rolled back leaves nothing behind:
///
/// ```
/// # use stm_loop::{EventLoop, ScriptedSource};
/// # let ev = EventLoop::with_workers(ScriptedSource::new(), 1);
/// let h = ev.handle();
/// ev.handle().add_callback(move |tx, _| {
///     let h = h.clone();
///     tx.after_commit(move || h.stop());
///     Ok(())
/// });
/// ```
pub struct LoopHandle<S = ()> {
    inner: Arc<LoopInner<S>>,
}

impl<S> Clone for LoopHandle<S> {
    fn clone(&self) -> Self {
        LoopHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for LoopHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("stopped", &self.is_stopping())
            .finish_non_exhaustive()
    }
}

impl<S> LoopHandle<S> {
    /// Runs `f` as a transaction in the next callback batch.
    ///
    /// ```
    /// use stm_core::TVar;
    /// use stm_loop::{EventLoop, Readiness, ScriptedSource};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let mut ev = EventLoop::with_state(ScriptedSource::new(), Arc::new(TVar::new(0u64))).workers(1);
    /// let h = ev.handle();
    /// // From any thread: the loop runs it in its next turn.
    /// std::thread::spawn(move || h.add_callback(|tx, n| tx.modify(n, |n| n + 1).map(drop)))
    ///     .join()
    ///     .unwrap();
    /// ev.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(ev.state().load(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_callback(
        &self,
        f: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) {
        lock(&self.inner.callbacks).push(Box::new(f));
        self.wake();
    }

    /// Runs `f` in the first callback batch after `delay` has passed. The returned id cancels
    /// it ([`cancel_timer`](Self::cancel_timer)) while it has not fired.
    ///
    /// ```
    /// use stm_loop::{EventLoop, ScriptedSource};
    /// use std::time::Duration;
    ///
    /// let ev = EventLoop::with_workers(ScriptedSource::new(), 1);
    /// let h = ev.handle();
    /// let id = h.call_later(Duration::from_secs(3600), |_tx, _| Ok(()));
    /// assert!(h.cancel_timer(id)); // still pending: cancelled
    /// assert!(!h.cancel_timer(id));
    /// ```
    pub fn call_later(
        &self,
        delay: Duration,
        f: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) -> TimerId {
        let now = Instant::now();
        // A delay too long to represent is "never" in practice: park it far ahead.
        let at = now
            .checked_add(delay)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 100));
        self.call_at(at, f)
    }

    /// Runs `f` in the first callback batch at or after `at`.
    pub fn call_at(
        &self,
        at: Instant,
        f: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) -> TimerId {
        // Relaxed: ids only need to be unique, which the RMW guarantees.
        let id = self.inner.next_timer.fetch_add(1, Ordering::Relaxed);
        let mut t = lock(&self.inner.timers);
        t.heap.push(Reverse((at, id)));
        t.pending.insert(id, Box::new(f));
        drop(t);
        self.wake();
        TimerId(id)
    }

    /// Cancels a timer that has not fired yet; returns whether it was still pending.
    pub fn cancel_timer(&self, id: TimerId) -> bool {
        lock(&self.inner.timers).pending.remove(&id.0).is_some()
    }

    /// Sets the handler for `token` (replacing any previous one). It runs as a transaction
    /// whenever the source reports the token ready.
    ///
    /// From inside a transaction (a callback accepting a connection, say), register it after
    /// the commit:
    ///
    /// ```
    /// use stm_core::TVar;
    /// use stm_loop::{EventLoop, Readiness, ScriptedSource};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let source = ScriptedSource::new();
    /// let script = source.handle();
    /// let mut ev = EventLoop::with_state(source, Arc::new(TVar::new(0u32))).workers(1);
    /// let h = ev.handle();
    /// ev.add_callback(move |tx, _| {
    ///     let h = h.clone();
    ///     tx.after_commit(move || {
    ///         h.set_handler(5, |tx, reads, _r| tx.modify(reads, |n| n + 1).map(drop))
    ///     });
    ///     Ok(())
    /// });
    /// ev.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(ev.handle().handlers(), 1);
    /// script.push(vec![Readiness { token: 5, readable: true, ..Default::default() }]);
    /// ev.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(ev.state().load(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_handler(
        &self,
        token: usize,
        h: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, Readiness) -> TxResult<()> + Send + 'static,
    ) {
        lock(&self.inner.handlers).insert(token, Arc::new(Mutex::new(Box::new(h))));
    }

    /// Removes the handler for `token`; returns whether there was one.
    pub fn remove_handler(&self, token: usize) -> bool {
        lock(&self.inner.handlers).remove(&token).is_some()
    }

    /// The number of handlers registered.
    pub fn handlers(&self) -> usize {
        lock(&self.inner.handlers).len()
    }

    /// Asks the loop to stop: [`EventLoop::run`] returns after the current turn (a poll in
    /// progress is woken).
    ///
    /// ```
    /// use stm_loop::{EventLoop, ScriptedSource};
    /// use std::time::Duration;
    ///
    /// let mut ev = EventLoop::with_workers(ScriptedSource::new(), 1);
    /// let h = ev.handle();
    /// let stopper = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(10));
    ///     h.stop()
    /// });
    /// ev.run()?; // waits in the poll until the stop wakes it
    /// stopper.join().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stop(&self) {
        // Release: pairs with the Acquire load in `EventLoop::run`; nothing else depends on it.
        self.inner.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether a stop was asked for and `run` has not returned yet.
    pub fn is_stopping(&self) -> bool {
        // Acquire: pairs with the Release in `stop`.
        self.inner.stop.load(Ordering::Acquire)
    }

    /// Interrupts the source's poll.
    pub fn wake(&self) {
        if let Err(e) = (self.inner.wake)() {
            tracing::warn!(error = %e, "stm-loop: waking the event source failed");
        }
    }
}

/// What one turn did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnStats {
    /// The callback batch (timers that fired included).
    pub callbacks: RunStats,
    /// Ready records returned by the poll.
    pub events: usize,
    /// The handler batch.
    pub handlers: RunStats,
}

/// An event loop whose callbacks and handlers run as parallel transactions.
///
/// `Src` is the [`EventSource`]; `S` is the state shared by every callback and handler, handed
/// to each as `&S` for the attempt (`()` for [`new`](EventLoop::new) and
/// [`with_workers`](EventLoop::with_workers); choose it with [`with_state`](Self::with_state)).
///
/// ```
/// use stm_core::TVar;
/// use stm_loop::{EventLoop, Readiness, ScriptedSource};
/// use std::sync::Arc;
///
/// let source = ScriptedSource::new();
/// let script = source.handle();
/// let seen = Arc::new(TVar::new(0u64));
/// let mut ev = EventLoop::with_state(source, seen.clone()).workers(2);
/// for token in 0..4 {
///     ev.set_handler(token, |tx, seen, r| {
///         tx.modify(seen, |s| s + r.token as u64 + 1)?;
///         Ok(())
///     });
/// }
/// script.push((0..4).map(|token| Readiness { token, readable: true, ..Default::default() }).collect());
/// let turn = ev.run_once(None)?;
/// assert_eq!(turn.handlers.commits, 4);
/// assert_eq!(seen.load(), 10);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct EventLoop<Src: EventSource, S: Send + Sync + 'static = ()> {
    source: Src,
    queue: TransactionQueue<S>,
    inner: Arc<LoopInner<S>>,
    events: Vec<Readiness>,
    turns: u64,
    /// Keeps the conflict log recording while this loop lives (`STM_LOG`).
    #[cfg(feature = "log")]
    _log: Option<Arc<stm_log::LogGuard>>,
}

impl<Src: EventSource, S: Send + Sync + 'static> fmt::Debug for EventLoop<Src, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("queue", &self.queue)
            .field("turns", &self.turns)
            .finish_non_exhaustive()
    }
}

impl<Src: EventSource> EventLoop<Src> {
    /// A loop over `source` with no state (`()`) and one worker per core.
    ///
    /// ```
    /// use stm_loop::{EventLoop, ScriptedSource};
    /// let ev = EventLoop::new(ScriptedSource::new());
    /// assert_eq!(ev.turns(), 0);
    /// ```
    pub fn new(source: Src) -> Self {
        Self::with_queue(source, TransactionQueue::new())
    }

    /// A loop over `source` with no state (`()`) and `workers` workers (the loop's thread is
    /// one of them).
    pub fn with_workers(source: Src, workers: usize) -> Self {
        Self::with_queue(source, TransactionQueue::with_workers(workers))
    }
}

impl<Src: EventSource, S: Send + Sync + 'static> EventLoop<Src, S> {
    /// A loop over `source` whose callbacks and handlers all get `&state`, with one worker per
    /// core (choose another number with [`workers`](Self::workers)).
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// use stm_loop::{EventLoop, ScriptedSource};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// struct App {
    ///     sessions: TMap<u64, String>,
    /// }
    /// let app = Arc::new(App { sessions: TMap::new() });
    /// let mut ev = EventLoop::with_state(ScriptedSource::new(), app.clone()).workers(1);
    /// ev.add_callback(|tx, app| app.sessions.insert(tx, 1, "ann".into()).map(drop));
    /// ev.run_once(Some(Duration::ZERO))?;
    /// assert!(atomically(|tx| app.sessions.contains_key(tx, &1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_state(source: Src, state: Arc<S>) -> Self {
        Self::with_queue(source, TransactionQueue::with_state(state))
    }

    /// The number of workers (builder; the loop's thread is one of them), as
    /// [`TransactionQueue::workers`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.queue.set_workers(workers);
        self
    }

    /// A loop over `source` running its batches on `queue` (ordered or not); the loop's state
    /// is the queue's ([`TransactionQueue::state`]).
    ///
    /// If the environment sets `STM_LOG`, the conflict log is recorded there (see
    /// `docs/guide.md`; feature `log`, on by default: without it `STM_LOG` is ignored).
    pub fn with_queue(source: Src, queue: TransactionQueue<S>) -> Self {
        #[cfg(feature = "log")]
        let log = crate::init_conflict_log();
        let waker = source.waker();
        let inner = Arc::new(LoopInner {
            callbacks: Mutex::new(Vec::new()),
            timers: Mutex::new(Timers::default()),
            handlers: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            next_timer: AtomicU64::new(0),
            wake: Box::new(move || Src::wake(&waker)),
        });
        EventLoop {
            source,
            queue,
            inner,
            events: Vec::new(),
            turns: 0,
            #[cfg(feature = "log")]
            _log: log,
        }
    }

    /// The thread-safe handle.
    pub fn handle(&self) -> LoopHandle<S> {
        LoopHandle {
            inner: self.inner.clone(),
        }
    }

    /// The source (for registering with it).
    pub fn source(&self) -> &Src {
        &self.source
    }

    /// The source, mutably.
    pub fn source_mut(&mut self) -> &mut Src {
        &mut self.source
    }

    /// The queue the batches run on.
    pub fn queue(&self) -> &TransactionQueue<S> {
        &self.queue
    }

    /// The state every callback and handler gets.
    pub fn state(&self) -> &Arc<S> {
        self.queue.state()
    }

    /// Turns run so far.
    pub fn turns(&self) -> u64 {
        self.turns
    }

    /// Shorthand for [`LoopHandle::add_callback`].
    ///
    /// ```
    /// use stm_loop::{EventLoop, ScriptedSource};
    /// use std::time::Duration;
    ///
    /// let mut ev = EventLoop::with_workers(ScriptedSource::new(), 1);
    /// ev.add_callback(|_tx, _| Ok(()));
    /// let turn = ev.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(turn.callbacks.commits, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_callback(
        &self,
        f: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) {
        self.handle().add_callback(f);
    }

    /// Shorthand for [`LoopHandle::call_later`].
    ///
    /// ```
    /// use stm_core::TVar;
    /// use stm_loop::{EventLoop, Readiness, ScriptedSource};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let mut ev = EventLoop::with_state(ScriptedSource::new(), Arc::new(TVar::new(false))).workers(1);
    /// ev.call_later(Duration::from_millis(5), |tx, fired| tx.write(fired, true));
    /// // Each turn's poll waits at most until the timer is due; the turn after that fires it.
    /// while !ev.state().load() {
    ///     ev.run_once(Some(Duration::from_millis(50)))?;
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn call_later(
        &self,
        delay: Duration,
        f: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) -> TimerId {
        self.handle().call_later(delay, f)
    }

    /// Shorthand for [`LoopHandle::call_at`].
    pub fn call_at(
        &self,
        at: Instant,
        f: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) -> TimerId {
        self.handle().call_at(at, f)
    }

    /// Shorthand for [`LoopHandle::set_handler`].
    ///
    /// ```
    /// use stm_core::TVar;
    /// use stm_loop::{EventLoop, Readiness, ScriptedSource};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let source = ScriptedSource::new();
    /// let script = source.handle();
    /// let mut ev = EventLoop::with_state(source, Arc::new(TVar::new(0u32))).workers(1);
    /// ev.set_handler(7, |tx, writable, r| {
    ///     tx.modify(writable, |n| n + u32::from(r.writable)).map(drop)
    /// });
    /// script.push(vec![Readiness { token: 7, writable: true, ..Default::default() }]);
    /// let turn = ev.run_once(Some(Duration::ZERO))?;
    /// assert_eq!((turn.events, turn.handlers.commits), (1, 1));
    /// assert_eq!(ev.state().load(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_handler(
        &self,
        token: usize,
        h: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, Readiness) -> TxResult<()> + Send + 'static,
    ) {
        self.handle().set_handler(token, h);
    }

    /// Runs turns until [`LoopHandle::stop`] is called, then clears the stop request (so the
    /// loop can be run again) and returns. An error of the source ends the loop with it.
    ///
    /// A callback or handler that panics does not stop the loop: its batch finishes, the panic
    /// is reported as a `tracing` error event, and the next turn starts.
    ///
    /// ```
    /// use stm_loop::{EventLoop, ScriptedSource};
    /// use std::time::Duration;
    ///
    /// let mut ev = EventLoop::with_workers(ScriptedSource::new(), 1);
    /// let h = ev.handle();
    /// ev.call_later(Duration::from_millis(1), move |tx, _| {
    ///     let h = h.clone();
    ///     tx.after_commit(move || h.stop());
    ///     Ok(())
    /// });
    /// ev.run()?; // returns once the timer's callback has committed
    /// assert!(ev.turns() >= 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run(&mut self) -> io::Result<()> {
        // Acquire: pairs with the Release in `LoopHandle::stop`.
        while !self.inner.stop.load(Ordering::Acquire) {
            self.run_once(None)?;
        }
        // Release: like `stop`'s store, pairs with the Acquire loads of the flag.
        self.inner.stop.store(false, Ordering::Release);
        Ok(())
    }

    /// One turn. `max_wait` bounds the poll's wait (`None`: until an event, a timer or a wake).
    ///
    /// ```
    /// use stm_loop::{EventLoop, ScriptedSource};
    /// use std::time::Duration;
    ///
    /// let mut ev = EventLoop::with_workers(ScriptedSource::new(), 1);
    /// // Nothing to do and nothing ready: with `Some(ZERO)` the poll returns at once.
    /// let turn = ev.run_once(Some(Duration::ZERO))?;
    /// assert_eq!((turn.callbacks.tasks, turn.events, turn.handlers.tasks), (0, 0, 0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run_once(&mut self, max_wait: Option<Duration>) -> io::Result<TurnStats> {
        self.turns += 1;
        let span = tracing::debug_span!("turn", n = self.turns);
        let _enter = span.enter();
        let mut stats = TurnStats::default();

        // 1. Due timers join the callbacks; 2. run the callbacks as one batch.
        let now = Instant::now();
        self.fire_due_timers(now);
        let callbacks = std::mem::take(&mut *lock(&self.inner.callbacks));
        if !callbacks.is_empty() {
            let span = tracing::debug_span!("batch", kind = "callbacks", tasks = callbacks.len());
            let _e = span.enter();
            for cb in callbacks {
                self.queue.add(cb);
            }
            stats.callbacks = report(self.queue.try_run(), "callback");
        }

        // 3. Poll: not at all if callbacks are pending or a stop was asked, else until the next
        //    timer (or `max_wait`).
        // Acquire: pairs with the Release in `LoopHandle::stop`.
        let stopping = self.inner.stop.load(Ordering::Acquire);
        let timeout = if stopping || !lock(&self.inner.callbacks).is_empty() {
            Some(Duration::ZERO)
        } else {
            let next = self.next_deadline();
            let until_timer = next.map(|at| at.saturating_duration_since(Instant::now()));
            match (until_timer, max_wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        self.events.clear();
        {
            let _p =
                tracing::trace_span!("poll", timeout_us = timeout.map(|t| t.as_micros() as u64))
                    .entered();
            self.source.poll(&mut self.events, timeout)?;
        }
        stats.events = self.events.len();

        // 4. The handlers of all ready tokens as one batch (one run per token, flags merged).
        if !self.events.is_empty() {
            let mut merged: Vec<Readiness> = Vec::with_capacity(self.events.len());
            let mut index: HashMap<usize, usize> = HashMap::with_capacity(self.events.len());
            for r in &self.events {
                match index.get(&r.token) {
                    Some(&i) => merged[i].merge(r),
                    None => {
                        index.insert(r.token, merged.len());
                        merged.push(*r);
                    }
                }
            }
            let handlers = lock(&self.inner.handlers);
            let mut added = 0usize;
            for r in merged {
                if let Some(h) = handlers.get(&r.token) {
                    let h = h.clone();
                    self.queue.add(move |tx, state| {
                        let mut h = lock(&h);
                        (*h)(tx, state, r)
                    });
                    added += 1;
                } else {
                    tracing::trace!(
                        token = r.token,
                        "stm-loop: event for a token with no handler"
                    );
                }
            }
            drop(handlers);
            if added > 0 {
                let span = tracing::debug_span!("batch", kind = "handlers", tasks = added);
                let _e = span.enter();
                stats.handlers = report(self.queue.try_run(), "handler");
            }
        }
        Ok(stats)
    }

    fn fire_due_timers(&self, now: Instant) {
        let mut t = lock(&self.inner.timers);
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = t.heap.peek().copied() {
            if at > now {
                break;
            }
            t.heap.pop();
            if let Some(cb) = t.pending.remove(&id) {
                due.push(cb);
            }
        }
        drop(t);
        if !due.is_empty() {
            lock(&self.inner.callbacks).extend(due);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut t = lock(&self.inner.timers);
        // Drop cancelled timers from the top, so they do not shorten the wait.
        while let Some(Reverse((at, id))) = t.heap.peek().copied() {
            if t.pending.contains_key(&id) {
                return Some(at);
            }
            t.heap.pop();
        }
        None
    }
}

impl<Src: EventSource, S: Send + Sync + 'static> Drop for EventLoop<Src, S> {
    /// Drops every handler, callback and timer: they often hold handles to the loop (a cycle
    /// through [`LoopHandle`]) and the sockets they serve, which close now.
    fn drop(&mut self) {
        let handlers = std::mem::take(&mut *lock(&self.inner.handlers));
        let callbacks = std::mem::take(&mut *lock(&self.inner.callbacks));
        let timers = std::mem::take(&mut *lock(&self.inner.timers));
        drop((handlers, callbacks, timers));
    }
}

fn report(r: Result<RunStats, TaskPanic>, what: &str) -> RunStats {
    match r {
        Ok(s) => s,
        Err(p) => {
            tracing::error!(
                panics = p.stats().panics,
                first = p.message().unwrap_or("(non-string payload)"),
                "stm-loop: a {what} panicked; the rest of its batch ran"
            );
            p.stats()
        }
    }
}
