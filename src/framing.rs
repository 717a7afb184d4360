//! asynchat-style framing: turn a byte stream into frames (records) split by
//! a delimiter, of a fixed length, length-prefixed, or as they come.
//!
//! A [`FrameHandler`] says which terminator applies next and gets each frame
//! as zero-copy [`Bytes`]; [`Framed`] adapts it to a [`Protocol`]. Every
//! frame is bounded by [`FrameHandler::max_frame`]: a peer that sends a line
//! that never ends is disconnected with a reason, not buffered forever (the
//! asynchat DoS of pyftpdlib #3, tokio's unbounded `LinesCodec` #186), unless
//! the handler's [`FrameHandler::on_oversized`] chooses to skip the frame and
//! go on (Twisted's `lineLengthExceeded`).
//!
//! [`Terminator::Raw`] is LineReceiver's raw mode: the bytes go to
//! [`FrameHandler::on_raw`] as they come, and what it leaves in the buffer is
//! framed again by the next terminator (`setRawMode`, `setLineMode(rest)`).
//!
//! ```
//! use sockloop::{Context, Framed, FrameHandler};
//! use bytes::Bytes;
//!
//! /// Replies to every line with its length.
//! struct Lengths;
//! impl FrameHandler for Lengths {
//!     fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
//!         cx.write(format!("{}\n", line.len()).as_bytes());
//!     }
//! }
//! let protocol = Framed::new(Lengths); // give this to Reactor::listen's factory
//! # let _ = protocol;
//! ```

use bytes::{Buf, Bytes, BytesMut};

use crate::{CloseReason, Context, Protocol, TimerId};

/// Where one frame ends. Asked of the handler before each frame, so a handler
/// may switch between frames (a header line, then a body of a given length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminator<'a> {
    /// The frame ends before these bytes (any length; `\n`, `\r\n`...). The
    /// delimiter is removed from the frame.
    Delimiter(&'a [u8]),
    /// The frame is exactly this many bytes (must be at least 1). It stays in
    /// force for the frames after it until the handler changes it (asynchat's
    /// integer terminator fires once); `Count(0)` closes the connection with
    /// [`CloseReason::Protocol`], where asynchat collected everything: use
    /// [`Terminator::None`] for that. An empty `Delimiter` is refused the same way.
    Count(usize),
    /// A 4-byte big-endian length, then that many bytes (the frame).
    LengthPrefixed,
    /// No framing: whatever arrived is one frame, split into frames of at
    /// most [`max_frame`](FrameHandler::max_frame) bytes when more arrived.
    None,
    /// Raw mode (Twisted LineReceiver's `setRawMode`): the buffered bytes
    /// are handed to [`FrameHandler::on_raw`], which takes what it wants and
    /// may switch the terminator back; what it leaves is framed by the next
    /// terminator at once (`setLineMode(rest)`). Bytes it leaves while still
    /// in raw mode wait for more input, up to `max_frame` of them.
    Raw,
}

impl Terminator<'_> {
    /// Why no stream can be framed by this terminator, if so (not a matter
    /// of the peer's input: skipping a frame would not help).
    fn unusable(&self, max: usize) -> Option<&'static str> {
        match self {
            Terminator::Delimiter([]) => Some("empty delimiter"),
            Terminator::Count(0) => Some("a Count terminator must be at least 1"),
            Terminator::None | Terminator::Raw if max == 0 => Some("max_frame is 0"),
            _ => None,
        }
    }
}

/// What [`Framed`] does with a frame over [`FrameHandler::max_frame`]: the
/// answer of [`FrameHandler::on_oversized`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oversized {
    /// Close the connection (after what is queued is sent) with
    /// [`CloseReason::Protocol`]. The default, as Twisted's.
    Close,
    /// Drop the frame, however long it turns out to be (the bytes still to
    /// come are dropped as they arrive, up to its delimiter or announced
    /// length), and go on with the next one.
    Skip,
}

