//! One HTTP/1.1 connection of the primes server, shared by the STM and the serial modes.
//!
//! The work on a readable connection is split in three steps, so that the STM mode can run the
//! middle one inside a transaction without doing I/O there or redoing the expensive part:
//!
//! 1. [`Conn::fill`] and [`Conn::prepare`]: read everything available (edge-triggered: until
//!    `WouldBlock`), parse the complete requests with httparse and compute their responses
//!    (the prime search). The results are kept in the connection, outside any transaction, so a
//!    transaction that aborts and runs again finds them done (memoised per request).
//! 2. [`apply`]: the shared-state effects (request counter, start-time stamp, per-path hits)
//!    and the `/stats` bodies, through a [`Recorder`]: transactional in STM mode, plain fields
//!    in serial mode.
//! 3. [`Conn::complete`]: after the commit, queue the responses and write them.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serde::Serialize;
use stm_core::TxResult;

/// The largest N a request may ask for.
pub const MAX_N: u32 = 1_000_000;
/// Request heads longer than this are refused (431), however their bytes arrive: the parser
/// never sees more than this many bytes of one head.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Headers per request.
const MAX_HEADERS: usize = 32;
/// Distinct paths counted in the per-path hits; the rest count under `OTHER_PATHS`.
pub(crate) const MAX_PATHS: usize = 256;
/// Paths longer than this are counted under `OTHER_PATHS`.
pub(crate) const MAX_PATH_LEN: usize = 64;
/// The key that collects the paths beyond the limits above.
pub(crate) const OTHER_PATHS: &str = "(other)";

/// Whether `n` is prime, by trial division by every `i` in `2..n`, exactly as the article's
/// `is_prime` (the point is the amount of work, not the algorithm).
// The article's `n % i == 0`, kept literally (`is_multiple_of` adds a branch for `i == 0`).
#[allow(clippy::manual_is_multiple_of)]
pub fn is_prime(n: u32) -> bool {
    for i in 2..n {
        if n % i == 0 {
            return false;
        }
    }
    true
}

/// All primes in `2..=n`, as the article's handler computes them.
pub fn primes_up_to(n: u32) -> Vec<u32> {
    (2..=n).filter(|&k| is_prime(k)).collect()
}

/// The shared state a request touches: transactional in STM mode, plain in serial mode.
pub(crate) trait Recorder {
    /// Counts one request for `path` (None: a request too malformed to have one), started at
    /// `start_us` (microseconds since the server started).
    fn record(&mut self, path: Option<&str>, start_us: u64) -> TxResult<()>;
    /// The `/stats` document.
    fn stats(&mut self) -> TxResult<serde_json::Value>;
}

/// The key a path is counted under.
pub(crate) fn hit_key<'a>(hits: &BTreeMap<String, u64>, path: &'a str) -> &'a str {
    if path.len() > MAX_PATH_LEN || (hits.len() >= MAX_PATHS && !hits.contains_key(path)) {
        OTHER_PATHS
    } else {
        path
    }
}

/// What a parsed request asks for.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The full response, computed outside the transaction; `None` for `/stats`, whose body is
    /// rendered inside it.
    response: Option<Vec<u8>>,
    /// The path for the hit counts.
    path: Option<String>,
    start_us: u64,
    close: bool,
    /// A `HEAD` request: only the head of the response is sent.
    head_only: bool,
}

#[derive(Serialize)]
struct PrimesBody<'a> {
    primes: &'a [u32],
}

/// An HTTP response with a JSON body.
fn response(status: u16, reason: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 128);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    out.extend_from_slice(body);
    out
}

fn error_response(status: u16, reason: &str, message: &str, close: bool) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    response(status, reason, body.as_bytes(), close)
}

/// The head of a response (through the blank line): what a `HEAD` request gets.
fn head_of(response: &[u8]) -> &[u8] {
    match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &response[..i + 4],
        None => response,
    }
}

