//! Operations on a connection by id: what `Context`, `Handle` and code
//! outside the callbacks use to write, close, pause and inspect.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::reactor::conn::{Closing, Conn, ShutdownWrite};
use slab::Slab;

use crate::reactor::Source;
use crate::{Addr, CloseReason, ConnId, Reactor};

impl Reactor {
    /// Queues a copy of `data` on connection `id` (see [`Context::write`](crate::Context::write)).
    pub fn write(&mut self, id: ConnId, data: &[u8]) -> io::Result<()> {
        if self.try_write_copy(id, data) {
            return Ok(());
        }
        self.write_uncommon(id, data)
    }

    /// The common case of a copying write, inline in each caller: an open
    /// connection with no producer and room under `max_queued`. The copy
    /// lands in the connection's tail block, shared by small writes (no
    /// allocation in steady state: blocks come from a pool). False when it
    /// does not apply; then [`write_uncommon`](Reactor::write_uncommon) says why.
    #[inline(always)]
    fn try_write_copy(&mut self, id: ConnId, data: &[u8]) -> bool {
        let Some(conn) = plain_writer(&mut self.sources, id) else {
            return false;
        };
        if conn.check_limit(data.len()).is_err() {
            return false;
        }
        conn.push_copy_unchecked(data, &mut self.tails);
        if !conn.flush_scheduled && !data.is_empty() {
            conn.flush_scheduled = true;
            self.to_flush.push((id.key(), id.gen));
        }
        true
    }

    /// A copying write that is not the common case: a stale or closing
    /// connection (an error), one with producers, or a queue at its limit.
    #[inline(never)]
    fn write_uncommon(&mut self, id: ConnId, data: &[u8]) -> io::Result<()> {
        let conn = open_for_writes(&mut self.sources, id)?;
        if data.is_empty() {
            return Ok(());
        }
        if conn.fifo.is_some() {
            // A fresh copy lies in a block of its own size: not copied again.
            let held = conn.hold_behind_producers(Bytes::copy_from_slice(data), Some(data.len()));
            return self.queued_or_full(id, held.unwrap_or(Ok(())));
        }
        let queued = conn.enqueue_copy(data, &mut self.tails);
        self.queued_or_full(id, queued)
    }

    /// Queues all of `data` on connection `id` and leaves `data` empty:
    /// without copying when it is large, copied when it is small (see
    /// [`write_bytes`](Reactor::write_bytes) for the rule). What an echo
    /// does with its input: cheaper than `write_bytes(data.split().freeze())`
    /// for the small messages that would be copied anyway.
    ///
    /// When nothing is queued on the connection, what the socket takes is
    /// sent at once, and only the rest is queued: an echo's reply needs no
    /// copy into the queue and no flush later (together half of the reactor's
    /// work per echoed message). Writes after it in the same callback are
    /// queued behind it and sent together after the callback, as usual.
    #[inline]
    pub fn write_buf(&mut self, id: ConnId, data: &mut BytesMut) -> io::Result<()> {
        let sent = self.send_now(id, data);
        if sent == data.len() {
            if sent != 0 {
                data.clear();
                return Ok(());
            }
        } else if sent != 0 {
            data.advance(sent);
        }
        if self.copies(data) {
            // An echo's path: inline down to the copy (each call frame on
            // the way cost about as much as the copy of a small message).
            let result = if self.try_write_copy(id, data) {
                Ok(())
            } else {
                self.write_uncommon(id, data)
            };
            data.clear();
            result
        } else {
            self.write_bytes(id, data.split().freeze())
        }
    }

    /// Sends what the socket takes of `data` now, if the connection is open
    /// with nothing queued (nor held behind producers, nor a connect under
    /// way) so that nothing can be overtaken. The bytes sent; 0 when it does
    /// not apply or the socket is full. An error closes the connection, as
    /// the flush would have; the caller's queueing then fails.
    #[inline(always)]
    fn send_now(&mut self, id: ConnId, data: &[u8]) -> usize {
        let Some(conn) = plain_writer(&mut self.sources, id) else {
            return 0;
        };
        // Not an offloaded answer after `close()` (its flush watches the
        // peer's progress), nor before the connect completes.
        if !matches!(conn.closing, Closing::No)
            || conn.connecting
            || !conn.wq.is_empty()
            || data.is_empty()
        {
            return 0;
        }
        self.stats.sends += 1;
        match conn.stream.write(data) {
            Ok(n) => {
                conn.note_sent(n, self.now);
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                self.close_id(id, Closing::Now(CloseReason::from_io(e)));
                0
            }
        }
    }

