//! Offloading to a bounded pool of threads: `cx.offload(job, then)`.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use slab::Slab;

use super::thread_set::ThreadSet;
use crate::reactor::client::Client;
use crate::{ConnId, Context, Handle, Reactor};

/// Size and limits of a reactor's offload thread pool: start from `default()`
/// and set what differs (the struct is `#[non_exhaustive]`, see
/// [`ListenOptions`](crate::ListenOptions)).
///
/// ```
/// use sockloop::{OffloadOptions, Reactor};
///
/// let mut opts = OffloadOptions::default();
/// opts.workers = 8;
/// let reactor = Reactor::with_offload(opts)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OffloadOptions {
    /// Worker threads (default 4).
    pub workers: usize,
    /// Jobs waiting for a worker (default 64), on the loop: a thread is
    /// given one job at a time. Beyond, the connections that submit more stop
    /// reading until the pool catches up: memory stays bounded, no job is
    /// dropped.
    pub queue: usize,
    /// When the reactor is dropped, how long running jobs may take before
    /// their threads are left behind (default 5 s).
    pub grace: Duration,
}

impl OffloadOptions {
    /// No workers would run nothing: refused (with the options' one
    /// message) wherever a pool is configured.
    fn check(&self) -> io::Result<()> {
        if self.workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "OffloadOptions::workers must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for OffloadOptions {
    fn default() -> OffloadOptions {
        OffloadOptions {
            workers: 4,
            queue: 64,
            grace: Duration::from_secs(5),
        }
    }
}

type Work = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;
type Outcome = io::Result<Box<dyn Any + Send>>;
type Then = Box<dyn FnOnce(&mut Context<'_>, Outcome)>;

struct Job {
    /// The connection that submitted it: its jobs go when it closes.
    id: ConnId,
    key: usize,
    work: Work,
}

/// The reactor's side of the pool: a client of the loop, owned by the
/// reactor (one per reactor), reached by `Context::offload`.
pub(crate) struct ThreadPool {
    state: RefCell<PoolState>,
}

struct PoolState {
    /// The threads and the jobs handed to them, not started yet (a closed
    /// connection's are taken back out before any thread starts them).
    set: ThreadSet<Job>,
    /// Jobs handed to the threads and not yet answered: at most one per
    /// thread. The rest wait on the loop, where the close of their
    /// connection finds them: a thread that finishes does not start the next
    /// job of a client that has just left before the loop learns it left.
    handed: usize,
    workers: usize,
    /// `workers + queue`: jobs beyond it pause the connections that submit them.
    capacity: usize,
    /// Jobs waiting for a thread, in order.
    overflow: VecDeque<Job>,
    /// What to do with each job's result, on the loop thread.
    waiting: Slab<(ConnId, Then)>,
    /// Connections that stopped reading because the pool was full.
    /// A set: membership is asked at every submit to a full pool.
    paused: HashSet<ConnId>,
    grace: Duration,
    /// The reactor is going: no job is taken any more.
    stopped: bool,
}

impl ThreadPool {
    fn start(opts: &OffloadOptions, reactor: Handle) -> ThreadPool {
        let workers = opts.workers;
        let capacity = workers + opts.queue;
        let set = ThreadSet::start(workers, "offload", move |job: Job| {
            let outcome = panic::catch_unwind(AssertUnwindSafe(job.work)).map_err(|panic| {
                let msg = crate::reactor::panic_message(&*panic);
                io::Error::other(format!("offload job panicked: {msg}"))
            });
            let key = job.key;
            // Fails only once the reactor is gone; nobody waits then.
            let _ = reactor.post(move |r| finished(r, key, outcome));
        });
        ThreadPool {
            state: RefCell::new(PoolState {
                set,
                handed: 0,
                workers,
                capacity,
                overflow: VecDeque::new(),
                waiting: Slab::new(),
                paused: HashSet::new(),
                grace: opts.grace,
                stopped: false,
            }),
        }
    }

    /// The reactor's pool, started with the default options at the first
    /// use unless [`Reactor::with_offload`] started it.
    fn of(reactor: &mut Reactor) -> std::rc::Rc<ThreadPool> {
        reactor.owned_client(|r| ThreadPool::start(&OffloadOptions::default(), r.handle()))
    }

    fn state(&self) -> std::cell::RefMut<'_, PoolState> {
        // Borrowed only within this file, never across user code.
        self.state.borrow_mut()
    }
}

impl PoolState {
    /// Hands a job to an idle thread, or holds it; false when the pool is
    /// over its capacity (its submitter should stop reading).
    fn submit(&mut self, job: Job) -> bool {
        if self.handed < self.workers {
            self.hand(job);
        } else {
            self.overflow.push_back(job);
        }
        !self.over_capacity()
    }

