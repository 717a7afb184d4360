//! TLS for blocking request handlers (feature `tls`, [`ServerBuilder::tls`]):
//! the handshake runs in the worker (thread, forked child or pool thread)
//! before `setup`, bounded by [`ServerBuilder::tls_handshake_timeout`];
//! `rfile` and `wfile` then read and write plaintext through one rustls
//! session, and the end of the request sends close_notify before the FIN.
//!
//! [`ServerBuilder::tls`]: super::ServerBuilder::tls
//! [`ServerBuilder::tls_handshake_timeout`]: super::ServerBuilder::tls_handshake_timeout

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::BlockingStream;

type Session = rustls::StreamOwned<rustls::ServerConnection, BlockingStream>;

/// One end of a request's TLS session (`rfile` reads through one, `wfile`
/// writes through the other; they share the session).
pub(crate) struct TlsStream(Arc<Mutex<Session>>);

impl TlsStream {
    fn session(&self) -> MutexGuard<'_, Session> {
        // A handler that panicked mid-write poisons nothing we rely on.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The other end.
    pub(crate) fn clone_end(&self) -> TlsStream {
        TlsStream(Arc::clone(&self.0))
    }

    /// Sends close_notify (the client reads a clean end of stream).
    pub(crate) fn close_notify(&self) {
        let mut s = self.session();
        s.conn.send_close_notify();
        let Session { conn, sock } = &mut *s;
        while conn.wants_write() {
            if conn.write_tls(sock).is_err() {
                break; // the peer may be gone already
            }
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.session().read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.session().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.session().flush()
    }
}

/// Does the server side of the handshake on `stream` within `limit`, then
/// puts back the request's own timeout.
pub(crate) fn accept(
    config: &Arc<rustls::ServerConfig>,
    stream: BlockingStream,
    limit: Duration,
    request_timeout: Option<Duration>,
) -> io::Result<TlsStream> {
    let mut conn =
        rustls::ServerConnection::new(Arc::clone(config)).map_err(crate::net::tls::tls_error)?;
    let mut sock = stream;
    // A deadline, not a per-read timeout: a client that drips its
    // handshake a byte at a time must not hold the worker past `limit`.
    let mut io = Deadlined {
        sock: &mut sock,
        deadline: Instant::now() + limit,
    };
    while conn.is_handshaking() {
        match conn.complete_io(&mut io) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake not done within {limit:?}"),
                ));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("TLS handshake failed: {e}"),
                ))
            }
        }
    }
    sock.set_timeout(request_timeout)?;
    Ok(TlsStream(Arc::new(Mutex::new(rustls::StreamOwned::new(
        conn, sock,
    )))))
}

/// The socket during the handshake: each read and write may block only
/// until `deadline`, and fails with `TimedOut` after it.
struct Deadlined<'a> {
    sock: &'a mut BlockingStream,
    deadline: Instant,
}

impl Deadlined<'_> {
    /// Bounds the coming read (or write) by what is left of the deadline:
    /// one `setsockopt`, for the direction about to block.
    fn arm(&mut self, read: bool) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let left = Some(left);
        match (&*self.sock, read) {
            (BlockingStream::Tcp(s), true) => s.set_read_timeout(left),
            (BlockingStream::Tcp(s), false) => s.set_write_timeout(left),
            (BlockingStream::Unix(s), true) => s.set_read_timeout(left),
            (BlockingStream::Unix(s), false) => s.set_write_timeout(left),
        }
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(true)?;
        self.sock.read(buf)
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(false)?;
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}