/// A protocol that thinks in frames instead of bytes (asynchat's
/// `found_terminator`). Wrap it in [`Framed`] to serve a connection.
pub trait FrameHandler: 'static {
    /// The terminator of the next frame. Default: a `\n` line.
    fn terminator(&self) -> Terminator<'_> {
        Terminator::Delimiter(b"\n")
    }

    /// The largest frame accepted (without its delimiter or length prefix);
    /// beyond it the connection is closed with [`CloseReason::Protocol`].
    /// Default 64 KiB.
    fn max_frame(&self) -> usize {
        64 * 1024
    }

    /// The longest a frame may take to arrive once its first byte has: a
    /// client that trickles a line byte by byte (slowloris) is closed with
    /// [`CloseReason::Protocol`] when it passes. Default: no limit (the
    /// listener's idle timeout still applies).
    fn frame_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// One complete frame arrived.
    fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes);

    /// A frame is longer than [`max_frame`](FrameHandler::max_frame)
    /// (Twisted's `lineLengthExceeded`). `head` is its start (at most
    /// `max_frame` bytes, without a length prefix). The handler may answer
    /// (`cx.write` an error line) and then says whether to close or to skip
    /// the frame and go on. The default closes with [`CloseReason::Protocol`].
    fn on_oversized(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Oversized {
        let _ = (cx, head);
        Oversized::Close
    }

    /// Bytes arrived while the terminator is [`Terminator::Raw`]: take what
    /// you use from the front of `data` (`split_to`, `advance`) and leave the
    /// rest. After a switch of terminator (in this call) what is left is
    /// framed by the new one at once; without a switch it waits for more
    /// input. The default hands the bytes to
    /// [`on_frame`](FrameHandler::on_frame) in frames of at most `max_frame`
    /// bytes, as [`Terminator::None`] does.
    fn on_raw(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        let n = data.len().min(self.max_frame());
        if n > 0 {
            self.on_frame(cx, data.split_to(n).freeze());
        }
    }

    /// See [`Protocol::on_open`].
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// See [`Protocol::on_eof`]. An incomplete last frame is discarded. The
    /// default closes once the answers still due (offloaded ones included)
    /// are sent: a client that half-closes after its requests gets them all.
    fn on_eof(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// The reactor is shutting down gracefully. Called between frames (at
    /// once, or when the frame under way completes, or when the frames held
    /// back by a pause have been handled). The default closes once the
    /// answers queued so far are sent and the offloaded ones still due
    /// have been delivered and sent (see [`Context::close`]).
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// See [`Protocol::on_drained`].
    fn on_drained(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// See [`Protocol::on_timer`].
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }

    /// See [`Protocol::on_close`].
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = (cx, reason);
    }
}

/// Adapts a [`FrameHandler`] to a [`Protocol`].
pub struct Framed<H> {
    handler: H,
    decoder: FrameDecoder,
    /// Bytes of an incomplete frame are buffered.
    partial: bool,
    /// A graceful shutdown waits for the frame under way.
    shutdown_pending: bool,
    /// Fires if the frame under way takes longer than `frame_timeout`.
    frame_timer: Option<TimerId>,
}

