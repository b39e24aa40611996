//! A small HTTP/1.1 load generator: `C` keep-alive connections, each sending its next `GET` as
//! soon as the previous response has arrived (closed loop, like `siege -c C` or `wrk -c C`),
//! for a duration or a request count.
//!
//! The connections are spread over a few threads, each driving its share with one `mio` poll
//! (edge-triggered, non-blocking), so 50 connections cost one or two threads, not fifty. It
//! reports requests per second, latency percentiles (an `hdrhistogram` per thread, merged),
//! errors counted by kind, and its own CPU time (the on-CPU time of its threads, from
//! `/proc/thread-self/schedstat`), so its overhead can be stated beside the server's figures.
//!
//! ```no_run
//! use stm_benches::loadgen::{LoadConfig, Limit, run};
//! use std::time::Duration;
//! let cfg = LoadConfig::new("127.0.0.1:8888".parse().unwrap(), "/10000")
//!     .connections(50)
//!     .limit(Limit::Duration(Duration::from_secs(20)));
//! let report = run(&cfg, None).unwrap();
//! println!("{:.0} req/s, p99 {:?}", report.requests_per_second, report.latency.p99);
//! ```

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// After this long (responses still in flight at the end are not counted).
    Duration(Duration),
    /// After this many requests have been sent and answered (or failed).
    Requests(u64),
}

/// What to load and how hard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// The server.
    pub addr: SocketAddr,
    /// The `Host` header (defaults to `addr`).
    pub host: String,
    /// The request path, starting with `/`.
    pub path: String,
    /// Concurrent keep-alive connections (each has one request in flight at a time).
    pub connections: usize,
    /// Client threads the connections are spread over (0: one per 64 connections, at most the
    /// machine's parallelism).
    pub threads: usize,
    /// When to stop.
    pub limit: Limit,
    /// A request unanswered for this long counts as a `timeout` error and its connection is
    /// replaced.
    pub timeout: Duration,
}

impl LoadConfig {
    /// 50 connections for 20 seconds on `path` at `addr` (siege's `-c 50 -t 20s`).
    pub fn new(addr: SocketAddr, path: &str) -> Self {
        LoadConfig {
            addr,
            host: addr.to_string(),
            path: path.to_string(),
            connections: 50,
            threads: 0,
            limit: Limit::Duration(Duration::from_secs(20)),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the number of connections.
    pub fn connections(mut self, c: usize) -> Self {
        self.connections = c;
        self
    }

    /// Sets the number of client threads (0: automatic).
    pub fn threads(mut self, t: usize) -> Self {
        self.threads = t;
        self
    }

    /// Sets when the run stops.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limit = limit;
        self
    }

    /// Sets the per-request timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn validate(&self) -> Result<(), LoadError> {
        if self.connections == 0 {
            return Err(LoadError::Config(
                "at least one connection is needed".into(),
            ));
        }
        if !self.path.starts_with('/') || self.path.contains(char::is_whitespace) {
            return Err(LoadError::Config(format!(
                "path {:?} must start with '/' and contain no spaces",
                self.path
            )));
        }
        if self.host.contains(['\r', '\n']) {
            return Err(LoadError::Config("host contains a line break".into()));
        }
        match self.limit {
            Limit::Duration(d) if d.is_zero() => {
                Err(LoadError::Config("the duration must be positive".into()))
            }
            Limit::Requests(0) => Err(LoadError::Config(
                "the request count must be positive".into(),
            )),
            _ if self.timeout.is_zero() => {
                Err(LoadError::Config("the timeout must be positive".into()))
            }
            _ => Ok(()),
        }
    }

    fn client_threads(&self) -> usize {
        let t = if self.threads == 0 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            self.connections.div_ceil(64).min(cores)
        } else {
            self.threads
        };
        t.clamp(1, self.connections)
    }
}