    /// True when a write of `data` would be copied rather than queued as it
    /// is: it is small, or a small part of the read buffer it lies in.
    #[inline]
    fn copies(&self, data: &[u8]) -> bool {
        crate::reactor::wqueue::copies(data.len(), self.read_block_of(data))
    }

    /// The size of the read buffer `data` lies in, if it lies in it.
    #[inline]
    fn read_block_of(&self, data: &[u8]) -> Option<usize> {
        let at = data.as_ptr() as usize;
        let (start, end) = self.read_block;
        (start <= at && at < end).then_some(end - start)
    }

    /// Queues `data` on connection `id`, without copying it when it is
    /// large: a small `Bytes`, or a slice of the reactor's read buffer under
    /// half of it, is copied instead, so that it does not keep a large block
    /// alive (docs/design.md, "Memory follows the bytes held").
    ///
    /// Fails with `NotConnected` when `id` names no open connection (it
    /// closed, or the id is stale) or the connection is closing; the bytes are
    /// dropped. A write that would pass `max_queued` closes the connection with
    /// [`CloseReason::WriteQueueFull`] and fails with `QuotaExceeded` (a
    /// [`QueueFull`](crate::QueueFull) inside).
    pub fn write_bytes(&mut self, id: ConnId, data: impl Into<Bytes>) -> io::Result<()> {
        let data = data.into();
        let read_block = self.read_block_of(&data);
        let conn = open_for_writes(&mut self.sources, id)?;
        if data.is_empty() {
            return Ok(());
        }
        if conn.fifo.is_some() {
            let held = conn.hold_behind_producers(data, read_block);
            return self.queued_or_full(id, held.unwrap_or(Ok(())));
        }
        let queued = conn.enqueue(data, read_block, &mut self.tails);
        self.queued_or_full(id, queued)
    }

    /// After an enqueue: schedules the flush, or closes a connection whose
    /// queue would have passed its limit.
    fn queued_or_full(&mut self, id: ConnId, queued: Result<(), usize>) -> io::Result<()> {
        if let Err(limit) = queued {
            return self.queue_full(id, limit);
        }
        self.schedule_flush(id.key());
        Ok(())
    }

    /// Closes a connection whose queue would have passed its limit.
    #[cold]
    fn queue_full(&mut self, id: ConnId, limit: usize) -> io::Result<()> {
        log::warn!("{id}: write queue over {limit} bytes (peer not reading); closing");
        self.close_id(id, Closing::Now(CloseReason::WriteQueueFull { limit }));
        Err(crate::QueueFull::new(limit).into_io())
    }

    /// Closes connection `id` once its queue is sent (asynchat's
    /// `close_when_done`). Stale ids are ignored.
    pub fn close(&mut self, id: ConnId) {
        self.close_id(id, Closing::AfterFlush(CloseReason::Closed));
    }

    /// Sets [`ConnOptions::lingering_close`](crate::ConnOptions::lingering_close)
    /// for connection `id` (see [`Context::set_lingering_close`](crate::Context::set_lingering_close)).
    pub fn set_lingering_close(&mut self, id: ConnId, how: crate::LingeringClose) {
        if let Some(conn) = self.conn(id) {
            conn.opts.lingering_close = how;
        }
    }

    /// Closes connection `id` now, dropping whatever is still queued.
    pub fn abort(&mut self, id: ConnId) {
        self.close_id(id, Closing::Now(CloseReason::Closed));
    }

    /// Sends FIN once the queue is sent; reading goes on (half-close).
    pub fn shutdown_write(&mut self, id: ConnId) {
        if let Some(conn) = self.conn(id) {
            if conn.shutdown_write == ShutdownWrite::No {
                conn.shutdown_write = ShutdownWrite::Requested;
                self.schedule_flush(id.key());
            }
        }
    }

