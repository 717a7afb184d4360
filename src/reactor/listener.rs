//! Listening sockets: binding, the accept loop, the connection cap and the
//! back-off when the process runs out of file descriptors.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use mio::{Interest, Token};

use crate::activation::InheritedSocket;
use crate::net::{ListenOptions, Listener, Stream};
use crate::reactor::handler::ConnHandler;
use crate::reactor::proxy_wait::Proxied;
use crate::reactor::source::EventSource;
use crate::reactor::{Source, TimerTarget};
use crate::{Addr, BlockingStream, ListenerId, Reactor};

/// Connections accepted per listener per turn before other sources get a go.
const ACCEPT_BUDGET: usize = 128;
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Makes the handler of an accepted connection from its peer's address.
pub(crate) type Factory = Box<dyn FnMut(&Addr) -> Box<dyn ConnHandler>>;
type AcceptFn = Box<dyn FnMut(&mut Reactor, BlockingStream, Addr)>;

/// A listener closed while connections it accepted still wait for their
/// PROXY header: what admitting them needs (see [`Reactor::close_listener`]).
pub(crate) struct Parked {
    acceptor: Acceptor,
    opts: ListenOptions,
    addr: Addr,
}

/// What becomes of an accepted connection.
enum Acceptor {
    /// It is served on the reactor by the handler the factory makes.
    Handlers(Factory),
    /// It leaves the reactor as a blocking socket (`None` while the closure runs).
    Handoff(Option<AcceptFn>),
}

pub(crate) struct ListenerState {
    /// First: unlisted before `listener` closes.
    _listed: crate::net::owned::Listed,
    listener: Listener,
    pub(crate) gen: u32,
    acceptor: Acceptor,
    opts: ListenOptions,
    addr: Addr,
    /// Connections from this listener that are still open.
    open: usize,
    /// Accepting is suspended: at the connection cap, or backing off.
    paused: Pause,
    backoff: Duration,
    nodelay: NoDelay,
}

/// How accepted connections get `TCP_NODELAY` as `ConnOptions::nodelay`
/// says. Linux copies it from the listening socket to each accepted one,
/// which saves a `setsockopt` per connection (an eighth of a short
/// connection's system calls); the first connection checks that it did.
/// The listener is set either way: an inherited one (socket activation, a
/// restart) may come with the option on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NoDelay {
    /// Nothing to do (a Unix listener).
    NotTcp,
    /// Set on the listener; not yet seen on an accepted connection.
    Unproven,
    /// Accepted connections come with the listener's setting.
    Inherited,
    /// Set on each accepted connection.
    EachConnection,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pause {
    No,
    AtCap,
    /// [`Reactor::pause_accepting`] was called.
    ByUser,
    /// Out of descriptors (or another resource); a timer resumes.
    BackingOff,
}

impl EventSource for ListenerState {
    fn gen(&self) -> Option<u32> {
        Some(self.gen)
    }

    fn ready(reactor: &mut Reactor, key: usize, _: &mio::event::Event) {
        reactor.accept_ready(key);
    }

    fn resume(reactor: &mut Reactor, key: usize) {
        reactor.accept_ready(key);
    }
}

impl ListenerState {
    /// The listening socket's descriptor (for a forked process to close).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// See [`Listener::keep_file`].
    pub(crate) fn keep_file(&mut self) {
        self.listener.keep_file();
    }
}

