//! [`TransactionQueue`]: run a batch of tasks as transactions on a pool of kept worker threads.
//!
//! # How a run works
//!
//! `run()` moves the added tasks into a [`Run`], split into chunks (one task per chunk for
//! batches of up to 256 tasks or in ordered mode, so heavy tasks balance; larger chunks for big
//! batches of tiny tasks, so claiming costs one `fetch_add` per chunk). The calling thread is
//! worker 0; `workers - 1` helper threads, started once by the first run and parked between
//! runs, are invited to join (no more than there are tasks to share). Each worker claims chunks
//! until the batch is exhausted, then takes tasks that running tasks added (a FIFO under a
//! mutex), then sleeps until more are added or the run is over.
//!
//! `outstanding` counts tasks published and not yet finished; a worker subtracts its finished
//! tasks before it looks for more work or sleeps, and the one that brings it to zero wakes the
//! sleepers. Every task's effects (its commit, its after-commit actions, its statistics) are
//! sequenced before the worker's `fetch_sub` (AcqRel), which the caller's Acquire load of zero
//! synchronises with: when `run` returns, everything is visible to the caller.
//!
//! # Ordered mode
//!
//! Every task gets a sequence number: its position in add order for the tasks added before the
//! run, and for tasks added by a running task, the next free number when that task commits
//! (commits happen in sequence order, so this is exactly where the serial FIFO loop would put
//! them). A *turn* counter says which number may commit next. A task's first attempt runs its
//! body speculatively, in parallel with the others; at the end of the body (still inside the
//! transaction, holding no lock: the STM locks at commit) it waits until the turn is its own, then
//! returns, and the transaction commits (or, if an earlier task wrote something it read, the
//! commit-time validation aborts it). A later attempt checks the turn first and, if it is not yet
//! its own, gives up (`TxError::User`), waits outside the transaction and starts again; so no
//! attempt waits for its turn while holding the inevitable token, which would deadlock with an
//! earlier task that needs it. A body that made itself inevitable before its turn is rolled back
//! the same way and run again at its turn (so in ordered mode, do I/O in `after_commit`, which
//! runs in add order, not in an inevitable body).
//!
//! Workers claim tasks strictly in sequence order (one per chunk, no local "next" slot), so the
//! task whose turn it is is always held by a worker that is running it, or unclaimed while every
//! worker is free: the turn always advances. After a task commits (or panics) the worker
//! publishes its added tasks and then advances the turn.
//!
//! # State
//!
//! The queue's state (`Arc<S>`) travels with each run; a worker hands every attempt
//! `&run.state`, a borrow from outside the transaction body, so the reference lasts for the
//! whole attempt (`&'t S`) and the body may write the `TVar`s and collections inside it.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stm_core::{Tx, TxError, TxResult, try_atomically};

/// A task as stored: its body gets the transaction, the queue's state (for the attempt) and
/// the handle for adding more tasks.
type TaskFn<S> = Box<
    dyn for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, &Spawner<S>) -> TxResult<()> + Send + 'static,
>;

/// Boxes a task; a function, so that the closure's parameter types come from this bound.
fn task_fn<S, F>(f: F) -> TaskFn<S>
where
    F: for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, &Spawner<S>) -> TxResult<()> + Send + 'static,
{
    Box::new(f)
}

