//! [`EventLoop`]: the article's modified Tornado loop, without its batch barrier.
//!
//! ```text
//! loop {                                   (one turn)
//!     move due timers to the callbacks
//!     hand pending callbacks and ready handlers to free workers
//!     poll the source (no wait if callbacks are pending and a worker is free, else until the
//!         next timer, an event, or a wake: a worker finishing wakes the poll)
//!     hand the handlers of the tokens that became ready to free workers
//! }
//! ```
//!
//! Callbacks and handlers are transactions: they run in parallel on the loop's workers, and the
//! result is as if they had run one at a time. A slow handler occupies one worker; the loop goes
//! on polling and the other workers go on serving. A token's handler never runs twice at once:
//! a readiness that arrives while it runs is merged and delivered when it has finished. In
//! ordered mode (a loop built on an ordered [`TransactionQueue`]) each turn instead runs its
//! callbacks and then its handlers as one batch each, in order, and polls again only when the
//! batch has committed: that is what the serial order costs.
//!
//! Each callback and handler gets the loop's shared state (`&S`, for the attempt) beside the
//! transaction, so the `TVar`s and collections inside it are theirs to read and write. Their
//! output goes through [`Tx::after_commit`] (or an inevitable transaction), so no I/O is ever
//! rolled back; their input (bytes read from a socket) must be kept outside the transaction by
//! the handler, so that an attempt that runs again does not read again (see `docs/guide.md`).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stm_core::{Tx, TxResult, atomically};

use crate::queue::{RunStats, TaskPanic, TransactionQueue};
use crate::source::{EventSource, Readiness};

/// A callback as stored: a transaction body that gets the loop's state.
type Callback<S> =
    Box<dyn for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static>;
/// A handler as stored: a transaction body that gets the loop's state and the readiness.
type Handler<S> =
    Box<dyn for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, Readiness) -> TxResult<()> + Send + 'static>;

/// Boxes a callback; a function, so that the closure's parameter types come from this bound.
fn callback<S, F>(f: F) -> Callback<S>
where
    F: for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
{
    Box::new(f)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few container operations that cannot leave the data
    // inconsistent (the jobs channel's receiver included); a handler that panicked while
    // holding its own mutex is reported by the loop, and its state is the user's to judge.
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
    /// Unordered mode: the loop's thread is in (or about to enter) the poll, so a worker that
    /// finishes must wake it.
    polling: AtomicBool,
    /// Unordered mode: completions sent by the workers (compared with those the loop received).
    finished: AtomicU64,
}

impl<S> LoopInner<S> {
    fn wake(&self) {
        if let Err(e) = (self.wake)() {
            tracing::warn!(error = %e, "stm-loop: waking the event source failed");
        }
    }
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
    /// Runs `f` as a transaction in the loop's next turn (on the next free worker; in ordered
    /// mode, in the next callback batch).
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

    /// Runs `f` as a callback in the first turn after `delay` has passed. The returned id
    /// cancels it ([`cancel_timer`](Self::cancel_timer)) while it has not fired.
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

    /// Runs `f` as a callback in the first turn at or after `at`.
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
    /// whenever the source reports the token ready, never twice at once: a readiness that
    /// arrives while it runs is merged and delivered when it has finished.
    ///
    /// A readiness polled before the handler is set, while the callback or handler that sets
    /// it is still running (it registered the socket, then sets the handler, in an after-commit
    /// action), is kept and delivered; one for a token that has no handler once they have
    /// finished is dropped.
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
    /// progress is woken), once the callbacks and handlers it has started, and those of the
    /// readiness it has already polled, have finished.
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
        self.inner.wake();
    }
}

/// What one [`EventLoop::run_once`] turn did.
///
/// A turn of `run_once` starts the callbacks that are pending (timers that fired included),
/// polls once, starts the handlers of the tokens that poll reported, and returns when every
/// callback and handler it started has finished: `callbacks` and `handlers` count exactly
/// those. (In ordered mode they are the turn's two batches.) The turns of [`EventLoop::run`]
/// do not wait for their handlers, so a slow one never holds up the poll; [`EventLoop::turns`]
/// counts both kinds.
///
/// In unordered mode `elapsed` is the callbacks' (or handlers') summed running time on the
/// workers; in ordered mode the wall-clock time of the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnStats {
    /// The callbacks run (timers that fired included).
    pub callbacks: RunStats,
    /// Ready records returned by the poll.
    pub events: usize,
    /// The handler runs (one per ready token, its records merged).
    pub handlers: RunStats,
}

