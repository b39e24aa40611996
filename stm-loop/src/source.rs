//! [`EventSource`]: the pluggable part of the loop, and its backends.
//!
//! See [`EventSource`] for the contract and the backends.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One ready registration, as the loop sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Readiness {
    /// The token the source was registered with.
    pub token: usize,
    /// It can be read (or accepted from) without blocking.
    pub readable: bool,
    /// It can be written without blocking.
    pub writable: bool,
    /// The peer hung up or the source is in error: read to the end, then close.
    pub hup: bool,
}

impl Readiness {
    /// Merges the flags of two events for the same token.
    pub fn merge(&mut self, other: &Readiness) {
        self.readable |= other.readable;
        self.writable |= other.writable;
        self.hup |= other.hup;
    }
}

/// An I/O backend for [`EventLoop`](crate::EventLoop): poll into a batch, and a wake handle.
///
/// The loop needs two things from an I/O backend: "wait until something is ready, at most this
/// long, and tell me which tokens" and "wake that wait from another thread". Registration stays
/// native: with [`MioSource`] you register through [`MioSource::registry`] (a `mio::Registry`),
/// with `PollingSource` through its `polling::Poller`. A token is whatever `usize` you registered
/// the source with; the loop maps it to a handler.
///
/// # Readiness contracts: edge-triggered (mio) and one-shot (polling)
///
/// - **mio is edge-triggered.** An event says "this became ready"; it is not repeated while the
///   socket stays ready. A handler must read (or write) until `WouldBlock`, or it will never hear
///   of the rest. A handler transaction that aborts and runs again must therefore keep what the
///   first attempt read (in its own state, outside the transaction), not read again.
/// - **polling is one-shot by default.** After an event the registration is disarmed; nothing
///   more arrives until the handler re-arms it with `Poller::modify`. Draining until `WouldBlock`
///   is still wise, and re-arming belongs in `after_commit` (so an aborted attempt does not
///   re-arm twice; re-arming twice is harmless but wasted).
/// - **The scripted source** delivers exactly the batches you push, in order: deterministic.
///
/// # Other front ends
///
/// calloop's `EventLoop` is `!Send` and callback-driven: embed the STM loop's work in a calloop
/// callback (run a [`TransactionQueue`](crate::TransactionQueue) batch from it) rather than
/// wrapping calloop as a source. tokio and async-io are front ends, not backends: async code
/// collects work and submits it to a queue as one batch, e.g. from a blocking task:
///
/// ```
/// use stm_core::TVar;
/// use stm_loop::TransactionQueue;
/// use std::sync::{Arc, mpsc};
///
/// // In tokio this would be `tokio::task::spawn_blocking` fed by an `mpsc` of requests; here a
/// // std channel stands in so the example runs without a runtime.
/// let hits = Arc::new(TVar::new(0u64));
/// let (tx, rx) = mpsc::channel::<u64>();
/// for i in 0..10 { tx.send(i).unwrap(); }
/// drop(tx);
/// let mut q = TransactionQueue::with_state(hits.clone()).workers(2);
/// let batch: Vec<u64> = rx.iter().collect();      // everything that arrived since last time
/// for weight in batch {
///     q.add(move |tx, hits| tx.modify(hits, |h| h + weight).map(drop));
/// }
/// q.run();                                           // one batch, in parallel, serializable
/// assert_eq!(hits.load(), 45);
/// ```
pub trait EventSource {
    /// A thread-safe handle that interrupts a [`poll`](Self::poll) in progress (or makes the
    /// next one return at once).
    type Waker: Send + Sync + 'static;

    /// Waits until at least one registration is ready, the timeout passes (`None`: no limit) or
    /// the waker is used; appends the ready registrations to `out` and returns how many it
    /// appended. A wake-up appends nothing. An interrupted system call (`EINTR`) is not an error:
    /// it returns `Ok(0)`.
    fn poll(&mut self, out: &mut Vec<Readiness>, timeout: Option<Duration>) -> io::Result<usize>;

    /// A new wake handle.
    fn waker(&self) -> Self::Waker;

