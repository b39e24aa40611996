//! A small tokio + hyper HTTP/1.1 server whose handlers share state through transactional
//! variables, and its `Mutex` twin (issue #14).
//!
//! Requests:
//!
//! - `GET /work/N` (N a decimal integer, at most [`MAX_N`]): the handler puts a job on a
//!   bounded work queue (awaiting room while it is full), a few consumer tasks take the jobs
//!   (awaiting one while it is empty) and count the primes below N, and the handler awaits its
//!   job's result: `200` with `{"n":N,"primes_below":C}`.
//! - `GET /stats`: `200` with the shared counters as JSON ([`Stats`]): requests, hits per
//!   route (`/work`, `/stats`, `(other)`), jobs done, jobs queued, and how many producers found
//!   the queue full and waited.
//! - A bad N (not digits, too large): `400`; another path: `404`; another method than `GET` or
//!   `HEAD`: `405`; a request hyper cannot parse: `400` from hyper, and the connection closes. A
//!   job submitted while the server shuts down: `503`.
//!
//! Two backends implement the shared state ([`Backend`]), and the HTTP code, the handlers and
//! the consumer loop are generic over it, so the two servers differ in that state only:
//!
//! - [`StmBackend`] ([`Mode::Stm`]): [`TCounter`](stm_core::collections::TCounter)s, a
//!   [`TMap`](stm_core::collections::TMap) of per-route counters, a
//!   [`TBoundedQueue`](stm_core::collections::TBoundedQueue) of jobs and a `TVar` result slot
//!   per job. Every wait is a transaction that calls `retry`, awaited with
//!   [`stm_core::atomically_async`]: no thread blocks, and the commit that changes what the
//!   waiter read wakes it.
//! - [`MutexBackend`] ([`Mode::Mutex`]): `std::sync::Mutex`es, a `VecDeque` with two tokio
//!   `Notify`s for the bounded queue, and a tokio `oneshot` per job for the result.
//!
//! ```no_run
//! use stm_benches::async_server::{Mode, ServerConfig, start};
//! let server = start(ServerConfig::new("127.0.0.1:0".parse().unwrap(), Mode::Stm))?;
//! println!("listening on {}", server.local_addr());
//! let stats = server.stop()?; // drains the open connections and the queue
//! println!("{} requests", stats.requests);
//! # Ok::<(), std::io::Error>(())
//! ```

mod mutex;
mod stm;

pub use mutex::{MutexBackend, MutexJob, MutexTicket};
pub use stm::{StmBackend, StmJob, StmTicket};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// The largest N of `GET /work/N`.
pub const MAX_N: u32 = 1_000_000;

/// How long a client has to send a complete request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the shutdown waits for open connections to finish their requests before it drops
/// them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which shared state the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TVars and stm-core collections ([`StmBackend`]).
    Stm,
    /// `Mutex`es, `Notify`s and oneshots ([`MutexBackend`]).
    Mutex,
}

impl Mode {
    /// `"stm"` or `"mutex"`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stm => "stm",
            Mode::Mutex => "mutex",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    /// `stm` or `mutex` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stm" => Ok(Mode::Stm),
            "mutex" => Ok(Mode::Mutex),
            _ => Err(format!("{s:?} is not a mode: use `stm` or `mutex`")),
        }
    }
}

/// Where and how to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The address to listen on (port 0: any free port, see [`RunningServer::local_addr`]).
    pub addr: SocketAddr,
    /// STM or `Mutex` state.
    pub mode: Mode,
    /// Worker threads of the tokio runtime (the accept loop, the connections and the consumers
    /// all run on them).
    pub workers: usize,
    /// Consumer tasks taking jobs from the queue.
    pub consumers: usize,
    /// The most jobs the queue holds; handlers wait for room beyond it.
    pub queue_capacity: usize,
}

impl ServerConfig {
    /// `mode` at `addr` with 2 workers, 2 consumers and a queue of 64 jobs.
    pub fn new(addr: SocketAddr, mode: Mode) -> Self {
        ServerConfig {
            addr,
            mode,
            workers: 2,
            consumers: 2,
            queue_capacity: 64,
        }
    }

    /// Sets the number of tokio worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Sets the number of consumer tasks.
    pub fn consumers(mut self, n: usize) -> Self {
        self.consumers = n;
        self
    }

    /// Sets the queue's capacity.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Refuses a configuration the server cannot run with (an `InvalidInput` error that says
    /// why).
    pub fn validate(&self) -> io::Result<()> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
        if self.workers == 0 {
            return bad("at least one worker thread is needed");
        }
        if self.consumers == 0 {
            return bad("at least one consumer is needed (no job would ever finish)");
        }
        if self.queue_capacity == 0 {
            return bad("the queue capacity must be at least 1");
        }
        Ok(())
    }
}

