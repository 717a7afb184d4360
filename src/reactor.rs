//! The reactor: one thread, one `mio::Poll`, every socket in one `Slab`.
//!
//! A turn ([`Reactor::run_once`]) polls, dispatches each event to its source,
//! serves the *ready list* (connections that still had input when their read
//! budget ran out, or that were just allowed to read again), fires expired
//! timers and runs commands from other threads. Callbacks never nest: work a
//! callback causes on other connections (a write, a close) is queued and
//! carried out when the callback has returned, by [`Reactor::settle`].
//!
//! Accepting lives in `listener.rs`, datagram sockets in `datagram.rs`; this
//! file holds the loop and the life of a stream connection.

use std::any::Any;
use std::io;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::conn::{Closing, Conn, ShutdownWrite};
use crate::datagram::DatagramSocket;
use crate::handle::{Command, Shared};
use crate::listener::ListenerState;
use crate::net::{ConnOptions, Stream};
use crate::timer::Timers;
use crate::{Addr, CloseReason, ConnId, Context, Handle, Protocol, TimerId};

const WAKER: Token = Token(usize::MAX);
/// Size of the shared read buffer, and of one read.
const READ_SIZE: usize = 64 * 1024;
/// Reads per connection per turn before others get their go (64 KiB each).
const READ_BUDGET: usize = 8;
/// Growth step of a connection's own buffer (one that holds a partial frame).
const OWN_READ_SIZE: usize = 8 * 1024;
/// Emptied connection buffers kept for reuse, so that partial frames in
/// steady traffic do not allocate.
const BUFFER_POOL: usize = 64;

pub(crate) enum Source {
    Listener(ListenerState),
    Conn(Conn),
    Datagram(DatagramSocket),
    Signals(crate::signals::SignalSource),
    /// A closed source whose slot stays reserved until the end of the turn, so
    /// that an event already fetched for it cannot reach a new occupant.
    Closed,
}

/// What a timer does when it expires.
pub(crate) enum TimerTarget {
    /// A timer a protocol set on its connection or datagram socket.
    User(ConnId),
    Idle(ConnId),
    ConnectTimeout(ConnId),
    /// Resume accepting after an `EMFILE` back-off.
    ResumeAccept(crate::ListenerId),
    Call(Box<dyn FnOnce(&mut Reactor)>),
}

/// A single-threaded event loop serving listeners, connections and datagram
/// sockets. See the [crate documentation](crate) for an example.
pub struct Reactor {
    pub(crate) poll: Poll,
    events: Option<Events>,
    pub(crate) sources: Slab<Source>,
    pub(crate) timers: Timers<TimerTarget>,
    shared: Arc<Shared>,
    spare_commands: Vec<Command>,
    next_gen: u32,
    /// Sources to serve next turn without waiting for an event.
    pub(crate) ready: Vec<(usize, u32)>,
    /// Connections whose write queue or closing state changed in a callback.
    pub(crate) to_flush: Vec<(usize, u32)>,
    /// Slots to free at the end of the turn.
    closed: Vec<usize>,
    /// The shared read buffer: every read lands here unless the connection
    /// holds a partial frame in a buffer of its own.
    pub(crate) scratch: BytesMut,
    /// Where `write(&[u8])` copies to; split off as `Bytes`, so it is reused
    /// once the socket has taken the bytes.
    staging: BytesMut,
    pool: Vec<BytesMut>,
    /// Receive buffer of datagram sockets.
    pub(crate) dgram_buf: Vec<u8>,
    pub(crate) now: Instant,
    stopping: bool,
    running: bool,
}

