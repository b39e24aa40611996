//! The event hook: one global sink that the conflict log (`stm-log`) fills.
//!
//! With no sink installed every hook point costs one load of a pointer and a branch. With a sink,
//! the runtime also reads the event clock ([`Timestamp`]) when an attempt starts and when it ends
//! (and around each pause), and, for committers, remembers in a side table which source line last
//! wrote each versioned lock, so that an aborted reader can name the line that invalidated it.
//!
//! A clock read costs about as much as a third of a short transaction, so a sink may ask for
//! fewer ([`EventSink::timing`], [`Timing`]): then a thread that met no conflict lately times
//! only a random sample of its attempts, and reports the others as
//! [`EventKind::UntimedCommit`] (no clock read at all) or [`EventKind::UntimedAbort`].
//!
//! # The event clock
//!
//! [`Timestamp`] counts nanoseconds from an origin [`Instant`] fixed once per process (when the
//! first sink is installed or [`Timestamp::now`] is first called). On x86-64, when the CPU says
//! its time-stamp counter is invariant (CPUID leaf `0x8000_0007`, EDX bit 8: it ticks at a
//! constant rate in every power state) and, on Linux, the kernel itself keeps the TSC as its
//! clocksource (it demotes a TSC that it finds unsynchronised between CPUs), a timestamp is one
//! `rdtsc` scaled by a factor measured once against `Instant` (over about 10 ms, the first time):
//! a few nanoseconds instead of a `clock_gettime`. Anywhere else it is `Instant::now()` minus the
//! origin.

use crate::error::{AbortCause, ConflictKind};
use core::ops::{Add, Sub};
use core::panic::Location;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

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
        /// Time since the attempt started (this event's `time` minus the start event's).
        duration: Duration,
    },
    /// The attempt aborted; `lost` is its whole duration, charged to `conflict` when there is one.
    Abort {
        /// Why.
        cause: AbortCause,
        /// The conflict, for [`AbortCause::Conflict`].
        conflict: Option<Conflict>,
        /// Time since the attempt started (this event's `time` minus the start event's): the
        /// work thrown away.
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
        /// How long it waited, on the same clock as the events' `time`.
        paused: Duration,
    },
    /// An attempt that was not timed committed (only for a sink whose [`Timing`] samples): no
    /// `Start` event came before it, and the clock was not read, so the event's `time` is
    /// [`Timestamp::ORIGIN`].
    UntimedCommit {
        /// It wrote nothing.
        read_only: bool,
    },
    /// An attempt that was not timed ended without committing (only for a sink whose [`Timing`]
    /// samples): no `Start` event came before it, so its duration is unknown; the event's `time`
    /// is when it ended.
    UntimedAbort {
        /// Why.
        cause: AbortCause,
        /// The conflict, for [`AbortCause::Conflict`].
        conflict: Option<Conflict>,
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
    /// When it happened, on the event clock (see [`Timestamp`]). The durations in
    /// [`EventKind`] are differences of the same clock's readings.
    pub time: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// Receives every event of every thread while installed. Called on the transaction's own thread,
/// on its hot path: keep it cheap (buffer per thread, flush elsewhere).
pub trait EventSink: Send + Sync + 'static {
    /// One event.
    fn event(&self, event: &Event);

    /// Which attempts the runtime times for this sink; asked once, when the sink is installed.
    /// The default, [`Timing::EVERY_ATTEMPT`], times every attempt: every attempt delivers a
    /// `Start` event and ends with a `Commit` or an `Abort` that carries its duration.
    fn timing(&self) -> Timing {
        Timing::EVERY_ATTEMPT
    }
}

/// Which attempts the runtime times for a sink ([`EventSink::timing`]).
///
/// A timed attempt reads the event clock when it starts and when it ends, and delivers `Start`
/// and then `Commit` or `Abort` (with its duration). An untimed attempt reads no clock at its
/// start and delivers only its end: [`EventKind::UntimedCommit`] (still no clock read) or
/// [`EventKind::UntimedAbort`] (read then, since an abort matters). Pauses and inevitable runs
/// are always timed.
///
/// A thread times every attempt while it is *busy with conflicts*: for `after_conflict` attempts
/// after each conflict abort or pause, and for its first `after_conflict` attempts after a sink
/// is installed. Otherwise it times about one attempt in `sample`, picked at random (the gaps are
/// uniform in `0..2 * sample - 1`, so that no periodic workload is always or never timed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Time about one attempt in this many while the thread is quiet; 0 or 1 times every attempt.
    pub sample: u32,
    /// How many attempts after a conflict (and after a sink is installed) are all timed.
    pub after_conflict: u32,
}

impl Timing {
    /// Every attempt timed (the default).
    pub const EVERY_ATTEMPT: Timing = Timing {
        sample: 1,
        after_conflict: 0,
    };
}