/// The response to `GET /stats`, from the recorder's document.
fn stats_response(doc: &serde_json::Value, close: bool) -> Vec<u8> {
    response(200, "OK", doc.to_string().as_bytes(), close)
}

/// How a request target maps to an action.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Primes(u32),
    Stats,
    BadNumber(&'static str),
    NotFound,
}

/// `/N` (N decimal digits, at most [`MAX_N`]), `/stats`; any other single segment is a bad N;
/// other paths are unknown. A query string is ignored.
pub(crate) fn route(target: &str) -> Route {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let Some(seg) = path.strip_prefix('/') else {
        return Route::NotFound;
    };
    if seg == "stats" {
        return Route::Stats;
    }
    if seg.is_empty() || seg.contains('/') {
        return Route::NotFound;
    }
    if !seg.bytes().all(|b| b.is_ascii_digit()) {
        return Route::BadNumber("N must be a non-negative decimal integer");
    }
    match seg.parse::<u32>() {
        Ok(n) if n <= MAX_N => Route::Primes(n),
        _ => Route::BadNumber("N must be at most 1000000"),
    }
}

/// A connection: the socket, its buffers, and the requests parsed but not yet answered.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Option<mio::net::TcpStream>,
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` that belong to requests already in `prepared`.
    parsed: usize,
    prepared: VecDeque<Prepared>,
    outbuf: Vec<u8>,
    out_pos: usize,
    /// The peer closed its side (or the socket failed): answer what is parsed, then close.
    eof: bool,
    /// A request asked to close (or was malformed): parse nothing after it.
    closing: bool,
    /// When the head being waited for started: the connection's start for its first request,
    /// the arrival of the first bytes for the next ones; `None` between requests.
    head_since: Option<Instant>,
    /// The last time bytes moved in either direction (or the connection started).
    activity: Instant,
}

/// How long a client may take: see [`Conn::deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
}

impl Conn {
    pub(crate) fn new(stream: mio::net::TcpStream) -> Self {
        Conn {
            stream: Some(stream),
            inbuf: Vec::new(),
            parsed: 0,
            prepared: VecDeque::new(),
            outbuf: Vec::new(),
            out_pos: 0,
            eof: false,
            closing: false,
            head_since: Some(Instant::now()),
            activity: Instant::now(),
        }
    }

    /// When the connection should be closed if nothing happens before: the header timeout
    /// after the start of a head not complete yet, the idle timeout after the last bytes moved
    /// otherwise (between requests, or while a response waits for the client to read it).
    /// `None` while requests are being answered (the server's own time).
    pub(crate) fn deadline(&self, limits: Limits) -> Option<Instant> {
        if self.stream.is_none() || !self.prepared.is_empty() {
            return None;
        }
        Some(match self.head_since {
            Some(t) => t + limits.header,
            None => self.activity + limits.idle,
        })
    }

