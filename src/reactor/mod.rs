//! The reactor: one thread, one `mio::Poll`, every socket in one `Slab`.
//!
//! A turn ([`Reactor::run_once`]) polls, dispatches each event to its source,
//! serves the *ready list* (connections that still had input when their read
//! budget ran out, or that were just allowed to read again), fires expired
//! timers and runs commands from other threads. Callbacks never nest: work a
//! callback causes elsewhere (a write, a close, another connection's
//! `on_open`, a shutdown) is queued and carried out when the callback has
//! returned, by [`Reactor::settle`] (see `guard.rs`).
//!
//! This file holds the loop, which knows its sources only through the
//! `EventSource` trait (`source.rs`); each kind implements it next to its
//! own code: a stream connection in `stream.rs`, a listener in
//! `listener.rs`, a datagram socket in `datagram.rs`, the signal pipe in
//! `signals.rs`. Operations by id are in `ops.rs`, timers in `timer.rs`.

pub(crate) mod backpressure;
pub(crate) mod client;
pub(crate) mod closing;
pub(crate) mod conn;
pub(crate) mod datagram;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod handle;
pub(crate) mod handler;
pub(crate) mod id;
pub(crate) mod input;
pub(crate) mod listener;
pub(crate) mod multi;
pub(crate) mod ops;
pub(crate) mod producer;
pub(crate) mod proxy_wait;
pub(crate) mod reason;
pub(crate) mod relay;
pub(crate) mod signals;
pub(crate) mod source;
pub(crate) mod state;
pub(crate) mod stream;
pub(crate) mod timer;
#[cfg(feature = "tls")]
pub(crate) mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub(crate) mod tls;
pub(crate) mod wqueue;

use std::any::Any;
use std::io;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::event::Event;
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::reactor::conn::{Closing, Conn};
use crate::reactor::handle::{Command, Shared};
use crate::reactor::handler::ConnHandler;
pub(crate) use crate::reactor::source::Source;
pub(crate) use crate::reactor::timer::TimerTarget;
use crate::reactor::timer::Timers;
use crate::{CloseReason, ConnId, Handle};

const WAKER: Token = Token(usize::MAX);
/// Size of the shared read buffer, and of one read.
pub(crate) const READ_SIZE: usize = 64 * 1024;
/// Reads per connection per turn before others get their go (64 KiB each).
pub(crate) const READ_BUDGET: usize = 8;
/// Growth step of a connection's own buffer (one that holds a partial frame).
pub(crate) const OWN_READ_SIZE: usize = 8 * 1024;
/// Small kept-input buffers kept for reuse, so that partial frames in
/// steady traffic do not allocate.
pub(crate) const BUFFER_POOL: usize = 64;
/// Input a protocol leaves up to this size is kept in a small buffer (from
/// the pool) and read after in the shared buffer; a longer partial frame
/// gets a buffer of its own, read into in place.
pub(crate) const KEPT_BLOCK: usize = 4 * 1024;
/// What a connection's own read buffer may hold beyond twice its input
/// before the input is copied out to a buffer of its size.
pub(crate) const KEPT_SLACK: usize = 8 * 1024;

/// Counters of a reactor's life, for logs and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted by all listeners.
    pub accepted: u64,
    /// Connections refused by an allow-list.
    pub refused: u64,
    /// Accept calls that failed (out of descriptors, ...).
    pub accept_errors: u64,
    /// Stream connections open now.
    pub open: usize,
    /// Stream connections closed.
    pub closed: u64,
    /// User code that panicked: protocol callbacks and completions (each
    /// closed its connection or socket), protocol factories and accept
    /// handlers (the connection was dropped), posted and `call_later`
    /// closures, signal handlers and protocols' `Drop` (the loop went on).
    pub panics: u64,
    /// Connections closed on a listener with `proxy_protocol` because their
    /// PROXY header was missing, invalid, oversized, truncated or late
    /// (not counted in `accepted`, which counts connections that reached
    /// a protocol or an accept handler).
    pub proxy_refused: u64,
    /// Socket writes made on stream connections (TLS ones too): `send` and
    /// `writev` calls, those that found the socket full included. The
    /// writes of one callback are coalesced in the connection's queue (small
    /// ones copied into shared blocks, large `Bytes` kept as they are) and
    /// leave together after it, so the replies to a read of pipelined
    /// requests take about one call; divided by the requests served, this
    /// shows how well that works ([`guide::design`](crate::guide::design),
    /// "How a byte travels").
    pub sends: u64,
}