/// An installed sink and the timing it asked for (asked once, at installation).
pub(crate) struct Installed {
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) timing: Timing,
}

// Points to a leaked `Installed` or is null. Stored with Release by `set_event_sink`,
// loaded with Acquire by `sink()`: the pair publishes the leaked box's contents.
static SINK: AtomicPtr<Installed> = AtomicPtr::new(core::ptr::null_mut());

// The boxes of replaced sinks (their addresses), kept so that they stay reachable: never freed
// (see `set_event_sink`), but not lost either, for leak checkers such as valgrind's.
static REPLACED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// Installs `sink` (or, with `None`, removes the current one) for every thread.
///
/// Events of an attempt already running keep going to the sink it started with. The small box
/// that holds each installed sink is never freed (it stays reachable, so leak checkers do not
/// report it), so that a thread still delivering to a replaced sink stays safe; install sinks
/// rarely (once per log, not per transaction).
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
        Some(sink) => {
            let timing = sink.timing();
            Box::into_raw(Box::new(Installed { sink, timing }))
        }
        None => core::ptr::null_mut(),
    };
    if !new.is_null() {
        // Calibrate the event clock now, not inside the first transaction that reports.
        Timestamp::now();
    }
    // Release pairs with the Acquire in `sink()`, so readers see the box's contents. (Acquire
    // is not needed on the old value: only its address is kept.) The old box is leaked on
    // purpose (see above), and remembered.
    let old = SINK.swap(new, Ordering::Release);
    if !old.is_null() {
        REPLACED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(old as usize);
    }
}

/// Whether a sink is installed now.
pub fn event_sink_installed() -> bool {
    sink().is_some()
}

/// The installed sink, if any.
#[inline]
pub(crate) fn sink() -> Option<&'static Installed> {
    // Acquire pairs with the Release store in `set_event_sink`.
    let p = SINK.load(Ordering::Acquire);
    // SAFETY: a non-null SINK points to a box leaked by `set_event_sink`, never freed, so the
    // reference is valid for 'static; the Arc inside is never dropped either.
    unsafe { p.as_ref() }
}

/// A moment on the event clock: nanoseconds since the clock's origin, an [`Instant`] fixed once
/// per process (when the first sink is installed or [`Timestamp::now`] is first called).
/// Monotonic, cheap to read, and convertible: [`Timestamp::to_instant`],
/// [`Timestamp::from_instant`], [`Timestamp::to_system_time`].
///
/// On x86-64, when the CPU says its time-stamp counter is invariant (CPUID leaf `0x8000_0007`,
/// EDX bit 8: it ticks at a constant rate in every power state) and, on Linux, the kernel keeps
/// the TSC as its clocksource (it demotes a TSC that it finds unsynchronised between CPUs),
/// [`now`](Timestamp::now) is one `rdtsc` scaled by a factor measured once against `Instant`
/// (over about 10 ms, the first time): a few nanoseconds instead of a `clock_gettime`. Anywhere
/// else it is `Instant::now()` minus the origin ([`Timestamp::uses_tsc`] says which).
///
/// Where it reads the TSC, the nanoseconds are `(tsc - tsc_at_origin) * scale`, with `scale`
/// measured once against `Instant`; such a timestamp agrees with `Instant` at the origin and
/// drifts from it only by the calibration's error (a few parts per million) and by whatever rate
/// correction NTP later applies to the monotonic clock. Durations between two timestamps (those
/// in [`EventKind`]) are exact differences of the same values, so they add up along a thread's
/// events and are never negative.
///
/// ```
/// use std::time::Duration;
/// use stm_core::Timestamp;
///
/// let a = Timestamp::now();
/// let b = Timestamp::now();
/// assert!(b >= a);
/// let d: Duration = b - a;
/// assert_eq!(a + d, b);
/// assert_eq!(Timestamp::from_instant(a.to_instant()), a);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin: nanosecond 0.
    pub const ORIGIN: Timestamp = Timestamp(0);

    /// Now. The first call in a process (or the first [`set_event_sink`]) calibrates the clock,
    /// which takes about 10 ms; later calls cost a `rdtsc` and a multiplication where the TSC is
    /// used, an `Instant::now()` elsewhere.
    #[inline]
    pub fn now() -> Timestamp {
        let c = clock();
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if let Some(tsc) = c.tsc {
            return Timestamp(tsc.nanos(tsc::read()));
        }
        Timestamp(nanos(c.origin.elapsed()))
    }

    /// The timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is later.
    #[inline]
    pub const fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time since `self` (zero if `self` is in the future).
    #[inline]
    pub fn elapsed(self) -> Duration {
        Timestamp::now().saturating_duration_since(self)
    }

    /// The origin's `Instant` (the instant of [`Timestamp::ORIGIN`]).
    pub fn origin() -> Instant {
        clock().origin
    }

    /// The same moment as an `Instant`: the origin plus [`as_nanos`](Self::as_nanos).
    pub fn to_instant(self) -> Instant {
        clock().origin + Duration::from_nanos(self.0)
    }

    /// The moment `instant` on this clock (the origin if `instant` is earlier).
    pub fn from_instant(instant: Instant) -> Timestamp {
        Timestamp(nanos(instant.saturating_duration_since(clock().origin)))
    }

    /// The same moment on the wall clock: the wall-clock time read at the origin plus
    /// [`as_nanos`](Self::as_nanos). Later changes of the system's wall clock do not move it, so
    /// it stays consistent with the other timestamps.
    pub fn to_system_time(self) -> SystemTime {
        clock().origin_wall + Duration::from_nanos(self.0)
    }

    /// Whether this process reads the event clock from the CPU's time-stamp counter (otherwise
    /// from `Instant`). Calibrates the clock if nothing did yet.
    pub fn uses_tsc() -> bool {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        return clock().tsc.is_some();
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        return false;
    }
}

