//! The primes server end to end, over real sockets on 127.0.0.1 with ephemeral ports, in both
//! modes. Every socket has a read timeout, so a server bug fails a test instead of hanging it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use stm_benches::primes::{
    RunningServer, ServerConfig, ServerMode, Timeouts, primes_up_to, start, start_with,
};

const MODES: [ServerMode; 3] = [
    ServerMode::Serial,
    ServerMode::Stm { workers: 1 },
    ServerMode::Stm { workers: 2 },
];

fn server(mode: ServerMode) -> RunningServer {
    start(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        mode,
    })
    .expect("server starts on an ephemeral port")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// Reads one response from `s`, keeping bytes beyond it in `buf`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Response {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(buf).expect("valid response") {
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = resp.code.unwrap();
            let cl: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .expect("content-length");
            while buf.len() < len + cl {
                read_more(s, buf);
            }
            let body = buf[len..len + cl].to_vec();
            buf.drain(..len + cl);
            return Response {
                status,
                headers,
                body,
            };
        }
        read_more(s, buf);
    }
}

fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    let n = s
        .read(&mut chunk)
        .expect("read (a timeout means the server hung)");
    assert!(n > 0, "server closed the connection early");
    buf.extend_from_slice(&chunk[..n]);
}

fn get(s: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> Response {
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    read_response(s, buf)
}

/// After a response that closes, the server closes: the next read sees end of stream.
fn assert_closed(s: &mut TcpStream, buf: &[u8]) {
    assert!(buf.is_empty(), "unexpected bytes after the last response");
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected end of stream, got {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected end of stream, got {e}"),
    }
}

fn primes_of(r: &Response) -> Vec<u32> {
    serde_json::from_value(r.json()["primes"].clone()).unwrap()
}

#[test]
fn primes_are_correct_over_one_keep_alive_connection() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        for n in [0u32, 1, 2, 3, 10, 100, 1000, 1999] {
            let r = get(&mut s, &mut buf, &format!("/{n}"));
            assert_eq!(r.status, 200, "{mode:?} /{n}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("connection"), None, "keep-alive by default");
            assert_eq!(primes_of(&r), primes_up_to(n), "{mode:?} /{n}");
        }
        assert_eq!(primes_of(&get(&mut s, &mut buf, "/10")), vec![2, 3, 5, 7]);
        assert_eq!(primes_of(&get(&mut s, &mut buf, "/100")).len(), 25);
        srv.stop().unwrap();
    }
}

#[test]
fn stats_count_requests_and_hits() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        for _ in 0..3 {
            assert_eq!(get(&mut s, &mut buf, "/7").status, 200);
        }
        assert_eq!(get(&mut s, &mut buf, "/oops").status, 400);
        let st = get(&mut s, &mut buf, "/stats");
        assert_eq!(st.status, 200);
        assert_eq!(st.header("content-type"), Some("application/json"));
        let j = st.json();
        assert_eq!(j["requests"], 5, "{mode:?}: {j}");
        assert_eq!(j["hits"]["/7"], 3);
        assert_eq!(j["hits"]["/oops"], 1);
        assert_eq!(j["hits"]["/stats"], 1);
        assert!(j["last_start_us"].as_u64().is_some());
        match mode {
            ServerMode::Serial => {
                assert_eq!(j["mode"], "serial");
                assert!(j["stm"].is_null());
            }
            ServerMode::Stm { workers } => {
                assert_eq!(j["mode"], "stm");
                assert_eq!(j["workers"], workers);
                assert!(j["stm"]["commits"].as_u64().unwrap() >= 5);
                assert!(j["stm"]["abort_rate"].as_f64().is_some());
            }
        }
        srv.stop().unwrap();
    }
}

#[test]
fn bad_numbers_get_400_and_keep_the_connection() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        for path in [
            "/abc",
            "/12x",
            "/-5",
            "/+5",
            "/1000001",
            "/4294967296",
            "/99999999999999999999999999",
        ] {
            let r = get(&mut s, &mut buf, path);
            assert_eq!(r.status, 400, "{mode:?} {path}");
            assert!(r.json()["error"].is_string());
        }
        for path in ["/", "/a/b", "/10/20"] {
            assert_eq!(get(&mut s, &mut buf, path).status, 404, "{mode:?} {path}");
        }
        // Still usable after all that.
        assert_eq!(primes_of(&get(&mut s, &mut buf, "/5")), vec![2, 3, 5]);
        srv.stop().unwrap();
    }
}

