//! [`Decoder`]: framing beyond terminators, and [`Netstrings`].

use bytes::{Buf, BytesMut};

use super::FrameError;

/// Cuts frames of a format off the front of a buffer, for
/// [`Framed::with_decoder`](super::Framed::with_decoder): a length-headed
/// format ([`Resp`](super::Resp), [`Netstrings`]), a head and a body
/// ([`HttpRequests`](super::HttpRequests)), or your own.
///
/// `decode` takes one frame off the front of `buf` (zero-copy: split and
/// freeze) and leaves the rest; `Ok(None)` while the frame is incomplete
/// (its bytes stay in `buf`, and the decoder may remember how far it has
/// looked, so a frame trickling in is scanned once). A frame over `max`
/// bytes (the handler's [`max_frame`](super::FrameHandler::max_frame)), or
/// input the format cannot frame, is an `Err` with the reason: the handler's
/// `on_oversized` then closes, or skips the frame if
/// [`skip_frame`](Decoder::skip_frame) can find its end. The reason is a
/// [`FrameError`]: `TooLong` for a frame over `max`, `Malformed` for input
/// that is not in the format.
///
/// ```
/// use sockloop::bytes::{Bytes, BytesMut};
/// use sockloop::{Decoder, FrameError};
///
/// /// One byte of length, then that many bytes.
/// struct Short;
/// impl Decoder for Short {
///     type Frame = Bytes;
///     fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
///         let Some(&n) = buf.first() else { return Ok(None) };
///         if usize::from(n) > max {
///             return Err(FrameError::TooLong { limit: max, length: Some(n.into()) });
///         }
///         if buf.len() <= usize::from(n) {
///             return Ok(None);
///         }
///         let _ = buf.split_to(1);
///         Ok(Some(buf.split_to(n.into()).freeze()))
///     }
/// }
/// let mut buf = BytesMut::from(&b"\x03abc\x01"[..]);
/// assert_eq!(Short.decode(&mut buf, 64).unwrap().unwrap(), "abc");
/// assert_eq!(Short.decode(&mut buf, 64).unwrap(), None);
/// ```
pub trait Decoder: 'static {
    /// What one frame is.
    type Frame: 'static;

    /// The next complete frame, `Ok(None)` if more bytes are needed, or why
    /// the frame at the front cannot be accepted.
    fn decode(&mut self, buf: &mut BytesMut, max: usize)
        -> Result<Option<Self::Frame>, FrameError>;

    /// Drops the frame `decode` just refused, what is buffered of it now
    /// and the rest as it arrives, so that decoding can go on after it.
    /// False (the default) when its end cannot be known: the connection
    /// is closed.
    #[must_use = "false: the frame's end cannot be found, decoding cannot go on"]
    fn skip_frame(&mut self, buf: &mut BytesMut) -> bool {
        let _ = buf;
        false
    }

    /// True while the rest of a skipped frame is being dropped (a frame
    /// under way, for the frame timeout).
    fn skipping(&self) -> bool {
        false
    }

    /// True while a frame is under way that the buffer does not show: the
    /// decoder took its first part off the buffer (an HTTP head waiting
    /// for its body) or dropped bytes that begin it (empty lines before a
    /// request line). The frame timeout runs while this is true or bytes
    /// are buffered, so a frame in parts gets one deadline, not one per
    /// part. Default false.
    fn in_frame(&self) -> bool {
        false
    }
}

/// Netstrings (D. J. Bernstein): `12:hello world!,` is the frame
/// `hello world!`. The announced length is bounded by `max_frame` before
/// any of the body is buffered; a refused netstring can be skipped.
#[derive(Debug, Default)]
pub struct Netstrings {
    /// Bytes of a skipped netstring still to drop (body and comma).
    skip: usize,
    /// The length of the refused netstring, once its header was read.
    refused: Option<(usize, usize)>,
}

/// The longest header: the digits of `usize::MAX` and the colon.
const MAX_HEADER: usize = 21;

impl Netstrings {
    /// The header at the front: `Ok(Some((header_len, body_len)))`.
    fn header(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
        let Some(colon) = buf.iter().take(MAX_HEADER).position(|&b| b == b':') else {
            if buf.len() >= MAX_HEADER || buf.iter().any(|b| !b.is_ascii_digit()) {
                return Err(not_a_number());
            }
            return Ok(None);
        };
        let digits = &buf[..colon];
        let valid = !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && (digits.len() == 1 || digits[0] != b'0');
        let n = std::str::from_utf8(digits)
            .ok()
            .filter(|_| valid)
            .and_then(|d| d.parse::<usize>().ok())
            .ok_or_else(not_a_number)?;
        Ok(Some((colon + 1, n)))
    }
}

fn not_a_number() -> FrameError {
    FrameError::Malformed("netstring length is not a number".into())
}

impl Decoder for Netstrings {
    type Frame = bytes::Bytes;

    fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<bytes::Bytes>, FrameError> {
        if self.skip > 0 {
            let k = self.skip.min(buf.len());
            buf.advance(k);
            self.skip -= k;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let Some((head, n)) = Netstrings::header(buf)? else {
            return Ok(None);
        };
        if n > max {
            self.refused = Some((head, n));
            return Err(FrameError::TooLong {
                limit: max,
                length: Some(n),
            });
        }
        let total = head + n + 1;
        if buf.len() < total {
            return Ok(None);
        }
        if buf[total - 1] != b',' {
            return Err(FrameError::Malformed(
                "netstring does not end with ','".into(),
            ));
        }
        buf.advance(head);
        let frame = buf.split_to(n).freeze();
        buf.advance(1);
        Ok(Some(frame))
    }

    fn skip_frame(&mut self, buf: &mut BytesMut) -> bool {
        let Some((head, n)) = self.refused.take() else {
            return false;
        };
        self.skip = head + n + 1;
        let k = self.skip.min(buf.len());
        buf.advance(k);
        self.skip -= k;
        true
    }

    fn skipping(&self) -> bool {
        self.skip > 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feeds `input` in chunks and collects frames; refused ones are skipped.
    pub(crate) fn feed<D: Decoder>(
        decoder: &mut D,
        input: &[u8],
        chunk: usize,
        max: usize,
    ) -> (Vec<D::Frame>, Vec<FrameError>) {
        let mut buf = BytesMut::new();
        let (mut out, mut errs) = (Vec::new(), Vec::new());
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf, max) {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(e) => {
                        errs.push(e);
                        if !decoder.skip_frame(&mut buf) {
                            return (out, errs);
                        }
                    }
                }
            }
        }
        (out, errs)
    }

    #[test]
    fn netstrings_split_anywhere_and_skip_long_ones() {
        let input = b"5:hello,0:,12:hello world!,3:abc,";
        for chunk in 1..=input.len() {
            let (got, errs) = feed(&mut Netstrings::default(), input, chunk, 8);
            assert_eq!(got, vec!["hello", "", "abc"], "chunk {chunk}");
            assert_eq!(errs.len(), 1, "{errs:?}");
        }
    }

    #[test]
    fn bad_netstrings_are_refused() {
        for bad in [
            &b"x:abc,"[..],
            b"03:abc,",
            b"3:abcd",
            b":abc,",
            b"99999999999999999999999:",
        ] {
            let (got, errs) = feed(&mut Netstrings::default(), bad, 1, 1 << 20);
            assert!(
                got.is_empty() && errs.len() == 1,
                "{bad:?}: {got:?} {errs:?}"
            );
        }
    }
}
