//! The conflict log of [`stm_core`]: record which transactions fought, where, and what it cost.
//!
//! Set `STM_LOG=stm.log`, call [`init_from_env`] at the start of `main` and keep the guard; run
//! the program; then `stm-log report stm.log` prints the totals and the most expensive conflicts,
//! each with the two source lines that fought (from any directory: the log names the recording
//! process's working directory, where the relative file names of the locations start):
//!
//! ```text
//! 0.012s lost in aborts, 0.003s paused (1258x WRITE_READ)
//!   src/main.rs:42:17
//!       let x = tx.read(&COUNTER)?;
//!   src/main.rs:40:9
//!       tx.write(&COUNTER, x + 1)?;
//! ```
//!
//! The same from code:
//!
//! ```
//! use stm_core::{TVar, atomically};
//! use stm_log::{LogGuard, report::Report};
//!
//! static COUNTER: TVar<u64> = TVar::new(0);
//! let path = std::env::temp_dir().join(format!("stm-log-doc-{}.log", std::process::id()));
//! let guard = LogGuard::create(&path)?;
//! std::thread::scope(|s| {
//!     for _ in 0..2 {
//!         s.spawn(|| for _ in 0..1000 { atomically(|tx| tx.modify(&COUNTER, |x| x + 1)); });
//!     }
//! });
//! guard.finish()?;
//! let report = Report::from_path(&path)?;
//! assert_eq!(report.commits, 2000);
//! print!("{}", report.render_text(10, None));
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//!
//! - the recorder ([`Recorder`], [`LogGuard`], [`init_from_env`]): per-thread buffers, no lock on
//!   the hot path, one background flusher; it asks stm-core to time only a sample of the
//!   attempts of threads without recent conflicts (see [`Recorder::TIMING`]);
//! - [`format`](mod@format): the file layout (documented byte for byte in `docs/conflict-log.md`);
//! - [`reader`]: [`LogReader`], an iterator of typed [`Record`]s that reports damage by offset;
//! - [`writer`]: [`LogWriter`], to write logs record by record (tools and tests);
//! - [`report`]: [`Report`], the analysis behind `stm-log report`, as text or JSON;
//! - `timeline` (feature `timeline`): the SVG time line behind `stm-log timeline`;
//! - `TracingSink` (feature `tracing`): conflicts as `tracing` events.
//!
//! # Features
//!
//! With default features the library depends on stm-core alone. The others are off by default:
//!
//! - `cli`: the `stm-log` command (`report`, `timeline`), with clap; implies `timeline`.
//!   Install it with `cargo install --path stm-log --features cli`, or run it from a checkout
//!   with `cargo run -p stm-log --features cli -- report stm.log`;
//! - `timeline`: the `timeline` module, with plotters;
//! - `tracing`: `TracingSink`, with tracing.

pub mod format;
mod json;
pub mod reader;
mod recorder;
pub mod report;
#[cfg(feature = "timeline")]
pub mod timeline;
#[cfg(feature = "tracing")]
mod tracing_sink;
pub mod writer;

pub use format::{AbortReason, ConflictSides, Header, LocationId, Record};
pub use reader::{LogReader, ReadError};
pub use recorder::{FLUSH_INTERVAL, LogGuard, Recorder, init_from_env};
pub use report::Report;
#[cfg(feature = "tracing")]
pub use tracing_sink::TracingSink;
pub use writer::LogWriter;
