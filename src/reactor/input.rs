//! Input a protocol leaves unconsumed (an incomplete frame) after
//! `on_data`: kept with its connection in storage that costs about what it
//! holds (docs/design.md, "Input kept for a partial frame"), and the shared
//! read buffer put back for the next read.

use std::mem;

use bytes::BytesMut;

use crate::reactor::conn::Closing;
use crate::reactor::{BUFFER_POOL, KEPT_BLOCK, KEPT_SLACK};
use crate::{CloseReason, ConnId, Reactor};

impl Reactor {
    /// Puts the shared read buffer back in its place, which holds the empty
    /// placeholder `mem::take` left: nothing to drop (saves the drop glue on
    /// every read; anything else there is dropped as usual).
    #[inline]
    pub(crate) fn return_scratch(&mut self, buf: BytesMut) {
        let placeholder = mem::replace(&mut self.scratch, buf);
        if placeholder.capacity() == 0 {
            mem::forget(placeholder);
        }
    }

    /// Puts a read buffer back after `on_data`: what the protocol left stays
    /// with the connection, in a buffer that costs about what it holds
    /// (docs/design.md, "Input kept for a partial frame"): a few bytes in a
    /// small buffer of the pool, more in one of their size; the connection's
    /// own buffer (a long frame read in place) only while at least about
    /// half of it is input. An empty buffer goes back to the shared one.
    #[inline]
    pub(crate) fn keep_unconsumed(&mut self, key: usize, buf: BytesMut, own: bool) {
        // The common case (an echo consumed all of the shared buffer): inline.
        if !own && buf.is_empty() {
            return self.return_scratch(buf);
        }
        self.keep_unconsumed_other(key, buf, own);
    }

    #[inline(never)]
    fn keep_unconsumed_other(&mut self, key: usize, mut buf: BytesMut, own: bool) {
        let len = buf.len();
        if len == 0 {
            if !own {
                buf.clear();
                self.return_scratch(buf);
            }
            return;
        }
        let kept = if own {
            // What the buffer holds from where this read (or redelivery)
            // started: its spare room and what the protocol consumed.
            let end = buf.as_ptr() as usize + buf.capacity();
            let held = end - self.read_block.0.min(buf.as_ptr() as usize);
            if held <= 2 * len + KEPT_SLACK {
                buf
            } else {
                self.kept_copy(&buf)
            }
        } else {
            let kept = self.kept_copy(&buf);
            buf.clear();
            self.scratch = buf;
            kept
        };
        if let Some(conn) = self.conn_at(key) {
            // Left because the protocol paused (not an incomplete frame):
            // offered again when reading resumes.
            conn.redeliver = conn.paused();
            match conn.opts.max_unconsumed {
                Some(limit)
                    if len > limit && !conn.redeliver && matches!(conn.closing, Closing::No) =>
                {
                    log::info!(
                        "{}: {len} bytes of input unconsumed, over the {limit}-byte limit; closing",
                        ConnId::new(key, conn.gen)
                    );
                    let reason = CloseReason::InputOverLimit { limit };
                    self.close_at(key, Closing::AfterFlush(reason));
                }
                _ => conn.rbuf = Some(kept),
            }
        }
    }

    /// A copy of `bytes` in a buffer of about their size: a small one from
    /// the pool (no allocation in steady traffic), or one of exactly their size.
    fn kept_copy(&mut self, bytes: &[u8]) -> BytesMut {
        let pooled = if bytes.len() <= KEPT_BLOCK {
            self.pool.pop()
        } else {
            None
        };
        let mut kept = pooled.unwrap_or_else(|| BytesMut::with_capacity(bytes.len()));
        kept.extend_from_slice(bytes);
        kept
    }

    /// Gives a small kept buffer whose bytes moved on back to the pool.
    pub(crate) fn release_kept(&mut self, mut kept: BytesMut) {
        kept.clear();
        if self.pool.len() < BUFFER_POOL && kept.capacity() <= KEPT_BLOCK {
            self.pool.push(kept);
        }
    }
}
