//! socketserver on the reactor: TCP, UDP and Unix servers whose requests are
//! served by blocking [`RequestHandler`]s with `setup` / `handle` / `finish`,
//! one at a time, on threads, on a thread pool or in forked children.
//!
//! The reactor accepts (on every bound address at once) and never blocks on a
//! handler, except in [`Mode::Sync`], which is Python's plain `TCPServer`.
//! What socketserver users trip over is gone: the backlog is 1024, not 5;
//! `shutdown()` wakes the loop at once (no 0.5 s polling) and cannot deadlock
//! when called from a handler; finished threads are joined as they end;
//! children are reaped by the loop, never `waitpid(-1)`, and at
//! `max_children` the server stops accepting instead of blocking.
//!
//! ```
//! use std::io::{self, BufRead, Read, Write};
//! use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};
//!
//! /// Echoes one line.
//! struct EchoLine;
//!
//! impl RequestHandler for EchoLine {
//!     fn handle(&mut self, request: &mut Request) -> io::Result<()> {
//!         let mut line = Vec::new();
//!         request.rfile().read_until(b'\n', &mut line)?;
//!         request.wfile().write_all(&line)
//!     }
//! }
//!
//! // Like `ThreadingTCPServer(("127.0.0.1", 0), EchoLine)` served from a thread.
//! let server = ServerBuilder::new(Family::Tcp)
//!     .bind("127.0.0.1:0".parse()?)
//!     .mode(Mode::threading())
//!     .spawn(|| EchoLine)?;
//! let addr = server.server_address()[0].as_inet().unwrap();
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello world\n")?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?; // the server closes after the request
//! assert_eq!(reply, "hello world\n");
//! server.shutdown()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod builder;
mod fork;
mod handle;
mod request;
#[cfg(feature = "tls")]
mod tls;
mod workers;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use builder::{RunningServer, ServerBuilder};
pub use handle::ServerHandle;
pub use request::{Request, RequestHandler};
pub use workers::Mode;

use handle::{Shared, SHUTDOWN_REQUEST, UNBLOCK_WAIT};
use request::Incoming;
use workers::Workers;

use crate::process::forkserver::ForkServer;
use crate::{
    Addr, BlockingDatagram, ConnId, DatagramContext, DatagramProtocol, ListenOptions, ListenerId,
    Reactor,
};

/// The kind of socket a server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Family {
    /// TCP over IPv4 or IPv6 (`TCPServer`).
    Tcp,
    /// UDP (`UDPServer`).
    Udp,
    /// Unix stream sockets (`UnixStreamServer`).
    UnixStream,
    /// Unix datagram sockets (`UnixDatagramServer`).
    UnixDatagram,
}

impl Family {
    fn is_datagram(self) -> bool {
        matches!(self, Family::Udp | Family::UnixDatagram)
    }

    fn is_unix(self) -> bool {
        matches!(self, Family::UnixStream | Family::UnixDatagram)
    }

    /// The kind of socket this family serves.
    pub fn kind(self) -> crate::activation::SocketKind {
        use crate::activation::SocketKind;
        match self {
            Family::Tcp => SocketKind::Tcp,
            Family::Udp => SocketKind::Udp,
            Family::UnixStream => SocketKind::UnixStream,
            Family::UnixDatagram => SocketKind::UnixDatagram,
        }
    }
}

/// One socket a server serves: bound here, or inherited.
enum Bind {
    Addr(Addr),
    Inherited(crate::activation::InheritedSocket),
}

type Factory = Box<dyn Fn() -> Box<dyn RequestHandler> + Send + Sync>;
type ErrorHook = Box<dyn Fn(&Addr, &io::Error) + Send + Sync>;
type VerifyHook = Box<dyn Fn(&Addr) -> bool + Send + Sync>;
type LoopHook = Box<dyn FnMut() + Send>;

/// Hands each datagram to the server's queue of requests.
struct DatagramReceiver {
    pending: Rc<RefCell<VecDeque<Incoming>>>,
    /// Set right after binding: a handle for answering from workers.
    socket: Rc<OnceCell<Arc<BlockingDatagram>>>,
    max_packet_size: usize,
}

impl DatagramProtocol for DatagramReceiver {
    fn on_datagram(&mut self, _: &mut DatagramContext<'_>, data: &[u8], from: &Addr) {
        let Some(socket) = self.socket.get() else {
            return;
        };
        let packet = data[..data.len().min(self.max_packet_size)].to_vec();
        let incoming = Incoming::Datagram {
            packet,
            peer: from.clone(),
            socket: socket.clone(),
        };
        self.pending.borrow_mut().push_back(incoming);
    }
}

