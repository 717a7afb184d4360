//! The callback traits: what user code implements to serve a connection or a
//! datagram socket (asyncore's `dispatcher`, Twisted's `Protocol`).

pub(crate) mod context;
pub(crate) mod framing;

use std::fmt;
use std::io;

use bytes::BytesMut;

use crate::{Addr, Context, DatagramContext, TimerId};

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

/// Why a connection ended, as given to [`Protocol::on_close`].
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// Closed on our side: `close()` after its queue was sent, or `abort()`.
    Closed,
    /// The peer closed its side and the default `on_eof` closed ours.
    PeerClosed,
    /// The peer reset the connection (or the pipe broke) while data was in flight.
    Reset,
    /// An outgoing connect failed: refused, unreachable or timed out.
    ConnectFailed(io::Error),
    /// Neither side sent anything for the configured idle timeout.
    IdleTimeout,
    /// The write queue would have grown past `max_queued`.
    WriteQueueFull {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A callback panicked; the message is the panic's.
    Panicked(String),
    /// The protocol gave up on its peer (for example a frame over the size limit).
    Protocol(String),
    /// Any other socket error.
    Error(io::Error),
    /// The reactor was dropped while the connection was open.
    ReactorStopped,
    /// After our close, once the peer had everything, it went on sending past
    /// [`ConnOptions::close_discard`] bytes, or still sent during
    /// [`ConnOptions::close_linger`]: the socket was closed with input
    /// unread, which may reset the connection. (A close with a
    /// reason that is not clean, such as [`CloseReason::Protocol`], keeps
    /// that reason.)
    ///
    /// [`ConnOptions::close_discard`]: crate::ConnOptions::close_discard
    /// [`ConnOptions::close_linger`]: crate::ConnOptions::close_linger
    PeerKeptSending {
        /// Bytes read and dropped after the close.
        discarded: usize,
    },
    /// After our close the peer took none of the bytes still owed to it for
    /// [`ConnOptions::close_stall`]: the connection was reset, and those
    /// bytes (also logged as a warning) are lost. (A close with a reason
    /// that is not clean keeps that reason; the warning still counts.)
    ///
    /// [`ConnOptions::close_stall`]: crate::ConnOptions::close_stall
    PeerStalled {
        /// Bytes the peer never got: still queued, or sent but not
        /// acknowledged (on Unix sockets: the kernel's memory for those not
        /// read, a little more than the bytes).
        unsent: usize,
    },
}

impl CloseReason {
    /// True when nothing went wrong: a close by either side, in order.
    pub fn is_clean(&self) -> bool {
        matches!(self, CloseReason::Closed | CloseReason::PeerClosed)
    }

    /// Classifies a socket error: resets and broken pipes are the peer's doing.
    pub(crate) fn from_io(e: io::Error) -> CloseReason {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => CloseReason::Reset,
            _ => CloseReason::Error(e),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Closed => f.write_str("closed"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Reset => f.write_str("reset by peer"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::WriteQueueFull { limit } => {
                write!(
                    f,
                    "write queue over its {limit}-byte limit (peer not reading)"
                )
            }
            CloseReason::Panicked(msg) => write!(f, "callback panicked: {msg}"),
            CloseReason::Protocol(msg) => write!(f, "protocol error: {msg}"),
            CloseReason::Error(e) => write!(f, "socket error: {e}"),
            CloseReason::ReactorStopped => f.write_str("reactor stopped"),
            CloseReason::PeerKeptSending { discarded } => write!(
                f,
                "peer kept sending after close ({discarded} bytes dropped); connection reset"
            ),
            CloseReason::PeerStalled { unsent } => write!(
                f,
                "peer stopped taking bytes after close ({unsent} bytes not delivered); connection reset"
            ),
        }
    }
}
