//! [`FrameDecoder`]: cutting frames off the front of a buffer, for [`super::Framed`]
//! and for code that reads bytes by other means.

use bytes::{Buf, Bytes, BytesMut};

use super::Terminator;

/// Cuts frames off the front of a buffer: the framing of [`Framed`](super::Framed), for code
/// that reads bytes by other means (a blocking socket, a file, a fuzzer).
/// Remembers how far a delimiter has been searched for, so a long line
/// trickling in is scanned once, not once per read.
///
/// ```
/// use sockloop::bytes::BytesMut;
/// use sockloop::{FrameDecoder, Terminator};
///
/// let mut decoder = FrameDecoder::default();
/// let mut buf = BytesMut::from(&b"one\r\ntw"[..]);
/// let crlf = Terminator::Delimiter(b"\r\n");
/// assert_eq!(decoder.next_frame(&mut buf, crlf, 1024).unwrap().unwrap(), "one");
/// assert_eq!(decoder.next_frame(&mut buf, crlf, 1024).unwrap(), None); // "tw" waits
/// ```
#[derive(Debug, Default)]
pub struct FrameDecoder {
    scanned: usize,
    /// Which delimiter `scanned` was searched for: a handler may change its
    /// terminator at any time (in `on_timer`, say), and an offset searched
    /// for another delimiter would skip a match.
    scanned_for: u64,
    /// The rest of a refused frame still to drop (see `skip_frame`).
    skip: Skip,
}

