//! `stm-log`: print the report of a conflict log, or draw its time line.
//!
//! ```text
//! stm-log report FILE [--top N] [--json] [--source-root DIR]
//! stm-log timeline FILE -o timeline.svg [--width PX] [--marks K]
//! ```
//!
//! Built with the package's `cli` feature: `cargo install --path stm-log --features cli`, or
//! `cargo run -p stm-log --features cli -- report FILE` from a checkout.
//!
//! Exit status: 0 on success; 1 when the file cannot be read at all (missing, not a log, a newer
//! format version) or the output cannot be written; 2 for a bad command line; 3 when the log is
//! damaged (truncated or corrupt) after its header: everything before the damage was reported,
//! and stderr names the byte offset where reading stopped.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use stm_log::report::Report;
use stm_log::timeline::{TimelineOptions, render_svg};

#[derive(Parser)]
#[command(
    name = "stm-log",
    version,
    about = "Reports the conflicts recorded in an stm conflict log (STM_LOG=file)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Totals, per-thread figures and the most expensive conflicts with their source lines.
    Report {
        /// The log file.
        file: PathBuf,
        /// How many conflict groups to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Where to look first for the source files the log names (then under the recording
        /// process's working directory and its parents, its executable's folder and its
        /// parents, and the current directory).
        #[arg(long, value_name = "DIR")]
        source_root: Option<PathBuf>,
    },
    /// Draws one lane per thread over time (committed, aborted, paused) into an SVG file.
    Timeline {
        /// The log file.
        file: PathBuf,
        /// The SVG file to write.
        #[arg(short = 'o', long = "output", value_name = "SVG")]
        output: PathBuf,
        /// Width of the picture in pixels (400 to 16000).
        #[arg(long, default_value_t = 1400)]
        width: u32,
        /// How many of the most expensive conflict groups to mark.
        #[arg(long, default_value_t = 3)]
        marks: usize,
    },
}

const DAMAGED: u8 = 3;

fn out(text: &str) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        // `stm-log report x | head`: the reader left; not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write the report: {e}")),
    }
}

fn run(cli: Cli) -> Result<u8, String> {
    match cli.command {
        Command::Report {
            file,
            top,
            json,
            source_root,
        } => {
            let mut report =
                Report::from_path(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            if json {
                report.truncate(top);
                report.attach_sources(source_root.as_deref());
                out(&report.to_json())?;
                out("\n")?;
            } else {
                out(&report.render_text(top, source_root.as_deref()))?;
            }
            Ok(match &report.damage {
                Some(d) => {
                    eprintln!("stm-log: warning: {}: {}", file.display(), d.message);
                    DAMAGED
                }
                None => 0,
            })
        }
        Command::Timeline {
            file,
            output,
            width,
            marks,
        } => {
            let s = render_svg(&file, &output, TimelineOptions { width, marks })
                .map_err(|e| format!("{}: {e}", file.display()))?;
            eprintln!(
                "stm-log: wrote {} ({} lanes, {} conflict marks)",
                output.display(),
                s.lanes,
                s.marks
            );
            if s.omitted_threads > 0 {
                eprintln!(
                    "stm-log: {} less busy threads left out (at most {} lanes)",
                    s.omitted_threads,
                    stm_log::timeline::MAX_LANES
                );
            }
            Ok(match s.damage {
                Some(d) => {
                    eprintln!("stm-log: warning: {}: {d}", file.display());
                    DAMAGED
                }
                None => 0,
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("stm-log: error: {msg}");
            ExitCode::from(1)
        }
    }
}