/// Batches of more than this many tasks are split into chunks bigger than one task.
const SINGLE_CHUNK_LIMIT: usize = 256;
/// The largest chunk of a big batch.
const MAX_CHUNK: usize = 64;
/// Spins on the turn counter before sleeping on it.
const TURN_SPINS: u32 = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our mutexes cannot leave its data inconsistent (every
    // critical section is a few plain assignments), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The handle a running task gets for adding tasks to the same run.
///
/// Tasks added during an attempt are kept only if that attempt commits (an aborted attempt's
/// additions are dropped with it), and then run within the same [`TransactionQueue::run`]. In
/// unordered mode the first task a task adds runs next on the same worker (for locality, as
/// PyPy's `transaction` module did); in ordered mode added tasks go to the end of the order.
/// Added tasks get the queue's state like the others.
///
/// ```
/// use stm_core::TVar;
/// use stm_loop::TransactionQueue;
/// use std::sync::Arc;
///
/// let mut q = TransactionQueue::with_state(Arc::new(TVar::new(0u64))).workers(2);
/// q.add_with(|tx, count, spawner| {
///     tx.modify(count, |n| n + 1)?;
///     for _ in 0..3 {
///         spawner.add(|tx, count| tx.modify(count, |n| n + 10).map(drop));
///     }
///     Ok(())
/// });
/// let stats = q.run();
/// assert_eq!(q.state().load(), 31);
/// assert_eq!(stats.tasks, 4);
/// ```
pub struct Spawner<S = ()> {
    added: RefCell<Vec<TaskFn<S>>>,
}

impl<S> Spawner<S> {
    fn new() -> Self {
        Spawner {
            added: RefCell::new(Vec::new()),
        }
    }

    /// Adds a task to the running batch (kept if the current attempt commits).
    pub fn add(
        &self,
        mut task: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) {
        self.added
            .borrow_mut()
            .push(task_fn(move |tx, state, _| task(tx, state)));
    }

    /// Adds a task that can itself add tasks.
    pub fn add_with(
        &self,
        task: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, &Spawner<S>) -> TxResult<()>
        + Send
        + 'static,
    ) {
        self.added.borrow_mut().push(task_fn(task));
    }

    fn clear(&self) {
        self.added.borrow_mut().clear();
    }

    fn take(&self) -> Vec<TaskFn<S>> {
        std::mem::take(&mut *self.added.borrow_mut())
    }
}

impl<S> fmt::Debug for Spawner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("added", &self.added.borrow().len())
            .finish()
    }
}

/// Statistics of one [`TransactionQueue::run`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunStats {
    /// Tasks run: those added before the run and those added by tasks during it.
    pub tasks: u64,
    /// Tasks that committed (`tasks - panics`).
    pub commits: u64,
    /// Attempts rolled back and run again: conflicts, `retry` wake-ups, and attempts that ran
    /// without a read set and needed one (`stm_core::Stats::unlogged_reruns`: typically a
    /// worker's first task that writes). (An ordered-mode attempt that gives up in order to wait
    /// for its turn is not counted.)
    pub aborts: u64,
    /// Tasks that panicked (in an attempt, whose writes are then discarded, or in an
    /// after-commit action, after their transaction committed; either way the tasks they added
    /// are dropped).
    pub panics: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// The report of a run in which at least one task panicked: every other task still ran.
///
/// [`TransactionQueue::run`] re-raises the first panic (as PyPy's `transaction.run()` re-raised
/// the first exception); [`TransactionQueue::try_run`] returns this instead.
pub struct TaskPanic {
    payload: Box<dyn Any + Send + 'static>,
    stats: RunStats,
}

impl TaskPanic {
    /// The first panic's message, when it was a string (as `panic!` makes it).
    pub fn message(&self) -> Option<&str> {
        if let Some(s) = self.payload.downcast_ref::<&'static str>() {
            Some(s)
        } else {
            self.payload.downcast_ref::<String>().map(String::as_str)
        }
    }

    /// The statistics of the run (`panics` counts every panicking task).
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// The first panic's payload, for `std::panic::resume_unwind`.
    pub fn into_payload(self) -> Box<dyn Any + Send + 'static> {
        self.payload
    }
}

impl fmt::Debug for TaskPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskPanic")
            .field("message", &self.message())
            .field("stats", &self.stats)
            .finish()
    }
}

impl fmt::Display for TaskPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} tasks panicked; the first: {}",
            self.stats.panics,
            self.stats.tasks,
            self.message().unwrap_or("(a non-string payload)")
        )
    }
}

impl std::error::Error for TaskPanic {}

