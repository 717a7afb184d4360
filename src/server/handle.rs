//! What the serving thread, its workers, forked children and other threads
//! share, and the handle that shuts a server down from any of them.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use super::{ErrorHook, Factory};
use crate::process::forkserver::ForkServer;
use crate::{Addr, Handle};

/// After running requests were unblocked (their sockets shut down, children
/// sent SIGTERM), how long they get to end before children are killed and
/// threads are left behind.
pub(crate) const UNBLOCK_WAIT: Duration = Duration::from_secs(2);

/// What the serving thread, workers, children and handles share.
pub(crate) struct Shared {
    pub(crate) factory: Factory,
    pub(crate) handle_error: ErrorHook,
    pub(crate) request_timeout: Option<Duration>,
    pub(super) addrs: OnceLock<Vec<Addr>>,
    pub(super) reactor: OnceLock<Handle>,
    pub(super) state: Mutex<ServeState>,
    pub(super) changed: Condvar,
    /// Stream requests being served, by request id: what a shutdown past its
    /// grace shuts down. An entry is removed before its socket closes, under
    /// this lock, so a number here is always still the request's socket.
    pub(super) running: Mutex<HashMap<u64, RawFd>>,
    pub(super) next_request: AtomicU64,
    /// A forking server's fork server, to signal children from any thread.
    pub(super) forks: OnceLock<Arc<ForkServer>>,
    /// Set in a forked child: the socket its shutdown request goes to.
    pub(super) parent: OnceLock<RawFd>,
    /// Datagram peers whose queue was full at their last answer, and since
    /// when (at most [`MAX_DEAF`], entries expire after [`DEAF_FOR`]).
    pub(super) deaf: Mutex<HashMap<String, Instant>>,
    /// Serve every stream request over TLS with this configuration.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    #[cfg(feature = "tls")]
    pub(crate) tls_handshake_timeout: Duration,
}

/// How many datagram peers with a full queue are remembered.
const MAX_DEAF: usize = 1024;
/// How long a peer with a full queue gets answers without a wait.
const DEAF_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct ServeState {
    /// The thread inside `serve_forever`, if any.
    pub(super) serving: Option<ThreadId>,
    pub(super) shutdown_requested: bool,
    /// Set by `shutdown_graceful`: when running requests are unblocked.
    pub(super) deadline: Option<Instant>,
    /// Running requests were unblocked: requests not yet started are refused.
    pub(super) unblocked: bool,
}

