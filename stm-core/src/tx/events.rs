//! Events for the hook (the conflict log's recorder) and the conflict records they carry: both
//! sides of a conflict, pauses, and the side table of last writers.

use super::*;

impl State {
    #[inline]
    pub(super) fn emit(&mut self, kind: EventKind) {
        if self.sink.is_some() {
            self.emit_at(Timestamp::now(), kind);
        }
    }

    #[inline]
    pub(super) fn emit_at(&mut self, time: Timestamp, kind: EventKind) {
        if let Some(s) = self.sink {
            let e = Event {
                thread: self.id,
                time,
                kind,
            };
            // A sink runs inside the runtime (holding the token, locks, pins): a panic there
            // must not unwind through it. The event is lost instead.
            let _ = catch_unwind(AssertUnwindSafe(|| s.sink.event(&e)));
        }
    }

    /// Emits `PauseStart` (when a sink is installed) and returns its time.
    #[cold]
    pub(super) fn pause_start(&mut self, conflict: Conflict) -> Option<Timestamp> {
        self.busy_with_conflicts();
        let t0 = self.sink.map(|_| Timestamp::now());
        if let Some(t0) = t0 {
            self.emit_at(t0, EventKind::PauseStart { conflict });
        }
        t0
    }

    /// Emits `PauseEnd` for a pause that `pause_start` began at `t0`. Its `paused` is exactly
    /// the difference of the two events' times, so a log's pause accounting adds up.
    #[cold]
    pub(super) fn pause_end(&mut self, t0: Option<Timestamp>, conflict: Conflict) {
        if let Some(t0) = t0 {
            let t1 = Timestamp::now();
            self.emit_at(
                t1,
                EventKind::PauseEnd {
                    conflict,
                    paused: t1.saturating_duration_since(t0),
                },
            );
        }
    }

    /// Records a conflict (with both sides when a sink wants them) and dooms the attempt.
    #[cold]
    pub(super) fn fail(
        &mut self,
        kind: ConflictKind,
        loc: SourceLocation,
        orec_index: Option<usize>,
        other_thread: Option<u64>,
    ) -> Abort {
        let a = Abort::conflict(kind);
        if self.sink.is_some() {
            let (mut other, mut thread) = (None, other_thread);
            if let Some(i) = orec_index {
                let side = self.rt.side();
                // Relaxed, both loads: diagnostics only; the location is 'static and immutable,
                // so nothing is published through them (see `note_writer`).
                let p = side.loc[i].load(std::sync::atomic::Ordering::Relaxed);
                // SAFETY: side entries are null or come from `Location::caller()`, 'static.
                other = unsafe { p.as_ref() };
                if thread.is_none() {
                    let t = side.thread[i].load(std::sync::atomic::Ordering::Relaxed);
                    thread = (t != 0).then_some(t);
                }
            }
            self.conflict = Some(Conflict {
                kind,
                this: Some(loc),
                other,
                other_thread: thread,
            });
        }
        self.doomed = Some(a);
        a
    }

    /// Records in the side table that this thread, at `loc`, writes orec `i`, so that a
    /// transaction aborted by it can name the line. Only while a sink is installed; written
    /// once the commit is sure (validated) and before its release.
    #[cold]
    pub(super) fn note_writer(&self, i: usize, loc: SourceLocation) {
        let side = self.rt.side();
        // Relaxed: diagnostics only (see `SideTable`); the orec's release orders them for
        // readers that acquire the new version.
        side.loc[i].store(
            loc as *const _ as *mut _,
            std::sync::atomic::Ordering::Relaxed,
        );
        side.thread[i].store(self.id, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn orec_index_of(&self, orec: &AtomicU64) -> usize {
        // Recomputing from the address is cheaper than storing it in every read entry; only
        // the cold conflict path needs it.
        let base = self.rt.orec(0).0 as *const AtomicU64 as usize;
        (orec as *const AtomicU64 as usize - base) / core::mem::size_of::<AtomicU64>()
    }

    /// Waits (an `INEVITABLE` pause) until the inevitable transaction lets go of `orec`.
    #[cold]
    pub(super) fn pause_on(&mut self, orec: &AtomicU64, seen: u64, loc: SourceLocation) {
        let conflict = Conflict {
            kind: ConflictKind::Inevitable,
            this: Some(loc),
            other: None,
            other_thread: Some(owner_of(seen)),
        };
        let t0 = self.pause_start(conflict);
        self.rt.wait_orec_change(orec, seen);
        self.pause_end(t0, conflict);
    }
}

impl State {
    pub(super) fn emit_abort(&mut self, cause: AbortCause) {
        if self.sink.is_some() {
            let now = Timestamp::now();
            let conflict = if matches!(cause, AbortCause::Conflict(_)) {
                self.busy_with_conflicts();
                self.conflict
            } else {
                None
            };
            let kind = match self.start {
                Some(t) => EventKind::Abort {
                    cause,
                    conflict,
                    lost: now - t,
                },
                None => EventKind::UntimedAbort { cause, conflict },
            };
            self.emit_at(now, kind);
        }
    }

    /// A conflict (an abort or a pause): time the thread's next attempts (see `hook::Timing`).
    fn busy_with_conflicts(&mut self) {
        if let Some(inst) = self.sink {
            self.time_all = self.time_all.max(inst.timing.after_conflict);
        }
    }

    pub(super) fn count_abort(&mut self, ctx: &ThreadCtx, a: Abort) {
        let i = match a.cause {
            AbortCause::Conflict(ConflictKind::WriteWrite) => stats::ABORT_WW,
            AbortCause::Conflict(ConflictKind::Inevitable) => stats::ABORT_INEV,
            _ => stats::ABORT_WR,
        };
        ctx.counters.bump(i);
        ctx.aborts.set(ctx.aborts.get().saturating_add(1));
        self.emit_abort(a.cause);
    }
}
