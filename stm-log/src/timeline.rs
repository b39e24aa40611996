//! The time line behind `stm-log timeline`: one lane per thread over time, with committed work,
//! aborted work and paused time in three colours, and the worst conflicts marked.
//!
//! The time axis is cut into one bin per horizontal pixel column; each bin of each lane is a
//! stacked bar whose heights are the fractions of the bin the thread spent paused, in attempts
//! that aborted, and in attempts that committed (pauses are taken out of the attempt that
//! contained them, so nothing is counted twice). Runs of equal bars are merged, so the SVG stays
//! small however long the log. Every abort or pause of one of the `marks` most expensive
//! conflict groups puts a numbered triangle over its lane, and the legend names the group.
//!
//! Commits that the runtime did not time (format version 2, see [`stm_core::Timing`]) have no
//! place in time of their own: each is drawn as its thread's mean timed commit, spread evenly
//! over the time between the thread's records before and after it.

use crate::format::{ConflictSides, LocationId, Record};
use crate::reader::{LogReader, ReadError};
use crate::report::{Location, Report, secs};
use plotters::prelude::*;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use stm_core::ConflictKind;

/// Narrowest and widest picture drawn (the width is clamped to this range).
pub const MIN_WIDTH: u32 = 400;
/// See [`MIN_WIDTH`].
pub const MAX_WIDTH: u32 = 16_000;
/// Most lanes drawn: the threads with the most attempts.
pub const MAX_LANES: usize = 64;

/// How to draw the time line.
#[derive(Clone, Copy, Debug)]
pub struct TimelineOptions {
    /// Width of the picture in pixels (clamped to [`MIN_WIDTH`]..=[`MAX_WIDTH`]).
    pub width: u32,
    /// How many of the most expensive conflict groups to mark.
    pub marks: usize,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        TimelineOptions {
            width: 1400,
            marks: 3,
        }
    }
}

/// Why a time line could not be drawn.
#[derive(Debug)]
#[non_exhaustive]
pub enum TimelineError {
    /// The log could not be read (not a log, newer version, I/O).
    Read(ReadError),
    /// The log holds no transaction.
    Empty,
    /// Drawing or writing the SVG failed.
    Draw(String),
}

impl fmt::Display for TimelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineError::Read(e) => e.fmt(f),
            TimelineError::Empty => f.write_str("the log holds no transaction: nothing to draw"),
            TimelineError::Draw(e) => write!(f, "cannot draw the time line: {e}"),
        }
    }
}

