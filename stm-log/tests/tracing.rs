//! The `tracing` bridge (run with `--features tracing`).
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use stm_core::{AbortCause, Conflict, ConflictKind, Event, EventKind, EventSink, Timestamp};
use stm_log::{LogReader, Record, Recorder, TracingSink};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Metadata, Subscriber};

/// `(target, level, fields)` of one event.
type Seen = (String, tracing::Level, Vec<(String, String)>);

/// Collects every event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut f = Fields(Vec::new());
        e.record(&mut f);
        self.0.lock().unwrap().push((
            e.metadata().target().to_string(),
            *e.metadata().level(),
            f.0,
        ));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(n, _)| n == name).expect(name).1
}

#[test]
fn conflicts_become_tracing_events_and_reach_the_next_sink() {
    let path = std::env::temp_dir().join(format!("stm-log-tracing-{}.log", std::process::id()));
    let rec = Recorder::create(&path).unwrap();
    let sink = TracingSink::with_next(rec.clone());
    let here = std::panic::Location::caller();
    let c = Conflict {
        kind: ConflictKind::WriteRead,
        this: Some(here),
        other: None,
        other_thread: Some(4),
    };
    let now = Timestamp::now();
    let events = [
        EventKind::Start { inevitable: false },
        EventKind::Abort {
            cause: AbortCause::Conflict(ConflictKind::WriteRead),
            conflict: Some(c),
            lost: Duration::from_nanos(1234),
        },
        EventKind::PauseStart { conflict: c },
        EventKind::PauseEnd {
            conflict: c,
            paused: Duration::from_nanos(99),
        },
        EventKind::Commit {
            read_only: true,
            duration: Duration::from_nanos(5),
        },
    ];
    let collect = Collect::default();
    tracing::subscriber::with_default(collect.clone(), || {
        for kind in events {
            sink.event(&Event {
                thread: 3,
                time: now,
                kind,
            });
        }
    });
    let got = collect.0.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one abort and one pause end: {got:?}");
    let (target, level, f) = &got[0];
    assert_eq!(target, "stm::conflict");
    assert_eq!(*level, tracing::Level::DEBUG);
    assert_eq!(field(f, "kind"), "WRITE_READ");
    assert_eq!(field(f, "lost_ns"), "1234");
    assert_eq!(field(f, "thread"), "3");
    assert_eq!(field(f, "other_thread"), "4");
    assert_eq!(
        field(f, "this"),
        format!("{}:{}:{}", here.file(), here.line(), here.column())
    );
    assert_eq!(field(f, "other"), "");
    assert_eq!(got[1].1, tracing::Level::TRACE);
    assert_eq!(field(&got[1].2, "paused_ns"), "99");

    rec.close().unwrap();
    let kinds: Vec<&str> = LogReader::open(&path)
        .unwrap()
        .map(|r| match r.unwrap() {
            Record::Process { .. } => "process",
            Record::Location { .. } => "location",
            Record::Start { .. } => "start",
            Record::Abort { .. } => "abort",
            Record::PauseStart { .. } => "pause start",
            Record::PauseEnd { .. } => "pause end",
            Record::Commit { .. } => "commit",
            Record::End { .. } => "end",
            _ => "other",
        })
        .collect();
    // The process record comes first; the location is written when first interned, ahead of
    // the buffered events.
    assert_eq!(
        kinds,
        [
            "process",
            "location",
            "start",
            "abort",
            "pause start",
            "pause end",
            "commit",
            "end"
        ]
    );
    std::fs::remove_file(&path).unwrap();
}
