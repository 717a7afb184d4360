//! A fixed set of threads taking jobs from one queue: the one pool
//! implementation behind the offload pool (`cx.offload`) and a
//! socketserver-style server's `Mode::Pool`.
//!
//! The queue is a deque the owner can reach into (a channel could not):
//! jobs not started yet can be taken back out (a closed connection's), and
//! closing it hands back what no thread took. Threads leave once the queue
//! is closed and empty: what was queued before the close still runs.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

struct Queue<J> {
    jobs: VecDeque<J>,
    closed: bool,
}

struct Shared<J> {
    queue: Mutex<Queue<J>>,
    ready: Condvar,
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, Queue<J>> {
        // Jobs run outside the lock (and their panics are the runner's to
        // catch): poison is never a broken queue.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The threads and their queue.
pub(crate) struct ThreadSet<J> {
    shared: Arc<Shared<J>>,
    threads: Vec<JoinHandle<()>>,
}

impl<J: Send + 'static> ThreadSet<J> {
    /// Starts `count` threads named `name-N`, each running `run` on the jobs
    /// it takes. A thread that cannot be started is logged and left out.
    pub(crate) fn start(
        count: usize,
        name: &str,
        run: impl Fn(J) + Send + Sync + 'static,
    ) -> ThreadSet<J> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let run = Arc::new(run);
        let threads = (0..count)
            .filter_map(|n| {
                let (shared, run) = (shared.clone(), run.clone());
                let spawned = thread::Builder::new()
                    .name(format!("{name}-{n}"))
                    .spawn(move || serve(&shared, &*run));
                spawned
                    .map_err(|e| log::error!("cannot start thread {name}-{n}: {e}"))
                    .ok()
            })
            .collect();
        ThreadSet { shared, threads }
    }

    /// Threads that did start.
    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Queues `job` for the next idle thread.
    pub(crate) fn push(&self, job: J) {
        self.shared.lock().jobs.push_back(job);
        self.shared.ready.notify_one();
    }

    /// Takes back the queued jobs (not started yet) that `take` picks, in
    /// order.
    pub(crate) fn take_queued(&self, mut take: impl FnMut(&J) -> bool) -> Vec<J> {
        let mut queue = self.shared.lock();
        // The common case (a closed connection with no queued job) keeps
        // the queue as it is: no copy under the lock the workers wait on.
        if !queue.jobs.iter().any(&mut take) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(queue.jobs.len());
        for job in queue.jobs.drain(..) {
            if take(&job) {
                taken.push(job);
            } else {
                kept.push_back(job);
            }
        }
        queue.jobs = kept;
        taken
    }

    /// Closes the queue: threads leave once it is empty. With `drain`, the
    /// jobs no thread took yet are handed back (they never run); without,
    /// they still run.
    pub(crate) fn close(&self, drain: bool) -> Vec<J> {
        let unstarted = {
            let mut queue = self.shared.lock();
            queue.closed = true;
            if drain {
                queue.jobs.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        self.shared.ready.notify_all();
        unstarted
    }

    /// The threads, for the owner to join (or leave behind).
    pub(crate) fn take_threads(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.threads)
    }
}

/// A thread: runs jobs until the queue is closed and empty.
fn serve<J>(shared: &Shared<J>, run: &dyn Fn(J)) {
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
        run(job);
    }
}