/// A single-threaded event loop serving listeners, connections and datagram
/// sockets. See the [crate documentation](crate) for an example.
pub struct Reactor {
    /// First: unlisted before `poll` closes (see `net/owned.rs`).
    _listed: crate::net::owned::Listed,
    pub(crate) poll: Poll,
    pub(crate) events: Option<Events>,
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
    /// The address range of the shared read buffer's current block (set
    /// when it is allocated): a `Bytes` written from inside it is copied
    /// unless it is a large part of it, since it would keep all of it alive.
    pub(crate) scratch_block: (usize, usize),
    /// The range of the buffer the current `on_data` reads from (the shared
    /// block, or the connection's own buffer).
    pub(crate) read_block: (usize, usize),
    /// Emptied tail blocks of write queues, for reuse (see `wqueue.rs`).
    pub(crate) tails: crate::reactor::wqueue::TailPool,
    pub(crate) pool: Vec<BytesMut>,
    /// Receive buffer of datagram sockets.
    pub(crate) dgram_buf: Vec<u8>,
    pub(crate) now: Instant,
    /// Offload pools and the like, told when a connection with work
    /// closes and when the reactor goes (see `client.rs`).
    pub(crate) clients: crate::reactor::client::Clients,
    pub(crate) stats: Stats,
    /// A cap on open stream connections over all listeners.
    pub(crate) max_connections: Option<usize>,
    /// Listeners paused at the global cap: resumed when any connection closes.
    pub(crate) at_global_cap: Vec<crate::ListenerId>,
    /// Set by a graceful shutdown: `run` returns once no connection is left
    /// (the deadline closes the stragglers).
    pub(crate) draining: bool,
    /// Accepted connections waiting for their PROXY header.
    pub(crate) proxy_pending: usize,
    /// Listeners closed while such connections waited (see `close_listener`).
    pub(crate) parked: Vec<(crate::ListenerId, crate::reactor::listener::Parked)>,
    stopping: bool,
    /// Run once when the reactor is told to stop (`stop`, `stop_now`, a
    /// graceful shutdown): a restart's successor that is not ready yet is
    /// killed then, not left behind holding the sockets.
    pub(crate) on_stop: Vec<Box<dyn FnOnce()>>,
    pub(crate) running: bool,
    /// Running user code and operations postponed until it returns.
    pub(crate) nesting: crate::reactor::guard::Nesting,
    /// Set by `stop_now`: dropping the reactor waits for nothing.
    hurry: bool,
    /// The callbacks' shared values (see `state.rs`).
    states: crate::reactor::state::States,
}

