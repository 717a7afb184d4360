//! One stream connection: its socket, the bytes a protocol has not consumed
//! yet, its write queue and the flags that decide whether it reads.
//!
//! This module knows nothing of callbacks but the handler it holds for the
//! reactor (`handler.rs`); the reactor drives it.

use std::io;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::net::{ConnOptions, Stream};
use crate::reactor::handler::ConnHandler;
use crate::reactor::tls::TlsConn;
use crate::reactor::wqueue::{TailPool, WriteQueue};
use crate::{CloseReason, ConnId, TimerId};

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
    /// First: unlisted before `stream` closes.
    _listed: crate::net::owned::Listed,
    pub(crate) stream: Stream,
    /// `None` only while one of its callbacks runs (the reactor takes it out
    /// so the callback can borrow the reactor).
    pub(crate) handler: Option<Box<dyn ConnHandler>>,
    pub(crate) gen: u32,
    /// The listener that accepted it, for the per-listener connection count
    /// (generation-checked: the slot may hold another listener by the time
    /// this connection closes).
    pub(crate) listener: Option<crate::ListenerId>,
    pub(crate) opts: ConnOptions,
    /// Bytes a protocol left for later (an incomplete frame). Absent while
    /// there are none, so an idle connection holds no read buffer.
    pub(crate) rbuf: Option<BytesMut>,
    /// What the protocol wrote and the socket has not taken yet.
    pub(crate) wq: WriteQueue,
    pub(crate) closing: Closing,
    /// The outgoing connect has not completed yet.
    pub(crate) connecting: bool,
    /// `on_open` has run (it may be pending after an `adopt` in a callback).
    pub(crate) opened: bool,
    pub(crate) paused_by_user: bool,
    /// An offload pool it feeds is full; reading resumes as the pool drains.
    pub(crate) paused_by_offload: bool,
    /// The queue went over the high-water mark; reading waits for the low one.
    pub(crate) over_high_water: bool,
    /// How many other connections this one waits for to drain
    /// (`pause_until_drained`); reading waits while it is not zero.
    pub(crate) waiting_for: u32,
    /// Connections that wait for this one to drain.
    pub(crate) producers: Vec<ConnId>,
    /// Bytes the socket has taken in all: progress, for the stall check.
    pub(crate) sent: u64,
    /// Over high water and not back down to low water within
    /// `stall_timeout` of holding a producer back (its peer reads too
    /// slowly, or not at all): it holds back no producer until it is.
    pub(crate) stalled: bool,
    /// How many times the queue came down from over high water to low
    /// water: the stall check's way to tell that it did meanwhile.
    pub(crate) drained: u32,
    /// The peer sent FIN; nothing more to read.
    pub(crate) eof: bool,
    /// Bytes left in `rbuf` when reading was paused, which the protocol has
    /// not been offered since: delivered again on resume, before any read.
    pub(crate) redeliver: bool,
    /// Offloaded answers still due (thread pool jobs, worker process
    /// requests): a close after flush waits for them too.
    pub(crate) pending_work: usize,
    /// One of those answers is being delivered: it may still write after
    /// the protocol called `close()`.
    pub(crate) completing: bool,
    pub(crate) shutdown_write: ShutdownWrite,
    /// WRITABLE is in the registered interest (only while the queue is non-empty).
    pub(crate) writable_interest: bool,
    /// Already on the reactor's list of connections to flush.
    pub(crate) flush_scheduled: bool,
    /// Already on the reactor's list of connections with input left to read.
    pub(crate) read_scheduled: bool,
    /// The last read drained the kernel's input (WouldBlock, end of stream,
    /// or a short read an edge vouches for) and no readiness came since:
    /// input that arrives from here on brings an edge of its own, so a close
    /// need not look for input that waits unannounced (a read that would
    /// only return WouldBlock). False when unsure (TLS connections).
    pub(crate) caught_up: bool,
    pub(crate) last_active: Instant,
    pub(crate) idle_timer: Option<TimerId>,
    pub(crate) connect_timer: Option<TimerId>,
    /// What only a closing connection needs (`close()` or an abort
    /// creates it): boxed, so an open connection pays one pointer.
    pub(crate) close: Option<Box<CloseState>>,
    /// Producers and the writes queued behind them (boxed: most
    /// connections never have one).
    pub(crate) fifo: Option<Box<crate::reactor::producer::Fifo>>,
    /// On the ready list to pump its producers next turn (its budget ran
    /// out while the socket still took everything).
    pub(crate) produce_scheduled: bool,
    /// Timers its protocol set and that have not fired: closing cancels them.
    pub(crate) user_timers: Vec<TimerId>,
    /// It came through a proxy, which said so in a PROXY header (boxed:
    /// most connections do not).
    pub(crate) proxied: Option<Box<crate::reactor::proxy_wait::Proxied>>,
    /// TLS between the socket and the protocol (see `tls.rs`); boxed: a
    /// plain connection pays one pointer.
    pub(crate) tls: Option<Box<TlsConn>>,
}

