//! Analysis of a log: totals, per-thread figures and the most expensive conflicts.
//!
//! # Accounting
//!
//! - An aborted attempt's whole duration (its `lost` time, including any pause inside it) is
//!   charged to the conflict that killed it, grouped by (kind, this location, other location).
//! - A pause (from a pause start to the matching pause end on the same thread) is charged as
//!   "paused" to the conflict it waited for, whatever became of the attempt afterwards. A pause
//!   still open when the log ends is charged up to the last time in the log.
//! - Groups are sorted by lost + paused time, most expensive first.
//! - Aborts that are not conflicts (`retry`, a user error, a panic) are counted separately and
//!   charged to no conflict.

use crate::format::{AbortReason, ConflictSides, LocationId, Record};
use crate::json::Value;
use crate::reader::{LogReader, ReadError};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use stm_core::ConflictKind;

/// A source location, resolved from the log's location table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file, as the compiler named it (usually relative to the workspace root).
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
    /// The line of source text, or why there is none, once [`Report::attach_sources`] looked.
    pub source: Option<SourceLine>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// What [`Report::attach_sources`] found for one location.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceLine {
    /// The line of text (without its line break), when the file was found and has that line.
    pub text: Option<String>,
    /// The file that was read, when one was found.
    pub path: Option<PathBuf>,
    /// Why there is no text, or why it may not be the line that ran: `changed since the log was
    /// recorded` (the file was modified after the recording started), `source file not found`,
    /// ...
    pub note: Option<String>,
}

/// The conflicts of one kind between the same two source locations.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictGroup {
    /// `WRITE_WRITE`, `WRITE_READ` or `INEVITABLE`.
    pub kind: ConflictKind,
    /// Where the aborted (or paused) transaction touched the word; `None` when unknown.
    pub this: Option<Location>,
    /// Where the other transaction touched it; `None` when unknown.
    pub other: Option<Location>,
    /// Conflict events in the group: aborts plus pauses.
    pub count: u64,
    /// Attempts aborted (timed or not).
    pub aborts: u64,
    /// Of [`aborts`](Self::aborts), those of attempts the runtime did not time: their lost time
    /// is unknown and not in [`lost_ns`](Self::lost_ns).
    pub untimed_aborts: u64,
    /// Pauses.
    pub pauses: u64,
    /// Nanoseconds of aborted (timed) attempts.
    pub lost_ns: u64,
    /// Nanoseconds paused.
    pub paused_ns: u64,
}

impl ConflictGroup {
    /// Lost plus paused nanoseconds: the sort key.
    pub fn cost_ns(&self) -> u64 {
        self.lost_ns.saturating_add(self.paused_ns)
    }
}

/// Figures for one thread.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadTotals {
    /// The runtime's id of the thread.
    pub thread: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts committed.
    pub commits: u64,
    /// Of [`commits`](Self::commits), those the runtime did not time.
    pub untimed_commits: u64,
    /// Attempts aborted by a conflict.
    pub aborts: u64,
    /// Of [`aborts`](Self::aborts), those the runtime did not time.
    pub untimed_aborts: u64,
    /// Nanoseconds in timed committed attempts.
    pub committed_ns: u64,
    /// [`committed_ns`](Self::committed_ns) plus, for each untimed commit, the mean duration of
    /// this thread's timed commits (of every thread's, if this one has none): the estimated
    /// time in all committed attempts. Equal to `committed_ns` when every commit was timed.
    pub committed_estimated_ns: u64,
    /// Nanoseconds in attempts aborted by a conflict (timed ones).
    pub lost_ns: u64,
    /// Nanoseconds paused.
    pub paused_ns: u64,
}

/// Where reading stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The byte offset.
    pub offset: Option<u64>,
    /// The reader's message.
    pub message: String,
}

/// Where the recording process ran: its [`Record::Process`] (format version 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its working directory (empty when unknown).
    pub cwd: PathBuf,
    /// Its executable (empty when unknown).
    pub exe: PathBuf,
}

