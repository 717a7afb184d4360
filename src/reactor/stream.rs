//! The life of a stream connection on the reactor (its [`EventSource`]):
//! adding and connecting, reading (with the short-read rule and a budget),
//! flushing the write queue, backpressure. What a protocol leaves unread is
//! kept by `input.rs`, closing is in `closing.rs`, the idle timeout in
//! `timer.rs`.

use std::io;
use std::mem;

use mio::event::Event;
use mio::{Interest, Token};

use crate::net::{ConnOptions, Stream};
use crate::reactor::conn::{Closing, Conn, ShutdownWrite};
use crate::reactor::handler::ConnHandler;
use crate::reactor::source::EventSource;
use crate::reactor::tls::TlsConn;
use crate::reactor::{
    conn_in, Source, TimerTarget, KEPT_BLOCK, OWN_READ_SIZE, READ_BUDGET, READ_SIZE,
};
use crate::{Addr, BlockingStream, CloseReason, ConnId, Reactor};

impl EventSource for Conn {
    fn gen(&self) -> Option<u32> {
        Some(self.gen)
    }

    #[inline]
    fn ready(reactor: &mut Reactor, key: usize, event: &Event) {
        reactor.conn_event(key, event);
    }

    fn resume(reactor: &mut Reactor, key: usize) {
        let Some(conn) = reactor.conn_at(key) else {
            return;
        };
        let read = mem::take(&mut conn.read_scheduled);
        if mem::take(&mut conn.produce_scheduled) {
            reactor.flush_conn(key);
        }
        // No edge vouches for this read (the connection was paused when its
        // last one came, perhaps with the peer's FIN), so a short read
        // proves nothing: read to WouldBlock or EOF.
        if read {
            reactor.read_conn(key, false);
        }
    }
}

/// What a new connection may come with besides its socket.
#[derive(Default)]
pub(crate) struct ConnExtras {
    /// The PROXY header it began with.
    pub(crate) proxied: Option<Box<crate::reactor::proxy_wait::Proxied>>,
    /// Its TLS state (`on_open` waits for the handshake).
    pub(crate) tls: Option<Box<TlsConn>>,
}

impl Reactor {
    /// Puts a connected (or connecting) stream under the reactor's care,
    /// with what it came with besides its socket: a PROXY header (set
    /// before `on_open`, which may ask for the peer) or TLS state (`on_open`
    /// after the handshake).
    pub(crate) fn add_conn(
        &mut self,
        stream: Stream,
        handler: Box<dyn ConnHandler>,
        opts: ConnOptions,
        listener: Option<crate::ListenerId>,
        connecting: bool,
        extras: ConnExtras,
    ) -> io::Result<ConnId> {
        let ConnExtras { proxied, tls } = extras;
        let gen = self.next_gen();
        let mut conn = Conn::new(stream, handler, opts, self.now);
        conn.proxied = proxied;
        let tls_conn = tls.is_some();
        conn.tls = tls;
        conn.gen = gen;
        conn.listener = listener;
        conn.connecting = connecting;
        conn.writable_interest = connecting;
        let entry = self.sources.vacant_entry();
        let key = entry.key();
        let interest = if connecting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.poll
            .registry()
            .register(&mut conn.stream, Token(key), interest)?;
        let idle = conn.opts.idle_timeout;
        entry.insert(Source::Conn(conn));
        self.stats.open += 1;
        let id = ConnId::new(key, gen);
        if let Some(idle) = idle {
            let timer = self.timers.insert(self.now, idle, TimerTarget::Idle(id));
            self.conn_at(key).expect("just inserted").idle_timer = Some(timer);
        }
        if tls_conn {
            // `on_open` waits for the handshake, which has a deadline. An
            // accepted client's hello is usually there already: read it
            // this turn.
            self.tls_added(id);
            if listener.is_some() {
                self.schedule_read(key);
            }
        } else if !connecting {
            // From a callback (`adopt`), after it: callbacks never nest.
            self.after_callback(move |r| {
                if r.gen_of(key) == Some(gen) {
                    r.opened(key);
                }
            });
        }
        Ok(id)
    }