/// Runs tasks as transactions on a pool of worker threads kept between runs.
///
/// Add tasks, then [`run`](Self::run): every task runs exactly once as a transaction
/// ([`stm_core::atomically`] semantics: rerun on conflict, invisible until committed), in
/// parallel, and the outcome is that of running them one by one in *some* order (unordered, the
/// default) or *in add order* ([`ordered(true)`](Self::ordered)).
///
/// Every task gets the queue's shared state `&S` beside the transaction, as a web framework
/// hands its handlers the application state: the reference lasts for the whole attempt, so the
/// task may write the `TVar`s and collections inside it.
///
/// ```
/// use stm_core::TVar;
/// use stm_loop::TransactionQueue;
/// use std::sync::Arc;
///
/// let total = Arc::new(TVar::new(0u64));
/// let mut q = TransactionQueue::with_state(total.clone()).workers(2);
/// for i in 1..=100u64 {
///     q.add(move |tx, total| {
///         tx.modify(total, |t| t + i)?;
///         Ok(())
///     });
/// }
/// let stats = q.run();
/// assert_eq!(total.load(), 5050);
/// assert_eq!(stats.commits, 100);
/// ```
///
/// The calling thread works too: `workers(n)` keeps `n - 1` helper threads, and `workers(1)`
/// runs everything on the caller. [`TransactionQueue::new`] and
/// [`with_workers`](TransactionQueue::with_workers) make a queue whose state is `()`.
pub struct TransactionQueue<S: Send + Sync + 'static = ()> {
    state: Arc<S>,
    pool: Pool<S>,
    ordered: bool,
    pending: Vec<TaskFn<S>>,
    last: RunStats,
}

impl<S: Send + Sync + 'static> fmt::Debug for TransactionQueue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionQueue")
            .field("workers", &self.worker_count())
            .field("ordered", &self.ordered)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<S: Default + Send + Sync + 'static> Default for TransactionQueue<S> {
    /// A queue with `S::default()` as its state and one worker per available core.
    fn default() -> Self {
        Self::with_state(Arc::new(S::default()))
    }
}

impl TransactionQueue {
    /// A queue with no state (`()`) and one worker per available core
    /// (`std::thread::available_parallelism`).
    pub fn new() -> Self {
        Self::with_state(Arc::new(()))
    }

    /// A queue with no state (`()`) and `workers` workers (see [`workers`](Self::workers)).
    pub fn with_workers(workers: usize) -> Self {
        Self::with_state(Arc::new(())).workers(workers)
    }
}