/// Pauses accepting as soon as the requests accepted fill the free room,
/// from inside the accept loop: a listener accepts up to a budget per turn,
/// and every connection past the room would sit in our descriptor table
/// instead of the kernel's backlog.
struct Gate {
    room: Cell<usize>,
    listeners: RefCell<Vec<ListenerId>>,
    paused: Cell<bool>,
}

impl Gate {
    fn set_paused(&self, reactor: &mut Reactor, paused: bool) {
        if self.paused.replace(paused) == paused {
            return;
        }
        for &id in self.listeners.borrow().iter() {
            if paused {
                reactor.pause_accepting(id);
            } else {
                reactor.resume_accepting(id);
            }
        }
    }
}

/// What `build` (or `spawn`, on the caller's thread) prepares before the
/// server's own thread binds: the shared state and, for a forking server,
/// the fork server, forked while the caller is (ideally) still alone.
pub(crate) struct Prepared {
    shared: Arc<Shared>,
    forking: Option<(Arc<ForkServer>, std::os::unix::net::UnixStream)>,
}

impl Prepared {
    pub(crate) fn new(builder: &mut ServerBuilder, factory: Factory) -> io::Result<Prepared> {
        builder.mode.check()?;
        let handle_error = std::mem::replace(&mut builder.handle_error, Box::new(|_, _| {}));
        #[allow(unused_mut)]
        let mut shared = Shared::new(factory, handle_error, builder.request_timeout);
        #[cfg(feature = "tls")]
        {
            if builder.tls.is_some() && builder.family.is_datagram() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS needs a stream family (Tcp or UnixStream), not datagrams",
                ));
            }
            shared.tls = builder.tls.clone();
            shared.tls_handshake_timeout = builder.tls_handshake_timeout;
        }
        let shared = Arc::new(shared);
        let forking = match builder.mode {
            Mode::Forking { .. } => Some(fork::start(&shared, builder.family)?),
            _ => None,
        };
        Ok(Prepared { shared, forking })
    }
}

/// A socketserver-style server: binds, accepts on the reactor, runs each
/// request's handler where its [`Mode`] says. Build one with [`ServerBuilder`].
///
/// Dropping the server closes it (`server_close`).
#[must_use = "dropping a Server closes it at once (`server_close`)"]
pub struct Server {
    family: Family,
    reactor: Reactor,
    shared: Arc<Shared>,
    workers: Workers,
    pending: Rc<RefCell<VecDeque<Incoming>>>,
    gate: Rc<Gate>,
    listeners: Vec<ListenerId>,
    datagrams: Vec<ConnId>,
    verify_request: VerifyHook,
    handle_timeout: LoopHook,
    service_actions: LoopHook,
    timeout: Option<Duration>,
    close_timeout: Duration,
    closed: bool,
}

