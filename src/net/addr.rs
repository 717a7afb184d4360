//! Socket addresses: an IP address and port, or a Unix socket path.
//!
//! One type for every family the reactor serves, so a protocol can print or
//! answer its peer without caring whether it came in over TCP, UDP or a Unix
//! socket.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::Path;
use std::str::FromStr;

/// The address of a socket: a listener, a peer, or a datagram's sender.
///
/// Parse one from text with [`str::parse`]: anything containing a `/` is a
/// Unix socket path, anything else must be an IP address and port
/// (`127.0.0.1:50007`, `[::1]:0`).
///
/// ```
/// use sockloop::Addr;
/// let tcp: Addr = "127.0.0.1:0".parse().unwrap();
/// let unix: Addr = "/tmp/echo.sock".parse().unwrap();
/// assert!(tcp.as_inet().is_some());
/// assert_eq!(unix.as_path().unwrap().to_str(), Some("/tmp/echo.sock"));
/// ```
#[derive(Clone, Debug)]
pub enum Addr {
    /// An IPv4 or IPv6 address with a port.
    Inet(SocketAddr),
    /// A Unix-domain socket address. A peer that never bound its socket has an
    /// *unnamed* address ([`Addr::as_path`] is `None`): it cannot be answered.
    Unix(UnixAddr),
}

impl Addr {
    /// A Unix socket address for `path`.
    pub fn unix(path: impl AsRef<Path>) -> io::Result<Addr> {
        UnixAddr::from_pathname(path).map(Addr::Unix)
    }

    /// Resolves `host:port` text (a name such as `localhost` is looked up).
    ///
    /// Returns the first address the resolver gives, or an error that names
    /// the text when it does not resolve.
    pub fn resolve(host: &str, port: u16) -> io::Result<Addr> {
        let mut addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}:{port}: {e}")))?;
        addrs.next().map(Addr::Inet).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}:{port} resolves to no address"),
            )
        })
    }

    /// The IP address and port, if this is an internet address.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The path, if this is a Unix address with a name.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Addr::Inet(_) => None,
            Addr::Unix(a) => a.as_pathname(),
        }
    }

    /// True for Unix-domain addresses (named or not).
    pub fn is_unix(&self) -> bool {
        matches!(self, Addr::Unix(_))
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr::Inet(a)
    }
}

impl From<UnixAddr> for Addr {
    fn from(a: UnixAddr) -> Addr {
        Addr::Unix(a)
    }
}

impl PartialEq for Addr {
    fn eq(&self, other: &Addr) -> bool {
        match (self, other) {
            (Addr::Inet(a), Addr::Inet(b)) => a == b,
            (Addr::Unix(a), Addr::Unix(b)) => a.as_pathname() == b.as_pathname(),
            _ => false,
        }
    }
}

impl FromStr for Addr {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Addr> {
        if s.contains('/') {
            return Addr::unix(s);
        }
        s.parse::<SocketAddr>().map(Addr::Inet).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad address {s:?}: expected IP:PORT or a Unix socket path"),
            )
        })
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(a) => match a.as_pathname() {
                Some(p) => write!(f, "unix:{}", p.display()),
                None => f.write_str("unix:(unnamed)"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let a: Addr = "[::1]:80".parse().unwrap();
        assert_eq!(a.to_string(), "[::1]:80");
        let u: Addr = "./x.sock".parse().unwrap();
        assert_eq!(u.to_string(), "unix:./x.sock");
        let err = "nonsense".parse::<Addr>().unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }
}
