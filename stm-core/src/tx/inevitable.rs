//! Inevitable transactions: irrevocable, one at a time, without stopping the others.
//!
//! At most one thread holds the token (`Runtime::inevitable`). Its reads pin their orec (`PINNED`,
//! version kept, so normal readers go on) and its writes lock their orec (`LOCKED | PINNED`, at
//! encounter time); values stay in the redo log until it commits. A normal committer never locks a
//! pinned orec, so nothing the inevitable transaction read can change under it, and nothing it
//! wrote can be read before its commit: it is serialised at its commit point and never aborts.
//! Everyone else keeps committing unless they touch its words.

use super::*;

/// An orec held by the inevitable transaction: pinned (read) or locked (written).
pub(super) struct Held {
    pub(super) orec: &'static AtomicU64,
    /// Its value before we touched it (unlocked, without `PINNED`).
    pub(super) prev: u64,
    pub(super) locked: bool,
}

impl<'t, 'env> Tx<'t, 'env> {
    /// Makes this transaction the inevitable one: from here on it never aborts, so it may do
    /// I/O. Waits while another transaction is inevitable. Fails (and the runtime reruns the body
    /// as inevitable from its start) if something read so far has changed.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let next_id = TVar::new(0u64);
    /// let mut out = Vec::new();
    /// atomically(|tx| {
    ///     let id = tx.modify(&next_id, |n| n + 1)?;
    ///     tx.become_inevitable()?; // from here on this attempt commits: I/O is safe
    ///     out.push(format!("issued {id}"));
    ///     Ok(())
    /// });
    /// assert_eq!(out, ["issued 1"]);
    /// ```
    #[track_caller]
    pub fn become_inevitable(&self) -> TxResult<()> {
        let loc = Location::caller();
        self.st().become_inevitable(loc)
    }

    /// Whether this transaction is the inevitable one.
    ///
    /// ```
    /// use stm_core::{atomically, inevitably};
    /// assert!(!atomically(|tx| Ok(tx.is_inevitable())));
    /// assert!(inevitably(|tx| tx.is_inevitable()));
    /// ```
    pub fn is_inevitable(&self) -> bool {
        self.st().inevitable
    }
}

impl State {
    /// Reads as the inevitable transaction: pin the orec, keep it pinned until the end.
    pub(super) fn read_inevitable(
        &mut self,
        word: &AtomicU64,
        addr: usize,
        loc: SourceLocation,
    ) -> u64 {
        let (orec, _) = self.rt.orec(addr);
        let mut spin = Spin::new();
        loop {
            let o = spin.load(orec);
            if o & LOCKED != 0 {
                if o & PINNED != 0 && owner_of(o) == self.id {
                    // Locked by us for another word of the same orec: nobody else can write.
                    return word.load(Ordering::Acquire);
                }
                // A normal committer writing back: it never waits while holding locks.
                spin.spin_on(orec, o);
                continue;
            }
            if o & PINNED == 0 {
                // AcqRel: Acquire pairs with the Release of the last commit of this orec.
                if orec
                    .compare_exchange(o, o | PINNED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    spin.spin();
                    continue;
                }
                self.rt.orec_written();
                self.held.push(Held {
                    orec,
                    prev: o,
                    locked: false,
                });
            }
            // Pinned (by us: only the token holder pins): no commit can change the word now.
            let v = word.load(Ordering::Acquire);
            self.reads.push(ReadEntry {
                orec,
                version: o & !FLAGS,
                loc,
            });
            return v;
        }
    }

    /// Locks `orec` for the inevitable transaction (encounter time); waits out a committer.
    pub(super) fn lock_inevitable(&mut self, orec: &'static AtomicU64) {
        let mut spin = Spin::new();
        loop {
            let o = spin.load(orec);
            if o & LOCKED != 0 {
                if o & PINNED != 0 && owner_of(o) == self.id {
                    return;
                }
                spin.spin_on(orec, o);
                continue;
            }
            let pinned_by_us = o & PINNED != 0;
            let slot = if pinned_by_us {
                self.held
                    .iter()
                    .position(|h| core::ptr::eq(h.orec, orec))
                    .unwrap_or(usize::MAX)
            } else {
                self.held.len()
            };
            let new = locked_word(self.id, slot, (o & WAITERS) | PINNED);
            // SeqCst, as a normal commit's lock CAS: Acquire pairs with the last release of the
            // orec, and a committer that read this word and validated it before this lock (it
            // comes before us in the serial order) must precede the lock in the SeqCst order, so
            // that readers who cover our stamp also see that committer's locks (see the
            // anti-dependency argument at the top of this file).
            if orec
                .compare_exchange(o, new, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                spin.spin();
                continue;
            }
            self.rt.orec_written();
            if pinned_by_us && slot != usize::MAX {
                // The version cannot have moved while pinned, but a `retry` waiter may have set
                // WAITERS since: take the value we just locked as the one to restore or to
                // check for waiters.
                self.held[slot].prev = o & !PINNED;
                self.held[slot].locked = true;
            } else {
                self.held.push(Held {
                    orec,
                    prev: o & !PINNED,
                    locked: true,
                });
            }
            return;
        }
    }