    /// Whether the connection is still open.
    pub(crate) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Reads until `WouldBlock`, end of stream or error.
    pub(crate) fn fill(&mut self) {
        if self.eof || self.closing {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                // Edge-triggered: read it all. An oversized head is refused by `prepare`, which
                // then stops the reading (`closing`).
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.activity = Instant::now();
                    if self.head_since.is_none() {
                        self.head_since = Some(self.activity);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.eof = true;
                    return;
                }
            }
        }
    }

    /// Parses the complete requests not parsed yet and computes their responses.
    pub(crate) fn prepare(&mut self, now_us: u64) {
        self.prepare_heads(now_us);
        if self.parsed < self.inbuf.len() && self.head_since.is_none() {
            // The bytes left are the start of the next head.
            self.head_since = Some(Instant::now());
        }
    }

    fn prepare_heads(&mut self, now_us: u64) {
        while !self.closing {
            let buf = &self.inbuf[self.parsed..];
            if buf.is_empty() {
                return;
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            // At most `MAX_HEAD` bytes reach the parser, however many arrived in one read: a
            // head that is not complete within them is too large.
            let len = match req.parse(&buf[..buf.len().min(MAX_HEAD)]) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {
                    if self.eof {
                        // The peer went away mid-request: nothing to answer.
                        self.parsed = self.inbuf.len();
                    }
                    return;
                }
                Ok(httparse::Status::Partial) => {
                    self.reject(
                        431,
                        "Request Header Fields Too Large",
                        "request head too large",
                    );
                    return;
                }
                Err(e) => {
                    self.reject(400, "Bad Request", &format!("malformed request: {e}"));
                    return;
                }
            };
            self.parsed += len;
            self.head_since = None;
            let http11 = req.version == Some(1);
            let mut close = !http11;
            let mut has_body = false;
            let mut bad_header = false;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("connection") {
                    let v = String::from_utf8_lossy(h.value);
                    for token in v.split(',').map(str::trim) {
                        if token.eq_ignore_ascii_case("close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                            close = false;
                        }
                    }
                } else if h.name.eq_ignore_ascii_case("content-length") {
                    match std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        Some(0) => {}
                        Some(_) => has_body = true,
                        None => bad_header = true,
                    }
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    has_body = true;
                }
            }
            let method = req.method.unwrap_or("");
            let head_only = method == "HEAD";
            let target = req.path.unwrap_or("");
            let path = target.split(['?', '#']).next().unwrap_or("").to_string();
            if bad_header || has_body {
                // We cannot frame what follows a body we do not read: answer and close.
                let msg = if bad_header {
                    "invalid Content-Length"
                } else {
                    "request bodies are not accepted"
                };
                self.push(
                    error_response(400, "Bad Request", msg, true),
                    Some(path),
                    now_us,
                    true,
                    head_only,
                );
                return;
            }
            if method != "GET" && !head_only {
                self.push(
                    error_response(
                        405,
                        "Method Not Allowed",
                        "only GET and HEAD are served",
                        true,
                    ),
                    Some(path),
                    now_us,
                    true,
                    false,
                );
                return;
            }
            let resp = match route(target) {
                Route::Primes(n) => {
                    let primes = primes_up_to(n);
                    let body = serde_json::to_vec(&PrimesBody { primes: &primes })
                        .unwrap_or_else(|_| b"{\"primes\":[]}".to_vec());
                    Some(response(200, "OK", &body, close))
                }
                Route::Stats => None,
                Route::BadNumber(msg) => Some(error_response(400, "Bad Request", msg, close)),
                Route::NotFound => Some(error_response(404, "Not Found", "no such path", close)),
            };
            match resp {
                Some(r) => self.push(r, Some(path), now_us, close, head_only),
                None => self.prepared.push_back(Prepared {
                    response: None,
                    path: Some(path),
                    start_us: now_us,
                    close,
                    head_only,
                }),
            }
            if close {
                self.closing = true;
            }
        }
    }

    fn push(
        &mut self,
        response: Vec<u8>,
        path: Option<String>,
        start_us: u64,
        close: bool,
        head_only: bool,
    ) {
        self.prepared.push_back(Prepared {
            response: Some(response),
            path,
            start_us,
            close,
            head_only,
        });
        if close {
            self.closing = true;
        }
    }

    fn reject(&mut self, status: u16, reason: &str, msg: &str) {
        self.parsed = self.inbuf.len();
        self.push(
            error_response(status, reason, msg, true),
            None,
            0,
            true,
            false,
        );
    }

    /// The requests prepared so far (what a transaction will answer).
    pub(crate) fn prepared(&self) -> &VecDeque<Prepared> {
        &self.prepared
    }

    /// After the commit that applied the first `k` prepared requests: queue their responses
    /// (`stats` holds the `/stats` bodies rendered in the transaction, in order) and write.
    pub(crate) fn complete(&mut self, k: usize, stats: Vec<Vec<u8>>) {
        let mut stats = stats.into_iter();
        for p in self.prepared.drain(..k.min(self.prepared.len())) {
            let r = match p.response {
                Some(r) => r,
                None => stats.next().unwrap_or_default(),
            };
            let r = if p.head_only { head_of(&r) } else { &r[..] };
            self.outbuf.extend_from_slice(r);
        }
        if self.prepared.is_empty() && self.parsed > 0 {
            self.inbuf.drain(..self.parsed);
            self.parsed = 0;
        }
        self.flush();
    }

    /// Writes the output buffer until it is empty or the socket would block.
    pub(crate) fn flush(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        while self.out_pos < self.outbuf.len() {
            match stream.write(&self.outbuf[self.out_pos..]) {
                Ok(0) => {
                    self.eof = true;
                    self.outbuf.clear();
                    self.out_pos = 0;
                    return;
                }
                Ok(n) => {
                    self.out_pos += n;
                    self.activity = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The peer is gone: drop what it will never read.
                    self.eof = true;
                    self.closing = true;
                    self.outbuf.clear();
                    self.out_pos = 0;
                    return;
                }
            }
        }
        self.outbuf.clear();
        self.out_pos = 0;
    }

    /// Whether the connection is done: closed by either side with nothing left to send.
    pub(crate) fn finished(&self) -> bool {
        self.stream.is_none()
            || ((self.eof || self.closing) && self.prepared.is_empty() && self.outbuf.is_empty())
    }

    /// Closes the socket (dropping it); returns it for deregistration first.
    pub(crate) fn take_stream(&mut self) -> Option<mio::net::TcpStream> {
        self.stream.take()
    }
}

