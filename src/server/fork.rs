//! A process per request (`ForkingMixIn`), forked by a fork server.
//!
//! The fork server (src/process/forkserver.rs) is forked when the server is built,
//! before the server binds anything, so it holds none of the server's
//! sockets; each request's socket is passed to it and on to the child.
//! It reaps the children and reports each exit on a socket the server's
//! loop reads; a child reaches its parent on the same socket (a handler's
//! `request.server().shutdown()`). Only the children of this server are
//! waited for: a child the application forked itself keeps its exit status
//! (CPython issue 1540386).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;

use super::request::{decode_incoming, encode_incoming, process, Incoming};
use super::{Family, ServerHandle, Shared, SHUTDOWN_REQUEST};
use crate::process::forkserver::ForkServer;
use crate::process::wire::decode_report;
use crate::{BlockingStream, ConnOptions, Context, Protocol, Reactor};

/// Starts the fork server of a forking server, and the socket its reports
/// (and the children's shutdown requests) come back on.
pub(crate) fn start(
    shared: &Arc<Shared>,
    family: Family,
) -> io::Result<(Arc<ForkServer>, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let reports = theirs.as_raw_fd();
    let child_shared = shared.clone();
    let job = Box::new(move |fds, payload: &[u8], config: &[u8]| {
        let shared = &child_shared;
        let _ = shared.parent.set(reports);
        let _ = shared.addrs.set(super::request::decode_addrs(config));
        match decode_incoming(family, fds, payload) {
            Some(incoming) => i32::from(!process(incoming, shared)),
            None => 2,
        }
    });
    let forks = ForkServer::start(&[ours.as_raw_fd()], Some(reports), false, job)?;
    drop(theirs);
    Ok((Arc::new(forks), ours))
}

pub(crate) struct Children {
    forks: Arc<ForkServer>,
    /// Pids the fork server reported as exited, not yet taken off `pids`.
    exited: Rc<RefCell<Vec<libc::pid_t>>>,
    /// The fork server's lifeline closed: it is gone (an event, so that the
    /// loop need not ask at every turn).
    lost: Rc<Cell<bool>>,
    pids: Vec<libc::pid_t>,
    max: usize,
    block_on_close: bool,
}

impl Children {
    /// Reads the fork server's reports on the loop, so that an exit wakes
    /// it. At `max` children the server stops accepting; `block_on_close`:
    /// `server_close` waits for them.
    pub(crate) fn new(
        reactor: &mut Reactor,
        (forks, reports): (Arc<ForkServer>, UnixStream),
        shared: &Arc<Shared>,
        max: usize,
        block_on_close: bool,
    ) -> io::Result<Children> {
        let exited = Rc::new(RefCell::new(Vec::new()));
        let opts = ConnOptions {
            max_queued: None,
            idle_timeout: None,
            ..ConnOptions::default()
        };
        let reader = Reports {
            exited: exited.clone(),
            handle: ServerHandle {
                shared: shared.clone(),
            },
        };
        reactor.adopt(BlockingStream::Unix(reports), &opts, reader)?;
        let lost = Rc::new(Cell::new(false));
        if let Some(lifeline) = forks.take_lifeline() {
            let watch = Lifeline { lost: lost.clone() };
            reactor.adopt(BlockingStream::Unix(lifeline), &opts, watch)?;
        }
        Ok(Children {
            forks,
            exited,
            lost,
            pids: Vec::new(),
            max,
            block_on_close,
        })
    }

    pub(crate) fn room(&self) -> usize {
        self.max.saturating_sub(self.pids.len())
    }

    pub(crate) fn len(&self) -> usize {
        self.pids.len()
    }

    pub(crate) fn blocks_on_close(&self) -> bool {
        self.block_on_close
    }

    /// Has a child forked to serve `incoming`; our copy of the connection
    /// closes when `incoming` is dropped.
    pub(crate) fn fork(&mut self, incoming: Incoming, shared: &Arc<Shared>) {
        let payload = encode_incoming(&incoming);
        let forked = match &incoming {
            Incoming::Stream(stream, _) => self.forks.fork(&[stream.as_fd()], &payload),
            Incoming::Datagram { socket, .. } => self.forks.fork(&[socket.as_fd()], &payload),
        };
        match forked {
            Ok(pid) => {
                log::debug!(target: "sockloop::server", "forked {pid} for {}", incoming.peer());
                self.pids.push(pid);
            }
            Err(e) => {
                log::error!("fork failed: {e}; request from {} dropped", incoming.peer());
                (shared.handle_error)(incoming.peer(), &e);
                incoming.refuse();
            }
        }
    }

    /// Why no request can be forked any more, if so (the fork server died
    /// or stopped answering; it is reaped by now).
    pub(crate) fn broken(&self) -> Option<String> {
        if self.lost.get() {
            Some(self.forks.lost())
        } else {
            self.forks.known_gone()
        }
    }

    /// Takes note of the children that exited.
    pub(crate) fn reap(&mut self) {
        if !self.pids.is_empty() && (self.lost.get() || self.forks.known_gone().is_some()) {
            // Their reaper is gone: no exit report can come, so they are
            // neither waited for nor counted (they are init's now).
            log::warn!(
                "{} request child(ren) orphaned by the fork server's end; not waiting for them",
                self.pids.len()
            );
            self.pids.clear();
        }
        for pid in self.exited.borrow_mut().drain(..) {
            if pid == FORK_SERVER_GONE {
                // No more reports will come: the children are init's now,
                // and not ours to count (or to hold the server's room).
                self.pids.clear();
            }
            self.pids.retain(|&p| p != pid);
        }
    }
}

/// The loop's end of the fork server's lifeline: nothing comes on it but
/// its end.
struct Lifeline {
    lost: Rc<Cell<bool>>,
}

impl Protocol for Lifeline {
    fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
    }

    fn on_close(&mut self, _: &mut Context<'_>, reason: &crate::CloseReason) {
        if !matches!(reason, crate::CloseReason::ReactorStopped) {
            self.lost.set(true);
        }
    }
}

/// Stands for every child in `exited` once the fork server is gone.
const FORK_SERVER_GONE: libc::pid_t = -1;

/// The loop's end of the report socket: `[pid][wait status]` records.
struct Reports {
    exited: Rc<RefCell<Vec<libc::pid_t>>>,
    handle: ServerHandle,
}

impl Protocol for Reports {
    fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
        while data.len() >= 8 {
            let record: [u8; 8] = data.split_to(8)[..].try_into().expect("8 bytes");
            match decode_report(&record) {
                (0, SHUTDOWN_REQUEST) => {
                    log::info!("a forked handler asked the server to shut down");
                    self.handle.shutdown();
                }
                (pid, status) => {
                    if libc::WIFSIGNALED(status) {
                        log::warn!(
                            "request child {pid} killed by signal {}",
                            libc::WTERMSIG(status)
                        );
                    }
                    self.exited.borrow_mut().push(pid);
                }
            }
        }
    }

    /// The fork server died (killed from outside): requests already
    /// forked go on alone; later forks fail (`handle_error` hears of each).
    fn on_close(&mut self, _: &mut Context<'_>, reason: &crate::CloseReason) {
        if !matches!(reason, crate::CloseReason::ReactorStopped) {
            log::error!("the fork server is gone ({reason}): no more requests can be forked");
        }
        self.exited.borrow_mut().push(FORK_SERVER_GONE);
    }
}
