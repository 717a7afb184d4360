//! The builder of a [`Server`] (socketserver's class attributes and hooks)
//! and a server running on a thread of its own.

use std::io;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::Family;
use super::{
    ErrorHook, LoopHook, Mode, Prepared, RequestHandler, Server, ServerHandle, VerifyHook,
};
use crate::Addr;

/// Configures and binds a [`Server`] (socketserver's class attributes).
///
/// ```
/// use std::time::Duration;
/// use sockloop::server::{Family, Mode, Request, ServerBuilder};
///
/// // ForkingUDPServer on two ports, refusing nobody, logging timeouts.
/// let server = ServerBuilder::new(Family::Udp)
///     .bind("127.0.0.1:0".parse()?)
///     .bind("127.0.0.1:0".parse()?)
///     .mode(Mode::forking_with(8, true))
///     .max_packet_size(1500)
///     .timeout(Some(Duration::from_secs(1)))
///     .handle_timeout(|| log::info!("no request for a second"))
///     .build(|| |request: &mut Request| {
///         let packet = request.packet().unwrap_or_default().to_vec();
///         request.wfile().write_all(&packet)
///     })?;
/// assert_eq!(server.server_address().len(), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "a builder binds nothing until `build` or `spawn`"]
pub struct ServerBuilder {
    pub(super) family: Family,
    pub(super) addrs: Vec<Addr>,
    pub(super) inherited: Vec<crate::activation::InheritedSocket>,
    pub(super) proxy_protocol: bool,
    pub(super) mode: Mode,
    pub(super) request_queue_size: u32,
    pub(super) allow_reuse_address: bool,
    pub(super) allow_reuse_port: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) request_timeout: Option<Duration>,
    pub(super) close_timeout: Duration,
    pub(super) max_packet_size: usize,
    pub(super) verify_request: VerifyHook,
    pub(super) handle_error: ErrorHook,
    pub(super) handle_timeout: LoopHook,
    pub(super) service_actions: LoopHook,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    #[cfg(feature = "tls")]
    pub(super) tls_handshake_timeout: Duration,
}

impl ServerBuilder {
    /// A server of `family`, in [`Mode::Sync`], with socketserver's hooks.
    pub fn new(family: Family) -> ServerBuilder {
        ServerBuilder {
            family,
            addrs: Vec::new(),
            inherited: Vec::new(),
            proxy_protocol: false,
            mode: Mode::Sync,
            request_queue_size: 1024,
            allow_reuse_address: true,
            allow_reuse_port: false,
            timeout: None,
            request_timeout: None,
            close_timeout: Duration::from_secs(30),
            max_packet_size: 8192,
            verify_request: Box::new(|_| true),
            handle_error: Box::new(|peer, e| {
                log::error!("exception during processing of request from {peer}: {e}")
            }),
            handle_timeout: Box::new(|| {}),
            service_actions: Box::new(|| {}),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Adds an address to serve (repeatable: one server, several ports).
    pub fn bind(mut self, addr: Addr) -> ServerBuilder {
        self.addrs.push(addr);
        self
    }

    /// Serves a socket passed by socket activation
    /// ([`activation::take`](crate::activation::take)) as well as (or
    /// instead of) any bound address; repeatable. It must be of the
    /// server's family (and listening, for a stream server); binding
    /// options do not apply to it.
    pub fn inherit(mut self, socket: crate::activation::InheritedSocket) -> ServerBuilder {
        self.inherited.push(socket);
        self
    }

    /// Every connection of a stream server must begin with a PROXY
    /// protocol header (v1 or v2); the client address it names is then the
    /// request's [`client_address`](crate::server::Request::client_address)
    /// and what `verify_request` sees. The header is read on the reactor,
    /// within 5 s, before the request reaches a worker; a connection
    /// without a valid one is closed and logged (see
    /// [`ListenOptions::proxy_protocol`](crate::ListenOptions::proxy_protocol)).
    /// Default off; no effect on datagram servers.
    pub fn proxy_protocol(mut self, on: bool) -> ServerBuilder {
        self.proxy_protocol = on;
        self
    }

    /// Where requests run (default [`Mode::Sync`]).
    pub fn mode(mut self, mode: Mode) -> ServerBuilder {
        self.mode = mode;
        self
    }

    /// The listen backlog (default 1024).
    pub fn request_queue_size(mut self, backlog: u32) -> ServerBuilder {
        self.request_queue_size = backlog;
        self
    }

    /// `SO_REUSEADDR` (default on, unlike Python: a restarted server should
    /// not wait for TIME_WAIT to pass).
    pub fn allow_reuse_address(mut self, on: bool) -> ServerBuilder {
        self.allow_reuse_address = on;
        self
    }

    /// `SO_REUSEPORT` (default off; TCP and UDP only).
    pub fn allow_reuse_port(mut self, on: bool) -> ServerBuilder {
        self.allow_reuse_port = on;
        self
    }

    /// How long [`Server::handle_request`] waits (default: forever).
    pub fn timeout(mut self, timeout: Option<Duration>) -> ServerBuilder {
        self.timeout = timeout;
        self
    }

    /// How long a request's reads and writes may wait (default: forever, as
    /// in Python). A read or write that waits longer fails, and the
    /// handler's error reaches `handle_error` as [`io::ErrorKind::TimedOut`]:
    /// an idle client cannot hold a worker forever (the bound is per read or
    /// write, not for the whole request: a client that sends a byte now and
    /// then still can). A datagram's answer
    /// waits for room in the socket for at most this long, and 1 s at most
    /// (datagrams are lossy: an answer the peer does not take is dropped
    /// with a log line).
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> ServerBuilder {
        self.request_timeout = timeout;
        self
    }

    /// Serves every stream request over TLS with `config` (feature `tls`;
    /// see [`sockloop::tls`](crate::tls) to load one from PEM files), in
    /// every mode: the handshake runs where the handler runs, before
    /// `setup`; `rfile` and `wfile` carry plaintext; the end of the request
    /// sends close_notify. A failed or timed-out handshake goes to
    /// `handle_error` like any other request error. Datagram families
    /// refuse it at `build`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<rustls::ServerConfig>) -> ServerBuilder {
        self.tls = Some(config);
        self
    }

    /// How long a TLS handshake may take (default 10 s); past it the
    /// request fails with [`io::ErrorKind::TimedOut`].
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeout(mut self, limit: Duration) -> ServerBuilder {
        self.tls_handshake_timeout = limit;
        self
    }

    /// The longest [`Server::server_close`] waits for running requests when
    /// `block_on_close` says to wait and no graceful shutdown set a deadline
    /// (default 30 s); then they are unblocked.
    pub fn close_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.close_timeout = timeout;
        self
    }