/// Applies the effects of `prepared` through `rec` and renders the `/stats` bodies, in order.
/// Runs inside the transaction in STM mode: no I/O here.
pub(crate) fn apply<R: Recorder>(
    prepared: &VecDeque<Prepared>,
    rec: &mut R,
) -> TxResult<Vec<Vec<u8>>> {
    let mut bodies = Vec::new();
    for p in prepared {
        rec.record(p.path.as_deref(), p.start_us)?;
        if p.response.is_none() {
            bodies.push(stats_response(&rec.stats()?, p.close));
        }
    }
    Ok(bodies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_match_the_article() {
        assert_eq!(primes_up_to(0), Vec::<u32>::new());
        assert_eq!(primes_up_to(1), Vec::<u32>::new());
        assert_eq!(primes_up_to(2), vec![2]);
        assert_eq!(primes_up_to(30), vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(primes_up_to(10_000).len(), 1229);
    }

    #[test]
    fn routes() {
        assert_eq!(route("/10"), Route::Primes(10));
        assert_eq!(route("/0"), Route::Primes(0));
        assert_eq!(route("/1000000"), Route::Primes(1_000_000));
        assert_eq!(route("/10?x=1"), Route::Primes(10));
        assert_eq!(route("/stats"), Route::Stats);
        assert!(matches!(route("/1000001"), Route::BadNumber(_)));
        assert!(matches!(
            route("/99999999999999999999999"),
            Route::BadNumber(_)
        ));
        assert!(matches!(route("/abc"), Route::BadNumber(_)));
        assert!(matches!(route("/-5"), Route::BadNumber(_)));
        assert!(matches!(route("/+5"), Route::BadNumber(_)));
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/a/b"), Route::NotFound);
        assert_eq!(route("*"), Route::NotFound);
    }

    #[test]
    fn hit_keys_are_bounded() {
        let mut hits = BTreeMap::new();
        assert_eq!(hit_key(&hits, "/1"), "/1");
        let long = format!("/{}", "9".repeat(100));
        assert_eq!(hit_key(&hits, &long), OTHER_PATHS);
        for i in 0..MAX_PATHS {
            hits.insert(format!("/{i}"), 1);
        }
        assert_eq!(hit_key(&hits, "/1"), "/1");
        assert_eq!(hit_key(&hits, "/new"), OTHER_PATHS);
    }
}
