//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`), versions 1 and 2:
//! the header a load balancer sends before the client's bytes, naming the
//! client's address.
//!
//! A small strict parser of our own rather than the `ppp` crate: the reactor
//! needs to tell "not complete yet" from "invalid" after every read, bound
//! the header's size before it is complete, and map the addresses (Unix
//! ones included) to [`Addr`]; that is a hundred lines here and an adapter
//! plus a dependency there.
//!
//! The header is read with `MSG_PEEK` until it is complete, then exactly its
//! length is consumed: the protocol's first bytes stay in the kernel for
//! whoever serves the connection (a protocol on the reactor, or a blocking
//! socketserver handler).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;

use crate::Addr;

/// The longest header accepted, TLVs included (a v1 line is at most 107
/// bytes): HAProxy's own TLVs (unique id, TLS details) fit with room to
/// spare; anything longer is closed as oversized rather than buffered.
pub const MAX_HEADER: usize = 4096;

/// Longest v1 line, CRLF included (the spec's worst case).
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What a PROXY header says about a connection (TLVs may be added).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The client's address and the address it connected to, as the proxy
    /// saw them; `None` for a `LOCAL` header (the proxy's own health check)
    /// or an `UNKNOWN` / unspecified family: the spec says to use the
    /// connection's real endpoints then.
    pub addresses: Option<(Addr, Addr)>,
    /// The v2 `LOCAL` command (v1 has none).
    pub local: bool,
}

/// Outcome of looking at the bytes received so far.
#[derive(Debug)]
pub enum Parsed {
    /// A complete header of this many bytes.
    Complete(Box<ProxyHeader>, usize),
    /// Valid so far; more bytes are needed.
    Incomplete,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid PROXY header: {what}"),
    )
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> io::Result<Parsed> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(invalid(
            "no PROXY header (the connection starts with other bytes)",
        )),
    }
}

fn parse_v1(buf: &[u8]) -> io::Result<Parsed> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(invalid(
            "no PROXY header (the connection starts with other bytes)",
        ));
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(invalid(format!("v1 line longer than {V1_MAX} bytes")));
        }
        if window.contains(&b'\n') {
            return Err(invalid("v1 line ends without CR LF"));
        }
        return Ok(Parsed::Incomplete);
    };
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end])
        .map_err(|_| invalid("v1 line is not ASCII"))?;
    let len = end + 2;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // "the receiver must ignore anything presented before the CRLF".
        return Ok(Parsed::Complete(
            Box::new(ProxyHeader {
                version: 1,
                addresses: None,
                local: false,
            }),
            len,
        ));
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        other => return Err(invalid(format!("v1 protocol {other:?}"))),
    };
    let rest: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = rest[..] else {
        return Err(invalid(format!(
            "v1 line {line:?} does not have 4 fields after {family}"
        )));
    };
    let ip = |text: &str| -> io::Result<IpAddr> {
        let ip = if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
        };
        ip.ok_or_else(|| invalid(format!("{text:?} is not an {family} address")))
    };
    let port = |text: &str| -> io::Result<u16> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        // The spec forbids leading zeroes; a sign or spaces are no number.
        let canonical = text == "0" || !text.starts_with('0');
        match text.parse::<u16>() {
            Ok(p) if digits && canonical => Ok(p),
            _ => Err(invalid(format!("{text:?} is not a port"))),
        }
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let dest = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok(Parsed::Complete(
        Box::new(ProxyHeader {
            version: 1,
            addresses: Some((Addr::Inet(source), Addr::Inet(dest))),
            local: false,
        }),
        len,
    ))
}

