//! The typed error inside an `io::Error` for a queue at its limit.

use std::fmt;
use std::io;

/// A write or datagram that would have taken a queue past its limit
/// ([`ConnOptions::max_queued`](crate::ConnOptions::max_queued)): the inner
/// error of the `io::Error` that
/// [`Reactor::write`](crate::Reactor::write) and its siblings,
/// [`Context::write_to`](crate::Context::write_to) and
/// [`DatagramContext::send_to`](crate::DatagramContext::send_to) return.
///
/// Its kind is [`io::ErrorKind::QuotaExceeded`]: a limit the program set was
/// reached. It is not `WouldBlock`: a stream connection that hit it is
/// already closed (with [`CloseReason::WriteQueueFull`](crate::CloseReason::WriteQueueFull)),
/// so waiting does not help; a datagram socket stays open, the datagram was
/// dropped. Nor is it `OutOfMemory`: nothing failed to allocate.
///
/// ```
/// # use std::io;
/// use sockloop::QueueFull;
///
/// fn limit_hit(e: &io::Error) -> Option<usize> {
///     let full = e.get_ref()?.downcast_ref::<QueueFull>()?;
///     Some(full.limit())
/// }
/// # let e = io::Error::new(io::ErrorKind::QuotaExceeded, QueueFull::new(64));
/// # assert_eq!(limit_hit(&e), Some(64));
/// # assert_eq!(e.to_string(), "write queue over its 64-byte limit");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueFull {
    limit: usize,
}

impl QueueFull {
    /// A queue of `limit` bytes is full.
    pub fn new(limit: usize) -> QueueFull {
        QueueFull { limit }
    }

    /// The queue's limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// This error as an `io::Error` of kind `QuotaExceeded`.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::QuotaExceeded, self)
    }
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write queue over its {}-byte limit", self.limit)
    }
}

impl std::error::Error for QueueFull {}