/// The analysis of a log. Build it with [`Report::from_path`], [`Report::from_reader`] or
/// [`Report::from_records`]; print it with [`Report::render_text`] or [`Report::to_json`].
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Time of the first record (nanoseconds since the recorder started).
    pub start_ns: u64,
    /// Nanoseconds from the first to the last record.
    pub wall_ns: u64,
    /// Transactions finished: commits plus cancelled plus panicked.
    pub transactions: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts committed.
    pub commits: u64,
    /// Of which read-only.
    pub read_only_commits: u64,
    /// Of [`commits`](Self::commits), those the runtime did not time (see
    /// [`stm_core::Timing`]): counted, but their durations are estimated.
    pub untimed_commits: u64,
    /// Attempts aborted by a conflict.
    pub aborts: u64,
    /// Of [`aborts`](Self::aborts), those the runtime did not time: their lost time is unknown.
    pub untimed_aborts: u64,
    /// Aborts by kind: `WRITE_WRITE`, `WRITE_READ`, `INEVITABLE`.
    pub aborts_by_kind: [u64; 3],
    /// Conflict aborts divided by attempts that ended (commits + every kind of abort).
    pub abort_rate: f64,
    /// Attempts ended by `retry`.
    pub retries: u64,
    /// Attempts ended by a user error.
    pub cancels: u64,
    /// Attempts ended by a panic.
    pub panics: u64,
    /// Nanoseconds in (timed) attempts aborted by a conflict.
    pub lost_ns: u64,
    /// Nanoseconds paused.
    pub paused_ns: u64,
    /// Nanoseconds in timed committed attempts.
    pub committed_ns: u64,
    /// The estimated nanoseconds in all committed attempts: the sum of the threads'
    /// [`ThreadTotals::committed_estimated_ns`]. Equal to `committed_ns` when every commit was
    /// timed.
    pub committed_estimated_ns: u64,
    /// Nanoseconds in (timed) attempts ended by retry, cancel or panic.
    pub other_abort_ns: u64,
    /// Times a thread took the inevitable token.
    pub inevitable_runs: u64,
    /// Nanoseconds the inevitable token was held.
    pub inevitable_ns: u64,
    /// Figures per thread, by thread id.
    pub threads: Vec<ThreadTotals>,
    /// Conflict groups, most expensive first.
    pub conflicts: Vec<ConflictGroup>,
    /// Whether the log ends with the recorder's end record (it was closed cleanly).
    pub complete: bool,
    /// Where reading stopped early, if it did.
    pub damage: Option<Damage>,
    /// The file's header, when the report was read from a file.
    pub header: Option<crate::format::Header>,
    /// Where the recording process ran (format version 2 logs).
    pub process: Option<ProcessInfo>,
}

#[derive(Default)]
struct GroupAcc {
    aborts: u64,
    untimed: u64,
    pauses: u64,
    lost: u64,
    paused: u64,
}

type GroupKey = (ConflictKind, Option<LocationId>, Option<LocationId>);

/// Builds a [`Report`] from records fed one at a time.
#[derive(Default)]
pub struct ReportBuilder {
    records: u64,
    first: Option<u64>,
    last: u64,
    attempts: u64,
    commits: u64,
    read_only: u64,
    untimed_commits: u64,
    untimed_aborts: u64,
    aborts_by_kind: [u64; 3],
    retries: u64,
    cancels: u64,
    panics: u64,
    lost: u64,
    paused: u64,
    committed: u64,
    other_abort: u64,
    inevitable_runs: u64,
    inevitable_ns: u64,
    threads: HashMap<u64, ThreadTotals>,
    groups: HashMap<GroupKey, GroupAcc>,
    locations: HashMap<LocationId, Location>,
    /// Open pause per thread: start time and conflict.
    open_pause: HashMap<u64, (u64, ConflictSides)>,
    /// Open inevitable run per thread: start time.
    open_inevitable: HashMap<u64, u64>,
    complete: bool,
    process: Option<ProcessInfo>,
}

impl std::fmt::Debug for ReportBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportBuilder")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

fn kind_index(k: ConflictKind) -> usize {
    match k {
        ConflictKind::WriteWrite => 0,
        ConflictKind::WriteRead => 1,
        ConflictKind::Inevitable => 2,
    }
}

