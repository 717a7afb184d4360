//! Offloading to pre-forked worker processes, for work that must not share
//! the server's process: code that may crash, leak or hold a global lock.
//!
//! Each worker talks to the loop over a Unix socketpair registered in the
//! reactor like any connection. A request is `[u32 length][bytes]`; an answer
//! is `[u32 length][status byte][bytes]` (status 0: the worker function's
//! result; 1: it panicked, the bytes say how). One request per worker at a
//! time; requests wait on the loop for an idle worker.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use bytes::Bytes;

use crate::process::forkserver::ForkServer;
use crate::reactor::client::Client;
use crate::{
    BlockingStream, CloseReason, ConnId, ConnOptions, Context, FrameHandler, Framed, Reactor,
    Terminator,
};

type WorkFn = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;
type Then = Box<dyn FnOnce(&mut Context<'_>, io::Result<Vec<u8>>)>;

/// Largest request or answer (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// A pool of worker processes serving one function, driven by a reactor.
///
/// Start it early, before the program starts threads: workers (also the
/// ones that replace a crashed worker) are forked from a fork server forked
/// here, a copy of the process at this moment. Cloning gives another handle to the same pool
/// (for each listener's factory); dropping the reactor ends the workers.
///
/// ```
/// use sockloop::{ProcessPool, Reactor};
///
/// let mut reactor = Reactor::new()?;
/// // Each worker runs this on every request, in its own process.
/// let pool = ProcessPool::start(&mut reactor, 2, |request: &[u8]| request.to_ascii_uppercase())?;
/// assert_eq!(pool.pids().len(), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ProcessPool {
    state: Rc<RefCell<PoolState>>,
}

struct PoolState {
    forks: ForkServer,
    workers: Vec<Worker>,
    /// Requests waiting for an idle worker.
    queue: VecDeque<Pending>,
    /// Requests queued or running; above it, submitters stop reading.
    max_in_flight: usize,
    /// A set: membership is asked at every submit over the bound.
    paused: HashSet<ConnId>,
    /// The reactor is going away: workers are not replaced.
    closing: bool,
}

struct Worker {
    /// False once it ended and could not be replaced: never given work.
    alive: bool,
    pid: libc::pid_t,
    link: ConnId,
    busy: Option<Pending>,
}

struct Pending {
    client: ConnId,
    request: Bytes,
    then: Then,
}

impl ProcessPool {
    /// Forks `workers` processes that each answer requests with `work`.
    pub fn start(
        reactor: &mut Reactor,
        workers: usize,
        work: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
    ) -> io::Result<ProcessPool> {
        let workers = workers.max(1);
        // Workers, first and replacements alike, come from a fork server
        // forked now (with its own copy of `work`): a replacement forked
        // later from this process would copy whatever locks its other
        // threads hold at that moment.
        let job: WorkFn = Arc::new(work);
        let forks = ForkServer::start(
            &[],
            None,
            true,
            Box::new(move |fds, _, _| {
                if let Some(fd) = fds.into_iter().next() {
                    serve(UnixStream::from(fd), &*job);
                }
                0
            }),
        )?;
        let state = Rc::new(RefCell::new(PoolState {
            forks,
            workers: Vec::with_capacity(workers),
            queue: VecDeque::new(),
            max_in_flight: 16 * workers,
            paused: HashSet::new(),
            closing: false,
        }));
        for index in 0..workers {
            let worker = spawn(reactor, &state, index)?;
            state.borrow_mut().workers.push(worker);
        }
        let client: Weak<dyn Client> = Rc::downgrade(&state) as Weak<RefCell<PoolState>>;
        reactor.add_client(client);
        Ok(ProcessPool { state })
    }

    /// Bounds the requests queued or running; beyond it, a connection that
    /// submits stops reading until the pool catches up (default: 16 per worker).
    pub fn set_max_in_flight(&self, max: usize) {
        self.state.borrow_mut().max_in_flight = max.max(1);
    }