#[test]
fn malformed_requests_get_400_and_close() {
    for mode in MODES {
        let srv = server(mode);
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET /10 HTTP/9.9\r\n\r\n",
            b"GET /10 HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
            b"GET /10 HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
            b"GET /10 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        ] {
            let mut s = connect(srv.local_addr());
            s.write_all(raw).unwrap();
            let mut buf = Vec::new();
            let r = read_response(&mut s, &mut buf);
            assert_eq!(r.status, 400, "{mode:?} {:?}", String::from_utf8_lossy(raw));
            assert_eq!(r.header("connection"), Some("close"));
            assert_closed(&mut s, &buf);
        }
        // A head larger than the limit.
        let mut s = connect(srv.local_addr());
        let big = format!("GET /10 HTTP/1.1\r\nX-Big: {}", "a".repeat(20_000));
        s.write_all(big.as_bytes()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut s, &mut buf).status, 431);
        assert_closed(&mut s, &buf);
        // Another method.
        let mut s = connect(srv.local_addr());
        s.write_all(b"DELETE /10 HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut s, &mut buf).status, 405);
        assert_closed(&mut s, &buf);
        // The server is still fine.
        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        assert_eq!(get(&mut s, &mut buf, "/3").status, 200);
        srv.stop().unwrap();
    }
}