impl<S: Send + Sync + 'static> TransactionQueue<S> {
    /// A queue whose tasks all get `&state`, with one worker per available core (choose
    /// another number with [`workers`](Self::workers)).
    pub fn with_state(state: Arc<S>) -> Self {
        TransactionQueue {
            state,
            pool: Pool::new(available_cores()),
            ordered: false,
            pending: Vec::new(),
            last: RunStats::default(),
        }
    }

    /// The number of workers (builder): the calling thread and `workers - 1` helper threads,
    /// started by the first run and kept until the queue is dropped. `0` is taken as `1`.
    /// Called after a run, it stops that run's helpers (if their number differs); the added
    /// tasks stay.
    pub fn workers(mut self, workers: usize) -> Self {
        self.set_workers(workers);
        self
    }

    /// [`workers`](Self::workers), in place.
    pub(crate) fn set_workers(&mut self, workers: usize) {
        let workers = workers.max(1);
        if workers != self.worker_count() {
            self.pool = Pool::new(workers);
        }
    }

    /// Ordered mode (builder): commits happen in add order, so the outcome equals running the
    /// tasks one by one in that order (FIFO: tasks added by a task go to the end), while their
    /// bodies still run in parallel.
    ///
    /// How: a task's first attempt runs speculatively; when its body is done it waits, holding
    /// no lock, until every earlier task has committed, then commits (or, if an earlier task
    /// changed what it read, runs again). After-commit actions therefore also run in add order.
    /// A body that becomes inevitable before its turn is rolled back and run again at its turn,
    /// so do I/O in [`Tx::after_commit`], not in an inevitable body. A task that calls
    /// [`Tx::retry`] waiting for a word that only a later task writes waits forever, as it would
    /// in the serial loop.
    ///
    /// ```
    /// use stm_core::TBox;
    /// use stm_loop::TransactionQueue;
    /// use std::sync::Arc;
    ///
    /// let log = Arc::new(TBox::new(Vec::new()));
    /// let mut q = TransactionQueue::with_state(log.clone()).workers(2).ordered(true);
    /// for i in 0..50 {
    ///     q.add(move |tx, log| {
    ///         let mut l = tx.read_box(log)?.clone();
    ///         l.push(i);
    ///         tx.write_box(log, l)
    ///     });
    /// }
    /// q.run();
    /// assert_eq!(log.load(), (0..50).collect::<Vec<_>>());
    /// ```
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Whether the queue is in ordered mode.
    pub fn is_ordered(&self) -> bool {
        self.ordered
    }

    /// The state every task gets.
    pub fn state(&self) -> &Arc<S> {
        &self.state
    }

    /// The number of workers (the caller included).
    pub fn worker_count(&self) -> usize {
        self.pool.workers()
    }

    /// Tasks added and not yet run.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds a task for the next run. It runs as a transaction: it may run several times, and
    /// only its committed attempt has effects; do output in [`Tx::after_commit`].
    ///
    /// The task gets the queue's state for the attempt. Data of its own that it must write (an
    /// `Arc<TVar<_>>` it captured) it lends to the transaction with [`Tx::hold`], which keeps a
    /// clone alive until the attempt is over:
    ///
    /// ```
    /// use stm_core::TVar;
    /// use stm_loop::TransactionQueue;
    /// use std::sync::Arc;
    ///
    /// let total = Arc::new(TVar::new(0u64));
    /// let mut q = TransactionQueue::with_state(total.clone()).workers(2);
    /// let mine: Vec<Arc<TVar<u64>>> = (0..4).map(|_| Arc::new(TVar::new(0))).collect();
    /// for v in &mine {
    ///     let v = v.clone();
    ///     q.add(move |tx, total| {
    ///         let v = tx.hold(v.clone()); // `v` itself is only borrowed for this call
    ///         tx.modify(v, |n| n + 1)?;
    ///         tx.modify(total, |t| t + 1)?;
    ///         Ok(())
    ///     });
    /// }
    /// q.run();
    /// assert!(mine.iter().all(|v| v.load() == 1));
    /// assert_eq!(total.load(), 4);
    /// ```
    pub fn add(
        &mut self,
        mut task: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S) -> TxResult<()> + Send + 'static,
    ) {
        self.pending
            .push(task_fn(move |tx, state, _| task(tx, state)));
    }

    /// Adds a task that gets a [`Spawner`] for adding further tasks to the same run.
    ///
    /// ```
    /// use stm_core::TVar;
    /// use stm_loop::TransactionQueue;
    /// use std::sync::Arc;
    ///
    /// let mut q = TransactionQueue::with_state(Arc::new(TVar::new(1u64))).workers(2);
    /// q.add_with(|tx, n, spawner| {
    ///     tx.modify(n, |n| n + 1)?;
    ///     // Kept if this attempt commits, and run after it in the same `run`.
    ///     spawner.add(|tx, n| tx.modify(n, |n| n * 10).map(drop));
    ///     Ok(())
    /// });
    /// q.run();
    /// assert_eq!(q.state().load(), 20);
    /// ```
    pub fn add_with(
        &mut self,
        task: impl for<'t, 'e> FnMut(&mut Tx<'t, 'e>, &'t S, &Spawner<S>) -> TxResult<()>
        + Send
        + 'static,
    ) {
        self.pending.push(task_fn(task));
    }

    /// The statistics of the last run.
    pub fn last_stats(&self) -> RunStats {
        self.last
    }

    /// Runs every added task, and the tasks they add, and returns when all are done.
    ///
    /// A task that blocks in [`Tx::retry`] occupies its worker until another task (or thread)
    /// changes what it read: with fewer workers than waiting tasks, the run waits forever.
    ///
    /// # Panics
    ///
    /// If a task panicked: the other tasks all ran, the queue stays usable, and the first
    /// panic is re-raised here (use [`try_run`](Self::try_run) to get it as a value). Also if
    /// the operating system refuses to start the helper threads (the first run starts them),
    /// as `std::thread::spawn` does.
    ///
    /// ```
    /// use stm_core::TVar;
    /// use stm_loop::TransactionQueue;
    /// use std::sync::Arc;
    ///
    /// let mut q = TransactionQueue::with_state(Arc::new(TVar::new(0u64))).workers(2);
    /// for i in 1..=10 {
    ///     q.add(move |tx, sum| tx.modify(sum, |s| s + i).map(drop));
    /// }
    /// let stats = q.run();
    /// assert_eq!((stats.tasks, stats.commits, q.pending()), (10, 10, 0));
    /// assert_eq!(q.state().load(), 55);
    /// ```
    pub fn run(&mut self) -> RunStats {
        match self.try_run() {
            Ok(s) => s,
            Err(p) => resume_unwind(p.into_payload()),
        }
    }

    /// Like [`run`](Self::run), but a panic of a task comes back as `Err(TaskPanic)`.
    ///
    /// ```
    /// use stm_loop::TransactionQueue;
    ///
    /// let mut q = TransactionQueue::with_workers(1);
    /// q.add(|_tx, _| Ok(()));
    /// q.add(|_tx, _| panic!("boom"));
    /// let err = q.try_run().unwrap_err();
    /// assert_eq!(err.message(), Some("boom"));
    /// assert_eq!((err.stats().tasks, err.stats().panics), (2, 1));
    /// ```
    ///
    /// # Panics
    ///
    /// If the operating system refuses to start the helper threads, as `std::thread::spawn`
    /// does.
    pub fn try_run(&mut self) -> Result<RunStats, TaskPanic> {
        let start = Instant::now();
        if self.pending.is_empty() {
            self.last = RunStats::default();
            return Ok(self.last);
        }
        // Before taking the tasks: if a helper cannot start, they stay added.
        self.pool.start();
        let tasks = std::mem::take(&mut self.pending);
        let n = tasks.len();
        let shared = &self.pool.shared;
        let run = Arc::new(Run::new(
            tasks,
            self.state.clone(),
            self.ordered,
            self.pool.workers(),
            shared.clone(),
        ));
        if shared.helpers > 0 {
            shared.invite(&run, shared.helpers.min(n - 1));
        }
        run.work();
        // Late helpers must not join a finished run (harmless, but wasted wake-ups).
        shared.close(&run);
        // Relaxed: `work` returned after an Acquire load of `outstanding == 0`, which every
        // worker's AcqRel `fetch_sub` (sequenced after its statistics) released.
        let panics = run.panics.load(Ordering::Relaxed);
        let tasks = run.tasks.load(Ordering::Relaxed);
        let stats = RunStats {
            tasks,
            commits: tasks - panics,
            aborts: run.aborts.load(Ordering::Relaxed),
            panics,
            elapsed: start.elapsed(),
        };
        self.last = stats;
        match lock(&run.first_panic).take() {
            Some(payload) => Err(TaskPanic { payload, stats }),
            None => Ok(stats),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The helper threads
// ---------------------------------------------------------------------------------------------

/// A queue's helper threads: started by the first run, stopped and joined when dropped.
struct Pool<S> {
    shared: Arc<Shared<S>>,
    helpers: Vec<JoinHandle<()>>,
}

impl<S> Pool<S> {
    /// A pool of `workers` workers (the caller and `workers - 1` helpers), none started yet.
    fn new(workers: usize) -> Self {
        Pool {
            shared: Arc::new(Shared {
                control: Mutex::new(Control {
                    run: None,
                    run_id: 0,
                    invited: 0,
                    shutdown: false,
                }),
                wake: Condvar::new(),
                helpers: workers.max(1) - 1,
            }),
            helpers: Vec::new(),
        }
    }

    /// The caller and the helpers.
    fn workers(&self) -> usize {
        self.shared.helpers + 1
    }
}

impl<S: Send + Sync + 'static> Pool<S> {
    /// Starts the helper threads, unless they run already.
    fn start(&mut self) {
        while self.helpers.len() < self.shared.helpers {
            let shared = self.shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("stm-loop-worker-{}", self.helpers.len() + 1))
                .spawn(move || helper_main(&shared))
                .expect("stm-loop: cannot start a worker thread");
            self.helpers.push(h);
        }
    }
}

impl<S> Drop for Pool<S> {
    fn drop(&mut self) {
        lock(&self.shared.control).shutdown = true;
        self.shared.wake.notify_all();
        for h in self.helpers.drain(..) {
            // A helper never panics (tasks run under catch_unwind); nothing to report.
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers and invitations
// ---------------------------------------------------------------------------------------------

struct Shared<S> {
    control: Mutex<Control<S>>,
    wake: Condvar,
    helpers: usize,
}

struct Control<S> {
    run: Option<Arc<Run<S>>>,
    /// Increases with every run, so a helper joins each run at most once.
    run_id: u64,
    /// Helpers still wanted in the current run.
    invited: usize,
    shutdown: bool,
}

impl<S> Shared<S> {
    fn invite(&self, run: &Arc<Run<S>>, k: usize) {
        let mut c = lock(&self.control);
        c.run = Some(run.clone());
        c.run_id += 1;
        c.invited = k;
        // Relaxed: only changed under the control lock, which we hold.
        run.invited.store(k, Ordering::Relaxed);
        drop(c);
        if k == 0 {
            return;
        }
        if k >= self.helpers {
            self.wake.notify_all();
        } else {
            for _ in 0..k {
                self.wake.notify_one();
            }
        }
    }

    /// Invites up to `k` more helpers into `run`, if it is still the current run.
    fn invite_more(&self, run: &Arc<Run<S>>, k: usize) {
        let mut c = lock(&self.control);
        if !c.run.as_ref().is_some_and(|r| Arc::ptr_eq(r, run)) {
            return;
        }
        // Relaxed: `invited` is only changed under the control lock, which we hold.
        let room = self.helpers - run.invited.load(Ordering::Relaxed);
        let k = k.min(room);
        if k == 0 {
            return;
        }
        c.invited += k;
        run.invited.fetch_add(k, Ordering::Relaxed);
        drop(c);
        for _ in 0..k {
            self.wake.notify_one();
        }
    }

    fn close(&self, run: &Arc<Run<S>>) {
        let mut c = lock(&self.control);
        if c.run.as_ref().is_some_and(|r| Arc::ptr_eq(r, run)) {
            c.run = None;
            c.invited = 0;
        }
    }
}

fn helper_main<S>(shared: &Shared<S>) {
    let mut joined = 0u64;
    loop {
        let run = {
            let mut c = lock(&shared.control);
            loop {
                if c.shutdown {
                    return;
                }
                if c.invited > 0 && c.run_id != joined {
                    c.invited -= 1;
                    joined = c.run_id;
                    break c.run.clone();
                }
                c = wait(&shared.wake, c);
            }
        };
        if let Some(run) = run {
            run.work();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

struct Item<S> {
    seq: u64,
    task: TaskFn<S>,
}

struct Extra<S> {
    queue: VecDeque<Item<S>>,
    sleepers: usize,
}

struct Turn {
    current: u64,
    waiters: usize,
}

/// Returned by an ordered attempt that must wait for its turn outside the transaction.
struct NotYourTurn;

struct Run<S> {
    /// The queue's helpers, for inviting more of them when tasks add tasks. (A cycle while the
    /// run is current, broken by `Shared::close`.)
    shared: Arc<Shared<S>>,
    /// The queue's state, lent to every attempt.
    state: Arc<S>,
    ordered: bool,
    chunks: Box<[Mutex<Vec<Item<S>>>]>,
    next_chunk: AtomicUsize,
    extra: Mutex<Extra<S>>,
    more: Condvar,
    /// Tasks published and not yet finished.
    outstanding: AtomicUsize,
    /// Helpers invited so far (at most `Shared::helpers`), only changed under `Control`'s lock.
    invited: AtomicUsize,
    /// Ordered mode: the sequence number of the next task published during the run.
    next_seq: AtomicU64,
    turn: Mutex<Turn>,
    turn_cv: Condvar,
    /// Mirror of `turn.current` for the lock-free fast check.
    turn_now: AtomicU64,
    tasks: AtomicU64,
    aborts: AtomicU64,
    panics: AtomicU64,
    first_panic: Mutex<Option<Box<dyn Any + Send + 'static>>>,
}

impl<S> Run<S> {
    fn new(
        tasks: Vec<TaskFn<S>>,
        state: Arc<S>,
        ordered: bool,
        workers: usize,
        shared: Arc<Shared<S>>,
    ) -> Self {
        let n = tasks.len();
        let chunk = if ordered || n <= SINGLE_CHUNK_LIMIT {
            1
        } else {
            (n / (workers * 16)).clamp(1, MAX_CHUNK)
        };
        let mut chunks = Vec::with_capacity(n.div_ceil(chunk));
        let mut cur = Vec::with_capacity(chunk);
        for (seq, task) in tasks.into_iter().enumerate() {
            cur.push(Item {
                seq: seq as u64,
                task,
            });
            if cur.len() == chunk {
                chunks.push(Mutex::new(std::mem::replace(
                    &mut cur,
                    Vec::with_capacity(chunk),
                )));
            }
        }
        if !cur.is_empty() {
            chunks.push(Mutex::new(cur));
        }
        Run {
            shared,
            state,
            ordered,
            chunks: chunks.into_boxed_slice(),
            next_chunk: AtomicUsize::new(0),
            extra: Mutex::new(Extra {
                queue: VecDeque::new(),
                sleepers: 0,
            }),
            more: Condvar::new(),
            outstanding: AtomicUsize::new(n),
            invited: AtomicUsize::new(0),
            next_seq: AtomicU64::new(n as u64),
            turn: Mutex::new(Turn {
                current: 0,
                waiters: 0,
            }),
            turn_cv: Condvar::new(),
            turn_now: AtomicU64::new(0),
            tasks: AtomicU64::new(n as u64),
            aborts: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            first_panic: Mutex::new(None),
        }
    }

    /// The worker loop, for the caller and for helpers: returns when the run is over.
    fn work(self: &Arc<Self>) {
        let mut local: Option<Item<S>> = None;
        let mut done = 0usize;
        loop {
            if let Some(item) = local.take() {
                local = self.execute(item);
                done += 1;
                continue;
            }
            // Relaxed: the claim only needs uniqueness (an RMW); the chunk's contents are
            // published by the mutex and by the Arc's creation before any helper saw it.
            let i = self.next_chunk.fetch_add(1, Ordering::Relaxed);
            if let Some(chunk) = self.chunks.get(i) {
                let items = std::mem::take(&mut *lock(chunk));
                for item in items {
                    let mut next = self.execute(item);
                    done += 1;
                    while let Some(item) = next {
                        next = self.execute(item);
                        done += 1;
                    }
                }
                continue;
            }
            if done > 0 {
                self.finish(done);
                done = 0;
            }
            let mut ex = lock(&self.extra);
            loop {
                if let Some(item) = ex.queue.pop_front() {
                    local = Some(item);
                    break;
                }
                // Acquire: pairs with the AcqRel `fetch_sub` of every finished task (see the
                // module doc), so the caller sees all their effects when this reads zero.
                if self.outstanding.load(Ordering::Acquire) == 0 {
                    return;
                }
                ex.sleepers += 1;
                ex = wait(&self.more, ex);
                ex.sleepers -= 1;
            }
        }
    }

    /// Marks `k` tasks finished; the last one wakes the sleepers.
    fn finish(&self, k: usize) {
        // AcqRel: releases this worker's tasks' effects to whoever reads zero (Acquire above),
        // and acquires the other workers' so the zero-reader chain is complete.
        if self.outstanding.fetch_sub(k, Ordering::AcqRel) == k {
            let _g = lock(&self.extra);
            self.more.notify_all();
        }
    }

    /// Runs one task to its commit (or panic); returns the task to run next on this worker.
    fn execute(self: &Arc<Self>, mut item: Item<S>) -> Option<Item<S>> {
        let spawner = Spawner::new();
        let seq = item.seq;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if self.ordered {
                self.transact_ordered(&mut item.task, seq, &spawner)
            } else {
                self.transact(&mut item.task, &spawner)
            }
        }));
        let next = match outcome {
            Ok(aborts) => {
                if aborts > 0 {
                    // Relaxed: a statistic, published to the caller by `finish`.
                    self.aborts.fetch_add(aborts, Ordering::Relaxed);
                }
                self.publish(spawner.take())
            }
            Err(payload) => {
                // Relaxed: as above.
                self.panics.fetch_add(1, Ordering::Relaxed);
                let mut first = lock(&self.first_panic);
                if first.is_none() {
                    *first = Some(payload);
                }
                drop(first);
                if self.ordered {
                    // Keep the order: the tasks before this one commit first.
                    self.wait_turn(seq);
                }
                None
            }
        };
        if self.ordered {
            self.advance_turn(seq);
        }
        drop(item);
        next
    }

    /// Unordered: one transaction. Returns the number of attempts that did not commit.
    fn transact(&self, task: &mut TaskFn<S>, spawner: &Spawner<S>) -> u64 {
        let state = &*self.state;
        let mut attempts = 0u64;
        let r: Result<(), ()> = try_atomically(|tx| {
            attempts += 1;
            spawner.clear();
            task(tx, state, spawner)?;
            Ok(())
        });
        debug_assert!(r.is_ok());
        attempts - 1
    }

    /// Ordered: see the module doc. Returns the number of attempts that did not commit.
    fn transact_ordered(&self, task: &mut TaskFn<S>, seq: u64, spawner: &Spawner<S>) -> u64 {
        let state = &*self.state;
        let mut aborts = 0u64;
        let mut first = true;
        loop {
            let mut attempts = 0u64;
            let r = try_atomically(|tx| {
                attempts += 1;
                let speculative = first && attempts == 1;
                if !speculative && self.turn() != seq {
                    return Err(TxError::User(NotYourTurn));
                }
                spawner.clear();
                task(tx, state, spawner)?;
                if self.turn() != seq {
                    if tx.is_inevitable() {
                        return Err(TxError::User(NotYourTurn));
                    }
                    self.wait_turn(seq);
                }
                Ok(())
            });
            match r {
                Ok(()) => return aborts + attempts - 1,
                Err(NotYourTurn) => {
                    // The attempt that gave up is not an abort; those before it were.
                    aborts += attempts - 1;
                    first = false;
                    self.wait_turn(seq);
                }
            }
        }
    }

    /// Publishes the tasks a committed task added; returns the one to run next here.
    fn publish(self: &Arc<Self>, added: Vec<TaskFn<S>>) -> Option<Item<S>> {
        if added.is_empty() {
            return None;
        }
        let k = added.len();
        // Relaxed: statistics.
        self.tasks.fetch_add(k as u64, Ordering::Relaxed);
        // AcqRel: sequenced before this worker's own `fetch_sub` for the adding task, so the
        // count cannot reach zero while these tasks are pending.
        self.outstanding.fetch_add(k, Ordering::AcqRel);
        let mut it = added.into_iter();
        let local = if self.ordered {
            None
        } else {
            it.next().map(|task| Item { seq: 0, task })
        };
        let shared = k - usize::from(local.is_some());
        if shared > 0 {
            let mut ex = lock(&self.extra);
            for task in it {
                let seq = if self.ordered {
                    // Relaxed: only the turn holder publishes in ordered mode; the turn's
                    // mutex orders successive publishers.
                    self.next_seq.fetch_add(1, Ordering::Relaxed)
                } else {
                    0
                };
                ex.queue.push_back(Item { seq, task });
            }
            let sleepers = ex.sleepers;
            drop(ex);
            if sleepers > 0 {
                self.more.notify_all();
            }
            if sleepers < shared {
                self.shared.invite_more(self, shared - sleepers);
            }
        }
        local
    }

    fn turn(&self) -> u64 {
        // Acquire: pairs with the Release store in `advance_turn`, so the previous task's
        // commit and publications happen before this task goes on.
        self.turn_now.load(Ordering::Acquire)
    }

    fn wait_turn(&self, seq: u64) {
        for _ in 0..TURN_SPINS {
            if self.turn() == seq {
                return;
            }
            std::hint::spin_loop();
        }
        let mut t = lock(&self.turn);
        t.waiters += 1;
        while t.current != seq {
            t = wait(&self.turn_cv, t);
        }
        t.waiters -= 1;
    }

    fn advance_turn(&self, seq: u64) {
        let mut t = lock(&self.turn);
        debug_assert_eq!(t.current, seq);
        t.current = seq + 1;
        // Release: pairs with the Acquire in `turn()`.
        self.turn_now.store(seq + 1, Ordering::Release);
        if t.waiters > 0 {
            self.turn_cv.notify_all();
        }
    }
}