    /// Interrupts the poll (thread-safe; may be called from any thread, any number of times).
    fn wake(w: &Self::Waker) -> io::Result<()>;
}

// ---------------------------------------------------------------------------------------------
// mio
// ---------------------------------------------------------------------------------------------

/// The default backend: a `mio::Poll` (epoll on Linux, kqueue on the BSDs and macOS).
///
/// Edge-triggered: read and write until `WouldBlock`. Register with the token you will give the
/// loop's handler:
///
/// ```
/// use mio::{Interest, Token, net::TcpListener};
/// use stm_loop::MioSource;
/// let source = MioSource::new()?;
/// let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
/// source.registry().register(&mut listener, Token(1), Interest::READABLE)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct MioSource {
    poll: mio::Poll,
    events: mio::Events,
    waker: Arc<mio::Waker>,
}

impl MioSource {
    /// The token reserved for the waker; do not register anything with it.
    pub const WAKE_TOKEN: usize = usize::MAX;

    /// A new poller with room for 1024 events per poll.
    pub fn new() -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(
            poll.registry(),
            mio::Token(Self::WAKE_TOKEN),
        )?);
        Ok(MioSource {
            poll,
            events: mio::Events::with_capacity(1024),
            waker,
        })
    }

    /// The registry to register sockets with (`try_clone` it to register from handlers).
    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }
}

impl std::fmt::Debug for MioSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioSource").finish_non_exhaustive()
    }
}

impl EventSource for MioSource {
    type Waker = Arc<mio::Waker>;

    fn poll(&mut self, out: &mut Vec<Readiness>, timeout: Option<Duration>) -> io::Result<usize> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        }
        let before = out.len();
        for e in self.events.iter() {
            let token = e.token().0;
            if token == Self::WAKE_TOKEN {
                continue;
            }
            out.push(Readiness {
                token,
                readable: e.is_readable(),
                writable: e.is_writable(),
                hup: e.is_read_closed() || e.is_write_closed() || e.is_error(),
            });
        }
        Ok(out.len() - before)
    }

    fn waker(&self) -> Self::Waker {
        self.waker.clone()
    }

    fn wake(w: &Self::Waker) -> io::Result<()> {
        w.wake()
    }
}

// ---------------------------------------------------------------------------------------------
// polling
// ---------------------------------------------------------------------------------------------

/// The `polling` crate as a backend (cargo feature `polling`): one-shot by default, re-arm with
/// `Poller::modify` after each event.
///
/// ```
/// use stm_loop::{EventSource, PollingSource};
/// let mut source = PollingSource::new()?;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// listener.set_nonblocking(true)?;
/// // SAFETY: `listener` is deleted from the poller before it is dropped.
/// unsafe { source.poller().add(&listener, polling::Event::readable(7))? };
/// let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
/// let mut out = Vec::new();
/// while out.is_empty() {
///     source.poll(&mut out, Some(std::time::Duration::from_secs(5)))?;
/// }
/// assert_eq!(out[0].token, 7);
/// source.poller().delete(&listener)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg(feature = "polling")]
pub struct PollingSource {
    poller: Arc<polling::Poller>,
    events: polling::Events,
}

#[cfg(feature = "polling")]
impl PollingSource {
    /// A new poller.
    pub fn new() -> io::Result<Self> {
        Ok(PollingSource {
            poller: Arc::new(polling::Poller::new()?),
            events: polling::Events::new(),
        })
    }

    /// The poller to register sources with (`add` / `modify` / `delete`).
    pub fn poller(&self) -> &Arc<polling::Poller> {
        &self.poller
    }
}

#[cfg(feature = "polling")]
impl std::fmt::Debug for PollingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollingSource").finish_non_exhaustive()
    }
}

#[cfg(feature = "polling")]
impl EventSource for PollingSource {
    type Waker = Arc<polling::Poller>;

