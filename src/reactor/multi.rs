//! One reactor per core: N threads, each running its own reactor with its
//! own listeners bound to the same addresses with `SO_REUSEPORT`.
//!
//! The kernel spreads *connections* over the listeners (by a hash of the
//! addresses), not load: a few heavy connections may all land on one thread
//! while others idle. It helps when there are many connections of similar
//! weight and one core is saturated; it does not help a single busy
//! connection, and it adds nothing on a machine where the load generator or
//! other processes already use the other cores.

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::{Handle, Reactor};

/// Reactors running on threads of their own (see the module docs).
///
/// ```
/// use sockloop::{Addr, ListenOptions, Reactors};
/// use std::sync::{Arc, Mutex};
///
/// // The first reactor picks a free port; the others bind the same one.
/// let port: Arc<Mutex<Option<Addr>>> = Arc::default();
/// let shared = port.clone();
/// let reactors = Reactors::spawn(2, move |_index, reactor| {
///     let mut addr = shared.lock().unwrap();
///     let wanted = addr.clone().unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
///     let mut opts = ListenOptions::default();
///     opts.reuse_port = true;
///     let id = reactor.listen_with(&wanted, &opts, |_| Echo)?;
///     *addr = Some(reactor.listener_addr(id)?);
///     Ok(())
/// })?;
/// reactors.handle().stop(); // one call stops them all
/// reactors.join()?;
/// # struct Echo;
/// # impl sockloop::Protocol for Echo {
/// #     fn on_data(&mut self, cx: &mut sockloop::Context<'_>, d: &mut sockloop::bytes::BytesMut) { cx.write_bytes(d.split().freeze()) }
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "dropping Reactors detaches its threads: keep it and `join` it"]
pub struct Reactors {
    handle: ReactorsHandle,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

/// Stops every reactor of a [`Reactors`] group; `Clone + Send`.
#[derive(Clone, Debug)]
pub struct ReactorsHandle {
    handles: Arc<[Handle]>,
}

impl ReactorsHandle {
    /// Makes every reactor's `run` return.
    pub fn stop(&self) {
        for handle in self.handles.iter() {
            handle.stop();
        }
    }

    /// The handle of reactor `index`, to post to or write through.
    pub fn get(&self, index: usize) -> Option<&Handle> {
        self.handles.get(index)
    }

    /// Number of reactors.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True for a group of no reactors.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

impl Reactors {
    /// Starts `n` threads, each with a reactor that `setup(index, reactor)`
    /// fills with listeners, then runs. The setups run one after another in
    /// index order, so the first may choose ports (port 0) for the others to
    /// reuse. If a setup fails, every reactor is stopped and the error returned.
    pub fn spawn<F>(n: usize, setup: F) -> io::Result<Reactors>
    where
        F: Fn(usize, &mut Reactor) -> io::Result<()> + Send + Sync + 'static,
    {
        let setup = Arc::new(setup);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut failure = None;
        for index in 0..n.max(1) {
            let (tx, rx) = mpsc::channel();
            let setup = setup.clone();
            let spawned = thread::Builder::new()
                .name(format!("reactor-{index}"))
                .spawn(move || {
                    let mut reactor =
                        match Reactor::new().and_then(|mut r| setup(index, &mut r).map(|()| r)) {
                            Ok(reactor) => reactor,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return Ok(());
                            }
                        };
                    let _ = tx.send(Ok(reactor.handle()));
                    reactor.run()
                });
            let ready = spawned.and_then(|thread| {
                threads.push(thread);
                rx.recv().map_err(|_| {
                    io::Error::other(format!("reactor thread {index} died in setup"))
                })?
            });
            match ready {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let reactors = Reactors {
            handle: ReactorsHandle {
                handles: handles.into(),
            },
            threads,
        };
        match failure {
            None => Ok(reactors),
            Some(e) => {
                reactors.handle.stop();
                let _ = reactors.join();
                Err(e)
            }
        }
    }

    /// A handle that stops them all.
    pub fn handle(&self) -> ReactorsHandle {
        self.handle.clone()
    }

    /// Waits for every reactor to return (after a stop); the first error wins.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.threads {
            let outcome = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a reactor thread panicked")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

impl std::fmt::Debug for Reactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.threads.iter().filter(|t| !t.is_finished()).count();
        f.debug_struct("Reactors")
            .field("reactors", &self.threads.len())
            .field("running", &running)
            .finish_non_exhaustive()
    }
}