impl Reactor {
    /// Creates a reactor with no sockets.
    pub fn new() -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        Ok(Reactor {
            _listed: crate::net::owned::Listed::new(std::os::fd::AsRawFd::as_raw_fd(&poll)),
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
            scratch_block: (0, 0),
            read_block: (0, 0),
            tails: Vec::new(),
            pool: Vec::new(),
            dgram_buf: Vec::new(),
            now: Instant::now(),
            clients: Default::default(),
            stats: Stats::default(),
            max_connections: None,
            at_global_cap: Vec::new(),
            draining: false,
            proxy_pending: 0,
            parked: Vec::new(),
            stopping: false,
            on_stop: Vec::new(),
            hurry: false,
            running: false,
            nesting: Default::default(),
            states: Default::default(),
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
        while !self.run_once(None)? {
            if self.draining && self.stats.open == 0 && self.proxy_pending == 0 {
                self.draining = false;
                return Ok(());
            }
        }
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
        // Puts the loop's state back even if something unwinds out of the turn.
        let guard = crate::reactor::guard::TurnGuard { reactor: self };
        guard.reactor.turn(timeout)?;
        Ok(mem::take(&mut guard.reactor.stopping))
    }

    /// The reactor's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Asks [`run`](Reactor::run) to return once the current turn is done.
    pub fn stop(&mut self) {
        self.stopping = true;
        self.told_to_stop();
    }

    /// Runs (once) what must happen as soon as the reactor is told to stop.
    pub(crate) fn told_to_stop(&mut self) {
        for hook in std::mem::take(&mut self.on_stop) {
            hook();
        }
    }

    /// Like [`stop`](Reactor::stop), for a program that must end at once
    /// (a second Ctrl-C): dropping the reactor then waits for nothing. Offload
    /// jobs still running are left behind (their threads end with the
    /// process) instead of getting the pool's grace period; their
    /// connections get the cancellation error, as queued jobs do.
    pub fn stop_now(&mut self) {
        self.hurry = true;
        self.stopping = true;
        self.told_to_stop();
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
            self.told_to_stop();
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
        Source::ready(self, event.token().0, event);
    }

    fn serve_ready(&mut self) {
        let ready = mem::take(&mut self.ready);
        for &(key, gen) in &ready {
            if self.gen_of(key) != Some(gen) {
                continue;
            }
            Source::resume(self, key);
            self.settle();
        }
        // Keep the allocation: entries added meanwhile go after the old ones.
        let mut ready = ready;
        ready.clear();
        ready.append(&mut self.ready);
        self.ready = ready;
    }

    pub(crate) fn run_commands(&mut self) {
        let spare = mem::take(&mut self.spare_commands);
        let mut commands = self.shared.take_commands(spare);
        for command in commands.drain(..) {
            match command {
                Command::Post(f) => self.guarded("a posted closure", f),
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
        self.sources.get(key)?.gen()
    }

    pub(crate) fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        match self.sources.get_mut(id.key()) {
            Some(Source::Conn(c)) if c.gen == id.gen => Some(c),
            _ => None,
        }
    }

    /// Connection `id` for a getter: `&self`, so getters are `&self` too.
    #[inline]
    pub(crate) fn conn_ref(&self, id: ConnId) -> Option<&Conn> {
        match self.sources.get(id.key()) {
            Some(Source::Conn(c)) if c.gen == id.gen => Some(c),
            _ => None,
        }
    }

    pub(crate) fn conn_at(&mut self, key: usize) -> Option<&mut Conn> {
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

    /// Runs one callback of a connection's handler with the handler taken
    /// out of its slot, so the callback may borrow the whole reactor. A panic
    /// closes the connection (after sending what it had queued) and is
    /// logged; the loop goes on.
    pub(crate) fn call<R>(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut dyn ConnHandler, &mut Reactor, ConnId) -> R,
    ) -> Option<R> {
        let conn = self.conn_at(key)?;
        let id = ConnId::new(key, conn.gen);
        let mut handler = conn.handler.take()?;
        let result = self.enter_callback(|r| f(&mut *handler, r, id));
        if let Some(conn) = self.conn_at(key) {
            // The slot is empty (taken above, and nothing else fills it):
            // nothing to drop, so no drop glue on every callback (9
            // instructions per echoed message).
            let empty = conn.handler.replace(handler);
            debug_assert!(empty.is_none());
            mem::forget(empty);
        }
        result.map_err(|panic| self.panicked(id, &*panic)).ok()
    }

    /// The one place a panic of user code (a callback, a completion, a
    /// datagram handler) is dealt with: counted, logged with the peer, and its
    /// connection or socket closed, after sending what it had queued.
    pub(crate) fn panicked(&mut self, id: ConnId, panic: &(dyn Any + Send)) {
        self.stats.panics += 1;
        let msg = panic_message(panic);
        let peer = self
            .peer_addr(id)
            .map_or_else(|_| "no peer".to_string(), |a| a.to_string());
        log::error!("{id} ({peer}): callback panicked: {msg}; closing it");
        self.close_id(id, Closing::AfterFlush(CloseReason::Panicked(msg)));
    }

    /// Carries out what callbacks queued: postponed operations (first, so
    /// that a connection's `on_open` comes before anything else of it), then
    /// flushes and closes, and the callbacks those cause (`on_drained`,
    /// `on_close`), until nothing is left.
    #[inline]
    pub(crate) fn settle(&mut self) {
        // Called after every event and callback; most calls find nothing.
        if self.to_flush.is_empty() && !self.has_deferred() {
            return;
        }
        self.settle_queued();
    }

    #[inline(never)]
    fn settle_queued(&mut self) {
        loop {
            if let Some(op) = self.take_deferred() {
                op(self);
            } else if let Some((key, gen)) = self.to_flush.pop() {
                if self.gen_of(key) == Some(gen) {
                    self.flush_conn(key);
                }
            } else {
                return;
            }
        }
    }
}

impl Drop for Reactor {
    /// Stops the offload pool (queued jobs are answered with an error,
    /// running ones get the grace period, unless [`Reactor::stop_now`] was
    /// called), then closes every connection and
    /// datagram socket with [`CloseReason::ReactorStopped`] (each `on_close`
    /// runs, and worker processes are ended) after one last nonblocking
    /// attempt to send what they had queued.
    fn drop(&mut self) {
        // Offload answers come back as commands: before the handle is cut off.
        self.stop_clients(self.hurry);
        self.shared.set_gone();
        self.drop_proxy_waits();
        self.settle();
        // An `on_close` may open or adopt another connection (a process
        // pool replacing a worker): close those too, a bounded number of rounds.
        for _ in 0..4 {
            let keys: Vec<usize> = self
                .sources
                .iter()
                .filter(|(_, s)| matches!(s, Source::Conn(_) | Source::Datagram(_)))
                .map(|(k, _)| k)
                .collect();
            if keys.is_empty() {
                break;
            }
            for key in keys {
                match self.sources.get_mut(key) {
                    Some(Source::Conn(conn)) => {
                        let _ = conn.flush(&mut self.tails, &mut self.stats.sends, self.now);
                        conn.closing = Closing::Now(CloseReason::ReactorStopped);
                        self.finish_close(key);
                    }
                    // It sends what it can first, as a stream does.
                    Some(Source::Datagram(_)) => {
                        self.close_datagram(key, CloseReason::ReactorStopped)
                    }
                    _ => {}
                }
            }
            self.settle();
        }
        self.to_flush.clear();
    }
}

/// The connection in slot `key`: a free function, so that the borrow covers
/// only the slab and the reactor's other fields stay usable beside it.
pub(crate) fn conn_in(sources: &mut Slab<Source>, key: usize) -> Option<&mut Conn> {
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

/// What a reader of a log wants: how many sources, and the counters; not the
/// buffers.
impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("sources", &self.sources.len())
            .field("stats", &self.stats)
            .field("max_connections", &self.max_connections)
            .field("running", &self.running)
            .field("draining", &self.draining)
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}
