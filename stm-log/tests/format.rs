//! The file format: writer -> reader round trips, truncated, corrupt and foreign files, and a
//! property test that feeds the reader arbitrary and mutated bytes.

use proptest::prelude::*;
use stm_core::ConflictKind;
use stm_log::format::{HEADER_LEN, MAGIC, MAX_PATH_LEN, MIN_VERSION, VERSION};
use stm_log::{AbortReason, ConflictSides, LogReader, LogWriter, ReadError, Record};

fn sample() -> Vec<Record> {
    let c = ConflictSides {
        kind: ConflictKind::Inevitable,
        this: Some(0),
        other: None,
        other_thread: Some(7),
    };
    vec![
        Record::Location {
            id: 0,
            file: "src/main.rs".into(),
            line: 42,
            column: 17,
        },
        Record::Location {
            id: 1,
            file: "ünïcödé/dir/lib.rs".into(),
            line: u32::MAX,
            column: 1,
        },
        Record::Start {
            thread: 1,
            time: 0,
            inevitable: false,
        },
        Record::Start {
            thread: u64::MAX,
            time: u64::MAX,
            inevitable: true,
        },
        Record::Commit {
            thread: 1,
            time: 1_000,
            read_only: true,
            duration: 999,
        },
        Record::Abort {
            thread: 2,
            time: 5_000,
            reason: AbortReason::Conflict(ConflictKind::WriteRead),
            conflict: Some(ConflictSides {
                kind: ConflictKind::WriteRead,
                this: Some(0),
                other: Some(1),
                other_thread: Some(1),
            }),
            lost: 4_000,
        },
        Record::Abort {
            thread: 2,
            time: 6_000,
            reason: AbortReason::Conflict(ConflictKind::WriteWrite),
            conflict: None,
            lost: 1,
        },
        Record::Abort {
            thread: 3,
            time: 7_000,
            reason: AbortReason::Retry,
            conflict: None,
            lost: 0,
        },
        Record::Abort {
            thread: 3,
            time: 7_001,
            reason: AbortReason::Cancel,
            conflict: None,
            lost: 0,
        },
        Record::Abort {
            thread: 3,
            time: 7_002,
            reason: AbortReason::Panic,
            conflict: None,
            lost: 0,
        },
        Record::PauseStart {
            thread: 4,
            time: 8_000,
            conflict: c,
        },
        Record::PauseEnd {
            thread: 4,
            time: 9_000,
            conflict: c,
            paused: 1_000,
        },
        Record::InevitableBegin {
            thread: 7,
            time: 7_500,
        },
        Record::InevitableEnd {
            thread: 7,
            time: 9_001,
        },
        // Version 2.
        Record::Process {
            cwd: "/home/ü/project".into(),
            exe: "".into(),
        },
        Record::UntimedCommit {
            thread: 5,
            read_only: true,
        },
        Record::UntimedCommit {
            thread: u64::MAX,
            read_only: false,
        },
        Record::UntimedAbort {
            thread: 5,
            time: 9_500,
            reason: AbortReason::Conflict(ConflictKind::WriteRead),
            conflict: Some(ConflictSides {
                kind: ConflictKind::WriteRead,
                this: Some(1),
                other: None,
                other_thread: None,
            }),
        },
        Record::UntimedAbort {
            thread: 5,
            time: 9_600,
            reason: AbortReason::Retry,
            conflict: None,
        },
        Record::End { time: 10_000 },
    ]
}

fn encode(records: &[Record]) -> Vec<u8> {
    let mut w = LogWriter::new(Vec::new(), 123).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.into_inner()
}

/// Byte offset at which each record starts, then the end.
fn offsets(records: &[Record]) -> Vec<usize> {
    (0..=records.len())
        .map(|k| encode(&records[..k]).len())
        .collect()
}

#[test]
fn round_trip_every_record_kind() {
    let records = sample();
    let bytes = encode(&records);
    let reader = LogReader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().version, VERSION);
    assert_eq!(reader.header().start_unix_ns, 123);
    assert_eq!(reader.header().pid, std::process::id());
    let back: Vec<Record> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(back, records);
}

