//! A request and its handler: socketserver's `BaseRequestHandler` with
//! `setup`, `handle` and `finish`, over a stream connection or one datagram.

use std::any::Any;
use std::io::{self, BufRead, BufReader, Cursor, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Addr, BlockingDatagram, BlockingStream};

use super::{ServerHandle, Shared};

/// Serves one request with blocking calls, like a Python
/// `StreamRequestHandler` / `DatagramRequestHandler`.
///
/// A new handler is made for every request (by the factory given to
/// [`ServerBuilder::build`](super::ServerBuilder::build)). `setup` runs
/// first; if it succeeds, `handle` runs, then `finish` runs whatever `handle`
/// did. An error or a panic in any of them goes to the server's
/// `handle_error` hook with the client's address; the server goes on.
///
/// ```
/// use std::io::{self, BufRead, Write};
/// use sockloop::server::{Request, RequestHandler};
///
/// /// Answers one line in upper case (the classic `MyTCPHandler`).
/// struct Upper;
///
/// impl RequestHandler for Upper {
///     fn handle(&mut self, request: &mut Request) -> io::Result<()> {
///         let mut line = String::new();
///         request.rfile().read_line(&mut line)?;
///         request.wfile().write_all(line.to_uppercase().as_bytes())
///     }
/// }
/// ```
pub trait RequestHandler: Send + 'static {
    /// Runs before `handle` (set a timeout, turn off Nagle...).
    fn setup(&mut self, request: &mut Request) -> io::Result<()> {
        let _ = request;
        Ok(())
    }

    /// Serves the request.
    fn handle(&mut self, request: &mut Request) -> io::Result<()>;

    /// Runs after `handle`, even when it failed.
    fn finish(&mut self, request: &mut Request) -> io::Result<()> {
        let _ = request;
        Ok(())
    }
}

/// A closure is a handler with only `handle`, for servers that need no
/// `setup` or `finish`: `builder.build(|| |request: &mut Request| ...)`.
impl<F> RequestHandler for F
where
    F: FnMut(&mut Request) -> io::Result<()> + Send + 'static,
{
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        self(request)
    }
}

/// What a server hands a worker: one connection or one datagram.
pub(crate) enum Incoming {
    Stream(BlockingStream, Addr),
    Datagram {
        packet: Vec<u8>,
        peer: Addr,
        socket: Arc<BlockingDatagram>,
    },
}

impl Incoming {
    pub(crate) fn peer(&self) -> &Addr {
        match self {
            Incoming::Stream(_, peer) | Incoming::Datagram { peer, .. } => peer,
        }
    }

