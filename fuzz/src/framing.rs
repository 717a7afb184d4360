//! The framing property: `FrameDecoder::next_frame`, fed a byte stream in
//! arbitrary chunks, cuts exactly the frames a naive reference cuts, at the
//! same moments, and refuses exactly the frames over the size limit.
//!
//! Shared by the `framing` fuzz target (fuzz/fuzz_targets/framing.rs) and the
//! proptest in tests/properties.rs (`#[path]`-included), so both check the
//! same thing. Only `sockloop` and `bytes` are used.

use bytes::BytesMut;
use sockloop::{FrameDecoder, Terminator};

/// A terminator, owned (the decoder's [`Terminator`] borrows its delimiter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// 1 to 4 arbitrary bytes.
    Delimiter(Vec<u8>),
    /// 1 to 64.
    Count(usize),
    /// A 4-byte big-endian length, then the frame.
    LengthPrefixed,
    /// Whatever is buffered is a frame.
    None,
}

impl Term {
    fn as_terminator(&self) -> Terminator<'_> {
        match self {
            Term::Delimiter(d) => Terminator::Delimiter(d),
            Term::Count(n) => Terminator::Count(*n),
            Term::LengthPrefixed => Terminator::LengthPrefixed,
            Term::None => Terminator::None,
        }
    }
}

