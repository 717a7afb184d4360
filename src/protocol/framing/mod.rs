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
//! use sockloop::bytes::Bytes;
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

use bytes::{Bytes, BytesMut};

use crate::{CloseReason, Context, Protocol, TimerId};

mod codecs;
mod cut;
mod decoder;
mod http;
mod resp;

pub use codecs::{Decoder, Netstrings};
pub use cut::Cut;
use cut::Step;

pub use decoder::{FrameDecoder, FrameError};
pub use http::{HttpError, HttpRequest, HttpRequests};
pub use resp::{Resp, RespCommand};

/// Where one frame ends. Asked of the handler before each frame, so a handler
/// may switch between frames (a header line, then a body of a given length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    pub(crate) fn unusable(&self, max: usize) -> Option<&'static str> {
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
#[non_exhaustive]
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
///
/// `F` is the type of a frame: [`Bytes`] for the terminators of
/// [`terminator`](FrameHandler::terminator) ([`Framed::new`]), or what a
/// [`Decoder`] cuts ([`Framed::with_decoder`]: a RESP command, an HTTP
/// request...). With a decoder, `terminator` and `on_raw` are not used.
pub trait FrameHandler<F: 'static = Bytes>: 'static {
    /// The terminator of the next frame. Default: a `\n` line.
    fn terminator(&self) -> Terminator<'_> {
        Terminator::Delimiter(b"\n")
    }

    /// The largest frame accepted (without its delimiter or length prefix;
    /// a decoder says what it counts); beyond it the connection is closed
    /// with [`CloseReason::Protocol`]. Default 64 KiB.
    fn max_frame(&self) -> usize {
        64 * 1024
    }

    /// The longest a frame may take to arrive once its first byte has: a
    /// client that trickles a line byte by byte (slowloris) is closed with
    /// [`CloseReason::Protocol`] when it passes (after
    /// [`on_frame_timeout`](FrameHandler::on_frame_timeout)). It is a
    /// deadline for the whole frame, not for each read: bytes arriving do
    /// not extend it, and a decoder's frame in several parts (an HTTP head,
    /// then its body) is one frame (see [`Decoder::in_frame`]). Each frame
    /// gets its own deadline; while reading is paused the clock stops (the
    /// peer is not being read) and starts afresh when reading resumes.
    /// Default: no limit (the listener's idle timeout still applies).
    fn frame_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// One complete frame arrived.
    fn on_frame(&mut self, cx: &mut Context<'_>, frame: F);

    /// A frame is longer than [`max_frame`](FrameHandler::max_frame)
    /// (Twisted's `lineLengthExceeded`), or a decoder refused it. `head` is its start (at most
    /// `max_frame` bytes, without a length prefix). The handler may answer
    /// (`cx.write` an error line) and then says whether to close or to skip
    /// the frame and go on (when the decoder can find where it ends). The default closes with [`CloseReason::Protocol`].
    fn on_oversized(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Oversized {
        let _ = (cx, head);
        Oversized::Close
    }

    /// The frame at the front was refused, and `error` says why: too long
    /// ([`FrameError::TooLong`]), or not in the decoder's format
    /// ([`FrameError::Malformed`], whose text a RESP server sends back as
    /// `-ERR ...`). The same choice as
    /// [`on_oversized`](FrameHandler::on_oversized), which the default
    /// calls: override this one to answer with the reason.
    fn on_refused(&mut self, cx: &mut Context<'_>, error: &FrameError, head: &[u8]) -> Oversized {
        let _ = error;
        self.on_oversized(cx, head)
    }

    /// The frame under way missed its [`frame_timeout`](FrameHandler::frame_timeout):
    /// the handler may write a last answer (an HTTP server's
    /// `408 Request Timeout`); the connection is then closed with
    /// [`CloseReason::Protocol`] whatever it does, after what is queued is
    /// sent. The default writes nothing.
    fn on_frame_timeout(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
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
            // Raw mode belongs to the terminators, whose frames are `Bytes`;
            // with any other frame type this is never called.
            let mut piece = Some(data.split_to(n).freeze());
            let any: &mut dyn std::any::Any = &mut piece;
            if let Some(frame) = any.downcast_mut::<Option<F>>().and_then(Option::take) {
                self.on_frame(cx, frame);
            }
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
    /// back by a pause have been handled), so a handler that closes here
    /// (`cx.close()`: after the answers queued so far are sent and the
    /// offloaded ones still due have been delivered and sent) never cuts a
    /// request short. The default does nothing, as
    /// [`Protocol::on_shutdown`]'s: the connection is served until its peer
    /// closes or the shutdown's deadline passes.
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
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

/// Adapts a [`FrameHandler`] to a [`Protocol`]: frames are cut by `D`, the
/// handler's terminators ([`FrameDecoder`], [`Framed::new`]) or a
/// [`Decoder`] ([`Framed::with_decoder`]), with the same frame bound,
/// frame timeout, pause and shutdown rules for both.
pub struct Framed<H, D = FrameDecoder> {
    handler: H,
    decoder: D,
    /// Bytes of an incomplete frame are buffered.
    partial: bool,
    /// A graceful shutdown waits for the frame under way.
    shutdown_pending: bool,
    /// Fires if the frame under way takes longer than `frame_timeout`.
    frame_timer: Option<TimerId>,
}

impl<H: FrameHandler> Framed<H> {
    /// Frames the connection for `handler`, by its terminators.
    pub fn new(handler: H) -> Framed<H> {
        Framed::with_decoder(FrameDecoder::default(), handler)
    }
}

impl<H, D> Framed<H, D> {
    /// Frames the connection for `handler` with `decoder` (RESP, HTTP
    /// requests, netstrings, or your own [`Decoder`]).
    ///
    /// ```
    /// use sockloop::{Context, FrameHandler, Framed, Netstrings};
    /// use bytes::Bytes;
    ///
    /// struct Echo;
    /// impl FrameHandler for Echo {
    ///     fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes) {
    ///         cx.write(format!("{}:", frame.len()).as_bytes());
    ///         cx.write_bytes(frame);
    ///         cx.write(b",");
    ///     }
    /// }
    /// let protocol = Framed::with_decoder(Netstrings::default(), Echo);
    /// # let _ = protocol;
    /// ```
    pub fn with_decoder(decoder: D, handler: H) -> Framed<H, D> {
        Framed {
            handler,
            decoder,
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

impl<H: FrameHandler<D::Frame>, D: Cut<H>> Framed<H, D> {
    /// The decoder refused the frame at the front of `data`: a terminator
    /// that cannot frame anything closes; a frame too long is the
    /// handler's to judge (close, or skip it and go on).
    fn oversized(&mut self, cx: &mut Context<'_>, data: &mut BytesMut, error: FrameError) {
        let choice = match self.decoder.head(&self.handler, data) {
            None => Oversized::Close,
            Some(range) => self.handler.on_refused(cx, &error, &data[range]),
        };
        let msg = error.to_string();
        if choice == Oversized::Skip && !cx.is_closing() && self.decoder.skip(&self.handler, data) {
            log::debug!("{}: {msg}; skipped", cx.id());
            return;
        }
        log::info!("{}: {msg}; closing", cx.id());
        data.clear();
        // The rest of the refused frame may still be on its way: read and
        // drop it, whatever `lingering_close` says, so that no reset takes
        // the answer from the peer.
        cx.set_lingering_close(crate::LingeringClose::Always);
        cx.close_with(CloseReason::Protocol(msg));
    }
}

impl<H: FrameHandler<D::Frame>, D: Cut<H>> Protocol for Framed<H, D> {
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
            match self.decoder.step(&mut self.handler, cx, data) {
                Step::Completed => completed = true,
                Step::Again => {}
                Step::NeedMore => break,
                Step::Refused(error) => self.oversized(cx, data, error),
            }
        }
        // A frame being skipped (its rest is dropped as it comes), or one
        // whose first part the decoder already took (an HTTP head waiting for
        // its body), is still under way: its clock runs on.
        self.partial = !data.is_empty() || self.decoder.under_way();
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
            self.frame_timer = None;
            self.handler.on_frame_timeout(cx);
            // A frame is under way: its rest may still come (see `oversized`).
            cx.set_lingering_close(crate::LingeringClose::Always);
            return cx.close_with(CloseReason::Protocol(msg));
        }
        self.handler.on_timer(cx, timer);
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.handler.on_close(cx, reason);
    }
}

/// Shows the handler's type, not its value: a handler need not be `Debug`.
impl<H, D: std::fmt::Debug> std::fmt::Debug for Framed<H, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed")
            .field("handler", &std::any::type_name::<H>())
            .field("decoder", &self.decoder)
            .field("partial", &self.partial)
            .field("shutdown_pending", &self.shutdown_pending)
            .finish()
    }
}
