//! The event hook: one global sink that the conflict log (`stm-log`) fills.
//!
//! With no sink installed every hook point costs one load of a pointer and a branch. With a sink,
//! the runtime also reads the monotonic clock at each event and, for committers, remembers in a
//! side table which source line last wrote each versioned lock, so that an aborted reader can name
//! the line that invalidated it.

use crate::error::{AbortCause, ConflictKind};
use core::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

/// A source location recorded by `#[track_caller]`.
pub type SourceLocation = &'static Location<'static>;

/// Both sides of a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The kind of conflict.
    pub kind: ConflictKind,
    /// Where this transaction touched the contended word.
    pub this: Option<SourceLocation>,
    /// Where the other transaction touched it, when known.
    pub other: Option<SourceLocation>,
    /// The runtime's id of the other thread, when known.
    pub other_thread: Option<u64>,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// An attempt starts (`inevitable`: it runs as the inevitable transaction from its start).
    Start {
        /// Whether the attempt is inevitable from its start.
        inevitable: bool,
    },
    /// The attempt committed.
    Commit {
        /// It wrote nothing.
        read_only: bool,
        /// Time since the attempt started.
        duration: Duration,
    },
    /// The attempt aborted; `lost` is its whole duration, charged to `conflict` when there is one.
    Abort {
        /// Why.
        cause: AbortCause,
        /// The conflict, for [`AbortCause::Conflict`].
        conflict: Option<Conflict>,
        /// Time since the attempt started: the work thrown away.
        lost: Duration,
    },
    /// The attempt starts waiting (for the inevitable transaction, or for a lock).
    PauseStart {
        /// What it waits for.
        conflict: Conflict,
    },
    /// The wait is over.
    PauseEnd {
        /// What it waited for.
        conflict: Conflict,
        /// How long it waited.
        paused: Duration,
    },
    /// This thread now holds the inevitable token.
    InevitableBegin,
    /// This thread released the inevitable token.
    InevitableEnd,
}

/// One event, from one thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// The runtime's id of the thread (small integers from 1, never reused in a process).
    pub thread: u64,
    /// When it happened (monotonic clock).
    pub time: Instant,
    /// What happened.
    pub kind: EventKind,
}

/// Receives every event of every thread while installed. Called on the transaction's own thread,
/// on its hot path: keep it cheap (buffer per thread, flush elsewhere).
pub trait EventSink: Send + Sync + 'static {
    /// One event.
    fn event(&self, event: &Event);
}

// Points to a leaked `Arc<dyn EventSink>` or is null. Stored with Release by `set_event_sink`,
// loaded with Acquire by `sink()`: the pair publishes the leaked box's contents.
static SINK: AtomicPtr<Arc<dyn EventSink>> = AtomicPtr::new(core::ptr::null_mut());

/// Installs `sink` (or, with `None`, removes the current one) for every thread.
///
/// Events of an attempt already running keep going to the sink it started with. The small box
/// that holds each installed sink is never freed, so that a thread still delivering to a replaced
/// sink stays safe; install sinks rarely (once per log, not per transaction).
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use stm_core::{Event, EventKind, EventSink, TVar, atomically, set_event_sink};
///
/// #[derive(Default)]
/// struct Commits(AtomicU64);
/// impl EventSink for Commits {
///     fn event(&self, e: &Event) {
///         if let EventKind::Commit { .. } = e.kind { self.0.fetch_add(1, Ordering::Relaxed); }
///     }
/// }
/// let sink = Arc::new(Commits::default());
/// set_event_sink(Some(sink.clone()));
/// let v = TVar::new(0u32);
/// atomically(|tx| tx.modify(&v, |x| x + 1));
/// set_event_sink(None);
/// assert!(sink.0.load(Ordering::Relaxed) >= 1);
/// ```
pub fn set_event_sink(sink: Option<Arc<dyn EventSink>>) {
    let new = match sink {
        Some(s) => Box::into_raw(Box::new(s)),
        None => core::ptr::null_mut(),
    };
    // Release pairs with the Acquire in `sink()`, so readers see the box's contents. The old box
    // is leaked on purpose (see above).
    SINK.store(new, Ordering::Release);
}

/// Whether a sink is installed now.
pub fn event_sink_installed() -> bool {
    sink().is_some()
}

/// The installed sink, if any.
#[inline]
pub(crate) fn sink() -> Option<&'static dyn EventSink> {
    // Acquire pairs with the Release store in `set_event_sink`.
    let p = SINK.load(Ordering::Acquire);
    if p.is_null() {
        None
    } else {
        // SAFETY: a non-null SINK points to a box leaked by `set_event_sink`, never freed, so the
        // reference is valid for 'static; the Arc inside is never dropped either.
        Some(unsafe { &**p })
    }
}