    fn hand(&mut self, job: Job) {
        self.set.push(job);
        self.handed += 1;
    }

    fn over_capacity(&self) -> bool {
        self.handed + self.overflow.len() > self.capacity
    }

    /// Hands held jobs to the threads that are idle.
    fn refill(&mut self) {
        while self.handed < self.workers {
            let Some(job) = self.overflow.pop_front() else {
                break;
            };
            self.hand(job);
        }
    }

    /// The paused connections to resume: all of them once the pool is
    /// within its capacity again.
    fn take_resumable(&mut self) -> HashSet<ConnId> {
        if !self.over_capacity() {
            std::mem::take(&mut self.paused)
        } else {
            HashSet::new()
        }
    }
}

fn cancelled() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "offload job cancelled: the reactor stopped",
    )
}

impl Reactor {
    /// Creates a reactor whose offload pool (the threads of
    /// [`Context::offload`]) has these options; [`Reactor::new`] gives it
    /// the defaults. The threads start now. Zero workers is refused
    /// (`InvalidInput`).
    ///
    /// ```
    /// use sockloop::{OffloadOptions, Reactor};
    ///
    /// let mut opts = OffloadOptions::default();
    /// opts.workers = 2;
    /// let reactor = Reactor::with_offload(opts)?;
    /// # drop(reactor);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_offload(opts: OffloadOptions) -> io::Result<Reactor> {
        opts.check()?;
        let mut reactor = Reactor::new()?;
        reactor.owned_client(|r| ThreadPool::start(&opts, r.handle()));
        Ok(reactor)
    }

    /// Sets the size of the offload pool; takes effect if called before the
    /// first [`Context::offload`], else fails with `AlreadyExists`.
    #[deprecated(
        since = "0.1.0",
        note = "a mistake only found at run time: give the options up front with `Reactor::with_offload`"
    )]
    pub fn set_offload_options(&mut self, opts: OffloadOptions) -> io::Result<()> {
        opts.check()?;
        if self.find_client::<ThreadPool>().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the offload pool is already running",
            ));
        }
        self.owned_client(|r| ThreadPool::start(&opts, r.handle()));
        Ok(())
    }
}

impl Context<'_> {
    /// Runs `job` on the reactor's offload thread pool, then `then` on the
    /// loop with its result, if this connection is still open (else the
    /// result is dropped, logged at debug level). A job that panics gives
    /// `then` an error. When the pool is full the job waits and this
    /// connection stops reading until the pool catches up. The pool's size
    /// is set with [`Reactor::with_offload`].
    ///
    /// ```
    /// use sockloop::bytes::BytesMut;
    /// use sockloop::{Context, Protocol};
    ///
    /// struct Slow;
    /// impl Protocol for Slow {
    ///     fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
    ///         let input = data.split().freeze();
    ///         cx.offload(
    ///             move || input.to_ascii_uppercase(), // on a pool thread: may block
    ///             |cx, result| match result {
    ///                 Ok(answer) => cx.write_bytes(answer),
    ///                 Err(e) => cx.close_with(sockloop::CloseReason::Error(e)),
    ///             },
    ///         );
    ///     }
    /// }
    /// ```
    pub fn offload<T, J, F>(&mut self, job: J, then: F)
    where
        T: Send + 'static,
        J: FnOnce() -> T + Send + 'static,
        F: FnOnce(&mut Context<'_>, io::Result<T>) + 'static,
    {
        let id = self.id();
        submit(self.reactor(), id, job, then);
    }
}