impl Reactor {
    /// Creates a reactor with no sockets.
    pub fn new() -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        Ok(Reactor {
            poll,
            events: Some(Events::with_capacity(1024)),
            sources: Slab::new(),
            timers: Timers::new(),
            shared: Arc::new(Shared::new(waker)),
            spare_commands: Vec::new(),
            next_gen: 0,
            ready: Vec::new(),
            to_flush: Vec::new(),
            closed: Vec::new(),
            scratch: BytesMut::new(),
            staging: BytesMut::new(),
            pool: Vec::new(),
            dgram_buf: Vec::new(),
            now: Instant::now(),
            stopping: false,
            running: false,
        })
    }

    /// A handle for other threads: stop, post, write.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Runs turns until [`stop`](Reactor::stop) (or [`Handle::stop`]) is called.
    /// Connections stay open: `run` may be called again; dropping the reactor
    /// closes them.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.run_once(None)? {}
        Ok(())
    }

    /// Runs one turn: waits for events at most `timeout` (`None`: until
    /// something happens), then handles what arrived and what expired.
    /// Returns true when a stop was requested (the request is consumed), for
    /// loops of one's own around `run_once`.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        if self.running {
            return Err(io::Error::other(
                "Reactor::run called from inside a callback",
            ));
        }
        self.running = true;
        let result = self.turn(timeout);
        self.running = false;
        result?;
        Ok(mem::take(&mut self.stopping))
    }

    /// Asks [`run`](Reactor::run) to return once the current turn is done.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.settle();
        let mut events = self.events.take().expect("events are put back every turn");
        let result = self.poll_and_dispatch(&mut events, timeout);
        self.events = Some(events);
        result?;
        self.serve_ready();
        self.fire_timers();
        for key in self.closed.drain(..) {
            self.sources.remove(key);
        }
        if self.shared.take_stop() {
            self.stopping = true;
        }
        Ok(())
    }

    fn poll_and_dispatch(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let mut timeout = timeout;
        if !self.ready.is_empty() || self.stopping {
            timeout = Some(Duration::ZERO);
        } else if let Some(deadline) = self.timers.next_deadline() {
            let until = deadline.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(until, |t| t.min(until)));
        }
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(e) => return Err(e),
        }
        self.now = Instant::now();
        for event in events.iter() {
            if event.token() == WAKER {
                self.run_commands();
            } else {
                self.dispatch(event);
            }
            self.settle();
        }
        Ok(())
    }

    fn dispatch(&mut self, event: &Event) {
        let key = event.token().0;
        match self.sources.get_mut(key) {
            Some(Source::Conn(_)) => self.conn_event(key, event),
            Some(Source::Listener(_)) => self.accept_ready(key),
            Some(Source::Datagram(_)) => self.datagram_event(key, event),
            Some(Source::Signals(_)) => self.signal_event(key),
            Some(Source::Closed) | None => {}
        }
    }

    fn serve_ready(&mut self) {
        let ready = mem::take(&mut self.ready);
        for &(key, gen) in &ready {
            if self.gen_of(key) != Some(gen) {
                continue;
            }
            match &mut self.sources[key] {
                Source::Conn(conn) => {
                    conn.read_scheduled = false;
                    self.read_conn(key, true);
                }
                Source::Listener(_) => self.accept_ready(key),
                Source::Datagram(_) => self.read_datagrams(key),
                _ => {}
            }
            self.settle();
        }
        // Keep the allocation: entries added meanwhile go after the old ones.
        let mut ready = ready;
        ready.clear();
        ready.append(&mut self.ready);
        self.ready = ready;
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((timer, target)) = self.timers.pop_expired(now) {
            match target {
                TimerTarget::User(id) => self.user_timer(id, timer),
                TimerTarget::Idle(id) => self.idle_timer(id),
                TimerTarget::ConnectTimeout(id) => {
                    let err = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                    self.close_id(id, Closing::Now(CloseReason::ConnectFailed(err)));
                }
                TimerTarget::ResumeAccept(id) => self.resume_accept(id),
                TimerTarget::Call(f) => f(self),
            }
            self.settle();
        }
    }

    fn run_commands(&mut self) {
        let spare = mem::take(&mut self.spare_commands);
        let mut commands = self.shared.take_commands(spare);
        for command in commands.drain(..) {
            match command {
                Command::Post(f) => f(self),
                Command::Write(id, data) => {
                    if let Err(e) = self.write_bytes(id, data) {
                        log::debug!("write from another thread to {id} dropped: {e}");
                    }
                }
                Command::Close(id) => self.close(id),
            }
            self.settle();
        }
        self.spare_commands = commands;
        if self.shared.take_stop() {
            self.stopping = true;
        }
    }

    // ----- ids and slots ---------------------------------------------------

    pub(crate) fn next_gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    pub(crate) fn gen_of(&self, key: usize) -> Option<u32> {
        match self.sources.get(key)? {
            Source::Conn(c) => Some(c.gen),
            Source::Listener(l) => Some(l.gen),
            Source::Datagram(d) => Some(d.gen),
            Source::Signals(_) | Source::Closed => None,
        }
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        match self.sources.get_mut(id.key()) {
            Some(Source::Conn(c)) if c.gen == id.gen => Some(c),
            _ => None,
        }
    }

    fn conn_at(&mut self, key: usize) -> Option<&mut Conn> {
        conn_in(&mut self.sources, key)
    }

    pub(crate) fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    pub(crate) fn release_slot(&mut self, key: usize) -> Source {
        self.closed.push(key);
        mem::replace(&mut self.sources[key], Source::Closed)
    }

    // ----- callbacks -------------------------------------------------------

    /// Runs one protocol callback with the protocol taken out of its slot, so
    /// the callback may borrow the whole reactor. A panic closes the connection
    /// (after sending what it had queued) and is logged; the loop goes on.
    pub(crate) fn call<R>(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> Option<R> {
        let conn = self.conn_at(key)?;
        let id = ConnId::new(key, conn.gen);
        let mut proto = conn.proto.take()?;
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut cx = Context::new(self, id);
            f(&mut *proto, &mut cx)
        }));
        if let Some(conn) = self.conn_at(key) {
            conn.proto = Some(proto);
        }
        match result {
            Ok(r) => Some(r),
            Err(panic) => {
                let msg = panic_message(&*panic);
                let peer = self
                    .peer_addr(id)
                    .map_or_else(|e| e.to_string(), |a| a.to_string());
                log::error!("{id} ({peer}): callback panicked: {msg}; closing this connection");
                self.close_id(id, Closing::AfterFlush(CloseReason::Panicked(msg)));
                None
            }
        }
    }

    /// Carries out what callbacks queued: flushes, closes, and the callbacks
    /// those cause (`on_drained`, `on_close`), until nothing is left.
    pub(crate) fn settle(&mut self) {
        while let Some((key, gen)) = self.to_flush.pop() {
            if self.gen_of(key) == Some(gen) {
                self.flush_conn(key);
            }
        }
    }

    // ----- stream connections ---------------------------------------------

    /// Puts a connected (or connecting) stream under the reactor's care.
    pub(crate) fn add_conn(
        &mut self,
        stream: Stream,
        proto: Box<dyn Protocol>,
        opts: ConnOptions,
        listener: Option<usize>,
        connecting: bool,
    ) -> io::Result<ConnId> {
        let gen = self.next_gen();
        let mut conn = Conn::new(stream, proto, opts, self.now);
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
        let id = ConnId::new(key, gen);
        if let Some(idle) = idle {
            let timer = self.timers.insert(self.now + idle, TimerTarget::Idle(id));
            self.conn_at(key).expect("just inserted").idle_timer = Some(timer);
        }
        if !connecting {
            self.call(key, |p, cx| p.on_open(cx));
        }
        Ok(id)
    }

    /// Opens an outgoing stream connection served by `proto`.
    ///
    /// Success calls `on_open`; a refusal, an unreachable host or the
    /// `connect_timeout` of the default [`ConnOptions`] ends in `on_close` with
    /// [`CloseReason::ConnectFailed`]. An address that cannot even be tried
    /// fails here and the protocol is dropped unused.
    pub fn connect(&mut self, addr: &Addr, proto: impl Protocol) -> io::Result<ConnId> {
        self.connect_with(addr, &ConnOptions::default(), proto)
    }

    /// [`connect`](Reactor::connect) with explicit connection options.
    pub fn connect_with(
        &mut self,
        addr: &Addr,
        opts: &ConnOptions,
        proto: impl Protocol,
    ) -> io::Result<ConnId> {
        let stream = Stream::connect(addr)?;
        if opts.nodelay {
            let _ = stream.set_nodelay();
        }
        let id = self.add_conn(stream, Box::new(proto), opts.clone(), None, true)?;
        if let Some(limit) = opts.connect_timeout {
            let timer = self
                .timers
                .insert(self.now + limit, TimerTarget::ConnectTimeout(id));
            self.conn(id).expect("just added").connect_timer = Some(timer);
        }
        Ok(id)
    }

    fn conn_event(&mut self, key: usize, event: &Event) {
        let Some(conn) = self.conn_at(key) else {
            return;
        };
        if conn.connecting {
            if event.is_writable() || event.is_error() || event.is_write_closed() {
                self.finish_connect(key);
            }
            return;
        }
        if event.is_writable() && !conn.wqueue.is_empty() {
            self.flush_conn(key);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // The short-read shortcut assumes the kernel signals every later
            // arrival; a peer's FIN already seen in this event is not "later".
            let trust_short_read = !event.is_read_closed() && !event.is_error();
            self.read_conn(key, trust_short_read);
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
        if let Some(t) = conn.connect_timer.take() {
            self.timers.cancel(t);
        }
        self.call(key, |p, cx| p.on_open(cx));
        self.schedule_flush(key);
        self.schedule_read(key);
    }

    /// Reads until the socket is drained, the budget is spent, or the
    /// connection should stop reading. `trust_short_read`: a read that returns
    /// less than offered means the socket is empty (saves one `read` per
    /// wake-up, as tokio does); off after the peer's FIN or an error.
    pub(crate) fn read_conn(&mut self, key: usize, trust_short_read: bool) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conn_at(key) else {
                return;
            };
            if !conn.wants_read() {
                return;
            }
            let own = conn.rbuf.is_some();
            let mut buf = match conn.rbuf.take() {
                Some(buf) => buf,
                None => mem::take(&mut self.scratch),
            };
            buf.reserve(if own { OWN_READ_SIZE } else { READ_SIZE });
            let offered = buf.capacity() - buf.len();
            let conn = conn_in(&mut self.sources, key).expect("checked above");
            let result = conn.stream.read_into(&mut buf);
            match result {
                Ok(0) => {
                    self.keep_unconsumed(key, buf, own);
                    self.peer_eof(key);
                    return;
                }
                Ok(n) => {
                    conn.last_active = self.now;
                    self.call(key, |p, cx| p.on_data(cx, &mut buf));
                    self.keep_unconsumed(key, buf, own);
                    if n < offered && trust_short_read {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.keep_unconsumed(key, buf, own);
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

    /// Puts a read buffer back after `on_data`: what the protocol left stays
    /// with the connection (in a buffer of its own, so the shared one is free
    /// for others); an empty buffer goes back to the shared one or the pool.
    fn keep_unconsumed(&mut self, key: usize, mut buf: BytesMut, own: bool) {
        if buf.is_empty() {
            buf.clear();
            if !own {
                self.scratch = buf;
            } else if self.pool.len() < BUFFER_POOL && buf.capacity() <= READ_SIZE {
                self.pool.push(buf);
            }
            return;
        }
        let kept = if own {
            buf
        } else {
            let mut kept = self.pool.pop().unwrap_or_default();
            kept.extend_from_slice(&buf);
            buf.clear();
            self.scratch = buf;
            kept
        };
        if let Some(conn) = self.conn_at(key) {
            conn.rbuf = Some(kept);
        }
    }

    fn peer_eof(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        conn.eof = true;
        conn.last_active = self.now;
        let id = ConnId::new(key, conn.gen);
        self.call(key, |p, cx| p.on_eof(cx));
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

    pub(crate) fn schedule_flush(&mut self, key: usize) {
        if let Some(conn) = self.conn_at(key) {
            if !conn.flush_scheduled {
                conn.flush_scheduled = true;
                let gen = conn.gen;
                self.to_flush.push((key, gen));
            }
        }
    }

    /// Sends what the socket takes, then applies the consequences: interest
    /// changes, a pending half-close or close, the end of backpressure.
    fn flush_conn(&mut self, key: usize) {
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
        let had_queue = !conn.wqueue.is_empty();
        let flushed = match conn.flush() {
            Ok(flushed) => flushed,
            Err(e) => return self.close_at(key, Closing::Now(CloseReason::from_io(e))),
        };
        if had_queue {
            conn.last_active = self.now;
        }
        if flushed {
            if conn.shutdown_write == ShutdownWrite::Requested {
                conn.shutdown_write = ShutdownWrite::Done;
                if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                    return self.close_at(key, Closing::Now(CloseReason::from_io(e)));
                }
            }
            if matches!(conn.closing, Closing::AfterFlush(_)) {
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
        if conn.crossed_low_water() {
            self.call(key, |p, cx| p.on_drained(cx));
            self.schedule_read(key);
        }
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
        self.schedule_flush(key);
    }

    /// Deregisters, calls `on_close` exactly once and frees the slot.
    fn finish_close(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        let reason = match mem::replace(&mut conn.closing, Closing::Now(CloseReason::Closed)) {
            Closing::AfterFlush(r) | Closing::Now(r) => r,
            Closing::No => CloseReason::Closed,
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        for timer in [conn.idle_timer.take(), conn.connect_timer.take()]
            .into_iter()
            .flatten()
        {
            self.timers.cancel(timer);
        }
        let listener = conn.listener;
        if !reason.is_clean() || conn.queued > 0 {
            let unsent = conn.queued;
            log::debug!(
                "{}: {reason}; {unsent} queued bytes unsent",
                ConnId::new(key, conn.gen)
            );
        }
        self.call(key, |p, cx| p.on_close(cx, &reason));
        if let Source::Conn(conn) = self.release_slot(key) {
            if let Some(buf) = conn.rbuf {
                drop(buf);
            }
        }
        if let Some(listener) = listener {
            self.connection_closed(listener);
        }
    }

    fn idle_timer(&mut self, id: ConnId) {
        let now = Instant::now();
        let Some(conn) = self.conn(id) else { return };
        conn.idle_timer = None;
        let Some(limit) = conn.opts.idle_timeout else {
            return;
        };
        let idle = now.saturating_duration_since(conn.last_active);
        if idle >= limit {
            log::info!("{id}: idle for {idle:?}, closing");
            return self.close_id(id, Closing::Now(CloseReason::IdleTimeout));
        }
        // Activity since the timer was set: re-arm for the rest, instead of
        // moving a heap entry on every read.
        let timer = self
            .timers
            .insert(now + (limit - idle), TimerTarget::Idle(id));
        self.conn(id).expect("checked above").idle_timer = Some(timer);
    }

    fn user_timer(&mut self, id: ConnId, timer: TimerId) {
        if self.gen_of(id.key()) != Some(id.gen) {
            return;
        }
        match &self.sources[id.key()] {
            Source::Conn(_) => {
                self.call(id.key(), |p, cx| p.on_timer(cx, timer));
            }
            Source::Datagram(_) => self.datagram_timer(id.key(), timer),
            _ => {}
        }
    }

    // ----- operations on connections by id (used by Context and Handle) ----

    /// Queues a copy of `data` on connection `id` (see [`Context::write`]).
    pub fn write(&mut self, id: ConnId, data: &[u8]) -> io::Result<()> {
        // Copy into the staging buffer and split it off: no allocation while
        // the bytes of earlier writes have left (the buffer is reclaimed).
        self.staging.reserve(data.len().max(16 * 1024));
        self.staging.extend_from_slice(data);
        let bytes = self.staging.split().freeze();
        self.write_bytes(id, bytes)
    }

    /// Queues `data` on connection `id` without copying it.
    ///
    /// Fails with `NotConnected` when `id` names no open connection (it
    /// closed, or the id is stale) or the connection is closing; the bytes are
    /// dropped. A write that would pass `max_queued` closes the connection with
    /// [`CloseReason::WriteQueueFull`] and fails too.
    pub fn write_bytes(&mut self, id: ConnId, data: impl Into<Bytes>) -> io::Result<()> {
        let Some(conn) = self.conn(id) else {
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
        let data = data.into();
        if data.is_empty() {
            return Ok(());
        }
        if let Err(limit) = conn.enqueue(data) {
            log::warn!("{id}: write queue over {limit} bytes (peer not reading); closing");
            self.close_id(id, Closing::Now(CloseReason::WriteQueueFull { limit }));
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "write queue full",
            ));
        }
        self.schedule_flush(id.key());
        Ok(())
    }

    /// Closes connection `id` once its queue is sent (asynchat's
    /// `close_when_done`). Stale ids are ignored.
    pub fn close(&mut self, id: ConnId) {
        self.close_id(id, Closing::AfterFlush(CloseReason::Closed));
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
    /// peer's sending is held back by TCP flow control.
    pub fn set_reading(&mut self, id: ConnId, reading: bool) {
        if let Some(conn) = self.conn(id) {
            conn.paused_by_user = !reading;
            if reading {
                self.schedule_read(id.key());
            }
        }
    }

    /// True when connection `id` is closing or gone.
    pub fn is_closing(&mut self, id: ConnId) -> bool {
        self.conn(id)
            .is_none_or(|c| !matches!(c.closing, Closing::No))
    }

    /// Bytes queued on connection `id` and not yet taken by the socket.
    pub fn queued(&mut self, id: ConnId) -> usize {
        self.conn(id).map_or(0, |c| c.queued)
    }

    /// The peer's address of connection `id`.
    pub fn peer_addr(&mut self, id: ConnId) -> io::Result<Addr> {
        match self.conn(id) {
            Some(conn) => conn.stream.peer_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{id} is not open"),
            )),
        }
    }

    /// The local address of connection `id`.
    pub fn local_addr(&mut self, id: ConnId) -> io::Result<Addr> {
        match self.conn(id) {
            Some(conn) => conn.stream.local_addr(),
            None => self.datagram_local_addr(id),
        }
    }

    /// Sets a timer on connection or datagram socket `id`: its protocol's
    /// `on_timer` is called after `delay`, unless cancelled or the id closed.
    pub fn set_timer(&mut self, id: ConnId, delay: Duration) -> TimerId {
        self.timers
            .insert(Instant::now() + delay, TimerTarget::User(id))
    }

    /// Calls `f` on the loop after `delay` (Twisted's `callLater`).
    pub fn call_later(
        &mut self,
        delay: Duration,
        f: impl FnOnce(&mut Reactor) + 'static,
    ) -> TimerId {
        self.timers
            .insert(Instant::now() + delay, TimerTarget::Call(Box::new(f)))
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.timers.cancel(timer).is_some()
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.sources
            .iter()
            .filter(|(_, s)| matches!(s, Source::Conn(_)))
            .count()
    }
}

impl Drop for Reactor {
    /// Closes every connection and datagram socket with
    /// [`CloseReason::ReactorStopped`] (each `on_close` runs), after one last
    /// nonblocking attempt to send what they had queued.
    fn drop(&mut self) {
        self.shared.set_gone();
        self.settle();
        let keys: Vec<usize> = self.sources.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.sources.get_mut(key) {
                Some(Source::Conn(conn)) => {
                    let _ = conn.flush();
                    conn.closing = Closing::Now(CloseReason::ReactorStopped);
                    self.finish_close(key);
                }
                Some(Source::Datagram(_)) => self.close_datagram(key, CloseReason::ReactorStopped),
                _ => {}
            }
        }
        self.to_flush.clear();
    }
}

/// The connection in slot `key`: a free function, so that the borrow covers
/// only the slab and the reactor's other fields stay usable beside it.
fn conn_in(sources: &mut Slab<Source>, key: usize) -> Option<&mut Conn> {
    match sources.get_mut(key) {
        Some(Source::Conn(c)) => Some(c),
        _ => None,
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