// ---------------------------------------------------------------------------------------------
// Unordered mode: the loop's workers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum JobKind {
    Callback,
    Handler(usize),
}

/// A callback or handler run, handed to a worker.
struct Job<S> {
    kind: JobKind,
    /// Dispatch order, so the loop knows which jobs were running when something happened.
    seq: u64,
    body: Callback<S>,
}

/// A worker's report of a finished job.
struct Done {
    kind: JobKind,
    seq: u64,
    aborts: u64,
    /// `Some(message)` if the job panicked.
    panic: Option<String>,
    elapsed: Duration,
}

/// The worker threads of an unordered loop: started by its first job, stopped and joined when
/// dropped (after the jobs they run have finished).
struct Workers<S> {
    jobs: Option<Sender<Job<S>>>,
    threads: Vec<JoinHandle<()>>,
}

impl<S: Send + Sync + 'static> Workers<S> {
    fn start(count: usize, state: &Arc<S>, done: &Sender<Done>, inner: &Arc<LoopInner<S>>) -> Self {
        let (tx, rx) = mpsc::channel::<Job<S>>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..count)
            .map(|i| {
                let (rx, state, done, inner) =
                    (rx.clone(), state.clone(), done.clone(), inner.clone());
                std::thread::Builder::new()
                    .name(format!("stm-loop-worker-{i}"))
                    .spawn(move || worker_main(&rx, &state, &done, &inner))
                    .expect("stm-loop: cannot start a worker thread")
            })
            .collect();
        Workers {
            jobs: Some(tx),
            threads,
        }
    }

    fn count(&self) -> usize {
        self.threads.len()
    }

    fn submit(&self, job: Job<S>) {
        // The workers only stop when `jobs` is dropped, and never panic (jobs run under
        // `catch_unwind`): the receiver is alive.
        let sent = self.jobs.as_ref().map(|j| j.send(job));
        assert!(
            matches!(sent, Some(Ok(()))),
            "stm-loop: the worker threads are gone"
        );
    }
}

impl<S> Drop for Workers<S> {
    fn drop(&mut self) {
        // Closing the channel ends every worker's `recv` once the queued jobs are done.
        self.jobs = None;
        for t in self.threads.drain(..) {
            // A worker never panics (jobs run under catch_unwind); nothing to report.
            let _ = t.join();
        }
    }
}

fn worker_main<S>(
    jobs: &Mutex<Receiver<Job<S>>>,
    state: &S,
    done: &Sender<Done>,
    inner: &LoopInner<S>,
) {
    loop {
        // The idle workers queue on the mutex; the one holding it waits for the next job.
        let Ok(Job {
            kind,
            seq,
            mut body,
        }) = lock(jobs).recv()
        else {
            return;
        };
        let start = Instant::now();
        let mut attempts = 0u64;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| {
                attempts += 1;
                body(tx, state)
            })
        }));
        let panic = outcome.err().map(|p| {
            p.downcast_ref::<&'static str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string payload)".to_owned())
        });
        // The last clone of a handler that `set_handler` replaced meanwhile may be dropped here,
        // running user `Drop` code: a panic there must not end the worker, whose `Done` the
        // loop waits for.
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(body)));
        let panic = panic.or_else(|| {
            dropped
                .err()
                .map(|_| "a handler's Drop panicked".to_owned())
        });
        let aborts = if panic.is_some() {
            0
        } else {
            attempts.saturating_sub(1)
        };
        // SeqCst, with the loop's SeqCst store of `polling` and load of `finished`: either this
        // load sees the loop polling (and the wake below, after the send, interrupts the poll),
        // or the loop's load sees this count and does not wait in the poll. Counted before the
        // send, so a loop that waits in `recv` (polling false) is never woken needlessly.
        inner.finished.fetch_add(1, Ordering::SeqCst);
        let polling = inner.polling.load(Ordering::SeqCst);
        // The loop may be gone already (dropped while this job ran): nothing to report to.
        let _ = done.send(Done {
            kind,
            seq,
            aborts,
            panic,
            elapsed: start.elapsed(),
        });
        if polling {
            inner.wake();
        }
    }
}