    /// The workers' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.state
            .borrow()
            .workers
            .iter()
            .map(|w| w.pid as u32)
            .collect()
    }

    /// Sends `request` to an idle worker (or queues it) and calls `then` on
    /// the loop with the answer, if the connection is still open or closing
    /// after flush (a [`close`](Context::close) waits for it). When the
    /// connection is gone, a request still queued is dropped (never sent to
    /// a worker) and a running one's answer is discarded. A worker that
    /// dies mid-request answers with an error, and is replaced.
    pub fn submit(
        &self,
        cx: &mut Context<'_>,
        request: impl Into<Bytes>,
        then: impl FnOnce(&mut Context<'_>, io::Result<Vec<u8>>) + 'static,
    ) {
        let client = cx.id();
        if let Some(why) = self.state.borrow().dead() {
            // Nothing could ever run it: say so now, not never.
            return then(cx, Err(io::Error::new(io::ErrorKind::BrokenPipe, why)));
        }
        if !cx.reactor().work_started(client) {
            log::debug!("{client} is closing: request dropped");
            return;
        }
        let pending = Pending {
            client,
            request: request.into(),
            then: Box::new(then),
        };
        let over = {
            let mut state = self.state.borrow_mut();
            state.queue.push_back(pending);
            state.in_flight() > state.max_in_flight && state.paused.insert(client)
        };
        if over {
            cx.reactor().set_offload_paused(client, true);
        }
        dispatch(cx.reactor(), &self.state);
    }
}

impl Client for RefCell<PoolState> {
    /// A client closed: its requests still queued go (no worker sees them);
    /// the answer of one running is dropped when it comes.
    fn forget(&self, reactor: &mut Reactor, id: ConnId) {
        let dropped = {
            let Ok(mut state) = self.try_borrow_mut() else {
                // Only the pool's own code borrows it, never across a call
                // that closes a connection; should that change, the requests
                // are still dropped when their answer finds no connection.
                return;
            };
            let before = state.queue.len();
            state.queue.retain(|p| p.client != id);
            state.paused.remove(&id);
            before - state.queue.len()
        };
        if dropped > 0 {
            log::debug!("{id} closed: {dropped} requests dropped before a worker saw them");
        }
        dispatch(reactor, self);
    }
}

impl PoolState {
    /// Why no request can run any more: every worker ended and none could
    /// be replaced.
    fn dead(&self) -> Option<String> {
        if self.workers.is_empty() || self.workers.iter().any(|w| w.alive) {
            return None;
        }
        Some(match self.forks.gone() {
            Some(why) => format!("the process pool has no worker left: {why}"),
            None => "the process pool has no worker left: none could be started".to_string(),
        })
    }

    fn in_flight(&self) -> usize {
        self.queue.len() + self.workers.iter().filter(|w| w.busy.is_some()).count()
    }
}

/// Gives queued requests to idle workers; resumes paused submitters once
/// the pool is below its bound.
fn dispatch(reactor: &mut Reactor, state: &RefCell<PoolState>) {
    let mut sends = Vec::new();
    let resume = {
        let mut state = state.borrow_mut();
        let state = &mut *state;
        for worker in state
            .workers
            .iter_mut()
            .filter(|w| w.alive && w.busy.is_none())
        {
            let Some(pending) = state.queue.pop_front() else {
                break;
            };
            sends.push((worker.link, pending.request.clone()));
            worker.busy = Some(pending);
        }
        if state.in_flight() <= state.max_in_flight / 2 {
            std::mem::take(&mut state.paused)
        } else {
            HashSet::new()
        }
    };
    for (link, request) in sends {
        let _ = reactor.write(link, &(request.len() as u32).to_be_bytes());
        let _ = reactor.write_bytes(link, request);
    }
    for client in resume {
        reactor.set_offload_paused(client, false);
    }
}

/// Forks worker `index`: the child serves its end of a socketpair until it
/// closes; the parent serves the other end on the reactor.
fn spawn(
    reactor: &mut Reactor,
    state: &Rc<RefCell<PoolState>>,
    index: usize,
) -> io::Result<Worker> {
    let (parent_end, child_end) = UnixStream::pair()?;
    let pid = state
        .borrow()
        .forks
        .fork(&[child_end.as_fd()], &[])
        .map_err(|e| io::Error::new(e.kind(), format!("cannot fork a worker process: {e}")))?;
    drop(child_end);
    let link = Framed::new(Link {
        state: Rc::downgrade(state),
        index,
        pid,
    });
    let opts = ConnOptions {
        max_queued: None,
        idle_timeout: None,
        ..ConnOptions::default()
    };
    match reactor.adopt(BlockingStream::Unix(parent_end), &opts, link) {
        Ok(link) => Ok(Worker {
            alive: true,
            pid,
            link,
            busy: None,
        }),
        Err(e) => {
            state.borrow().forks.signal(pid, libc::SIGKILL);
            Err(e)
        }
    }
}

