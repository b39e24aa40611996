//! The async server (`stm_benches::async_server`) in both modes: correct answers to concurrent
//! clients, back-pressure of the bounded queue, bad requests, clean shutdown. Every test sends
//! a fixed number of requests and bounds its waits (socket timeouts, `recv_timeout`,
//! `tokio::time::timeout`); none asserts on speed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use stm_benches::async_server::{
    Backend, Closed, Mode, MutexBackend, ServerConfig, Stats, StmBackend, start,
};

/// The longest any single wait of these tests may take before the test fails.
const BOUND: Duration = Duration::from_secs(30);

const MODES: [Mode; 2] = [Mode::Stm, Mode::Mutex];

/// N and the number of primes below N (known values, not computed by the code under test).
const KNOWN: [(u32, u64); 10] = [
    (0, 0),
    (2, 0),
    (3, 1),
    (10, 4),
    (100, 25),
    (1000, 168),
    (7919, 999), // 7919 is the 1000th prime
    (7920, 1000),
    (10_000, 1229),
    (100_000, 9592),
];

/// One keep-alive HTTP/1.1 connection, blocking, with bounded reads.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(BOUND)).unwrap();
        stream.set_write_timeout(Some(BOUND)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends `raw` as it is and reads one response: (status, body).
    fn raw(&mut self, raw: &[u8]) -> (u16, String) {
        self.stream.write_all(raw).expect("write the request");
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&self.buf).expect("parse") {
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap()
                    })
                    .unwrap_or(0);
                if self.buf.len() >= head + len {
                    let status = resp.code.unwrap();
                    let body = String::from_utf8(self.buf[head..head + len].to_vec()).unwrap();
                    self.buf.drain(..head + len);
                    return (status, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read the response");
            assert!(n > 0, "the server closed the connection mid-response");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn request(&mut self, method: &str, path: &str) -> (u16, String) {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.raw(req.as_bytes())
    }

    fn get(&mut self, path: &str) -> (u16, String) {
        self.request("GET", path)
    }

    fn stats(&mut self) -> serde_json::Value {
        let (status, body) = self.get("/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    }
}

fn server(
    mode: Mode,
    consumers: usize,
    capacity: usize,
) -> stm_benches::async_server::RunningServer {
    start(
        ServerConfig::new("127.0.0.1:0".parse().unwrap(), mode)
            .workers(2)
            .consumers(consumers)
            .queue_capacity(capacity),
    )
    .expect("start the server")
}

/// Stops the server on another thread, failing the test if that takes longer than `BOUND`.
fn stop(server: stm_benches::async_server::RunningServer) -> Stats {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.stop());
    });
    rx.recv_timeout(BOUND)
        .expect("the server did not stop in time")
        .expect("the server stopped with an error")
}

fn expected(n: u32, primes: u64) -> String {
    format!("{{\"n\":{n},\"primes_below\":{primes}}}")
}

#[test]
fn both_modes_answer_concurrent_clients_correctly() {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 3; // each client sends every KNOWN request this many times
    for mode in MODES {
        let s = server(mode, 2, 4);
        let addr = s.local_addr();
        std::thread::scope(|scope| {
            for c in 0..CLIENTS {
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    for r in 0..ROUNDS * KNOWN.len() {
                        // Each client walks the table from a different place.
                        let (n, primes) = KNOWN[(r + c * 3) % KNOWN.len()];
                        let (status, body) = client.get(&format!("/work/{n}"));
                        assert_eq!((status, body), (200, expected(n, primes)), "{mode}");
                    }
                });
            }
        });
        let jobs = (CLIENTS * ROUNDS * KNOWN.len()) as u64;
        let st = Client::connect(addr).stats();
        assert_eq!(st["mode"], mode.name());
        assert_eq!(st["requests"], jobs + 1, "{st}");
        assert_eq!(st["hits"]["/work"], jobs, "{st}");
        assert_eq!(st["hits"]["/stats"], 1, "{st}");
        assert_eq!(st["jobs_done"], jobs, "{st}");
        assert_eq!(st["queued"], 0, "{st}");
        let last = stop(s);
        assert_eq!((last.requests, last.jobs_done), (jobs + 1, jobs), "{mode}");
    }
}

/// More concurrent jobs than the queue holds, one consumer: every job waits its turn and all
/// are answered.
#[test]
fn a_full_queue_makes_handlers_wait_and_all_complete() {
    const CLIENTS: usize = 12;
    const EACH: usize = 4;
    for mode in MODES {
        let s = server(mode, 1, 1);
        let addr = s.local_addr();
        std::thread::scope(|scope| {
            for c in 0..CLIENTS {
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    for i in 0..EACH {
                        let (n, primes) = KNOWN[(c + i) % KNOWN.len()];
                        let (status, body) = client.get(&format!("/work/{n}"));
                        assert_eq!((status, body), (200, expected(n, primes)), "{mode}");
                    }
                });
            }
        });
        let last = stop(s);
        let jobs = (CLIENTS * EACH) as u64;
        assert_eq!((last.jobs_done, last.queued), (jobs, 0), "{mode}: {last:?}");
    }
}

