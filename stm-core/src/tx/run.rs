//! The attempt loop shared by every entry point, and the entry points: `atomically`,
//! `try_atomically`, `inevitably`, `atomically_read` (with its `ReadTx`).

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    /// `inevitably`: inevitable from the start, by the user's request.
    Inevitable,
    /// `atomically_read`: the body cannot write (`ReadTx`), so its attempts run unlogged
    /// without asking the table of sites, and never note their site in it.
    ReadOnly,
}

/// Runs the body once: generic, so that the body is inlined here rather than called through a
/// `dyn` pointer, and out of line, which keeps the attempt loop around it small.
#[inline(never)]
pub(super) fn run_body<'env, R, E, F>(body: &mut F, tx: &mut Tx<'_, 'env>) -> Result<R, TxError<E>>
where
    F: for<'t> FnMut(&mut Tx<'t, 'env>) -> Result<R, TxError<E>>,
{
    body(tx)
}

/// The loop shared by every entry point. Returns the body's value or the user's error.
///
/// The body is `for<'t>`: it must accept an attempt lifetime it cannot name, which outlives its
/// call, so everything it hands to `write` & co. is borrowed from outside it (`'env`) or kept by
/// `hold`. Those borrows last for this whole call, so every word in the redo log stays alive
/// and in place until the commit (or rollback) below, which runs before `execute` returns.
///
/// `wait` says what a `retry` does: `None` blocks the thread until a word read changes, then
/// runs the body again; `Some(list)` (the async entry points) fills `list` with the read set and
/// returns `None` at once, the transaction ended and nothing held.
///
/// `site` is the caller's `Location` (`#[track_caller]` on the entry points), which decides
/// whether the first attempt keeps a read set. An attempt runs *unlogged* (`State::unlogged`:
/// each read is checked against the snapshot and not logged) unless its site needed a read set
/// lately: an unlogged attempt that writes, waits in `retry` or becomes inevitable stops with
/// `NeedsReadSet`, the site is noted in the thread's table (`State::sites`), and the body runs
/// again with a read set; the site's attempts keep one until `SITE_DECAY` of them have committed
/// without writing. An unlogged attempt that meets a word newer than its snapshot after it has
/// read something stops too (it cannot validate what it read) and the body runs again with a
/// read set, which can extend, without noting the site. None of these stops counts as a
/// conflict.
#[inline(never)]
pub(super) fn execute<'env, R, E, F>(
    body: &mut F,
    mode: Mode,
    site: SourceLocation,
    #[cfg_attr(not(feature = "async"), allow(unused_mut))] mut wait: Option<&mut WaitList>,
) -> Option<Result<R, E>>
where
    F: for<'t> FnMut(&mut Tx<'t, 'env>) -> Result<R, TxError<E>>,
{
    #[cfg(not(feature = "async"))]
    let _ = &wait;
    CTX.with(|ctx| {
        if ctx.active.get() {
            nested();
        }
        ctx.active.set(true);
        let active = Active(ctx);
        // SAFETY: the state lives in this thread's context; `active` (set above, cleared by
        // `Active::drop`) makes this the only `execute` on the thread using it, and nested calls
        // panic before reaching here. It is reached only through this raw pointer until
        // `execute` returns.
        let state: *mut State =
            unsafe { &mut *ctx.state.get() }.get_or_insert_with(|| State::new(runtime(), ctx.id));
        // The runtime, from the state: `runtime()` (a `OnceLock`) is read once per thread.
        // SAFETY: as above; a shared read of one field.
        let rt = unsafe { (*state).rt };
        let mut tx = Tx {
            s: state,
            _attempt: PhantomData,
            _env: PhantomData,
        };
        // The first attempt starts with no abort behind it (`Active` resets the count on every
        // way out of the loop).
        let mut from_start = matches!(mode, Mode::Inevitable);
        let mut plan = if mode == Mode::ReadOnly {
            Plan::UNLOGGED
        } else {
            // SAFETY: as above; a shared read of one entry.
            unsafe { (*state).site_plan(site) }
        };
        loop {
            {
                let s = tx.st();
                s.begin(from_start, plan < Plan::BY_TABLE);
                if let Some(t) = s.start.filter(|_| s.sink.is_some()) {
                    s.emit_at(
                        t,
                        EventKind::Start {
                            inevitable: from_start,
                        },
                    );
                }
                if from_start {
                    s.take_token(None);
                    s.user_inevitable = matches!(mode, Mode::Inevitable);
                }
            }
            let r = catch_unwind(AssertUnwindSafe(|| run_body(body, &mut tx)));
            let s = tx.st();
            let r = match r {
                Ok(r) => r,
                Err(payload) => {
                    s.rollback();
                    ctx.counters.bump(stats::PANICS);
                    s.emit_abort(AbortCause::Panic);
                    s.end();
                    drop(active);
                    release(ctx, state);
                    resume_unwind(payload);
                }
            };
            match r {
                Ok(v) => match s.commit_fast() {
                    Ok(read_only) => {
                        if read_only && plan == Plan::BY_TABLE {
                            s.site_decay(site);
                        }
                        ctx.counters.bump(if read_only {
                            stats::READ_ONLY_COMMITS
                        } else {
                            stats::UPDATE_COMMITS
                        });
                        if !s.extra {
                            // The common end (see `State::extra`): no token, no event, no
                            // action, nothing to free.
                            s.end_plain();
                            drop(active);
                            if ctx.late_pending.get() {
                                release(ctx, state);
                            }
                            return Some(Ok(v));
                        }
                        let inev = s.took_token;
                        if inev {
                            ctx.counters.bump(stats::INEVITABLE_RUNS);
                        }
                        if s.sink.is_some() {
                            match s.start {
                                Some(t) => {
                                    let now = Timestamp::now();
                                    s.emit_at(
                                        now,
                                        EventKind::Commit {
                                            read_only,
                                            duration: now - t,
                                        },
                                    );
                                }
                                // Untimed (`hook::Timing`): no clock read at all.
                                None => s.emit_at(
                                    Timestamp::ORIGIN,
                                    EventKind::UntimedCommit { read_only },
                                ),
                            }
                        }
                        // Published values now belong to their TBoxes: not freed by `end`.
                        s.writes.clear();
                        let after = if s.after.is_empty() {
                            None
                        } else {
                            Some(core::mem::take(&mut s.after))
                        };
                        // The async waiters this commit woke (moved out before `release`,
                        // which may run a `Drop` that uses the state; woken on the way out
                        // even if such a `Drop` panics: they are in no table any more).
                        #[cfg(feature = "async")]
                        let wake = super::future::Wakeups(core::mem::take(&mut s.to_wake));
                        s.end();
                        // Not in a transaction any more: a value's `Drop` run by `release` may
                        // start one of its own.
                        drop(active);
                        release(ctx, state);
                        #[cfg(feature = "async")]
                        drop(wake);
                        if let Some(after) = after {
                            run_after_commit(state, after);
                        }
                        return Some(Ok(v));
                    }
                    Err(a) if s.unlogged && a.cause == AbortCause::NeedsReadSet => {
                        // The body went on after a write was refused and returned `Ok`.
                        plan = s.stopped_unlogged(ctx, site, plan, mode);
                        s.end();
                        release_between_attempts(ctx, state);
                        continue;
                    }
                    Err(a) => {
                        s.rollback();
                        s.count_abort(ctx, a);
                    }
                },
                Err(TxError::User(e)) => {
                    s.rollback();
                    ctx.counters.bump(stats::CANCELS);
                    s.emit_abort(AbortCause::Cancel);
                    s.end();
                    drop(active);
                    release(ctx, state);
                    return Some(Err(e));
                }
                Err(TxError::Abort(a)) => {
                    // A body may return an `Abort` it did not get from this attempt; trust the
                    // attempt's own verdict first.
                    let a = s.doomed.unwrap_or(a);
                    if s.unlogged
                        && (a.cause == AbortCause::NeedsReadSet || a.cause == AbortCause::Retry)
                    {
                        // A `retry` must know what to wait on: the read set.
                        s.needs_log |= a.cause == AbortCause::Retry;
                        plan = s.stopped_unlogged(ctx, site, plan, mode);
                        s.end();
                        release_between_attempts(ctx, state);
                        continue;
                    }
                    if a.cause == AbortCause::Retry {
                        let why = if s.user_inevitable {
                            Some("stm: retry() in an inevitable transaction: it cannot be rolled back")
                        } else if s.reads.is_empty() {
                            Some("stm: retry() in a transaction that read nothing would wait forever")
                        } else {
                            None
                        };
                        s.rollback();
                        if let Some(why) = why {
                            s.end();
                            drop(active);
                            release(ctx, state);
                            panic!("{why}");
                        }
                        ctx.counters.bump(stats::RETRIES);
                        s.emit_abort(AbortCause::Retry);
                        ctx.aborts.set(0);
                        from_start = false;
                        #[cfg(feature = "async")]
                        if let Some(list) = wait.as_deref_mut() {
                            // Async: the future waits; this transaction is over.
                            list.extend(s.reads.iter().map(|r| (r.orec, r.version)));
                            s.end();
                            drop(active);
                            release(ctx, state);
                            return None;
                        }
                        // What to wait on: the read set, copied out of the state (a `Drop` run
                        // by the release below may run a transaction of its own on it, even one
                        // that retries).
                        let mut wait_on = core::mem::take(&mut s.wait_on);
                        wait_on.clear();
                        wait_on.extend(s.reads.iter().map(|r| (r.orec, r.version)));
                        s.end();
                        let rt = s.rt;
                        // Unpin the epoch (and free the attempt's garbage) before sleeping: a
                        // pinned sleeper would stop all reclamation. The thread is briefly not
                        // in a transaction, so a freed value's `Drop` may start one.
                        release_between_attempts(ctx, state);
                        State::wait_for_change(rt, &wait_on);
                        // Keep the vector's capacity for the next retry.
                        tx.st().wait_on = wait_on;
                        continue;
                    }
                    s.rollback();
                    s.count_abort(ctx, a);
                }
            }
            // A failed become_inevitable asks for an inevitable rerun.
            let force_inevitable = matches!(mode, Mode::Inevitable) || s.wants_inevitable;
            s.end();
            release_between_attempts(ctx, state);
            backoff(ctx.aborts.get());
            from_start = force_inevitable || ctx.aborts.get() >= rt.abort_limit;
        }
    })
}

