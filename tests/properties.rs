//! The fuzz targets' properties, run by proptest in `cargo test` so that CI
//! checks them on every change (docs/reliability.md, "Property tests").
//!
//! The checks themselves are the fuzz crate's (fuzz/src/framing.rs,
//! fuzz/src/connection.rs), included here as modules: a fuzzer and this file
//! cannot drift apart. Proptest generates the cases with a bias the fuzzer
//! has to discover (small alphabets, so delimiters occur; well-formed length
//! prefixes; runs of zero-byte reads for slow readers) and shrinks a failure
//! to a small case; a failing seed is kept in proptest-regressions/.

#[path = "../fuzz/src/connection.rs"]
mod connection;
#[path = "../fuzz/src/framing.rs"]
mod framing;

use proptest::prelude::*;

use connection::{CloseKind, ConnCase, ServerEnd, Step, Tight};
use framing::{FramingCase, Term};

/// `default` cases, or `PROPTEST_CASES` for a longer run
/// (`PROPTEST_CASES=100000 cargo test --release --test properties`).
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Bytes that make delimiters and small length prefixes likely.
fn alphabet_byte() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![b'a', b'b', b'\n', b'\r', 0, 1, 0xff])
}

fn term() -> impl Strategy<Value = Term> {
    prop_oneof![
        3 => prop::collection::vec(alphabet_byte(), 1..=4).prop_map(Term::Delimiter),
        1 => prop::collection::vec(any::<u8>(), 1..=4).prop_map(Term::Delimiter),
        2 => (1usize..=64).prop_map(Term::Count),
        2 => Just(Term::LengthPrefixed),
        1 => Just(Term::None),
    ]
}

