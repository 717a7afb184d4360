//! A request and its handler: socketserver's `BaseRequestHandler` with
//! `setup`, `handle` and `finish`, over a stream connection or one datagram.

use std::any::Any;
use std::io::{self, BufRead, BufReader, Cursor, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

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

    /// The descriptor a forked child must keep to serve this request.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Incoming::Stream(stream, _) => stream.as_fd().as_raw_fd(),
            Incoming::Datagram { socket, .. } => socket.as_raw_fd(),
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
}

enum Io {
    Stream {
        rfile: BufReader<BlockingStream>,
        wfile: BlockingStream,
    },
    Datagram {
        rfile: Cursor<Vec<u8>>,
        wfile: Vec<u8>,
        socket: Arc<BlockingDatagram>,
    },
}

impl Request {
    fn new(incoming: Incoming, server: ServerHandle) -> io::Result<Request> {
        Ok(match incoming {
            Incoming::Stream(stream, peer) => {
                let rfile = BufReader::new(stream.try_clone()?);
                Request {
                    peer,
                    io: Io::Stream {
                        rfile,
                        wfile: stream,
                    },
                    server,
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
                Request { peer, io, server }
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
            Io::Datagram { rfile, .. } => rfile,
        }
    }

    /// Where the answer is written to.
    pub fn wfile(&mut self) -> &mut dyn Write {
        match &mut self.io {
            Io::Stream { wfile, .. } => wfile,
            Io::Datagram { wfile, .. } => wfile,
        }
    }

    /// Both ends at once, for code that reads and writes in one expression
    /// (`io::copy(rfile, wfile)`).
    pub fn split(&mut self) -> (&mut dyn BufRead, &mut dyn Write) {
        match &mut self.io {
            Io::Stream { rfile, wfile } => (rfile, wfile),
            Io::Datagram { rfile, wfile, .. } => (rfile, wfile),
        }
    }

    /// The datagram, for a datagram request (socketserver's `request[0]`).
    pub fn packet(&self) -> Option<&[u8]> {
        match &self.io {
            Io::Stream { .. } => None,
            Io::Datagram { rfile, .. } => Some(rfile.get_ref()),
        }
    }

    /// The connection, for a stream request (socketserver's `connection`).
    pub fn connection(&self) -> Option<&BlockingStream> {
        match &self.io {
            Io::Stream { wfile, .. } => Some(wfile),
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
            Io::Datagram { wfile, socket, .. } => socket.send_to(&wfile, &self.peer),
        }
    }
}

/// Serves one request from start to end on the calling thread; returns
/// whether it went without error (a forked child's exit status).
pub(crate) fn process(incoming: Incoming, shared: &Arc<Shared>) -> bool {
    let peer = incoming.peer().clone();
    let server = ServerHandle {
        shared: shared.clone(),
    };
    let outcome = Request::new(incoming, server).and_then(|mut request| {
        log::trace!(target: "sockloop::server", "finish_request {peer}");
        let mut handler = guard(|| Ok((shared.factory)()))?;
        let handled = run_handler(&mut *handler, &mut request, &peer);
        log::trace!(target: "sockloop::server", "shutdown_request {peer}");
        let completed = request.complete();
        handled.and(completed)
    });
    match outcome {
        Ok(()) => true,
        Err(e) => {
            (shared.handle_error)(&peer, &e);
            false
        }
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