    /// socketserver's `shutdown_request` for a request never handled: the
    /// client sees end-of-stream at once.
    pub(crate) fn refuse(self) {
        if let Incoming::Stream(stream, _) = self {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }
}

/// One request, as its handler sees it: the client's address, `rfile` to
/// read from and `wfile` to write to.
///
/// For a stream, `rfile` is buffered and `wfile` is not: a write reaches the
/// client at once, without a flush (as socketserver's `wfile`). For a
/// datagram, `rfile` reads the packet and what is written to `wfile` is sent
/// back as one datagram after `finish` (also when nothing was written: an
/// empty datagram, as Python does).
pub struct Request {
    peer: Addr,
    io: Io,
    server: ServerHandle,
    /// How long a datagram's answer may wait for room.
    reply_wait: Duration,
}

/// The longest a datagram's answer waits for room in a peer's full queue.
const MAX_REPLY_WAIT: Duration = Duration::from_secs(1);

enum Io {
    Stream {
        rfile: BufReader<BlockingStream>,
        wfile: BlockingStream,
    },
    /// A stream request over TLS: both ends share one session; `socket` is
    /// the connection under it.
    #[cfg(feature = "tls")]
    Tls {
        rfile: BufReader<super::tls::TlsStream>,
        wfile: super::tls::TlsStream,
        socket: BlockingStream,
    },
    Datagram {
        rfile: Cursor<Vec<u8>>,
        wfile: Vec<u8>,
        socket: Arc<BlockingDatagram>,
    },
}

impl Request {
    fn new(incoming: Incoming, server: ServerHandle) -> io::Result<Request> {
        let timeout = server.shared.request_timeout;
        let reply_wait = timeout.map_or(MAX_REPLY_WAIT, |t| t.min(MAX_REPLY_WAIT));
        Ok(match incoming {
            Incoming::Stream(stream, peer) => {
                #[cfg(feature = "tls")]
                if let Some(config) = &server.shared.tls {
                    let socket = stream.try_clone()?;
                    let limit = server.shared.tls_handshake_timeout;
                    let wfile = super::tls::accept(config, stream, limit, timeout)?;
                    return Ok(Request {
                        peer,
                        io: Io::Tls {
                            rfile: BufReader::new(wfile.clone_end()),
                            wfile,
                            socket,
                        },
                        server,
                        reply_wait,
                    });
                }
                if timeout.is_some() {
                    stream.set_timeout(timeout)?;
                }
                let rfile = BufReader::new(stream.try_clone()?);
                Request {
                    peer,
                    io: Io::Stream {
                        rfile,
                        wfile: stream,
                    },
                    server,
                    reply_wait,
                }
            }
            Incoming::Datagram {
                packet,
                peer,
                socket,
            } => {
                let io = Io::Datagram {
                    rfile: Cursor::new(packet),
                    wfile: Vec::new(),
                    socket,
                };
                Request {
                    peer,
                    io,
                    server,
                    reply_wait,
                }
            }
        })
    }

    /// The client's address (socketserver's `client_address`).
    pub fn client_address(&self) -> &Addr {
        &self.peer
    }

    /// Where the request's bytes are read from.
    pub fn rfile(&mut self) -> &mut dyn BufRead {
        match &mut self.io {
            Io::Stream { rfile, .. } => rfile,
            #[cfg(feature = "tls")]
            Io::Tls { rfile, .. } => rfile,
            Io::Datagram { rfile, .. } => rfile,
        }
    }

    /// Where the answer is written to.
    pub fn wfile(&mut self) -> &mut dyn Write {
        match &mut self.io {
            Io::Stream { wfile, .. } => wfile,
            #[cfg(feature = "tls")]
            Io::Tls { wfile, .. } => wfile,
            Io::Datagram { wfile, .. } => wfile,
        }
    }

    /// Both ends at once, for code that reads and writes in one expression
    /// (`io::copy(rfile, wfile)`).
    pub fn split(&mut self) -> (&mut dyn BufRead, &mut dyn Write) {
        match &mut self.io {
            Io::Stream { rfile, wfile } => (rfile, wfile),
            #[cfg(feature = "tls")]
            Io::Tls { rfile, wfile, .. } => (rfile, wfile),
            Io::Datagram { rfile, wfile, .. } => (rfile, wfile),
        }
    }

    /// The datagram, for a datagram request (socketserver's `request[0]`).
    pub fn packet(&self) -> Option<&[u8]> {
        match &self.io {
            Io::Datagram { rfile, .. } => Some(rfile.get_ref()),
            _ => None,
        }
    }

    /// The connection, for a stream request (socketserver's `connection`).
    pub fn connection(&self) -> Option<&BlockingStream> {
        match &self.io {
            Io::Stream { wfile, .. } => Some(wfile),
            #[cfg(feature = "tls")]
            Io::Tls { socket, .. } => Some(socket),
            Io::Datagram { .. } => None,
        }
    }

    /// Read and write timeout for a stream request (`StreamRequestHandler.timeout`);
    /// a datagram request never waits, so this does nothing there.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.connection().map_or(Ok(()), |c| c.set_timeout(timeout))
    }