#[test]
fn header_layout_is_as_documented() {
    let bytes = encode(&[]);
    assert_eq!(bytes.len(), HEADER_LEN);
    assert_eq!(&bytes[..8], b"\x89STMLOG\n");
    assert_eq!(&bytes[8..10], &[2, 0]);
    assert_eq!(&bytes[10..12], &[0, 0]);
    assert_eq!(&bytes[12..16], &std::process::id().to_le_bytes());
    assert_eq!(&bytes[16..24], &123u64.to_le_bytes());
    // And one record, byte for byte (the example in docs/conflict-log.md).
    let bytes = encode(&[Record::Commit {
        thread: 1,
        time: 300,
        read_only: false,
        duration: 200,
    }]);
    assert_eq!(
        &bytes[HEADER_LEN..],
        &[0x03, 0x01, 0xac, 0x02, 0x00, 0xc8, 0x01]
    );
    // The version 2 records of the examples in docs/conflict-log.md.
    let bytes = encode(&[
        Record::UntimedCommit {
            thread: 1,
            read_only: false,
        },
        Record::Process {
            cwd: "/p".into(),
            exe: "/p/a".into(),
        },
    ]);
    assert_eq!(
        &bytes[HEADER_LEN..],
        &[
            0x0b, 0x01, 0x00, 0x0a, 0x02, b'/', b'p', 0x04, b'/', b'p', b'/', b'a'
        ]
    );
}

