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
//! `400` and the connection closes. Keep-alive is the HTTP/1.1 default (`Connection: close`
//! ends it; HTTP/1.0 closes unless it asks for keep-alive).

mod conn;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Interest, Token};
use stm_core::collections::{TCounter, TMap};
use stm_core::{TVar, Tx, TxResult};
use stm_loop::{EventLoop, LoopHandle, MioSource};

use conn::{Conn, MAX_PATH_LEN, MAX_PATHS, OTHER_PATHS, Recorder, apply, hit_key};
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

/// Binds `config.addr` and starts serving on a new thread.
pub fn start(config: ServerConfig) -> io::Result<RunningServer> {
    let listener = std::net::TcpListener::bind(config.addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = mio::net::TcpListener::from_std(listener);
    match config.mode {
        ServerMode::Serial => start_serial(listener, addr),
        ServerMode::Stm { workers } => start_stm(listener, addr, workers.max(1)),
    }
}

fn micros_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Accepts until `WouldBlock`; transient errors are skipped, others end this round (logged).
fn accept_all(listener: &mio::net::TcpListener, mut f: impl FnMut(mio::net::TcpStream)) {
    loop {
        match listener.accept() {
            Ok((s, _)) => f(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "primes server: accept failed");
                return;
            }
        }
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

/// What every handler of the STM server shares outside the transactions: the registry and the
/// loop's handle (used after commits) and the clock.
struct StmCtx {
    registry: mio::Registry,
    handle: LoopHandle<StmState>,
    started: Instant,
    next_token: AtomicUsize,
}

impl StmCtx {
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
        let conn = Arc::new(Mutex::new(Conn::new(stream)));
        let ctx = self.clone();
        self.handle.set_handler(token, move |tx, state, _ready| {
            let now = micros_since(ctx.started);
            let mut c = lock(&conn);
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
    }

    fn complete(&self, token: usize, conn: &Mutex<Conn>, k: usize, bodies: Vec<Vec<u8>>) {
        let mut c = lock(conn);
        c.complete(k, bodies);
        if c.finished() {
            if let Some(mut s) = c.take_stream() {
                let _ = self.registry.deregister(&mut s);
            }
            drop(c);
            self.handle.remove_handler(token);
        }
    }
}

fn start_stm(
    mut listener: mio::net::TcpListener,
    addr: SocketAddr,
    workers: usize,
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
    });
    // Accepted sockets wait here until the accepting transaction commits.
    let accepted: Arc<Mutex<Vec<mio::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    handle.set_handler(LISTENER, move |tx, _, _ready| {
        accept_all(&listener, |s| lock(&accepted).push(s));
        let (accepted, ctx) = (accepted.clone(), ctx.clone());
        tx.after_commit(move || {
            for s in lock(&accepted).drain(..) {
                ctx.add_connection(s);
            }
        });
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
            let r = serial_loop(&mut poll, &listener, &stop2);
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
) -> io::Result<()> {
    let started = Instant::now();
    let mut state = PlainState::default();
    let mut conns: std::collections::HashMap<usize, Conn> = std::collections::HashMap::new();
    let mut next_token = LISTENER + 1;
    let mut events = mio::Events::with_capacity(1024);
    loop {
        // Acquire: pairs with the Release store of the stopper.
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for e in events.iter() {
            match e.token().0 {
                MioSource::WAKE_TOKEN => {}
                LISTENER => accept_all(listener, |mut s| {
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
                        conns.insert(token, Conn::new(s));
                    }
                }),
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
