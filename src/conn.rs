//! One stream connection: its socket, the bytes a protocol has not consumed
//! yet, its write queue and the flags that decide whether it reads.
//!
//! This module knows nothing of callbacks; the reactor drives it.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use crate::net::{ConnOptions, Stream};
use crate::{CloseReason, Protocol, TimerId};

/// How many queued buffers one `writev` takes at most (Linux's IOV_MAX is 1024;
/// 64 already moves far more than a socket buffer holds).
const MAX_IOVECS: usize = 64;

/// How a connection is being wound down.
#[derive(Debug)]
pub(crate) enum Closing {
    /// Open for business.
    No,
    /// Send the queue, then close with this reason.
    AfterFlush(CloseReason),
    /// Drop now with this reason; the queue is reported unsent.
    Now(CloseReason),
}

pub(crate) struct Conn {
    pub(crate) stream: Stream,
    /// `None` only while one of its callbacks runs (the reactor takes it out
    /// so the callback can borrow the reactor).
    pub(crate) proto: Option<Box<dyn Protocol>>,
    pub(crate) gen: u32,
    /// The listener that accepted it, for the per-listener connection count
    /// (generation-checked: the slot may hold another listener by the time
    /// this connection closes).
    pub(crate) listener: Option<crate::ListenerId>,
    pub(crate) opts: ConnOptions,
    /// Bytes a protocol left for later (an incomplete frame). Absent while
    /// there are none, so an idle connection holds no read buffer.
    pub(crate) rbuf: Option<BytesMut>,
    pub(crate) wqueue: VecDeque<Bytes>,
    pub(crate) queued: usize,
    pub(crate) closing: Closing,
    /// The outgoing connect has not completed yet.
    pub(crate) connecting: bool,
    pub(crate) paused_by_user: bool,
    /// An offload pool it feeds is full; reading resumes as the pool drains.
    pub(crate) paused_by_offload: bool,
    /// The queue went over the high-water mark; reading waits for the low one.
    pub(crate) over_high_water: bool,
    /// The peer sent FIN; nothing more to read.
    pub(crate) eof: bool,
    pub(crate) shutdown_write: ShutdownWrite,
    /// WRITABLE is in the registered interest (only while the queue is non-empty).
    pub(crate) writable_interest: bool,
    /// Already on the reactor's list of connections to flush.
    pub(crate) flush_scheduled: bool,
    /// Already on the reactor's list of connections with input left to read.
    pub(crate) read_scheduled: bool,
    pub(crate) last_active: Instant,
    pub(crate) idle_timer: Option<TimerId>,
    pub(crate) connect_timer: Option<TimerId>,
    /// Bytes read and dropped since `close()` (bounded by `close_discard`).
    pub(crate) discarded: usize,
    /// The queue is sent and the write side shut down: waiting (at most
    /// `close_linger`) for the peer's end of stream.
    pub(crate) lingering: bool,
    pub(crate) linger_timer: Option<TimerId>,
    /// Timers its protocol set and that have not fired: closing cancels them.
    pub(crate) user_timers: Vec<TimerId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShutdownWrite {
    No,
    /// Send FIN once the queue is empty.
    Requested,
    Done,
}

impl Conn {
    pub(crate) fn new(
        stream: Stream,
        proto: Box<dyn Protocol>,
        opts: ConnOptions,
        now: Instant,
    ) -> Conn {
        Conn {
            stream,
            proto: Some(proto),
            gen: 0,
            listener: None,
            opts,
            rbuf: None,
            wqueue: VecDeque::new(),
            queued: 0,
            closing: Closing::No,
            connecting: false,
            paused_by_user: false,
            paused_by_offload: false,
            over_high_water: false,
            eof: false,
            shutdown_write: ShutdownWrite::No,
            writable_interest: false,
            flush_scheduled: false,
            read_scheduled: false,
            last_active: now,
            idle_timer: None,
            connect_timer: None,
            discarded: 0,
            lingering: false,
            linger_timer: None,
            user_timers: Vec::new(),
        }
    }

    /// True when input should be read now.
    pub(crate) fn wants_read(&self) -> bool {
        match self.closing {
            Closing::No => {
                !(self.paused_by_user
                    || self.paused_by_offload
                    || self.over_high_water
                    || self.eof
                    || self.connecting)
            }
            // Input after a close is read and dropped whatever the pauses:
            // a socket closed with unread input resets the connection, and
            // the reset throws away what the peer has not read yet.
            Closing::AfterFlush(_) => !(self.eof || self.connecting),
            Closing::Now(_) => false,
        }
    }

    /// True when input is read only to be dropped (after `close()`).
    pub(crate) fn discards_input(&self) -> bool {
        matches!(self.closing, Closing::AfterFlush(_))
    }

    /// True when a protocol may still queue bytes.
    pub(crate) fn accepts_writes(&self) -> bool {
        matches!(self.closing, Closing::No) && self.shutdown_write == ShutdownWrite::No
    }

    /// Appends to the write queue. Fails with the limit when the queue would
    /// outgrow `max_queued`.
    pub(crate) fn enqueue(&mut self, data: Bytes) -> Result<(), usize> {
        if let Some(limit) = self.opts.max_queued {
            if self.queued + data.len() > limit {
                return Err(limit);
            }
        }
        self.queued += data.len();
        self.wqueue.push_back(data);
        if self.queued >= self.opts.high_water {
            self.over_high_water = true;
        }
        Ok(())
    }

    /// Writes as much of the queue as the socket takes: `Ok(true)` when the
    /// queue is empty, `Ok(false)` when the socket is full (wait for WRITABLE).
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        while !self.wqueue.is_empty() {
            // The common case, one buffer (an echo's reply), is a plain
            // send: no iovec array to build (measured: the array was 29 % of
            // the reactor's instructions per echoed message).
            let written = if self.wqueue.len() == 1 {
                self.stream.write(&self.wqueue[0])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slot, buf) in slices.iter_mut().zip(self.wqueue.iter()) {
                    *slot = IoSlice::new(buf);
                    count += 1;
                }
                self.stream.write_vectored(&slices[..count])
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let front = self.wqueue.front_mut().expect("wrote more than was queued");
            if front.len() <= n {
                n -= front.len();
                self.wqueue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Leaves the high-water state once the queue is down to the low-water
    /// mark; true when that just happened (time for `on_drained`).
    pub(crate) fn crossed_low_water(&mut self) -> bool {
        if self.over_high_water && self.queued <= self.opts.low_water {
            self.over_high_water = false;
            return true;
        }
        false
    }
}
