//! A parallel event loop on software transactional memory: the idea of "Tornado without a GIL on
//! PyPy STM", in Rust.
//!
//! An event loop gives its callbacks a precious guarantee: they run one at a time, so they need
//! no locks. This crate keeps that guarantee while running them in parallel: each callback and
//! handler is a transaction ([`stm_core::atomically`]) run on one of the loop's workers as soon
//! as one is free (or, in ordered mode, the ready ones of a turn as one batch on a
//! [`TransactionQueue`]), and the STM makes the outcome equal to *some* one-at-a-time order (or
//! exactly the add order, in ordered mode).
//!
//! Tasks, callbacks and handlers get the queue's (or loop's) shared state beside the
//! transaction, as a web framework hands its handlers the application state:
//!
//! ```
//! use stm_core::TVar;
//! use stm_loop::TransactionQueue;
//! use std::sync::Arc;
//!
//! struct App {
//!     counter: TVar<u64>,
//! }
//!
//! let app = Arc::new(App { counter: TVar::new(0) });
//! let mut q = TransactionQueue::with_state(app.clone()).workers(2);
//! for _ in 0..1000 {
//!     q.add(|tx, app| {
//!         let n = tx.read(&app.counter)?;  // no lock: a conflict reruns the task
//!         tx.write(&app.counter, n + 1)?;
//!         Ok(())
//!     });
//! }
//! let stats = q.run();                      // returns when all 1000 have committed
//! assert_eq!(app.counter.load(), 1000);
//! assert_eq!(stats.commits, 1000);
//! ```
//!
//! # Map
//!
//! - `queue`: [`TransactionQueue`] (shared state, workers kept between runs, ordered mode,
//!   [`Spawner`] for tasks that add tasks, [`RunStats`], [`TaskPanic`]).
//! - `source`: the [`EventSource`] trait and [`Readiness`]; backends [`MioSource`] (default),
//!   `PollingSource` (feature `polling`) and [`ScriptedSource`] (deterministic tests). The
//!   readiness contracts (edge-triggered vs one-shot) and how tokio code submits batches are in
//!   the [`EventSource`] docs.
//! - `event_loop`: [`EventLoop`] (shared state, callbacks, timers, handlers per token, handed
//!   to free workers while the loop keeps polling; one batch each per turn in ordered mode) and
//!   its thread-safe [`LoopHandle`].
//!
//! The guide to writing handlers, porting a loop and removing conflicts is `docs/guide.md`. Its
//! worked example, the article's primes server (an HTTP/1.1 server on [`EventLoop`] and
//! [`MioSource`], in STM and plain serial modes), is not part of this library: it is
//! `stm_benches::primes` in the workspace's `benches` crate, run by
//! `cargo run --release -p stm-benches --example primes_server -- --workers 2` and measured by
//! `cargo run --release -p stm-benches --bin primes-bench`.
//!
//! # Features
//!
//! - `log` (default): conflict-log recording. When the environment variable `STM_LOG` names a
//!   file, every [`EventLoop`] records the conflict log of stm-log there (`stm-log report FILE`
//!   reads it). Without the feature `STM_LOG` is ignored and stm-log is not a dependency: the
//!   library then depends on stm-core, mio and tracing only.
//! - `polling`: the `polling` crate as a second [`EventSource`] backend (`PollingSource`).

mod event_loop;
mod queue;
mod source;

pub use event_loop::{EventLoop, LoopHandle, TimerId, TurnStats};
pub use queue::{RunStats, Spawner, TaskPanic, TransactionQueue};
#[cfg(feature = "polling")]
pub use source::PollingSource;
pub use source::{EventSource, MioSource, Readiness, ScriptHandle, ScriptedSource};

/// The conflict log shared by every live [`EventLoop`] of the process.
#[cfg(feature = "log")]
static CONFLICT_LOG: std::sync::Mutex<std::sync::Weak<stm_log::LogGuard>> =
    std::sync::Mutex::new(std::sync::Weak::new());

/// Starts recording the conflict log when `STM_LOG` names a file, or joins the recording that a
/// live loop already started. The log is finished (flushed and closed) when the last loop that
/// shares it is dropped; a loop created after that starts the file anew. An error opening the
/// file is reported as a `tracing` error and the loop runs without a log.
#[cfg(feature = "log")]
pub(crate) fn init_conflict_log() -> Option<std::sync::Arc<stm_log::LogGuard>> {
    std::env::var_os("STM_LOG").filter(|p| !p.is_empty())?;
    let mut shared = CONFLICT_LOG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(guard) = shared.upgrade() {
        return Some(guard);
    }
    match stm_log::init_from_env() {
        Ok(Some(guard)) => {
            let guard = std::sync::Arc::new(guard);
            *shared = std::sync::Arc::downgrade(&guard);
            Some(guard)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "STM_LOG is set but the conflict log cannot be created");
            None
        }
    }
}