/// `execute` for the blocking entry points: a `retry` sleeps and runs the body again, so it
/// always returns the body's value or the user's error.
#[inline(always)]
fn execute_blocking<'env, R, E, F>(body: &mut F, mode: Mode, site: SourceLocation) -> Result<R, E>
where
    F: for<'t> FnMut(&mut Tx<'t, 'env>) -> Result<R, TxError<E>>,
{
    match execute(body, mode, site, None) {
        Some(r) => r,
        None => unreachable!("a blocking transaction does not return on retry"),
    }
}

/// Runs `f` as a transaction until it commits, and returns its value.
///
/// `f` may run several times (each failed attempt is rolled back, invisibly); after too many
/// conflicts in a row (16 by default, see [`Config`](crate::Config)) the next attempt runs as
/// the inevitable transaction, so every transaction commits eventually.
///
/// # Read-only transactions need no hint
///
/// The runtime remembers, per thread, which call sites of `atomically` (this function is
/// `#[track_caller]`) wrote lately. A site that did not runs its attempts without a read set:
/// each read is checked against the attempt's snapshot and nothing is logged, which makes
/// read-only transactions cheaper, the more so the more they read. When such an attempt writes,
/// calls [`Tx::retry`] or [`Tx::become_inevitable`], the operation returns `Err`, and `f` runs
/// again at once with a read set; the site keeps one until 64 of its transactions have
/// committed without writing. So `f` may run twice even without any conflict, typically on the
/// first call from a site that writes. Such reruns are not conflicts: they are counted in
/// [`Stats::unlogged_reruns`](crate::Stats::unlogged_reruns). While an event sink is installed,
/// every attempt keeps a read set.
///
/// ```
/// use stm_core::{TVar, atomically};
/// let v = TVar::new(1u64);
/// let mut runs = 0;
/// atomically(|tx| {
///     runs += 1;
///     tx.modify(&v, |x| x + 1) // first call from this site: runs once more, with a read set
/// });
/// assert!(runs <= 2);
/// assert_eq!(v.load(), 2);
/// ```
///
/// # Panics
///
/// A panic in `f` rolls the attempt back (no write of it is ever seen, its after-commit actions
/// are dropped, every lock it held is released) and then propagates to the caller. Calling
/// `atomically` (or `inevitably`) inside a transaction panics: pass the `&mut Tx` down instead.
///
/// ```
/// use stm_core::{TVar, atomically};
/// let a = TVar::new(100i64);
/// let b = TVar::new(0i64);
/// atomically(|tx| {
///     let x = tx.read(&a)?;
///     tx.write(&a, x - 10)?;
///     tx.modify(&b, |y| y + 10)?;
///     Ok(())
/// });
/// assert_eq!(a.load() + b.load(), 100);
/// ```
#[track_caller]
#[inline]
pub fn atomically<'env, R>(mut f: impl for<'t> FnMut(&mut Tx<'t, 'env>) -> TxResult<R>) -> R {
    let mut body =
        |tx: &mut Tx<'_, 'env>| f(tx).map_err(TxError::<core::convert::Infallible>::Abort);
    match execute_blocking(&mut body, Mode::Normal, Location::caller()) {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Like [`atomically`], but the body may give up with its own error: `Err(TxError::User(e))`
/// rolls the attempt back (no write is kept, no after-commit action runs) and returns `Err(e)`.
///
/// ```
/// use stm_core::{TVar, TxError, try_atomically};
/// let balance = TVar::new(50u64);
/// let r: Result<(), &str> = try_atomically(|tx| {
///     let b = tx.read(&balance)?;
///     tx.write(&balance, b.wrapping_sub(80))?;
///     if b < 80 { return Err(TxError::User("insufficient funds")); }
///     Ok(())
/// });
/// assert_eq!(r, Err("insufficient funds"));
/// assert_eq!(balance.load(), 50);
/// ```
#[track_caller]
#[inline]
pub fn try_atomically<'env, R, E>(
    mut f: impl for<'t> FnMut(&mut Tx<'t, 'env>) -> Result<R, TxError<E>>,
) -> Result<R, E> {
    execute_blocking(&mut f, Mode::Normal, Location::caller())
}

/// Runs `f` exactly once, as the inevitable transaction: it never aborts, so it may do I/O.
///
/// Waits while another transaction is inevitable; other transactions keep running and committing
/// unless they touch what `f` reads or writes. Inside `f` every operation returns `Ok`.
///
/// # Panics
///
/// If `f` calls [`Tx::retry`] (an inevitable transaction cannot wait for others), or panics.
///
/// ```
/// use stm_core::{TVar, inevitably};
/// let lines = TVar::new(0u32);
/// let n = inevitably(|tx| {
///     let n = tx.modify(&lines, |n| n + 1).unwrap();
///     println!("line {n}");                      // I/O: this body runs once
///     n
/// });
/// assert_eq!(n, 1);
/// ```
pub fn inevitably<'env, R>(f: impl for<'t> FnOnce(&mut Tx<'t, 'env>) -> R) -> R {
    let mut f = Some(f);
    let mut body = |tx: &mut Tx<'_, 'env>| match f.take() {
        Some(f) => Ok(f(tx)),
        // Unreachable: an inevitable attempt commits; kept total instead of panicking.
        None => Err(TxError::<core::convert::Infallible>::Abort(
            Abort::conflict(ConflictKind::Inevitable),
        )),
    };
    // Inevitable from the start: never unlogged, so the site does not matter.
    match execute_blocking(&mut body, Mode::Inevitable, Location::caller()) {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// How the attempt loop runs a transaction's next attempt (one byte, a register in the loop).
struct Plan;

impl Plan {
    /// Without a read set: the site is not in the table.
    const UNLOGGED: u8 = 0;
    /// With a read set because the site is in the table: its read-only commits count it down.
    const BY_TABLE: u8 = 1;
    /// With a read set, after an unlogged attempt stopped for a word newer than its snapshot.
    const LOGGED: u8 = 2;
}

impl State {
    /// The plan of a transaction's first attempt, from its site's table entry.
    #[inline(always)]
    fn site_plan(&self, site: SourceLocation) -> u8 {
        if self.sites[site_index(site)].key == site as *const Location<'static> as usize {
            Plan::BY_TABLE
        } else {
            Plan::UNLOGGED
        }
    }

    /// A read-only commit of a site that ran with a read set because of its table entry: one
    /// step towards running it unlogged again. (The entry may have been taken by another site
    /// meanwhile, by a transaction that a `Drop` ran between attempts.) Out of line: most sites
    /// in the table write, and inlined, the entry's address was kept across the attempt loop.
    #[inline(never)]
    fn site_decay(&mut self, site: SourceLocation) {
        let e = &mut self.sites[site_index(site)];
        if e.key == site as *const Location<'static> as usize {
            e.left -= 1;
            if e.left == 0 {
                e.key = 0;
            }
        }
    }

    /// Rolls back an unlogged attempt that stopped (`NeedsReadSet`, or a `retry` with
    /// `needs_log` set) and returns the plan of the next attempt. Not a conflict:
    /// the abort count of the progress guarantee is left alone, and no event is emitted (an
    /// unlogged attempt has no sink).
    #[cold]
    #[inline(never)]
    fn stopped_unlogged(
        &mut self,
        ctx: &ThreadCtx,
        site: SourceLocation,
        plan: u8,
        mode: Mode,
    ) -> u8 {
        debug_assert!(self.unlogged && self.sink.is_none() && plan == Plan::UNLOGGED);
        self.rollback();
        ctx.counters.bump(stats::UNLOGGED_RERUNS);
        if core::mem::take(&mut self.needs_log) && mode != Mode::ReadOnly {
            self.sites[site_index(site)] = Site {
                key: site as *const Location<'static> as usize,
                left: SITE_DECAY,
            };
            Plan::BY_TABLE
        } else {
            // A commit landed between two of its reads: a word is busy. This transaction goes
            // on with a read set, which can extend (measured: rerunning unlogged with the newer
            // snapshot stopped again more often than not beside a busy writer); the site is
            // not noted. (`refresh` has loaded the newer snapshot already.)
            Plan::LOGGED
        }
    }
}