    /// Stops (`false`) or resumes (`true`) reading from connection `id`
    /// (asyncore's `readable()`). Input waits in the kernel meanwhile, and the
    /// peer's sending is held back by TCP flow control. Bytes the protocol
    /// left unconsumed when it paused are offered again on resume, before
    /// anything more is read. A peer's reset or a socket error is still
    /// noticed while paused: the connection closes at once.
    pub fn set_reading(&mut self, id: ConnId, reading: bool) {
        if let Some(conn) = self.conn(id) {
            conn.paused_by_user = !reading;
            if reading {
                self.schedule_read(id.key());
            }
        }
    }

    /// Shuts down gracefully: stops accepting (listeners close, Unix socket
    /// files go), closes datagram sockets once their queues are sent, and
    /// tells every connection through [`Protocol::on_shutdown`]. Connections
    /// are served until their peers close; after `grace`, those left are
    /// closed with [`CloseReason::ReactorStopped`] once a last nonblocking
    /// flush is done. [`run`](Reactor::run) returns when none is left.
    ///
    /// [`Protocol::on_shutdown`]: crate::Protocol::on_shutdown
    ///
    /// Called from a callback, it takes effect when the callback has
    /// returned (the caller's own `on_shutdown` included).
    pub fn shutdown_graceful(&mut self, grace: Duration) {
        if self.in_callback() {
            return self.after_callback(move |r| r.shutdown_graceful(grace));
        }
        if self.draining {
            return;
        }
        self.draining = true;
        self.told_to_stop();
        let open = self.stats.open;
        log::info!("shutting down: no new connections; {open} open get {grace:?} to finish");
        let keys: Vec<(usize, bool)> = self
            .sources
            .iter()
            .filter_map(|(key, source)| match source {
                Source::Listener(_) => Some((key, true)),
                Source::Datagram(_) => Some((key, false)),
                _ => None,
            })
            .collect();
        for (key, listener) in keys {
            if listener {
                let gen = self.gen_of(key).expect("a listener");
                self.close_listener(crate::ListenerId::new(key, gen));
            } else {
                self.close_datagram(key, CloseReason::Closed);
            }
        }
        let conns: Vec<usize> = self
            .sources
            .iter()
            // One still connecting (or adopted in a callback) is told once it
            // opens (`Reactor::opened`).
            .filter(|(_, s)| matches!(s, Source::Conn(c) if c.opened))
            .map(|(key, _)| key)
            .collect();
        for key in conns {
            self.call(key, |h, r, id| h.on_shutdown(r, id));
        }
        self.call_later(grace, |r| {
            let left: Vec<usize> = r
                .sources
                .iter()
                .filter(|(_, s)| matches!(s, Source::Conn(_)))
                .map(|(key, _)| key)
                .collect();
            if !left.is_empty() {
                log::warn!(
                    "shutdown: {} connections still open after the grace period; closing them",
                    left.len()
                );
            }
            for key in left {
                if let Some(conn) = crate::reactor::conn_in(&mut r.sources, key) {
                    let _ = conn.flush(&mut r.tails, &mut r.stats.sends, r.now);
                }
                r.close_at(key, Closing::Now(CloseReason::ReactorStopped));
            }
            r.drop_proxy_waits();
        });
    }

    /// Pauses or resumes reading for an offload pool's backpressure.
    pub(crate) fn set_offload_paused(&mut self, id: ConnId, paused: bool) {
        if let Some(conn) = self.conn(id) {
            conn.paused_by_offload = paused;
            if !paused {
                self.schedule_read(id.key());
            }
        }
    }

    /// An offloaded answer for connection `id` is now due: a close after
    /// flush waits for it, and a close of any kind drops the work still
    /// waiting (`forget_work`). False if `id` is not open.
    pub(crate) fn work_started(&mut self, id: ConnId) -> bool {
        match self.conn(id) {
            // Closing at once (in its `on_close`, say): the work would be
            // dropped unseen; better not start it.
            Some(conn) if !matches!(conn.closing, Closing::Now(_)) => {
                conn.pending_work += 1;
                true
            }
            _ => false,
        }
    }