/// The queue is closed: the server is shutting down and takes no new job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the work queue is closed")
    }
}

impl std::error::Error for Closed {}

/// The shared counters, as `GET /stats` answers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// `"stm"` or `"mutex"`.
    pub mode: &'static str,
    /// Requests counted (each counts once, under one route of `hits`).
    pub requests: u64,
    /// Requests per route: `/work`, `/stats`, `(other)`.
    pub hits: BTreeMap<String, u64>,
    /// Jobs whose result was published.
    pub jobs_done: u64,
    /// Jobs in the queue, not yet taken by a consumer.
    pub queued: u64,
    /// Submissions that found the queue full and waited for room.
    pub producer_waits: u64,
}

/// The state the handlers and consumers share, and the waits on it. [`StmBackend`] and
/// [`MutexBackend`] implement it; the server is generic over it.
///
/// Every job enqueued before [`close`](Backend::close) is still handed out by
/// [`next_job`](Backend::next_job), which returns `None` only once the queue is closed and
/// empty: a handler that got a ticket gets its result as long as the consumers run.
pub trait Backend: Send + Sync + 'static {
    /// A job taken from the queue.
    type Job: QueuedJob + Send + 'static;
    /// A handler's claim on its job's result.
    type Ticket: Send + 'static;

    /// `"stm"` or `"mutex"`.
    fn name(&self) -> &'static str;

    /// Counts one request under `route`.
    fn count_request(&self, route: &'static str) -> impl Future<Output = ()> + Send;

    /// Puts a job for `n` on the queue, waiting while it is full; `Err(Closed)` once it is
    /// closed.
    fn enqueue(&self, n: u32) -> impl Future<Output = Result<Self::Ticket, Closed>> + Send;

    /// The result of the ticket's job, once a consumer has published it (`None`: the job was
    /// dropped unanswered, which only a runtime shutting down does).
    fn wait(&self, ticket: Self::Ticket) -> impl Future<Output = Option<u64>> + Send;

    /// The next job, waiting while the queue is empty; `None` once it is closed and empty.
    fn next_job(&self) -> impl Future<Output = Option<Self::Job>> + Send;

    /// Publishes the result of `job` (and counts it done).
    fn complete(&self, job: Self::Job, primes: u64) -> impl Future<Output = ()> + Send;

    /// Closes the queue: submissions fail from now on, consumers finish what is queued and
    /// stop.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// A snapshot of the counters.
    fn stats(&self) -> impl Future<Output = Stats> + Send;
}

/// What a job asks for; implemented by both backends' job types.
pub trait QueuedJob {
    /// The N of `GET /work/N`.
    fn n(&self) -> u32;
}

impl QueuedJob for StmJob {
    fn n(&self) -> u32 {
        StmJob::n(self)
    }
}

impl QueuedJob for MutexJob {
    fn n(&self) -> u32 {
        MutexJob::n(self)
    }
}

/// The number of primes below `n` (a sieve of Eratosthenes: `n` bytes, about `n log log n`
/// steps): the job's work.
///
/// ```
/// assert_eq!(stm_benches::async_server::count_primes_below(10), 4); // 2, 3, 5, 7
/// assert_eq!(stm_benches::async_server::count_primes_below(2), 0);
/// ```
pub fn count_primes_below(n: u32) -> u64 {
    let n = n as usize;
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if composite[i] {
            continue;
        }
        count += 1;
        let mut j = i.saturating_mul(i);
        while j < n {
            composite[j] = true;
            j += i;
        }
    }
    count
}

/// The loop of a consumer task: take a job, compute it, publish its result, until the queue
/// is closed and empty.
pub async fn consume<B: Backend>(backend: &B) {
    while let Some(job) = backend.next_job().await {
        let primes = count_primes_below(job.n());
        backend.complete(job, primes).await;
    }
}

/// Parses the N of `/work/N`: decimal digits only, at most [`MAX_N`].
fn parse_n(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "expected /work/N with N a decimal integer, got {:?}",
            truncated(s)
        ));
    }
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_N => Ok(n),
        _ => Err(format!("N must be at most {MAX_N}")),
    }
}

/// At most 64 characters of a client's input, for an error message.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body + "\n")
}

fn json(body: String) -> Response<Full<Bytes>> {
    response(StatusCode::OK, "application/json", body)
}