/// The bookkeeping of a close after flush (closing.rs): the peer's
/// progress, what it sent after the close, and the close's timers.
pub(crate) struct CloseState {
    /// Bytes read and dropped since `close()`.
    pub(crate) discarded: usize,
    /// The queue is sent and the write side shut down: waiting for the
    /// peer to take what the kernel holds, then (at most `close_linger`)
    /// for its end of stream.
    pub(crate) lingering: bool,
    /// Lingering, and the peer has acknowledged everything: from here on
    /// `close_linger` and `close_discard` count.
    pub(crate) delivered: bool,
    /// `discarded` when the peer had everything: more by the end of the
    /// linger time means it went on sending after that.
    pub(crate) discarded_at_linger: usize,
    /// Bytes the peer had taken (sent minus unacknowledged) at the last
    /// look, and when that last grew (the `close_stall` check).
    pub(crate) taken: u64,
    pub(crate) taken_at: Instant,
    /// Sent bytes the peer had not taken when we gave up on it (reported
    /// as lost at the close).
    pub(crate) lost_in_kernel: usize,
    pub(crate) stall_timer: Option<TimerId>,
    pub(crate) linger_timer: Option<TimerId>,
    /// `sent` at `close()`: what the socket took since bounds the input
    /// dropped before the peer has everything.
    pub(crate) sent_at_close: u64,
    /// Reading held back after `close()`: the peer sent far more than it
    /// took (see `discard_budget_spent`); its progress resumes it.
    pub(crate) discard_held: bool,
    /// Input the protocol had left unconsumed was dropped by the close
    /// (the peer pipelined more: it may send more yet).
    pub(crate) dropped_unconsumed: bool,
}

impl CloseState {
    fn new(sent: u64, now: Instant) -> CloseState {
        CloseState {
            discarded: 0,
            lingering: false,
            delivered: false,
            discarded_at_linger: 0,
            taken: 0,
            taken_at: now,
            lost_in_kernel: 0,
            stall_timer: None,
            linger_timer: None,
            sent_at_close: sent,
            discard_held: false,
            dropped_unconsumed: false,
        }
    }

