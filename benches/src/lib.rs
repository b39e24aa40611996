//! Benchmarks of the STM runtime: the workloads the criterion suites and the binaries share.
//!
//! - [`intset`]: TinySTM's integer sets (linked list, skip list, red-black tree, hash set) built
//!   from `stm_core::TVar`s, and the same code behind a `Mutex` and an `RwLock`;
//! - [`bank`]: accounts moved between by transfers, audited by whole-bank reads;
//! - [`workload`]: running an operation on N threads for a fixed count, and timing it;
//! - [`rng`]: the small generator the workloads draw keys from;
//! - [`loadgen`]: the HTTP load generator (`siege -c 50`-like keep-alive connections);
//! - [`async_server`]: a tokio + hyper server whose handlers share state through TVars and the
//!   stm-core collections (a bounded work queue whose consumers await `retry`), and its `Mutex`
//!   twin, which `async-bench` measures and `examples/async_server.rs` runs on its own;
//! - [`primes`]: the article's primes server (HTTP/1.1 over mio, in STM and plain serial modes),
//!   the server that `primes-bench` measures and `examples/primes_server.rs` runs on its own.
//!
//! ```
//! use stm_benches::intset::{ConcurrentSet, IntSetWorkload, RbTree, StmSet};
//! let w = IntSetWorkload::default(); // 256 elements, keys 0..512, 20% updates
//! let set = StmSet::<RbTree>::new(w.range).unwrap();
//! w.fill(&set, 1).unwrap();
//! assert_eq!(set.check().unwrap().len(), 256);
//! ```

pub mod async_server;
pub mod bank;
pub mod intset;
pub mod loadgen;
pub mod primes;
pub mod rng;
pub mod workload;

/// Starts a server on the first address `addr` (`IP:PORT` or `HOST:PORT`) resolves to where
/// `start` succeeds; the error says why none did. The examples' `--addr` goes through it.
///
/// ```
/// let r: Result<u16, String> =
///     stm_benches::start_on_first_address("127.0.0.1:0", |a| Ok::<_, String>(a.port()));
/// assert_eq!(r, Ok(0));
/// assert!(stm_benches::start_on_first_address("no such host:1", |a| Ok::<_, String>(a)).is_err());
/// ```
pub fn start_on_first_address<S, E: std::fmt::Display>(
    addr: &str,
    mut start: impl FnMut(std::net::SocketAddr) -> Result<S, E>,
) -> Result<S, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    let mut last = format!("{addr} resolves to no address");
    for a in addrs {
        match start(a) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot start the server on {a}: {e}"),
        }
    }
    Err(last)
}
