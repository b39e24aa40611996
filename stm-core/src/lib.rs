//! A word-based software transactional memory.
//!
//! Shared state lives in [`TVar`]s (one machine word each) and [`TBox`]es (any value behind a
//! pointer word). Code that touches them runs inside [`atomically`]: it sees a consistent
//! snapshot, its writes appear all at once when it commits, and when it conflicts with another
//! thread it is rolled back and run again, invisibly. No locks in user code, no deadlocks.
//!
//! ```
//! use stm_core::{TVar, atomically};
//! use std::sync::Arc;
//!
//! let accounts: Arc<Vec<TVar<i64>>> = Arc::new((0..4).map(|_| TVar::new(100)).collect());
//! let handles: Vec<_> = (0..2).map(|t| {
//!     let accounts = accounts.clone();
//!     std::thread::spawn(move || {
//!         for i in 0..1000 {
//!             let (from, to) = ((i + t) % 4, (i + t + 1) % 4);
//!             atomically(|tx| {
//!                 let f = tx.read(&accounts[from])?;
//!                 tx.write(&accounts[from], f - 1)?;
//!                 tx.modify(&accounts[to], |x| x + 1)?;
//!                 Ok(())
//!             });
//!         }
//!     })
//! }).collect();
//! for h in handles { h.join().unwrap(); }
//! let total: i64 = atomically(|tx| accounts.iter().map(|a| tx.read(a)).sum());
//! assert_eq!(total, 400);
//! ```
//!
//! # What it guarantees
//!
//! - Committed transactions are serializable, and a running attempt never observes a state that
//!   no serial execution could produce (opacity): a doomed attempt cannot loop forever or index
//!   out of bounds on inconsistent values.
//! - Read-only transactions write no shared memory, and need no hint: a call site of
//!   [`atomically`] that has not written lately runs without a read set (see its documentation).
//! - Progress: after [`Config::abort_limit`] consecutive aborts an attempt runs as the single
//!   inevitable transaction, which never aborts.
//! - [`inevitably`] / [`Tx::become_inevitable`]: irrevocable transactions for side effects, one
//!   at a time, while the others keep committing unless they touch its words.
//! - [`Tx::after_commit`]: actions that run once, after a successful commit only.
//! - [`Tx::retry`]: block until something read changes; [`Tx::or_else`]: try an alternative
//!   when the first choice retries.
//! - A panicking body leaves nothing behind: its writes vanish and its locks are released.
//! - Soundness: no program without `unsafe` reaches undefined behaviour through this API. The
//!   body of a transaction is `for<'t> FnMut(&mut Tx<'t, 'env>)`: what it writes (or reads
//!   through [`Tx::read_box`]) is borrowed for the attempt `'t`, so the borrow checker refuses to
//!   move, free or reallocate it before the commit (see [`Tx`]). Variables borrowed from outside
//!   the body work as they are; an `Arc` the body only has a clone of is kept with [`Tx::hold`].
//!
//! The algorithm (TL2 / TinySTM family, with one version clock per thread) and why each memory
//! ordering suffices are in `docs/design.md` and in the comments of `tx/mod.rs` and `runtime.rs`.
//!
//! # Modules of the implementation
//!
//! `word` (the [`Word`] trait), `tvar` ([`TVar`], [`TBox`]), `runtime` (version clocks, lock
//! table, [`Config`]), `tx` (the hot path: [`Tx`]; beside it `tx::run` with [`atomically`] and
//! the attempt loop, `tx::inevitable`, `tx::branch` (`or_else`), `tx::retry`, `tx::reclaim`,
//! `tx::events`, `tx::context`), `hook` (the event sink the conflict log plugs into, and its
//! clock, [`Timestamp`]), `stats` ([`stats()`]), `sync` (the loom shim).

mod error;
mod hook;
mod runtime;
mod stats;
mod sync;
mod tvar;
mod tx;
mod word;

/// Transactional collections: a hash map and set, FIFO queues and a sharded counter.
pub mod collections;

pub use error::{Abort, AbortCause, ConflictKind, TxError, TxResult};
pub use hook::{
    Conflict, Event, EventKind, EventSink, SourceLocation, Timestamp, Timing, event_sink_installed,
    set_event_sink,
};
pub use runtime::{Config, ConfigError, configure};
pub use stats::{Stats, stats};
#[cfg(not(loom))]
pub use tvar::TBox;
pub use tvar::TVar;
pub use tx::{ReadTx, Tx, atomically, atomically_read, inevitably, thread_id, try_atomically};
#[cfg(feature = "async")]
pub use tx::{TxFuture, atomically_async, try_atomically_async};
pub use word::Word;