    /// The peer has taken everything: from here on the linger's bounds count.
    pub(crate) fn note_delivered(&mut self) {
        self.delivered = true;
        self.discarded_at_linger = self.discarded;
    }
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
        handler: Box<dyn ConnHandler>,
        opts: ConnOptions,
        now: Instant,
    ) -> Conn {
        Conn {
            _listed: crate::net::owned::Listed::new(std::os::fd::AsRawFd::as_raw_fd(&stream)),
            stream,
            handler: Some(handler),
            gen: 0,
            listener: None,
            opts,
            rbuf: None,
            wq: WriteQueue::default(),
            closing: Closing::No,
            connecting: false,
            opened: false,
            paused_by_user: false,
            paused_by_offload: false,
            over_high_water: false,
            waiting_for: 0,
            producers: Vec::new(),
            sent: 0,
            stalled: false,
            drained: 0,
            eof: false,
            redeliver: false,
            pending_work: 0,
            completing: false,
            shutdown_write: ShutdownWrite::No,
            writable_interest: false,
            flush_scheduled: false,
            read_scheduled: false,
            caught_up: false,
            last_active: now,
            idle_timer: None,
            connect_timer: None,
            close: None,
            fifo: None,
            produce_scheduled: false,
            user_timers: Vec::new(),
            proxied: None,
            tls: None,
        }
    }

    /// Bytes sent that the peer has not taken yet (see
    /// [`Stream::unacked`](crate::net::Stream::unacked)), without our FIN.
    pub(crate) fn in_flight(&self) -> usize {
        let n = self.stream.unacked();
        if n > 0 && self.stream.is_tcp() && self.shutdown_write == ShutdownWrite::Done {
            n - 1
        } else {
            n
        }
    }

    /// The close's own state, created by the first close request.
    pub(crate) fn close_state(&mut self) -> &mut CloseState {
        let (sent, now) = (self.sent, self.last_active);
        self.close
            .get_or_insert_with(|| Box::new(CloseState::new(sent, now)))
    }

    /// Before the peer has everything, input is read and dropped up to
    /// `close_discard` plus 4 times what the socket took since `close()`:
    /// a peer that uploads while it reads the answer is never cut off, and
    /// one that only uploads costs the server no more reads than that (its
    /// flow control holds it back while reading waits).
    pub(crate) fn discard_budget_spent(&self) -> bool {
        let Some(cs) = self.close.as_deref() else {
            return false;
        };
        let taken = self.sent.saturating_sub(cs.sent_at_close);
        let budget = (self.opts.close_discard as u64).saturating_add(taken.saturating_mul(4));
        !cs.delivered && cs.discarded as u64 > budget
    }

    /// Notes a look at the peer's progress during a close (at `now`).
    pub(crate) fn note_taken(&mut self, in_flight: usize, now: Instant) {
        let taken = self.sent.saturating_sub(in_flight as u64);
        let cs = self.close_state();
        if taken != cs.taken {
            cs.taken = taken;
            cs.taken_at = now;
        }
    }

    /// True when input should be read now.
    #[inline]
    pub(crate) fn wants_read(&self) -> bool {
        match self.closing {
            Closing::No => !(self.paused() || self.eof || self.connecting),
            // Input after a close is read and dropped whatever the pauses:
            // a socket closed with unread input resets the connection, and
            // the reset throws away what the peer has not read yet.
            Closing::AfterFlush(_) => !(self.eof || self.connecting),
            Closing::Now(_) => false,
        }
    }

    /// True when input is read only to be dropped (after `close()`).
    #[inline]
    pub(crate) fn discards_input(&self) -> bool {
        matches!(self.closing, Closing::AfterFlush(_))
    }

    /// True while reading is held back by the protocol or by backpressure
    /// (as opposed to the end of input or a close).
    #[inline]
    pub(crate) fn paused(&self) -> bool {
        self.paused_by_user
            || self.paused_by_offload
            || self.over_high_water
            || self.waiting_for > 0
    }

    /// True when a protocol may still queue bytes: before a close, or, after
    /// `close()`, an offloaded answer being delivered.
    pub(crate) fn accepts_writes(&self) -> bool {
        let open = match self.closing {
            Closing::No => true,
            Closing::AfterFlush(_) => self.completing,
            Closing::Now(_) => false,
        };
        open && self.shutdown_write == ShutdownWrite::No
    }

    /// True once a close after flush may complete: the queue is sent (the
    /// caller knows) and no offloaded answer is due any more.
    pub(crate) fn may_finish_close(&self) -> bool {
        matches!(self.closing, Closing::AfterFlush(_)) && self.pending_work == 0
    }

    /// Checks a write of `len` more bytes against `max_queued`: the limit
    /// when the queue would outgrow it.
    #[inline]
    pub(crate) fn check_limit(&self, len: usize) -> Result<(), usize> {
        match self.opts.max_queued {
            Some(limit) if self.wq.len() + self.fifo_held() + len > limit => Err(limit),
            _ => Ok(()),
        }
    }

    #[inline]
    pub(crate) fn note_queued(&mut self) {
        if self.wq.len() >= self.opts.high_water {
            self.over_high_water = true;
        }
    }

    /// Appends a copy of `data` to the write queue; the caller checked the
    /// limit.
    #[inline(always)]
    pub(crate) fn push_copy_unchecked(&mut self, data: &[u8], pool: &mut TailPool) {
        self.wq.push_copy(data, pool);
        self.note_queued();
    }

    /// Appends a copy of `data` to the write queue. Fails with the limit when
    /// the queue would outgrow `max_queued`.
    #[inline]
    pub(crate) fn enqueue_copy(&mut self, data: &[u8], pool: &mut TailPool) -> Result<(), usize> {
        if self.tls.is_some() {
            return self.enqueue_tls(data, pool);
        }
        self.check_limit(data.len())?;
        self.push_copy_unchecked(data, pool);
        Ok(())
    }

    /// A TLS connection's write: against `max_queued` with the plaintext
    /// rustls holds until the end of the handshake counted too (it is not in
    /// the queue yet, and would otherwise grow without bound).
    #[cold]
    fn enqueue_tls(&mut self, data: &[u8], pool: &mut TailPool) -> Result<(), usize> {
        self.check_limit(data.len() + self.tls_held())?;
        self.push_tls(data, pool);
        Ok(())
    }

    /// Encrypts `data` and queues the records (a TLS connection's writes
    /// all come here).
    #[cold]
    fn push_tls(&mut self, data: &[u8], pool: &mut TailPool) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.encrypt(data, &mut self.wq, pool);
        }
        if self.wq.len() + self.tls_held() >= self.opts.high_water {
            self.over_high_water = true;
        }
    }

    /// Queues a piece from the producers' fifo (the caller pumps by the
    /// low-water mark, not the limit).
    pub(crate) fn push_piece(&mut self, piece: Bytes, pool: &mut TailPool) {
        if self.tls.is_some() {
            self.push_tls(&piece, pool);
        } else {
            self.wq.push_bytes(piece, None, pool);
        }
    }

    /// Appends `data` to the write queue, zero-copy unless it is small or
    /// a small slice of the read buffer `read_block` (see [`WriteQueue`]).
    pub(crate) fn enqueue(
        &mut self,
        data: Bytes,
        read_block: Option<usize>,
        pool: &mut TailPool,
    ) -> Result<(), usize> {
        if self.tls.is_some() {
            return self.enqueue_tls(&data, pool);
        }
        self.check_limit(data.len())?;
        self.wq.push_bytes(data, read_block, pool);
        self.note_queued();
        Ok(())
    }

    /// Writes as much of the queue as the socket takes: `Ok(true)` when the
    /// queue is empty, `Ok(false)` when the socket is full (wait for WRITABLE).
    /// `sends` counts the socket writes made (`Stats::sends`).
    pub(crate) fn flush(
        &mut self,
        pool: &mut TailPool,
        sends: &mut u64,
        now: Instant,
    ) -> io::Result<bool> {
        let before = self.wq.len();
        let result = self.wq.flush(&mut self.stream, pool, sends);
        let sent = before - self.wq.len();
        if sent > 0 {
            self.note_sent(sent, now);
        }
        result
    }

    /// Records `n` bytes the socket took, by a flush of the queue or a
    /// write sent at once (`Reactor::write_buf`): the progress the stall
    /// checks and the idle timeout look at.
    #[inline(always)]
    pub(crate) fn note_sent(&mut self, n: usize, now: Instant) {
        self.sent += n as u64;
        self.last_active = now;
    }

    /// True while producers waiting for this connection should wait:
    /// over high water, open, and its peer reading.
    pub(crate) fn is_backed_up(&self) -> bool {
        self.over_high_water && !self.stalled && matches!(self.closing, Closing::No)
    }

    /// Leaves the high-water state once the queue is down to the low-water
    /// mark; true when that just happened (time for `on_drained`).
    pub(crate) fn crossed_low_water(&mut self) -> bool {
        if self.over_high_water && self.wq.len() <= self.opts.low_water {
            self.over_high_water = false;
            // Caught up: it holds its producers back again next time.
            self.stalled = false;
            self.drained = self.drained.wrapping_add(1);
            return true;
        }
        false
    }
}