    /// Opens an outgoing stream connection served by `handler` (see
    /// [`Reactor::connect_with`]).
    pub(crate) fn connect_handler(
        &mut self,
        addr: &Addr,
        opts: &ConnOptions,
        handler: Box<dyn ConnHandler>,
    ) -> io::Result<ConnId> {
        self.connect_inner(addr, opts, handler, None)
    }

    /// A connect, plain or with the TLS state of a client (whose first
    /// records are sent once the connect completes).
    pub(crate) fn connect_inner(
        &mut self,
        addr: &Addr,
        opts: &ConnOptions,
        handler: Box<dyn ConnHandler>,
        tls: Option<Box<TlsConn>>,
    ) -> io::Result<ConnId> {
        opts.check()?;
        let stream = Stream::connect(addr)?;
        if opts.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let extras = ConnExtras { proxied: None, tls };
        let id = self.add_conn(stream, handler, opts.clone(), None, true, extras)?;
        if let Some(limit) = opts.connect_timeout {
            let timer = self
                .timers
                .insert(self.now, limit, TimerTarget::ConnectTimeout(id));
            self.conn(id).expect("just added").connect_timer = Some(timer);
        }
        Ok(id)
    }

    /// Serves an already connected stream with `handler` (see
    /// [`Reactor::adopt`]).
    pub(crate) fn adopt_handler(
        &mut self,
        stream: BlockingStream,
        opts: &ConnOptions,
        handler: Box<dyn ConnHandler>,
    ) -> io::Result<ConnId> {
        opts.check()?;
        let stream = stream.into_mio()?;
        self.add_conn(
            stream,
            handler,
            opts.clone(),
            None,
            false,
            ConnExtras::default(),
        )
    }

    #[inline]
    pub(crate) fn conn_event(&mut self, key: usize, event: &Event) {
        let Some(conn) = self.conn_at(key) else {
            return;
        };
        if conn.connecting {
            if event.is_writable() || event.is_error() || event.is_write_closed() {
                self.finish_connect(key);
            }
            return;
        }
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        if readable {
            conn.caught_up = false;
        }
        if event.is_writable() && !conn.wq.is_empty() {
            self.flush_conn(key);
        }
        if readable {
            // The short-read shortcut assumes the kernel signals every later
            // arrival; a peer's FIN already seen in this event is not "later".
            let trust_short_read = !event.is_read_closed() && !event.is_error();
            self.read_conn(key, trust_short_read);
        }
        if event.is_error() {
            self.error_event(key);
        }
    }

    /// The socket reported an error (a reset peer) that no read may meet:
    /// the connection is paused, or closing after flush, or its read paused
    /// again before reaching the error (bytes offered again filled an offload
    /// pool). The edge-triggered event does not come again, so act now, or a
    /// reset peer holds its descriptor, and its offloaded work, until the
    /// pause ends.
    fn error_event(&mut self, key: usize) {
        let Some(conn) = self.conn_at(key) else {
            return;
        };
        if matches!(conn.closing, Closing::Now(_)) {
            return;
        }
        if let Ok(Some(e)) | Err(e) = conn.stream.take_error() {
            self.close_at(key, Closing::Now(CloseReason::from_io(e)));
        }
    }

    fn finish_connect(&mut self, key: usize) {
        let Some(conn) = self.conn_at(key) else {
            return;
        };
        let id = ConnId::new(key, conn.gen);
        let failure = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match conn.stream.peer_addr() {
                Ok(_) => None,
                // Not connected yet: a spurious wake-up; wait for the next one.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failure {
            self.close_id(id, Closing::Now(CloseReason::ConnectFailed(e)));
            return;
        }
        conn.connecting = false;
        let tls = conn.tls.is_some();
        if let Some(t) = conn.connect_timer.take() {
            self.timers.cancel(t);
        }
        // A TLS connection opens when its handshake is done.
        if !tls {
            self.opened(key);
        }
        self.schedule_flush(key);
        self.schedule_read(key);
    }