/// The transaction handed to the body of [`atomically_read`]: a [`Tx`] that can only read.
///
/// It has no `write`, `modify`, `write_box` nor `become_inevitable`, so a read-only body is
/// checked by the compiler and runs without a read set from its first attempt, without the
/// per-site bookkeeping of [`atomically`]:
///
/// ```compile_fail,E0599
/// use stm_core::{TVar, atomically_read};
/// let v = TVar::new(1u64);
/// atomically_read(|tx| tx.write(&v, 2)); // no method named `write`
/// ```
#[repr(transparent)]
pub struct ReadTx<'t, 'env>(Tx<'t, 'env>);

impl<'t, 'env> ReadTx<'t, 'env> {
    /// The read-only view of `tx`.
    #[inline(always)]
    fn of<'a>(tx: &'a Tx<'t, 'env>) -> &'a ReadTx<'t, 'env> {
        // SAFETY: `ReadTx` is `repr(transparent)` over `Tx<'t, 'env>` with the same lifetimes,
        // so the two references have the same layout and validity, and the result borrows `tx`
        // for as long as the argument did.
        unsafe { &*(tx as *const Tx<'t, 'env> as *const ReadTx<'t, 'env>) }
    }

    /// Reads `var`, as [`Tx::read`].
    ///
    /// ```
    /// use stm_core::{TVar, atomically_read};
    /// let (a, b) = (TVar::new(1u64), TVar::new(2u64));
    /// assert_eq!(atomically_read(|tx| Ok(tx.read(&a)? + tx.read(&b)?)), 3);
    /// ```
    #[track_caller]
    #[inline(always)]
    pub fn read<T: Word>(&self, var: &TVar<T>) -> TxResult<T> {
        self.0.read(var)
    }

    /// Reads a [`TBox`](crate::TBox), as [`Tx::read_box`].
    ///
    /// ```
    /// use stm_core::{TBox, atomically_read};
    /// let name = TBox::new(String::from("ann"));
    /// assert_eq!(atomically_read(|tx| Ok(tx.read_box(&name)?.len())), 3);
    /// ```
    #[cfg(not(loom))]
    #[track_caller]
    pub fn read_box<T: Send + Sync + 'static>(&self, b: &'t crate::TBox<T>) -> TxResult<&'t T> {
        self.0.read_box(b)
    }

    /// Waits until a word this attempt has read changes, then runs the body again, as
    /// [`Tx::retry`] (the attempt that waits keeps a read set: the body runs once more first).
    ///
    /// ```
    /// use stm_core::{TVar, atomically, atomically_read};
    /// let ready = TVar::new(false);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| atomically(|tx| tx.write(&ready, true)));
    ///     atomically_read(|tx| if tx.read(&ready)? { Ok(()) } else { tx.retry() });
    /// });
    /// ```
    pub fn retry<T>(&self) -> TxResult<T> {
        self.0.retry()
    }
}