impl std::error::Error for TimelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TimelineError::Read(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ReadError> for TimelineError {
    fn from(e: ReadError) -> Self {
        TimelineError::Read(e)
    }
}

/// What was drawn.
#[derive(Clone, Debug)]
pub struct TimelineSummary {
    /// Lanes (threads) drawn.
    pub lanes: usize,
    /// Threads left out (beyond [`MAX_LANES`], the least busy).
    pub omitted_threads: usize,
    /// Conflict marks drawn (after merging marks that fall on the same pixel).
    pub marks: usize,
    /// The damage that stopped reading early, if any (the picture shows what came before).
    pub damage: Option<String>,
}

const COMMITTED: RGBColor = RGBColor(46, 160, 67);
const ABORTED: RGBColor = RGBColor(214, 39, 40);
const PAUSED: RGBColor = RGBColor(255, 153, 0);
const IDLE: RGBColor = RGBColor(238, 238, 238);
const MARK: [RGBColor; 5] = [
    RGBColor(0, 0, 0),
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// Time per bin of one lane, in nanoseconds, by state.
struct Lane {
    committed: Vec<f64>,
    aborted: Vec<f64>,
    paused: Vec<f64>,
    /// Time of the open attempt's start record, and pauses inside it.
    pauses_in_attempt: Vec<(u64, u64)>,
    open_pause: Option<u64>,
    /// The time of this thread's last record that had one.
    last_time: Option<u64>,
    /// Untimed commits since `last_time`, not drawn yet.
    untimed: u64,
    /// The mean duration of this thread's timed commits (nanoseconds).
    mean_commit: f64,
}

impl Lane {
    /// Draws the untimed commits since the last record with a time, over the time from that
    /// record to `t`, and moves on to `t`.
    fn timed(&mut self, binner: &Binner, t: u64) {
        if self.untimed > 0 {
            let s = self.last_time.unwrap_or(binner.start).min(t);
            let len = (t - s) as f64;
            if len > 0.0 {
                let share = (self.untimed as f64 * self.mean_commit / len).min(1.0);
                binner.spread(&mut self.committed, s, t, share);
            }
            self.untimed = 0;
        }
        self.last_time = Some(self.last_time.map_or(t, |l| l.max(t)));
    }
}

struct Binner {
    start: u64,
    bin_ns: f64,
    bins: usize,
}

impl Binner {
    /// Adds `weight` times the part of `[s, e)` that falls in each bin to `acc`.
    fn spread(&self, acc: &mut [f64], s: u64, e: u64, weight: f64) {
        if e <= s {
            return;
        }
        let a = (s.saturating_sub(self.start)) as f64 / self.bin_ns;
        let b = (e.saturating_sub(self.start)) as f64 / self.bin_ns;
        let first = (a.floor() as usize).min(self.bins - 1);
        let last = (b.ceil() as usize).clamp(first + 1, self.bins);
        for (i, slot) in acc.iter_mut().enumerate().take(last).skip(first) {
            let lo = a.max(i as f64);
            let hi = b.min(i as f64 + 1.0);
            if hi > lo {
                *slot += weight * (hi - lo) * self.bin_ns;
            }
        }
    }

    fn bin(&self, t: u64) -> usize {
        ((t.saturating_sub(self.start) as f64 / self.bin_ns) as usize).min(self.bins - 1)
    }
}

type Key = (ConflictKind, Option<Location>, Option<Location>);

fn key_of(g: &crate::report::ConflictGroup) -> Key {
    let strip = |l: &Option<Location>| {
        l.clone().map(|mut l| {
            l.source = None;
            l
        })
    };
    (g.kind, strip(&g.this), strip(&g.other))
}

/// Draws the time line of the log at `log` into the SVG file `out`.
pub fn render_svg(
    log: &Path,
    out: &Path,
    opts: TimelineOptions,
) -> Result<TimelineSummary, TimelineError> {
    let report = Report::from_path(log)?;
    if report.attempts == 0 && report.commits == 0 {
        return Err(TimelineError::Empty);
    }
    let width = opts.width.clamp(MIN_WIDTH, MAX_WIDTH);
    // The busiest threads, shown in id order.
    let mut busiest: Vec<&crate::report::ThreadTotals> = report.threads.iter().collect();
    busiest.sort_by_key(|t| std::cmp::Reverse(t.attempts));
    busiest.truncate(MAX_LANES);
    let mut lanes_ids: Vec<u64> = busiest.iter().map(|t| t.thread).collect();
    lanes_ids.sort_unstable();
    let omitted = report.threads.len() - lanes_ids.len();
    let lane_of: HashMap<u64, usize> = lanes_ids.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let marked: Vec<Key> = report
        .conflicts
        .iter()
        .take(opts.marks)
        .map(key_of)
        .collect();

    let plot_w = (width - 150) as usize;
    let binner = Binner {
        start: report.start_ns,
        bin_ns: (report.wall_ns.max(1) as f64) / plot_w as f64,
        bins: plot_w,
    };
    let mean = |ns: u64, timed: u64| (timed > 0).then(|| ns as f64 / timed as f64);
    let overall = mean(report.committed_ns, report.commits - report.untimed_commits).unwrap_or(0.0);
    let mut lanes: Vec<Lane> = lanes_ids
        .iter()
        .map(|id| {
            let t = report.threads.iter().find(|t| t.thread == *id);
            Lane {
                committed: vec![0.0; plot_w],
                aborted: vec![0.0; plot_w],
                paused: vec![0.0; plot_w],
                pauses_in_attempt: Vec::new(),
                open_pause: None,
                last_time: None,
                untimed: 0,
                mean_commit: t
                    .and_then(|t| mean(t.committed_ns, t.commits - t.untimed_commits))
                    .unwrap_or(overall),
            }
        })
        .collect();
    // (lane, bin, mark index)
    let mut marks: Vec<(usize, usize, usize)> = Vec::new();
    let mut locations: HashMap<LocationId, Location> = HashMap::new();
    let mark_of = |locations: &HashMap<LocationId, Location>, c: &ConflictSides| {
        let res = |id: Option<LocationId>| id.and_then(|i| locations.get(&i).cloned());
        let k: Key = (c.kind, res(c.this), res(c.other));
        marked.iter().position(|m| *m == k)
    };

    // Second pass: bin every attempt and pause.
    let mut damage = None;
    for r in LogReader::open(log)? {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                damage = Some(e.to_string());
                break;
            }
        };
        if let Some(t) = r.time() {
            let lane = match r {
                Record::End { .. } => None,
                Record::Start { thread, .. }
                | Record::Commit { thread, .. }
                | Record::Abort { thread, .. }
                | Record::UntimedAbort { thread, .. }
                | Record::PauseStart { thread, .. }
                | Record::PauseEnd { thread, .. }
                | Record::InevitableBegin { thread, .. }
                | Record::InevitableEnd { thread, .. } => lane_of.get(&thread),
                _ => None,
            };
            if let Some(&l) = lane {
                lanes[l].timed(&binner, t);
            }
        }
        match r {
            Record::Process { .. } => {}
            Record::UntimedCommit { thread, .. } => {
                if let Some(&l) = lane_of.get(&thread) {
                    lanes[l].untimed += 1;
                    lanes[l].pauses_in_attempt.clear();
                }
            }
            Record::UntimedAbort {
                thread,
                time,
                conflict,
                ..
            } => {
                if let Some(&l) = lane_of.get(&thread) {
                    lanes[l].pauses_in_attempt.clear();
                    if let Some(m) = conflict.as_ref().and_then(|c| mark_of(&locations, c)) {
                        marks.push((l, binner.bin(time), m));
                    }
                }
            }
            Record::Location {
                id,
                file,
                line,
                column,
            } => {
                locations.insert(
                    id,
                    Location {
                        file,
                        line,
                        column,
                        source: None,
                    },
                );
            }
            Record::Start { thread, .. } => {
                if let Some(&l) = lane_of.get(&thread) {
                    lanes[l].pauses_in_attempt.clear();
                }
            }
            Record::Commit {
                thread,
                time,
                duration,
                ..
            } => {
                if let Some(&l) = lane_of.get(&thread) {
                    let lane = &mut lanes[l];
                    binner.spread(
                        &mut lane.committed,
                        time.saturating_sub(duration),
                        time,
                        1.0,
                    );
                    for &(s, e) in &lane.pauses_in_attempt {
                        binner.spread(&mut lane.committed, s, e, -1.0);
                    }
                    lane.pauses_in_attempt.clear();
                }
            }
            Record::Abort {
                thread,
                time,
                lost,
                conflict,
                ..
            } => {
                if let Some(&l) = lane_of.get(&thread) {
                    let lane = &mut lanes[l];
                    binner.spread(&mut lane.aborted, time.saturating_sub(lost), time, 1.0);
                    for &(s, e) in &lane.pauses_in_attempt {
                        binner.spread(&mut lane.aborted, s, e, -1.0);
                    }
                    lane.pauses_in_attempt.clear();
                    if let Some(m) = conflict.as_ref().and_then(|c| mark_of(&locations, c)) {
                        marks.push((l, binner.bin(time), m));
                    }
                }
            }
            Record::PauseStart { thread, time, .. } => {
                if let Some(&l) = lane_of.get(&thread) {
                    lanes[l].open_pause = Some(time);
                }
            }
            Record::PauseEnd {
                thread,
                time,
                paused,
                conflict,
            } => {
                if let Some(&l) = lane_of.get(&thread) {
                    let lane = &mut lanes[l];
                    let s = lane
                        .open_pause
                        .take()
                        .unwrap_or(time.saturating_sub(paused));
                    binner.spread(&mut lane.paused, s, time, 1.0);
                    lane.pauses_in_attempt.push((s, time));
                    if let Some(m) = mark_of(&locations, &conflict) {
                        marks.push((l, binner.bin(time), m));
                    }
                }
            }
            Record::InevitableBegin { .. } | Record::InevitableEnd { .. } | Record::End { .. } => {}
        }
    }
    let end = report.start_ns.saturating_add(report.wall_ns);
    for lane in &mut lanes {
        lane.timed(&binner, end);
    }
    marks.sort_unstable();
    marks.dedup();
    draw(
        out, width, &report, &lanes_ids, &lanes, &binner, &marks, opts.marks,
    )
    .map_err(|e| TimelineError::Draw(format!("{}: {e}", out.display())))?;
    Ok(TimelineSummary {
        lanes: lanes.len(),
        omitted_threads: omitted,
        marks: marks.len(),
        damage,
    })
}