    /// `on_open`, then, if the reactor is shutting down, `on_shutdown`: a
    /// connection that opens during a graceful shutdown (a connect that
    /// completes, an adopted socket) is told as the others were, and none is
    /// told before it opened.
    pub(crate) fn opened(&mut self, key: usize) {
        if let Some(conn) = self.conn_at(key) {
            conn.opened = true;
        }
        self.call(key, |h, r, id| h.on_open(r, id));
        if self.draining {
            self.call(key, |h, r, id| h.on_shutdown(r, id));
        }
        // An accepted client usually sent its request with the handshake:
        // read it now rather than a loop turn later (one `epoll_wait` less
        // per connection under `Connection: close` load). Not for TLS: its
        // `on_open` comes from inside a read, which goes on by itself.
        if self
            .conn_at(key)
            .is_some_and(|c| c.listener.is_some() && c.tls.is_none())
        {
            self.read_conn(key, true);
        }
    }

    /// Reads until the socket is drained, the budget is spent, or the
    /// connection should stop reading. `trust_short_read`: a read that returns
    /// less than offered means the socket is empty (saves one `read` per
    /// wake-up, as tokio does); off after the peer's FIN or an error.
    #[inline]
    pub(crate) fn read_conn(&mut self, key: usize, trust_short_read: bool) {
        self.read_loop::<false>(key, trust_short_read);
    }

    /// A TLS connection's reads: out of line, so that the plain loop stays
    /// as it was before TLS (its checks cost the plain path ~3 %).
    #[cold]
    #[inline(never)]
    fn read_tls_conn(&mut self, key: usize, trust_short_read: bool) {
        self.read_loop::<true>(key, trust_short_read);
    }

