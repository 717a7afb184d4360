//! Offloading to a bounded pool of threads: `cx.offload(job, then)`.

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use slab::Slab;

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
/// let mut reactor = Reactor::new()?;
/// reactor.set_offload_options(opts)?;
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

/// Jobs handed to the threads and not started yet. A deque the loop can
/// reach into (a channel could not): a closed connection's jobs are taken
/// out before any thread starts them.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Set at shutdown: threads leave once it is empty.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A job's panic is caught outside the lock: poison is never ours.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The reactor's side of the pool.
pub(crate) struct ThreadPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
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
}

impl ThreadPool {
    fn start(opts: &OffloadOptions, reactor: Handle) -> ThreadPool {
        let workers = opts.workers.max(1);
        let capacity = workers + opts.queue;
        let shared = Arc::new(Shared::default());
        let threads = (0..workers)
            .filter_map(|n| {
                let (shared, reactor) = (shared.clone(), reactor.clone());
                let spawned = thread::Builder::new()
                    .name(format!("offload-{n}"))
                    .spawn(move || serve(&shared, &reactor));
                spawned
                    .map_err(|e| log::error!("cannot start offload thread {n}: {e}"))
                    .ok()
            })
            .collect();
        ThreadPool {
            shared,
            threads,
            handed: 0,
            workers,
            capacity,
            overflow: VecDeque::new(),
            waiting: Slab::new(),
            paused: HashSet::new(),
            grace: opts.grace,
        }
    }

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
        self.shared.lock().jobs.push_back(job);
        self.shared.ready.notify_one();
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

/// A pool thread: runs jobs until the pool closes, and posts each result
/// back to the loop.
fn serve(shared: &Shared, reactor: &Handle) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(job.work)).map_err(|panic| {
            let msg = crate::reactor::panic_message(&*panic);
            io::Error::other(format!("offload job panicked: {msg}"))
        });
        let key = job.key;
        // Fails only once the reactor is gone; nobody waits then.
        let _ = reactor.post(move |r| r.offload_finished(key, outcome));
    }
}

fn cancelled() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "offload job cancelled: the reactor stopped",
    )
}

impl Reactor {
    /// Sets the size of the offload pool; takes effect if called before the
    /// first [`Context::offload`], else fails with `AlreadyExists`.
    pub fn set_offload_options(&mut self, opts: OffloadOptions) -> io::Result<()> {
        if self.offload.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the offload pool is already running",
            ));
        }
        self.offload_options = opts;
        Ok(())
    }

    pub(crate) fn offload<T, J, F>(&mut self, id: ConnId, job: J, then: F)
    where
        T: Send + 'static,
        J: FnOnce() -> T + Send + 'static,
        F: FnOnce(&mut Context<'_>, io::Result<T>) + 'static,
    {
        if !self.work_started(id) {
            log::debug!("{id} is closing: offload job dropped");
            return;
        }
        if self.offload.is_none() {
            self.offload = Some(ThreadPool::start(&self.offload_options, self.handle()));
        }
        let pool = self.offload.as_mut().expect("started above");
        let then: Then = Box::new(move |cx, outcome| {
            then(
                cx,
                outcome.map(|b| {
                    *b.downcast::<T>()
                        .expect("an offload job's result has its type")
                }),
            )
        });
        let key = pool.waiting.insert((id, then));
        let work: Work = Box::new(move || Box::new(job()));
        if !pool.submit(Job { id, key, work }) && pool.paused.insert(id) {
            self.set_offload_paused(id, true);
        }
    }

    /// A job's result arrived (through the waker): hand it to its `then`
    /// (unless its connection is gone: then it is dropped), and let a held
    /// job take the freed place.
    pub(crate) fn offload_finished(&mut self, key: usize, outcome: Outcome) {
        let Some(pool) = self.offload.as_mut() else {
            return;
        };
        pool.handed -= 1;
        pool.refill();
        let resume = pool.take_resumable();
        if let Some((id, then)) = pool.waiting.try_remove(key) {
            if !self.work_done(id, |cx| then(cx, outcome)) {
                log::debug!("{id} closed before its offload job finished; result dropped");
            }
        }
        for id in resume {
            self.set_offload_paused(id, false);
        }
    }

    /// Connection `id` closed: its jobs not started yet are dropped (never
    /// run), the results of its running ones will be.
    pub(crate) fn offload_forget(&mut self, id: ConnId) {
        let Some(pool) = self.offload.as_mut() else {
            return;
        };
        // Jobs not started leave every queue with their `then`. A running
        // job keeps its entry (its key must not be reused before its result
        // comes back); the result then finds the connection gone.
        let mut dropped: Vec<usize> = Vec::new();
        pool.overflow.retain(|job| {
            let keep = job.id != id;
            if !keep {
                dropped.push(job.key);
            }
            keep
        });
        {
            let mut queue = pool.shared.lock();
            let before = dropped.len();
            queue.jobs.retain(|job| {
                let keep = job.id != id;
                if !keep {
                    dropped.push(job.key);
                }
                keep
            });
            pool.handed -= dropped.len() - before;
        }
        for &key in &dropped {
            drop(pool.waiting.remove(key));
        }
        pool.paused.remove(&id);
        pool.refill();
        let resume = pool.take_resumable();
        if !dropped.is_empty() {
            let dropped = dropped.len();
            log::debug!("{id} closed: {dropped} offload jobs dropped before they started");
        }
        for id in resume {
            self.set_offload_paused(id, false);
        }
    }

    /// At reactor drop: jobs not started are answered with an error, running
    /// ones get `grace` to finish (none after [`stop_now`](Reactor::stop_now)),
    /// and every answer reaches its `then`.
    pub(crate) fn stop_offload(&mut self, hurry: bool) {
        let Some(mut pool) = self.offload.take() else {
            return;
        };
        let mut answers: Vec<(ConnId, Then, Outcome)> = Vec::new();
        let unstarted: Vec<Job> = {
            let mut queue = pool.shared.lock();
            queue.closed = true;
            queue.jobs.drain(..).collect()
        };
        pool.shared.ready.notify_all();
        for job in unstarted.into_iter().chain(pool.overflow.drain(..)) {
            if let Some((id, then)) = pool.waiting.try_remove(job.key) {
                answers.push((id, then, Err(cancelled())));
            }
        }
        let grace = if hurry { Duration::ZERO } else { pool.grace };
        // A grace past the end of time means: wait for the jobs.
        let deadline = Instant::now().checked_add(grace);
        for thread in pool.threads.drain(..) {
            while !thread.is_finished() && deadline.is_none_or(|d| Instant::now() < d) {
                thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else if hurry {
                log::info!("stopping now: an offload job still running is left behind");
            } else {
                log::warn!(
                    "an offload job outlived the {:?} grace period; its thread is left running",
                    pool.grace
                );
            }
        }
        // Answers of the threads arrived as commands: run them with the pool
        // back in place, then answer the rest.
        self.offload = Some(pool);
        self.run_commands();
        let mut pool = self.offload.take().expect("put back above");
        for (id, then) in pool.waiting.drain() {
            answers.push((id, then, Err(cancelled())));
        }
        for (id, then, outcome) in answers {
            self.work_done(id, |cx| then(cx, outcome));
        }
    }
}