    /// `TCP_NODELAY` (`StreamRequestHandler.disable_nagle_algorithm`).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.connection().map_or(Ok(()), |c| c.set_nodelay(on))
    }

    /// The server, to shut it down from a handler (`self.server.shutdown()`).
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The end of a request: a stream is shut down for writing (the client
    /// sees end-of-stream) and closed; a datagram's answer is sent.
    fn complete(self) -> io::Result<()> {
        match self.io {
            Io::Stream { wfile, .. } => {
                let _ = wfile.shutdown(Shutdown::Write); // the peer may be gone already
                Ok(())
            }
            #[cfg(feature = "tls")]
            Io::Tls { wfile, socket, .. } => {
                wfile.close_notify();
                let _ = socket.shutdown(Shutdown::Write);
                Ok(())
            }
            Io::Datagram { wfile, socket, .. } => {
                // A peer whose last answer found its queue full gets one try,
                // no wait: its answers must not hold up everyone else's.
                let shared = &self.server.shared;
                let deaf = shared.is_deaf(&self.peer);
                let wait = if deaf {
                    Duration::ZERO
                } else {
                    self.reply_wait
                };
                match socket.send_to_within(&wfile, &self.peer, wait) {
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        // Datagrams are lossy: the peer is not reading.
                        if deaf {
                            log::debug!("answer to {} dropped: its queue is full", self.peer);
                        } else {
                            log::warn!(
                                "answer to {} dropped: its queue stayed full for {wait:?}; \
                                 its next answers are dropped without waiting while it is full",
                                self.peer
                            );
                        }
                        shared.set_deaf(&self.peer, true);
                        Ok(())
                    }
                    sent => {
                        if deaf && sent.is_ok() {
                            shared.set_deaf(&self.peer, false);
                        }
                        sent
                    }
                }
            }
        }
    }
}

/// Serves one request from start to end on the calling thread; returns
/// whether it went without error (a forked child's exit status). A panic in
/// `handle_error` itself is caught and logged.
pub(crate) fn process(incoming: Incoming, shared: &Arc<Shared>) -> bool {
    let peer = incoming.peer().clone();
    let fd = match &incoming {
        Incoming::Stream(stream, _) => Some(stream.as_fd().as_raw_fd()),
        Incoming::Datagram { .. } => None,
    };
    // Listed while it runs, for a shutdown to unblock; refused once one did.
    let Some(id) = shared.enter(fd) else {
        incoming.refuse();
        return false;
    };
    let server = ServerHandle {
        shared: shared.clone(),
    };
    let started = Instant::now();
    let outcome = Request::new(incoming, server).and_then(|mut request| {
        log::trace!(target: "sockloop::server", "finish_request {peer}");
        let handled = guard(|| Ok((shared.factory)()))
            .and_then(|mut handler| run_handler(&mut *handler, &mut request, &peer));
        log::trace!(target: "sockloop::server", "shutdown_request {peer}");
        shared.leave(id);
        let completed = request.complete(); // closes the socket
        log::trace!(target: "sockloop::server", "close_request {peer}");
        handled.and(completed)
    });
    shared.leave(id);
    let outcome = outcome.map_err(|e| timed_out(e, shared.request_timeout, started));
    match outcome {
        Ok(()) => true,
        Err(e) => {
            let reported =
                panic::catch_unwind(AssertUnwindSafe(|| (shared.handle_error)(&peer, &e)));
            if let Err(panic) = reported {
                log::error!(
                    "handle_error panicked on the error of {peer} ({e}): {}",
                    message(&*panic)
                );
            }
            false
        }
    }
}

/// A read or write past the request timeout fails with `WouldBlock` (the
/// socket's own timeout): said plainly for `handle_error`.
fn timed_out(e: io::Error, timeout: Option<Duration>, started: Instant) -> io::Error {
    match timeout {
        Some(t) if e.kind() == io::ErrorKind::WouldBlock => io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "request timed out: no progress for {t:?} ({:.1} s into the request)",
                started.elapsed().as_secs_f64()
            ),
        ),
        _ => e,
    }
}

/// `setup(); try: handle() finally: finish()`, with panics as errors.
fn run_handler(
    handler: &mut dyn RequestHandler,
    request: &mut Request,
    peer: &Addr,
) -> io::Result<()> {
    log::trace!(target: "sockloop::server", "setup {peer}");
    guard(|| handler.setup(request))?;
    log::trace!(target: "sockloop::server", "handle {peer}");
    let handled = guard(|| handler.handle(request));
    log::trace!(target: "sockloop::server", "finish {peer}");
    let finished = guard(|| handler.finish(request));
    handled.and(finished)
}