/// Answers one request (hyper leaves out the body of a `HEAD` answer).
pub async fn handle<B: Backend>(backend: &B, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        backend.count_request("(other)").await;
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed", req.method()),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    if path == "/stats" {
        backend.count_request("/stats").await;
        let stats = backend.stats().await;
        return match serde_json::to_string(&stats) {
            Ok(s) => json(s),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    }
    let Some(arg) = path.strip_prefix("/work/") else {
        backend.count_request("(other)").await;
        return text(
            StatusCode::NOT_FOUND,
            format!("no such path {:?}: try /work/N or /stats", truncated(path)),
        );
    };
    backend.count_request("/work").await;
    let n = match parse_n(arg) {
        Ok(n) => n,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let answer = match backend.enqueue(n).await {
        Ok(ticket) => backend.wait(ticket).await,
        Err(Closed) => None,
    };
    match answer {
        Some(c) => json(format!("{{\"n\":{n},\"primes_below\":{c}}}")),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ),
    }
}

/// Serves one connection until it ends, or until `stop` turns true (then gracefully: the
/// request in progress is answered, then the connection closes).
async fn connection<B: Backend>(
    backend: Arc<B>,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
) {
    let svc = service_fn(move |req| {
        let backend = backend.clone();
        async move { Ok::<_, Infallible>(handle(&*backend, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    let mut conn = pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // The guard `wait_for` returns is not `Send`: drop it at once.
        () = async { drop(stop.wait_for(|&s| s).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // A client that resets or sends garbage: its connection's business, not the server's.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves on `listener` with `backend` until `shutdown` completes, then shuts down cleanly:
/// stops accepting, lets open connections finish their requests (closing idle ones), closes the
/// queue, waits for the consumers to drain it, and returns the final counters.
///
/// Spawns `consumers` consumer tasks and one task per connection on the current tokio runtime.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    consumers: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Stats> {
    let mut workers = JoinSet::new();
    for _ in 0..consumers.max(1) {
        let b = backend.clone();
        workers.spawn(async move { consume(&*b).await });
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(backend.clone(), stream, stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, or a connection aborted before it was accepted:
                    // wait a little (longer each time in a row) rather than spin.
                    tracing::warn!(error = %e, ?backoff, "accept failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            // Reap finished connections so the set does not grow with the server's lifetime.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}: dropping them");
        conns.shutdown().await;
    }
    backend.close().await;
    let mut failure = None;
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        return Err(io::Error::other(format!("a consumer task failed: {e}")));
    }
    Ok(backend.stats().await)
}

/// A server running on its own thread and tokio runtime; [`stop`](Self::stop) it (dropping it
/// stops it too).
pub struct RunningServer {
    addr: SocketAddr,
    mode: Mode,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<Stats>>>,
}

impl fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The address it listens on (the real port when the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// STM or `Mutex`.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Stops the server as [`serve`] describes, joins its thread and returns the final counters.
    pub fn stop(mut self) -> io::Result<Stats> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<Stats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the async server thread panicked"))),
            None => Err(io::Error::other("the server was already stopped")),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.thread.is_some()
            && let Err(e) = self.shutdown()
        {
            tracing::warn!(error = %e, "async server stopped with an error");
        }
    }
}

/// Binds `cfg.addr` and runs the server on a thread of its own with a tokio runtime of
/// `cfg.workers` worker threads. Returns once it listens.
pub fn start(cfg: ServerConfig) -> io::Result<RunningServer> {
    cfg.validate()?;
    let listener = std::net::TcpListener::bind(cfg.addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .thread_name(format!("async-server-{}", cfg.mode))
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("async-server-{}", cfg.mode))
        .spawn(move || {
            let shutdown = async move {
                // Err: the handle was dropped without `stop`, which `Drop` does not do; stop
                // all the same.
                let _ = stopped.await;
            };
            // The whole server runs on the workers (the accept loop included), so that
            // `workers` threads are all it uses; this thread only waits.
            let served = runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                let task = match cfg.mode {
                    Mode::Stm => tokio::spawn(serve(
                        listener,
                        Arc::new(StmBackend::new(cfg.queue_capacity)),
                        cfg.consumers,
                        shutdown,
                    )),
                    Mode::Mutex => tokio::spawn(serve(
                        listener,
                        Arc::new(MutexBackend::new(cfg.queue_capacity)),
                        cfg.consumers,
                        shutdown,
                    )),
                };
                task.await.unwrap_or_else(|e| {
                    Err(io::Error::other(format!("the server task failed: {e}")))
                })
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
            served
        })?;
    Ok(RunningServer {
        addr,
        mode: cfg.mode,
        stop: Some(stop),
        thread: Some(thread),
    })
}
