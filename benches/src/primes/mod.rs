//! The article's benchmark: an HTTP/1.1 server that answers `GET /N` with the primes up to N.
//!
//! A demo and benchmark built on stm-loop's public API only ([`EventLoop`], [`LoopHandle`],
//! [`MioSource`]): it lives beside the library, not in it, so that a program using stm-loop does
//! not compile an HTTP parser or a JSON encoder.
//!
//! Two modes share the connection code (the private `conn` module):
//!
//! - [`ServerMode::Stm`]: an [`EventLoop`] over [`MioSource`] whose handlers run as parallel
//!   transactions on `workers` workers. A connection's handler reads what is available, parses
//!   and computes the responses *outside* the shared state (kept in the connection, so an
//!   attempt that runs again does not redo the prime search), then updates the shared state in
//!   transactional variables (a sharded request counter, `TCounter`; the start-time stamp of
//!   the last request like Tornado's `_start_time`; per-path hit counters in a
//!   `TMap<String, Arc<TCounter>>`), and writes the responses in `after_commit`. That shared
//!   state is the loop's state (`EventLoop::with_state`), which every handler gets for its
//!   attempt; the connection's own data stays in the handler's captures.
//! - [`ServerMode::Serial`]: the same server on a plain single-threaded mio loop with no STM at
//!   all, the honest baseline (plain PyPy in the article's table).
//!
//! ```no_run
//! use stm_benches::primes::{ServerConfig, ServerMode, start};
//! let server = start(ServerConfig {
//!     addr: "127.0.0.1:0".parse().unwrap(),
//!     mode: ServerMode::Stm { workers: 2 },
//! })?;
//! println!("listening on {}", server.local_addr());
//! server.stop()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Requests: `GET /N` (N a decimal integer, at most 1,000,000) answers `200` with
//! `Content-Type: application/json` and `{"primes":[...]}`; `GET /stats` answers the shared
//! state and [`stm_core::stats`] as JSON. A non-numeric, too large or overflowing N gets `400`,
//! another path `404`, another method `405` (and the connection closes), a malformed request
//! `400` and the connection closes; a request head over 8 KiB gets `431` and the connection
//! closes. `HEAD` is answered like `GET`, without the body. Keep-alive is the HTTP/1.1 default (`Connection: close`
//! ends it; HTTP/1.0 closes unless it asks for keep-alive).
//!
//! Hostile clients ([`Timeouts`], [`start_with`]): a connection that has not sent a complete
//! request head within the header timeout, or that is idle longer than the idle timeout, is
//! closed; when `accept` fails for lack of file descriptors (`EMFILE`, `ENFILE`) the server
//! logs a `tracing` warning and tries again after a back-off (10 ms doubling to 1 s) until
//! descriptors are free, instead of waiting for a readiness event that never comes.

mod conn;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use stm_core::collections::{TCounter, TMap};
use stm_core::{TVar, Tx, TxResult};
use stm_loop::{EventLoop, LoopHandle, MioSource, TimerId};

use conn::{Conn, Limits, MAX_PATH_LEN, MAX_PATHS, OTHER_PATHS, Recorder, apply, hit_key};
pub use conn::{MAX_N, is_prime, primes_up_to};

/// The listener's token (connections get 1, 2, ...).
const LISTENER: usize = 0;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A connection's state stays consistent between statements; a poisoned lock (a panic in
    // another handler, which the loop reports) does not make it unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMode {
    /// A plain single-threaded loop, no STM at all.
    Serial,
    /// The STM event loop with this many workers (0 is taken as 1).
    Stm {
        /// Worker threads, the loop's own included.
        workers: usize,
    },
}

/// Where and how to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The address to listen on (port 0: any free port, see [`RunningServer::local_addr`]).
    pub addr: SocketAddr,
    /// Serial or STM.
    pub mode: ServerMode,
}

impl Default for ServerConfig {
    /// `127.0.0.1:8888`, STM with one worker per available core.
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8888)),
            mode: ServerMode::Stm {
                workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        }
    }
}