fn submit<T, J, F>(reactor: &mut Reactor, id: ConnId, job: J, then: F)
where
    T: Send + 'static,
    J: FnOnce() -> T + Send + 'static,
    F: FnOnce(&mut Context<'_>, io::Result<T>) + 'static,
{
    let pool = ThreadPool::of(reactor);
    if pool.state().stopped {
        log::debug!("{id}: the reactor is going; offload job dropped");
        return;
    }
    if !reactor.work_started(id) {
        log::debug!("{id} is closing: offload job dropped");
        return;
    }
    let then: Then = Box::new(move |cx, outcome| {
        then(
            cx,
            outcome.map(|b| {
                *b.downcast::<T>()
                    .expect("an offload job's result has its type")
            }),
        )
    });
    let work: Work = Box::new(move || Box::new(job()));
    let full = {
        let mut state = pool.state();
        let key = state.waiting.insert((id, then));
        !state.submit(Job { id, key, work }) && state.paused.insert(id)
    };
    if full {
        reactor.set_offload_paused(id, true);
    }
}

/// A job's result arrived (through the waker): hand it to its `then`
/// (unless its connection is gone: then it is dropped), and let a held
/// job take the freed place.
fn finished(reactor: &mut Reactor, key: usize, outcome: Outcome) {
    let Some(pool) = reactor.find_client::<ThreadPool>() else {
        return;
    };
    let (answer, resume) = {
        let mut state = pool.state();
        state.handed -= 1;
        state.refill();
        let resume = state.take_resumable();
        (state.waiting.try_remove(key), resume)
    };
    if let Some((id, then)) = answer {
        if !reactor.work_done(id, |cx| then(cx, outcome)) {
            log::debug!("{id} closed before its offload job finished; result dropped");
        }
    }
    for id in resume {
        reactor.set_offload_paused(id, false);
    }
}

impl Client for ThreadPool {
    /// Connection `id` closed: its jobs not started yet are dropped (never
    /// run), the results of its running ones will be.
    fn forget(&self, reactor: &mut Reactor, id: ConnId) {
        let (dropped, resume) = {
            let mut state = self.state();
            let state = &mut *state;
            // Jobs not started leave every queue with their `then`. A running
            // job keeps its entry (its key must not be reused before its result
            // comes back); the result then finds the connection gone.
            let mut dropped: Vec<usize> = Vec::new();
            state.overflow.retain(|job| {
                let keep = job.id != id;
                if !keep {
                    dropped.push(job.key);
                }
                keep
            });
            let handed = state.set.take_queued(|job| job.id == id);
            state.handed -= handed.len();
            dropped.extend(handed.iter().map(|job| job.key));
            // The `then`s are dropped after the borrow: they may own
            // anything, a pool handle among them.
            let thens: Vec<_> = dropped
                .iter()
                .map(|&key| state.waiting.remove(key))
                .collect();
            state.paused.remove(&id);
            state.refill();
            (thens, state.take_resumable())
        };
        if !dropped.is_empty() {
            let dropped = dropped.len();
            log::debug!("{id} closed: {dropped} offload jobs dropped before they started");
        }
        for id in resume {
            reactor.set_offload_paused(id, false);
        }
    }

    /// At reactor drop: jobs not started are answered with an error, running
    /// ones get `grace` to finish (none after [`stop_now`](Reactor::stop_now)),
    /// and every answer reaches its `then`.
    fn stop(&self, reactor: &mut Reactor, hurry: bool) {
        let mut answers: Vec<(ConnId, Then, Outcome)> = Vec::new();
        let (threads, grace) = {
            let mut state = self.state();
            let state = &mut *state;
            state.stopped = true;
            let unstarted = state.set.close(true);
            for job in unstarted.into_iter().chain(state.overflow.drain(..)) {
                if let Some((id, then)) = state.waiting.try_remove(job.key) {
                    answers.push((id, then, Err(cancelled())));
                }
            }
            (state.set.take_threads(), state.grace)
        };
        let wait = if hurry { Duration::ZERO } else { grace };
        // A grace past the end of time means: wait for the jobs.
        let deadline = Instant::now().checked_add(wait);
        for thread in threads {
            while !thread.is_finished() && deadline.is_none_or(|d| Instant::now() < d) {
                thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else if hurry {
                log::info!("stopping now: an offload job still running is left behind");
            } else {
                log::warn!(
                    "an offload job outlived the {grace:?} grace period; its thread is left running"
                );
            }
        }
        // Answers of the threads arrived as commands: run them, then answer
        // the rest.
        reactor.run_commands();
        answers.extend(
            self.state()
                .waiting
                .drain()
                .map(|(id, then)| (id, then, Err(cancelled()))),
        );
        for (id, then, outcome) in answers {
            reactor.work_done(id, |cx| then(cx, outcome));
        }
    }
}