/// One run: frame `i` uses `terms[i % terms.len()]` (a handler may switch
/// terminators between frames, asynchat's header-then-body; one terminator is
/// the common case); the stream arrives as `chunks`.
#[derive(Clone, Debug)]
pub struct FramingCase {
    /// At least one.
    pub terms: Vec<Term>,
    /// The frame size limit given to `next_frame`.
    pub max: usize,
    /// The stream, in the pieces it arrives in (empty pieces allowed).
    pub chunks: Vec<Vec<u8>>,
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Each frame with the index of the chunk after which it came out (0: the
    /// call before any input, then 1 for the first chunk...).
    pub frames: Vec<(usize, Vec<u8>)>,
    /// The chunk after which `next_frame` failed, if it did (the run stops).
    pub error_at: Option<usize>,
    /// Bytes left in the buffer at the end (or at the error).
    pub leftover: Vec<u8>,
}

/// One step of the reference: what the front of `buf` is.
enum Step {
    /// `skip` framing bytes before (a length prefix), the frame of `len`
    /// bytes, then `after` framing bytes (a delimiter).
    Frame {
        skip: usize,
        len: usize,
        after: usize,
    },
    NeedMore,
    /// A frame over the limit (or an impossible terminator).
    TooLong,
}

/// The reference: stateless and naive (rescans from the start every time).
/// The error rule it encodes: a frame is refused once it is known to be over
/// `max`: a delimiter found past `max`; `max + delimiter length` bytes
/// buffered with no delimiter among them; a count over `max`; a length
/// prefix over `max`. `None` frames are what arrived, cut at `max`.
fn reference_step(buf: &[u8], term: &Term, max: usize) -> Step {
    match term {
        Term::Delimiter(d) => {
            if d.is_empty() {
                return Step::TooLong;
            }
            match buf.windows(d.len()).position(|w| w == &d[..]) {
                Some(p) if p <= max => Step::Frame {
                    skip: 0,
                    len: p,
                    after: d.len(),
                },
                Some(_) => Step::TooLong,
                None if buf.len() >= max + d.len() => Step::TooLong,
                None => Step::NeedMore,
            }
        }
        Term::Count(0) => Step::TooLong,
        Term::Count(n) if *n > max => Step::TooLong,
        Term::Count(n) if buf.len() >= *n => Step::Frame {
            skip: 0,
            len: *n,
            after: 0,
        },
        Term::Count(_) => Step::NeedMore,
        Term::LengthPrefixed => {
            if buf.len() < 4 {
                return Step::NeedMore;
            }
            let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if n > max {
                Step::TooLong
            } else if buf.len() < 4 + n {
                Step::NeedMore
            } else {
                Step::Frame {
                    skip: 4,
                    len: n,
                    after: 0,
                }
            }
        }
        Term::None if max == 0 => Step::TooLong,
        Term::None if buf.is_empty() => Step::NeedMore,
        // Whatever arrived, in frames of at most `max` (bounded like every frame).
        Term::None => Step::Frame {
            skip: 0,
            len: buf.len().min(max),
            after: 0,
        },
    }
}

/// Runs the reference over the chunks.
pub fn reference(case: &FramingCase) -> Outcome {
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let pieces = std::iter::once(&[][..]).chain(case.chunks.iter().map(|c| &c[..]));
    for (at, piece) in pieces.enumerate() {
        buf.extend_from_slice(piece);
        loop {
            let term = &case.terms[frames.len() % case.terms.len()];
            match reference_step(&buf, term, case.max) {
                Step::Frame { skip, len, after } => {
                    frames.push((at, buf[skip..skip + len].to_vec()));
                    buf.drain(..skip + len + after);
                }
                Step::NeedMore => break,
                Step::TooLong => {
                    return Outcome {
                        frames,
                        error_at: Some(at),
                        leftover: buf,
                    }
                }
            }
        }
    }
    Outcome {
        frames,
        error_at: None,
        leftover: buf,
    }
}

/// Runs `FrameDecoder` over the chunks, as `Framed` does: after each
/// chunk, frames until `Ok(None)`. A panic propagates (a fuzz crash).
pub fn decode(case: &FramingCase) -> Outcome {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let pieces = std::iter::once(&[][..]).chain(case.chunks.iter().map(|c| &c[..]));
    for (at, piece) in pieces.enumerate() {
        buf.extend_from_slice(piece);
        loop {
            let term = &case.terms[frames.len() % case.terms.len()];
            match decoder.next_frame(&mut buf, term.as_terminator(), case.max) {
                Ok(Some(frame)) => frames.push((at, frame.to_vec())),
                Ok(None) => break,
                Err(_) => {
                    return Outcome {
                        frames,
                        error_at: Some(at),
                        leftover: buf.to_vec(),
                    }
                }
            }
        }
    }
    Outcome {
        frames,
        error_at: None,
        leftover: buf.to_vec(),
    }
}

/// Checks every framing property of one case; panics with a description on
/// the first that fails.
pub fn check(case: &FramingCase) {
    assert!(!case.terms.is_empty(), "a case needs a terminator");
    let got = decode(case);
    let want = reference(case);

    // 1. Frames (and when they come out), the error and the leftover are
    //    exactly the reference's.
    assert_eq!(got, want, "decoder and reference differ on {case:?}");

    // 2. Frames + framing bytes + leftover give back the input, up to the
    //    chunk where the error happened.
    let fed_chunks = got.error_at.map_or(case.chunks.len(), |at| at);
    let fed: Vec<u8> = case.chunks[..fed_chunks].concat();
    let mut rebuilt = Vec::new();
    for (i, (_, frame)) in got.frames.iter().enumerate() {
        match &case.terms[i % case.terms.len()] {
            Term::Delimiter(d) => {
                rebuilt.extend_from_slice(frame);
                rebuilt.extend_from_slice(d);
            }
            Term::LengthPrefixed => {
                rebuilt.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                rebuilt.extend_from_slice(frame);
            }
            Term::Count(_) | Term::None => rebuilt.extend_from_slice(frame),
        }
    }
    rebuilt.extend_from_slice(&got.leftover);
    assert_eq!(rebuilt, fed, "frames + framing + leftover != input");

    // 3. Every frame is within the limit (`None` excepted) and the error
    //    happens only for a frame over it (1. pins down exactly which).
    for (i, (_, frame)) in got.frames.iter().enumerate() {
        let term = &case.terms[i % case.terms.len()];
        if *term != Term::None {
            assert!(
                frame.len() <= case.max,
                "frame {i} of {} bytes over max {}",
                frame.len(),
                case.max
            );
        }
    }

    // 4. Chunking does not matter: without `None` (whose frames are whatever
    //    arrived), the same stream in one piece gives the same frames, the
    //    same error, and the same leftover (at an error, the chunked run has
    //    seen only part of the stream, so its leftover is a prefix).
    if !case.terms.contains(&Term::None) {
        let whole = FramingCase {
            terms: case.terms.clone(),
            max: case.max,
            chunks: vec![case.chunks.concat()],
        };
        let one = decode(&whole);
        let strip = |o: &Outcome| o.frames.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>();
        assert_eq!(strip(&got), strip(&one), "frames depend on the chunking");
        assert_eq!(
            got.error_at.is_some(),
            one.error_at.is_some(),
            "the error depends on the chunking"
        );
        if got.error_at.is_none() {
            assert_eq!(got.leftover, one.leftover, "leftover depends on chunking");
        } else {
            // Refused as soon as known: the rest of the stream never came in.
            assert!(
                one.leftover.starts_with(&got.leftover),
                "leftover at the error depends on chunking"
            );
        }
    }
}