/// Runs a read-only transaction: like [`atomically`], with a body that can only read
/// ([`ReadTx`]). Every attempt runs without a read set from the start (an attempt that meets a
/// word newer than its snapshot after its first read runs again with one, and so does one that
/// waits in [`ReadTx::retry`]), and the call skips the per-site table that `atomically` asks.
/// Returns the body's value.
///
/// ```
/// use stm_core::{TVar, atomically, atomically_read};
/// let accounts = [TVar::new(60i64), TVar::new(40i64)];
/// atomically(|tx| {
///     tx.modify(&accounts[0], |a| a - 10)?;
///     tx.modify(&accounts[1], |b| b + 10)
/// });
/// let total = atomically_read(|tx| accounts.iter().map(|a| tx.read(a)).sum::<Result<i64, _>>());
/// assert_eq!(total, 100);
/// ```
#[track_caller]
#[inline]
pub fn atomically_read<'env, R>(mut f: impl for<'t> FnMut(&ReadTx<'t, 'env>) -> TxResult<R>) -> R {
    let mut body = |tx: &mut Tx<'_, 'env>| {
        f(ReadTx::of(tx)).map_err(TxError::<core::convert::Infallible>::Abort)
    };
    match execute_blocking(&mut body, Mode::ReadOnly, Location::caller()) {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
