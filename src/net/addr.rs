//! Socket addresses: an IP address and port, or a Unix socket path.
//!
//! One type for every family the reactor serves, so a protocol can print or
//! answer its peer without caring whether it came in over TCP, UDP or a Unix
//! socket.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::Path;
use std::str::FromStr;

/// The address of a socket: a listener, a peer, or a datagram's sender.
///
/// Parse one from text with [`str::parse`]: `unix:PATH` (as `Display`
/// writes it) or anything containing a `/` is a Unix socket path; on Linux,
/// `unix:@NAME` is an abstract socket name; anything else must be an IP
/// address and port (`127.0.0.1:50007`, `[::1]:0`). What `Display` writes
/// parses back to an equal address (for paths and names that are UTF-8),
/// except an unnamed peer's `unix:(unnamed)`, which names nothing.
///
/// Addresses are `Eq` and `Hash` (a key of a map of peers): Unix addresses
/// compare by path (or abstract name); all unnamed ones are equal.
///
/// ```
/// use sockloop::Addr;
/// let tcp: Addr = "127.0.0.1:0".parse().unwrap();
/// let unix: Addr = "/tmp/echo.sock".parse().unwrap();
/// assert!(tcp.as_inet().is_some());
/// assert_eq!(unix.as_path().unwrap().to_str(), Some("/tmp/echo.sock"));
/// assert_eq!(unix.to_string(), "unix:/tmp/echo.sock");
/// assert_eq!(unix.to_string().parse::<Addr>().unwrap(), unix);
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

/// What identifies a Unix address: equality, hashing and display agree on it.
#[derive(PartialEq, Eq, Hash)]
enum UnixName<'a> {
    Path(&'a Path),
    Abstract(&'a [u8]),
    Unnamed,
}

fn unix_name(a: &UnixAddr) -> UnixName<'_> {
    if let Some(path) = a.as_pathname() {
        return UnixName::Path(path);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = a.as_abstract_name() {
            return UnixName::Abstract(name);
        }
    }
    UnixName::Unnamed
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &str) -> io::Result<Addr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    UnixAddr::from_abstract_name(name).map(Addr::Unix)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(name: &str) -> io::Result<Addr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("abstract Unix socket names (unix:@{name}) exist only on Linux"),
    ))
}

impl PartialEq for Addr {
    fn eq(&self, other: &Addr) -> bool {
        match (self, other) {
            (Addr::Inet(a), Addr::Inet(b)) => a == b,
            (Addr::Unix(a), Addr::Unix(b)) => unix_name(a) == unix_name(b),
            _ => false,
        }
    }
}

impl Eq for Addr {}

impl Hash for Addr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Addr::Inet(a) => a.hash(state),
            Addr::Unix(a) => unix_name(a).hash(state),
        }
    }
}

impl FromStr for Addr {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Addr> {
        if let Some(rest) = s.strip_prefix("unix:") {
            return match rest {
                "" | "(unnamed)" => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad address {s:?}: an unnamed Unix address cannot be named"),
                )),
                _ => match rest.strip_prefix('@') {
                    Some(name) => abstract_addr(name),
                    None => Addr::unix(rest),
                },
            };
        }
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
            Addr::Unix(a) => match unix_name(a) {
                UnixName::Path(p) => write!(f, "unix:{}", p.display()),
                UnixName::Abstract(name) => {
                    write!(f, "unix:@{}", String::from_utf8_lossy(name))
                }
                UnixName::Unnamed => f.write_str("unix:(unnamed)"),
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

    /// What `Display` writes parses back to an equal address with the same
    /// hash; the two spellings of a path are one address.
    #[test]
    fn display_parses_back() {
        use std::collections::hash_map::DefaultHasher;
        use std::collections::HashSet;
        let hash = |a: &Addr| {
            let mut h = DefaultHasher::new();
            a.hash(&mut h);
            h.finish()
        };
        let mut texts = vec![
            "127.0.0.1:80",
            "0.0.0.0:0",
            "[::1]:80",
            "[::]:65535",
            "[fe80::1%2]:8080",
            "unix:/tmp/x",
            "unix:./relative.sock",
            "unix:no-slash.sock",
            "unix:/tmp/with space:and:colons",
        ];
        if cfg!(any(target_os = "linux", target_os = "android")) {
            texts.extend(["unix:@abstract", "unix:@"]);
        }
        let mut seen = HashSet::new();
        for text in texts {
            let addr: Addr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
            let again: Addr = addr.to_string().parse().unwrap();
            assert_eq!(again, addr, "{text}");
            assert_eq!(hash(&again), hash(&addr), "{text}");
            assert!(seen.insert(addr), "{text} equals an earlier address");
        }
        let plain: Addr = "/tmp/x".parse().unwrap();
        assert!(seen.contains(&plain), "/tmp/x is unix:/tmp/x");
        for bad in ["unix:", "unix:(unnamed)"] {
            let err = bad.parse::<Addr>().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    /// Peers as the kernel reports them: an abstract name is not unnamed,
    /// and two unnamed peers are one address.
    #[cfg(target_os = "linux")]
    #[test]
    fn unix_peers_compare_by_name() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::UnixDatagram;
        let name = format!("sockloop-addr-test-{}", std::process::id());
        let bound = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap()).unwrap();
        let named = Addr::from(bound.local_addr().unwrap());
        assert_eq!(named.to_string(), format!("unix:@{name}"));
        assert_eq!(named.to_string().parse::<Addr>().unwrap(), named);
        let (a, b) = UnixDatagram::pair().unwrap();
        let unnamed = Addr::from(a.local_addr().unwrap());
        assert_eq!(unnamed, Addr::from(b.local_addr().unwrap()));
        assert_ne!(named, unnamed);
        assert_eq!(unnamed.to_string(), "unix:(unnamed)");
    }
}