impl Shared {
    pub(crate) fn new(
        factory: Factory,
        handle_error: ErrorHook,
        request_timeout: Option<Duration>,
    ) -> Shared {
        Shared {
            factory,
            handle_error,
            request_timeout,
            addrs: OnceLock::new(),
            reactor: OnceLock::new(),
            state: Mutex::new(ServeState::default()),
            changed: Condvar::new(),
            running: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(0),
            forks: OnceLock::new(),
            parent: OnceLock::new(),
            deaf: Mutex::new(HashMap::new()),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Whether `peer`'s queue was full at its last answer, lately.
    pub(crate) fn is_deaf(&self, peer: &Addr) -> bool {
        let deaf = self.deaf.lock().unwrap_or_else(|p| p.into_inner());
        if deaf.is_empty() {
            return false; // the usual case: no text made of the address
        }
        deaf.get(&peer.to_string())
            .is_some_and(|since| since.elapsed() < DEAF_FOR)
    }

    pub(crate) fn set_deaf(&self, peer: &Addr, on: bool) {
        let mut deaf = self.deaf.lock().unwrap_or_else(|p| p.into_inner());
        if !on {
            deaf.remove(&peer.to_string());
            return;
        }
        if deaf.len() >= MAX_DEAF {
            deaf.retain(|_, since| since.elapsed() < DEAF_FOR);
        }
        if deaf.len() < MAX_DEAF {
            deaf.insert(peer.to_string(), Instant::now());
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ServeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn wake(&self) {
        if let Some(reactor) = self.reactor.get() {
            reactor.stop();
        }
    }

    /// Notes a stream request's socket, to shut it down if the server must
    /// stop before the request ends; `None` once the server unblocked its
    /// requests (this one must not start).
    pub(crate) fn enter(&self, fd: Option<RawFd>) -> Option<u64> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if self.lock().unblocked {
            return None;
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        if let Some(fd) = fd {
            running.insert(id, fd);
        }
        Some(id)
    }

    /// The request's socket is about to close.
    pub(crate) fn leave(&self, id: u64) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Ends the wait of every running request: their sockets are shut down
    /// (a blocked read returns end-of-stream, a write fails), children get
    /// SIGTERM, and requests not yet started are refused.
    pub(super) fn unblock(&self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        self.lock().unblocked = true;
        if !running.is_empty() {
            log::warn!(
                "shutting down: unblocking {} running request(s)",
                running.len()
            );
        }
        for &fd in running.values() {
            // SAFETY: the descriptor is open while it is listed (see `running`).
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        drop(running);
        if let Some(forks) = self.forks.get() {
            forks.signal_all(libc::SIGTERM);
        }
    }
}

/// A cloneable, `Send` handle to a [`Server`](super::Server): shut it down from any thread,
/// including from one of its own handlers (also in a forked child).
#[derive(Clone)]
pub struct ServerHandle {
    pub(super) shared: Arc<Shared>,
}

/// A report record a forked child sends to ask its parent to shut down.
pub(crate) const SHUTDOWN_REQUEST: i32 = 0x5348_5554;

impl ServerHandle {
    /// Stops `serve_forever` and returns once it has returned.
    ///
    /// Called on the serving thread itself (from a `Sync` handler or a hook),
    /// it only requests the stop and returns, instead of deadlocking as
    /// Python's does. Called in a forked child (a `Mode::Forking` handler),
    /// it sends the request to the parent and returns. Called when the
    /// server is not serving, it makes the next `serve_forever` return at
    /// once.
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
        if self.ask_parent() {
            return;
        }
        let mut state = self.shared.lock();
        state.shutdown_requested = true;
        self.shared.wake();
        let me = thread::current().id();
        while state.serving.is_some_and(|t| t != me) && state.shutdown_requested {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A bounded shutdown: `serve_forever` stops accepting and returns, and
    /// requests still running get `grace` to end. Past it they are unblocked
    /// (their sockets shut down, children sent SIGTERM, SIGKILL 2 s later),
    /// so that [`Server::server_close`](super::Server::server_close) returns soon after. A second call
    /// with a shorter grace (a second Ctrl-C) takes effect at once.
    ///
    /// Waits until `serve_forever` has returned, as [`shutdown`](Self::shutdown)
    /// does, but never past the grace and the unblocking; from the serving
    /// thread or a forked child it only requests.
    pub fn shutdown_graceful(&self, grace: Duration) {
        if self.ask_parent() {
            return;
        }
        let now = Instant::now();
        // A grace too long for the clock means "no deadline".
        let deadline = now.checked_add(grace);
        let mut state = self.shared.lock();
        state.shutdown_requested = true;
        if let Some(deadline) = deadline {
            state.deadline = Some(state.deadline.map_or(deadline, |d| d.min(deadline)));
        }
        self.shared.wake();
        let me = thread::current().id();
        let mut unblocked_at = None;
        while state.serving.is_some_and(|t| t != me) && state.shutdown_requested {
            // A `Sync` server runs its request on the serving thread: only
            // this thread can unblock it once the grace is over.
            let now = Instant::now();
            let until = match (unblocked_at, state.deadline) {
                (Some(at), _) => at + UNBLOCK_WAIT,
                (None, Some(deadline)) if now >= deadline => {
                    drop(state);
                    self.shared.unblock();
                    unblocked_at = Some(now);
                    state = self.shared.lock();
                    continue;
                }
                (None, Some(deadline)) => deadline,
                (None, None) => now + Duration::from_secs(3600),
            };
            if now >= until {
                log::warn!("serve_forever did not return after its requests were unblocked");
                return;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// In a forked child: asks the parent to shut down. True if this is one.
    fn ask_parent(&self) -> bool {
        let Some(&fd) = self.shared.parent.get() else {
            return false;
        };
        let record = crate::process::wire::encode_report(0, SHUTDOWN_REQUEST);
        if let Err(e) = crate::process::wire::send_record(fd, &record) {
            log::error!("cannot ask the server to shut down: {e}");
        }
        true
    }

    /// The bound addresses, with the real ports when 0 was asked
    /// (`server_address`).
    pub fn server_address(&self) -> &[Addr] {
        self.shared.addrs.get().map_or(&[], |a| a.as_slice())
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("server_address", &self.server_address())
            .finish_non_exhaustive()
    }
}