/// A worker's loop: read a request, answer it, until the socket closes.
fn serve(mut socket: UnixStream, work: &(dyn Fn(&[u8]) -> Vec<u8> + Send + Sync)) {
    let mut header = [0u8; 4];
    while socket.read_exact(&mut header).is_ok() {
        let mut request = vec![0u8; u32::from_be_bytes(header) as usize];
        if socket.read_exact(&mut request).is_err() {
            return;
        }
        let (status, body) = match panic::catch_unwind(AssertUnwindSafe(|| work(&request))) {
            Ok(answer) => (0u8, answer),
            Err(panic) => (
                1,
                format!(
                    "worker panicked: {}",
                    crate::reactor::panic_message(&*panic)
                )
                .into_bytes(),
            ),
        };
        let mut frame = Vec::with_capacity(5 + body.len());
        frame.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
        frame.push(status);
        frame.extend_from_slice(&body);
        if socket.write_all(&frame).is_err() {
            return;
        }
    }
}

/// The loop's end of one worker's socketpair.
struct Link {
    state: Weak<RefCell<PoolState>>,
    index: usize,
    pid: libc::pid_t,
}

impl Link {
    /// While shutting down: closes this link once its worker has nothing to do.
    fn close_if_done(&self, cx: &mut Context<'_>, state: &Rc<RefCell<PoolState>>) {
        let state = state.borrow();
        if state.closing && state.workers[self.index].busy.is_none() && state.queue.is_empty() {
            cx.close();
        }
    }
}

impl FrameHandler for Link {
    fn terminator(&self) -> Terminator<'_> {
        Terminator::LengthPrefixed
    }

    fn max_frame(&self) -> usize {
        MAX_MESSAGE + 1
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let pending = state.borrow_mut().workers[self.index].busy.take();
        let Some(pending) = pending else {
            log::error!("worker {}: an answer nobody asked for", self.pid);
            return;
        };
        let outcome = match frame.split_first() {
            Some((0, answer)) => Ok(answer.to_vec()),
            Some((_, why)) => Err(io::Error::other(String::from_utf8_lossy(why).into_owned())),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty answer from a worker",
            )),
        };
        let reactor = cx.reactor();
        if !reactor.work_done(pending.client, |client| (pending.then)(client, outcome)) {
            log::debug!(
                "{} closed before its worker answered; answer dropped",
                pending.client
            );
        }
        dispatch(reactor, &state);
        self.close_if_done(cx, &state);
    }

    /// A graceful shutdown: no more replacements; the worker's link closes
    /// (ending the worker) once its request, if any, is answered.
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        let Some(state) = self.state.upgrade() else {
            return cx.close();
        };
        state.borrow_mut().closing = true;
        self.close_if_done(cx, &state);
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let Some(state) = self.state.upgrade() else {
            // The pool is gone, and with it the fork server: the worker's
            // socket is closed, so it ends on its own.
            return;
        };
        let (pending, closing) = {
            let mut state = state.borrow_mut();
            if matches!(reason, CloseReason::ReactorStopped) {
                state.closing = true;
            }
            (state.workers[self.index].busy.take(), state.closing)
        };
        // Its socket is closed: the worker exits (or has crashed); make sure.
        // The fork server reaps it.
        state.borrow().forks.signal(self.pid, libc::SIGKILL);
        let reactor = cx.reactor();
        if let Some(pending) = pending {
            let err = io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!(
                    "worker process {} died during the request ({reason})",
                    self.pid
                ),
            );
            reactor.work_done(pending.client, |client| (pending.then)(client, Err(err)));
        }
        if closing {
            return;
        }
        log::warn!(
            "worker process {} ended ({reason}); starting a new one",
            self.pid
        );
        match spawn(reactor, &state, self.index) {
            Ok(worker) => state.borrow_mut().workers[self.index] = worker,
            Err(e) => {
                log::error!("cannot replace worker process {}: {e}", self.pid);
                state.borrow_mut().workers[self.index].alive = false;
            }
        }
        dispatch(reactor, &state);
        let dead = state.borrow().dead();
        if let Some(why) = dead {
            log::error!("{why}: every request fails from now on");
            let queued = std::mem::take(&mut state.borrow_mut().queue);
            for pending in queued {
                let err = io::Error::new(io::ErrorKind::BrokenPipe, why.clone());
                reactor.work_done(pending.client, |client| (pending.then)(client, Err(err)));
            }
            dispatch(reactor, &state); // resumes paused submitters
        }
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("ProcessPool");
        match self.state.try_borrow() {
            Ok(state) => s
                .field("pids", &self.pids())
                .field("queued", &state.queue.len())
                .field("max_in_flight", &state.max_in_flight)
                .field("closing", &state.closing),
            Err(_) => s.field("state", &"<in use>"),
        };
        s.finish_non_exhaustive()
    }
}
