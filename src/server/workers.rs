//! Where a request runs: on the loop thread, on a thread of its own, on a
//! pooled thread, or in a forked child. The reactor keeps accepting; these
//! decide only where the blocking handler goes and how much may run at once.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::fork::Children;
use super::request::{process, Incoming};
use super::Shared;
use crate::offload::thread_set::ThreadSet;
use crate::Handle;

/// How a server runs its requests (the socketserver mix-ins, bounded).
///
/// ```
/// use sockloop::server::Mode;
/// // ThreadingMixIn with daemon threads: server_close does not wait for them.
/// let daemon = Mode::Threading { daemon_threads: true, block_on_close: true, max_threads: 256 };
/// assert_ne!(daemon, Mode::threading());
/// assert_eq!(Mode::pool(4), Mode::Pool { workers: 4 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// One request at a time, on the serving thread (`TCPServer`): the loop
    /// waits while a handler runs.
    Sync,
    /// A thread per request (`ThreadingMixIn`). Finished threads are joined
    /// as they end, so none accumulate.
    Threading {
        /// Do not wait for these threads at `server_close` (and do not join them).
        daemon_threads: bool,
        /// `server_close` waits for running (non-daemon) threads.
        block_on_close: bool,
        /// At this many running requests the server stops accepting until
        /// one ends; clients wait in the kernel's backlog
        /// (`request_queue_size`). Python has no cap: 4,000 idle clients were
        /// 4,000 threads. [`Mode::threading`] uses 256.
        max_threads: usize,
    },
    /// A process per request (`ForkingMixIn`): the child gets the connection
    /// or the datagram and exits 0, or 1 after a handler error. Children
    /// are forked by a fork server started when the server is built (so
    /// build it before the program starts threads: the fork server is a
    /// copy of the process at that moment, and every child a copy of it).
    /// A child this server did not fork is never waited for.
    Forking {
        /// At this many running children the server stops accepting until
        /// one exits (the loop keeps running).
        max_children: usize,
        /// `server_close` waits for every child.
        block_on_close: bool,
        /// No effect: the fork server reaps every child and reports its exit
        /// to the loop as it happens, with or without it.
        #[deprecated(
            since = "0.1.0",
            note = "no effect (the fork server reaps); build the mode with `Mode::forking_with`"
        )]
        reap_on_sigchld: bool,
    },
    /// A fixed pool of threads fed by the loop; when every worker is busy
    /// and as many requests again are queued, accepting pauses.
    Pool {
        /// Number of worker threads (at least 1).
        workers: usize,
    },
}

/// The default cap of [`Mode::threading`]: far beyond what one core serves
/// well with blocking handlers, far below what exhausts memory (a thread
/// here costs its 2 MiB stack reservation and two descriptors).
const DEFAULT_MAX_THREADS: usize = 256;

impl Mode {
    /// `Threading` with socketserver's defaults (non-daemon, block on close),
    /// capped at 256 running requests.
    pub fn threading() -> Mode {
        Mode::Threading {
            daemon_threads: false,
            block_on_close: true,
            max_threads: DEFAULT_MAX_THREADS,
        }
    }

    /// `Forking` with socketserver's defaults (40 children, block on close).
    pub fn forking() -> Mode {
        Mode::forking_with(40, true)
    }

    /// `Forking` with at most `max_children` running children;
    /// `block_on_close`: `server_close` waits for them.
    ///
    /// ```
    /// use sockloop::server::Mode;
    /// assert_eq!(Mode::forking_with(40, true), Mode::forking());
    /// ```
    pub fn forking_with(max_children: usize, block_on_close: bool) -> Mode {
        #[allow(deprecated)]
        Mode::Forking {
            max_children,
            block_on_close,
            reap_on_sigchld: true,
        }
    }

    /// A pool of `workers` threads.
    pub fn pool(workers: usize) -> Mode {
        Mode::Pool { workers }
    }

    /// A bound of zero would serve nothing (it used to be taken for 1 in
    /// silence): refused when the server is built.
    pub(crate) fn check(&self) -> io::Result<()> {
        let zero = match *self {
            Mode::Threading { max_threads: 0, .. } => Some("max_threads"),
            Mode::Forking {
                max_children: 0, ..
            } => Some("max_children"),
            Mode::Pool { workers: 0 } => Some("workers"),
            _ => None,
        };
        match zero {
            Some(field) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self:?}: {field} must be at least 1"),
            )),
            None => Ok(()),
        }
    }
}

/// The running side of a [`Mode`].
pub(crate) enum Workers {
    Sync,
    Threads(Threads),
    Pool(Pool),
    Children(Children),
}

impl Workers {
    pub(crate) fn new(mode: &Mode, shared: &Arc<Shared>, children: Option<Children>) -> Workers {
        let wake = shared
            .reactor
            .get()
            .expect("set before the workers")
            .clone();
        match *mode {
            Mode::Sync => Workers::Sync,
            Mode::Threading {
                daemon_threads,
                block_on_close,
                max_threads,
            } => Workers::Threads(Threads::new(
                !daemon_threads,
                !daemon_threads && block_on_close,
                max_threads,
                wake,
            )),
            Mode::Pool { workers } => Workers::Pool(Pool::new(workers, wake, shared)),
            Mode::Forking { .. } => {
                Workers::Children(children.expect("a forking server has a fork server"))
            }
        }
    }

    /// How many more requests may start now.
    pub(crate) fn room(&self) -> usize {
        match self {
            Workers::Sync => 1,
            Workers::Threads(t) => t.max.saturating_sub(t.running),
            Workers::Pool(p) => p.capacity.saturating_sub(p.in_flight),
            Workers::Children(c) => c.room(),
        }
    }