    /// Takes the inevitable token, waiting (an `INEVITABLE` pause) while someone else has it.
    pub(super) fn take_token(&mut self, loc: Option<SourceLocation>) {
        loop {
            // AcqRel: Acquire pairs with the previous holder's Release when it gave the token
            // back (after releasing its orecs).
            match self.rt.inevitable.compare_exchange(
                0,
                self.id,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(owner) => {
                    let conflict = Conflict {
                        kind: ConflictKind::Inevitable,
                        this: loc,
                        other: None,
                        other_thread: Some(owner),
                    };
                    let t0 = self.pause_start(conflict);
                    self.rt.wait_token_free(self.id);
                    self.pause_end(t0, conflict);
                }
            }
        }
        self.inevitable = true;
        self.took_token = true;
        self.extra = true;
        self.emit(EventKind::InevitableBegin);
    }

    pub(super) fn give_back_token(&mut self) {
        // Release: hands our orec releases (done before this) to the next taker.
        self.rt.inevitable.store(0, Ordering::Release);
        self.inevitable = false;
        self.rt.inevitable_done.notify();
        self.emit(EventKind::InevitableEnd);
    }

    pub(super) fn become_inevitable(&mut self, loc: SourceLocation) -> TxResult<()> {
        if let Some(a) = self.doomed {
            return Err(a);
        }
        if self.unlogged {
            // The reads so far must be pinned at the versions they were read at, which only a
            // read set knows: rerun with one.
            return Err(self.stop_unlogged(true));
        }
        if self.inevitable {
            self.user_inevitable = true;
            return Ok(());
        }
        self.take_token(Some(loc));
        // Pin every read at the version it was read at.
        let mut ok = true;
        'reads: for i in 0..self.reads.len() {
            let r = self.reads[i];
            let mut spin = Spin::new();
            loop {
                let o = spin.load(r.orec);
                if o & LOCKED != 0 {
                    spin.spin_on(r.orec, o);
                    continue;
                }
                if o & !FLAGS != r.version {
                    ok = false;
                    break 'reads;
                }
                if o & PINNED != 0 {
                    continue 'reads;
                }
                // AcqRel, as the pin of `read_inevitable`: Acquire pairs with the Release of the
                // last commit of this orec; the failure load is only retried.
                if r.orec
                    .compare_exchange(o, o | PINNED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.rt.orec_written();
                    self.held.push(Held {
                        orec: r.orec,
                        prev: o,
                        locked: false,
                    });
                    continue 'reads;
                }
                spin.spin();
            }
        }
        if !ok {
            self.release_held(None);
            self.give_back_token();
            self.wants_inevitable = true;
            return Err(self.fail(ConflictKind::WriteRead, loc, None, None));
        }
        for i in 0..self.writes.len() {
            let orec = self.writes[i].orec;
            self.lock_inevitable(orec);
        }
        self.user_inevitable = true;
        Ok(())
    }

    /// Releases the inevitable transaction's orecs: locked ones get `new_version` (commit) or
    /// their previous value (rollback); pinned ones lose the pin. Returns whether a released
    /// orec had waiters.
    pub(super) fn release_held(&mut self, new_version: Option<u64>) -> bool {
        let mut waiters = false;
        for h in self.held.drain(..) {
            if h.locked {
                waiters |= h.prev & WAITERS != 0;
                let v = match new_version {
                    Some(wv) => wv << SHIFT,
                    None => h.prev,
                };
                // Release: publishes the written-back words with the new version.
                crate::sync::release_orec(h.orec, v);
                self.rt.orec_written();
                #[cfg(feature = "async")]
                if new_version.is_some() && h.prev & WAITERS != 0 {
                    self.rt.take_wakers(h.orec, &mut self.to_wake);
                }
            } else {
                // Release: pairs with readers' Acquire; keeps a concurrent WAITERS bit.
                h.orec.fetch_and(!PINNED, Ordering::Release);
                self.rt.orec_written();
            }
        }
        waiters
    }

    pub(super) fn commit_inevitable(&mut self) {
        let wrote = self.held.iter().any(|h| h.locked);
        let wv = if wrote {
            self.write_back();
            // Our locks were taken at encounter time, before this store (see `clocks`).
            let wv = self.rt.next_stamp(self.slot);
            self.seen[(self.slot & SLOT_MASK) as usize] = wv;
            Some(wv)
        } else {
            None
        };
        if self.sink.is_some() {
            for w in &self.writes {
                self.note_writer(self.orec_index_of(w.orec), w.loc);
            }
        }
        let waiters = self.release_held(wv);
        self.writes.clear();
        self.give_back_token();
        if waiters {
            self.rt.commits.notify();
        }
    }
}
