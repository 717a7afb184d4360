//! Offloading to a bounded pool of threads: `cx.offload(job, then)`.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::{ConnId, Context, Handle, Reactor};

/// Size and limits of a reactor's offload thread pool.
#[derive(Clone, Debug)]
pub struct OffloadOptions {
    /// Worker threads (default 4).
    pub workers: usize,
    /// Jobs waiting for a worker (default 64). Beyond, jobs wait on the
    /// reactor and the connections that submit them stop reading until the
    /// pool catches up: memory stays bounded, no job is dropped.
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
    key: usize,
    work: Work,
}

/// The reactor's side of the pool.
pub(crate) struct ThreadPool {
    queue: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Set at shutdown: queued jobs are answered with an error, not run.
    cancelled: Arc<AtomicBool>,
    /// Jobs handed to the threads and not yet answered; at most `capacity`,
    /// which is also the channel's size, so a send never blocks the loop.
    in_flight: usize,
    capacity: usize,
    /// Jobs that found the pool full, in order.
    overflow: VecDeque<Job>,
    /// What to do with each job's result, on the loop thread.
    waiting: Slab<(ConnId, Then)>,
    /// Connections that stopped reading because the pool was full.
    paused: Vec<ConnId>,
    grace: Duration,
}

impl ThreadPool {
    fn start(opts: &OffloadOptions, reactor: Handle) -> ThreadPool {
        let workers = opts.workers.max(1);
        let capacity = workers + opts.queue;
        let (queue, receiver) = mpsc::sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let cancelled = Arc::new(AtomicBool::new(false));
        let threads = (0..workers)
            .filter_map(|n| {
                let (receiver, cancelled, reactor) =
                    (receiver.clone(), cancelled.clone(), reactor.clone());
                let spawned =
                    thread::Builder::new()
                        .name(format!("offload-{n}"))
                        .spawn(move || loop {
                            let next = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(job) = next else { return };
                            let outcome = if cancelled.load(Ordering::Acquire) {
                                Err(io::Error::new(
                                    io::ErrorKind::Interrupted,
                                    "offload job cancelled: the reactor stopped",
                                ))
                            } else {
                                panic::catch_unwind(AssertUnwindSafe(job.work)).map_err(|panic| {
                                    let msg = crate::reactor::panic_message(&*panic);
                                    io::Error::other(format!("offload job panicked: {msg}"))
                                })
                            };
                            let key = job.key;
                            // Fails only once the reactor is gone; nobody waits then.
                            let _ = reactor.post(move |r| r.offload_finished(key, outcome));
                        });
                spawned
                    .map_err(|e| log::error!("cannot start offload thread {n}: {e}"))
                    .ok()
            })
            .collect();
        ThreadPool {
            queue: Some(queue),
            threads,
            cancelled,
            in_flight: 0,
            capacity,
            overflow: VecDeque::new(),
            waiting: Slab::new(),
            paused: Vec::new(),
            grace: opts.grace,
        }
    }

    /// Hands a job to the threads, or holds it when they are full.
    fn submit(&mut self, job: Job) -> bool {
        if self.in_flight >= self.capacity {
            self.overflow.push_back(job);
            return false;
        }
        let Some(queue) = &self.queue else {
            return false;
        };
        match queue.try_send(job) {
            Ok(()) => {
                self.in_flight += 1;
                true
            }
            Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) => {
                self.overflow.push_front(job);
                false
            }
        }
    }
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
        if !pool.submit(Job { key, work }) && !pool.paused.contains(&id) {
            pool.paused.push(id);
            self.set_offload_paused(id, true);
        }
    }

    /// A job's result arrived (through the waker): hand it to its `then`,
    /// and let a waiting job take the freed place.
    pub(crate) fn offload_finished(&mut self, key: usize, outcome: Outcome) {
        let Some(pool) = self.offload.as_mut() else {
            return;
        };
        pool.in_flight -= 1;
        let Some((id, then)) = pool.waiting.try_remove(key) else {
            return;
        };
        while pool.in_flight < pool.capacity {
            let Some(job) = pool.overflow.pop_front() else {
                break;
            };
            if !pool.submit(job) {
                break;
            }
        }
        let resume = if pool.overflow.is_empty() {
            std::mem::take(&mut pool.paused)
        } else {
            Vec::new()
        };
        if !self.with_context(id, |cx| then(cx, outcome)) {
            log::debug!("{id} closed before its offload job finished; result dropped");
        }
        for id in resume {
            self.set_offload_paused(id, false);
        }
    }

    /// At reactor drop: jobs not started are answered with an error, running
    /// ones get `grace` to finish, and every answer reaches its `then`.
    pub(crate) fn stop_offload(&mut self) {
        let Some(mut pool) = self.offload.take() else {
            return;
        };
        pool.cancelled.store(true, Ordering::Release);
        pool.queue = None; // threads leave once the queue is empty
                           // A grace past the end of time means: wait for the jobs.
        let deadline = Instant::now().checked_add(pool.grace);
        for thread in pool.threads.drain(..) {
            while !thread.is_finished() && deadline.is_none_or(|d| Instant::now() < d) {
                thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                log::warn!(
                    "an offload job outlived the {:?} grace period; its thread is left running",
                    pool.grace
                );
            }
        }
        let cancelled = || {
            io::Error::new(
                io::ErrorKind::Interrupted,
                "offload job cancelled: the reactor stopped",
            )
        };
        let mut answers: Vec<(ConnId, Then, Outcome)> = Vec::new();
        for job in pool.overflow.drain(..) {
            if let Some((id, then)) = pool.waiting.try_remove(job.key) {
                answers.push((id, then, Err(cancelled())));
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
            self.with_context(id, |cx| then(cx, outcome));
        }
    }
}
