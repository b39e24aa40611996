//! The primes server end to end, over real sockets on 127.0.0.1 with ephemeral ports, in both
//! modes. Every socket has a read timeout, so a server bug fails a test instead of hanging it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use stm_benches::primes::{RunningServer, ServerConfig, ServerMode, primes_up_to, start};

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
        assert_eq!(read_response(&mut s, &mut buf).status, 400);
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
