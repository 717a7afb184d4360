//! Sockets for code that runs outside the reactor: a handler on a worker
//! thread or in a forked child, which reads and writes with ordinary blocking
//! calls (socketserver's model).

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::Addr;

/// A connected stream socket (TCP or Unix) in blocking mode, taken out of
/// the reactor by a listener made with [`Reactor::listen_accept`].
///
/// [`Reactor::listen_accept`]: crate::Reactor::listen_accept
#[derive(Debug)]
pub enum BlockingStream {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix stream connection.
    Unix(std::os::unix::net::UnixStream),
}

impl BlockingStream {
    /// Out of the reactor (a handed-off connection), in blocking mode. The
    /// one place, with [`into_mio`](Self::into_mio), where the two stream
    /// enums meet: everything else goes through the descriptor.
    pub(crate) fn from_mio(stream: crate::net::Stream) -> io::Result<BlockingStream> {
        let stream = match stream {
            crate::net::Stream::Tcp(s) => BlockingStream::Tcp(s.into()),
            crate::net::Stream::Unix(s) => BlockingStream::Unix(s.into()),
        };
        stream.set_nonblocking(false)?;
        Ok(stream)
    }

    /// Into the reactor (an adopted connection), in nonblocking mode.
    pub(crate) fn into_mio(self) -> io::Result<crate::net::Stream> {
        self.set_nonblocking(true)?;
        Ok(match self {
            BlockingStream::Tcp(s) => crate::net::Stream::Tcp(mio::net::TcpStream::from_std(s)),
            BlockingStream::Unix(s) => crate::net::Stream::Unix(mio::net::UnixStream::from_std(s)),
        })
    }

    /// The socket, whatever its family, for the calls that do not care.
    fn sock(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(self)
    }

    /// A second handle to the same socket (for a separate reader and writer).
    pub fn try_clone(&self) -> io::Result<BlockingStream> {
        Ok(match self {
            BlockingStream::Tcp(s) => BlockingStream::Tcp(s.try_clone()?),
            BlockingStream::Unix(s) => BlockingStream::Unix(s.try_clone()?),
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<Addr> {
        match self {
            BlockingStream::Tcp(s) => s.peer_addr().map(Addr::Inet),
            BlockingStream::Unix(s) => s.peer_addr().map(Addr::Unix),
        }
    }

    /// Shuts down reading, writing or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock().shutdown(how)
    }

    /// Read and write timeouts (`None`: wait forever). A read or write that
    /// times out fails with `WouldBlock` or `TimedOut`.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        // Through std, not the descriptor: std refuses a zero timeout, which
        // the system call would take for none.
        match self {
            BlockingStream::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            BlockingStream::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }

    /// `TCP_NODELAY` (socketserver's `disable_nagle_algorithm`); a no-op on
    /// Unix sockets, which have no Nagle algorithm.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            BlockingStream::Tcp(s) => s.set_nodelay(on),
            BlockingStream::Unix(_) => Ok(()),
        }
    }

    /// Switches between blocking and nonblocking mode.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.sock().set_nonblocking(on)
    }
}

impl Read for &BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.sock()).read(buf)
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

/// Writes with `MSG_NOSIGNAL`, as the reactor does: a vanished peer is an
/// error, not a SIGPIPE.
impl Write for &BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(*self).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        socket2::SockRef::from(*self).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for BlockingStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            BlockingStream::Tcp(s) => s.as_fd(),
            BlockingStream::Unix(s) => s.as_fd(),
        }
    }
}

/// A handle to a reactor's datagram socket, for answering from another
/// thread or a forked child. The socket stays nonblocking (the reactor reads
/// it); [`send_to`](BlockingDatagram::send_to) waits for room instead.
#[derive(Debug)]
pub enum BlockingDatagram {
    /// A UDP socket.
    Udp(std::net::UdpSocket),
    /// A Unix datagram socket.
    Unix(std::os::unix::net::UnixDatagram),
}

impl AsRawFd for BlockingDatagram {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            BlockingDatagram::Udp(s) => s.as_raw_fd(),
            BlockingDatagram::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for BlockingDatagram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            BlockingDatagram::Udp(s) => s.as_fd(),
            BlockingDatagram::Unix(s) => s.as_fd(),
        }
    }
}

/// The first pause between two tries of a datagram whose peer's queue is
/// full; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(1);
const MAX_RETRY: Duration = Duration::from_millis(50);

impl BlockingDatagram {
    /// Sends one datagram to `to`, waiting while there is no room, for as
    /// long as it takes (see [`send_to_within`](Self::send_to_within)).
    pub fn send_to(&self, data: &[u8], to: &Addr) -> io::Result<()> {
        self.send_to_within(data, to, Duration::MAX)
    }

    /// Sends one datagram to `to`, waiting at most `wait` for room; then
    /// fails with [`io::ErrorKind::TimedOut`].
    ///
    /// A Unix datagram socket reports "writable" (POLLOUT) even while the
    /// peer's queue is full, so waiting for it would spin; the send is
    /// retried after a pause that doubles from 1 ms to 50 ms instead.
    pub fn send_to_within(&self, data: &[u8], to: &Addr, wait: Duration) -> io::Result<()> {
        let deadline = Instant::now().checked_add(wait);
        let mut pause = FIRST_RETRY;
        loop {
            let sent = match (self, to) {
                (BlockingDatagram::Udp(s), Addr::Inet(a)) => s.send_to(data, a),
                (BlockingDatagram::Unix(s), Addr::Unix(_)) => match to.as_path() {
                    Some(path) => s.send_to(data, path),
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "cannot answer an unnamed Unix socket (the peer did not bind)",
                        ))
                    }
                },
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("cannot send to {to}: address family differs from the socket's"),
                    ))
                }
            };
            match sent {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    let left = deadline.map_or(pause, |d| d.saturating_duration_since(now));
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no room to send to {to} for {wait:?}"),
                        ));
                    }
                    self.wait_writable(pause.min(left))?;
                    pause = (pause * 2).min(MAX_RETRY);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits up to `wait` for room: POLLOUT for UDP (where it means room), a
    /// plain pause for Unix datagrams (where it does not).
    fn wait_writable(&self, wait: Duration) -> io::Result<()> {
        if matches!(self, BlockingDatagram::Unix(_)) {
            std::thread::sleep(wait);
            return Ok(());
        }
        let mut pollfd = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        if unsafe { libc::poll(&mut pollfd, 1, ms) } == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}
