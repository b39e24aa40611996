//! `scaling`: throughput against threads for the intset and bank workloads, as a table and as
//! an SVG chart (`docs/scaling.svg` by default), measured on the spot so the chart regenerates
//! with the numbers.
//!
//! Each point runs a fixed number of operations per thread (after an unmeasured warm-up of a
//! tenth of that) and repeats; the median of the repeats is kept. Workloads as in the criterion
//! suites: intset (256 elements, keys 0..512, 20% updates) for the list, skip list, rb-tree and
//! hash set over `stm_core` / one `Mutex` / one `RwLock` (and, in the table only, each set's
//! unsynchronised "floor", [`stm_benches::intset::FloorSet`]: the same cache-line traffic with no
//! synchronisation, the most any STM could reach on the machine), and bank (1024 accounts, 20% audits)
//! over `stm_core` / a `Mutex` per account / one global `Mutex`.
//!
//! ```text
//! cargo run --release -p stm-benches --bin scaling
//! cargo run --release -p stm-benches --bin scaling -- --threads 4 --ops 100000 --out /tmp/s.svg
//! ```

use clap::Parser;
use plotters::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use stm_benches::bank::BankWorkload;
use stm_benches::intset::{IntSetWorkload, all_floors, all_sets};
use stm_benches::workload::{per_second, run_threads};

/// Throughput against threads for intset and bank, as a table and an SVG chart.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Highest thread count (default: the number of cores, at least 2); every count from 1 to
    /// it is measured unless `--points` says otherwise.
    #[arg(short, long)]
    threads: Option<usize>,
    /// The thread counts to measure, e.g. `1,2,4,8,16` (default: 1 to `--threads`).
    #[arg(long, value_delimiter = ',')]
    points: Vec<usize>,
    /// Operations per thread per point (the list and bank rows use a fifth of it: they are
    /// 10x slower per operation).
    #[arg(long, default_value_t = 2_000_000)]
    ops: u64,
    /// Repeats per point (the median is kept).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Where to write the chart (default: docs/scaling.svg in the workspace).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the measurements as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// One series: a workload on one implementation, ops/s at each thread count.
#[derive(Debug, Serialize)]
struct Series {
    workload: String,
    implementation: String,
    /// The thread counts measured.
    threads: Vec<usize>,
    /// Committed operations per second at each of `threads`.
    ops_per_second: Vec<f64>,
}

/// Keeps each counter of the disjoint workload on its own cache line (two, for the adjacent-line
/// prefetcher).
#[repr(align(128))]
struct Padded<T>(T);