fn guard<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(io::Error::other(format!(
            "handler panicked: {}",
            message(&*panic)
        )))
    })
}

fn message(panic: &(dyn Any + Send)) -> String {
    crate::reactor::panic_message(panic)
}

/// The bound addresses, for a forked child's `server_address()`.
pub(crate) fn encode_addrs(addrs: &[Addr]) -> Vec<u8> {
    let mut out = Vec::new();
    for addr in addrs {
        encode_addr(addr, &mut out);
    }
    out
}

pub(crate) fn decode_addrs(mut data: &[u8]) -> Vec<Addr> {
    let mut addrs = Vec::new();
    while let Some((addr, rest)) = decode_addr(data) {
        addrs.push(addr);
        data = rest;
    }
    addrs
}

/// What a forked child needs besides the socket: the kind of request, the
/// peer and, for a datagram, the packet.
pub(crate) fn encode_incoming(incoming: &Incoming) -> Vec<u8> {
    let mut out = Vec::new();
    match incoming {
        Incoming::Stream(_, peer) => {
            out.push(0);
            encode_addr(peer, &mut out);
        }
        Incoming::Datagram { packet, peer, .. } => {
            out.push(1);
            encode_addr(peer, &mut out);
            out.extend_from_slice(packet);
        }
    }
    out
}

pub(crate) fn decode_incoming(
    family: super::Family,
    fds: Vec<OwnedFd>,
    data: &[u8],
) -> Option<Incoming> {
    let fd = fds.into_iter().next()?;
    let (&kind, rest) = data.split_first()?;
    let (peer, packet) = decode_addr(rest)?;
    use super::Family::*;
    Some(match (kind, family) {
        (0, Tcp) => Incoming::Stream(BlockingStream::Tcp(fd.into()), peer),
        (0, UnixStream) => Incoming::Stream(BlockingStream::Unix(fd.into()), peer),
        (1, Udp) => Incoming::Datagram {
            packet: packet.to_vec(),
            peer,
            socket: Arc::new(BlockingDatagram::Udp(fd.into())),
        },
        (1, UnixDatagram) => Incoming::Datagram {
            packet: packet.to_vec(),
            peer,
            socket: Arc::new(BlockingDatagram::Unix(fd.into())),
        },
        _ => return None,
    })
}

fn encode_addr(addr: &Addr, out: &mut Vec<u8>) {
    let (tag, bytes): (u8, &[u8]) = match addr {
        Addr::Inet(_) => (0, &[]),
        Addr::Unix(_) => match addr.as_path() {
            Some(path) => (1, path.as_os_str().as_bytes()),
            None => (2, &[]),
        },
    };
    let text = addr.as_inet().map(|a| a.to_string());
    let bytes = text.as_deref().map_or(bytes, str::as_bytes);
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
    out.extend_from_slice(bytes);
}

fn decode_addr(data: &[u8]) -> Option<(Addr, &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let len = u32::from_ne_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let bytes = rest.get(4..4 + len)?;
    let rest = &rest[4 + len..];
    let addr = match tag {
        0 => Addr::Inet(std::str::from_utf8(bytes).ok()?.parse().ok()?),
        1 => Addr::unix(std::ffi::OsStr::from_bytes(bytes)).ok()?,
        // An unnamed Unix peer: any unnamed address stands for it.
        _ => Addr::Unix(
            std::os::unix::net::UnixDatagram::unbound()
                .ok()?
                .local_addr()
                .ok()?,
        ),
    };
    Some((addr, rest))
}

/// The peer and the kind of request; not the bytes.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.io {
            Io::Stream { .. } => "stream",
            #[cfg(feature = "tls")]
            Io::Tls { .. } => "tls stream",
            Io::Datagram { .. } => "datagram",
        };
        f.debug_struct("Request")
            .field("peer", &self.peer)
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