    fn poll(&mut self, out: &mut Vec<Readiness>, timeout: Option<Duration>) -> io::Result<usize> {
        self.events.clear();
        match self.poller.wait(&mut self.events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        }
        let before = out.len();
        for e in self.events.iter() {
            out.push(Readiness {
                token: e.key,
                readable: e.readable,
                writable: e.writable,
                hup: e.is_interrupt() || e.is_err() == Some(true),
            });
        }
        Ok(out.len() - before)
    }

    fn waker(&self) -> Self::Waker {
        self.poller.clone()
    }

    fn wake(w: &Self::Waker) -> io::Result<()> {
        w.notify()
    }
}

// ---------------------------------------------------------------------------------------------
// scripted
// ---------------------------------------------------------------------------------------------

/// An in-memory source for deterministic tests: `poll` returns the batches pushed through its
/// [`ScriptHandle`], one batch per poll, in order.
///
/// With no batch queued, `poll` waits (up to its timeout) for a push or a wake. Every timeout the
/// loop asked for is recorded ([`ScriptHandle::timeouts`]), so tests can check timer arithmetic.
///
/// ```
/// use stm_loop::{EventSource, Readiness, ScriptedSource};
/// let mut source = ScriptedSource::new();
/// let script = source.handle();
/// script.push(vec![Readiness { token: 3, readable: true, ..Default::default() }]);
/// let mut out = Vec::new();
/// assert_eq!(source.poll(&mut out, None)?, 1);
/// assert_eq!(out[0].token, 3);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ScriptedSource {
    inner: Arc<ScriptInner>,
}

/// The thread-safe side of a [`ScriptedSource`]: push batches, wake, read the recorded timeouts.
#[derive(Clone, Debug)]
pub struct ScriptHandle {
    inner: Arc<ScriptInner>,
}

#[derive(Debug, Default)]
struct ScriptInner {
    state: Mutex<ScriptState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct ScriptState {
    batches: VecDeque<Vec<Readiness>>,
    woken: bool,
    timeouts: Vec<Option<Duration>>,
    polls: u64,
}

impl Default for ScriptedSource {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedSource {
    /// An empty script.
    pub fn new() -> Self {
        ScriptedSource {
            inner: Arc::new(ScriptInner::default()),
        }
    }

    /// The handle for pushing batches (cloneable, thread-safe).
    pub fn handle(&self) -> ScriptHandle {
        ScriptHandle {
            inner: self.inner.clone(),
        }
    }
}

fn lock_state(inner: &ScriptInner) -> std::sync::MutexGuard<'_, ScriptState> {
    // The state is plain data, consistent after every statement: poisoning can be ignored.
    inner.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScriptHandle {
    /// Queues one batch: a later `poll` returns exactly these records.
    pub fn push(&self, batch: Vec<Readiness>) {
        lock_state(&self.inner).batches.push_back(batch);
        self.inner.cv.notify_all();
    }

    /// The timeouts the source was polled with, in order.
    pub fn timeouts(&self) -> Vec<Option<Duration>> {
        lock_state(&self.inner).timeouts.clone()
    }

    /// How many times the source was polled.
    pub fn polls(&self) -> u64 {
        lock_state(&self.inner).polls
    }

    /// Batches pushed and not yet polled.
    pub fn queued(&self) -> usize {
        lock_state(&self.inner).batches.len()
    }
}

impl EventSource for ScriptedSource {
    type Waker = ScriptHandle;

    fn poll(&mut self, out: &mut Vec<Readiness>, timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock_state(&self.inner);
        st.timeouts.push(timeout);
        st.polls += 1;
        loop {
            if let Some(batch) = st.batches.pop_front() {
                st.woken = false;
                let n = batch.len();
                out.extend(batch);
                return Ok(n);
            }
            if st.woken {
                st.woken = false;
                return Ok(0);
            }
            match deadline {
                // No timeout, or one too large to represent as a deadline: wait for a push.
                None => st = self.inner.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(0);
                    }
                    st = self
                        .inner
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    fn waker(&self) -> Self::Waker {
        self.handle()
    }

    fn wake(w: &Self::Waker) -> io::Result<()> {
        lock_state(&w.inner).woken = true;
        w.inner.cv.notify_all();
        Ok(())
    }
}