    /// The largest datagram taken whole; longer ones are cut (default 8192).
    pub fn max_packet_size(mut self, size: usize) -> ServerBuilder {
        self.max_packet_size = size;
        self
    }

    /// Decides, on the serving thread, whether a client is served at all; a
    /// refused stream is shut down at once and no handler is made.
    pub fn verify_request(
        mut self,
        hook: impl Fn(&Addr) -> bool + Send + Sync + 'static,
    ) -> ServerBuilder {
        self.verify_request = Box::new(hook);
        self
    }

    /// Called with the client's address when a handler fails or panics (on
    /// the thread or in the child that ran it). Default: an error log line.
    pub fn handle_error(
        mut self,
        hook: impl Fn(&Addr, &io::Error) + Send + Sync + 'static,
    ) -> ServerBuilder {
        self.handle_error = Box::new(hook);
        self
    }

    /// Called when [`Server::handle_request`] waited `timeout` for nothing.
    pub fn handle_timeout(mut self, hook: impl FnMut() + Send + 'static) -> ServerBuilder {
        self.handle_timeout = Box::new(hook);
        self
    }

    /// Called on every turn of `serve_forever`.
    pub fn service_actions(mut self, hook: impl FnMut() + Send + 'static) -> ServerBuilder {
        self.service_actions = Box::new(hook);
        self
    }

    /// Binds every address and returns the server, ready to serve requests
    /// with handlers made by `factory`. Any failure closes what was bound.
    ///
    /// A forking server starts its fork server here: build it before the
    /// program starts threads (see [`Mode::Forking`]).
    pub fn build<H, F>(mut self, factory: F) -> io::Result<Server>
    where
        H: RequestHandler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let prepared = Prepared::new(&mut self, Box::new(move || Box::new(factory())))?;
        Server::new(self, prepared)
    }

    /// Builds the server on a new thread and serves it there until
    /// [`RunningServer::shutdown`]; bind errors are returned here. A forking
    /// server's fork server is started on the calling thread, before the
    /// new thread exists.
    pub fn spawn<H, F>(mut self, factory: F) -> io::Result<RunningServer>
    where
        H: RequestHandler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let prepared = Prepared::new(&mut self, Box::new(move || Box::new(factory())))?;
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("server".into())
            .spawn(move || {
                let mut server = match Server::new(self, prepared) {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = tx.send(Ok(server.handle()));
                let served = server.serve_forever();
                server.server_close();
                served
            })?;
        let handle = rx
            .recv()
            .map_err(|_| io::Error::other("server thread died while binding"))??;
        Ok(RunningServer {
            handle,
            thread: Some(thread),
        })
    }
}

/// A server serving on a thread of its own (from [`ServerBuilder::spawn`]).
/// Dropping it shuts the server down and waits for it.
#[must_use = "dropping a RunningServer shuts the server down at once"]
pub struct RunningServer {
    handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    /// A handle to the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The bound addresses.
    pub fn server_address(&self) -> &[Addr] {
        self.handle.server_address()
    }

    /// Whether the server stopped on its own: `serve_forever` failed (for
    /// instance a forking server whose fork server died); `shutdown` returns
    /// the error.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Shuts the server down, closes it (`server_close`: waits for threads
    /// or children per `block_on_close`) and returns `serve_forever`'s result.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    /// [`ServerHandle::shutdown_graceful`], then waits for the server's
    /// thread: running requests get `grace`, then are unblocked.
    pub fn shutdown_graceful(mut self, grace: Duration) -> io::Result<()> {
        self.handle.shutdown_graceful(grace);
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.handle.shutdown();
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("server thread panicked")))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The settings; the hooks are closures and are left out.
impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("family", &self.family)
            .field("addrs", &self.addrs)
            .field("mode", &self.mode)
            .field("request_queue_size", &self.request_queue_size)
            .field("allow_reuse_address", &self.allow_reuse_address)
            .field("allow_reuse_port", &self.allow_reuse_port)
            .field("timeout", &self.timeout)
            .field("request_timeout", &self.request_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("max_packet_size", &self.max_packet_size)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("server_address", &self.server_address())
            .field(
                "running",
                &self.thread.as_ref().is_some_and(|t| !t.is_finished()),
            )
            .finish_non_exhaustive()
    }
}