/// The loop thread's side of unordered mode.
struct Sched<S> {
    workers: Option<Workers<S>>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    /// Callbacks taken by a turn, waiting for a worker.
    callbacks: VecDeque<Callback<S>>,
    /// Tokens with a readiness not yet delivered, in arrival order ...
    pending: VecDeque<usize>,
    /// ... and their merged records.
    ready: HashMap<usize, Readiness>,
    /// Tokens whose handler is running.
    running: HashSet<usize>,
    /// Readiness of tokens that had no handler when it was due, each with the dispatch count
    /// then: kept until the jobs dispatched before it have finished, because one of them may
    /// be about to set the handler (register a socket, then set its handler, in an after-commit
    /// action: the loop may poll the socket's first event in between).
    orphans: HashMap<usize, (Readiness, u64)>,
    /// The dispatch order of the jobs in flight.
    in_flight_seqs: BTreeSet<u64>,
    next_seq: u64,
    callbacks_in_flight: usize,
    /// Completions received (compared with `LoopInner::finished`).
    received: u64,
    /// Alternates callbacks and handlers when both wait, so neither starves the other.
    handler_next: bool,
}

impl<S> Sched<S> {
    fn new() -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Sched {
            workers: None,
            done_tx,
            done_rx,
            callbacks: VecDeque::new(),
            pending: VecDeque::new(),
            ready: HashMap::new(),
            running: HashSet::new(),
            orphans: HashMap::new(),
            in_flight_seqs: BTreeSet::new(),
            next_seq: 0,
            callbacks_in_flight: 0,
            received: 0,
            handler_next: false,
        }
    }
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
    sched: Sched<S>,
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

    /// A loop over `source` with no state (`()`) and `workers` workers (see
    /// [`workers`](EventLoop::workers)).
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

    /// The number of workers (builder; `0` is taken as `1`): at most this many callbacks and
    /// handlers run at once. In unordered mode they are threads of their own, started by the
    /// first callback or handler, and the loop's thread only polls and hands out work; in
    /// ordered mode they are the queue's ([`TransactionQueue::workers`]: the loop's thread is
    /// one of them).
    pub fn workers(mut self, workers: usize) -> Self {
        self.queue.set_workers(workers);
        if self
            .sched
            .workers
            .as_ref()
            .is_some_and(|w| w.count() != self.queue.worker_count())
        {
            // Nothing runs between calls: the old workers are idle.
            self.sched.workers = None;
        }
        self
    }

    /// A loop over `source` with the state, worker count and mode of `queue`
    /// ([`TransactionQueue::state`], [`worker_count`](TransactionQueue::worker_count),
    /// [`is_ordered`](TransactionQueue::is_ordered)). An ordered loop runs its batches on the
    /// queue; an unordered one runs its callbacks and handlers on workers of its own.
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
            polling: AtomicBool::new(false),
            finished: AtomicU64::new(0),
        });
        EventLoop {
            source,
            queue,
            inner,
            events: Vec::new(),
            turns: 0,
            sched: Sched::new(),
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

    /// The queue that gives the loop its state, worker count and mode (and, in ordered mode,
    /// runs its batches).
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

    /// Runs turns until [`LoopHandle::stop`] is called, then waits for the callbacks and
    /// handlers already started (and runs those of the readiness already polled), clears the
    /// stop request (so the loop can be run again) and returns. An error of the source ends the
    /// loop with it (after the same wait).
    ///
    /// In unordered mode (the default) the turns do not wait for their handlers: each ready
    /// handler goes to a worker as soon as one is free, and the loop goes on polling, so one
    /// slow handler delays nobody while another worker is idle. In ordered mode each turn runs
    /// its callbacks, then its handlers, as one batch each (see [`run_once`](Self::run_once)).
    ///
    /// A callback or handler that panics does not stop the loop: the panic is reported as a
    /// `tracing` error event and everything else goes on.
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
        let ordered = self.queue.is_ordered();
        // Acquire: pairs with the Release in `LoopHandle::stop`.
        while !self.inner.stop.load(Ordering::Acquire) {
            let turn = if ordered {
                self.batch_turn(None)
            } else {
                self.turn(None, false)
            };
            if let Err(e) = turn {
                self.drain(&mut TurnStats::default());
                return Err(e);
            }
        }
        self.drain(&mut TurnStats::default());
        // Release: like `stop`'s store, pairs with the Acquire loads of the flag.
        self.inner.stop.store(false, Ordering::Release);
        Ok(())
    }

    /// One turn, and the wait for everything it started. `max_wait` bounds the poll's wait
    /// (`None`: until an event, a timer or a wake).
    ///
    /// The turn starts the pending callbacks (timers that are due included) and waits for them,
    /// polls once, starts the handlers of the tokens that poll reported and returns when they
    /// have all finished: the batches of the article's loop, convenient for tests and for
    /// driving the loop step by step. [`run`](Self::run) does not wait within its turns. In
    /// ordered mode both batches run on the queue, in order.
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
        if self.queue.is_ordered() {
            self.batch_turn(max_wait)
        } else {
            let mut stats = self.turn(max_wait, true)?;
            self.drain(&mut stats);
            Ok(stats)
        }
    }

    /// An unordered turn: hand out callbacks and handlers as workers are free, poll, hand out
    /// the handlers of the tokens the poll reported. With `drain`, the callbacks finish before
    /// the poll (as a batch would); the caller waits for the handlers.
    fn turn(&mut self, max_wait: Option<Duration>, drain: bool) -> io::Result<TurnStats> {
        self.turns += 1;
        let span = tracing::debug_span!("turn", n = self.turns);
        let _enter = span.enter();
        let mut stats = TurnStats::default();

        // 1. Due timers join the callbacks, which this turn takes; 2. hand out work.
        self.fire_due_timers(Instant::now());
        let taken = std::mem::take(&mut *lock(&self.inner.callbacks));
        self.sched.callbacks.extend(taken);
        self.collect(&mut stats);
        self.dispatch();
        if drain {
            while self.sched.callbacks_in_flight > 0 || !self.sched.callbacks.is_empty() {
                self.wait_one(&mut stats);
                self.dispatch();
            }
        }

        // 3. Poll: not at all if a stop was asked, or if callbacks are pending and a worker is
        //    free; else until the next timer (or `max_wait`). A worker that finishes meanwhile
        //    wakes the poll.
        // Acquire: pairs with the Release in `LoopHandle::stop`.
        let stopping = self.inner.stop.load(Ordering::Acquire);
        let free = self.sched.in_flight_seqs.len() < self.queue.worker_count();
        let mut timeout = if stopping || (free && !lock(&self.inner.callbacks).is_empty()) {
            Some(Duration::ZERO)
        } else {
            self.poll_timeout(max_wait)
        };
        // SeqCst: see `worker_main`.
        self.inner.polling.store(true, Ordering::SeqCst);
        if self.inner.finished.load(Ordering::SeqCst) != self.sched.received {
            // A worker finished since the last look (its report may still be on the way): it
            // may be free for waiting work.
            timeout = Some(Duration::ZERO);
        }
        self.events.clear();
        let polled = {
            let _p =
                tracing::trace_span!("poll", timeout_us = timeout.map(|t| t.as_micros() as u64))
                    .entered();
            self.source.poll(&mut self.events, timeout)
        };
        // Relaxed: only saves wake-ups; a stale `true` costs one.
        self.inner.polling.store(false, Ordering::Relaxed);
        polled?;
        stats.events = self.events.len();

        // 4. The ready tokens join the pending ones (flags merged per token); hand out work.
        for r in &self.events {
            match self.sched.ready.entry(r.token) {
                Entry::Occupied(mut e) => e.get_mut().merge(r),
                Entry::Vacant(e) => {
                    e.insert(*r);
                    self.sched.pending.push_back(r.token);
                }
            }
        }
        self.collect(&mut stats);
        self.dispatch();
        Ok(stats)
    }

    /// Hands out work until every worker is busy or nothing can start.
    fn dispatch(&mut self) {
        self.adopt_orphans();
        let workers = self.queue.worker_count();
        while self.sched.in_flight_seqs.len() < workers {
            let job = if self.sched.handler_next {
                self.next_handler().or_else(|| self.next_callback())
            } else {
                self.next_callback().or_else(|| self.next_handler())
            };
            let Some(job) = job else { break };
            self.sched.handler_next = matches!(job.kind, JobKind::Callback);
            if self.sched.workers.is_none() {
                self.sched.workers = Some(Workers::start(
                    workers,
                    self.queue.state(),
                    &self.sched.done_tx,
                    &self.inner,
                ));
            }
            self.sched.in_flight_seqs.insert(job.seq);
            if matches!(job.kind, JobKind::Callback) {
                self.sched.callbacks_in_flight += 1;
            }
            if let Some(w) = &self.sched.workers {
                w.submit(job);
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.sched.next_seq += 1;
        self.sched.next_seq - 1
    }

    fn next_callback(&mut self) -> Option<Job<S>> {
        let body = self.sched.callbacks.pop_front()?;
        Some(Job {
            kind: JobKind::Callback,
            seq: self.next_seq(),
            body,
        })
    }

    /// Orphaned readiness whose token has a handler now becomes pending again; the rest is
    /// dropped once every job that was running when it arrived has finished.
    fn adopt_orphans(&mut self) {
        if self.sched.orphans.is_empty() {
            return;
        }
        let handlers = lock(&self.inner.handlers);
        let sched = &mut self.sched;
        let oldest = sched.in_flight_seqs.first().copied().unwrap_or(u64::MAX);
        let (pending, ready) = (&mut sched.pending, &mut sched.ready);
        sched.orphans.retain(|&token, (r, dispatched)| {
            if handlers.contains_key(&token) {
                match ready.entry(token) {
                    Entry::Occupied(mut e) => e.get_mut().merge(r),
                    Entry::Vacant(e) => {
                        e.insert(*r);
                        pending.push_back(token);
                    }
                }
                false
            } else if oldest >= *dispatched {
                tracing::trace!(token, "stm-loop: event for a token with no handler");
                false
            } else {
                true
            }
        });
    }

    /// The first pending token whose handler is not running (a token with no handler is
    /// dropped on the way).
    fn next_handler(&mut self) -> Option<Job<S>> {
        let handlers = lock(&self.inner.handlers);
        let sched = &mut self.sched;
        while let Some(i) = sched
            .pending
            .iter()
            .position(|t| !sched.running.contains(t))
        {
            let token = sched.pending.remove(i)?;
            let r = sched.ready.remove(&token)?;
            if let Some(h) = handlers.get(&token) {
                let h = h.clone();
                sched.running.insert(token);
                sched.next_seq += 1;
                return Some(Job {
                    kind: JobKind::Handler(token),
                    seq: sched.next_seq - 1,
                    body: callback(move |tx, state| {
                        let mut h = lock(&h);
                        (*h)(tx, state, r)
                    }),
                });
            }
            if sched.in_flight_seqs.is_empty() {
                tracing::trace!(token, "stm-loop: event for a token with no handler");
            } else {
                // A running job may be about to set the handler: see `Sched::orphans`.
                let (o, dispatched) = sched.orphans.entry(token).or_insert((r, 0));
                o.merge(&r);
                *dispatched = sched.next_seq;
            }
        }
        None
    }

    /// Takes the completions that arrived, without waiting.
    fn collect(&mut self, stats: &mut TurnStats) {
        while let Ok(d) = self.sched.done_rx.try_recv() {
            self.complete(d, stats);
        }
    }

    /// Waits for one completion (something must be in flight).
    fn wait_one(&mut self, stats: &mut TurnStats) {
        debug_assert!(!self.sched.in_flight_seqs.is_empty());
        // The loop holds a sender itself: `recv` cannot fail.
        if let Ok(d) = self.sched.done_rx.recv() {
            self.complete(d, stats);
        }
    }

    /// Runs everything started or pending (callbacks taken, tokens polled) to its end.
    fn drain(&mut self, stats: &mut TurnStats) {
        self.dispatch();
        while !self.sched.in_flight_seqs.is_empty() {
            self.wait_one(stats);
            self.dispatch();
        }
    }

    fn complete(&mut self, d: Done, stats: &mut TurnStats) {
        self.sched.received += 1;
        self.sched.in_flight_seqs.remove(&d.seq);
        let (what, s) = match d.kind {
            JobKind::Callback => {
                self.sched.callbacks_in_flight -= 1;
                ("callback", &mut stats.callbacks)
            }
            JobKind::Handler(token) => {
                self.sched.running.remove(&token);
                ("handler", &mut stats.handlers)
            }
        };
        s.tasks += 1;
        s.elapsed += d.elapsed;
        match d.panic {
            None => {
                s.commits += 1;
                s.aborts += d.aborts;
            }
            Some(message) => {
                s.panics += 1;
                tracing::error!(
                    kind = ?d.kind,
                    message,
                    "stm-loop: a {what} panicked; the loop goes on"
                );
            }
        }
    }

    /// Until the next timer, bounded by `max_wait`.
    fn poll_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        let next = self.next_deadline();
        let until_timer = next.map(|at| at.saturating_duration_since(Instant::now()));
        match (until_timer, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An ordered turn: the callbacks as one batch, the poll, the handlers as one batch.
    fn batch_turn(&mut self, max_wait: Option<Duration>) -> io::Result<TurnStats> {
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
            self.poll_timeout(max_wait)
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