impl Sub for Timestamp {
    type Output = Duration;
    /// Saturating: zero when `rhs` is later.
    #[inline]
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturates at `u64::MAX` nanoseconds (584 years after the origin).
    #[inline]
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(nanos(d)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturates at the origin.
    #[inline]
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(nanos(d)))
    }
}

/// `d` in nanoseconds, saturating (u64 arithmetic: cheaper than `as_nanos`'s u128).
#[inline]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// The calibrated event clock, fixed once per process.
struct Clock {
    origin: Instant,
    /// The wall clock read right after `origin`.
    origin_wall: SystemTime,
    /// The TSC's reading at the origin and its scale, when the TSC is used.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    tsc: Option<tsc::Scale>,
}

/// Written once by `OnceLock::get_or_init`; the `OnceLock` publishes it: its completion is a
/// Release that pairs with the Acquire load in `OnceLock::get` (both inside the standard
/// library), so every thread that gets the `&Clock` sees it fully written.
static CLOCK: OnceLock<Clock> = OnceLock::new();

#[inline]
fn clock() -> &'static Clock {
    match CLOCK.get() {
        Some(c) => c,
        None => init_clock(),
    }
}

#[cold]
#[inline(never)]
fn init_clock() -> &'static Clock {
    CLOCK.get_or_init(Clock::calibrate)
}

impl Clock {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    fn calibrate() -> Clock {
        if !tsc::usable() {
            return Clock::instant_only();
        }
        let (origin, at_origin) = tsc::paired_reading();
        let origin_wall = SystemTime::now();
        std::thread::sleep(tsc::CALIBRATION);
        let (later, at_later) = tsc::paired_reading();
        let scale = tsc::Scale::measure(at_origin, at_later, nanos(later - origin));
        Clock {
            origin,
            origin_wall,
            tsc: scale,
        }
    }

    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    fn calibrate() -> Clock {
        Clock::instant_only()
    }

    fn instant_only() -> Clock {
        Clock {
            origin: Instant::now(),
            origin_wall: SystemTime::now(),
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            tsc: None,
        }
    }
}

