//! `Handle`: reaching a reactor from other threads.
//!
//! Commands go into a mutex-protected queue and a `mio::Waker` interrupts the
//! reactor's `poll` so they run at once: no polling interval, unlike
//! socketserver's `shutdown()` which waits up to half a second.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mio::Waker;

use crate::{ConnId, Reactor};

pub(crate) enum Command {
    Post(Box<dyn FnOnce(&mut Reactor) + Send>),
    Write(ConnId, Bytes),
    Close(ConnId),
}

pub(crate) struct Shared {
    waker: Waker,
    commands: Mutex<Vec<Command>>,
    stop: AtomicBool,
    gone: AtomicBool,
}

impl Shared {
    pub(crate) fn new(waker: Waker) -> Shared {
        Shared {
            waker,
            commands: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        }
    }

    /// Takes every queued command (swapping in `spare` to reuse its capacity).
    pub(crate) fn take_commands(&self, spare: Vec<Command>) -> Vec<Command> {
        std::mem::replace(&mut *self.lock(), spare)
    }

    /// Consumes a pending stop request.
    pub(crate) fn take_stop(&self) -> bool {
        self.stop.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    pub(crate) fn set_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Command>> {
        // A command never panics while the lock is held, but a poisoned lock
        // must not take the reactor down with it.
        self.commands.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cloneable, `Send` handle to a [`Reactor`]: stop it, run code on its
/// thread, or write to a connection, from any thread.
///
/// ```
/// let mut reactor = sockloop::Reactor::new()?;
/// let handle = reactor.handle();
/// std::thread::spawn(move || handle.stop());
/// reactor.run()?; // returns once the other thread has called stop()
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Handle {
        Handle { shared }
    }

    /// Makes [`Reactor::run`] return after the current turn. Takes effect
    /// within one wake-up (microseconds), even when called before `run` starts.
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Starts a graceful shutdown on the reactor's thread
    /// ([`Reactor::shutdown_graceful`]).
    pub fn shutdown_graceful(&self, grace: std::time::Duration) -> io::Result<()> {
        self.post(move |r| r.shutdown_graceful(grace))
    }

    /// Runs `f` on the reactor's thread at its next turn.
    ///
    /// Fails with `NotConnected` once the reactor has been dropped.
    pub fn post(&self, f: impl FnOnce(&mut Reactor) + Send + 'static) -> io::Result<()> {
        self.send(Command::Post(Box::new(f)))
    }

    /// Queues `data` on connection `id`. A write to a connection that has
    /// closed meanwhile is dropped and logged by the reactor.
    pub fn write(&self, id: ConnId, data: impl Into<Bytes>) -> io::Result<()> {
        self.send(Command::Write(id, data.into()))
    }

    /// Closes connection `id` once its queue is sent.
    pub fn close(&self, id: ConnId) -> io::Result<()> {
        self.send(Command::Close(id))
    }

    fn send(&self, command: Command) -> io::Result<()> {
        if self.shared.gone.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the reactor is gone",
            ));
        }
        let first = {
            let mut queue = self.shared.lock();
            queue.push(command);
            queue.len() == 1
        };
        // One wake per batch: the reactor drains the whole queue per wake-up.
        if first {
            self.shared.waker.wake()?;
        }
        Ok(())
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}