    /// Starts `incoming` (for `Sync`: runs it to the end).
    pub(crate) fn dispatch(&mut self, incoming: Incoming, shared: &Arc<Shared>) {
        match self {
            Workers::Sync => {
                process(incoming, shared);
            }
            Workers::Threads(t) => t.spawn(incoming, shared),
            Workers::Pool(p) => p.submit(incoming),
            Workers::Children(c) => c.fork(incoming, shared),
        }
    }

    /// Takes note of requests that finished (joins threads, reaps children).
    pub(crate) fn collect(&mut self) {
        match self {
            Workers::Sync => {}
            Workers::Threads(t) => t.collect(),
            Workers::Pool(p) => p.collect(),
            Workers::Children(c) => c.reap(),
        }
    }

    /// Why requests cannot be started any more (a forking server whose
    /// fork server is gone), if so.
    pub(crate) fn broken(&self) -> Option<String> {
        match self {
            Workers::Children(c) => c.broken(),
            _ => None,
        }
    }

    /// Requests still running.
    pub(crate) fn running(&self) -> usize {
        match self {
            Workers::Sync => 0,
            Workers::Threads(t) => t.running,
            Workers::Pool(p) => p.in_flight,
            Workers::Children(c) => c.len(),
        }
    }

    /// Whether `server_close` waits for running requests.
    pub(crate) fn blocks_on_close(&self) -> bool {
        match self {
            Workers::Sync => false,
            Workers::Threads(t) => t.block_on_close,
            Workers::Pool(_) => true,
            Workers::Children(c) => c.blocks_on_close(),
        }
    }

    /// `server_close`'s last part, once waiting is over: joins what ended,
    /// leaves behind what did not.
    pub(crate) fn close(&mut self) {
        match self {
            Workers::Sync | Workers::Children(_) => {}
            Workers::Threads(t) => t.close(),
            Workers::Pool(p) => p.shut_down(),
        }
    }
}

/// Tells the loop that a request finished: a message, then a wake-up.
#[derive(Clone)]
struct Done {
    tx: Sender<u64>,
    wake: Handle,
}

impl Done {
    fn send(&self, id: u64) {
        let _ = self.tx.send(id);
        // The reactor may be gone at close; the message is enough then.
        let _ = self.wake.post(|_| {});
    }
}

/// A thread per request.
pub(crate) struct Threads {
    /// Join threads as they end (non-daemon threads, as Python does).
    track: bool,
    block_on_close: bool,
    max: usize,
    /// Requests running, daemon threads included.
    running: usize,
    handles: HashMap<u64, JoinHandle<()>>,
    next: u64,
    done: Done,
    finished: Receiver<u64>,
}

impl Threads {
    fn new(track: bool, block_on_close: bool, max: usize, wake: Handle) -> Threads {
        let (tx, finished) = mpsc::channel();
        Threads {
            track,
            block_on_close,
            max,
            running: 0,
            handles: HashMap::new(),
            next: 0,
            done: Done { tx, wake },
            finished,
        }
    }

    fn spawn(&mut self, incoming: Incoming, shared: &Arc<Shared>) {
        self.next += 1;
        let (id, shared, done) = (self.next, shared.clone(), self.done.clone());
        let spawned = thread::Builder::new()
            .name(format!("request-{id}"))
            .spawn(move || {
                process(incoming, &shared);
                done.send(id);
            });
        match spawned {
            Ok(thread) => {
                self.running += 1;
                if self.track {
                    self.handles.insert(id, thread);
                }
            }
            // Out of threads: the request is dropped (its client sees the close).
            Err(e) => log::error!("cannot start a request thread: {e}"),
        }
    }

    fn collect(&mut self) {
        while let Ok(id) = self.finished.try_recv() {
            self.running -= 1;
            if let Some(thread) = self.handles.remove(&id) {
                let _ = thread.join();
            }
        }
    }

    /// Joins the threads that ended; the others (stuck past the unblocking)
    /// are left to end on their own.
    fn close(&mut self) {
        self.collect();
        if self.running > 0 && self.block_on_close {
            log::warn!("{} request thread(s) left running", self.running);
        }
        self.handles.clear();
    }
}

/// A fixed set of threads taking requests from the loop (the offload
/// pool's thread set: one pool implementation).
pub(crate) struct Pool {
    set: ThreadSet<Incoming>,
    /// `server_close` closed the queue: later requests are refused.
    closed: bool,
    /// Dispatched and not yet finished; at most `capacity` (busy workers plus
    /// as many queued): beyond, the server stops accepting.
    in_flight: usize,
    capacity: usize,
    finished: Receiver<u64>,
}

impl Pool {
    fn new(workers: usize, wake: Handle, shared: &Arc<Shared>) -> Pool {
        let (tx, finished) = mpsc::channel();
        let done = Done { tx, wake };
        let shared = shared.clone();
        let set = ThreadSet::start(workers, "pool", move |incoming| {
            process(incoming, &shared);
            done.send(0);
        });
        let capacity = set.len() + workers;
        Pool {
            set,
            closed: false,
            in_flight: 0,
            capacity,
            finished,
        }
    }

    fn submit(&mut self, incoming: Incoming) {
        if self.closed {
            return incoming.refuse();
        }
        self.set.push(incoming);
        self.in_flight += 1;
    }

    fn collect(&mut self) {
        while self.finished.try_recv().is_ok() {
            self.in_flight -= 1;
        }
    }

    /// Ends the workers: idle ones are joined (they return as the queue
    /// closes); ones still stuck in a handler past the unblocking are left.
    fn shut_down(&mut self) {
        self.closed = true;
        self.set.close(false);
        self.collect();
        let threads = self.set.take_threads();
        if self.in_flight > 0 {
            log::warn!("{} pooled request(s) left running", self.in_flight);
            return;
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}