/// Why a run could not start.
#[derive(Debug)]
pub enum LoadError {
    /// The configuration is unusable (the message says why).
    Config(String),
    /// The OS refused a poll or a thread.
    Io(io::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(m) => write!(f, "bad load configuration: {m}"),
            LoadError::Io(e) => write!(f, "load generator I/O error: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<io::Error> for LoadError {
    fn from(e: io::Error) -> Self {
        LoadError::Io(e)
    }
}

/// Latency percentiles of the successful requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    #[serde(serialize_with = "as_micros")]
    pub p50: Duration,
    /// 90th percentile.
    #[serde(serialize_with = "as_micros")]
    pub p90: Duration,
    /// 99th percentile.
    #[serde(serialize_with = "as_micros")]
    pub p99: Duration,
    /// Slowest.
    #[serde(serialize_with = "as_micros")]
    pub max: Duration,
    /// Mean.
    #[serde(serialize_with = "as_micros")]
    pub mean: Duration,
}

fn as_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Failures by kind: `connect`, `reset`, `closed` (EOF mid-response), `parse`, `timeout`,
    /// `status 503`, ...
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the run.
    #[serde(serialize_with = "as_micros")]
    pub elapsed: Duration,
    /// Successful responses per second.
    pub requests_per_second: f64,
    /// Latency of the successful requests (send of the first byte to the last byte received).
    pub latency: Latency,
    /// Response bytes received.
    pub bytes: u64,
    /// CPU time the client threads used (None where the OS does not tell).
    #[serde(serialize_with = "opt_micros")]
    pub cpu: Option<Duration>,
}

fn opt_micros<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_micros() as u64)),
        None => s.serialize_none(),
    }
}