/// Back-pressure at the backend, without timing: with no consumer running, a queue of 2 takes
/// two jobs and the third submission waits (it cannot finish: nothing frees a place) until one
/// job is taken; then every job's result reaches its ticket, and a closed queue refuses work.
async fn back_pressure<B: Backend>(backend: B) {
    use std::sync::Arc;
    use stm_benches::async_server::QueuedJob as _;
    use tokio::time::timeout;
    let b = Arc::new(backend);
    let t1 = timeout(BOUND, b.enqueue(10)).await.unwrap().unwrap();
    let t2 = timeout(BOUND, b.enqueue(100)).await.unwrap().unwrap();
    let third = {
        let b = b.clone();
        tokio::spawn(async move { b.enqueue(1000).await })
    };
    // Wait (bounded) until the third submission has found the queue full, then give it more
    // turns: it cannot finish, since nothing frees a place.
    timeout(BOUND, async {
        while b.stats().await.producer_waits == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the third submission found the queue full");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !third.is_finished(),
        "{}: a third job fit a queue of 2",
        b.name()
    );
    let st = b.stats().await;
    assert_eq!((st.queued, st.producer_waits), (2, 1), "{st:?}");

    // Take one job: the waiting submission gets its place.
    let j1 = timeout(BOUND, b.next_job()).await.unwrap().unwrap();
    assert_eq!(j1.n(), 10);
    let t3 = timeout(BOUND, third).await.unwrap().unwrap().unwrap();
    b.complete(j1, 4).await;
    assert_eq!(timeout(BOUND, b.wait(t1)).await.unwrap(), Some(4));

    // Closing refuses new work but the queued jobs are still handed out, in order.
    b.close().await;
    assert_eq!(b.enqueue(5).await.err(), Some(Closed));
    for (n, ticket) in [(100, t2), (1000, t3)] {
        let job = timeout(BOUND, b.next_job()).await.unwrap().unwrap();
        assert_eq!(job.n(), n);
        b.complete(job, u64::from(n) + 1).await;
        assert_eq!(
            timeout(BOUND, b.wait(ticket)).await.unwrap(),
            Some(u64::from(n) + 1)
        );
    }
    assert!(timeout(BOUND, b.next_job()).await.unwrap().is_none());
    let st = b.stats().await;
    assert_eq!((st.jobs_done, st.queued), (3, 0), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stm_queue_back_pressure() {
    back_pressure(StmBackend::new(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutex_queue_back_pressure() {
    back_pressure(MutexBackend::new(2)).await;
}

#[test]
fn bad_requests_get_a_clear_error_not_a_panic() {
    for mode in MODES {
        let s = server(mode, 1, 4);
        let addr = s.local_addr();
        let mut c = Client::connect(addr);
        for path in [
            "/work/",
            "/work/abc",
            "/work/-5",
            "/work/12a",
            "/work/1.5",
            "/work/1000001",
            "/work/99999999999999999999999",
            "/work/%31",
        ] {
            let (status, body) = c.get(path);
            assert_eq!(status, 400, "{mode} {path}: {body}");
            assert!(!body.is_empty(), "{mode} {path}: the 400 says why");
        }
        assert_eq!(c.get("/nope").0, 404, "{mode}");
        assert_eq!(c.get("/work").0, 404, "{mode}");
        assert_eq!(c.request("POST", "/work/10").0, 405, "{mode}");
        assert_eq!(c.request("DELETE", "/stats").0, 405, "{mode}");
        // The same connection still works after all that.
        assert_eq!(c.get("/work/10"), (200, expected(10, 4)), "{mode}");
        let st = c.stats();
        assert_eq!(st["hits"]["/work"], 9, "{st}");
        assert_eq!(st["hits"]["(other)"], 4, "{st}");
        assert_eq!(st["jobs_done"], 1, "{st}");

        // Garbage instead of a request: hyper answers 400 and closes that connection.
        let mut g = Client::connect(addr);
        let (status, _) = g.raw(b"\x01\x02 not http at all\r\n\r\n");
        assert_eq!(status, 400, "{mode}");
        // The server is still up.
        assert_eq!(
            Client::connect(addr).get("/work/100"),
            (200, expected(100, 25))
        );
        stop(s);
    }
}

#[test]
fn an_unusable_configuration_is_refused_not_a_panic() {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for cfg in [
        ServerConfig::new(addr, Mode::Stm).workers(0),
        ServerConfig::new(addr, Mode::Mutex).consumers(0),
        ServerConfig::new(addr, Mode::Stm).queue_capacity(0),
    ] {
        let e = start(cfg).expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }
    assert!("fast".parse::<Mode>().is_err());
    assert_eq!("STM".parse::<Mode>(), Ok(Mode::Stm));
}

#[test]
fn the_server_shuts_down_cleanly() {
    for mode in MODES {
        let s = server(mode, 2, 4);
        let addr = s.local_addr();
        let mut idle = Client::connect(addr);
        assert_eq!(idle.get("/work/1000"), (200, expected(1000, 168)));
        let last = stop(s);
        assert_eq!(
            (last.requests, last.jobs_done, last.queued),
            (1, 1, 0),
            "{mode}"
        );
        // The idle keep-alive connection was closed by the server (EOF, not a timeout).
        let mut byte = [0u8; 1];
        let n = idle.stream.read(&mut byte).expect("EOF, not a timeout");
        assert_eq!(n, 0, "{mode}: the idle connection is closed");

        // Dropping a running server stops it as well (and does not hang).
        let (tx, rx) = mpsc::channel();
        let s = server(mode, 1, 1);
        std::thread::spawn(move || {
            drop(s);
            let _ = tx.send(());
        });
        rx.recv_timeout(BOUND).expect("drop stopped the server");
    }
}
