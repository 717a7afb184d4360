//! The view of the loop a callback gets: its own connection's operations, and
//! the reactor behind them for everything else.

use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;

use crate::{Addr, CloseReason, ConnId, Handle, Protocol, Reactor, TimerId};

/// What a [`Protocol`] callback can do: write, close, pause, set timers,
/// reach other connections. Every operation returns at once; none blocks.
///
/// One type for stream connections (`Context<'_>`) and datagram sockets
/// ([`DatagramContext`]): what they share is written once, for every
/// [`Kind`].
pub struct Context<'a, K: Kind = Stream> {
    reactor: &'a mut Reactor,
    id: ConnId,
    kind: PhantomData<K>,
}

/// What a stream connection's callback can do besides.
impl Context<'_> {
    /// Queues a copy of `data`. It is sent when the callback returns, in
    /// order with everything queued before, as far as the socket takes it;
    /// the rest waits for the socket to become writable. Writes on a closing
    /// connection are dropped, except those of an offloaded answer that a
    /// `close()` waits for: a warning says how many bytes were lost (use
    /// [`Reactor::write`] for a `Result`).
    pub fn write(&mut self, data: &[u8]) {
        if let Err(e) = self.reactor.write(self.id, data) {
            log::warn!("{}: write of {} bytes dropped: {e}", self.id, data.len());
        }
    }

    /// Queues `data` without copying (`Bytes`, `Vec<u8>`, a frame from
    /// [`BytesMut::split`](bytes::BytesMut::split)...).
    /// Dropped with a warning as [`write`](Context::write) says.
    pub fn write_bytes(&mut self, data: impl Into<Bytes>) {
        let data = data.into();
        let len = data.len();
        if let Err(e) = self.reactor.write_bytes(self.id, data) {
            log::warn!("{}: write of {len} bytes dropped: {e}", self.id);
        }
    }

    /// Streams the bytes of `producer` after everything queued so far
    /// (asynchat's `push_with_producer`): whenever the write queue is at or
    /// below the low-water mark, the reactor asks it for more, until it
    /// returns `None`. Later writes, and a `close`, wait their turn behind
    /// it, as in asynchat's producer fifo. Whatever size its pieces, no more
    /// than about the low-water mark (plus a piece) is queued at a time.
    ///
    /// ```
    /// use sockloop::bytes::{Bytes, BytesMut};
    /// use sockloop::{Context, Protocol};
    ///
    /// /// Sends a million numbered lines, then closes.
    /// struct Counter;
    /// impl Protocol for Counter {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         let mut n = 0u32;
    ///         cx.write_producer(move || {
    ///             n += 1;
    ///             (n <= 1_000_000).then(|| Bytes::from(format!("{n}\n")))
    ///         });
    ///         cx.close(); // after the producer is done
    ///     }
    ///     fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
    ///         data.clear();
    ///     }
    /// }
    /// ```
    pub fn write_producer(&mut self, producer: impl crate::Producer) {
        if let Err(e) = self.reactor.write_producer(self.id, producer) {
            log::debug!("{}: producer dropped: {e}", self.id);
        }
    }

    /// Queues all of `data` and leaves it empty: large contents without
    /// copying, small ones copied (see [`Reactor::write_bytes`] for the
    /// rule). An echo's `cx.write_buf(data)` is cheaper than
    /// `cx.write_bytes(data.split().freeze())` for small messages, which are
    /// copied either way. With nothing queued before it, what the socket
    /// takes is sent at once and only the rest is queued (see
    /// [`Reactor::write_buf`]).
    pub fn write_buf(&mut self, data: &mut bytes::BytesMut) {
        let len = data.len();
        if let Err(e) = self.reactor.write_buf(self.id, data) {
            log::debug!("{}: write of {len} bytes dropped: {e}", self.id);
        }
    }

    /// Queues a copy of `data` on another connection (a chat server's
    /// broadcast). Fails with `NotConnected` if `other` has closed, and with
    /// `QuotaExceeded` ([`QueueFull`](crate::QueueFull) inside) when the copy
    /// would pass `other`'s `max_queued` (which closes `other`).
    pub fn write_to(&mut self, other: ConnId, data: &[u8]) -> io::Result<()> {
        self.reactor.write(other, data)
    }

    /// Queues `data` on another connection without copying it (a relay's
    /// forwarding; the rules of [`Reactor::write_bytes`]). Fails as
    /// [`write_to`](Context::write_to) does.
    pub fn write_bytes_to(&mut self, other: ConnId, data: impl Into<Bytes>) -> io::Result<()> {
        self.reactor.write_bytes(other, data)
    }

    /// Relays this connection and `other` into each other from when this
    /// callback returns: see [`Reactor::link`] (this protocol is dropped).
    pub fn pipe(&mut self, other: ConnId) -> io::Result<()> {
        self.reactor.link(self.id, other)
    }

    /// Whether `other`'s peer has closed its side (see [`Reactor::peer_closed`]).
    pub fn peer_closed(&self, other: ConnId) -> bool {
        self.reactor.peer_closed(other)
    }

    /// True while `other`'s write queue is over its high-water mark and it
    /// has not stalled (see [`Reactor::is_backed_up`]).
    pub fn is_backed_up(&self, other: ConnId) -> bool {
        self.reactor.is_backed_up(other)
    }

    /// Holds back this connection's input while `other` is backed up:
    /// reading stops until `other`'s queue is down to its low-water mark,
    /// it closes, or it stalls: it is not down to its low-water mark within
    /// [`ConnOptions::stall_timeout`](crate::ConnOptions::stall_timeout)
    /// (its peer stopped reading or reads too slowly; Twisted's
    /// producer/consumer). True if reading stopped. A relay calls
    /// it after each write to another connection:
    ///
    /// ```
    /// # use sockloop::{ConnId, Context};
    /// fn relay(cx: &mut Context<'_>, to: ConnId, line: &[u8]) {
    ///     if cx.write_to(to, line).is_ok() {
    ///         cx.pause_until_drained(to);
    ///     }
    /// }
    /// ```
    pub fn pause_until_drained(&mut self, other: ConnId) -> bool {
        self.reactor.pause_until_drained(self.id, other)
    }

    /// True when this connection reads: not paused by the protocol, by its
    /// own write queue's backpressure, by a connection it waits for, or by a
    /// full offload pool, and not closing. A protocol that handles many
    /// messages per read should stop when this turns false (as
    /// [`Framed`](crate::Framed) does before its next frame) and leave the
    /// rest in the buffer: what is left when reading paused is offered to
    /// `on_data` again when it resumes.
    #[inline]
    pub fn is_reading(&self) -> bool {
        self.reactor.is_reading(self.id)
    }

    /// Closes after everything queued has been sent (asynchat's
    /// `close_when_done`), in order: `on_data` is not called any more (what
    /// the peer still sends is read and dropped, as unread input would make
    /// the final close reset the connection), the answers of work this
    /// connection offloaded ([`offload`](Context::offload),
    /// [`ProcessPool::submit`]) are delivered, the queue is sent, the write
    /// side shut down, and the socket closed once the peer closes its side
    /// or, after it has taken everything,
    /// [`ConnOptions::close_linger`](crate::ConnOptions::close_linger) has passed.
    /// `on_close` runs then. A peer that takes none of the rest for
    /// [`ConnOptions::close_stall`](crate::ConnOptions::close_stall) is cut
    /// off ([`CloseReason::PeerStalled`](crate::CloseReason::PeerStalled)).
    ///
    /// [`ProcessPool::submit`]: crate::ProcessPool::submit
    pub fn close(&mut self) {
        self.reactor.close(self.id);
    }

    /// Whether this connection's close waits for the peer's end of stream
    /// even when no more input is expected
    /// ([`ConnOptions::lingering_close`](crate::ConnOptions::lingering_close),
    /// set for the listener): a server that closes at once after ordinary
    /// answers ([`LingeringClose::Auto`](crate::LingeringClose::Auto)) makes
    /// an error answer linger (`Always`), as the client may still be
    /// sending the request it refused (nginx lingers in that case too).
    pub fn set_lingering_close(&mut self, how: crate::LingeringClose) {
        self.reactor.set_lingering_close(self.id, how);
    }

    /// Closes after the queue is sent, reporting `reason` to `on_close` and
    /// the log (for example a protocol error).
    pub fn close_with(&mut self, reason: CloseReason) {
        self.reactor
            .close_id(self.id, crate::reactor::conn::Closing::AfterFlush(reason));
    }

    /// Closes now; queued bytes are dropped (and counted in [`queued`](Context::queued)).
    pub fn abort(&mut self) {
        self.reactor.abort(self.id);
    }

    /// Sends FIN once the queue is sent; the peer sees end-of-stream while
    /// this side goes on reading (half-close).
    pub fn shutdown_write(&mut self) {
        self.reactor.shutdown_write(self.id);
    }

    /// Stops reading from the peer until [`resume_reading`](Context::resume_reading).
    pub fn pause_reading(&mut self) {
        self.reactor.set_reading(self.id, false);
    }

    /// Reads again after [`pause_reading`](Context::pause_reading). Bytes
    /// left in the buffer when reading paused are offered to `on_data`
    /// again first, without waiting for the peer to send more.
    pub fn resume_reading(&mut self) {
        self.reactor.set_reading(self.id, true);
    }

    /// True once `close`, `close_with` or `abort` was called (or the
    /// reactor is closing this connection): writes are dropped from then on.
    #[inline]
    pub fn is_closing(&self) -> bool {
        self.reactor.is_closing(self.id)
    }

    /// Bytes queued and not yet taken by the socket. In `on_close`: the bytes
    /// that will never be sent.
    pub fn queued(&self) -> usize {
        self.reactor.queued(self.id)
    }

    /// Opens an outgoing connection served by `proto` (see [`Reactor::connect`]).
    pub fn connect(&mut self, addr: &Addr, proto: impl Protocol) -> io::Result<ConnId> {
        self.reactor.connect(addr, proto)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<Addr> {
        self.reactor.peer_addr(self.id)
    }
}