impl<H: FrameHandler> Framed<H> {
    /// Frames the connection for `handler`.
    pub fn new(handler: H) -> Framed<H> {
        Framed {
            handler,
            decoder: FrameDecoder::default(),
            partial: false,
            shutdown_pending: false,
            frame_timer: None,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }
}

impl<H: FrameHandler> Framed<H> {
    /// The decoder refused the frame at the front of `data`: a terminator
    /// that cannot frame anything closes; a frame too long is the
    /// handler's to judge (close, or skip it and go on).
    fn oversized(&mut self, cx: &mut Context<'_>, data: &mut BytesMut, msg: String) {
        let max = self.handler.max_frame();
        let choice = if self.handler.terminator().unusable(max).is_some() {
            Oversized::Close
        } else {
            let prefix = match self.handler.terminator() {
                Terminator::LengthPrefixed => 4.min(data.len()),
                _ => 0,
            };
            let end = data.len().min(prefix.saturating_add(max));
            self.handler.on_oversized(cx, &data[prefix..end])
        };
        if choice == Oversized::Skip
            && !cx.is_closing()
            && self.decoder.skip_frame(data, self.handler.terminator())
        {
            log::debug!("{}: {msg}; skipped", cx.id());
            return;
        }
        log::info!("{}: {msg}; closing", cx.id());
        data.clear();
        cx.close_with(CloseReason::Protocol(msg));
    }
}

impl<H: FrameHandler> Protocol for Framed<H> {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.handler.on_open(cx);
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        // Stop at a close: bytes after a QUIT are not the handler's business.
        // Stop at a pause (the handler's, a full offload pool's, a full write
        // queue's) before the next frame: the rest stays in the buffer and is
        // offered again when reading resumes (Twisted's `pauseProducing`).
        let mut completed = false;
        let mut paused = false;
        while !cx.is_closing() {
            if !cx.is_reading() {
                paused = true;
                break;
            }
            let max = self.handler.max_frame();
            if self.handler.terminator() == Terminator::Raw && !self.decoder.skipping() {
                if data.is_empty() {
                    break;
                }
                let before = data.len();
                self.handler.on_raw(cx, data);
                let switched = self.handler.terminator() != Terminator::Raw;
                if data.len() < before {
                    completed = true;
                } else if !switched {
                    // Kept for more input: bounded like any frame.
                    if data.len() <= max {
                        break;
                    }
                    let msg = format!("raw input kept over the {max}-byte frame limit");
                    self.oversized(cx, data, msg);
                }
                continue;
            }
            let next = self
                .decoder
                .next_frame(data, self.handler.terminator(), max);
            match next {
                Ok(Some(frame)) => {
                    completed = true;
                    self.handler.on_frame(cx, frame);
                }
                Ok(None) => break,
                Err(msg) => self.oversized(cx, data, msg),
            }
        }
        // A frame being skipped is still under way (its rest is dropped as it
        // comes): its clock runs too.
        self.partial = !data.is_empty() || self.decoder.skipping();
        // A frame started (or the one timed ended and another began): its
        // clock starts; no frame under way: no clock. While paused the peer
        // is not being read, so it is not to blame for a slow frame.
        if completed || !self.partial || paused {
            if let Some(timer) = self.frame_timer.take() {
                cx.cancel_timer(timer);
            }
        }
        if self.partial && !paused && self.frame_timer.is_none() {
            if let Some(limit) = self.handler.frame_timeout() {
                self.frame_timer = Some(cx.set_timer(limit));
            }
        }
        if self.shutdown_pending && !self.partial && !cx.is_closing() {
            self.shutdown_pending = false;
            self.handler.on_shutdown(cx);
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        if self.partial {
            self.shutdown_pending = true;
        } else {
            self.handler.on_shutdown(cx);
        }
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) {
        self.handler.on_drained(cx);
    }

    fn on_eof(&mut self, cx: &mut Context<'_>) {
        self.handler.on_eof(cx);
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if self.frame_timer == Some(timer) {
            let limit = self.handler.frame_timeout().unwrap_or_default();
            let msg = format!("a frame took longer than {limit:?} to arrive");
            log::info!("{}: {msg}; closing", cx.id());
            return cx.close_with(CloseReason::Protocol(msg));
        }
        self.handler.on_timer(cx, timer);
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.handler.on_close(cx, reason);
    }
}

/// Cuts frames off the front of a buffer: the framing of [`Framed`], for code
/// that reads bytes by other means (a blocking socket, a file, a fuzzer).
/// Remembers how far a delimiter has been searched for, so a long line
/// trickling in is scanned once, not once per read.
///
/// ```
/// use bytes::BytesMut;
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
    ) -> Result<Option<Bytes>, String> {
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
                    return Err("empty delimiter".into());
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
                    Some(_) => Err(format!("frame longer than the {max}-byte limit")),
                    // Saturating: a limit of usize::MAX means "unbounded".
                    None if buf.len() >= max.saturating_add(delim.len()) => {
                        Err(format!("no delimiter within the {max}-byte frame limit"))
                    }
                    None => {
                        self.scanned = buf.len();
                        Ok(None)
                    }
                }
            }
            Terminator::Count(0) => Err("a Count terminator must be at least 1".into()),
            Terminator::Count(n) if n > max => {
                Err(format!("frame of {n} bytes over the {max}-byte limit"))
            }
            Terminator::Count(n) => Ok((buf.len() >= n).then(|| buf.split_to(n).freeze())),
            Terminator::LengthPrefixed => {
                let Some(header) = buf.get(..4) else {
                    return Ok(None);
                };
                let n = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
                if n > max {
                    return Err(format!("length prefix {n} over the {max}-byte limit"));
                }
                if buf.len() < 4 + n {
                    buf.reserve(4 + n - buf.len());
                    return Ok(None);
                }
                buf.advance(4);
                Ok(Some(buf.split_to(n).freeze()))
            }
            Terminator::None | Terminator::Raw if max == 0 => {
                Err("max_frame is 0: no frame can be delivered".into())
            }
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
    ) -> Result<Vec<Bytes>, String> {
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
        assert!(frames(&huge, 4, Terminator::LengthPrefixed, 64)
            .unwrap_err()
            .contains("limit"));
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
        assert!(err.contains("50-byte"), "{err}");
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