    /// Delivers an offloaded answer: runs `f` for connection `id` if it is
    /// open, or closing after flush (its answers may still be written then).
    /// False, and `f` dropped, if it is gone or closing at once. A panic in
    /// `f` closes the connection, as a panic in one of its callbacks does.
    /// From inside a callback, `f` runs when that callback has returned.
    pub(crate) fn deliver_work(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut Reactor, ConnId) + 'static,
    ) -> bool {
        let Some(conn) = self.conn(id) else {
            return false;
        };
        if matches!(conn.closing, Closing::Now(_)) {
            conn.pending_work = conn.pending_work.saturating_sub(1);
            return false;
        }
        if self.in_callback() {
            // Still due: the count drops when it runs.
            self.after_callback(move |r| {
                if !r.deliver_work(id, f) {
                    log::debug!("{id} closed before a completion could run; dropped");
                }
            });
            return true;
        }
        let conn = self.conn(id).expect("checked above");
        conn.pending_work = conn.pending_work.saturating_sub(1);
        conn.completing = true;
        let result = self.enter_callback(|r| f(r, id));
        if let Some(conn) = self.conn(id) {
            conn.completing = false;
            // The last answer a close was waiting for.
            if conn.may_finish_close() {
                self.schedule_flush(id.key());
            }
        }
        if let Err(panic) = result {
            self.panicked(id, &*panic);
        }
        true
    }

    /// True when connection `id` is closing or gone.
    #[inline]
    pub fn is_closing(&self, id: ConnId) -> bool {
        self.conn_ref(id)
            .is_none_or(|c| !matches!(c.closing, Closing::No))
    }

    /// True when connection `id` reads (see [`Context::is_reading`](crate::Context::is_reading)).
    #[inline]
    pub fn is_reading(&self, id: ConnId) -> bool {
        self.conn_ref(id)
            .is_some_and(|c| c.wants_read() && !c.discards_input())
    }

    /// The memory connection `id`'s write queue holds, in bytes: its
    /// buffers' sizes, and for a zero-copy piece of the read buffer the part
    /// of that buffer it keeps alive. At most about twice
    /// [`queued`](Reactor::queued) plus a few KiB, and no more than a
    /// few array slots once the queue is empty (docs/design.md, "Memory follows the bytes held").
    pub fn queued_memory(&self, id: ConnId) -> usize {
        self.conn_ref(id).map_or(0, |c| c.wq.held())
    }

    /// Bytes queued on connection `id` and not yet taken by the socket.
    pub fn queued(&self, id: ConnId) -> usize {
        self.conn_ref(id)
            .map_or(0, |c| c.wq.len() + c.fifo_held() + c.tls_held())
    }

    /// The peer's address of connection `id`.
    /// A connection that began with a PROXY header has the client it
    /// names as its peer (see [`Reactor::proxy_addr`] for the proxy).
    pub fn peer_addr(&self, id: ConnId) -> io::Result<Addr> {
        match self.conn_ref(id) {
            Some(conn) => match &conn.proxied {
                Some(p) => Ok(p.client()),
                None => conn.stream.peer_addr(),
            },
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{id} is not open"),
            )),
        }
    }

    /// The local address of connection `id`.
    pub fn local_addr(&self, id: ConnId) -> io::Result<Addr> {
        match self.conn_ref(id) {
            Some(conn) => conn.stream.local_addr(),
            None => self.datagram_local_addr(id),
        }
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.stats.open
    }
}

/// The connection `id` if a write may take the common path: it accepts
/// writes, no producer is ahead of them and no TLS session has to encrypt
/// them (what queueing a copy and sending at once both require).
#[inline(always)]
fn plain_writer(sources: &mut Slab<Source>, id: ConnId) -> Option<&mut Conn> {
    match sources.get_mut(id.key()) {
        Some(Source::Conn(conn))
            if conn.gen == id.gen
                && conn.accepts_writes()
                && conn.fifo.is_none()
                && conn.tls.is_none() =>
        {
            Some(conn)
        }
        _ => None,
    }
}

/// The connection `id` if it still accepts writes.
pub(crate) fn open_for_writes(
    sources: &mut Slab<Source>,
    id: ConnId,
) -> io::Result<&mut crate::reactor::conn::Conn> {
    let Some(conn) = crate::reactor::conn_in(sources, id.key()).filter(|c| c.gen == id.gen) else {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            format!("{id} is not open"),
        ));
    };
    if !conn.accepts_writes() {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            format!("{id} is closing"),
        ));
    }
    Ok(conn)
}
