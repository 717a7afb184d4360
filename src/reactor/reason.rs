//! Why a connection or datagram socket ended: a fact of the reactor (it
//! closes them), reported to the callbacks of the layers above.

use std::fmt;
use std::io;

/// Why a connection ended, as given to [`Protocol::on_close`].
///
/// [`Protocol::on_close`]: crate::Protocol::on_close
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
    /// The protocol left more unconsumed input than
    /// [`ConnOptions::max_unconsumed`](crate::ConnOptions::max_unconsumed)
    /// allows (a request that never ends).
    InputOverLimit {
        /// The configured limit in bytes.
        limit: usize,
    },
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
    /// TLS failed: the handshake (a plain-text client, a certificate the
    /// client rejects, an alert from the peer, the handshake timeout or byte
    /// limit) or a bad record later. The message says which.
    Tls(String),
    /// A TLS peer ended its stream without close_notify (`on_eof` was
    /// called as usual): what it sent may have been cut short by an
    /// attacker. Replaces a clean reason only.
    TlsTruncated,
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

/// A reason is an error (`?` in a function returning `Box<dyn Error>`, an
/// `io::Error::other(reason)`); [`is_clean`](CloseReason::is_clean) tells
/// the closes that are not failures. The socket error behind one is its
/// [`source`](std::error::Error::source).
impl std::error::Error for CloseReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CloseReason::ConnectFailed(e) | CloseReason::Error(e) => Some(e),
            _ => None,
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
            CloseReason::InputOverLimit { limit } => {
                write!(f, "unconsumed input over its {limit}-byte limit")
            }
            CloseReason::Error(e) => write!(f, "socket error: {e}"),
            CloseReason::ReactorStopped => f.write_str("reactor stopped"),
            CloseReason::PeerKeptSending { discarded } => write!(
                f,
                "peer kept sending after close ({discarded} bytes dropped); connection reset"
            ),
            CloseReason::Tls(msg) => write!(f, "TLS: {msg}"),
            CloseReason::TlsTruncated => {
                f.write_str("closed by peer without TLS close_notify (truncated)")
            }
            CloseReason::PeerStalled { unsent } => write!(
                f,
                "peer stopped taking bytes after close ({unsent} bytes not delivered); connection reset"
            ),
        }
    }
}