fn parse_v2(buf: &[u8]) -> io::Result<Parsed> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(invalid(
            "no PROXY header (the connection starts with other bytes)",
        ));
    }
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(invalid(format!("version {} (v2 signature)", ver_cmd >> 4)));
    }
    let local = match ver_cmd & 0xF {
        0 => true,
        1 => false,
        cmd => return Err(invalid(format!("v2 command {cmd}"))),
    };
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_HEADER {
        return Err(invalid(format!(
            "{len} bytes long, over the limit of {MAX_HEADER}"
        )));
    }
    if fam & 0xF > 2 || fam >> 4 > 3 {
        return Err(invalid(format!(
            "v2 address family/protocol byte {fam:#04x}"
        )));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let block = &buf[16..len];
    let need = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        _ => 216,
    };
    if block.len() < need {
        return Err(invalid(format!(
            "v2 address block of {} bytes, {need} needed for family {}",
            block.len(),
            fam >> 4
        )));
    }
    // LOCAL: "the receiver must ... use the real connection endpoints and
    // discard the protocol block including the family". TLVs are skipped.
    let addresses = if local || fam & 0xF == 0 {
        None
    } else {
        let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
        match fam >> 4 {
            1 => {
                let ip = |at: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        block[at],
                        block[at + 1],
                        block[at + 2],
                        block[at + 3],
                    ))
                };
                Some((
                    Addr::Inet(SocketAddr::new(ip(0), port(8))),
                    Addr::Inet(SocketAddr::new(ip(4), port(10))),
                ))
            }
            2 => {
                let ip = |at: usize| {
                    let octets: [u8; 16] = block[at..at + 16].try_into().expect("16 bytes");
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                Some((
                    Addr::Inet(SocketAddr::new(ip(0), port(32))),
                    Addr::Inet(SocketAddr::new(ip(16), port(34))),
                ))
            }
            3 => match (unix_addr(&block[..108])?, unix_addr(&block[108..216])?) {
                (Some(src), Some(dst)) => Some((src, dst)),
                // An unnamed end cannot be an `Addr`: the real endpoints then.
                _ => None,
            },
            _ => None,
        }
    };
    Ok(Parsed::Complete(
        Box::new(ProxyHeader {
            version: 2,
            addresses,
            local,
        }),
        len,
    ))
}

/// A 108-byte `sun_path`: a NUL-terminated path, or (a leading NUL) a Linux
/// abstract name; all NULs is an unnamed socket (`None`).
fn unix_addr(raw: &[u8]) -> io::Result<Option<Addr>> {
    use std::os::unix::ffi::OsStrExt;
    if raw[0] != 0 {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let path = std::ffi::OsStr::from_bytes(&raw[..end]);
        return Addr::unix(path).map(Some).map_err(invalid);
    }
    let name = &raw[1..];
    let end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end == 0 {
        return Ok(None);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(&name[..end]).map_err(invalid)?;
        Ok(Some(Addr::Unix(addr)))
    }
    #[cfg(not(target_os = "linux"))]
    Ok(None)
}

/// What [`peek`] found on a socket.
#[derive(Debug)]
pub enum Peeked {
    /// The header is complete and has been consumed from the socket.
    Header(Box<ProxyHeader>),
    /// Not all of it has arrived yet (nothing consumed).
    Incomplete,
}

/// Looks at what `fd` has received without taking it, and once a whole
/// header is there, consumes exactly that many bytes. `closed`: the peer
/// has sent its FIN, so an incomplete header is truncated. Errors say why
/// the connection must be closed (invalid, oversized, truncated).
pub fn peek(fd: RawFd, closed: bool) -> io::Result<Peeked> {
    let mut buf = [0u8; MAX_HEADER];
    let n = recv(fd, &mut buf, libc::MSG_PEEK)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a PROXY header",
        ));
    }
    match parse(&buf[..n])? {
        Parsed::Complete(header, len) => {
            let got = recv(fd, &mut buf[..len], 0)?;
            debug_assert_eq!(got, len, "peeked bytes are there to take");
            Ok(Peeked::Header(header))
        }
        Parsed::Incomplete if closed => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("truncated PROXY header: the peer closed after {n} bytes"),
        )),
        Parsed::Incomplete => Ok(Peeked::Incomplete),
    }
}

fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The error of a header that took longer than the header timeout.
pub fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no complete PROXY header within {timeout:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str) -> Option<String> {
        Some(format!("{a} {b}"))
    }

    fn addrs(h: &ProxyHeader) -> Option<String> {
        h.addresses.as_ref().map(|(a, b)| format!("{a} {b}"))
    }

    fn incomplete(buf: &[u8]) -> bool {
        matches!(parse(buf), Ok(Parsed::Incomplete))
    }

    fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf).unwrap() {
            Parsed::Complete(h, n) => (*h, n),
            Parsed::Incomplete => panic!("incomplete: {buf:?}"),
        }
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        let (h, n) = complete(line);
        assert_eq!(n, line.len() - 5);
        assert_eq!(addrs(&h), pair("192.0.2.1:56324", "198.51.100.2:443"));
        let (h, _) = complete(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        assert_eq!(addrs(&h), pair("[2001:db8::1]:1", "[::1]:65535"));
        let (h, n) = complete(b"PROXY UNKNOWN ffff::1 whatever\r\nx");
        assert_eq!((addrs(&h), n), (None, 32));
        assert_eq!(complete(b"PROXY UNKNOWN\r\n").1, 15);
    }

    #[test]
    fn v1_incomplete_until_crlf_at_every_split() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for cut in 0..line.len() {
            assert!(incomplete(&line[..cut]), "cut {cut}");
        }
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"GET / HTTP/1.0\r\n"[..],
            b"PROXX TCP4",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
            b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP4 256.2.3.4 1.2.3.4 1 2\r\n",
        ] {
            assert!(
                parse(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // No CRLF within 107 bytes: oversized, even before more arrives.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert!(parse(&long).unwrap_err().to_string().contains("longer"));
    }

    #[test]
    fn v2_inet_inet6_unix_local() {
        let mut body = vec![192, 0, 2, 1, 127, 0, 0, 1];
        body.extend_from_slice(&1234u16.to_be_bytes());
        body.extend_from_slice(&80u16.to_be_bytes());
        body.extend_from_slice(&[3, 0, 1, 7]); // a TLV: skipped
        let mut h = v2(1, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"hello");
        let (got, n) = complete(&h);
        assert_eq!(n, len);
        assert_eq!(addrs(&got), pair("192.0.2.1:1234", "127.0.0.1:80"));
        for cut in 0..len {
            assert!(incomplete(&h[..cut]), "cut {cut}");
        }

        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0, 9, 0, 10]);
        let (got, _) = complete(&v2(1, 0x21, &body));
        assert_eq!(addrs(&got), pair("[2001:db8::7]:9", "[::1]:10"));

        let mut body = vec![0u8; 216];
        body[..9].copy_from_slice(b"/tmp/a.sk");
        body[108..117].copy_from_slice(b"/tmp/b.sk");
        let (got, _) = complete(&v2(1, 0x31, &body));
        let (src, dst) = got.addresses.unwrap();
        assert_eq!(src.as_path().unwrap().to_str(), Some("/tmp/a.sk"));
        assert_eq!(dst.as_path().unwrap().to_str(), Some("/tmp/b.sk"));

        // LOCAL: the block is discarded, whatever it holds.
        let (got, n) = complete(&v2(0, 0x11, &[9; 12]));
        assert!(got.local && got.addresses.is_none());
        assert_eq!(n, 28);
        let (got, _) = complete(&v2(0, 0x00, &[]));
        assert!(got.local);
        // PROXY over UNSPEC: the real endpoints.
        assert!(complete(&v2(1, 0x00, &[])).0.addresses.is_none());
    }

    #[test]
    fn v2_malformed_and_oversized() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        let mut bad_signature = v2(1, 0x11, &[0; 12]);
        bad_signature[6] = b'X';
        for bad in [
            bad_version,
            bad_signature,
            v2(2, 0x11, &[0; 12]),
            v2(1, 0x41, &[0; 12]),
            v2(1, 0x13, &[0; 12]),
            v2(1, 0x11, &[0; 11]),
            v2(1, 0x21, &[0; 12]),
        ] {
            assert!(parse(&bad).is_err(), "accepted {bad:?}");
        }
        // Oversized is known from the fixed part, before the body arrives.
        let mut big = v2(1, 0x11, &[]);
        big[14..16].copy_from_slice(&(MAX_HEADER as u16).to_be_bytes());
        assert!(parse(&big).unwrap_err().to_string().contains("limit"));
    }
}
