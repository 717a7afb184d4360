//! The sockets themselves: binding listeners and datagram sockets with the
//! options servers need, and one enum per socket kind so the reactor has
//! one code path for TCP and Unix.
//!
//! Binding goes through `socket2` because the options that matter for a server
//! (`SO_REUSEADDR`, `SO_REUSEPORT`, `IPV6_V6ONLY`, the listen backlog) must be
//! set between `socket()` and `bind()`/`listen()`, which std does not allow.
use std::fs;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::ListenOptions;
use crate::Addr;

fn context(e: io::Error, what: &str, addr: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
}

fn inet_socket(addr: SocketAddr, ty: Type, opts: &ListenOptions) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty.nonblocking().cloexec(), None)?;
    socket.set_reuse_address(opts.reuse_address)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(opts.only_v6)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds a Unix socket at `path`, replacing a stale socket file left by a dead
/// server: only a socket file, and only when nothing accepts on it.
fn unix_socket(path: &Path, ty: Type, mode: Option<u32>) -> io::Result<Socket> {
    let bind = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::UNIX, ty.nonblocking().cloexec(), None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        Ok(socket)
    };
    match bind() {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path) => {
            log::info!("removing stale socket file {}", path.display());
            fs::remove_file(path)?;
            bind()
        }
        other => other,
    }
}

/// A socket file nobody listens on: a connect is refused at once. The probe
/// is nonblocking, because a live server with a full accept queue would
/// otherwise keep a blocking connect waiting forever.
fn is_stale_socket(path: &Path) -> bool {
    let is_socket = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    let refused = || -> io::Result<bool> {
        let probe = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
        Ok(matches!(
            probe.connect(&SockAddr::unix(path)?),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        ))
    };
    is_socket && refused().unwrap_or(false)
}

/// A bound, listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    // The guard is never read: it is held for its `Drop`.
    Unix(UnixListener, #[allow(dead_code)] UnlinkOnDrop),
}

/// Removes a Unix socket's file when the socket that created it goes away,
/// if the file is still the one it created (same device and inode): after
/// someone removed it and another server bound the same path, that server's
/// file is left alone.
#[derive(Debug)]
pub(crate) struct UnlinkOnDrop {
    path: PathBuf,
    /// Device and inode of the file just after binding (`None`: unknown, so
    /// the file is never removed).
    file: Option<(u64, u64)>,
}

impl UnlinkOnDrop {
    /// Call right after binding `path`.
    pub(crate) fn new(path: &Path) -> UnlinkOnDrop {
        UnlinkOnDrop {
            path: path.to_path_buf(),
            file: file_id(path),
        }
    }

    /// Removes nothing: the file belongs to whoever bound it (a service
    /// manager), or to the process a restart handed the socket to.
    pub(crate) fn never() -> UnlinkOnDrop {
        UnlinkOnDrop {
            path: PathBuf::new(),
            file: None,
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Drop for UnlinkOnDrop {
    fn drop(&mut self) {
        if self.file.is_some() && file_id(&self.path) == self.file {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Listener {
    pub(crate) fn bind(addr: &Addr, opts: &ListenOptions) -> io::Result<Listener> {
        let backlog = opts.backlog.min(i32::MAX as u32) as i32;
        let bound = match addr {
            Addr::Inet(a) => inet_socket(*a, Type::STREAM, opts).and_then(|s| {
                s.listen(backlog)?;
                Ok(Listener::Tcp(TcpListener::from_std(s.into())))
            }),
            Addr::Unix(_) => {
                let path = unix_path(addr)?;
                unix_socket(path, Type::STREAM, opts.unix_mode).and_then(|s| {
                    let guard = UnlinkOnDrop::new(path);
                    s.listen(backlog)?;
                    Ok(Listener::Unix(UnixListener::from_std(s.into()), guard))
                })
            }
        };
        bound.map_err(|e| context(e, "cannot listen on", addr))
    }

    /// A listener made of a socket passed by socket activation (checked to
    /// be a listening stream socket). Its Unix socket file, if any, is not
    /// ours to remove.
    pub(crate) fn inherited(sock: crate::activation::InheritedSocket) -> io::Result<Listener> {
        sock.expect_listener()?;
        let kind = sock.kind();
        let fd = sock.into_fd();
        set_nonblocking(&fd)?;
        Ok(match kind {
            crate::activation::SocketKind::Tcp => Listener::Tcp(TcpListener::from_std(fd.into())),
            _ => Listener::Unix(UnixListener::from_std(fd.into()), UnlinkOnDrop::never()),
        })
    }

    /// Leaves the Unix socket file in place when this listener closes: the
    /// socket lives on in another process.
    pub(crate) fn keep_file(&mut self) {
        if let Listener::Unix(_, guard) = self {
            // Disarmed in place: replacing the guard would drop it, and
            // dropping it removes the file.
            guard.file = None;
        }
    }

    /// Accepts one connection (`WouldBlock` when none is waiting).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Addr)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), Addr::Inet(a))),
            Listener::Unix(l, _) => l.accept().map(|(s, a)| (Stream::Unix(s), Addr::Unix(a))),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Addr::Inet),
            Listener::Unix(l, _) => l.local_addr().map(Addr::Unix),
        }
    }
}

fn set_nonblocking(fd: &std::os::fd::OwnedFd) -> io::Result<()> {
    SockRef::from(fd).set_nonblocking(true)
}

fn unix_path(addr: &Addr) -> io::Result<&Path> {
    addr.as_path().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "only a Unix socket path can be bound or connected to (not an unnamed or abstract address)",
        )
    })
}