impl ReportBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn thread(&mut self, t: u64) -> &mut ThreadTotals {
        self.threads.entry(t).or_insert_with(|| ThreadTotals {
            thread: t,
            ..ThreadTotals::default()
        })
    }

    fn group(&mut self, c: &ConflictSides) -> &mut GroupAcc {
        self.groups.entry((c.kind, c.this, c.other)).or_default()
    }

    fn charge_pause(&mut self, thread: u64, c: &ConflictSides, paused: u64) {
        self.paused = self.paused.saturating_add(paused);
        let t = self.thread(thread);
        t.paused_ns = t.paused_ns.saturating_add(paused);
        let g = self.group(c);
        g.pauses += 1;
        g.paused = g.paused.saturating_add(paused);
    }

    /// Accounts for one record.
    pub fn add(&mut self, r: &Record) {
        self.records += 1;
        if let Some(t) = r.time() {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = self.last.max(t);
        }
        match *r {
            Record::Location {
                id,
                ref file,
                line,
                column,
            } => {
                self.locations.insert(
                    id,
                    Location {
                        file: file.clone(),
                        line,
                        column,
                        source: None,
                    },
                );
            }
            Record::Process { ref cwd, ref exe } => {
                self.process = Some(ProcessInfo {
                    cwd: cwd.clone(),
                    exe: exe.clone(),
                });
            }
            Record::Start { thread, .. } => {
                self.attempts += 1;
                self.thread(thread).attempts += 1;
            }
            Record::Commit {
                thread,
                read_only,
                duration,
                ..
            } => {
                self.commits += 1;
                self.read_only += u64::from(read_only);
                self.committed = self.committed.saturating_add(duration);
                let t = self.thread(thread);
                t.commits += 1;
                t.committed_ns = t.committed_ns.saturating_add(duration);
            }
            Record::UntimedCommit { thread, read_only } => {
                // An untimed attempt has no start record: it is counted here.
                self.attempts += 1;
                self.commits += 1;
                self.untimed_commits += 1;
                self.read_only += u64::from(read_only);
                let t = self.thread(thread);
                t.attempts += 1;
                t.commits += 1;
                t.untimed_commits += 1;
            }
            Record::Abort {
                thread,
                reason,
                conflict,
                lost,
                ..
            } => self.abort(thread, reason, conflict, Some(lost)),
            Record::UntimedAbort {
                thread,
                reason,
                conflict,
                ..
            } => {
                self.attempts += 1;
                self.thread(thread).attempts += 1;
                self.abort(thread, reason, conflict, None);
            }
            Record::PauseStart {
                thread,
                time,
                conflict,
            } => {
                // A pause start while one is open means the end was lost: charge the open one
                // up to here.
                if let Some((t0, c)) = self.open_pause.insert(thread, (time, conflict)) {
                    self.charge_pause(thread, &c, time.saturating_sub(t0));
                }
            }
            Record::PauseEnd {
                thread,
                conflict,
                paused,
                ..
            } => {
                self.open_pause.remove(&thread);
                self.charge_pause(thread, &conflict, paused);
            }
            Record::InevitableBegin { thread, time } => {
                self.inevitable_runs += 1;
                self.open_inevitable.insert(thread, time);
            }
            Record::InevitableEnd { thread, time } => {
                if let Some(t0) = self.open_inevitable.remove(&thread) {
                    self.inevitable_ns = self.inevitable_ns.saturating_add(time.saturating_sub(t0));
                }
            }
            Record::End { .. } => self.complete = true,
        }
    }

    /// An abort; `lost` is `None` for an untimed one.
    fn abort(
        &mut self,
        thread: u64,
        reason: AbortReason,
        conflict: Option<ConflictSides>,
        lost: Option<u64>,
    ) {
        let untimed = u64::from(lost.is_none());
        let lost = lost.unwrap_or(0);
        match reason {
            AbortReason::Conflict(kind) => {
                self.aborts_by_kind[kind_index(kind)] += 1;
                self.lost = self.lost.saturating_add(lost);
                self.untimed_aborts += untimed;
                let t = self.thread(thread);
                t.aborts += 1;
                t.untimed_aborts += untimed;
                t.lost_ns = t.lost_ns.saturating_add(lost);
                let sides = conflict.unwrap_or(ConflictSides {
                    kind,
                    this: None,
                    other: None,
                    other_thread: None,
                });
                // The reason is authoritative for the kind.
                let g = self.group(&ConflictSides { kind, ..sides });
                g.aborts += 1;
                g.untimed += untimed;
                g.lost = g.lost.saturating_add(lost);
            }
            AbortReason::Retry | AbortReason::Cancel | AbortReason::Panic => {
                match reason {
                    AbortReason::Retry => self.retries += 1,
                    AbortReason::Cancel => self.cancels += 1,
                    _ => self.panics += 1,
                }
                self.other_abort = self.other_abort.saturating_add(lost);
            }
        }
    }

    /// The report, with `damage` when reading stopped early.
    pub fn finish(mut self, damage: Option<&ReadError>) -> Report {
        let last = self.last;
        for (thread, (t0, c)) in std::mem::take(&mut self.open_pause) {
            self.charge_pause(thread, &c, last.saturating_sub(t0));
        }
        for (_, t0) in std::mem::take(&mut self.open_inevitable) {
            self.inevitable_ns = self.inevitable_ns.saturating_add(last.saturating_sub(t0));
        }
        let resolve = |id: Option<LocationId>| {
            id.map(|id| {
                self.locations.get(&id).cloned().unwrap_or(Location {
                    file: format!("<location #{id} missing from the log>"),
                    line: 0,
                    column: 0,
                    source: None,
                })
            })
        };
        // Merge groups whose locations resolve equal (ids are unique per file, but a damaged or
        // hand-written file may define one location twice).
        let mut merged: HashMap<(ConflictKind, Option<Location>, Option<Location>), GroupAcc> =
            HashMap::new();
        for ((kind, this, other), g) in &self.groups {
            let m = merged
                .entry((*kind, resolve(*this), resolve(*other)))
                .or_default();
            m.aborts += g.aborts;
            m.untimed += g.untimed;
            m.pauses += g.pauses;
            m.lost = m.lost.saturating_add(g.lost);
            m.paused = m.paused.saturating_add(g.paused);
        }
        let mut conflicts: Vec<ConflictGroup> = merged
            .into_iter()
            .map(|((kind, this, other), g)| ConflictGroup {
                kind,
                this,
                other,
                count: g.aborts + g.pauses,
                aborts: g.aborts,
                untimed_aborts: g.untimed,
                pauses: g.pauses,
                lost_ns: g.lost,
                paused_ns: g.paused,
            })
            .collect();
        conflicts.sort_by(|a, b| {
            b.cost_ns()
                .cmp(&a.cost_ns())
                .then(b.count.cmp(&a.count))
                .then_with(|| (a.kind, &a.this, &a.other).cmp(&(b.kind, &b.this, &b.other)))
        });
        let mut threads: Vec<ThreadTotals> = self.threads.into_values().collect();
        threads.sort_by_key(|t| t.thread);
        // Untimed commits are charged the mean duration of their thread's timed commits (of
        // every thread's when it has none).
        let mean = |ns: u64, timed: u64| (timed > 0).then(|| ns as f64 / timed as f64);
        let overall = mean(self.committed, self.commits - self.untimed_commits).unwrap_or(0.0);
        let mut committed_estimated: u64 = 0;
        for t in &mut threads {
            let m = mean(t.committed_ns, t.commits - t.untimed_commits).unwrap_or(overall);
            let estimate = (m * t.untimed_commits as f64).round() as u64;
            t.committed_estimated_ns = t.committed_ns.saturating_add(estimate);
            committed_estimated = committed_estimated.saturating_add(t.committed_estimated_ns);
        }
        let aborts: u64 = self.aborts_by_kind.iter().sum();
        let ended = self.commits + aborts + self.retries + self.cancels + self.panics;
        Report {
            records: self.records,
            start_ns: self.first.unwrap_or(0),
            wall_ns: self.first.map_or(0, |f| self.last - f),
            transactions: self.commits + self.cancels + self.panics,
            attempts: self.attempts,
            commits: self.commits,
            read_only_commits: self.read_only,
            untimed_commits: self.untimed_commits,
            aborts,
            untimed_aborts: self.untimed_aborts,
            aborts_by_kind: self.aborts_by_kind,
            abort_rate: if ended == 0 {
                0.0
            } else {
                aborts as f64 / ended as f64
            },
            retries: self.retries,
            cancels: self.cancels,
            panics: self.panics,
            lost_ns: self.lost,
            paused_ns: self.paused,
            committed_ns: self.committed,
            committed_estimated_ns: committed_estimated,
            other_abort_ns: self.other_abort,
            inevitable_runs: self.inevitable_runs,
            inevitable_ns: self.inevitable_ns,
            threads,
            conflicts,
            complete: self.complete,
            header: None,
            process: self.process,
            damage: damage.map(|e| Damage {
                offset: e.offset(),
                message: e.to_string(),
            }),
        }
    }
}