impl Server {
    fn new(mut builder: ServerBuilder, prepared: Prepared) -> io::Result<Server> {
        let family = builder.family;
        if builder.addrs.is_empty() && builder.inherited.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to bind",
            ));
        }
        let Prepared { shared, forking } = prepared;
        let mut reactor = Reactor::new()?;
        let pending = Rc::new(RefCell::new(VecDeque::new()));
        let gate = Rc::new(Gate {
            room: Cell::new(usize::MAX),
            listeners: RefCell::new(Vec::new()),
            paused: Cell::new(false),
        });
        let opts = ListenOptions {
            backlog: builder.request_queue_size,
            reuse_address: builder.allow_reuse_address,
            reuse_port: builder.allow_reuse_port && !family.is_unix(),
            proxy_protocol: builder.proxy_protocol,
            ..ListenOptions::default()
        };
        let (mut listeners, mut datagrams, mut addrs) = (Vec::new(), Vec::new(), Vec::new());
        let binds = builder.addrs.iter().cloned().map(Bind::Addr);
        let inherited = std::mem::take(&mut builder.inherited);
        for bind in binds.chain(inherited.into_iter().map(Bind::Inherited)) {
            match &bind {
                Bind::Addr(addr) if addr.is_unix() != family.is_unix() => {
                    let msg = format!("{addr} is not an address for a {family:?} server");
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
                }
                Bind::Inherited(sock) if family.kind() != sock.kind() => {
                    let msg = format!(
                        "inherited {sock} is a {:?} socket, not one for a {family:?} server",
                        sock.kind()
                    );
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
                }
                Bind::Addr(addr) => log::trace!(target: "sockloop::server", "server_bind {addr}"),
                Bind::Inherited(sock) => {
                    log::trace!(target: "sockloop::server", "server_bind inherited {sock}")
                }
            }
            let bound = if family.is_datagram() {
                let socket = Rc::new(OnceCell::new());
                let receiver = DatagramReceiver {
                    pending: pending.clone(),
                    socket: socket.clone(),
                    max_packet_size: builder.max_packet_size,
                };
                let id = match bind {
                    Bind::Addr(addr) => reactor.bind_datagram_with(&addr, &opts, receiver)?,
                    Bind::Inherited(sock) => {
                        reactor.bind_datagram_inherited(sock, &opts, receiver)?
                    }
                };
                let _ = socket.set(Arc::new(reactor.try_clone_datagram(id)?));
                datagrams.push(id);
                reactor.local_addr(id)?
            } else {
                let (queue, room) = (pending.clone(), gate.clone());
                let accept = move |reactor: &mut Reactor, stream, peer| {
                    let mut queue = queue.borrow_mut();
                    queue.push_back(Incoming::Stream(stream, peer));
                    if queue.len() >= room.room.get() {
                        room.set_paused(reactor, true);
                    }
                };
                let id = match bind {
                    Bind::Addr(addr) => reactor.listen_accept(&addr, &opts, accept)?,
                    Bind::Inherited(sock) => {
                        reactor.listen_accept_inherited(sock, &opts, accept)?
                    }
                };
                listeners.push(id);
                gate.listeners.borrow_mut().push(id);
                reactor.listener_addr(id)?
            };
            log::trace!(target: "sockloop::server", "server_activate {bound}");
            addrs.push(bound);
        }
        let _ = shared.reactor.set(reactor.handle());
        let children = match (forking, &builder.mode) {
            (
                Some((forks, reports)),
                &Mode::Forking {
                    max_children,
                    block_on_close,
                    ..
                },
            ) => {
                forks.configure(&request::encode_addrs(&addrs))?;
                let _ = shared.forks.set(forks.clone());
                let link = (forks, reports);
                let children =
                    fork::Children::new(&mut reactor, link, &shared, max_children, block_on_close)?;
                Some(children)
            }
            _ => None,
        };
        let _ = shared.addrs.set(addrs);
        let workers = Workers::new(&builder.mode, &shared, children);
        let server = Server {
            family,
            reactor,
            shared,
            workers,
            pending,
            gate,
            listeners,
            datagrams,
            verify_request: builder.verify_request,
            handle_timeout: builder.handle_timeout,
            service_actions: builder.service_actions,
            timeout: builder.timeout,
            close_timeout: builder.close_timeout,
            closed: false,
        };
        server.gate.room.set(server.workers.room());
        Ok(server)
    }

    /// The kind of socket served.
    pub fn family(&self) -> Family {
        self.family
    }

    /// A handle for other threads (and handlers) to shut the server down.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The bound addresses, with the real ports when 0 was asked.
    pub fn server_address(&self) -> &[Addr] {
        self.shared.addrs.get().map_or(&[], |a| a.as_slice())
    }

    /// Requests still running on threads (daemon or not), in the pool or in
    /// children.
    pub fn active_requests(&self) -> usize {
        self.workers.running()
    }

    /// Serves until [`ServerHandle::shutdown`] (or `shutdown_graceful`).
    /// The loop sleeps until a client, a finished worker or the shutdown
    /// wakes it: no polling.
    pub fn serve_forever(&mut self) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the server is closed",
            ));
        }
        {
            let mut state = self.shared.lock();
            if std::mem::take(&mut state.shutdown_requested) {
                self.shared.changed.notify_all();
                return Ok(()); // shut down before it started
            }
            state.serving = Some(thread::current().id());
        }
        let result = self.serve_until_shutdown();
        let mut state = self.shared.lock();
        state.serving = None;
        state.shutdown_requested = false;
        self.shared.changed.notify_all();
        result
    }

    fn serve_until_shutdown(&mut self) -> io::Result<()> {
        loop {
            if self.shared.lock().shutdown_requested {
                return Ok(());
            }
            self.reactor.run_once(None)?;
            self.workers.collect();
            self.dispatch(usize::MAX);
            (self.service_actions)();
            if let Some(why) = self.workers.broken() {
                // Serving on would refuse every client while looking
                // healthy: fail, so that a supervisor restarts us.
                log::error!("{why}: the server cannot serve any more requests");
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("{why}: no request can be forked"),
                ));
            }
        }
    }

    /// Serves one request, waiting at most `timeout` for it; after that,
    /// calls `handle_timeout` instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::server::{Family, Request, ServerBuilder};
    ///
    /// let mut server = ServerBuilder::new(Family::Tcp)
    ///     .bind("127.0.0.1:0".parse()?)
    ///     .timeout(Some(Duration::from_millis(10)))
    ///     .handle_timeout(|| println!("nobody came"))
    ///     .build(|| |_: &mut Request| Ok(()))?;
    /// server.handle_request()?; // no client: returns after 10 ms
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_request(&mut self) -> io::Result<()> {
        // A timeout past the end of time means no timeout.
        let deadline = self.timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            self.workers.collect();
            let started = self.dispatch(1);
            if started > 0 {
                return Ok(());
            }
            let wait = match deadline {
                None if self.timeout.is_some() => Some(Duration::from_secs(3600)),
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        (self.handle_timeout)();
                        return Ok(());
                    }
                },
            };
            self.reactor.run_once(wait)?;
        }
    }

    /// Starts up to `limit` waiting requests while there is room; pauses
    /// accepting when requests must wait, resumes when they need not.
    fn dispatch(&mut self, limit: usize) -> usize {
        let mut started = 0;
        while started < limit && self.workers.room() > 0 {
            let Some(incoming) = self.pending.borrow_mut().pop_front() else {
                break;
            };
            started += 1;
            let peer = incoming.peer().clone();
            log::trace!(target: "sockloop::server", "verify_request {peer}");
            let verified = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (self.verify_request)(&peer)
            }));
            if !verified.unwrap_or(false) {
                log::info!("request from {peer} refused by verify_request");
                incoming.refuse();
                continue;
            }
            log::trace!(target: "sockloop::server", "process_request {peer}");
            self.workers.dispatch(incoming, &self.shared);
        }
        // Accept only what can start: the rest waits in the kernel's backlog.
        let room = self.workers.room();
        self.gate.room.set(room);
        let waiting = self.pending.borrow().len();
        self.set_paused(waiting >= room);
        started
    }

    fn set_paused(&mut self, paused: bool) {
        if self.gate.paused.get() == paused {
            return; // resuming a reader puts it on the ready list: only on a change
        }
        self.gate.set_paused(&mut self.reactor, paused);
        for &id in &self.datagrams {
            self.reactor.set_datagram_reading(id, !paused);
        }
    }

    /// Closes the listening sockets (removing Unix socket files), refuses
    /// requests not yet started, then waits for running threads or children
    /// as `block_on_close` says, but never forever: until the deadline of a
    /// [`ServerHandle::shutdown_graceful`], else for at most `close_timeout`
    /// (default 30 s). Past it the requests are unblocked (their sockets
    /// shut down, children sent SIGTERM, then SIGKILL 2 s later) and threads
    /// that still do not end are left behind (logged). Idempotent; also done
    /// on drop.
    pub fn server_close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        log::trace!(target: "sockloop::server", "server_close");
        for id in self.listeners.drain(..) {
            self.reactor.close_listener(id);
        }
        for id in self.datagrams.drain(..) {
            self.reactor.close(id);
        }
        for incoming in self.pending.borrow_mut().drain(..) {
            incoming.refuse();
        }
        let graceful = self.shared.lock().deadline.is_some();
        if graceful || self.workers.blocks_on_close() {
            self.drain();
        }
        self.workers.close();
        if let Some(forks) = self.shared.forks.get() {
            // Not left to the last handle's drop (a signal thread may hold
            // one for the program's life): the program reaps what it forked.
            forks.end();
        }
    }

    /// Waits for running requests until the deadline, then unblocks them and
    /// waits a little more; bounded whatever the requests do.
    fn drain(&mut self) {
        let fallback = Instant::now().checked_add(self.close_timeout);
        let mut unblocked_at: Option<Instant> = None;
        let mut killed = false;
        loop {
            self.workers.collect();
            let running = self.workers.running();
            if running == 0 {
                return;
            }
            let now = Instant::now();
            let deadline = self.shared.lock().deadline.or(fallback);
            let next = match unblocked_at {
                None if deadline.is_some_and(|d| now >= d) => {
                    self.shared.unblock();
                    unblocked_at = Some(now);
                    continue;
                }
                None => deadline,
                Some(at) if now >= at + UNBLOCK_WAIT && !killed => {
                    if let Some(forks) = self.shared.forks.get() {
                        log::warn!("children still running after SIGTERM: SIGKILL");
                        forks.signal_all(libc::SIGKILL);
                    }
                    killed = true;
                    continue;
                }
                Some(at) if now >= at + 2 * UNBLOCK_WAIT => {
                    log::warn!(
                        "{running} request(s) did not end when unblocked; not waiting for them"
                    );
                    return;
                }
                Some(at) if killed => Some(at + 2 * UNBLOCK_WAIT),
                Some(at) => Some(at + UNBLOCK_WAIT),
            };
            let wait = next.map(|n| {
                n.saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            });
            if self.reactor.run_once(wait).is_err() {
                return;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server_close();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("family", &self.family)
            .field("server_address", &self.server_address())
            .field("active_requests", &self.active_requests())
            .field("pending", &self.pending.borrow().len())
            .field("timeout", &self.timeout)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}