/// A stream of pieces: alphabet soup, arbitrary bytes, one of the case's
/// delimiters, or a length-prefixed record (0..100 bytes, so that some fit
/// the limit and some do not).
fn stream(delimiters: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let soup = || prop::collection::vec(alphabet_byte(), 0..24);
    let record = (0u8..100).prop_flat_map(|n| {
        prop::collection::vec(alphabet_byte(), usize::from(n)).prop_map(move |body| {
            let mut record = vec![0, 0, 0, n];
            record.extend_from_slice(&body);
            record
        })
    });
    let delimiter = if delimiters.is_empty() {
        Just(Vec::new()).boxed()
    } else {
        prop::sample::select(delimiters).boxed()
    };
    let piece = prop_oneof![
        2 => soup(),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        2 => delimiter,
        2 => record,
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// Cuts `stream` into pieces of the given sizes, cycled (0: an empty piece).
fn chunk(stream: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    if sizes.is_empty() {
        return vec![stream.to_vec()];
    }
    let mut chunks = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle().take(4 * stream.len() + sizes.len()) {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(piece.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        chunks.push(rest.to_vec());
    }
    chunks
}

fn framing_case() -> impl Strategy<Value = FramingCase> {
    prop::collection::vec(term(), 1..=3).prop_flat_map(|terms| {
        let delimiters = terms
            .iter()
            .filter_map(|t| match t {
                Term::Delimiter(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        (
            Just(terms),
            // Mostly room for a frame or two, sometimes next to none.
            prop_oneof![1 => 0usize..=8, 3 => 8usize..=200],
            stream(delimiters),
            prop::collection::vec(0usize..=20, 0..=6),
        )
            .prop_map(|(terms, max, stream, sizes)| FramingCase {
                terms,
                max,
                chunks: chunk(&stream, &sizes),
            })
    })
}

proptest! {
    #![proptest_config(cases(1024))]

    /// Frames, their timing, the error and the leftover are the naive
    /// reference's; frames + framing + leftover rebuild the input; no frame is
    /// over the limit; chunking does not change the result.
    #[test]
    fn framing_matches_the_reference(case in framing_case()) {
        framing::check(&case);
    }
}

fn step() -> impl Strategy<Value = Step> {
    let write = prop::sample::select(vec![0, 1, 7, 64, 1000, 65536]);
    // Zero reads are frequent: a peer that leaves its answers unread.
    let read = prop::sample::select(vec![0, 0, 0, 1, 13, 512, 65536]);
    // One step in four, the server does not read (its peer's FIN may come then).
    let pause = prop::bool::weighted(0.25);
    (write, 0u8..=3, read, pause).prop_map(|(write, turns, read, pause)| Step {
        write,
        turns,
        read,
        pause,
    })
}

fn tight() -> impl Strategy<Value = Tight> {
    (1usize..=8192, 1usize..=4096, 0usize..=100).prop_map(|(sndbuf, high_water, pct)| Tight {
        sndbuf,
        high_water,
        low_water: high_water * pct / 100,
    })
}

fn conn_case() -> impl Strategy<Value = ConnCase> {
    // Mostly short lines; some long enough to straddle reads and be kept
    // as a partial frame.
    let len = prop_oneof![4 => 0usize..40, 1 => 0usize..400];
    let line = len.prop_flat_map(|len| {
        prop::collection::vec(prop::sample::select(b"abcxyz \r".to_vec()), len)
    });
    let lines = prop::collection::vec(line, 0..20);
    let tail = prop::collection::vec(prop::sample::select(b"abc".to_vec()), 0..50);
    (
        (lines, tail, 1usize..=40),
        prop_oneof![Just(None), (0usize..=100).prop_map(Some)],
        prop_oneof![Just(CloseKind::ShutdownWrite), Just(CloseKind::Drop)],
        prop::collection::vec(step(), 0..64),
        prop_oneof![3 => Just(64 * 1024), 1 => 0usize..=48],
        prop::option::of(tight()),
    )
        .prop_map(
            |((lines, tail, repeat), close_pct, close, steps, max_frame, tight)| {
                let mut one = Vec::new();
                for line in &lines {
                    one.extend_from_slice(line);
                    one.push(b'\n');
                }
                let mut stream = one.repeat(repeat);
                stream.extend_from_slice(&tail);
                // None: after the whole stream; else somewhere in it.
                let close_at = close_pct.map_or(stream.len(), |pct| stream.len() * pct / 100);
                ConnCase {
                    stream,
                    close_at,
                    close,
                    steps,
                    max_frame,
                    tight,
                }
            },
        )
}

proptest! {
    #![proptest_config(cases(128))]

    /// The peer reads back exactly the complete lines it sent before closing,
    /// in order; the server closes after the peer's FIN (or with a protocol
    /// error for a line over its limit); nothing panics or hangs.
    #[test]
    fn connection_echoes_complete_lines(case in conn_case()) {
        let report = connection::check(&case);
        prop_assert!(report.written <= case.stream.len());
        prop_assert!(report.echoed <= report.written);
        prop_assert!(report.steps <= case.steps.len() + connection::DRAIN_STEPS);
    }
}

/// The tight setting does what it is for: a peer that does not read for a
/// while makes the write queue pass the high-water mark (reading pauses),
/// and everything still arrives once it reads again.
#[test]
fn a_slow_reader_engages_backpressure() {
    let line = b"the quick brown fox jumps over\n";
    let stream = line.repeat(2000);
    let case = ConnCase {
        close_at: stream.len(),
        stream,
        close: CloseKind::ShutdownWrite,
        // 300 steps of writing without reading, then the drain.
        steps: vec![
            Step {
                write: 4096,
                turns: 1,
                read: 0,
                pause: false,
            };
            300
        ],
        max_frame: 64 * 1024,
        tight: Some(Tight {
            sndbuf: 1,
            high_water: 1024,
            low_water: 256,
        }),
    };
    let report = connection::check(&case);
    assert!(
        report.drained >= 1,
        "the queue never passed the high-water mark: {report:?}"
    );
    assert_eq!(report.echoed, case.stream.len());
    assert_eq!(report.closed, ServerEnd::PeerClosed);
}

/// A line over the limit closes the connection with a protocol error after
/// the lines before it are answered.
#[test]
fn an_overlong_line_is_refused_after_the_earlier_answers() {
    let case = ConnCase {
        stream: b"ok\nthis line is too long\nnever seen\n".to_vec(),
        close_at: usize::MAX,
        close: CloseKind::ShutdownWrite,
        steps: Vec::new(),
        max_frame: 8,
        tight: None,
    };
    let report = connection::check(&case);
    assert_eq!(report.echoed, 3);
    match report.closed {
        ServerEnd::Protocol(msg) => assert!(msg.contains("8-byte"), "{msg}"),
        other => panic!("closed with {other:?}"),
    }
}

/// The peer's lines and FIN arrive while the server is not reading: when it
/// reads again (no new edge will come), it must read to the end of stream,
/// not stop at a short read, or the connection would hang half-closed.
#[test]
fn a_fin_that_arrives_while_the_server_is_not_reading_is_not_lost() {
    let case = ConnCase {
        stream: b"one\ntwo\n".to_vec(),
        close_at: usize::MAX,
        close: CloseKind::ShutdownWrite,
        steps: vec![Step {
            write: 64 * 1024,
            turns: 2,
            read: 0,
            pause: true,
        }],
        max_frame: 64 * 1024,
        tight: None,
    };
    let report = connection::check(&case);
    assert_eq!(report.echoed, 8);
    assert_eq!(report.closed, ServerEnd::PeerClosed);
}
