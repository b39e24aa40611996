//! The `tracing` bridge (feature `tracing`): conflicts and pauses as `tracing` events.

use stm_core::{Conflict, Event, EventKind, EventSink};

/// An [`EventSink`] that emits every conflict abort and every finished pause as a `tracing`
/// event with target `stm::conflict`, and optionally passes every event on to another sink
/// (such as a [`Recorder`](crate::Recorder)), so that one program can both trace and log.
///
/// Fields: `thread`, `kind` (`WRITE_WRITE`, `WRITE_READ`, `INEVITABLE`), `this` and `other`
/// (`file:line:column`, empty when unknown), `other_thread` (0 when unknown), and `lost_ns` for
/// aborts (level `DEBUG`) or `paused_ns` for pauses (level `TRACE`).
///
/// ```
/// use std::sync::Arc;
/// stm_core::set_event_sink(Some(Arc::new(stm_log::TracingSink::new())));
/// // ... transactions: conflicts now reach the installed `tracing` subscriber ...
/// stm_core::set_event_sink(None);
/// ```
#[derive(Default)]
pub struct TracingSink {
    next: Option<Box<dyn EventSink>>,
}

impl std::fmt::Debug for TracingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingSink")
            .field("forwards", &self.next.is_some())
            .finish()
    }
}

impl TracingSink {
    /// A sink that only emits `tracing` events.
    pub fn new() -> Self {
        TracingSink { next: None }
    }

    /// A sink that emits `tracing` events and passes every event on to `next`. The chain
    /// times every attempt (the default [`EventSink::timing`]), whatever `next` would ask for:
    /// a [`Recorder`](crate::Recorder) behind it gets only timed events.
    pub fn with_next(next: impl EventSink) -> Self {
        TracingSink {
            next: Some(Box::new(next)),
        }
    }
}

fn loc(l: Option<stm_core::SourceLocation>) -> String {
    l.map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default()
}

fn fields(c: &Conflict) -> (&'static str, String, String, u64) {
    (
        c.kind.name(),
        loc(c.this),
        loc(c.other),
        c.other_thread.unwrap_or(0),
    )
}

impl EventSink for TracingSink {
    fn event(&self, e: &Event) {
        match e.kind {
            EventKind::Abort {
                conflict: Some(c),
                lost,
                ..
            } => {
                let (kind, this, other, other_thread) = fields(&c);
                tracing::debug!(
                    target: "stm::conflict",
                    thread = e.thread,
                    kind,
                    this = this.as_str(),
                    other = other.as_str(),
                    other_thread,
                    lost_ns = u64::try_from(lost.as_nanos()).unwrap_or(u64::MAX),
                    "transaction aborted by a {kind} conflict"
                );
            }
            EventKind::PauseEnd { conflict, paused } => {
                let (kind, this, other, other_thread) = fields(&conflict);
                tracing::trace!(
                    target: "stm::conflict",
                    thread = e.thread,
                    kind,
                    this = this.as_str(),
                    other = other.as_str(),
                    other_thread,
                    paused_ns = u64::try_from(paused.as_nanos()).unwrap_or(u64::MAX),
                    "transaction paused by a {kind} conflict"
                );
            }
            _ => {}
        }
        if let Some(n) = &self.next {
            n.event(e);
        }
    }
}