#[test]
fn connection_close_and_http10() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        s.write_all(b"GET /10 HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf);
        assert_eq!((r.status, r.header("connection")), (200, Some("close")));
        assert_closed(&mut s, &buf);

        let mut s = connect(srv.local_addr());
        s.write_all(b"GET /10 HTTP/1.0\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut s, &mut buf).status, 200);
        assert_closed(&mut s, &buf);

        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        for _ in 0..2 {
            s.write_all(b"GET /10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut s, &mut buf).status, 200);
        }
        srv.stop().unwrap();
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        s.write_all(b"GET /3 HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\n\r\nGET /7 HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(primes_of(&read_response(&mut s, &mut buf)), vec![2, 3]);
        assert_eq!(read_response(&mut s, &mut buf).json()["requests"], 2);
        assert_eq!(
            primes_of(&read_response(&mut s, &mut buf)),
            vec![2, 3, 5, 7]
        );
        srv.stop().unwrap();
    }
}

#[test]
fn clients_that_leave_mid_request_cost_nothing() {
    for mode in MODES {
        let srv = server(mode);
        for partial in [&b"GET /10 HTTP/1.1\r\nHo"[..], b"GE", b""] {
            let mut s = connect(srv.local_addr());
            s.write_all(partial).unwrap();
            drop(s);
        }
        // A client that sends a request and leaves before the answer.
        let mut s = connect(srv.local_addr());
        s.write_all(b"GET /1500 HTTP/1.1\r\n\r\n").unwrap();
        drop(s);
        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        let st = get(&mut s, &mut buf, "/stats").json();
        // The partial requests were never counted; the abandoned full one may have been.
        let n = st["requests"].as_u64().unwrap();
        assert!(n == 1 || n == 2, "{mode:?}: {st}");
        srv.stop().unwrap();
    }
}

#[test]
fn many_concurrent_keep_alive_clients() {
    for mode in [ServerMode::Serial, ServerMode::Stm { workers: 2 }] {
        let srv = server(mode);
        let addr = srv.local_addr();
        let clients: Vec<_> = (0..16u32)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = connect(addr);
                    let mut buf = Vec::new();
                    for i in 0..15u32 {
                        let n = 50 + (c * 15 + i) % 200;
                        let r = get(&mut s, &mut buf, &format!("/{n}"));
                        assert_eq!(r.status, 200);
                        assert_eq!(primes_of(&r), primes_up_to(n));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let mut s = connect(addr);
        let mut buf = Vec::new();
        let st = get(&mut s, &mut buf, "/stats").json();
        assert_eq!(st["requests"], 16 * 15 + 1, "{mode:?}: {st}");
        srv.stop().unwrap();
    }
}

/// One slow request does not hold up the others (issue 15): with 2 workers, while a long
/// `/100000` (seconds in a debug build) runs on one worker, short `/10` requests on another
/// connection keep their idle latency. The batching loop of before polled again only when the
/// whole batch had committed, so the first short request waited for the long one to finish.
///
/// The bound is generous (10x the idle median, at least 500 ms: scheduling noise on a loaded
/// 2-core machine stays far below it), and the test checks that the long request is still in
/// flight when the short ones are done, without which it would prove nothing.
#[test]
fn short_requests_do_not_wait_for_a_long_one() {
    const LONG: u32 = 100_000;
    const SHORT: usize = 20;
    let srv = server(ServerMode::Stm { workers: 2 });
    let addr = srv.local_addr();
    let mut short = connect(addr);
    let mut long = connect(addr);
    let mut buf = Vec::new();

    // The short request's latency on the idle server (the first one also warms up).
    let timed_short = |s: &mut TcpStream, buf: &mut Vec<u8>| {
        let t0 = Instant::now();
        let r = get(s, buf, "/10");
        let took = t0.elapsed();
        assert_eq!(primes_of(&r), vec![2, 3, 5, 7]);
        took
    };
    timed_short(&mut short, &mut buf);
    let mut idle: Vec<Duration> = (0..SHORT)
        .map(|_| timed_short(&mut short, &mut buf))
        .collect();
    idle.sort();
    let idle_median = idle[SHORT / 2];
    let bound = (idle_median * 10).max(Duration::from_millis(500));

    // The long request, then the short ones while it runs.
    let long_sent = Instant::now();
    write!(long, "GET /{LONG} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let beside: Vec<Duration> = (0..SHORT)
        .map(|_| timed_short(&mut short, &mut buf))
        .collect();
    let shorts_done = long_sent.elapsed();

    // The long request must still be running, or the short ones were not beside it.
    long.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let long_in_flight = matches!(
        long.peek(&mut b),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    long.set_nonblocking(false).unwrap();

    let worst = beside.iter().max().copied().unwrap_or_default();
    assert!(
        worst <= bound,
        "a /10 beside /{LONG} took {worst:?}, over {bound:?} (idle median {idle_median:?}; \
         beside: {beside:?}): the short requests waited for the long one"
    );
    assert!(
        long_in_flight,
        "/{LONG} was answered within {shorts_done:?}, before the short requests were done: \
         make it longer"
    );
    // A debug build on a loaded machine takes a while.
    long.set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let mut lbuf = Vec::new();
    let r = read_response(&mut long, &mut lbuf);
    let long_took = long_sent.elapsed();
    assert_eq!(primes_of(&r).len(), 9592, "the primes below 100,000");
    eprintln!(
        "/10 idle median {idle_median:?}, beside /{LONG} worst {worst:?} (bound {bound:?}); \
         /{LONG} took {long_took:?}, the short requests were done after {shorts_done:?}"
    );
    srv.stop().unwrap();
}

#[test]
fn stop_closes_connections_and_frees_the_port() {
    for mode in MODES {
        let srv = server(mode);
        let addr = srv.local_addr();
        let mut s = connect(addr);
        let mut buf = Vec::new();
        assert_eq!(get(&mut s, &mut buf, "/2").status, 200);
        srv.stop().unwrap();
        assert_closed(&mut s, &buf);
        // The port can be bound again: the listener is gone.
        let again = start(ServerConfig { addr, mode }).expect("port is free after stop");
        drop(again); // dropping stops too
    }
}

#[test]
fn default_config() {
    let c = ServerConfig::default();
    assert_eq!(c.addr, "127.0.0.1:8888".parse().unwrap());
    assert!(matches!(c.mode, ServerMode::Stm { workers } if workers >= 1));
}

/// Many pipelined requests whose answers (about 450 KB) exceed the socket buffers: the server
/// must stop at `WouldBlock` and finish on the writable events (edge-triggered), in order.
#[test]
fn answers_larger_than_the_socket_buffers_arrive_whole_and_in_order() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        let mut reqs = String::new();
        for i in 0..500u32 {
            reqs.push_str(&format!("GET /{} HTTP/1.1\r\n\r\n", 1000 + i % 7));
        }
        s.write_all(reqs.as_bytes()).unwrap();
        let mut buf = Vec::new();
        for i in 0..500u32 {
            let r = read_response(&mut s, &mut buf);
            assert_eq!(r.status, 200);
            assert_eq!(
                primes_of(&r),
                primes_up_to(1000 + i % 7),
                "{mode:?} answer {i}"
            );
        }
        srv.stop().unwrap();
    }
}

/// Random bytes (a fixed-seed generator; some with a valid request line in front) on 60
/// connections per mode: each connection ends (answered or not), and the server still serves.
#[test]
fn random_garbage_never_hurts_the_server() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for mode in MODES {
        let srv = server(mode);
        for i in 0..60 {
            let mut bytes: Vec<u8> = match i % 3 {
                0 => Vec::new(),
                1 => b"GET /".to_vec(),
                _ => b"GET /10 HTTP/1.1\r\n".to_vec(),
            };
            let len = (next() % 300) as usize;
            bytes.extend((0..len).map(|_| {
                let r = next();
                // Mostly printable, with CR/LF and some control bytes.
                match r % 10 {
                    0 => b'\r',
                    1 => b'\n',
                    2 => (r >> 8) as u8,
                    _ => b' ' + ((r >> 8) % 95) as u8,
                }
            }));
            let mut s = connect(srv.local_addr());
            s.write_all(&bytes).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            // Whatever the answers, the server must close its side.
            let mut sink = Vec::new();
            match s.read_to_end(&mut sink) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("{mode:?} connection {i}: {e}"),
            }
        }
        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        assert_eq!(primes_of(&get(&mut s, &mut buf, "/10")), vec![2, 3, 5, 7]);
        srv.stop().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile clients and the command-line server
// ---------------------------------------------------------------------------------------------

fn server_with(mode: ServerMode, timeouts: Timeouts) -> RunningServer {
    start_with(
        ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            mode,
        },
        timeouts,
    )
    .expect("server starts on an ephemeral port")
}

/// Reads until the server closes the connection (end of stream or reset), or `bound` passes
/// (then panics); returns the bytes read.
fn read_until_closed(s: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
        assert!(
            t0.elapsed() < bound,
            "the server did not close the connection"
        );
    }
}

#[test]
fn header_timeout_closes_silent_and_slowloris_clients() {
    let header = Duration::from_secs(1);
    let timeouts = Timeouts {
        header,
        idle: Duration::from_secs(60),
    };
    let threads: Vec<_> = MODES
        .into_iter()
        .map(|mode| {
            std::thread::spawn(move || {
                let srv = server_with(mode, timeouts);
                // Connects and sends nothing.
                let t0 = Instant::now();
                let mut silent = connect(srv.local_addr());
                assert!(read_until_closed(&mut silent, Duration::from_secs(20)).is_empty());
                assert!(
                    t0.elapsed() >= header,
                    "{mode:?}: closed before the timeout"
                );
                // Sends a head one byte every 20 ms, never finishing it: the header timeout
                // counts from the head's start, not from the last byte.
                let t0 = Instant::now();
                let mut slow = connect(srv.local_addr());
                slow.write_all(b"GET /10 HTTP/1.1\r\nX-Slow: ").unwrap();
                slow.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let mut b = [0u8; 64];
                loop {
                    if slow.write_all(b"a").is_err() {
                        break;
                    }
                    match slow.read(&mut b) {
                        Ok(0) => break,
                        Ok(n) => panic!("{mode:?}: unexpected {n} bytes"),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                        Err(_) => {}
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(20),
                        "{mode:?}: a slowloris client was never closed"
                    );
                }
                assert!(
                    t0.elapsed() >= header,
                    "{mode:?}: closed before the timeout"
                );
                // A client that sends its request at once is served.
                let mut s = connect(srv.local_addr());
                let mut buf = Vec::new();
                assert_eq!(get(&mut s, &mut buf, "/10").status, 200, "{mode:?}");
                srv.stop().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn idle_timeout_closes_idle_keep_alive_connections_only() {
    let idle = Duration::from_secs(1);
    let timeouts = Timeouts {
        header: Duration::from_secs(60),
        idle,
    };
    let threads: Vec<_> = MODES
        .into_iter()
        .map(|mode| {
            std::thread::spawn(move || {
                let srv = server_with(mode, timeouts);
                let mut s = connect(srv.local_addr());
                let mut buf = Vec::new();
                // Active for longer than the idle timeout, never idle that long: stays open.
                let t0 = Instant::now();
                while t0.elapsed() < idle * 3 / 2 {
                    assert_eq!(get(&mut s, &mut buf, "/10").status, 200, "{mode:?}");
                    std::thread::sleep(idle / 10);
                }
                // Then idle after the last response (written after `t1`): closed.
                let t1 = Instant::now();
                assert_eq!(get(&mut s, &mut buf, "/10").status, 200, "{mode:?}");
                assert!(read_until_closed(&mut s, Duration::from_secs(20)).is_empty());
                assert!(t1.elapsed() >= idle, "{mode:?}: closed before the timeout");
                srv.stop().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A 100 KB request line sent in one write (read by the server in one go): refused with 431
/// and the connection closed, never parsed (parsed, `/999...` would get a 400).
#[test]
fn the_head_limit_holds_however_the_bytes_arrive() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        let req = format!("GET /{} HTTP/1.1\r\n\r\n", "9".repeat(100_000));
        // The server may close before reading it all.
        let _ = s.write_all(req.as_bytes());
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf);
        assert_eq!(r.status, 431, "{mode:?}");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(buf.is_empty());
        read_until_closed(&mut s, Duration::from_secs(20));
        // Just under the limit is parsed as usual (a bad N).
        let mut s = connect(srv.local_addr());
        let req = format!("GET /{} HTTP/1.1\r\n\r\n", "9".repeat(8000));
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut s, &mut buf).status, 400, "{mode:?}");
        srv.stop().unwrap();
    }
}

/// Reads a response head only (the body is not read: a `HEAD` response has none).
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<(String, String)>) {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(buf).expect("valid response") {
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = resp.code.unwrap();
            buf.drain(..len);
            return (status, headers);
        }
        read_more(s, buf);
    }
}

#[test]
fn head_requests_get_the_headers_without_the_body() {
    for mode in MODES {
        let srv = server(mode);
        let mut s = connect(srv.local_addr());
        let mut buf = Vec::new();
        let body_len = get(&mut s, &mut buf, "/100").body.len();
        for path in ["/100", "/stats", "/abc"] {
            write!(s, "HEAD {path} HTTP/1.1\r\n\r\n").unwrap();
            let (status, headers) = read_head(&mut s, &mut buf);
            let cl = headers.iter().find(|(n, _)| n == "content-length");
            match path {
                "/100" => {
                    assert_eq!(status, 200, "{mode:?}");
                    assert_eq!(cl.unwrap().1, body_len.to_string(), "{mode:?}");
                }
                "/stats" => assert_eq!(status, 200, "{mode:?}"),
                _ => assert_eq!(status, 400, "{mode:?}"),
            }
            assert!(cl.is_some());
        }
        // No body was sent: the next response starts right after the last head.
        assert!(buf.is_empty(), "{mode:?}: body bytes after a HEAD response");
        assert_eq!(primes_of(&get(&mut s, &mut buf, "/10")), vec![2, 3, 5, 7]);
        srv.stop().unwrap();
    }
}

/// The example binary, built by `cargo test -p stm-benches` beside this test's executable
/// (`cargo test --test primes` alone does not rebuild it: after changing the server, run the
/// package's tests or build the example first).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/primes-HASH -> target/<profile>/examples/primes_server
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("primes_server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test -p stm-benches` (which builds the \
         examples) or build it with `cargo build -p stm-benches --example primes_server`",
        bin.display()
    );
    bin
}

/// The example server in a child process, killed when dropped.
struct Example {
    child: Child,
    addr: SocketAddr,
    line: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// Starts the example with `args` (under `ulimit -n nofile` if given) and reads its startup
/// line.
fn spawn_example(args: &[&str], env: &[(&str, &OsStr)], nofile: Option<u32>) -> Example {
    let bin = example_binary();
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the example starts");
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let mut ex = Example {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
        line: String::new(),
        stdout,
        stderr,
    };
    let line = match ex.stdout.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(e) => {
            let err: Vec<String> = ex.stderr.try_iter().collect();
            panic!("no startup line ({e}); stderr: {err:?}");
        }
    };
    let rest = line
        .strip_prefix("primes_server listening on ")
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
    ex.addr = rest.split(' ').next().unwrap().parse().unwrap();
    ex.line = line;
    ex
}

/// Waits (at most 20 s) for the child to exit.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} failed");
}

#[test]
fn the_example_prints_a_startup_line_and_resolves_host_names() {
    let ex = spawn_example(&["--workers", "2", "--addr", "127.0.0.1:0"], &[], None);
    assert!(ex.line.ends_with(" (stm, 2 workers)"), "{:?}", ex.line);
    assert!(ex.addr.ip().is_loopback() && ex.addr.port() != 0);
    drop(ex);
    let ex = spawn_example(&["--serial", "--addr", "localhost:0"], &[], None);
    assert!(ex.line.ends_with(" (serial)"), "{:?}", ex.line);
    assert!(ex.addr.ip().is_loopback(), "{:?}", ex.line);
    let mut s = connect(ex.addr);
    let mut buf = Vec::new();
    assert_eq!(primes_of(&get(&mut s, &mut buf, "/10")), vec![2, 3, 5, 7]);
    // A name that does not resolve is an error, not a hang.
    let out = Command::new(example_binary())
        .args(["--addr", "no-such-host.invalid:80"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve"));
}

/// SIGTERM stops the server like SIGINT: it exits successfully and the conflict log is
/// finished (its last record is the end record).
#[test]
fn sigterm_and_sigint_stop_the_example_and_finish_the_conflict_log() {
    let dir = std::env::temp_dir().join(format!("primes-signal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for sig in ["TERM", "INT"] {
        let log = dir.join(format!("{sig}.stmlog"));
        let _ = std::fs::remove_file(&log);
        let mut ex = spawn_example(
            &["--workers", "2", "--addr", "127.0.0.1:0"],
            &[("STM_LOG", log.as_os_str())],
            None,
        );
        let mut s = connect(ex.addr);
        let mut buf = Vec::new();
        assert_eq!(get(&mut s, &mut buf, "/10").status, 200);
        signal(&ex.child, sig);
        let st = wait_exit(&mut ex.child);
        assert!(st.success(), "SIG{sig}: {st}");
        assert_eq!(
            ex.stdout.recv_timeout(Duration::from_secs(20)).as_deref(),
            Ok("stopping")
        );
        assert_closed(&mut s, &buf);
        let records: Vec<_> = stm_log::LogReader::open(&log)
            .expect("the log has a header")
            .collect::<Result<_, _>>()
            .expect("the log is complete");
        assert!(
            matches!(records.last(), Some(stm_log::Record::End { .. })),
            "SIG{sig}: the log was not finished"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Out of file descriptors (`ulimit -n 32` and 40 idle clients), the server logs a warning and
/// keeps trying: when the idle clients leave (no new connection arrives to wake the listener),
/// the client that was waiting in the accept queue is served.
#[test]
fn accept_backs_off_when_out_of_descriptors_and_resumes() {
    for mode in [&["--serial"][..], &["--workers", "2"]] {
        let mut args = vec![
            "--addr",
            "127.0.0.1:0",
            "--header-timeout",
            "60s",
            "--idle-timeout",
            "60s",
        ];
        args.extend_from_slice(mode);
        let ex = spawn_example(&args, &[], Some(32));
        let idle: Vec<TcpStream> = (0..40).map(|_| connect(ex.addr)).collect();
        let mut waiting = connect(ex.addr);
        waiting.write_all(b"GET /10 HTTP/1.1\r\n\r\n").unwrap();
        // The warning comes once the descriptors run out.
        let t0 = Instant::now();
        loop {
            let left = Duration::from_secs(20).saturating_sub(t0.elapsed());
            match ex.stderr.recv_timeout(left) {
                Ok(l) if l.contains("out of file descriptors") => break,
                Ok(_) => {}
                Err(e) => panic!("{mode:?}: no warning ({e})"),
            }
        }
        drop(idle);
        let mut buf = Vec::new();
        let r = read_response(&mut waiting, &mut buf);
        assert_eq!(primes_of(&r), vec![2, 3, 5, 7], "{mode:?}");
        // And it says so.
        let t0 = Instant::now();
        loop {
            let left = Duration::from_secs(20).saturating_sub(t0.elapsed());
            match ex.stderr.recv_timeout(left) {
                Ok(l) if l.contains("accepting connections again") => break,
                Ok(_) => {}
                Err(e) => panic!("{mode:?}: no recovery line ({e})"),
            }
        }
    }
}
