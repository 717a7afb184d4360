//! How [`Framed`](super::Framed) cuts frames: one path for the handler's
//! terminators and for every [`Decoder`].

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{Decoder, FrameDecoder, FrameError, FrameHandler, Terminator};
use crate::Context;

/// What one step of framing did.
#[doc(hidden)]
#[derive(Debug)]
pub enum Step {
    /// A frame went to the handler (or raw input was taken).
    Completed,
    /// Nothing taken, but the handler switched terminators: frame again.
    Again,
    /// The buffer holds no complete frame.
    NeedMore,
    /// The frame at the front cannot be accepted: why.
    Refused(FrameError),
}

/// The frame cutters [`Framed`](super::Framed) drives: [`FrameDecoder`]
/// (the handler's terminators) and every [`Decoder`]. Sealed: implement
/// [`Decoder`] instead.
pub trait Cut<H>: sealed::Sealed + 'static {
    /// The frames cut.
    type Frame: 'static;
    /// Cuts (and delivers) the next frame, if the buffer holds one.
    #[doc(hidden)]
    fn step(&mut self, handler: &mut H, cx: &mut Context<'_>, data: &mut BytesMut) -> Step;
    /// The start of a refused frame, shown to `on_oversized`; `None` when
    /// nothing can be framed at all (the handler is not asked).
    #[doc(hidden)]
    fn head(&self, handler: &H, data: &[u8]) -> Option<Range<usize>>;
    /// Drops the refused frame; false if it cannot.
    #[doc(hidden)]
    fn skip(&mut self, handler: &H, data: &mut BytesMut) -> bool;
    /// A frame is under way beyond what the buffer holds: the rest of a
    /// refused frame is being dropped, or the decoder took a first part.
    #[doc(hidden)]
    fn under_way(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::FrameDecoder {}
    impl<D: super::Decoder> Sealed for D {}
}

impl<H: FrameHandler<Bytes>> Cut<H> for FrameDecoder {
    type Frame = Bytes;

    fn step(&mut self, handler: &mut H, cx: &mut Context<'_>, data: &mut BytesMut) -> Step {
        let max = handler.max_frame();
        if handler.terminator() == Terminator::Raw && !self.skipping() {
            if data.is_empty() {
                return Step::NeedMore;
            }
            let before = data.len();
            handler.on_raw(cx, data);
            let switched = handler.terminator() != Terminator::Raw;
            if data.len() < before {
                return Step::Completed;
            }
            if switched {
                return Step::Again;
            }
            // Kept for more input: bounded like any frame.
            if data.len() <= max {
                return Step::NeedMore;
            }
            return Step::Refused(FrameError::TooLong {
                limit: max,
                length: None,
            });
        }
        match self.next_frame(data, handler.terminator(), max) {
            Ok(Some(frame)) => {
                handler.on_frame(cx, frame);
                Step::Completed
            }
            Ok(None) => Step::NeedMore,
            Err(e) => Step::Refused(e),
        }
    }

    fn head(&self, handler: &H, data: &[u8]) -> Option<Range<usize>> {
        let max = handler.max_frame();
        let term = handler.terminator();
        if term.unusable(max).is_some() {
            return None;
        }
        let prefix = match term {
            Terminator::LengthPrefixed => 4.min(data.len()),
            _ => 0,
        };
        Some(prefix..data.len().min(prefix.saturating_add(max)))
    }

    fn skip(&mut self, handler: &H, data: &mut BytesMut) -> bool {
        self.skip_frame(data, handler.terminator())
    }

    fn under_way(&self) -> bool {
        self.skipping()
    }
}

impl<H: FrameHandler<D::Frame>, D: Decoder> Cut<H> for D {
    type Frame = D::Frame;

    fn step(&mut self, handler: &mut H, cx: &mut Context<'_>, data: &mut BytesMut) -> Step {
        if !self.skipping() && data.is_empty() {
            return Step::NeedMore;
        }
        match self.decode(data, handler.max_frame()) {
            Ok(Some(frame)) => {
                handler.on_frame(cx, frame);
                Step::Completed
            }
            Ok(None) => Step::NeedMore,
            Err(e) => Step::Refused(e),
        }
    }

    fn head(&self, handler: &H, data: &[u8]) -> Option<Range<usize>> {
        Some(0..data.len().min(handler.max_frame()))
    }

    fn skip(&mut self, _handler: &H, data: &mut BytesMut) -> bool {
        self.skip_frame(data)
    }

    fn under_way(&self) -> bool {
        self.skipping() || self.in_frame()
    }
}