/// What a [`DatagramProtocol`](crate::DatagramProtocol) callback can do:
/// a [`Context`] for a datagram socket.
pub type DatagramContext<'a> = Context<'a, Datagram>;

impl Context<'_, Datagram> {
    /// Sends one datagram to `to` (an empty one is valid). It goes out at once
    /// when the socket has room, else it is queued until it does. Errors the
    /// socket reports at once (message too long, a Unix peer that did not
    /// bind) are returned, and so is a full queue: `QuotaExceeded` with a
    /// [`QueueFull`](crate::QueueFull) inside (this datagram is dropped; the
    /// socket stays open).
    pub fn send_to(&mut self, data: &[u8], to: &Addr) -> io::Result<()> {
        self.reactor.send_to(self.id, data, to)
    }

    /// Closes the socket after its queue is sent.
    pub fn close(&mut self) {
        self.reactor.close(self.id);
    }
}

/// What every callback can do, on a connection or a datagram socket alike.
impl<'a, K: Kind> Context<'a, K> {
    pub(crate) fn new(reactor: &'a mut Reactor, id: ConnId) -> Context<'a, K> {
        Context {
            reactor,
            id,
            kind: PhantomData,
        }
    }

    /// This connection's (or datagram socket's) id: stable for its whole
    /// life, never reused.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Calls this protocol's `on_timer` after `delay`.
    pub fn set_timer(&mut self, delay: Duration) -> TimerId {
        self.reactor.set_timer(self.id, delay)
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.reactor.cancel_timer(timer)
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<Addr> {
        self.reactor.local_addr(self.id)
    }

    /// The proxy this connection came through, on a listener with
    /// [`proxy_protocol`](crate::ListenOptions::proxy_protocol): the
    /// socket's real peer, while [`peer_addr`](Context::peer_addr) is the
    /// client the PROXY header named. `None` otherwise.
    pub fn proxy_addr(&mut self) -> Option<Addr> {
        self.reactor.proxy_addr(self.id)
    }

    /// The PROXY header this connection began with, if its listener has
    /// [`proxy_protocol`](crate::ListenOptions::proxy_protocol).
    pub fn proxy_header(&mut self) -> Option<crate::proxy::ProxyHeader> {
        self.reactor.proxy_header(self.id)
    }

    /// A handle to this reactor, to give to other threads.
    pub fn handle(&self) -> Handle {
        self.reactor.handle()
    }

    /// Makes [`Reactor::run`] return after this turn.
    pub fn stop(&mut self) {
        self.reactor.stop();
    }

    /// The reactor's shared value of type `S` (created with `S::default()`
    /// the first time): see [`Reactor::set_state`]. Take what you need and
    /// let the borrow end before writing.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use sockloop::{ConnId, Context, Protocol};
    /// use bytes::BytesMut;
    ///
    /// #[derive(Default)]
    /// struct Members(BTreeSet<ConnId>);
    ///
    /// struct Member;
    /// impl Protocol for Member {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         let id = cx.id();
    ///         cx.state::<Members>().0.insert(id);
    ///     }
    ///     fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
    ///         let me = cx.id();
    ///         let others: Vec<ConnId> = cx.state::<Members>().0.iter().copied().collect();
    ///         for id in others.into_iter().filter(|&id| id != me) {
    ///             let _ = cx.write_to(id, data);
    ///         }
    ///         data.clear();
    ///     }
    /// }
    /// ```
    pub fn state<S: Default + 'static>(&mut self) -> &mut S {
        self.reactor().state::<S>()
    }

    /// The reactor itself, for anything else (listen, `call_later`, ...).
    /// Callbacks still never nest: what would run user code at once
    /// (`adopt`'s `on_open`, `shutdown_graceful`'s `on_shutdown`s, closing a
    /// datagram socket) is carried out when this callback has returned.
    pub fn reactor(&mut self) -> &mut Reactor {
        self.reactor
    }
}

impl<K: Kind> std::fmt::Debug for Context<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(K::NAME)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The kinds of socket a [`Context`] serves, which decide the operations it
/// offers: [`Stream`] (the default) or [`Datagram`]. Sealed.
pub trait Kind: sealed::Sealed + 'static {
    /// The context's name in `Debug` output.
    #[doc(hidden)]
    const NAME: &'static str;
}

/// A stream connection's [`Context`] (`Context<'_>`).
#[derive(Debug)]
pub enum Stream {}

/// A datagram socket's [`Context`] ([`DatagramContext`]).
#[derive(Debug)]
pub enum Datagram {}

impl Kind for Stream {
    const NAME: &'static str = "Context";
}

impl Kind for Datagram {
    const NAME: &'static str = "DatagramContext";
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Stream {}
    impl Sealed for super::Datagram {}
}