/// How long a client may take before the server closes its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The time a client has to send a complete request head, counted from the connection's
    /// start for its first request and from the first bytes of each later one (a slowloris
    /// client that sends a byte now and then is closed all the same).
    pub header: Duration,
    /// The time a connection may stay without bytes moving in either direction while no
    /// request head is in progress: between keep-alive requests, or while a response waits
    /// for a client that does not read it.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// 10 s for a head, 60 s idle.
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    fn limits(self) -> Limits {
        Limits {
            header: self.header,
            idle: self.idle,
        }
    }

    /// The longest time between two looks at a connection. A deadline can move earlier (a
    /// head completes and the idle timeout, shorter than the header timeout, applies), but
    /// never to less than this after the event that moves it: a connection looked at this
    /// often is closed at its deadline, however it moves.
    fn recheck(self) -> Duration {
        self.header.min(self.idle)
    }

    /// When to look at a connection next, at `now`, given its deadline.
    fn next_check(self, now: Instant, deadline: Option<Instant>) -> Instant {
        let soon = now + self.recheck();
        deadline.map_or(soon, |d| d.min(soon))
    }
}

/// A server running on its own thread; [`stop`](Self::stop) it (dropping it stops it too).
pub struct RunningServer {
    addr: SocketAddr,
    stopper: Option<Box<dyn FnOnce() + Send>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The address it listens on (the real port when the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server: no new turn starts, open connections are closed, every thread is
    /// joined. Returns the error that ended the loop early, if one did.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stopper.take() {
            stop();
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the primes server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "primes server stopped with an error");
        }
    }
}

/// Binds `config.addr` and starts serving on a new thread, with the default [`Timeouts`].
pub fn start(config: ServerConfig) -> io::Result<RunningServer> {
    start_with(config, Timeouts::default())
}

