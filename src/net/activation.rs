//! Socket activation, systemd's protocol (`sd_listen_fds(3)`): a service
//! manager (or the process we replace in a zero-downtime restart) binds the
//! sockets and passes them from fd 3 on, with `LISTEN_FDS` (how many),
//! `LISTEN_PID` (for which process) and optionally `LISTEN_FDNAMES`
//! (colon-separated names).
//!
//! As `sd_listen_fds(…, unset_environment = 1)`: the variables are removed
//! whether or not they were meant for us, so that children do not take them
//! for theirs, and the descriptors are made close-on-exec. Each descriptor's
//! kind is read from the kernel (`SO_DOMAIN`, `SO_TYPE`, `SO_ACCEPTCONN`),
//! so a unit file need not repeat what the sockets are.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use crate::Addr;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The environment variable naming the ready pipe of a process started by
/// a [restart](crate::restart).
pub const READY_FD_VAR: &str = "SOCKLOOP_READY_FD";

/// How the program was started: `argv[0]` made absolute against the
/// working directory of the time when it names a path (has a `/`), else the
/// bare name (looked up in `PATH` at the restart, as `execvp` does).
static STARTED_AS: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Remembers how the program was started, before it may change directory:
/// called by [`take`] and by `Reactor::restart_on_signal`, whichever comes
/// first. It lives here, below the reactor, because `take` needs it and a
/// restart (`crate::restart`) is a layer above.
pub(crate) fn remember_program() {
    STARTED_AS.get_or_init(|| {
        let arg0 = PathBuf::from(std::env::args_os().next()?);
        if arg0.as_os_str().is_empty() {
            None
        } else if arg0.as_os_str().as_bytes().contains(&b'/') {
            Some(std::env::current_dir().ok()?.join(arg0))
        } else {
            Some(arg0)
        }
    });
}

/// How the program was started (see [`remember_program`]); `None` when
/// `argv[0]` was empty.
pub(crate) fn started_as() -> Option<&'static PathBuf> {
    remember_program();
    STARTED_AS.get().and_then(Option::as_ref)
}

/// The ready pipe, taken from the environment by [`take`] (-1: none).
static READY_FD: AtomicI32 = AtomicI32::new(-1);

/// Takes `SOCKLOOP_READY_FD` out of the environment, with the activation
/// variables (early, before threads exist).
fn take_ready_fd() {
    let var = std::env::var(READY_FD_VAR).ok();
    std::env::remove_var(READY_FD_VAR);
    let Some(fd) = var.and_then(|v| v.parse::<RawFd>().ok()) else {
        return;
    };
    // SAFETY: F_SETFD on a descriptor our parent passed; fails harmlessly
    // (EBADF) if it is not open.
    if fd > 2 && unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0 {
        READY_FD.store(fd, Ordering::Relaxed);
    }
}

/// The ready pipe [`take`] found, once.
pub(crate) fn take_ready_pipe() -> Option<OwnedFd> {
    let fd = READY_FD.swap(-1, Ordering::Relaxed);
    // SAFETY: the descriptor was passed to us for this, and the swap makes
    // this the only owner.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What an inherited socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketKind {
    /// A TCP socket (IPv4 or IPv6).
    Tcp,
    /// A UDP socket (IPv4 or IPv6).
    Udp,
    /// A Unix stream socket.
    UnixStream,
    /// A Unix datagram socket.
    UnixDatagram,
}

impl SocketKind {
    /// A stream kind (TCP or Unix stream): served by a listener.
    pub fn is_stream(self) -> bool {
        matches!(self, SocketKind::Tcp | SocketKind::UnixStream)
    }
}

/// A socket passed to this process by socket activation.
///
/// Hand it to [`Reactor::listen_inherited`](crate::Reactor::listen_inherited)
/// (stream kinds) or
/// [`Reactor::bind_datagram_inherited`](crate::Reactor::bind_datagram_inherited)
/// (datagram kinds); dropping it closes it.
pub struct InheritedSocket {
    // Before `fd`: unlisted before it closes (see `net::owned`). Listed so
    // that a fork server started while we hold it (a forking server or a
    // process pool, started before the listeners are made) closes its copy.
    _listed: crate::net::owned::Listed,
    fd: OwnedFd,
    kind: SocketKind,
    listening: bool,
    name: Option<String>,
}