impl LoadReport {
    /// Every failed request.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The client's CPU use as a percentage of one core over the run.
    pub fn cpu_percent(&self) -> Option<f64> {
        let wall = self.elapsed.as_secs_f64();
        self.cpu
            .filter(|_| wall > 0.0)
            .map(|c| 100.0 * c.as_secs_f64() / wall)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ok, {} failed in {:.2}s: {:.1} req/s",
            self.ok,
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.requests_per_second
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  mean {:?}",
            l.p50, l.p90, l.p99, l.max, l.mean
        )?;
        for (k, n) in &self.errors {
            writeln!(f, "  error {k}: {n}")?;
        }
        if let (Some(c), Some(p)) = (self.cpu, self.cpu_percent()) {
            writeln!(
                f,
                "client CPU {:.3}s ({p:.1}% of one core)",
                c.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Option<Duration> {
    // schedstat: "<ns on cpu> <ns waiting> <timeslices>".
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs the load described by `cfg`. `progress`, when given, counts finished requests (ok or
/// failed) as they happen, for a progress bar.
pub fn run(cfg: &LoadConfig, progress: Option<&AtomicU64>) -> Result<LoadReport, LoadError> {
    cfg.validate()?;
    let threads = cfg.client_threads();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: stm-loadgen\r\n\r\n",
        cfg.path, cfg.host
    )
    .into_bytes();
    // Requests not yet claimed by a connection (request-count mode); i64::MAX in duration mode.
    let budget = AtomicI64::new(match cfg.limit {
        Limit::Requests(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Limit::Duration(_) => i64::MAX,
    });
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = match cfg.limit {
        Limit::Duration(d) => Some(start + d),
        Limit::Requests(_) => None,
    };
    let results: Vec<io::Result<Worker<'_>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let conns = cfg.connections / threads + usize::from(t < cfg.connections % threads);
                let (request, budget, stop) = (&request, &budget, &stop);
                s.spawn(move || {
                    let mut w = Worker::new(cfg, conns, request, budget, stop, progress, deadline)?;
                    let cpu0 = thread_cpu();
                    w.run();
                    w.cpu = cpu0.zip(thread_cpu()).map(|(a, b)| b.saturating_sub(a));
                    Ok(w)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a load generator thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut report = LoadReport {
        elapsed,
        cpu: Some(Duration::ZERO),
        ..LoadReport::default()
    };
    let mut hist = new_histogram();
    for w in results {
        let w = w?;
        report.ok += w.ok;
        report.bytes += w.bytes;
        for (k, n) in w.errors {
            *report.errors.entry(k).or_default() += n;
        }
        // Same bounds on both sides: `add` cannot fail.
        let _ = hist.add(&w.hist);
        report.cpu = report.cpu.zip(w.cpu).map(|(a, b)| a + b);
    }
    report.requests_per_second = report.ok as f64 / elapsed.as_secs_f64().max(1e-9);
    if !hist.is_empty() {
        let q = |q: f64| Duration::from_micros(hist.value_at_quantile(q));
        report.latency = Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: Duration::from_micros(hist.max()),
            mean: Duration::from_secs_f64(hist.mean() / 1e6),
        };
    }
    Ok(report)
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 hour, 3 significant digits; values above are clamped by `saturating_record`.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connecting; the request goes out when the socket is writable.
    Connecting,
    /// Sending the request from this offset.
    Writing(usize),
    /// Waiting for (the rest of) the response.
    Reading,
    /// Out of work: no request in flight.
    Idle,
}

struct Conn {
    stream: TcpStream,
    state: State,
    buf: Vec<u8>,
    sent_at: Instant,
}

/// One client thread and its connections.
struct Worker<'a> {
    cfg: &'a LoadConfig,
    request: &'a [u8],
    budget: &'a AtomicI64,
    stop: &'a AtomicBool,
    progress: Option<&'a AtomicU64>,
    deadline: Option<Instant>,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    ok: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
    hist: Histogram<u64>,
    cpu: Option<Duration>,
    /// Requests claimed from the budget and not yet finished.
    in_flight: usize,
}

impl<'a> Worker<'a> {
    fn new(
        cfg: &'a LoadConfig,
        n: usize,
        request: &'a [u8],
        budget: &'a AtomicI64,
        stop: &'a AtomicBool,
        progress: Option<&'a AtomicU64>,
        deadline: Option<Instant>,
    ) -> io::Result<Self> {
        let mut w = Worker {
            cfg,
            request,
            budget,
            stop,
            progress,
            deadline,
            poll: Poll::new()?,
            conns: (0..n).map(|_| None).collect(),
            ok: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            hist: new_histogram(),
            cpu: None,
            in_flight: 0,
        };
        for i in 0..n {
            w.open(i);
        }
        Ok(w)
    }

    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        if let Some(p) = self.progress {
            p.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Claims one request from the budget.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        // Relaxed: the budget is a plain counter; only its RMW atomicity matters.
        self.budget.fetch_sub(1, Ordering::Relaxed) > 0
    }

    /// Opens connection `i` for a new request (if the budget allows one).
    fn open(&mut self, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        if !self.claim() {
            return;
        }
        self.in_flight += 1;
        let mut stream = match TcpStream::connect(self.cfg.addr) {
            Ok(s) => s,
            Err(_) => {
                self.in_flight -= 1;
                self.error("connect");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.in_flight -= 1;
            self.error("register");
            return;
        }
        self.conns[i] = Some(Conn {
            stream,
            state: State::Connecting,
            buf: Vec::with_capacity(1024),
            sent_at: Instant::now(),
        });
    }

    /// Connection `i` failed with `kind`: count it and replace the connection.
    fn fail(&mut self, i: usize, kind: &str) {
        if let Some(c) = &self.conns[i]
            && c.state != State::Idle
        {
            self.in_flight -= 1;
            self.error(kind);
        }
        self.open(i);
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let tick = Duration::from_millis(50);
        let mut last_expire = Instant::now();
        loop {
            if self.in_flight == 0 {
                break;
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                break;
            }
            let wait = self.deadline.map_or(tick, |d| (d - now).min(tick));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.stop.store(true, Ordering::Relaxed);
                break;
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if i < self.conns.len() {
                    self.drive(i);
                }
            }
            // Timeouts are coarse (a tick): no need to scan every connection per wake-up.
            if last_expire.elapsed() >= tick {
                self.expire();
                last_expire = Instant::now();
            }
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Counts and replaces requests older than the timeout.
    fn expire(&mut self) {
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let late = self.conns[i].as_ref().is_some_and(|c| {
                c.state != State::Idle && now.duration_since(c.sent_at) > self.cfg.timeout
            });
            if late {
                self.fail(i, "timeout");
            }
        }
    }

    /// Makes all the progress connection `i` can make without blocking.
    fn drive(&mut self, i: usize) {
        loop {
            let Some(c) = self.conns[i].as_mut() else {
                return;
            };
            match c.state {
                State::Idle => return,
                State::Connecting => {
                    match c.stream.take_error() {
                        Ok(None) => {}
                        _ => return self.fail(i, "connect"),
                    }
                    match c.stream.peer_addr() {
                        Ok(_) => {
                            c.state = State::Writing(0);
                            c.sent_at = Instant::now();
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                        Err(_) => return self.fail(i, "connect"),
                    }
                }
                State::Writing(off) => match c.stream.write(&self.request[off..]) {
                    Ok(0) => return self.fail(i, "closed"),
                    Ok(n) if off + n == self.request.len() => c.state = State::Reading,
                    Ok(n) => c.state = State::Writing(off + n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.fail(i, "reset"),
                },
                State::Reading => {
                    let mut chunk = [0u8; 4096];
                    match c.stream.read(&mut chunk) {
                        Ok(0) => return self.fail(i, "closed"),
                        Ok(n) => {
                            c.buf.extend_from_slice(&chunk[..n]);
                            match parse_response(&c.buf) {
                                Parsed::Partial => {}
                                Parsed::Bad => return self.fail(i, "parse"),
                                Parsed::Done { len, status, close } => {
                                    let latency = c.sent_at.elapsed();
                                    c.buf.drain(..len);
                                    self.finish(i, len, status, latency, close);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return self.fail(i, "reset"),
                    }
                }
            }
        }
    }

    /// A response of `len` bytes arrived on connection `i`: record it and send the next.
    fn finish(&mut self, i: usize, len: usize, status: u16, latency: Duration, close: bool) {
        self.in_flight -= 1;
        self.bytes += len as u64;
        if (200..300).contains(&status) {
            self.ok += 1;
            self.hist
                .saturating_record(latency.as_micros().max(1) as u64);
            if let Some(p) = self.progress {
                p.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.error(&format!("status {status}"));
        }
        let keep = !close;
        if keep && self.claim() {
            self.in_flight += 1;
            if let Some(c) = self.conns[i].as_mut() {
                c.state = State::Writing(0);
                c.sent_at = Instant::now();
            }
        } else if keep {
            if let Some(c) = self.conns[i].as_mut() {
                c.state = State::Idle;
            }
        } else {
            self.open(i);
        }
    }
}

enum Parsed {
    Partial,
    Bad,
    /// A whole response of `len` bytes.
    Done {
        len: usize,
        status: u16,
        close: bool,
    },
}

/// Parses one response at the start of `buf`: headers by `httparse`, body by
/// `Content-Length` (responses without one and not to be closed are `Bad`: the client cannot
/// tell where they end).
fn parse_response(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad,
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(l) => length = Some(l),
                None => return Parsed::Bad,
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad;
        }
    }
    // 1xx, 204 and 304 have no body.
    let length = match (status, length) {
        (100..=199 | 204 | 304, _) => 0,
        (_, Some(l)) => l,
        (_, None) => return Parsed::Bad,
    };
    if buf.len() < head + length {
        return Parsed::Partial;
    }
    Parsed::Done {
        len: head + length,
        status,
        close,
    }
}

/// Splits `http://host[:port]/path` into the address to connect to, the `Host` header and the
/// path (default port 80, default path `/`).
pub fn parse_url(url: &str) -> Result<(SocketAddr, String, String), LoadError> {
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| LoadError::Config(format!("{url:?}: only http:// URLs are supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(LoadError::Config(format!("{url:?}: no host")));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| LoadError::Config(format!("{url:?}: cannot resolve {with_port}: {e}")))?
        .next()
        .ok_or_else(|| LoadError::Config(format!("{url:?}: {with_port} has no address")))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

/// Parses a duration such as `20s`, `1.5s`, `500ms`, `2m` or `10` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 20s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A tiny keep-alive HTTP server: answers every request with `status` and a 5-byte body
    /// (or closes after each response when `close`), and stops after `max` requests.
    fn serve(status: u16, close: bool, max: usize) -> (SocketAddr, std::thread::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let served = std::sync::Arc::new(AtomicU64::new(0));
            let mut conns = Vec::new();
            for s in l.incoming() {
                let Ok(s) = s else { break };
                if served.load(Ordering::SeqCst) >= max as u64 {
                    break;
                }
                let served = served.clone();
                conns.push(std::thread::spawn(move || {
                    let mut w = s.try_clone().expect("clone");
                    let mut r = BufReader::new(s);
                    loop {
                        let mut line = String::new();
                        // Request line and headers, up to the blank line.
                        let mut first = true;
                        loop {
                            line.clear();
                            match r.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if first {
                                assert!(line.starts_with("GET /x HTTP/1.1"), "{line}");
                                first = false;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        if served.fetch_add(1, Ordering::SeqCst) >= max as u64 {
                            return;
                        }
                        let c = if close { "Connection: close\r\n" } else { "" };
                        let resp =
                            format!("HTTP/1.1 {status} X\r\nContent-Length: 5\r\n{c}\r\nhello");
                        if w.write_all(resp.as_bytes()).is_err() || close {
                            return;
                        }
                    }
                }));
            }
            drop(conns);
            served.load(Ordering::SeqCst) as usize
        });
        (addr, h)
    }

    #[test]
    fn request_count_mode_gets_every_answer() {
        let (addr, _server) = serve(200, false, 1_000_000);
        let cfg = LoadConfig::new(addr, "/x")
            .connections(4)
            .threads(2)
            .limit(Limit::Requests(300));
        let progress = AtomicU64::new(0);
        let r = run(&cfg, Some(&progress)).expect("runs");
        assert_eq!(r.ok, 300, "{r}");
        assert_eq!(r.failed(), 0, "{r}");
        assert_eq!(progress.load(Ordering::Relaxed), 300);
        assert!(r.bytes >= 300 * 5);
        assert!(r.latency.p50 <= r.latency.p99 && r.latency.p99 <= r.latency.max);
        assert!(r.requests_per_second > 0.0);
        let json = serde_json::to_string(&r).expect("serialises");
        assert!(json.contains("\"ok\":300"), "{json}");
    }

    #[test]
    fn connection_close_responses_reconnect() {
        let (addr, _server) = serve(200, true, 1_000_000);
        let cfg = LoadConfig::new(addr, "/x")
            .connections(3)
            .limit(Limit::Requests(30));
        let r = run(&cfg, None).expect("runs");
        assert_eq!((r.ok, r.failed()), (30, 0), "{r}");
    }

    #[test]
    fn error_statuses_are_counted_by_kind() {
        let (addr, _server) = serve(503, false, 1_000_000);
        let cfg = LoadConfig::new(addr, "/x")
            .connections(2)
            .limit(Limit::Requests(20));
        let r = run(&cfg, None).expect("runs");
        assert_eq!(r.ok, 0);
        assert_eq!(r.errors.get("status 503"), Some(&20), "{r}");
    }

    #[test]
    fn duration_mode_stops_and_a_dead_server_is_a_connect_error() {
        // Bind then drop: nothing listens on that port any more.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind");
        let cfg = LoadConfig::new(addr, "/x")
            .connections(2)
            .limit(Limit::Requests(10));
        let r = run(&cfg, None).expect("runs");
        assert_eq!(r.ok, 0);
        assert!(r.errors.contains_key("connect"), "{r}");

        let (addr, _server) = serve(200, false, 1_000_000);
        let cfg = LoadConfig::new(addr, "/x")
            .connections(2)
            .limit(Limit::Duration(Duration::from_millis(200)));
        let r = run(&cfg, None).expect("runs");
        assert!(r.ok > 0 && r.failed() == 0, "{r}");
        assert!(r.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn bad_configurations_and_urls_are_errors() {
        let a: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        for cfg in [
            LoadConfig::new(a, "/").connections(0),
            LoadConfig::new(a, "x"),
            LoadConfig::new(a, "/a b"),
            LoadConfig::new(a, "/").limit(Limit::Requests(0)),
            LoadConfig::new(a, "/").limit(Limit::Duration(Duration::ZERO)),
            LoadConfig::new(a, "/").timeout(Duration::ZERO),
        ] {
            let e = run(&cfg, None).expect_err("invalid");
            assert!(e.to_string().starts_with("bad load configuration"), "{e}");
        }
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http:///p").is_err());
        let (addr, host, path) = parse_url("http://127.0.0.1:8888/10000").expect("valid");
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (8888, "127.0.0.1:8888", "/10000")
        );
        let (addr, _, path) = parse_url("http://127.0.0.1").expect("valid");
        assert_eq!((addr.port(), path.as_str()), (80, "/"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn response_parsing() {
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n"),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP"),
            Parsed::Done {
                len: 41,
                status: 200,
                close: false
            }
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 204 OK\r\nConnection: close\r\n\r\n"),
            Parsed::Done {
                status: 204,
                close: true,
                ..
            }
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Parsed::Bad
        ));
        assert!(matches!(parse_response(b"garbage\r\n\r\n"), Parsed::Bad));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Parsed::Bad
        ));
    }
}