/// The time-stamp counter: detection, reading, calibration.
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod tsc {
    use core::arch::x86_64::{__cpuid, _rdtsc};
    use std::time::{Duration, Instant};

    /// How long the calibration measures the TSC against `Instant`. With both ends read to
    /// within about 20 ns, the scale is off by a few parts per million.
    pub(super) const CALIBRATION: Duration = Duration::from_millis(10);

    /// Fixed point: `Scale::mult` is nanoseconds per tick times `2^SHIFT`.
    const SHIFT: u32 = 40;

    /// Whether the CPU declares an invariant TSC and (on Linux) the kernel still trusts it.
    pub(super) fn usable() -> bool {
        // `__cpuid` is safe to call: every x86-64 CPU has the instruction. Leaf 0x8000_0000
        // gives the highest extended leaf; leaf 0x8000_0007 EDX bit 8 is "invariant TSC"
        // (constant rate in all ACPI P-, C- and T-states), on Intel and AMD alike.
        if __cpuid(0x8000_0000).eax < 0x8000_0007 || __cpuid(0x8000_0007).edx & (1 << 8) == 0 {
            return false;
        }
        kernel_trusts_tsc()
    }

    /// Linux switches its clocksource away from the TSC when it finds it unsynchronised between
    /// CPUs or drifting against another clock; follow its verdict when it can be read.
    #[cfg(target_os = "linux")]
    fn kernel_trusts_tsc() -> bool {
        match std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        ) {
            Ok(s) => s.trim() == "tsc",
            Err(_) => true,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn kernel_trusts_tsc() -> bool {
        true
    }

    /// The TSC now.
    #[inline(always)]
    pub(super) fn read() -> u64 {
        // SAFETY: `rdtsc` has no preconditions on x86-64 apart from the OS allowing it in user
        // mode (CR4.TSD clear), which every mainstream OS does; it reads a register and touches
        // no memory. It only runs after `usable()` said the counter is invariant.
        unsafe { _rdtsc() }
    }

    /// An `Instant` and the TSC at (nearly) the same moment: of a few tries, the one whose
    /// `Instant::now()` was bracketed most tightly by two TSC readings, paired with their middle.
    pub(super) fn paired_reading() -> (Instant, u64) {
        let mut best: Option<(u64, Instant, u64)> = None;
        for _ in 0..16 {
            let a = read();
            let i = Instant::now();
            let b = read();
            if b < a {
                continue;
            }
            let width = b - a;
            if best.is_none_or(|(w, _, _)| width < w) {
                best = Some((width, i, a + width / 2));
            }
        }
        match best {
            Some((_, i, t)) => (i, t),
            // The counter went backwards every time: the scale check below rejects it.
            None => (Instant::now(), 0),
        }
    }

    /// Converts TSC readings to nanoseconds since the origin.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) struct Scale {
        /// The TSC at the origin.
        at_origin: u64,
        /// Nanoseconds per tick, times `2^SHIFT`.
        mult: u64,
    }

    impl Scale {
        /// The scale that maps `at_origin` to 0 and `at_later` to `nanos`; `None` when the
        /// readings are implausible (the counter did not advance, or its rate is outside 10 MHz
        /// to 100 GHz).
        pub(super) fn measure(at_origin: u64, at_later: u64, nanos: u64) -> Option<Scale> {
            let ticks = at_later.checked_sub(at_origin).filter(|&t| t > 0)?;
            // Rounded to nearest.
            let mult = ((u128::from(nanos) << SHIFT) + u128::from(ticks / 2)) / u128::from(ticks);
            // 100 GHz: 0.01 ns per tick; 10 MHz: 100 ns per tick.
            let plausible = (1u128 << SHIFT) / 100..=(1u128 << SHIFT) * 100;
            if !plausible.contains(&mult) {
                return None;
            }
            Some(Scale {
                at_origin,
                mult: u64::try_from(mult).ok()?,
            })
        }

        /// Nanoseconds from the origin to the reading `tsc` (0 for a reading before the origin,
        /// as another CPU's counter may give by a few ticks).
        #[inline(always)]
        pub(super) fn nanos(self, tsc: u64) -> u64 {
            let ticks = tsc.saturating_sub(self.at_origin);
            // ticks < 2^64 and mult < 2^47, so the product (rounded to the nearest nanosecond)
            // fits in u128; shifted back it exceeds u64 only after centuries.
            ((u128::from(ticks) * u128::from(self.mult) + (1 << (SHIFT - 1))) >> SHIFT) as u64
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn scale_maps_the_calibration_points_and_is_linear() {
            // A 2.5 GHz counter: 25_000_000 ticks in 10 ms.
            let s = Scale::measure(1_000, 25_001_000, 10_000_000).unwrap();
            assert_eq!(s.nanos(1_000), 0);
            assert_eq!(s.nanos(25_001_000), 10_000_000);
            assert_eq!(s.nanos(2_501_000), 1_000_000);
            // Before the origin: clamped.
            assert_eq!(s.nanos(999), 0);
            // An hour later, off by a few nanoseconds at most (the scale's rounding error is below
            // 2^-41 nanosecond per tick).
            let hour = s.nanos(1_000 + 9_000_000_000_000);
            assert!(hour.abs_diff(3_600_000_000_000) <= 5, "{hour}");
            // Monotonic tick by tick.
            let mut last = 0;
            for t in 1_000..101_000 {
                let n = s.nanos(t);
                assert!(n >= last);
                last = n;
            }
            assert_eq!(last, 40_000); // 99_999 ticks of 0.4 ns, rounded
        }

        #[test]
        fn implausible_readings_are_rejected() {
            assert_eq!(Scale::measure(10, 10, 5), None);
            assert_eq!(Scale::measure(10, 5, 5), None);
            // 1 tick in 10 ms: 100 Hz.
            assert_eq!(Scale::measure(0, 1, 10_000_000), None);
            // 10^12 ticks in 1 ms: 10^15 Hz.
            assert_eq!(Scale::measure(0, 1_000_000_000_000, 1_000_000), None);
            assert!(Scale::measure(0, 3_000_000, 1_000_000).is_some());
        }
    }
}