/// One operation of a workload, given the thread's index and random generator.
type Op<'a> = dyn Fn(usize, &mut stm_benches::rng::Rng) + Sync + 'a;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn measure(threads: usize, ops: u64, repeats: usize, op: &Op<'_>) -> f64 {
    run_threads(threads, (ops / 10).max(1), 99, op);
    median(
        (0..repeats.max(1))
            .map(|r| {
                let t = run_threads(threads, ops, r as u64, op);
                per_second(ops * threads as u64, t)
            })
            .collect(),
    )
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scaling: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = args.threads.unwrap_or(cores.max(2));
    let points: Vec<usize> = if args.points.is_empty() {
        (1..=max).collect()
    } else {
        args.points.clone()
    };
    if max == 0 || args.ops == 0 || points.contains(&0) {
        return Err("--threads, --points and --ops must be at least 1".into());
    }
    let max = points.iter().copied().max().unwrap_or(1);
    let mut series = Vec::new();

    let w = IntSetWorkload::default();
    let mut sets = all_sets(w.range).map_err(|e| e.to_string())?;
    for (_, set) in &sets {
        w.fill(&**set, 1).map_err(|e| e.to_string())?;
    }
    // The floors (no synchronisation, same cache-line traffic; table only, not charted).
    sets.extend(all_floors(&w, 1).map_err(|e| e.to_string())?);
    for (name, set) in sets {
        let (structure, sync) = name.split_once('/').unwrap_or((&name, ""));
        let ops = if structure == "list" {
            args.ops / 5
        } else {
            args.ops
        };
        let mut s = Series {
            workload: format!("intset {structure}"),
            implementation: sync.to_string(),
            threads: points.clone(),
            ops_per_second: Vec::new(),
        };
        for &t in &points {
            let op = |_: usize, rng: &mut stm_benches::rng::Rng| {
                let _ = w.op(&*set, rng);
            };
            s.ops_per_second
                .push(measure(t, ops.max(1), args.repeats, &op));
            eprint!(".");
        }
        if let Err(e) = set.check() {
            return Err(format!("{name} is corrupt after the run: {e}"));
        }
        series.push(s);
    }

    let bw = BankWorkload::default();
    for bank in bw.all_banks() {
        let mut s = Series {
            workload: "bank".into(),
            implementation: bank.name().into(),
            threads: points.clone(),
            ops_per_second: Vec::new(),
        };
        for &t in &points {
            let op = |_: usize, rng: &mut stm_benches::rng::Rng| {
                if !bw.op(&*bank, rng) {
                    panic!("{}: an audit saw a wrong total", bank.name());
                }
            };
            s.ops_per_second
                .push(measure(t, (args.ops / 5).max(1), args.repeats, &op));
            eprint!(".");
        }
        series.push(s);
    }

    // Disjoint counters: each thread increments its own word (its own cache line), in a
    // transaction or under its own `Mutex`. Nothing is shared but the runtime itself, so this
    // shows what the runtime's own shared state (clocks, counters) costs as threads are added.
    let stm_counters: Vec<Padded<stm_core::TVar<u64>>> =
        (0..max).map(|_| Padded(stm_core::TVar::new(0))).collect();
    let mutex_counters: Vec<Padded<Mutex<u64>>> = (0..max).map(|_| Padded(Mutex::new(0))).collect();
    let disjoint: [(&str, &Op<'_>); 2] = [
        ("stm", &|t, _| {
            stm_core::atomically(|tx| tx.modify(&stm_counters[t].0, |x| x + 1).map(drop))
        }),
        ("mutex", &|t, _| {
            *mutex_counters[t]
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner()) += 1;
        }),
    ];
    for (name, op) in disjoint {
        let mut s = Series {
            workload: "disjoint".into(),
            implementation: name.into(),
            threads: points.clone(),
            ops_per_second: Vec::new(),
        };
        for &t in &points {
            s.ops_per_second
                .push(measure(t, args.ops.max(1), args.repeats, op));
            eprint!(".");
        }
        series.push(s);
    }
    eprintln!();

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("docs").join("scaling.svg"));
    chart(&out, &series, max).map_err(|e| format!("cannot draw {}: {e}", out.display()))?;

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&series).map_err(|e| e.to_string())?
        );
    } else {
        print!("{:<18} {:<18}", "workload", "implementation");
        for t in &points {
            print!(" {:>10}", format!("{t} thr"));
        }
        println!(" {:>8}", format!("{max}/{}", points[0]));
        for s in &series {
            print!("{:<18} {:<18}", s.workload, s.implementation);
            for v in &s.ops_per_second {
                print!(" {:>9.2}M", v / 1e6);
            }
            let first = s.ops_per_second.first().copied().unwrap_or(0.0);
            let last = s.ops_per_second.last().copied().unwrap_or(0.0);
            if first > 0.0 {
                println!(" {:>7.2}x", last / first);
            } else {
                println!(" {:>8}", "-");
            }
        }
        println!("\nchart: {} ({cores} cores)", out.display());
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Two panels, intset and bank: ops/s (log scale) against threads; one colour per structure,
/// solid thick lines for STM, thin for `Mutex`, dashed for `RwLock` / one global `Mutex`.
fn chart(out: &Path, series: &[Series], max: usize) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(out, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    let colours = [&BLUE, &RED, &GREEN, &MAGENTA, &BLACK];
    for (area, title, is_bank) in [
        (&left, "intset (256 of 0..512, 20% updates)", false),
        (&right, "bank (1024 accounts, 20% audits)", true),
    ] {
        let chosen: Vec<&Series> = series
            .iter()
            .filter(|s| s.implementation != "floor")
            .filter(|s| {
                if is_bank {
                    s.workload == "bank"
                } else {
                    s.workload.starts_with("intset")
                }
            })
            .collect();
        let vals = chosen.iter().flat_map(|s| s.ops_per_second.iter().copied());
        let lo = vals.clone().fold(f64::INFINITY, f64::min).max(1.0);
        let hi = vals.fold(1.0, f64::max);
        let mut c = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(1usize..max.max(2), ((lo / 1.5)..(hi * 1.5)).log_scale())?;
        c.configure_mesh()
            .x_desc("threads")
            .y_desc("committed ops/s")
            .x_labels(max.max(2))
            .y_labels(12)
            .y_label_formatter(&|v| {
                if *v >= 1e6 {
                    format!("{:.0}M", v / 1e6)
                } else {
                    format!("{:.0}k", v / 1e3)
                }
            })
            .draw()?;
        let mut workloads: Vec<&str> = chosen.iter().map(|s| s.workload.as_str()).collect();
        workloads.dedup();
        for s in &chosen {
            let wi = workloads.iter().position(|w| *w == s.workload).unwrap_or(0);
            let ii = if is_bank {
                ["stm", "mutex-per-account", "global-mutex"]
                    .iter()
                    .position(|i| *i == s.implementation)
                    .unwrap_or(0)
            } else {
                ["stm", "mutex", "rwlock"]
                    .iter()
                    .position(|i| *i == s.implementation)
                    .unwrap_or(0)
            };
            let colour = if is_bank {
                colours[ii % colours.len()]
            } else {
                colours[wi % colours.len()]
            };
            let label = format!(
                "{} {}",
                s.workload.trim_start_matches("intset "),
                s.implementation
            );
            let points: Vec<(usize, f64)> = s
                .threads
                .iter()
                .zip(&s.ops_per_second)
                .map(|(&t, v)| (t, v.max(lo)))
                .collect();
            let style = ShapeStyle::from(colour).stroke_width(if ii == 0 { 3 } else { 1 });
            let anno = if ii == 2 && !is_bank {
                c.draw_series(DashedLineSeries::new(points, 6, 4, style))?
            } else {
                c.draw_series(LineSeries::new(points, style).point_size(if ii == 0 {
                    3
                } else {
                    2
                }))?
            };
            anno.label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