    /// The read loop, for a plain (`TLS == false`) or a TLS connection: one
    /// body, monomorphised twice, so that the plain one has no TLS branches
    /// but the one check that hands a TLS connection over.
    fn read_loop<const TLS: bool>(&mut self, key: usize, mut trust_short_read: bool) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conn_at(key) else {
                return;
            };
            if !TLS && conn.tls.is_some() {
                return self.read_tls_conn(key, trust_short_read);
            }
            if !conn.wants_read() {
                return;
            }
            if conn.discards_input() {
                return self.discard_input(key, trust_short_read);
            }
            // Bytes the protocol left when it paused come first: no socket
            // edge announces them, the peer may be waiting for their answer,
            // and the end of stream must not overtake them.
            if conn.redeliver {
                conn.redeliver = false;
                if let Some(mut buf) = conn.rbuf.take() {
                    let start = buf.as_ptr() as usize;
                    self.read_block = (start, start + buf.capacity());
                    self.call(key, |h, r, id| h.on_data(r, id, &mut buf));
                    self.keep_unconsumed(key, buf, true);
                    self.settle();
                }
                continue;
            }
            let mut own = conn.rbuf.is_some();
            let mut buf = match conn.rbuf.take() {
                // A few bytes kept move to the shared buffer and are read
                // after there: a connection holding a little never grows a
                // read buffer of its own (a copy of at most KEPT_BLOCK).
                Some(kept) if kept.len() <= KEPT_BLOCK => {
                    own = false;
                    let mut buf = mem::take(&mut self.scratch);
                    buf.extend_from_slice(&kept);
                    self.release_kept(kept);
                    buf
                }
                Some(buf) => buf,
                None => mem::take(&mut self.scratch),
            };
            // Reserve only when little room is left: each split-off message
            // shrinks the room, and `reserve` on a shared buffer is not free
            // (it was a tenth of the reactor's work per echoed message).
            // An own buffer (a long partial frame) grows by at least what it
            // holds: no quadratic copying while a long frame trickles in.
            let size = if own {
                buf.len().max(OWN_READ_SIZE)
            } else {
                READ_SIZE
            };
            if buf.capacity() - buf.len() < size / 4 {
                buf.reserve(size);
                if !own {
                    let start = buf.as_ptr() as usize;
                    self.scratch_block = (start, start + buf.capacity());
                }
            }
            self.read_block = if own {
                let start = buf.as_ptr() as usize;
                (start, start + buf.capacity())
            } else {
                self.scratch_block
            };
            let offered = buf.capacity() - buf.len();
            let conn = conn_in(&mut self.sources, key).expect("checked above");
            conn.caught_up = false;
            let result = match conn.tls.as_deref_mut() {
                Some(session) if TLS => session.read(
                    &conn.stream,
                    &mut conn.wq,
                    &mut self.tails,
                    &mut buf,
                    &mut trust_short_read,
                ),
                _ => conn.stream.read_into(&mut buf),
            };
            match result {
                Ok(0) => {
                    conn.caught_up = !TLS;
                    self.keep_unconsumed(key, buf, own);
                    self.peer_eof(key);
                    return;
                }
                Ok(n) => {
                    conn.last_active = self.now;
                    conn.caught_up = !TLS && n < offered && trust_short_read;
                    // The end of the handshake (`on_open`) comes first.
                    if TLS && !self.tls_events(key) {
                        self.keep_unconsumed(key, buf, own);
                        return;
                    }
                    self.call(key, |h, r, id| h.on_data(r, id, &mut buf));
                    self.keep_unconsumed(key, buf, own);
                    if n < offered && trust_short_read {
                        return;
                    }
                    // Fair turns: what this read produced goes out (or
                    // raises backpressure) before the next read, so a burst
                    // cannot pile up several reads' worth of output.
                    self.settle();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.caught_up = !TLS;
                    self.keep_unconsumed(key, buf, own);
                    if TLS {
                        self.tls_events(key);
                    }
                    return;
                }
                Err(e) => {
                    self.keep_unconsumed(key, buf, own);
                    self.close_at(key, Closing::Now(CloseReason::from_io(e)));
                    return;
                }
            }
        }
        self.schedule_read(key);
    }

    fn peer_eof(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        conn.eof = true;
        conn.last_active = self.now;
        let id = ConnId::new(key, conn.gen);
        self.call(key, |h, r, id| h.on_eof(r, id));
        // The default `on_eof` closed with `Closed`; say who started it.
        if let Some(conn) = self.conn(id) {
            if let Closing::AfterFlush(reason @ CloseReason::Closed) = &mut conn.closing {
                *reason = CloseReason::PeerClosed;
            }
        }
    }

    pub(crate) fn schedule_read(&mut self, key: usize) {
        if let Some(conn) = self.conn_at(key) {
            if !conn.read_scheduled && conn.wants_read() {
                conn.read_scheduled = true;
                let gen = conn.gen;
                self.ready.push((key, gen));
            }
        }
    }

    /// [`schedule_read`](Self::schedule_read), unless the last read drained
    /// the kernel's input: then later input comes with an edge, and the read
    /// would only find nothing (one wasted call per closing connection).
    pub(crate) fn schedule_read_unless_caught_up(&mut self, key: usize) {
        if self.conn_at(key).is_some_and(|c| !c.caught_up) {
            self.schedule_read(key);
        }
    }

    pub(crate) fn schedule_flush(&mut self, key: usize) {
        if let Some(conn) = self.conn_at(key) {
            if !conn.flush_scheduled {
                conn.flush_scheduled = true;
                let gen = conn.gen;
                self.to_flush.push((key, gen));
            }
        }
    }

    /// Flushes a connection with producers: fill the queue to the low-water
    /// mark, send, and again while the socket takes it all, up to the
    /// budget. Whether the queue is empty; `None` when it closed.
    fn flush_producing(&mut self, key: usize) -> Option<bool> {
        let mut budget = crate::reactor::producer::PRODUCE_BUDGET;
        loop {
            let producing = conn_in(&mut self.sources, key).is_some_and(|c| c.fifo.is_some());
            if producing {
                budget = budget.saturating_sub(self.pump(key, budget));
            }
            let conn = conn_in(&mut self.sources, key)?;
            let flushed = match conn.flush(&mut self.tails, &mut self.stats.sends, self.now) {
                Ok(flushed) => flushed,
                Err(e) => {
                    self.close_at(key, Closing::Now(CloseReason::from_io(e)));
                    return None;
                }
            };
            if !flushed || conn.fifo.is_none() {
                return Some(flushed);
            }
            if budget == 0 {
                // More to produce and a socket that takes it: next turn,
                // after the others.
                if !conn.produce_scheduled {
                    conn.produce_scheduled = true;
                    let gen = conn.gen;
                    self.ready.push((key, gen));
                }
                return Some(true);
            }
        }
    }

    /// Sends what the socket takes, then applies the consequences: interest
    /// changes, a pending half-close or close, the end of backpressure.
    pub(crate) fn flush_conn(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        conn.flush_scheduled = false;
        if matches!(conn.closing, Closing::Now(_)) {
            return self.finish_close(key);
        }
        if conn.connecting {
            return;
        }
        let had_queue = !conn.wq.is_empty();
        let sent_before = conn.sent;
        let flushed = if conn.fifo.is_none() {
            // No producer: one flush (the common case, without the loop's
            // repeated lookups).
            match conn.flush(&mut self.tails, &mut self.stats.sends, self.now) {
                Ok(flushed) => flushed,
                Err(e) => return self.close_at(key, Closing::Now(CloseReason::from_io(e))),
            }
        } else {
            match self.flush_producing(key) {
                Some(flushed) => flushed,
                None => return,
            }
        };
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        if had_queue {
            // Writing counts as activity for the idle timeout even when the
            // socket is full (the peer's reading is the stall checks' business).
            conn.last_active = self.now;
        }
        // Closing, and the peer took more: progress for the close_stall
        // check, and more of its input may be dropped.
        let mut resume_discard = false;
        if conn.sent != sent_before {
            let discards = conn.discards_input();
            if let Some(cs) = conn.close.as_deref_mut() {
                if discards {
                    cs.taken_at = self.now;
                }
                resume_discard = mem::take(&mut cs.discard_held);
            }
        }
        // Everything sent, producers included: time for what waits on it.
        let done = flushed && conn.fifo.is_none();
        if done
            && conn.tls.as_deref().is_some_and(|t| t.notify_due())
            && (conn.shutdown_write == ShutdownWrite::Requested || conn.may_finish_close())
        {
            // TLS: close_notify goes after the data, before the FIN.
            if let Some(tls) = conn.tls.as_deref_mut() {
                tls.queue_close_notify(&mut conn.wq, &mut self.tails);
            }
            return self.flush_conn(key);
        }
        if done {
            if conn.shutdown_write == ShutdownWrite::Requested {
                conn.shutdown_write = ShutdownWrite::Done;
                if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                    return self.close_at(key, Closing::Now(CloseReason::from_io(e)));
                }
            }
            // After the peer's end of stream nothing can arrive unread.
            if conn.may_finish_close() && conn.eof {
                return self.finish_close(key);
            }
        }
        if flushed == conn.writable_interest {
            let interest = if flushed {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            conn.writable_interest = !flushed;
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
            {
                return self.close_at(key, Closing::Now(CloseReason::Error(e)));
            }
        }
        // Answers of offloaded work still due keep the write side open.
        if done && conn.may_finish_close() {
            return self.linger(key);
        }
        // Closing with bytes the peer has yet to take: bound the wait.
        let watch = !done
            && conn.discards_input()
            && conn
                .close
                .as_ref()
                .is_none_or(|cs| cs.stall_timer.is_none());
        if conn.crossed_low_water() {
            self.release_producers(key);
            self.call(key, |h, r, id| h.on_drained(r, id));
            self.schedule_read(key);
        }
        if watch {
            self.watch_stall(key);
        }
        if resume_discard {
            self.schedule_read(key);
        }
    }
}
