//! Closing a stream connection: `close()` sends what is queued while the
//! peer's input is read and dropped (a close with unread input would reset
//! the connection and destroy what the peer has not read yet), then shuts
//! down the write side and lingers for the peer's end of stream, each phase
//! with its own bound (`close_stall`, `close_linger`, `close_discard`).
//! `finish_close` is where every connection ends: `on_close`, once.

use std::io;
use std::mem;
use std::time::Instant;

use crate::reactor::conn::{Closing, Conn, ShutdownWrite};
use crate::reactor::{conn_in, Source, TimerTarget, READ_BUDGET, READ_SIZE};
use crate::{CloseReason, ConnId, LingeringClose, Reactor};

/// [`LingeringClose::Auto`]'s test, before the kernel is asked whether the
/// peer has acknowledged every byte (`in_flight`: a reset, should it send
/// more later, then costs it nothing it received, on Linux) and whether
/// input came since the last read (`has_no_input`: a close that finds input
/// unread resets the connection): the input was read up to what had
/// arrived, and none was left unconsumed or came since `close()`.
fn no_more_input_expected(conn: &Conn) -> bool {
    conn.opts.lingering_close == LingeringClose::Auto
        && conn.caught_up
        && conn.tls.is_none()
        && conn.rbuf.as_ref().is_none_or(|b| b.is_empty())
        && conn
            .close
            .as_deref()
            .is_none_or(|cs| cs.discarded == 0 && !cs.dropped_unconsumed)
}