/// A connected byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Starts a nonblocking connect; completion is reported as WRITABLE.
    pub(crate) fn connect(addr: &Addr) -> io::Result<Stream> {
        let stream = match addr {
            Addr::Inet(a) => TcpStream::connect(*a).map(Stream::Tcp),
            Addr::Unix(_) => UnixStream::connect(unix_path(addr)?).map(Stream::Unix),
        };
        stream.map_err(|e| context(e, "cannot connect to", addr))
    }

    fn sock(&self) -> SockRef<'_> {
        match self {
            Stream::Tcp(s) => SockRef::from(s),
            Stream::Unix(s) => SockRef::from(s),
        }
    }

    /// The descriptor, for the hot path's direct `recv`/`send` calls.
    #[inline]
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Reads into the spare capacity of `buf`, growing it by nothing: the
    /// caller reserves. Returns the byte count (0 = end of stream).
    ///
    /// `recv(2)` is called directly: through `socket2` each read built a
    /// `SockRef` and went through two calls that are not inlined (a tenth of
    /// the reactor's own work per echoed message).
    #[inline]
    pub(crate) fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        let n = loop {
            // SAFETY: `spare` is valid for writes of `spare.len()` bytes for
            // the duration of the call; `recv` writes at most that many and
            // never reads them, so uninitialised memory is fine.
            let n = unsafe {
                libc::recv(
                    self.fd(),
                    spare.as_mut_ptr().cast::<libc::c_void>(),
                    spare.len(),
                    0,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Writes without raising SIGPIPE when the peer is gone (`MSG_NOSIGNAL`):
    /// a library must not kill a process that did not ignore the signal; the
    /// error comes back as `BrokenPipe` instead.
    pub(crate) fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match self
                .sock()
                .send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
            {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// One buffer, as `send(2)` with `MSG_NOSIGNAL`, called directly (see
    /// [`read_into`](Stream::read_into)).
    #[inline]
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
            // duration of the call.
            let n = unsafe {
                libc::send(
                    self.fd(),
                    buf.as_ptr().cast::<libc::c_void>(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// Bytes handed to the kernel that the peer has not taken yet
    /// (`SIOCOUTQ`): for TCP those not acknowledged (a FIN counts one), for
    /// Unix sockets the memory of those not read. 0 when unknown.
    pub(crate) fn unacked(&self) -> usize {
        self.queue_len(libc::TIOCOUTQ).unwrap_or(0)
    }

    /// Whether the kernel holds no input (`SIOCINQ` 0): a close now sends
    /// a FIN, not a reset. False when unknown.
    pub(crate) fn has_no_input(&self) -> bool {
        self.queue_len(libc::FIONREAD) == Some(0)
    }

    /// The length of a socket queue, by `SIOCOUTQ` (= `TIOCOUTQ`) or
    /// `SIOCINQ` (= `FIONREAD`).
    fn queue_len(&self, request: libc::Ioctl) -> Option<usize> {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        let mut n: libc::c_int = 0;
        // SAFETY: both requests write one int through the pointer.
        let r = unsafe { libc::ioctl(fd, request, &mut n) };
        (r == 0).then_some(n.max(0) as usize)
    }

    /// Makes the coming close reset the connection (`SO_LINGER` 0): the
    /// kernel drops what it still holds for a peer we gave up on, instead
    /// of keeping it for minutes as an orphan.
    pub(crate) fn reset_on_close(&self) {
        let _ = self.sock().set_linger(Some(std::time::Duration::ZERO));
    }

    pub(crate) fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }

    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock().take_error()
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()),
        }
    }

    /// Whether `TCP_NODELAY` is on (a Unix stream has no Nagle: true).
    pub(crate) fn nodelay(&self) -> io::Result<bool> {
        match self {
            Stream::Tcp(s) => s.nodelay(),
            Stream::Unix(_) => Ok(true),
        }
    }

    pub(crate) fn peer_addr(&self) -> io::Result<Addr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Addr::Inet),
            Stream::Unix(s) => s.peer_addr().map(Addr::Unix),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(Addr::Inet),
            Stream::Unix(s) => s.local_addr().map(Addr::Unix),
        }
    }
}