/// Binds `config.addr` and starts serving on a new thread, closing the connections of clients
/// slower than `timeouts`.
pub fn start_with(config: ServerConfig, timeouts: Timeouts) -> io::Result<RunningServer> {
    let listener = std::net::TcpListener::bind(config.addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = mio::net::TcpListener::from_std(listener);
    match config.mode {
        ServerMode::Serial => start_serial(listener, addr, timeouts),
        ServerMode::Stm { workers } => start_stm(listener, addr, workers.max(1), timeouts),
    }
}

fn micros_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Accepts until `WouldBlock` (`Ok`); transient errors are skipped; another error ends the
/// round (`Err`): the listener stays readable, but being edge-triggered it will not say so
/// again, so the caller must try again later ([`Backoff`]).
fn accept_all(
    listener: &mio::net::TcpListener,
    mut f: impl FnMut(mio::net::TcpStream),
) -> Result<(), io::Error> {
    loop {
        match listener.accept() {
            Ok((s, _)) => f(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// `EMFILE` and `ENFILE` (the same numbers on Linux, the BSDs and macOS).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// The accept back-off: after a failed accept round, the next try waits `MIN_DELAY`, doubling
/// up to `MAX_DELAY` while the failures go on; a round that drains the listener ends it.
#[derive(Debug, Default)]
struct Backoff {
    delay: Option<Duration>,
    failures: u64,
    /// A retry is scheduled (one at a time).
    retry_pending: bool,
}

impl Backoff {
    const MIN_DELAY: Duration = Duration::from_millis(10);
    const MAX_DELAY: Duration = Duration::from_secs(1);

    /// Records the end of an accept round. Returns the delay before the next try when one must
    /// be scheduled (the round failed and no retry is pending yet); logs the first failure of
    /// an episode and the recovery.
    fn round(&mut self, result: Result<(), io::Error>) -> Option<Duration> {
        match result {
            Ok(()) => {
                if self.delay.take().is_some() {
                    tracing::warn!(
                        failed_tries = self.failures,
                        "primes server: accepting connections again"
                    );
                }
                self.failures = 0;
                None
            }
            Err(e) => {
                let delay = match self.delay {
                    None => {
                        if out_of_descriptors(&e) {
                            tracing::warn!(
                                error = %e,
                                "primes server: out of file descriptors, cannot accept; \
                                 retrying until some are free (close idle clients or raise \
                                 `ulimit -n`)"
                            );
                        } else {
                            tracing::warn!(error = %e, "primes server: accept failed; retrying");
                        }
                        Self::MIN_DELAY
                    }
                    Some(d) => (d * 2).min(Self::MAX_DELAY),
                };
                self.delay = Some(delay);
                self.failures += 1;
                if self.retry_pending {
                    None
                } else {
                    self.retry_pending = true;
                    Some(delay)
                }
            }
        }
    }

    /// The scheduled retry is running now.
    fn retrying(&mut self) {
        self.retry_pending = false;
    }
}

// ---------------------------------------------------------------------------------------------
// STM mode
// ---------------------------------------------------------------------------------------------

/// The shared state, in transactional variables and collections: the loop's state, handed to
/// every handler.
///
/// The counters are sharded ([`TCounter`]): every request adds to them, and a plain `TVar`
/// counter made every pair of concurrent requests conflict (the conflict log named the
/// increment; see `docs/guide.md`). Per-path hits are one counter per path in a [`TMap`], so
/// two requests conflict there only when the first request for a new path inserts it.
struct StmState {
    requests: TCounter,
    last_start_us: TVar<u64>,
    hits: TMap<String, Arc<TCounter>>,
    workers: usize,
}

/// The STM recorder: the transaction of the attempt and the loop's state, borrowed for it.
struct StmRecorder<'r, 't, 'e> {
    tx: &'r Tx<'t, 'e>,
    st: &'t StmState,
}

impl Recorder for StmRecorder<'_, '_, '_> {
    fn record(&mut self, path: Option<&str>, start_us: u64) -> TxResult<()> {
        let (tx, st) = (self.tx, self.st);
        st.requests.add(tx, 1)?;
        // A blind write (Tornado's `_start_time`): it conflicts only with a commit of the same
        // word at the very same moment.
        tx.write(&st.last_start_us, start_us)?;
        if let Some(path) = path {
            let hits = &st.hits;
            let counter: &TCounter = match hits.get(tx, path)? {
                Some(c) => c,
                None => {
                    // A new path: only now read the size (which conflicts with inserts).
                    let full = path.len() > MAX_PATH_LEN || hits.len(tx)? >= MAX_PATHS;
                    let key = if full { OTHER_PATHS } else { path };
                    match hits.get(tx, key)? {
                        Some(c) => c,
                        None => {
                            let c = Arc::new(TCounter::with_shards(st.workers.max(1) * 2));
                            hits.insert(tx, key.to_string(), c.clone())?;
                            // Made in this attempt: the transaction keeps a clone for it.
                            tx.hold(c)
                        }
                    }
                }
            };
            counter.add(tx, 1)?;
        }
        Ok(())
    }

    fn stats(&mut self) -> TxResult<serde_json::Value> {
        let requests = self.st.requests.get(self.tx)?;
        let last = self.tx.read(&self.st.last_start_us)?;
        let mut hits = BTreeMap::new();
        for (path, counter) in self.st.hits.iter(self.tx)? {
            hits.insert(path.clone(), counter.get(self.tx)?);
        }
        let s = stm_core::stats();
        Ok(serde_json::json!({
            "mode": "stm",
            "workers": self.st.workers,
            "requests": requests,
            "last_start_us": last,
            "hits": hits,
            "stm": {
                "commits": s.commits,
                "read_only_commits": s.read_only_commits,
                "aborts": s.aborts(),
                "aborts_write_write": s.aborts_write_write,
                "aborts_write_read": s.aborts_write_read,
                "aborts_inevitable": s.aborts_inevitable,
                "inevitable_runs": s.inevitable_runs,
                "retries": s.retries,
                "abort_rate": s.abort_rate(),
            },
        }))
    }
}

/// A connection of the STM server: its state, and its pending timeout timer.
struct StmConn {
    conn: Mutex<Conn>,
    timer: Mutex<Option<TimerId>>,
}

/// What every handler of the STM server shares outside the transactions: the registry and the
/// loop's handle (used after commits), the clock, the listener and the accept back-off.
struct StmCtx {
    registry: mio::Registry,
    handle: LoopHandle<StmState>,
    started: Instant,
    next_token: AtomicUsize,
    timeouts: Timeouts,
    listener: mio::net::TcpListener,
    /// Accepted sockets wait here until the accepting transaction commits.
    accepted: Mutex<Vec<mio::net::TcpStream>>,
    backoff: Mutex<Backoff>,
}

impl StmCtx {
    /// One accept round, from the listener's handler or a back-off retry (`retry`). Accepting
    /// is input, kept outside the transaction like a connection's reads; registering the new
    /// connections and scheduling a retry happen after the commit.
    fn accept_round(self: &Arc<Self>, tx: &Tx<'_, '_>, retry: bool) {
        let result = accept_all(&self.listener, |s| lock(&self.accepted).push(s));
        let ctx = self.clone();
        tx.after_commit(move || {
            let streams: Vec<_> = lock(&ctx.accepted).drain(..).collect();
            for s in streams {
                ctx.add_connection(s);
            }
            let mut backoff = lock(&ctx.backoff);
            if retry {
                backoff.retrying();
            }
            if let Some(delay) = backoff.round(result) {
                drop(backoff);
                let c = ctx.clone();
                ctx.handle.call_later(delay, move |tx, _| {
                    c.accept_round(tx, true);
                    Ok(())
                });
            }
        });
    }

    fn add_connection(self: &Arc<Self>, mut stream: mio::net::TcpStream) {
        // Relaxed: tokens only need to be unique.
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        if token == MioSource::WAKE_TOKEN {
            return;
        }
        if let Err(e) = self.registry.register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "primes server: cannot register a connection");
            return;
        }
        // Nagle would hold back small responses behind the previous ones' ACKs.
        let _ = stream.set_nodelay(true);
        let sc = Arc::new(StmConn {
            conn: Mutex::new(Conn::new(stream)),
            timer: Mutex::new(None),
        });
        let first_check = Instant::now() + self.timeouts.recheck();
        let (conn, ctx) = (sc.clone(), self.clone());
        self.handle.set_handler(token, move |tx, state, _ready| {
            let now = micros_since(ctx.started);
            let mut c = lock(&conn.conn);
            // Input and the expensive, pure part: outside the shared state, kept in `c` across
            // attempts (an attempt that runs again finds the requests parsed and computed).
            c.fill();
            c.prepare(now);
            let k = c.prepared().len();
            // The transactional part: small updates of shared variables.
            let bodies = apply(c.prepared(), &mut StmRecorder { tx, st: state })?;
            drop(c);
            let (conn, ctx) = (conn.clone(), ctx.clone());
            // Output only after the commit: nothing is ever sent by an attempt that aborts.
            tx.after_commit(move || ctx.complete(token, &conn, k, bodies));
            Ok(())
        });
        self.arm(token, &sc, first_check);
    }

    /// Schedules the connection's timeout check at `at` (one timer per connection: a check
    /// that finds the deadline moved schedules the next one).
    fn arm(self: &Arc<Self>, token: usize, sc: &Arc<StmConn>, at: Instant) {
        let mut timer = lock(&sc.timer);
        let (ctx, sc2) = (self.clone(), sc.clone());
        *timer = Some(self.handle.call_at(at, move |tx, _| {
            let (ctx, sc) = (ctx.clone(), sc2.clone());
            // Closing is I/O: after the commit.
            tx.after_commit(move || ctx.check_timeout(token, &sc));
            Ok(())
        }));
    }

    /// Closes the connection if its deadline has passed, else checks again (see
    /// [`Timeouts::recheck`]).
    fn check_timeout(self: &Arc<Self>, token: usize, sc: &Arc<StmConn>) {
        let now = Instant::now();
        let mut c = lock(&sc.conn);
        if !c.is_open() {
            return;
        }
        match c.deadline(self.timeouts.limits()) {
            Some(d) if d <= now => {
                if let Some(mut s) = c.take_stream() {
                    let _ = self.registry.deregister(&mut s);
                }
                drop(c);
                self.handle.remove_handler(token);
                tracing::debug!(token, "primes server: closed a connection that timed out");
            }
            d => {
                drop(c);
                self.arm(token, sc, self.timeouts.next_check(now, d));
            }
        }
    }

    fn complete(&self, token: usize, sc: &StmConn, k: usize, bodies: Vec<Vec<u8>>) {
        let mut c = lock(&sc.conn);
        c.complete(k, bodies);
        if c.finished() {
            if let Some(mut s) = c.take_stream() {
                let _ = self.registry.deregister(&mut s);
            }
            drop(c);
            self.handle.remove_handler(token);
            if let Some(id) = lock(&sc.timer).take() {
                self.handle.cancel_timer(id);
            }
        }
    }
}

fn start_stm(
    mut listener: mio::net::TcpListener,
    addr: SocketAddr,
    workers: usize,
    timeouts: Timeouts,
) -> io::Result<RunningServer> {
    let source = MioSource::new()?;
    source
        .registry()
        .register(&mut listener, Token(LISTENER), Interest::READABLE)?;
    let registry = source.registry().try_clone()?;
    let state = Arc::new(StmState {
        requests: TCounter::with_shards(workers.max(1) * 2),
        last_start_us: TVar::new(0),
        hits: TMap::with_buckets(512),
        workers,
    });
    let mut ev = EventLoop::with_state(source, state).workers(workers);
    let handle = ev.handle();
    let ctx = Arc::new(StmCtx {
        registry,
        handle: handle.clone(),
        started: Instant::now(),
        next_token: AtomicUsize::new(LISTENER + 1),
        timeouts,
        listener,
        accepted: Mutex::new(Vec::new()),
        backoff: Mutex::new(Backoff::default()),
    });
    handle.set_handler(LISTENER, move |tx, _, _ready| {
        ctx.accept_round(tx, false);
        Ok(())
    });
    let thread = std::thread::Builder::new()
        .name("primes-stm-loop".into())
        .spawn(move || {
            let r = ev.run();
            drop(ev);
            r
        })?;
    Ok(RunningServer {
        addr,
        stopper: Some(Box::new(move || handle.stop())),
        thread: Some(thread),
    })
}

// ---------------------------------------------------------------------------------------------
// Serial mode
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct PlainState {
    requests: u64,
    last_start_us: u64,
    hits: BTreeMap<String, u64>,
}

impl Recorder for PlainState {
    fn record(&mut self, path: Option<&str>, start_us: u64) -> TxResult<()> {
        self.requests += 1;
        self.last_start_us = start_us;
        if let Some(path) = path {
            let key = hit_key(&self.hits, path).to_string();
            *self.hits.entry(key).or_insert(0) += 1;
        }
        Ok(())
    }

    fn stats(&mut self) -> TxResult<serde_json::Value> {
        Ok(serde_json::json!({
            "mode": "serial",
            "workers": 1,
            "requests": self.requests,
            "last_start_us": self.last_start_us,
            "hits": self.hits,
            "stm": null,
        }))
    }
}

fn start_serial(
    mut listener: mio::net::TcpListener,
    addr: SocketAddr,
    timeouts: Timeouts,
) -> io::Result<RunningServer> {
    let mut poll = mio::Poll::new()?;
    poll.registry()
        .register(&mut listener, Token(LISTENER), Interest::READABLE)?;
    let waker = Arc::new(mio::Waker::new(
        poll.registry(),
        Token(MioSource::WAKE_TOKEN),
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The loop keeps a reference to the waker: if the stopper's were the last, its eventfd
    // would close right after the wake, and closing a file removes its pending event from
    // epoll before the loop may have collected it (a lost wake-up).
    let waker2 = waker.clone();
    let thread = std::thread::Builder::new()
        .name("primes-serial-loop".into())
        .spawn(move || {
            let r = serial_loop(&mut poll, &listener, &stop2, timeouts);
            drop(waker2);
            r
        })?;
    Ok(RunningServer {
        addr,
        stopper: Some(Box::new(move || {
            // Release: pairs with the Acquire load in `serial_loop`.
            stop.store(true, Ordering::Release);
            if let Err(e) = waker.wake() {
                tracing::warn!(error = %e, "primes server: wake failed");
            }
        })),
        thread: Some(thread),
    })
}

fn serial_loop(
    poll: &mut mio::Poll,
    listener: &mio::net::TcpListener,
    stop: &AtomicBool,
    timeouts: Timeouts,
) -> io::Result<()> {
    let started = Instant::now();
    let limits = timeouts.limits();
    let mut state = PlainState::default();
    let mut conns: std::collections::HashMap<usize, Conn> = std::collections::HashMap::new();
    // When to look at each connection: one entry per open connection (closed ones' entries are
    // dropped when they come due); a connection not closed gets its next entry then.
    let mut deadlines: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut backoff = Backoff::default();
    let mut accept_retry: Option<Instant> = None;
    let mut next_token = LISTENER + 1;
    let mut events = mio::Events::with_capacity(1024);
    let mut accept = |poll: &mut mio::Poll,
                      conns: &mut std::collections::HashMap<usize, Conn>,
                      deadlines: &mut BinaryHeap<Reverse<(Instant, usize)>>|
     -> Result<(), io::Error> {
        accept_all(listener, |mut s| {
            let token = next_token;
            next_token += 1;
            if poll
                .registry()
                .register(
                    &mut s,
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok()
            {
                let _ = s.set_nodelay(true);
                deadlines.push(Reverse((Instant::now() + timeouts.recheck(), token)));
                conns.insert(token, Conn::new(s));
            }
        })
    };
    loop {
        // Acquire: pairs with the Release store of the stopper.
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        // Timeouts: close the connections whose deadline has passed.
        while let Some(&Reverse((due, token))) = deadlines.peek() {
            if due > now {
                break;
            }
            deadlines.pop();
            let Some(c) = conns.get_mut(&token) else {
                continue;
            };
            match c.deadline(limits) {
                Some(d) if d <= now => {
                    if let Some(mut s) = c.take_stream() {
                        let _ = poll.registry().deregister(&mut s);
                    }
                    conns.remove(&token);
                    tracing::debug!(token, "primes server: closed a connection that timed out");
                }
                d => deadlines.push(Reverse((timeouts.next_check(now, d), token))),
            }
        }
        // A back-off retry of accept.
        if accept_retry.is_some_and(|t| t <= now) {
            accept_retry = None;
            backoff.retrying();
            let r = accept(poll, &mut conns, &mut deadlines);
            if let Some(d) = backoff.round(r) {
                accept_retry = Some(Instant::now() + d);
            }
        }
        let wake_at = deadlines
            .peek()
            .map(|Reverse((t, _))| *t)
            .into_iter()
            .chain(accept_retry)
            .min();
        let timeout = wake_at.map(|t| t.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for e in events.iter() {
            match e.token().0 {
                MioSource::WAKE_TOKEN => {}
                LISTENER => {
                    let r = accept(poll, &mut conns, &mut deadlines);
                    if let Some(d) = backoff.round(r) {
                        accept_retry = Some(Instant::now() + d);
                    }
                }
                token => {
                    let Some(c) = conns.get_mut(&token) else {
                        continue;
                    };
                    c.fill();
                    c.prepare(micros_since(started));
                    let k = c.prepared().len();
                    // The plain recorder never fails.
                    let bodies = apply(c.prepared(), &mut state).unwrap_or_default();
                    c.complete(k, bodies);
                    if c.finished() {
                        if let Some(mut s) = c.take_stream() {
                            let _ = poll.registry().deregister(&mut s);
                        }
                        conns.remove(&token);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn accept_backoff_doubles_up_to_a_second_and_ends_on_success() {
        let mut b = Backoff::default();
        assert!(out_of_descriptors(&emfile()));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&io::Error::from(
            io::ErrorKind::WouldBlock
        )));
        // The first failure schedules a retry after the minimum delay.
        assert_eq!(b.round(Err(emfile())), Some(Backoff::MIN_DELAY));
        // A failure while the retry is pending (the listener's own event) schedules nothing.
        assert_eq!(b.round(Err(emfile())), None);
        // Each retry that fails waits longer, up to the maximum.
        let mut last = Backoff::MIN_DELAY * 2;
        for _ in 0..20 {
            b.retrying();
            let d = b.round(Err(emfile())).expect("a retry is scheduled");
            assert!(d >= last.min(Backoff::MAX_DELAY) && d <= Backoff::MAX_DELAY);
            last = d;
        }
        assert_eq!(last, Backoff::MAX_DELAY);
        // A round that drains the listener ends the episode: the next failure starts over.
        b.retrying();
        assert_eq!(b.round(Ok(())), None);
        assert_eq!(b.round(Err(emfile())), Some(Backoff::MIN_DELAY));
    }
}