impl Reactor {
    /// Reads and drops what the peer sends after `close()`, so that the
    /// final close finds no unread input (which would reset the connection
    /// and discard what the peer has not read yet). The peer's end of stream
    /// ends a lingering close. Only bytes sent once the peer has everything
    /// can cut it off (`close_discard`): before, it is still taking ours (a
    /// client uploading while it reads the answer); reading then only waits
    /// when it sent far more than it took (`Conn::discard_budget_spent`), and
    /// the `close_stall` check bounds a peer that stops taking them.
    pub(crate) fn discard_input(&mut self, key: usize, trust_short_read: bool) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = conn_in(&mut self.sources, key) else {
                return;
            };
            if !conn.wants_read() {
                return;
            }
            // What the protocol left unconsumed is not its business any more.
            if conn.rbuf.take().is_some_and(|b| !b.is_empty()) {
                conn.close_state().dropped_unconsumed = true;
            }
            if conn.discard_budget_spent() {
                // Leave it in the kernel: the peer's progress resumes reading.
                conn.close_state().discard_held = true;
                return;
            }
            let mut buf = mem::take(&mut self.scratch);
            if buf.capacity() < READ_SIZE {
                buf.reserve(READ_SIZE);
                // The shared buffer may have moved: slices of it are judged
                // by this range (see `read_block`).
                let start = buf.as_ptr() as usize;
                self.scratch_block = (start, start + buf.capacity());
            }
            let offered = buf.capacity();
            let result = conn.stream.read_into(&mut buf);
            buf.clear();
            self.scratch = buf;
            // TLS connections are never taken to be caught up (rustls may
            // hold records read ahead).
            let plain = conn.tls.is_none();
            conn.caught_up = false;
            match result {
                Ok(0) => {
                    conn.caught_up = plain;
                    conn.eof = true;
                    if conn.close_state().lingering {
                        self.finish_close(key);
                    }
                    return;
                }
                Ok(n) => {
                    let close_discard = conn.opts.close_discard;
                    if conn.close_state().lingering && !conn.close_state().delivered {
                        // Input during the linger: whether the peer had
                        // everything decides what it means (more after
                        // that is "kept sending"), so ask now.
                        let in_flight = conn.in_flight();
                        conn.note_taken(in_flight, self.now);
                        if in_flight == 0 {
                            let cs = conn.close_state();
                            cs.note_delivered();
                            // From here `close_linger` counts.
                            if let Some(timer) = cs.linger_timer.take() {
                                self.timers.cancel(timer);
                            }
                            self.arm_linger(key);
                        }
                    }
                    let Some(conn) = conn_in(&mut self.sources, key) else {
                        return;
                    };
                    let cs = conn.close_state();
                    cs.discarded += n;
                    if cs.delivered && cs.discarded - cs.discarded_at_linger > close_discard {
                        return self.give_up_linger(key);
                    }
                    if n < offered && trust_short_read {
                        conn.caught_up = plain;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.caught_up = plain;
                    return;
                }
                Err(e) => return self.close_at(key, Closing::Now(CloseReason::from_io(e))),
            }
        }
        self.schedule_read(key);
    }

    /// The queue is sent after `close()`: shut down the write side (the peer
    /// reads to a clean end of stream) and wait, reading and dropping its
    /// input, until the peer has taken what the kernel holds (bounded by
    /// `close_stall`), then for its end of stream, at most `close_linger`.
    pub(crate) fn linger(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        let cs = conn.close_state();
        if cs.lingering {
            return;
        }
        cs.lingering = true;
        if no_more_input_expected(conn) && conn.in_flight() == 0 {
            // The last read left nothing, but input may have come since (in
            // the same turn, or while the protocol worked on its answer).
            if conn.stream.has_no_input() {
                return self.finish_close(key);
            }
            conn.caught_up = false;
        }
        if conn.shutdown_write != ShutdownWrite::Done {
            conn.shutdown_write = ShutdownWrite::Done;
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                // Not connected any more: the peer reset it after the last send.
                let reason = match e.kind() {
                    io::ErrorKind::NotConnected => CloseReason::Reset,
                    _ => CloseReason::from_io(e),
                };
                return self.close_at(key, Closing::Now(reason));
            }
        }
        // Whether the peer has taken everything is first asked when the
        // linger timer fires, or when it sends something: most peers end
        // the connection before either (their end of stream ends the
        // linger), so the common close costs no SIOCOUTQ call and no
        // `close_stall` timer.
        self.arm_linger(key);
        // Input (or the end of stream) may be waiting without a new edge.
        self.schedule_read_unless_caught_up(key);
    }

    /// The linger timer: `close_linger` once the peer has everything; until
    /// then a quarter of the shorter of `close_linger` and `close_stall`,
    /// to see when that happens (and to start the stall check in time: a
    /// peer that takes nothing is cut at most half a `close_stall` late).
    fn arm_linger(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        let id = ConnId::new(key, conn.gen);
        let limit = conn.opts.close_linger;
        let delay = if conn.close_state().delivered {
            limit
        } else {
            limit.min(conn.opts.close_stall) / 4
        };
        // A typed timer, not a `call_later` closure: no allocation per close.
        let timer = self.timers.insert(self.now, delay, TimerTarget::Linger(id));
        if let Some(conn) = self.conn_at(key) {
            conn.close_state().linger_timer = Some(timer);
        }
    }

    /// The linger timer. While the peer still takes what the kernel holds,
    /// look again later (the `close_stall` check cuts off a peer that
    /// stopped); once it has everything, wait `close_linger` for its end of
    /// stream. When that is up, a peer that sent nothing meanwhile is let
    /// go with the close's own reason (the close is orderly: nothing is
    /// unread); one that went on sending is cut off, and `on_close` says so.
    pub(crate) fn linger_expired(&mut self, id: ConnId) {
        let now = self.now;
        let Some(conn) = self.conn(id) else {
            return;
        };
        let cs = conn.close_state();
        cs.linger_timer = None;
        if !cs.delivered {
            let in_flight = conn.in_flight();
            conn.note_taken(in_flight, now);
            if in_flight == 0 && no_more_input_expected(conn) && conn.stream.has_no_input() {
                // `Auto`: the peer has everything now, and sent nothing.
                return self.finish_close(id.key());
            }
            let cs = conn.close_state();
            if in_flight == 0 {
                cs.note_delivered();
                if mem::take(&mut cs.discard_held) {
                    self.schedule_read(id.key());
                }
            } else if cs.stall_timer.is_none() {
                // The peer still owes acknowledgements: bound the wait.
                self.arm_stall_check(id.key(), now);
            }
            return self.arm_linger(id.key());
        }
        self.discard_input(id.key(), false);
        let Some(conn) = self.conn(id) else {
            return; // its end of stream came, or an error
        };
        let read_scheduled = conn.read_scheduled;
        let cs = conn.close_state();
        if read_scheduled || cs.discarded > cs.discarded_at_linger {
            self.give_up_linger(id.key());
        } else {
            self.finish_close(id.key());
        }
    }

    fn give_up_linger(&mut self, key: usize) {
        let Some(conn) = self.conn_at(key) else {
            return;
        };
        let in_flight = conn.in_flight();
        let cs = conn.close_state();
        let discarded = cs.discarded;
        cs.lost_in_kernel = in_flight;
        let id = ConnId::new(key, conn.gen);
        log::info!("{id}: peer kept sending after close ({discarded} bytes dropped); closing");
        // A close for a reason of its own (a protocol error, a panic) keeps
        // it: that is what on_close should hear; a plain close learns that
        // it did not end cleanly.
        let reason = match mem::replace(&mut conn.closing, Closing::No) {
            Closing::AfterFlush(reason) | Closing::Now(reason) if !reason.is_clean() => reason,
            _ => CloseReason::PeerKeptSending { discarded },
        };
        self.close_at(key, Closing::Now(reason));
    }

    /// Starts the `close_stall` check of a closing connection that owes its
    /// peer bytes, unless it runs already. Connections that close with
    /// nothing owed (the common case) never pay for it.
    pub(crate) fn watch_stall(&mut self, key: usize) {
        let now = self.now;
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        if !conn.discards_input() {
            return;
        }
        let taken = conn.sent.saturating_sub(conn.in_flight() as u64);
        let cs = conn.close_state();
        if cs.stall_timer.is_some() || cs.delivered {
            return;
        }
        cs.taken = taken;
        cs.taken_at = now;
        self.arm_stall_check(key, now);
    }

    /// Arms the `close_stall` check of a closing connection: due when the
    /// peer will have taken nothing for `close_stall`, and at least every
    /// quarter of it, as progress in the kernel (acknowledgements) is only
    /// seen when we look: the cut then comes at most a quarter late.
    fn arm_stall_check(&mut self, key: usize, now: Instant) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        let id = ConnId::new(key, conn.gen);
        let stall = conn.opts.close_stall;
        // A bound too long for the clock means never (deadlines saturate).
        let Some(due) = conn.close_state().taken_at.checked_add(stall) else {
            return;
        };
        let delay = due
            .saturating_duration_since(now)
            .min(stall / 4)
            .max(std::time::Duration::from_millis(1));
        let timer = self
            .timers
            .insert(self.now, delay, TimerTarget::StallCheck(id));
        if let Some(conn) = self.conn_at(key) {
            conn.close_state().stall_timer = Some(timer);
        }
    }

    /// After `close()`: a peer that took none of the bytes owed to it (queued
    /// or in the kernel) for `close_stall` is cut off, and the bytes it
    /// never got are reported. Without this a peer that never reads keeps
    /// the connection, its descriptor and its queue for as long as it likes.
    pub(crate) fn stall_check(&mut self, id: ConnId) {
        let now = self.now;
        let Some(conn) = self.conn(id) else {
            return;
        };
        let cs = conn.close_state();
        cs.stall_timer = None;
        if cs.delivered || !matches!(conn.closing, Closing::AfterFlush(_)) {
            return; // closing now, or only the linger is left
        }
        let in_flight = conn.in_flight();
        conn.note_taken(in_flight, now);
        let queued = conn.wq.len() + conn.fifo_held();
        let owed = queued + in_flight;
        let stall = conn.opts.close_stall;
        if owed == 0 && conn.fifo.is_none() {
            // Waiting for offloaded answers: our wait, not the peer's (the
            // next flush that leaves bytes behind looks again).
            return;
        }
        let cs = conn.close_state();
        if now.saturating_duration_since(cs.taken_at) >= stall {
            cs.lost_in_kernel = in_flight;
            log::warn!(
                "{id}: peer took nothing for {stall:?} after close; cutting it off \
                 ({queued} queued and {in_flight} sent bytes not delivered)"
            );
            conn.stream.reset_on_close();
            let reason = match mem::replace(&mut conn.closing, Closing::No) {
                Closing::AfterFlush(reason) | Closing::Now(reason) if !reason.is_clean() => reason,
                _ => CloseReason::PeerStalled { unsent: owed },
            };
            return self.close_at(id.key(), Closing::Now(reason));
        }
        self.arm_stall_check(id.key(), now);
    }

    pub(crate) fn close_id(&mut self, id: ConnId, how: Closing) {
        if self.gen_of(id.key()) == Some(id.gen) {
            match &self.sources[id.key()] {
                Source::Conn(_) => self.close_at(id.key(), how),
                Source::Datagram(_) => {
                    let reason = match how {
                        Closing::AfterFlush(r) | Closing::Now(r) => r,
                        Closing::No => return,
                    };
                    self.close_datagram(id.key(), reason)
                }
                _ => {}
            }
        }
    }

    /// Starts closing: `AfterFlush` waits for the queue, `Now` does not. A
    /// stronger request replaces a weaker one; the first reason otherwise wins.
    pub(crate) fn close_at(&mut self, key: usize, how: Closing) {
        let Some(conn) = self.conn_at(key) else {
            return;
        };
        match (&conn.closing, &how) {
            (Closing::No, _) | (Closing::AfterFlush(_), Closing::Now(_)) => conn.closing = how,
            _ => return,
        }
        if matches!(conn.closing, Closing::AfterFlush(_)) {
            // What the socket takes from here on bounds the input dropped.
            let sent = conn.sent;
            conn.close_state().sent_at_close = sent;
        }
        self.schedule_flush(key);
        // Input that waits unread (the connection was paused) sends no new
        // edge: look now, to drop it.
        self.schedule_read_unless_caught_up(key);
    }

    /// Deregisters, calls `on_close` exactly once and frees the slot.
    pub(crate) fn finish_close(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        let mut reason = match mem::replace(&mut conn.closing, Closing::Now(CloseReason::Closed)) {
            Closing::AfterFlush(r) | Closing::Now(r) => r,
            Closing::No => CloseReason::Closed,
        };
        let tls_timer = conn.tls_finish(&mut reason);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let (linger_timer, stall_timer, lost_in_kernel) = match conn.close.as_deref_mut() {
            Some(cs) => (
                cs.linger_timer.take(),
                cs.stall_timer.take(),
                cs.lost_in_kernel,
            ),
            None => (None, None, 0),
        };
        for timer in [
            conn.idle_timer.take(),
            conn.connect_timer.take(),
            linger_timer,
            stall_timer,
            tls_timer,
        ]
        .into_iter()
        .flatten()
        {
            self.timers.cancel(timer);
        }
        let listener = conn.listener;
        let pending_work = mem::take(&mut conn.pending_work);
        let id = ConnId::new(key, conn.gen);

        if conn.fifo.is_some() {
            log::warn!("{id}: {reason}; a producer was not finished");
        }
        // Bytes a protocol handed over and the peer will never get: say so.
        match (
            conn.wq.len() + conn.fifo_held() + conn.tls_held(),
            lost_in_kernel,
        ) {
            (0, 0) if reason.is_clean() => {}
            (0, 0) => log::debug!("{id}: {reason}"),
            (unsent, 0) => log::warn!("{id}: {reason}; {unsent} queued bytes were not sent"),
            (unsent, lost) => log::warn!(
                "{id}: {reason}; {unsent} queued bytes were not sent and {lost} sent bytes \
                 the peer had not taken were dropped by the reset"
            ),
        }
        self.release_producers(key);
        self.call(key, |h, r, id| h.on_close(r, id, &reason));
        // Its timers (those set in `on_close` too) would only linger.
        let mut source = self.release_slot(key);
        if let Source::Conn(conn) = &mut source {
            self.cancel_user_timers(mem::take(&mut conn.user_timers));
        }
        self.drop_source(source);
        if pending_work > 0 {
            self.forget_work(id);
        }
        self.stats.open -= 1;
        self.stats.closed += 1;
        self.connection_closed(listener);
    }
}