/// A version 1 file (no process record, every attempt timed) still reads; the records that
/// version 2 added are corrupt in it.
#[test]
fn version_1_files_still_read() {
    assert_eq!(MIN_VERSION, 1);
    let v1: Vec<Record> = sample()
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                Record::Process { .. } | Record::UntimedCommit { .. } | Record::UntimedAbort { .. }
            )
        })
        .collect();
    let mut bytes = encode(&v1);
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let reader = LogReader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().version, 1);
    let back: Vec<Record> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(back, v1);
    let r = stm_log::Report::from_reader(LogReader::new(&bytes[..]).unwrap()).unwrap();
    assert_eq!((r.untimed_commits, r.process), (0, None));

    let mut bytes = encode(&[Record::UntimedCommit {
        thread: 1,
        read_only: false,
    }]);
    bytes[8] = 1;
    let r: Vec<_> = LogReader::new(&bytes[..]).unwrap().collect();
    match &r[..] {
        [Err(ReadError::Corrupt { offset, reason })] => {
            assert_eq!(*offset as usize, HEADER_LEN);
            assert!(reason.contains("tag 0x0b (format version 1)"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncation_at_every_byte_reports_the_prefix_and_the_offset() {
    let records = sample();
    let bytes = encode(&records);
    let starts = offsets(&records);
    assert_eq!(*starts.last().unwrap(), bytes.len());
    for cut in 0..bytes.len() {
        let r = LogReader::new(&bytes[..cut]);
        if cut < HEADER_LEN {
            match r {
                Err(ReadError::Truncated { offset: 0 }) => assert!(cut > 0),
                Err(ReadError::NotALog) => assert_eq!(cut, 0),
                other => panic!("cut {cut}: {other:?}"),
            }
            continue;
        }
        let mut got = Vec::new();
        let mut err = None;
        for item in r.unwrap() {
            match item {
                Ok(rec) => got.push(rec),
                Err(e) => err = Some(e),
            }
        }
        // Complete records before the cut are all there.
        let complete = starts.iter().filter(|&&s| s <= cut).count() - 1;
        assert_eq!(got, records[..complete], "cut {cut}");
        if starts.contains(&cut) {
            assert!(err.is_none(), "cut {cut} at a record boundary: {err:?}");
        } else {
            match err {
                Some(ReadError::Truncated { offset }) => {
                    assert_eq!(offset as usize, starts[complete], "cut {cut}");
                    let msg = ReadError::Truncated { offset }.to_string();
                    assert!(msg.contains(&format!("byte offset {offset}")), "{msg}");
                }
                other => panic!("cut {cut}: expected Truncated, got {other:?}"),
            }
        }
    }
}

#[test]
fn foreign_and_newer_files_are_clear_errors() {
    let e = LogReader::new(&b"hello world, this is not a log at all"[..]).unwrap_err();
    assert!(matches!(e, ReadError::NotALog), "{e:?}");
    assert!(e.to_string().contains("not an stm conflict log"));
    let e = LogReader::new(&b""[..]).unwrap_err();
    assert!(matches!(e, ReadError::NotALog));

    let mut newer = encode(&sample());
    newer[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let e = LogReader::new(&newer[..]).unwrap_err();
    assert!(
        matches!(e, ReadError::UnsupportedVersion { found, supported: VERSION } if found == VERSION + 1)
    );
    assert!(e.to_string().contains("version 3"), "{e}");
    let mut zero = encode(&[]);
    zero[8] = 0;
    assert!(matches!(
        LogReader::new(&zero[..]),
        Err(ReadError::UnsupportedVersion { found: 0, .. })
    ));
}

#[test]
fn corrupt_record_names_its_offset_after_the_good_ones() {
    let records = sample();
    let mut bytes = encode(&records[..3]);
    let bad_at = bytes.len();
    bytes.push(0x7e); // no such tag
    bytes.extend_from_slice(&encode(&records[3..])[HEADER_LEN..]);
    let mut it = LogReader::new(&bytes[..]).unwrap();
    for r in &records[..3] {
        assert_eq!(&it.next().unwrap().unwrap(), r);
    }
    match it.next() {
        Some(Err(ReadError::Corrupt { offset, reason })) => {
            assert_eq!(offset as usize, bad_at);
            assert!(reason.contains("0x7e"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(it.next().is_none(), "the reader stops at the damage");
}

#[test]
fn bad_fields_are_corrupt_not_panics() {
    let h = encode(&[]);
    let cases: &[&[u8]] = &[
        &[0x02, 0x01, 0x00, 0x02],                      // start: inevitable flag 2
        &[0x04, 0x01, 0x00, 0x09, 0x00, 0x00],          // abort: reason 9
        &[0x04, 0x01, 0x00, 0x04, 0x01, 0, 0, 0, 0],    // retry with conflict details
        &[0x05, 0x01, 0x00, 0x07, 0, 0, 0],             // pause: kind 7
        &[0x01, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0], // location id > u32
        &[0x01, 0x00, 0x01, 0x01, 0x81, 0x40],          // location: name length 8193
        &[0x01, 0x00, 0x01, 0x01, 0x02, 0xff, 0xfe],    // location: not UTF-8
        &[0x0b, 0x01, 0x02],                            // untimed commit: read_only flag 2
        &[0x0c, 0x01, 0x00, 0x05, 0x01, 0, 0, 0],       // untimed cancel with conflict details
        &[0x0a, 0x81, 0x40],                            // process: cwd length 8193
    ];
    for case in cases {
        let mut b = h.clone();
        b.extend_from_slice(case);
        let r: Vec<_> = LogReader::new(&b[..]).unwrap().collect();
        assert_eq!(r.len(), 1, "{case:?}");
        assert!(
            matches!(&r[0], Err(ReadError::Corrupt { offset, .. }) if *offset as usize == HEADER_LEN),
            "{case:?}: {:?}",
            r[0]
        );
    }
}

#[test]
fn long_file_names_are_cut_when_written() {
    let long = "d/".repeat(MAX_PATH_LEN);
    let bytes = encode(&[Record::Location {
        id: 3,
        file: long.clone(),
        line: 1,
        column: 1,
    }]);
    let back: Vec<Record> = LogReader::new(&bytes[..])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    match &back[0] {
        Record::Location { file, .. } => {
            assert_eq!(file.len(), MAX_PATH_LEN);
            assert!(long.starts_with(file.as_str()));
        }
        r => panic!("{r:?}"),
    }
}

/// Drains a reader, checking that it ends and that every error names an offset inside the input;
/// then builds the report of the same bytes, which must not panic either.
fn drain(bytes: &[u8]) {
    if let Ok(reader) = LogReader::new(bytes)
        && let Ok(report) = stm_log::Report::from_reader(reader)
    {
        let _ = report.render_text(3, None);
        let _ = report.to_json();
    }
    if let Ok(reader) = LogReader::new(bytes) {
        let mut n = 0usize;
        for r in reader {
            n += 1;
            assert!(n <= bytes.len(), "more records than bytes");
            if let Err(e) = r {
                let off = e.offset().unwrap();
                assert!(off as usize <= bytes.len());
                let _ = e.to_string();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        drain(&bytes);
        // The same bytes behind a valid header exercise the record decoder.
        for version in [1, 2] {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[version, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            b.extend_from_slice(&bytes);
            drain(&b);
        }
    }

    #[test]
    fn mutated_logs_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = encode(&sample());
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        drain(&b);
        let c = cut.index(b.len() + 1);
        drain(&b[..c]);
    }
}

proptest! {
    // Each case writes and draws a file: fewer cases.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn timeline_of_mutated_logs_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut b = encode(&sample());
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        let dir = std::env::temp_dir();
        let log = dir.join(format!("stm-log-prop-{}.log", std::process::id()));
        let svg = dir.join(format!("stm-log-prop-{}.svg", std::process::id()));
        std::fs::write(&log, &b).unwrap();
        let opts = stm_log::timeline::TimelineOptions { width: 400, marks: 3 };
        let _ = stm_log::timeline::render_svg(&log, &svg, opts);
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&svg);
    }
}