/// A bound datagram socket.
#[derive(Debug)]
pub(crate) enum Datagram {
    Udp(UdpSocket),
    Unix(UnixDatagram, #[allow(dead_code)] UnlinkOnDrop),
}

impl Datagram {
    pub(crate) fn bind(addr: &Addr, opts: &ListenOptions) -> io::Result<Datagram> {
        let bound = match addr {
            Addr::Inet(a) => inet_socket(*a, Type::DGRAM, opts)
                .map(|s| Datagram::Udp(UdpSocket::from_std(s.into()))),
            Addr::Unix(_) => {
                let path = unix_path(addr)?;
                unix_socket(path, Type::DGRAM, opts.unix_mode).map(|s| {
                    let guard = UnlinkOnDrop::new(path);
                    Datagram::Unix(UnixDatagram::from_std(s.into()), guard)
                })
            }
        };
        bound.map_err(|e| context(e, "cannot bind", addr))
    }

    /// A datagram socket passed by socket activation.
    pub(crate) fn inherited(sock: crate::activation::InheritedSocket) -> io::Result<Datagram> {
        sock.expect_datagram()?;
        let kind = sock.kind();
        let fd = sock.into_fd();
        set_nonblocking(&fd)?;
        Ok(match kind {
            crate::activation::SocketKind::Udp => Datagram::Udp(UdpSocket::from_std(fd.into())),
            _ => Datagram::Unix(UnixDatagram::from_std(fd.into()), UnlinkOnDrop::never()),
        })
    }

    /// See [`Listener::keep_file`].
    pub(crate) fn keep_file(&mut self) {
        if let Datagram::Unix(_, guard) = self {
            // Disarmed in place: replacing the guard would drop it, and
            // dropping it removes the file.
            guard.file = None;
        }
    }

    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Addr)> {
        match self {
            Datagram::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Addr::Inet(a))),
            Datagram::Unix(s, _) => s.recv_from(buf).map(|(n, a)| (n, Addr::Unix(a))),
        }
    }

    pub(crate) fn send_to(&self, buf: &[u8], to: &Addr) -> io::Result<usize> {
        match (self, to) {
            (Datagram::Udp(s), Addr::Inet(a)) => s.send_to(buf, *a),
            (Datagram::Unix(s, _), Addr::Unix(_)) => match to.as_path() {
                Some(path) => s.send_to(buf, path),
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot send to an unnamed Unix socket (the peer did not bind)",
                )),
            },
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send to {to}: address family differs from the socket's"),
            )),
        }
    }

    /// A blocking-capable handle to the same socket (a `dup`; it shares the
    /// nonblocking flag, which `BlockingDatagram::send_to` copes with).
    pub(crate) fn try_clone(&self) -> io::Result<crate::BlockingDatagram> {
        use std::os::fd::AsFd;
        Ok(match self {
            Datagram::Udp(s) => {
                crate::BlockingDatagram::Udp(s.as_fd().try_clone_to_owned()?.into())
            }
            Datagram::Unix(s, _) => {
                crate::BlockingDatagram::Unix(s.as_fd().try_clone_to_owned()?.into())
            }
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Datagram::Udp(s) => s.local_addr().map(Addr::Inet),
            Datagram::Unix(s, _) => s.local_addr().map(Addr::Unix),
        }
    }
}

/// Forwards `mio::event::Source` to whichever socket the enum holds.
macro_rules! forward_source {
    ($ty:ident { $($variant:ident($inner:ident $(, $rest:tt)?)),+ }) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self { $($ty::$variant($inner $(, $rest)?) => $inner.register(r, t, i)),+ }
            }
            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self { $($ty::$variant($inner $(, $rest)?) => $inner.reregister(r, t, i)),+ }
            }
            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                match self { $($ty::$variant($inner $(, $rest)?) => $inner.deregister(r)),+ }
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                match self { $($ty::$variant($inner $(, $rest)?) => $inner.as_raw_fd()),+ }
            }
        }
    };
}

forward_source!(Listener { Tcp(s), Unix(s, _) });
forward_source!(Stream { Tcp(s), Unix(s) });
forward_source!(Datagram { Udp(s), Unix(s, _) });
