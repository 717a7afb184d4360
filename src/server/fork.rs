//! A process per request (`ForkingMixIn`), and reaping the children.
//!
//! Only the pids this server forked are waited for, one by one with
//! `waitpid(pid, WNOHANG)`: never `waitpid(-1)`, which would steal the exit
//! status of a child the application forked itself (CPython issue 1540386).

use std::io::{self, Write};
use std::sync::Arc;

use super::request::{process, Incoming};
use super::Shared;

pub(crate) struct Children {
    pids: Vec<libc::pid_t>,
    max: usize,
    block_on_close: bool,
}

impl Children {
    pub(crate) fn new(max: usize, block_on_close: bool) -> Children {
        Children {
            pids: Vec::new(),
            max,
            block_on_close,
        }
    }

    pub(crate) fn has_room(&self) -> bool {
        self.pids.len() < self.max
    }

    pub(crate) fn len(&self) -> usize {
        self.pids.len()
    }

    /// Forks; the child serves `incoming` and exits, the parent keeps the
    /// pid and closes its copy of the connection (dropping `incoming`).
    pub(crate) fn fork(&mut self, incoming: Incoming, shared: &Arc<Shared>) {
        // SAFETY: fork has no memory-safety preconditions. The child only runs
        // the request and leaves with `_exit`, never returning into the loop.
        match unsafe { libc::fork() } {
            -1 => {
                let e = io::Error::last_os_error();
                log::error!("fork failed: {e}; request from {} dropped", incoming.peer());
                (shared.handle_error)(incoming.peer(), &e);
            }
            0 => {
                crate::child::restore_default_signals();
                crate::child::close_fds_except(&[incoming.raw_fd()]);
                let ok = process(incoming, shared);
                let _ = io::stdout().flush();
                let _ = io::stderr().flush();
                // SAFETY: ends the child without running the parent's
                // destructors or atexit handlers on state it only copied.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                log::debug!(target: "sockloop::server", "forked {pid} for {}", incoming.peer());
                self.pids.push(pid);
            }
        }
    }

    /// Reaps children that exited (all of them, waiting, when `block`).
    pub(crate) fn reap(&mut self, block: bool) {
        let flags = if block { 0 } else { libc::WNOHANG };
        self.pids.retain(|&pid| {
            let mut status = 0;
            loop {
                // SAFETY: a plain system call on a pid we forked.
                match unsafe { libc::waitpid(pid, &mut status, flags) } {
                    0 => return true, // still running
                    -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {
                        continue
                    }
                    // Reaped now, or (ECHILD) already gone: either way not ours to track.
                    _ => return false,
                }
            }
        });
    }

    pub(crate) fn close(&mut self) {
        self.reap(self.block_on_close);
    }
}
