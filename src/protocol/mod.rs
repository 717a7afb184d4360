//! The callback traits: what user code implements to serve a connection or a
//! datagram socket (asyncore's `dispatcher`, Twisted's `Protocol`).

pub(crate) mod adapter;
pub(crate) mod context;
pub(crate) mod framing;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use bytes::BytesMut;

use crate::{Addr, CloseReason, Context, DatagramContext, TimerId};

/// The events of one stream connection, called on the reactor's thread.
///
/// A listener is given a factory that makes one `Protocol` per accepted
/// connection (Twisted's Protocol/Factory split); [`Reactor::connect`] takes
/// one for an outgoing connection. Every method but [`on_data`] has a default.
///
/// Callbacks must not block: they run on the one thread that serves every
/// socket. A panic in a callback is caught; that connection is closed with
/// [`CloseReason::Panicked`] and the loop goes on.
///
/// **Callbacks never nest.** While one callback runs, no other callback of
/// any connection or socket runs: what it asks for that would call user
/// code (another connection's `on_close` after a close, the `on_open` of a
/// connection it [adopts](crate::Reactor::adopt), every `on_shutdown` after
/// [`shutdown_graceful`](crate::Reactor::shutdown_graceful), its own
/// included) is carried out when it has returned, in the order asked, before
/// the loop handles anything else. Writes are sent then too.
///
/// [`Reactor::connect`]: crate::Reactor::connect
/// [`on_data`]: Protocol::on_data
pub trait Protocol: 'static {
    /// The connection is established (accepted, or an outgoing connect succeeded).
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// Bytes arrived. `data` holds them, after whatever earlier calls left in
    /// it: consume what you use (`split_to`, `advance`, `clear`) and leave an
    /// incomplete frame in place; it is kept and more is appended. Taking
    /// bytes with `split().freeze()` is zero-copy; written back with
    /// `write_bytes`, a large piece stays so and a small one is copied (it
    /// would keep the whole read buffer alive). `cx.write_buf(data)` sends
    /// everything by that rule in one call.
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut);

    /// The write queue, after rising to the high-water mark, is down to the
    /// low-water mark: a protocol that stopped writing there may write
    /// again. Only after such a rise: to stream pieces of any size, give a
    /// producer to [`Context::write_producer`] instead, which is asked for
    /// more whenever the queue is at or below the low-water mark.
    fn on_drained(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// The peer will send no more (it closed or shut down its writing side).
    /// The default closes once everything queued has been sent and the
    /// answers of work still offloaded have been delivered and sent (see
    /// [`Context::close`]); a protocol that still has an answer to write may
    /// write it first, or keep the half-open connection and close later.
    fn on_eof(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// A timer set with [`Context::set_timer`] expired.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }

    /// The reactor is shutting down gracefully
    /// ([`Reactor::shutdown_graceful`]): no new connections come, and this
    /// one is served until its peer closes or the deadline passes. The
    /// default does nothing, as a byte stream cannot tell whether its peer is
    /// mid-request; a protocol that knows it is idle should `cx.close()`.
    /// [`FrameHandler::on_shutdown`](crate::FrameHandler::on_shutdown)
    /// has the same default (and is called between frames).
    ///
    /// [`Reactor::shutdown_graceful`]: crate::Reactor::shutdown_graceful
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// The connection is gone; called exactly once, last, whatever the cause.
    /// [`Context::queued`] tells how many accepted bytes were never sent.
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = (cx, reason);
    }
}

/// The events of one datagram socket (UDP or Unix datagram).
pub trait DatagramProtocol: 'static {
    /// One datagram arrived from `from` (it may be empty: an empty datagram is valid).
    fn on_datagram(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Addr);

    /// A timer set with [`DatagramContext::set_timer`] expired.
    fn on_timer(&mut self, cx: &mut DatagramContext<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }

    /// The socket is closed; called exactly once.
    fn on_close(&mut self, cx: &mut DatagramContext<'_>, reason: &CloseReason) {
        let _ = (cx, reason);
    }
}