impl InheritedSocket {
    /// TCP, UDP, Unix stream or Unix datagram.
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`),
    /// if one was given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A stream socket that accepts connections (`listen(2)` was called).
    pub fn is_listening(&self) -> bool {
        self.listening
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<Addr> {
        let sock = socket2::SockRef::from(&self.fd);
        let addr = sock.local_addr()?;
        if let Some(inet) = addr.as_socket() {
            return Ok(Addr::Inet(inet));
        }
        match addr.as_pathname() {
            Some(path) => Addr::unix(path),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "inherited fd {} has no address to show",
                    self.fd.as_raw_fd()
                ),
            )),
        }
    }

    /// Its descriptor number.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Another descriptor for the same socket (`dup`), for a second
    /// reactor to accept on too.
    pub fn try_clone(&self) -> io::Result<InheritedSocket> {
        let fd = self.fd.try_clone()?;
        Ok(InheritedSocket {
            _listed: crate::net::owned::Listed::new(fd.as_raw_fd()),
            fd,
            kind: self.kind,
            listening: self.listening,
            name: self.name.clone(),
        })
    }

    /// Gives up the socket as a plain descriptor.
    pub fn into_fd(self) -> OwnedFd {
        // Unlisted here: whoever owns it now lists it if it should be.
        let InheritedSocket { fd, .. } = self;
        fd
    }

    /// Checks that a listener may be made of it (a stream socket that
    /// listens); the error names the descriptor.
    pub(crate) fn expect_listener(&self) -> io::Result<()> {
        if !self.kind.is_stream() {
            return Err(self.wrong(format!("a {:?} socket, not a stream listener", self.kind)));
        }
        if !self.listening {
            return Err(self.wrong(
                "a stream socket that is not listening (systemd's Accept=yes is not supported: use Accept=no)".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn expect_datagram(&self) -> io::Result<()> {
        if self.kind.is_stream() {
            return Err(self.wrong(format!("a {:?} socket, not a datagram socket", self.kind)));
        }
        Ok(())
    }

    fn wrong(&self, what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited fd {} ({self}) is {what}", self.fd.as_raw_fd()),
        )
    }
}

impl fmt::Display for InheritedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "fd {}", self.fd.as_raw_fd()),
        }
    }
}

impl fmt::Debug for InheritedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InheritedSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("kind", &self.kind)
            .field("listening", &self.listening)
            .field("name", &self.name)
            .finish()
    }
}

/// Takes the sockets this process was given by socket activation (and
/// the ready pipe of a [restart](crate::restart), for
/// [`notify_ready`](crate::restart::notify_ready)).
///
/// `Ok(None)` when there are none for us: `LISTEN_FDS` unset (or 0), or
/// `LISTEN_PID` unset or another process's. An error for a malformed
/// variable, a descriptor that is not open or not a socket, or a socket of
/// a kind the reactor does not serve. Either way the variables are removed
/// from the environment, so call this once, early, before starting threads
/// (changing the environment is not thread-safe).
pub fn take() -> io::Result<Option<Vec<InheritedSocket>>> {
    // Early, before the program may change directory: what a restart runs.
    remember_program();
    let var = |name: &str| std::env::var(name).ok();
    let (fds, pid, names) = (var("LISTEN_FDS"), var("LISTEN_PID"), var("LISTEN_FDNAMES"));
    for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    take_ready_fd();
    let Some(fds) = fds else { return Ok(None) };
    let count = parse_env(&fds, pid.as_deref(), std::process::id())?;
    if count == 0 {
        return Ok(None);
    }
    adopt_fds(LISTEN_FDS_START, count, names.as_deref()).map(Some)
}

/// How many descriptors `LISTEN_FDS` and `LISTEN_PID` give `my_pid`
/// (0: none for us).
fn parse_env(fds: &str, pid: Option<&str>, my_pid: u32) -> io::Result<usize> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let count: usize = fds
        .trim()
        .parse()
        .map_err(|_| bad(format!("LISTEN_FDS={fds:?} is not a number of descriptors")))?;
    // Beyond any descriptor table: a corrupt value, not sockets to look for.
    if count > 65_536 {
        return Err(bad(format!(
            "LISTEN_FDS={count} is more descriptors than a process has"
        )));
    }
    let Some(pid) = pid else { return Ok(0) };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| bad(format!("LISTEN_PID={pid:?} is not a process id")))?;
    if pid != my_pid {
        log::debug!("LISTEN_FDS is for process {pid}, not this one ({my_pid}): ignored");
        return Ok(0);
    }
    Ok(count)
}

/// Adopts descriptors `first .. first + count`.
fn adopt_fds(first: RawFd, count: usize, names: Option<&str>) -> io::Result<Vec<InheritedSocket>> {
    let mut names = names.map(|n| n.split(':').map(str::to_owned).collect::<Vec<_>>());
    if let Some(list) = &names {
        if list.len() != count {
            log::warn!(
                "LISTEN_FDNAMES has {} names for {count} descriptors: names ignored",
                list.len()
            );
            names = None;
        }
    }
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let fd = first + i as RawFd;
        let name = names
            .as_ref()
            .map(|n| n[i].clone())
            .filter(|n| !n.is_empty());
        sockets.push(adopt_one(fd, name)?);
    }
    Ok(sockets)
}

fn adopt_one(fd: RawFd, name: Option<String>) -> io::Result<InheritedSocket> {
    let label = match &name {
        Some(n) => format!("inherited fd {fd} ({n})"),
        None => format!("inherited fd {fd}"),
    };
    // SAFETY: F_GETFD only reads the flags; it fails with EBADF if `fd` is
    // not open, and then we never take it over.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("{label} (LISTEN_FDS): {e}"),
        ));
    }
    // SAFETY: the service manager passed this open descriptor to us, and
    // the environment that said so is gone: nothing else will claim it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sets FD_CLOEXEC on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let int = |level, opt, what: &str| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for the int-sized option.
        let r = unsafe {
            libc::getsockopt(
                fd,
                level,
                opt,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            let e = if e.raw_os_error() == Some(libc::ENOTSOCK) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{label} is not a socket"),
                )
            } else {
                io::Error::new(e.kind(), format!("{label}: {what}: {e}"))
            };
            return Err(e);
        }
        Ok(value)
    };
    let ty = int(libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?;
    let domain = int(libc::SOL_SOCKET, libc::SO_DOMAIN, "SO_DOMAIN")?;
    let kind = match (domain, ty) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM) => SocketKind::Tcp,
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) => SocketKind::Udp,
        (libc::AF_UNIX, libc::SOCK_STREAM) => SocketKind::UnixStream,
        (libc::AF_UNIX, libc::SOCK_DGRAM) => SocketKind::UnixDatagram,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{label}: a socket of family {domain} and type {ty}, which is not served (TCP, UDP, Unix stream or datagram)"),
            ))
        }
    };
    let listening =
        kind.is_stream() && int(libc::SOL_SOCKET, libc::SO_ACCEPTCONN, "SO_ACCEPTCONN")? != 0;
    Ok(InheritedSocket {
        _listed: crate::net::owned::Listed::new(fd),
        fd: owned,
        kind,
        listening,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values() {
        assert_eq!(parse_env("2", Some("77"), 77).unwrap(), 2);
        assert_eq!(parse_env("2", Some("78"), 77).unwrap(), 0);
        assert_eq!(parse_env("2", None, 77).unwrap(), 0);
        assert_eq!(parse_env("0", Some("77"), 77).unwrap(), 0);
        for bad in ["", "x", "-1", "2x", "99999999"] {
            let e = parse_env(bad, Some("77"), 77).unwrap_err();
            assert!(e.to_string().contains("LISTEN_FDS"), "{e}");
        }
        assert!(parse_env("1", Some("me"), 77)
            .unwrap_err()
            .to_string()
            .contains("LISTEN_PID"));
    }

    /// Places `fds` at consecutive numbers from a high base, as a service
    /// manager places them from 3, and adopts them.
    fn adopt_at(fds: &[RawFd], names: Option<&str>) -> io::Result<Vec<InheritedSocket>> {
        static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(700);
        let base = NEXT.fetch_add(fds.len() as i32 + 1, std::sync::atomic::Ordering::Relaxed);
        for (i, &fd) in fds.iter().enumerate() {
            // SAFETY: duplicates an open descriptor onto an unused high number.
            assert!(unsafe { libc::dup2(fd, base + i as RawFd) } >= 0);
        }
        adopt_fds(base, fds.len(), names)
    }

    #[test]
    fn kinds_names_and_listening() {
        use std::os::unix::net::{UnixDatagram, UnixListener};
        let dir = std::env::temp_dir().join(format!("sockloop-act-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let ul = UnixListener::bind(dir.join("s")).unwrap();
        let ud = UnixDatagram::bind(dir.join("d")).unwrap();
        let fds = [
            tcp.as_raw_fd(),
            udp.as_raw_fd(),
            ul.as_raw_fd(),
            ud.as_raw_fd(),
        ];
        let got = adopt_at(&fds, Some("web:dns::log")).unwrap();
        let kinds: Vec<_> = got.iter().map(|s| s.kind()).collect();
        use SocketKind::*;
        assert_eq!(kinds, [Tcp, Udp, UnixStream, UnixDatagram]);
        assert_eq!(got[0].name(), Some("web"));
        assert_eq!(got[2].name(), None);
        assert!(got[0].is_listening() && got[2].is_listening());
        assert_eq!(
            got[0].local_addr().unwrap().to_string(),
            tcp.local_addr().unwrap().to_string()
        );
        assert!(got[0].expect_listener().is_ok());
        assert!(got[1]
            .expect_listener()
            .unwrap_err()
            .to_string()
            .contains("not a stream listener"));
        assert!(got[1].expect_datagram().is_ok());
        // SAFETY: reads the flags of a descriptor we own.
        assert_ne!(
            unsafe { libc::fcntl(got[0].raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC,
            0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn not_listening_not_a_socket_not_open() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let got = adopt_at(&[s.as_raw_fd()], None).unwrap();
        assert!(!got[0].is_listening());
        let e = got[0].expect_listener().unwrap_err().to_string();
        assert!(e.contains("not listening"), "{e}");

        let file = std::fs::File::open("/dev/null").unwrap();
        let e = adopt_at(&[file.as_raw_fd()], None).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");

        let e = adopt_fds(60_000, 1, None).unwrap_err().to_string();
        assert!(e.contains("inherited fd 60000"), "{e}");
    }
}