/// Heights are quantised to this many steps, so that neighbouring bins merge into one rectangle.
const STEPS: f64 = 40.0;

#[allow(clippy::too_many_arguments)]
fn draw(
    out: &Path,
    width: u32,
    report: &Report,
    lane_ids: &[u64],
    lanes: &[Lane],
    binner: &Binner,
    marks: &[(usize, usize, usize)],
    n_marks: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = lanes.len().max(1);
    let legend_lines = 2 + report.conflicts.len().min(n_marks) * 2;
    let chart_h = 90 + 36 * n as u32;
    let height = chart_h + 22 * legend_lines as u32 + 10;
    let root = SVGBackend::new(out, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(chart_h);
    let wall_s = (report.wall_ns.max(1) as f64) / 1e9;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "stm conflict time line: {} commits, {} aborts, {} lost, {} paused",
                report.commits,
                report.aborts,
                secs(report.lost_ns),
                secs(report.paused_ns)
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..wall_s, 0f64..n as f64)?;
    let lane_label = |y: &f64| {
        let i = y.floor() as usize;
        match lane_ids.get(i) {
            Some(t) if (y - y.floor() - 0.5).abs() < 1e-9 => format!("thread {t}"),
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(2 * n + 1)
        .y_label_formatter(&lane_label)
        .x_desc("seconds since the first record")
        .draw()?;
    let bin_s = binner.bin_ns / 1e9;
    let x_of = |bin: usize| bin as f64 * bin_s;
    for (li, lane) in lanes.iter().enumerate() {
        let y0 = li as f64 + 0.1;
        let h = 0.8;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y0), (wall_s, y0 + h)],
            IDLE.filled(),
        )))?;
        // Quantised (paused, aborted, committed) fractions per bin, merged into runs.
        let q = |v: f64| ((v / binner.bin_ns).clamp(0.0, 1.0) * STEPS).round() as u32;
        let mut rects = Vec::new();
        let mut run_start = 0usize;
        let mut prev: Option<(u32, u32, u32)> = None;
        for b in 0..=binner.bins {
            let cur = (b < binner.bins).then(|| {
                let p = q(lane.paused[b]);
                let a = q(lane.aborted[b]).min(STEPS as u32 - p.min(STEPS as u32));
                let c = q(lane.committed[b]).min(STEPS as u32 - p - a);
                (p, a, c)
            });
            if cur != prev {
                if let Some((p, a, c)) = prev {
                    let (x0, x1) = (x_of(run_start), x_of(b));
                    let mut y = y0;
                    for (steps, colour) in [(p, PAUSED), (a, ABORTED), (c, COMMITTED)] {
                        if steps > 0 {
                            let dy = h * f64::from(steps) / STEPS;
                            rects.push(Rectangle::new([(x0, y), (x1, y + dy)], colour.filled()));
                            y += dy;
                        }
                    }
                }
                run_start = b;
                prev = cur;
            }
        }
        chart.draw_series(rects)?;
    }
    chart.draw_series(marks.iter().map(|&(lane, bin, m)| {
        TriangleMarker::new(
            (x_of(bin) + bin_s / 2.0, lane as f64 + 0.93),
            5,
            MARK[m % MARK.len()].filled(),
        )
    }))?;

    let font = ("sans-serif", 14).into_font();
    let mut y = 4;
    let mut x = 10;
    for (label, colour) in [
        ("committed", COMMITTED),
        ("aborted", ABORTED),
        ("paused", PAUSED),
        ("idle / outside transactions", IDLE),
    ] {
        bottom.draw(&Rectangle::new(
            [(x, y + 2), (x + 14, y + 14)],
            colour.filled(),
        ))?;
        bottom.draw(&Text::new(label.to_string(), (x + 20, y), font.clone()))?;
        x += 40 + 9 * label.len() as i32;
    }
    y += 22;
    for (i, g) in report.conflicts.iter().take(n_marks).enumerate() {
        let colour = MARK[i % MARK.len()];
        bottom.draw(&TriangleMarker::new((16, y + 8), 6, colour.filled()))?;
        let head = format!(
            "{} lost in aborts, {} paused ({}x {})",
            secs(g.lost_ns),
            secs(g.paused_ns),
            g.count,
            g.kind.name()
        );
        bottom.draw(&Text::new(head, (30, y), font.clone()))?;
        y += 20;
        let loc = |l: &Option<Location>| {
            l.as_ref()
                .map_or("(unknown)".to_string(), |l| l.to_string())
        };
        bottom.draw(&Text::new(
            format!("{}  vs  {}", loc(&g.this), loc(&g.other)),
            (46, y),
            font.clone(),
        ))?;
        y += 22;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(bins: usize, mean_commit: f64) -> Lane {
        Lane {
            committed: vec![0.0; bins],
            aborted: vec![0.0; bins],
            paused: vec![0.0; bins],
            pauses_in_attempt: Vec::new(),
            open_pause: None,
            last_time: None,
            untimed: 0,
            mean_commit,
        }
    }

    #[test]
    fn untimed_commits_are_spread_between_the_records_around_them() {
        // 10 bins of 100 ns from t = 1000.
        let binner = Binner {
            start: 1_000,
            bin_ns: 100.0,
            bins: 10,
        };
        let mut l = lane(10, 50.0);
        l.timed(&binner, 1_200);
        // Four untimed commits of 50 ns (estimated) between 1200 and 1600: 200 ns over 400 ns,
        // half of each of the four bins.
        l.untimed = 4;
        l.timed(&binner, 1_600);
        assert_eq!(l.untimed, 0);
        assert_eq!(l.last_time, Some(1_600));
        let expect = [0.0, 0.0, 50.0, 50.0, 50.0, 50.0, 0.0, 0.0, 0.0, 0.0];
        for (got, want) in l.committed.iter().zip(expect) {
            assert!((got - want).abs() < 1e-9, "{:?}", l.committed);
        }
        // More estimated time than the interval holds fills it, no more.
        l.untimed = 100;
        l.timed(&binner, 1_800);
        assert!((l.committed[6] - 100.0).abs() < 1e-9 && (l.committed[7] - 100.0).abs() < 1e-9);
        assert_eq!(l.committed.iter().sum::<f64>(), 400.0);
    }
}