/// Formats nanoseconds as seconds: three decimals from 10 ms up, six below (so that small costs
/// do not all print as `0.000s`).
pub fn secs(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if ns >= 10_000_000 || ns == 0 {
        format!("{s:.3}s")
    } else {
        format!("{s:.6}s")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for nanoseconds since the Unix epoch.
pub fn utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), for days >= 0.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

impl Report {
    /// Reads the log at `path`. A file that is not a log, or of a newer version, is an error;
    /// a truncated or damaged one gives the report of every record before the damage, with
    /// [`Report::damage`] set.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Report, ReadError> {
        Self::from_reader(LogReader::open(path)?)
    }

    /// Reads every record of `reader` (see [`Report::from_path`]).
    pub fn from_reader<R: Read>(reader: LogReader<R>) -> Result<Report, ReadError> {
        let header = *reader.header();
        let mut b = ReportBuilder::new();
        let mut damage = None;
        for r in reader {
            match r {
                Ok(r) => b.add(&r),
                Err(e) if e.is_partial() => {
                    damage = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let mut report = b.finish(damage.as_ref());
        report.header = Some(header);
        Ok(report)
    }

    /// The report of `records`.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Report {
        let mut b = ReportBuilder::new();
        for r in records {
            b.add(r);
        }
        b.finish(None)
    }

    /// Keeps only the `top` most expensive conflict groups.
    pub fn truncate(&mut self, top: usize) {
        self.conflicts.truncate(top);
    }

    /// Fills [`Location::source`] of every conflict location: the line of text, where it was
    /// read, or why it was not.
    ///
    /// A file name as the compiler wrote it is usually relative (to the crate's or the
    /// workspace's root). It is looked for under `source_root` first, when given; then, for a
    /// log that names the recording process's working directory and executable (format version
    /// 2), under that directory and each of its parents, then under the executable's folder and
    /// each of its parents; then under the current directory. The first regular file found is
    /// read. A file modified after the log's recording started is still shown, with the note
    /// `changed since the log was recorded`.
    pub fn attach_sources(&mut self, source_root: Option<&Path>) {
        let mut files = SourceCache::new(self, source_root);
        for g in &mut self.conflicts {
            for loc in [&mut g.this, &mut g.other].into_iter().flatten() {
                loc.source = Some(files.line(&loc.file, loc.line));
            }
        }
    }

    /// The report as pretty-printed JSON: every field of [`Report`] under its own name (a
    /// location's [`SourceLine`] as `source` (the text), `source_path` and `source_note`, each
    /// present when known); durations in integer nanoseconds, the kind of a conflict as its
    /// name (`"WRITE_READ"`).
    pub fn to_json(&self) -> String {
        self.json().pretty()
    }

    fn json(&self) -> Value {
        use Value::{Arr, Bool, F64, Null, Obj, Str, U64};
        let location = |l: &Location| {
            let mut o = vec![
                ("file", Str(l.file.clone())),
                ("line", U64(u64::from(l.line))),
                ("column", U64(u64::from(l.column))),
            ];
            if let Some(s) = &l.source {
                if let Some(t) = &s.text {
                    o.push(("source", Str(t.clone())));
                }
                if let Some(p) = &s.path {
                    o.push(("source_path", Str(p.display().to_string())));
                }
                if let Some(n) = &s.note {
                    o.push(("source_note", Str(n.clone())));
                }
            }
            Obj(o)
        };
        let threads = self
            .threads
            .iter()
            .map(|t| {
                Obj(vec![
                    ("thread", U64(t.thread)),
                    ("attempts", U64(t.attempts)),
                    ("commits", U64(t.commits)),
                    ("untimed_commits", U64(t.untimed_commits)),
                    ("aborts", U64(t.aborts)),
                    ("untimed_aborts", U64(t.untimed_aborts)),
                    ("committed_ns", U64(t.committed_ns)),
                    ("committed_estimated_ns", U64(t.committed_estimated_ns)),
                    ("lost_ns", U64(t.lost_ns)),
                    ("paused_ns", U64(t.paused_ns)),
                ])
            })
            .collect();
        let conflicts = self
            .conflicts
            .iter()
            .map(|g| {
                Obj(vec![
                    ("kind", Str(g.kind.name().to_string())),
                    ("this", Value::opt(g.this.as_ref(), location)),
                    ("other", Value::opt(g.other.as_ref(), location)),
                    ("count", U64(g.count)),
                    ("aborts", U64(g.aborts)),
                    ("untimed_aborts", U64(g.untimed_aborts)),
                    ("pauses", U64(g.pauses)),
                    ("lost_ns", U64(g.lost_ns)),
                    ("paused_ns", U64(g.paused_ns)),
                ])
            })
            .collect();
        Obj(vec![
            ("records", U64(self.records)),
            ("start_ns", U64(self.start_ns)),
            ("wall_ns", U64(self.wall_ns)),
            ("transactions", U64(self.transactions)),
            ("attempts", U64(self.attempts)),
            ("commits", U64(self.commits)),
            ("read_only_commits", U64(self.read_only_commits)),
            ("untimed_commits", U64(self.untimed_commits)),
            ("aborts", U64(self.aborts)),
            ("untimed_aborts", U64(self.untimed_aborts)),
            (
                "aborts_by_kind",
                Arr(self.aborts_by_kind.iter().map(|&n| U64(n)).collect()),
            ),
            ("abort_rate", F64(self.abort_rate)),
            ("retries", U64(self.retries)),
            ("cancels", U64(self.cancels)),
            ("panics", U64(self.panics)),
            ("lost_ns", U64(self.lost_ns)),
            ("paused_ns", U64(self.paused_ns)),
            ("committed_ns", U64(self.committed_ns)),
            ("committed_estimated_ns", U64(self.committed_estimated_ns)),
            ("other_abort_ns", U64(self.other_abort_ns)),
            ("inevitable_runs", U64(self.inevitable_runs)),
            ("inevitable_ns", U64(self.inevitable_ns)),
            ("threads", Arr(threads)),
            ("conflicts", Arr(conflicts)),
            ("complete", Bool(self.complete)),
            (
                "damage",
                Value::opt(self.damage.as_ref(), |d| {
                    Obj(vec![
                        ("offset", Value::opt(d.offset, U64)),
                        ("message", Str(d.message.clone())),
                    ])
                }),
            ),
            (
                "header",
                Value::opt(self.header.as_ref(), |h| {
                    Obj(vec![
                        ("version", U64(u64::from(h.version))),
                        ("pid", U64(u64::from(h.pid))),
                        ("start_unix_ns", U64(h.start_unix_ns)),
                    ])
                }),
            ),
            (
                "process",
                match &self.process {
                    None => Null,
                    Some(p) => Obj(vec![
                        ("cwd", Str(p.cwd.display().to_string())),
                        ("exe", Str(p.exe.display().to_string())),
                    ]),
                },
            ),
        ])
    }

    /// The report as text: totals, per-thread figures, then the `top` most expensive conflicts,
    /// each with both locations and the line of source under each (see
    /// [`Report::attach_sources`] for where it looks, and the notes it adds).
    pub fn render_text(&self, top: usize, source_root: Option<&Path>) -> String {
        let mut files = SourceCache::new(self, source_root);
        let mut o = String::new();
        let pct = |n: u64, d: u64| {
            if d == 0 {
                0.0
            } else {
                100.0 * n as f64 / d as f64
            }
        };
        if let Some(h) = &self.header {
            let _ = writeln!(
                o,
                "log of process {}, recorded from {} (format version {})",
                h.pid,
                utc(h.start_unix_ns),
                h.version
            );
        }
        if let Some(p) = &self.process {
            let _ = writeln!(o, "recorded in {}", p.cwd.display());
        }
        let _ = writeln!(
            o,
            "wall time {}, {} records{}",
            secs(self.wall_ns),
            self.records,
            if self.complete {
                ""
            } else {
                " (no end record: the log was not closed cleanly)"
            }
        );
        let _ = writeln!(
            o,
            "transactions {}: {} commits ({} read-only), {} attempts",
            self.transactions, self.commits, self.read_only_commits, self.attempts
        );
        let _ = writeln!(
            o,
            "aborts {} (abort rate {:.1}%): {} WRITE_WRITE, {} WRITE_READ, {} INEVITABLE; \
             {} retries, {} cancelled, {} panicked",
            self.aborts,
            100.0 * self.abort_rate,
            self.aborts_by_kind[0],
            self.aborts_by_kind[1],
            self.aborts_by_kind[2],
            self.retries,
            self.cancels,
            self.panics
        );
        let _ = writeln!(
            o,
            "time lost in aborts {}{}, paused {}, in committed attempts {}",
            secs(self.lost_ns),
            untimed_note(self.untimed_aborts),
            secs(self.paused_ns),
            committed(self.committed_estimated_ns, self.untimed_commits)
        );
        if self.untimed_commits > 0 {
            let _ = writeln!(
                o,
                "  (~: estimated; {} of {} commits were not timed, each counted at its thread's \
                 mean timed commit)",
                self.untimed_commits, self.commits
            );
        }
        let _ = writeln!(
            o,
            "inevitable: {} runs, token held {}",
            self.inevitable_runs,
            secs(self.inevitable_ns)
        );
        if !self.threads.is_empty() {
            let _ = writeln!(o, "\nper thread:");
            let _ = writeln!(
                o,
                "  {:>6} {:>10} {:>10} {:>8} {:>7} {:>12} {:>12} {:>12}",
                "thread", "attempts", "commits", "aborts", "rate", "lost", "paused", "committed"
            );
            for t in &self.threads {
                let ended = t.commits + t.aborts;
                let _ = writeln!(
                    o,
                    "  {:>6} {:>10} {:>10} {:>8} {:>6.1}% {:>12} {:>12} {:>12}",
                    t.thread,
                    t.attempts,
                    t.commits,
                    t.aborts,
                    pct(t.aborts, ended),
                    secs(t.lost_ns),
                    secs(t.paused_ns),
                    committed(t.committed_estimated_ns, t.untimed_commits)
                );
            }
        }
        let shown = self.conflicts.len().min(top);
        if self.conflicts.is_empty() {
            let _ = writeln!(o, "\nno conflicts");
        } else {
            let _ = writeln!(
                o,
                "\nmost expensive conflicts ({shown} of {}):",
                self.conflicts.len()
            );
        }
        for g in self.conflicts.iter().take(top) {
            let _ = writeln!(
                o,
                "\n{} lost in aborts{}, {} paused ({}x {})",
                secs(g.lost_ns),
                untimed_note(g.untimed_aborts),
                secs(g.paused_ns),
                g.count,
                g.kind.name()
            );
            for loc in [&g.this, &g.other] {
                match loc {
                    None => {
                        let _ = writeln!(o, "  (location unknown)");
                    }
                    Some(l) => {
                        let _ = writeln!(o, "  {l}");
                        let found;
                        let s = match &l.source {
                            Some(s) => s,
                            None => {
                                found = files.line(&l.file, l.line);
                                &found
                            }
                        };
                        match (&s.text, &s.note) {
                            (Some(text), None) => {
                                let _ = writeln!(o, "      {}", text.trim());
                            }
                            (Some(text), Some(note)) => {
                                let _ = writeln!(o, "      {}    ({note})", text.trim());
                            }
                            (None, Some(note)) => {
                                let _ = writeln!(o, "      ({note})");
                            }
                            (None, None) => {}
                        }
                    }
                }
            }
        }
        if let Some(d) = &self.damage {
            let _ = writeln!(o, "\nwarning: {}", d.message);
        }
        o
    }
}

/// ` (and N untimed aborts)` when there are any: their lost time is not in the figure.
fn untimed_note(n: u64) -> String {
    match n {
        0 => String::new(),
        1 => " (and 1 untimed abort)".to_string(),
        n => format!(" (and {n} untimed aborts)"),
    }
}

/// A committed time, marked `~` when some of it is estimated.
fn committed(ns: u64, untimed: u64) -> String {
    if untimed > 0 {
        format!("~{}", secs(ns))
    } else {
        secs(ns)
    }
}

/// Largest source file the report reads.
const MAX_SOURCE: u64 = 16 << 20;

/// Finds and reads source files, once each (see [`Report::attach_sources`]).
struct SourceCache {
    /// Where relative names are looked for, in order.
    bases: Vec<PathBuf>,
    /// When the recording started: a file modified later may no longer hold the line that ran.
    recorded: Option<SystemTime>,
    files: HashMap<String, Result<SourceFile, String>>,
}

struct SourceFile {
    path: PathBuf,
    lines: Vec<String>,
    changed: bool,
}

impl SourceCache {
    fn new(report: &Report, root: Option<&Path>) -> Self {
        let mut bases: Vec<PathBuf> = root.map(Path::to_path_buf).into_iter().collect();
        if let Some(p) = &report.process {
            if p.cwd.is_absolute() {
                bases.extend(p.cwd.ancestors().map(Path::to_path_buf));
            }
            if let Some(dir) = p.exe.parent().filter(|d| d.is_absolute()) {
                bases.extend(dir.ancestors().map(Path::to_path_buf));
            }
        }
        bases.push(PathBuf::new()); // the current directory
        let mut seen = std::collections::HashSet::new();
        bases.retain(|b| seen.insert(b.clone()));
        SourceCache {
            bases,
            recorded: report
                .header
                .map(|h| SystemTime::UNIX_EPOCH + Duration::from_nanos(h.start_unix_ns)),
            files: HashMap::new(),
        }
    }

    fn open(&self, file: &str) -> Result<SourceFile, String> {
        // An absolute name ignores the base (`join` replaces it).
        for base in &self.bases {
            let p = base.join(file);
            // Only regular files: a name in a damaged log could point anywhere (a FIFO, a device).
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_SOURCE {
                return Err(format!(
                    "{} is larger than {} MiB: not read",
                    p.display(),
                    MAX_SOURCE >> 20
                ));
            }
            let text =
                std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let text = String::from_utf8_lossy(&text);
            let changed = match (self.recorded, meta.modified()) {
                (Some(rec), Ok(m)) => m > rec,
                _ => false,
            };
            let path = if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map_or(p.clone(), |d| d.join(&p))
            };
            return Ok(SourceFile {
                path,
                lines: text.lines().map(str::to_owned).collect(),
                changed,
            });
        }
        Err("source file not found; --source-root DIR says where to look".to_string())
    }

    fn line(&mut self, file: &str, line: u32) -> SourceLine {
        if !self.files.contains_key(file) {
            let f = self.open(file);
            self.files.insert(file.to_owned(), f);
        }
        match &self.files[file] {
            Err(why) => SourceLine {
                text: None,
                path: None,
                note: Some(why.clone()),
            },
            Ok(f) => {
                let text = usize::try_from(line)
                    .ok()
                    .and_then(|l| l.checked_sub(1))
                    .and_then(|i| f.lines.get(i))
                    .cloned();
                let note = match (&text, f.changed) {
                    (Some(_), false) => None,
                    (Some(_), true) => Some("changed since the log was recorded".to_string()),
                    (None, changed) => Some(format!(
                        "{} has no line {line}{}",
                        f.path.display(),
                        if changed {
                            ": changed since the log was recorded"
                        } else {
                            ""
                        }
                    )),
                };
                SourceLine {
                    text,
                    path: Some(f.path.clone()),
                    note,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_178_201_500_000_000), "2025-11-26 17:30:01 UTC");
        // The largest u64 is in 2554; no overflow.
        assert_eq!(utc(u64::MAX), "2554-07-21 23:34:33 UTC");
    }

    #[test]
    fn secs_formats() {
        assert_eq!(secs(0), "0.000s");
        assert_eq!(secs(12_000_000), "0.012s");
        assert_eq!(secs(14_793_000_000), "14.793s");
        assert_eq!(secs(1_234), "0.000001s");
    }
}