/// Errors after which accepting again at once would fail the same way.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Reactor {
    /// Listens on `addr`; `factory` makes the handler of each accepted
    /// connection from the peer's address (see [`Reactor::listen_with`]).
    pub(crate) fn listen_handlers(
        &mut self,
        addr: &Addr,
        opts: &ListenOptions,
        factory: Factory,
    ) -> io::Result<ListenerId> {
        self.add_listener(addr, opts, Acceptor::Handlers(factory))
    }

    /// Listens on `addr` and hands every accepted connection to `on_accept`
    /// as a [`BlockingStream`], out of the reactor's care: for code that
    /// serves a connection with blocking calls on another thread or in a
    /// forked child (socketserver's model). `max_connections` does not apply,
    /// since the reactor no longer sees these connections close; use
    /// [`pause_accepting`](Reactor::pause_accepting) instead.
    pub fn listen_accept(
        &mut self,
        addr: &Addr,
        opts: &ListenOptions,
        on_accept: impl FnMut(&mut Reactor, BlockingStream, Addr) + 'static,
    ) -> io::Result<ListenerId> {
        self.add_listener(addr, opts, Acceptor::Handoff(Some(Box::new(on_accept))))
    }

    /// [`listen_handlers`](Reactor::listen_handlers) on an inherited socket
    /// (see [`Reactor::listen_inherited`]).
    pub(crate) fn listen_inherited_handlers(
        &mut self,
        socket: InheritedSocket,
        opts: &ListenOptions,
        factory: Factory,
    ) -> io::Result<ListenerId> {
        self.add_listener_socket(
            Listener::inherited(socket)?,
            opts,
            Acceptor::Handlers(factory),
        )
    }

    /// [`listen_accept`](Reactor::listen_accept) on a listening socket
    /// passed by socket activation ([`activation::take`](crate::activation::take));
    /// see [`Reactor::listen_inherited`] for which options apply.
    pub fn listen_accept_inherited(
        &mut self,
        socket: InheritedSocket,
        opts: &ListenOptions,
        on_accept: impl FnMut(&mut Reactor, BlockingStream, Addr) + 'static,
    ) -> io::Result<ListenerId> {
        let listener = Listener::inherited(socket)?;
        self.add_listener_socket(listener, opts, Acceptor::Handoff(Some(Box::new(on_accept))))
    }

    fn add_listener(
        &mut self,
        addr: &Addr,
        opts: &ListenOptions,
        acceptor: Acceptor,
    ) -> io::Result<ListenerId> {
        let listener = Listener::bind(addr, opts)?;
        self.add_listener_socket(listener, opts, acceptor)
    }

    fn add_listener_socket(
        &mut self,
        mut listener: Listener,
        opts: &ListenOptions,
        acceptor: Acceptor,
    ) -> io::Result<ListenerId> {
        opts.check()?;
        let local = listener.local_addr()?;
        let gen = self.next_gen();
        let entry = self.sources.vacant_entry();
        let key = entry.key();
        self.registry()
            .register(&mut listener, Token(key), Interest::READABLE)?;
        let nodelay = match &listener {
            Listener::Tcp(tcp) => {
                match socket2::SockRef::from(tcp).set_tcp_nodelay(opts.conn.nodelay) {
                    Ok(()) => NoDelay::Unproven,
                    Err(_) => NoDelay::EachConnection,
                }
            }
            Listener::Unix(..) => NoDelay::NotTcp,
        };
        let state = ListenerState {
            _listed: crate::net::owned::Listed::new(std::os::fd::AsRawFd::as_raw_fd(&listener)),
            listener,
            gen,
            acceptor,
            opts: opts.clone(),
            addr: local,
            open: 0,
            paused: Pause::No,
            backoff: FIRST_BACKOFF,
            nodelay,
        };
        self.sources.insert(Source::Listener(state));
        // A connection may already wait (edge-triggered: no event for it).
        self.ready.push((key, gen));
        Ok(ListenerId::new(key, gen))
    }

    /// The address a listener is bound to (the real port when 0 was asked).
    pub fn listener_addr(&self, id: ListenerId) -> io::Result<Addr> {
        match self.sources.get(id.key()) {
            Some(Source::Listener(l)) if l.gen == id.gen => Ok(l.addr.clone()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{id} is not listening"),
            )),
        }
    }

    /// Connections accepted by listener `id` that are open now (`None` if it
    /// is not listening): what its `max_connections` is compared with.
    pub fn listener_connections(&self, id: ListenerId) -> Option<usize> {
        match self.sources.get(id.key()) {
            Some(Source::Listener(l)) if l.gen == id.gen => Some(l.open),
            _ => None,
        }
    }

    /// Stops listening; a Unix socket file is removed. Open connections stay.
    ///
    /// Connections it accepted that still wait for their PROXY header are
    /// served when their header comes, as if it were open (a graceful
    /// shutdown or a restart closes the listeners first: those connections
    /// were accepted and must not be reset).
    pub fn close_listener(&mut self, id: ListenerId) {
        if let Some(Source::Listener(l)) = self.sources.get_mut(id.key()) {
            if l.gen == id.gen {
                let _ = self.poll.registry().deregister(&mut l.listener);
                let source = self.release_slot(id.key());
                if !self.proxy_waits_on(id) {
                    return self.drop_source(source);
                }
                let Source::Listener(l) = source else {
                    unreachable!("checked above")
                };
                let ListenerState {
                    _listed,
                    listener,
                    acceptor,
                    opts,
                    addr,
                    ..
                } = l;
                // The socket closes now (new clients are refused); what
                // admitting needs stays until no connection waits.
                drop(_listed);
                drop(listener);
                self.parked.push((
                    id,
                    Parked {
                        acceptor,
                        opts,
                        addr,
                    },
                ));
            }
        }
    }

    /// Drops the closed listeners' acceptors once no connection waits for
    /// a PROXY header any more.
    pub(crate) fn unpark_if_idle(&mut self) {
        if self.proxy_pending == 0 && !self.parked.is_empty() {
            let parked = std::mem::take(&mut self.parked);
            self.guarded("dropping a protocol factory", move |_| drop(parked));
        }
    }

    /// Stops accepting on a listener; connections wait in the kernel's
    /// backlog until [`resume_accepting`](Reactor::resume_accepting).
    pub fn pause_accepting(&mut self, id: ListenerId) {
        if let Some(l) = self.listener_at(id.key()).filter(|l| l.gen == id.gen) {
            l.paused = Pause::ByUser;
        }
    }

    /// Accepts again after [`pause_accepting`](Reactor::pause_accepting).
    pub fn resume_accepting(&mut self, id: ListenerId) {
        if let Some(l) = self.listener_at(id.key()).filter(|l| l.gen == id.gen) {
            if l.paused == Pause::ByUser {
                l.paused = Pause::No;
                // Connections that arrived meanwhile raised no new edge.
                self.ready.push((id.key(), id.gen));
            }
        }
    }

    fn listener_at(&mut self, key: usize) -> Option<&mut ListenerState> {
        match self.sources.get_mut(key) {
            Some(Source::Listener(l)) => Some(l),
            _ => None,
        }
    }

    /// Accepts until the kernel queue is empty, the budget is spent (then the
    /// listener goes on the ready list) or the connection cap is reached.
    pub(crate) fn accept_ready(&mut self, key: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(l) = self.listener_at(key) else {
                return;
            };
            if matches!(l.paused, Pause::BackingOff | Pause::ByUser) {
                return;
            }
            let global_full = self.at_global_limit();
            let Some(l) = self.listener_at(key) else {
                return;
            };
            if global_full || l.opts.max_connections.is_some_and(|cap| l.open >= cap) {
                l.paused = Pause::AtCap;
                if global_full {
                    let id = ListenerId::new(key, l.gen);
                    if !self.at_global_cap.contains(&id) {
                        self.at_global_cap.push(id);
                    }
                }
                return;
            }
            l.paused = Pause::No;
            match l.listener.accept() {
                Ok((stream, peer)) => {
                    if l.backoff != FIRST_BACKOFF {
                        log::info!("{}: accepting again", l.addr);
                        l.backoff = FIRST_BACKOFF;
                    }
                    let wanted = l.opts.conn.nodelay;
                    match l.nodelay {
                        NoDelay::NotTcp | NoDelay::Inherited => {}
                        NoDelay::Unproven => {
                            l.nodelay = if stream.nodelay().ok() == Some(wanted) {
                                NoDelay::Inherited
                            } else {
                                let _ = stream.set_nodelay(wanted);
                                NoDelay::EachConnection
                            };
                        }
                        NoDelay::EachConnection => {
                            let _ = stream.set_nodelay(wanted);
                        }
                    }
                    let id = ListenerId::new(key, l.gen);
                    let proxy_timeout = l.opts.proxy_protocol.then_some(l.opts.proxy_timeout);
                    if let Some(timeout) = proxy_timeout {
                        self.await_proxy_header(id, stream, peer, timeout);
                    } else {
                        self.admit(id, stream, peer, None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The peer gave up before we got to it: nothing to serve.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.stats.accept_errors += 1;
                    let Some(l) = self.listener_at(key) else {
                        return;
                    };
                    let delay = l.backoff;
                    if delay == FIRST_BACKOFF || !is_resource_exhaustion(&e) {
                        // Once per episode: the back-off doubles quietly.
                        log::warn!(
                            "{}: accept failed: {e}; pausing accepts, serving open connections",
                            l.addr
                        );
                    }
                    l.paused = Pause::BackingOff;
                    l.backoff = (delay * 2).min(MAX_BACKOFF);
                    let id = ListenerId::new(key, l.gen);
                    self.timers
                        .insert(self.now, delay, TimerTarget::ResumeAccept(id));
                    return;
                }
            }
        }
        if let Some(gen) = self.gen_of(key) {
            self.ready.push((key, gen));
        }
    }

    /// Checks a new connection against the allow-list, then gives it to
    /// its protocol or hands it off. `peer` is the client: the PROXY
    /// header's when `proxied`.
    pub(crate) fn admit(
        &mut self,
        id: ListenerId,
        stream: Stream,
        peer: Addr,
        proxied: Option<Box<Proxied>>,
    ) {
        let key = id.key();
        let live = self.listener_at(key).is_some_and(|l| l.gen == id.gen);
        // A closed listener's connection that waited for its header is
        // served by what the listener left (`close_listener`).
        let parked = if live {
            None
        } else {
            match self.parked.iter().position(|(p, _)| *p == id) {
                Some(at) => Some(at),
                None => {
                    log::warn!(
                        "connection from {peer} closed: its listener {id} is gone and left no protocol"
                    );
                    self.stats.proxy_refused += 1;
                    return;
                }
            }
        };
        let (opts, addr, acceptor) = match parked {
            None => {
                let l = self.listener_at(key).expect("live");
                (&l.opts, &l.addr, &mut l.acceptor)
            }
            Some(at) => {
                let p = &mut self.parked[at].1;
                (&p.opts, &p.addr, &mut p.acceptor)
            }
        };
        if opts
            .allow
            .as_ref()
            .is_some_and(|allow| !allow.allows(&peer))
        {
            log::info!("{addr}: refused {peer}: not in the allow-list");
            self.stats.refused += 1;
            return; // dropping the stream closes it
        }
        let conn_opts = opts.conn.clone();
        #[cfg(feature = "tls")]
        let tls_config = opts.tls.clone();
        let addr = addr.clone();
        // Out of its place while user code runs (it may close the listener).
        let mut acceptor = std::mem::replace(acceptor, Acceptor::Handoff(None));
        self.stats.accepted += 1;
        match &mut acceptor {
            Acceptor::Handlers(factory) => {
                match panic::catch_unwind(AssertUnwindSafe(|| factory(&peer))) {
                    Ok(handler) => {
                        #[cfg(feature = "tls")]
                        let tls = match &tls_config {
                            Some(config) => {
                                match Reactor::tls_accepting(config, &conn_opts, &peer) {
                                    Some(tls) => Some(tls),
                                    None => return self.put_back(id, acceptor),
                                }
                            }
                            None => None,
                        };
                        #[cfg(not(feature = "tls"))]
                        let tls = None;
                        if let Some(l) = self.listener_at(key).filter(|l| l.gen == id.gen) {
                            l.open += 1;
                        }
                        let extras = crate::reactor::stream::ConnExtras { proxied, tls };
                        if let Err(e) =
                            self.add_conn(stream, handler, conn_opts, Some(id), false, extras)
                        {
                            log::error!("cannot register connection from {peer}: {e}");
                            if let Some(l) = self.listener_at(key).filter(|l| l.gen == id.gen) {
                                l.open -= 1;
                            }
                        }
                    }
                    Err(panic) => {
                        log::error!(
                            "{addr}: protocol factory panicked for {peer}: {}; connection dropped",
                            crate::reactor::panic_message(&*panic)
                        );
                        self.stats.panics += 1;
                    }
                }
            }
            Acceptor::Handoff(on_accept) => {
                if let Some(on_accept) = on_accept {
                    match BlockingStream::from_mio(stream) {
                        Ok(stream) => {
                            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                                on_accept(self, stream, peer)
                            }));
                            if let Err(panic) = result {
                                log::error!(
                                    "{addr}: accept callback panicked: {}; connection dropped",
                                    crate::reactor::panic_message(&*panic)
                                );
                                self.stats.panics += 1;
                            }
                        }
                        Err(e) => log::error!("cannot hand off connection from {peer}: {e}"),
                    }
                }
            }
        }
        self.put_back(id, acceptor);
    }

    /// Returns an acceptor taken out by `admit` to its listener, live or
    /// parked (dropped if both went meanwhile).
    fn put_back(&mut self, id: ListenerId, acceptor: Acceptor) {
        let slot = match self.listener_at(id.key()).filter(|l| l.gen == id.gen) {
            Some(l) => Some(&mut l.acceptor),
            None => self
                .parked
                .iter_mut()
                .find(|(p, _)| *p == id)
                .map(|(_, p)| &mut p.acceptor),
        };
        match slot {
            Some(slot) => *slot = acceptor,
            None => self.guarded("dropping a protocol factory", move |_| drop(acceptor)),
        }
    }

    pub(crate) fn resume_accept(&mut self, id: ListenerId) {
        if let Some(l) = self.listener_at(id.key()) {
            if l.gen == id.gen && l.paused == Pause::BackingOff {
                l.paused = Pause::No;
                self.accept_ready(id.key());
            }
        }
    }

    /// Open connections, and those still waiting for a PROXY header (each
    /// holds a descriptor too: a flood of silent ones must meet the cap),
    /// are at the global cap.
    fn at_global_limit(&self) -> bool {
        self.max_connections
            .is_some_and(|cap| self.stats.open + self.proxy_pending >= cap)
    }

    /// One more connection from `id` waits for its PROXY header: it counts
    /// against the listener's cap until it is admitted or closed
    /// ([`connection_closed`](Reactor::connection_closed) then).
    pub(crate) fn pending_opened(&mut self, id: ListenerId) {
        if let Some(l) = self.listener_at(id.key()).filter(|l| l.gen == id.gen) {
            l.open += 1;
        }
    }

    /// A connection closed (from `listener`, if any; a listener closed since
    /// is not touched): one more may be accepted, by that listener or, under
    /// a global cap, by those paused at it. O(1) in the open connections.
    pub(crate) fn connection_closed(&mut self, listener: Option<ListenerId>) {
        if let Some(id) = listener {
            if let Some(l) = self.listener_at(id.key()).filter(|l| l.gen == id.gen) {
                l.open -= 1;
                if l.paused == Pause::AtCap {
                    l.paused = Pause::No;
                    self.ready.push((id.key(), id.gen));
                }
            }
        }
        let global_full = self.at_global_limit();
        if global_full || self.at_global_cap.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.at_global_cap) {
            if let Some(l) = self.listener_at(id.key()).filter(|l| l.gen == id.gen) {
                if l.paused == Pause::AtCap {
                    l.paused = Pause::No;
                    self.ready.push((id.key(), id.gen));
                }
            }
        }
    }

    /// Caps the connections open at once over all listeners; at the cap,
    /// accepting pauses (the kernel's backlogs hold the rest) until one closes.
    pub fn set_max_connections(&mut self, cap: Option<usize>) {
        self.max_connections = cap;
        self.connection_closed(None);
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