/// Why [`FrameDecoder::next_frame`] refused the input.
///
/// ```
/// use sockloop::bytes::BytesMut;
/// use sockloop::{FrameDecoder, FrameError, Terminator};
///
/// let mut buf = BytesMut::from(&b"a line far too long\n"[..]);
/// let err = FrameDecoder::default()
///     .next_frame(&mut buf, Terminator::Delimiter(b"\n"), 8)
///     .unwrap_err();
/// assert_eq!(err, FrameError::TooLong { limit: 8, length: Some(19) });
/// assert_eq!(err.to_string(), "frame of 19 bytes over the 8-byte limit");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame at the front of the buffer is longer than the limit
    /// ([`FrameDecoder::skip_frame`] or [`Decoder::skip_frame`](super::Decoder::skip_frame)
    /// drops it, if its end can be found).
    TooLong {
        /// The limit given to `next_frame` or `decode`.
        limit: usize,
        /// The frame's length, when known (a count, a length prefix, a
        /// delimiter found past the limit); `None` when the frame's end (a
        /// delimiter, a complete header) did not come within the limit.
        length: Option<usize>,
    },
    /// The terminator cannot frame any stream (an empty delimiter,
    /// `Count(0)`, `None` or `Raw` with a limit of 0): the handler's
    /// mistake, not the peer's.
    BadTerminator(&'static str),
    /// The input is not in the [`Decoder`](super::Decoder)'s format; the
    /// text says how (a RESP server can send it back as `-ERR ...`).
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong {
                limit,
                length: Some(n),
            } => write!(f, "frame of {n} bytes over the {limit}-byte limit"),
            FrameError::TooLong {
                limit,
                length: None,
            } => write!(f, "no frame end within the {limit}-byte limit"),
            FrameError::BadTerminator(why) => f.write_str(why),
            FrameError::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for FrameError {}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Skip {
    #[default]
    No,
    /// Up to and including the next delimiter.
    ToDelimiter,
    /// This many more bytes.
    Bytes(usize),
}

/// A cheap fingerprint of a delimiter (FNV-1a).
fn fingerprint(delim: &[u8]) -> u64 {
    delim.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl FrameDecoder {
    /// Drops the frame at the front of `buf` that [`next_frame`] refused as
    /// too long, however long it turns out: what is buffered now, and the
    /// rest as it arrives (up to and including its delimiter, or up to its
    /// count or announced length); then framing goes on with the next frame.
    /// False when there is no such frame to drop (`buf` is left alone).
    ///
    /// [`next_frame`]: FrameDecoder::next_frame
    #[must_use = "false: there is no refused frame to drop, and the next call refuses it again"]
    pub fn skip_frame(&mut self, buf: &mut BytesMut, terminator: Terminator<'_>) -> bool {
        self.skip = match terminator {
            Terminator::Delimiter(d) if !d.is_empty() => Skip::ToDelimiter,
            Terminator::Count(n) if n > 0 => Skip::Bytes(n),
            Terminator::LengthPrefixed => match buf.get(..4) {
                Some(header) => {
                    let n = u32::from_be_bytes(header.try_into().expect("4 bytes"));
                    buf.advance(4);
                    Skip::Bytes(n as usize)
                }
                None => return false,
            },
            Terminator::None | Terminator::Raw if !buf.is_empty() => Skip::Bytes(buf.len()),
            _ => return false,
        };
        self.scanned = 0;
        self.skip_some(buf, terminator);
        true
    }

    /// True while the rest of a refused frame is being dropped.
    pub fn skipping(&self) -> bool {
        self.skip != Skip::No
    }

    /// Drops what `buf` holds of a frame being skipped; true when it is all gone.
    fn skip_some(&mut self, buf: &mut BytesMut, terminator: Terminator<'_>) -> bool {
        match (self.skip, terminator) {
            (Skip::No, _) => true,
            (Skip::Bytes(n), _) => {
                let k = n.min(buf.len());
                buf.advance(k);
                self.skip = if n == k { Skip::No } else { Skip::Bytes(n - k) };
                n == k
            }
            (Skip::ToDelimiter, Terminator::Delimiter(d)) if !d.is_empty() => {
                match memchr::memmem::find(buf, d) {
                    Some(at) => {
                        buf.advance(at + d.len());
                        self.skip = Skip::No;
                        true
                    }
                    None => {
                        // Keep what could be the start of a delimiter.
                        let keep = (d.len() - 1).min(buf.len());
                        buf.advance(buf.len() - keep);
                        false
                    }
                }
            }
            // The terminator changed meanwhile: the old frame is over.
            (Skip::ToDelimiter, _) => {
                self.skip = Skip::No;
                true
            }
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or why
    /// the stream cannot be framed (a frame over `max` bytes, a bad
    /// terminator). Bytes of an incomplete frame stay in `buf`.
    pub fn next_frame(
        &mut self,
        buf: &mut BytesMut,
        terminator: Terminator<'_>,
        max: usize,
    ) -> Result<Option<Bytes>, FrameError> {
        if !self.skip_some(buf, terminator) {
            return Ok(None);
        }
        let print = match terminator {
            Terminator::Delimiter(delim) => fingerprint(delim),
            _ => 0,
        };
        if print != self.scanned_for {
            self.scanned = 0;
            self.scanned_for = print;
        }
        match terminator {
            Terminator::Delimiter(delim) => {
                if delim.is_empty() {
                    return Err(FrameError::BadTerminator("empty delimiter"));
                }
                // A delimiter may straddle the old end: back up by its length - 1.
                let start = self.scanned.saturating_sub(delim.len() - 1).min(buf.len());
                match memchr::memmem::find(&buf[start..], delim) {
                    Some(at) if start + at <= max => {
                        self.scanned = 0;
                        let frame = buf.split_to(start + at).freeze();
                        buf.advance(delim.len());
                        Ok(Some(frame))
                    }
                    Some(at) => Err(FrameError::TooLong {
                        limit: max,
                        length: Some(start + at),
                    }),
                    // Saturating: a limit of usize::MAX means "unbounded".
                    None if buf.len() >= max.saturating_add(delim.len()) => {
                        Err(FrameError::TooLong {
                            limit: max,
                            length: None,
                        })
                    }
                    None => {
                        self.scanned = buf.len();
                        Ok(None)
                    }
                }
            }
            Terminator::Count(0) => Err(FrameError::BadTerminator(
                "a Count terminator must be at least 1",
            )),
            Terminator::Count(n) if n > max => Err(FrameError::TooLong {
                limit: max,
                length: Some(n),
            }),
            Terminator::Count(n) => Ok((buf.len() >= n).then(|| buf.split_to(n).freeze())),
            Terminator::LengthPrefixed => {
                let Some(header) = buf.get(..4) else {
                    return Ok(None);
                };
                let n = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
                if n > max {
                    return Err(FrameError::TooLong {
                        limit: max,
                        length: Some(n),
                    });
                }
                if buf.len() < 4 + n {
                    return Ok(None);
                }
                buf.advance(4);
                Ok(Some(buf.split_to(n).freeze()))
            }
            Terminator::None | Terminator::Raw if max == 0 => Err(FrameError::BadTerminator(
                "max_frame is 0: no frame can be delivered",
            )),
            // Bounded like every frame: what arrived, in pieces of at most `max`.
            Terminator::None | Terminator::Raw => {
                Ok((!buf.is_empty()).then(|| buf.split_to(buf.len().min(max)).freeze()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes and collects the frames.
    fn frames(
        input: &[u8],
        chunk: usize,
        term: Terminator<'_>,
        max: usize,
    ) -> Result<Vec<Bytes>, FrameError> {
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decoder.next_frame(&mut buf, term, max)? {
                out.push(frame);
            }
        }
        Ok(out)
    }

    #[test]
    fn delimiters_split_anywhere() {
        for delim in [&b"\n"[..], b"\r\n", b"qqq"] {
            let mut input = Vec::new();
            for part in [&b"hello world"[..], b"I'm not dead yet!"] {
                input.extend_from_slice(part);
                input.extend_from_slice(delim);
            }
            for chunk in 1..=input.len() {
                let got = frames(&input, chunk, Terminator::Delimiter(delim), 1024).unwrap();
                assert_eq!(
                    got,
                    vec!["hello world", "I'm not dead yet!"],
                    "delim {delim:?} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn delimiter_prefix_that_is_not_a_delimiter() {
        let got = frames(b"aqqbqqq", 1, Terminator::Delimiter(b"qqq"), 64).unwrap();
        assert_eq!(got, vec!["aqqb"]);
    }

    #[test]
    fn changing_the_terminator_mid_line_skips_nothing() {
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        let line = Terminator::Delimiter(b"\n");
        assert_eq!(decoder.next_frame(&mut buf, line, 64).unwrap(), None); // scanned "abcdef"
                                                                           // The handler switches to a count, then back, before the newline comes.
        assert_eq!(
            decoder
                .next_frame(&mut buf, Terminator::Count(2), 64)
                .unwrap()
                .unwrap(),
            "ab"
        );
        buf.extend_from_slice(b"\nx\n");
        assert_eq!(
            decoder.next_frame(&mut buf, line, 64).unwrap().unwrap(),
            "cdef"
        );
        assert_eq!(
            decoder.next_frame(&mut buf, line, 64).unwrap().unwrap(),
            "x"
        );
        // A different delimiter searches afresh.
        let mut buf = BytesMut::from(&b"a;b"[..]);
        assert_eq!(
            decoder
                .next_frame(&mut buf, Terminator::Delimiter(b"|"), 64)
                .unwrap(),
            None
        );
        assert_eq!(
            decoder
                .next_frame(&mut buf, Terminator::Delimiter(b";"), 64)
                .unwrap()
                .unwrap(),
            "a"
        );
    }

    #[test]
    fn empty_line_is_an_empty_frame() {
        let got = frames(
            b"hello world\n\nI'm not dead yet!\n",
            3,
            Terminator::Delimiter(b"\n"),
            64,
        )
        .unwrap();
        assert_eq!(got, vec!["hello world", "", "I'm not dead yet!"]);
    }

    #[test]
    fn counts_and_none() {
        let data = b"hello world, I'm not dead yet!\n";
        assert_eq!(
            frames(data, 5, Terminator::Count(6), 64).unwrap()[0],
            "hello "
        );
        assert_eq!(
            frames(data, 5, Terminator::Count(1), 64).unwrap().len(),
            data.len()
        );
        let raw = frames(data, 7, Terminator::None, 64).unwrap();
        assert_eq!(raw.concat(), data.to_vec());
        assert!(frames(data, 5, Terminator::Count(0), 64).is_err());
    }

    #[test]
    fn length_prefixed() {
        let mut input = Vec::new();
        for msg in [&b"abc"[..], b"", b"defgh"] {
            input.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            input.extend_from_slice(msg);
        }
        for chunk in 1..=input.len() {
            assert_eq!(
                frames(&input, chunk, Terminator::LengthPrefixed, 64).unwrap(),
                vec!["abc", "", "defgh"]
            );
        }
        let huge = 1_000_000u32.to_be_bytes();
        assert_eq!(
            frames(&huge, 4, Terminator::LengthPrefixed, 64).unwrap_err(),
            FrameError::TooLong {
                limit: 64,
                length: Some(1_000_000)
            }
        );
    }

    /// Feeds `input` in chunks; a refused frame is skipped.
    fn frames_skipping(input: &[u8], chunk: usize, term: Terminator<'_>, max: usize) -> Vec<Bytes> {
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.next_frame(&mut buf, term, max) {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => break,
                    Err(_) => assert!(decoder.skip_frame(&mut buf, term)),
                }
            }
        }
        out
    }

    #[test]
    fn skipped_frames_end_at_their_delimiter_or_length() {
        let input = b"ok\r\nxxxxxxxxxxxxxxxxxxxxxxxxx\r\nfine\r\nyyyyyyyyyy\r\r\n\r\nend\r\n";
        for chunk in 1..=input.len() {
            let got = frames_skipping(input, chunk, Terminator::Delimiter(b"\r\n"), 8);
            assert_eq!(got, vec!["ok", "fine", "", "end"], "chunk {chunk}");
        }
        let input = b"abcd0123456789wxyz";
        for chunk in 1..=input.len() {
            // Every 6-byte frame is over the limit of 4: all skipped, exactly.
            let got = frames_skipping(input, chunk, Terminator::Count(6), 4);
            assert!(got.is_empty(), "chunk {chunk}");
        }
        let mut input = Vec::new();
        for msg in [&b"abc"[..], &[b'q'; 40], b"", b"de"] {
            input.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            input.extend_from_slice(msg);
        }
        for chunk in 1..=input.len() {
            let got = frames_skipping(&input, chunk, Terminator::LengthPrefixed, 8);
            assert_eq!(got, vec!["abc", "", "de"], "chunk {chunk}");
        }
        let mut decoder = FrameDecoder::default();
        assert!(!decoder.skip_frame(&mut BytesMut::new(), Terminator::Count(0)));
        assert!(!decoder.skipping());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let long = vec![b'x'; 100];
        let err = frames(&long, 7, Terminator::Delimiter(b"\r\n"), 50).unwrap_err();
        let no_delimiter = FrameError::TooLong {
            limit: 50,
            length: None,
        };
        assert_eq!(err, no_delimiter);
        assert_eq!(err.to_string(), "no frame end within the 50-byte limit");
        // Exactly at the limit is fine, even when the delimiter arrives late.
        let mut ok = vec![b'x'; 50];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(
            frames(&ok, 1, Terminator::Delimiter(b"\r\n"), 50)
                .unwrap()
                .len(),
            1
        );
        assert!(frames(&long, 7, Terminator::Count(51), 50).is_err());
    }

    #[test]
    fn raw_frames_are_bounded_by_max_frame() {
        let data = b"abcdefghijklmnopqrstuvwxyz";
        let raw = frames(data, 26, Terminator::None, 2).unwrap();
        assert!(raw.iter().all(|f| f.len() <= 2), "{raw:?}");
        assert_eq!(raw.concat(), data.to_vec(), "nothing lost");
        assert!(frames(data, 26, Terminator::None, 0).is_err());
    }

    #[test]
    fn an_unbounded_limit_does_not_wrap() {
        // `max + delim.len()` wrapped to 1: every line that came in pieces was refused.
        let line = b"hello world\r\n";
        let got = frames(line, 3, Terminator::Delimiter(b"\r\n"), usize::MAX).unwrap();
        assert_eq!(got, vec!["hello world"]);
    }
}
