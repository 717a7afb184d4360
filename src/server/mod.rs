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
mod request;
mod workers;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

pub use builder::{RunningServer, ServerBuilder};
pub use request::{Request, RequestHandler};
pub use workers::Mode;

use request::Incoming;
use workers::Workers;

use crate::{
    Addr, BlockingDatagram, ConnId, DatagramContext, DatagramProtocol, Handle, ListenOptions,
    ListenerId, Reactor,
};

/// The kind of socket a server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

type Factory = Box<dyn Fn() -> Box<dyn RequestHandler> + Send + Sync>;
type ErrorHook = Box<dyn Fn(&Addr, &io::Error) + Send + Sync>;
type VerifyHook = Box<dyn Fn(&Addr) -> bool + Send + Sync>;
type LoopHook = Box<dyn FnMut() + Send>;

/// What the serving thread, workers, children and handles share.
pub(crate) struct Shared {
    pub(crate) factory: Factory,
    pub(crate) handle_error: ErrorHook,
    addrs: Vec<Addr>,
    reactor: Handle,
    state: Mutex<ServeState>,
    changed: Condvar,
}

#[derive(Default)]
struct ServeState {
    /// The thread inside `serve_forever`, if any.
    serving: Option<ThreadId>,
    shutdown_requested: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ServeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cloneable, `Send` handle to a [`Server`]: shut it down from any thread,
/// including from one of its own handlers.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Stops `serve_forever` and returns once it has returned.
    ///
    /// Called on the serving thread itself (from a `Sync` handler or a hook),
    /// it only requests the stop and returns, instead of deadlocking as
    /// Python's does. Called when the server is not serving, it makes the
    /// next `serve_forever` return at once.
    ///
    /// ```
    /// use sockloop::server::{Family, Request, ServerBuilder};
    ///
    /// let mut server = ServerBuilder::new(Family::Tcp)
    ///     .bind("127.0.0.1:0".parse()?)
    ///     .build(|| |_: &mut Request| Ok(()))?;
    /// let handle = server.handle();
    /// std::thread::spawn(move || handle.shutdown());
    /// server.serve_forever()?; // returns once the other thread asked
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(&self) {
        let mut state = self.shared.lock();
        state.shutdown_requested = true;
        self.shared.reactor.stop();
        let me = thread::current().id();
        while state.serving.is_some_and(|t| t != me) && state.shutdown_requested {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The bound addresses, with the real ports when 0 was asked
    /// (`server_address`).
    pub fn server_address(&self) -> &[Addr] {
        &self.shared.addrs
    }
}

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

/// How finished children are noticed.
enum Reaping {
    /// Threads and pools report themselves; nothing to do.
    Reports,
    /// A SIGCHLD arrived since the last sweep.
    Signal(Rc<Cell<bool>>),
    /// Sweep every turn; a timer (armed while children run) wakes the loop.
    Sweep(Rc<Cell<bool>>),
}

/// A socketserver-style server: binds, accepts on the reactor, runs each
/// request's handler where its [`Mode`] says. Build one with [`ServerBuilder`].
///
/// Dropping the server closes it (`server_close`).
pub struct Server {
    family: Family,
    reactor: Reactor,
    shared: Arc<Shared>,
    workers: Workers,
    pending: Rc<RefCell<VecDeque<Incoming>>>,
    listeners: Vec<ListenerId>,
    datagrams: Vec<ConnId>,
    verify_request: VerifyHook,
    handle_timeout: LoopHook,
    service_actions: LoopHook,
    timeout: Option<Duration>,
    reaping: Reaping,
    /// Accepting is paused: requests wait for room.
    paused: bool,
    closed: bool,
}

impl Server {
    fn new(builder: ServerBuilder, factory: Factory) -> io::Result<Server> {
        let family = builder.family;
        if builder.addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to bind",
            ));
        }
        let mut reactor = Reactor::new()?;
        let pending = Rc::new(RefCell::new(VecDeque::new()));
        let opts = ListenOptions {
            backlog: builder.request_queue_size,
            reuse_address: builder.allow_reuse_address,
            reuse_port: builder.allow_reuse_port && !family.is_unix(),
            ..ListenOptions::default()
        };
        let (mut listeners, mut datagrams, mut addrs) = (Vec::new(), Vec::new(), Vec::new());
        for addr in &builder.addrs {
            if addr.is_unix() != family.is_unix() {
                let msg = format!("{addr} is not an address for a {family:?} server");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
            }
            log::trace!(target: "sockloop::server", "server_bind {addr}");
            let bound = if family.is_datagram() {
                let socket = Rc::new(OnceCell::new());
                let receiver = DatagramReceiver {
                    pending: pending.clone(),
                    socket: socket.clone(),
                    max_packet_size: builder.max_packet_size,
                };
                let id = reactor.bind_datagram_with(addr, &opts, receiver)?;
                let _ = socket.set(Arc::new(reactor.try_clone_datagram(id)?));
                datagrams.push(id);
                reactor.local_addr(id)?
            } else {
                let queue = pending.clone();
                let id = reactor.listen_accept(addr, &opts, move |_, stream, peer| {
                    queue.borrow_mut().push_back(Incoming::Stream(stream, peer));
                })?;
                listeners.push(id);
                reactor.listener_addr(id)?
            };
            log::trace!(target: "sockloop::server", "server_activate {bound}");
            addrs.push(bound);
        }
        let shared = Arc::new(Shared {
            factory,
            handle_error: builder.handle_error,
            addrs,
            reactor: reactor.handle(),
            state: Mutex::new(ServeState::default()),
            changed: Condvar::new(),
        });
        let reaping = match builder.mode {
            Mode::Forking {
                reap_on_sigchld: true,
                ..
            } => {
                let flag = Rc::new(Cell::new(false));
                let seen = flag.clone();
                reactor.on_signal(&[signal_hook::consts::SIGCHLD], move |_, _| seen.set(true))?;
                Reaping::Signal(flag)
            }
            Mode::Forking { .. } => Reaping::Sweep(Rc::new(Cell::new(false))),
            _ => Reaping::Reports,
        };
        let workers = Workers::new(&builder.mode, &shared);
        Ok(Server {
            family,
            reactor,
            shared,
            workers,
            pending,
            listeners,
            datagrams,
            verify_request: builder.verify_request,
            handle_timeout: builder.handle_timeout,
            service_actions: builder.service_actions,
            timeout: builder.timeout,
            reaping,
            paused: false,
            closed: false,
        })
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
        &self.shared.addrs
    }

    /// Requests still running on threads, in the pool or in children (for a
    /// threading server: the threads tracked for `block_on_close`).
    pub fn active_requests(&self) -> usize {
        self.workers.running()
    }

    /// Serves until [`ServerHandle::shutdown`]. The loop sleeps until a
    /// client, a finished worker or the shutdown wakes it: no polling.
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
            self.reactor.run_once(None)?;
            self.collect();
            self.dispatch(usize::MAX);
            self.arm_sweep();
            (self.service_actions)();
            if self.shared.lock().shutdown_requested {
                return Ok(());
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
            self.collect();
            let started = self.dispatch(1);
            self.arm_sweep();
            if started > 0 {
                return Ok(());
            }
            let wait = match deadline {
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

    /// Notes finished requests, so their room can be used again.
    fn collect(&mut self) {
        match &self.reaping {
            Reaping::Reports | Reaping::Sweep(_) => self.workers.collect(),
            Reaping::Signal(arrived) => {
                if arrived.replace(false) {
                    self.workers.collect();
                }
            }
        }
    }

    /// Without SIGCHLD nothing wakes the loop when a child exits: while
    /// children run, a timer does, so that none stays a zombie for long.
    fn arm_sweep(&mut self) {
        if let Reaping::Sweep(armed) = &self.reaping {
            if self.workers.running() > 0 && !armed.replace(true) {
                let armed = armed.clone();
                self.reactor
                    .call_later(Duration::from_millis(100), move |_| armed.set(false));
            }
        }
    }

    /// Starts up to `limit` waiting requests while there is room; pauses
    /// accepting when requests must wait, resumes when they need not.
    fn dispatch(&mut self, limit: usize) -> usize {
        let mut started = 0;
        while started < limit && self.workers.has_room() {
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
        let waiting = !self.pending.borrow().is_empty();
        self.set_paused(waiting);
        started
    }

    fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        for &id in &self.listeners {
            if paused {
                self.reactor.pause_accepting(id);
            } else {
                self.reactor.resume_accepting(id);
            }
        }
        for &id in &self.datagrams {
            self.reactor.set_datagram_reading(id, !paused);
        }
    }

    /// Closes the listening sockets (removing Unix socket files), refuses
    /// requests not yet started, then waits for running threads or children
    /// as `block_on_close` says. Idempotent; also done on drop.
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
        self.workers.close();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server_close();
    }
}
