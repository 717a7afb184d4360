//! Datagram sockets (UDP and Unix datagram) on the reactor.
//!
//! A datagram is all or nothing, so there is no stream buffering: each one is
//! handed to the protocol as it arrives, and `send_to` goes out at once unless
//! the socket is full, when it waits in a bounded queue.

use std::collections::VecDeque;
use std::io;
use std::mem;

use bytes::Bytes;
use mio::event::Event;
use mio::{Interest, Token};

use crate::net::{Datagram, ListenOptions};
use crate::reactor::handler::DatagramHandler;
use crate::reactor::source::EventSource;
use crate::reactor::Source;
use crate::{Addr, BlockingDatagram, CloseReason, ConnId, Reactor, TimerId};

/// Datagrams received per socket per turn before others get a go.
const RECV_BUDGET: usize = 64;
/// Larger than any UDP payload (65,507 bytes) and the usual Unix datagram limit.
const MAX_DATAGRAM: usize = 64 * 1024;

pub(crate) struct DatagramSocket {
    /// First: unlisted before `socket` closes.
    _listed: crate::net::owned::Listed,
    socket: Datagram,
    pub(crate) gen: u32,
    /// `None` only while one of its callbacks runs.
    handler: Option<Box<dyn DatagramHandler>>,
    queue: VecDeque<(Bytes, Addr)>,
    queued: usize,
    max_queued: Option<usize>,
    writable_interest: bool,
    closing: Option<CloseReason>,
    paused: bool,
    /// Timers its protocol set and that have not fired: closing cancels them.
    pub(crate) user_timers: Vec<TimerId>,
}

impl EventSource for DatagramSocket {
    fn gen(&self) -> Option<u32> {
        Some(self.gen)
    }

    fn ready(reactor: &mut Reactor, key: usize, event: &Event) {
        reactor.datagram_event(key, event);
    }

    fn resume(reactor: &mut Reactor, key: usize) {
        reactor.read_datagrams(key);
    }
}

impl DatagramSocket {
    /// The socket's descriptor (for a forked process to close).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.socket)
    }

    /// See [`Datagram::keep_file`](crate::net::Datagram::keep_file).
    pub(crate) fn keep_file(&mut self) {
        self.socket.keep_file();
    }
}

impl Reactor {
    /// Binds a UDP or Unix datagram socket at `addr`, served by `handler`
    /// (see [`Reactor::bind_datagram_with`]).
    pub(crate) fn bind_datagram_handler(
        &mut self,
        addr: &Addr,
        opts: &ListenOptions,
        handler: Box<dyn DatagramHandler>,
    ) -> io::Result<ConnId> {
        let socket = Datagram::bind(addr, opts)?;
        self.add_datagram(socket, opts, handler)
    }

    /// Serves a datagram socket passed by socket activation with
    /// `handler` (see [`Reactor::bind_datagram_inherited`]).
    pub(crate) fn bind_datagram_inherited_handler(
        &mut self,
        socket: crate::activation::InheritedSocket,
        opts: &ListenOptions,
        handler: Box<dyn DatagramHandler>,
    ) -> io::Result<ConnId> {
        let socket = Datagram::inherited(socket)?;
        self.add_datagram(socket, opts, handler)
    }

    fn add_datagram(
        &mut self,
        mut socket: Datagram,
        opts: &ListenOptions,
        handler: Box<dyn DatagramHandler>,
    ) -> io::Result<ConnId> {
        let gen = self.next_gen();
        let key = self.sources.vacant_entry().key();
        self.registry()
            .register(&mut socket, Token(key), Interest::READABLE)?;
        self.sources.insert(Source::Datagram(DatagramSocket {
            _listed: crate::net::owned::Listed::new(std::os::fd::AsRawFd::as_raw_fd(&socket)),
            socket,
            gen,
            handler: Some(handler),
            queue: VecDeque::new(),
            queued: 0,
            max_queued: opts.conn.max_queued,
            writable_interest: false,
            closing: None,
            paused: false,
            user_timers: Vec::new(),
        }));
        self.ready.push((key, gen));
        Ok(ConnId::new(key, gen))
    }

    fn datagram_at(&mut self, key: usize) -> Option<&mut DatagramSocket> {
        datagram_in(&mut self.sources, key)
    }

    fn datagram(&mut self, id: ConnId) -> Option<&mut DatagramSocket> {
        self.datagram_at(id.key()).filter(|d| d.gen == id.gen)
    }

    /// Runs a datagram callback with the handler taken out of its slot; a
    /// panic is logged and closes the socket.
    fn call_datagram(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut dyn DatagramHandler, &mut Reactor, ConnId),
    ) {
        let Some(d) = self.datagram_at(key) else {
            return;
        };
        let id = ConnId::new(key, d.gen);
        let Some(mut handler) = d.handler.take() else {
            return;
        };
        let result = self.enter_callback(|r| f(&mut *handler, r, id));
        if let Some(d) = self.datagram_at(key) {
            d.handler = Some(handler);
        }
        if let Err(panic) = result {
            self.panicked(id, &*panic);
        }
    }

    pub(crate) fn datagram_event(&mut self, key: usize, event: &Event) {
        if event.is_writable() {
            self.flush_datagrams(key);
        }
        if event.is_readable() || event.is_error() {
            self.read_datagrams(key);
        }
    }

    /// Receives until `WouldBlock` (a datagram socket has no short-read
    /// signal) or the budget is spent.
    pub(crate) fn read_datagrams(&mut self, key: usize) {
        let mut buf = mem::take(&mut self.dgram_buf);
        buf.resize(MAX_DATAGRAM, 0);
        for _ in 0..RECV_BUDGET {
            let Some(d) = self.datagram_at(key) else {
                break;
            };
            if d.closing.is_some() || d.paused {
                self.dgram_buf = buf;
                return;
            }
            match d.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.call_datagram(key, |h, r, id| h.on_datagram(r, id, &buf[..n], &from))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.dgram_buf = buf;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // UDP reports an ICMP error of an earlier send here
                // (ECONNREFUSED): it concerns one peer, not the socket.
                Err(e) => log::debug!("datagram socket {key}: receive error: {e}"),
            }
            self.settle();
        }
        self.dgram_buf = buf;
        if let Some(gen) = self.gen_of(key) {
            self.ready.push((key, gen));
        }
    }

    /// Sends one datagram on socket `id` (see [`DatagramContext::send_to`](crate::DatagramContext::send_to)).
    pub fn send_to(&mut self, id: ConnId, data: &[u8], to: &Addr) -> io::Result<()> {
        let d = datagram_in(&mut self.sources, id.key()).filter(|d| d.gen == id.gen);
        let Some(d) = d else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{id} is not open"),
            ));
        };
        if d.closing.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{id} is closing"),
            ));
        }
        if d.queue.is_empty() {
            match d.socket.send_to(data, to) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if d.max_queued
            .is_some_and(|limit| d.queued + data.len() > limit)
        {
            let limit = d.max_queued.unwrap_or_default();
            return Err(crate::QueueFull::new(limit).into_io());
        }
        d.queued += data.len();
        d.queue
            .push_back((Bytes::copy_from_slice(data), to.clone()));
        if !d.writable_interest {
            d.writable_interest = true;
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .reregister(&mut d.socket, Token(id.key()), interest)?;
        }
        Ok(())
    }

    fn flush_datagrams(&mut self, key: usize) {
        let Some(d) = datagram_in(&mut self.sources, key) else {
            return;
        };
        if !d.send_queued(key) {
            return;
        }
        if d.writable_interest {
            d.writable_interest = false;
            let _ = self
                .poll
                .registry()
                .reregister(&mut d.socket, Token(key), Interest::READABLE);
        }
        if let Some(reason) = d.closing.take() {
            self.close_datagram(key, reason);
        }
    }

    /// Closes a datagram socket once its queue is sent (at once if empty;
    /// after the running callback, if one runs, as `on_close` is user code).
    pub(crate) fn close_datagram(&mut self, key: usize, reason: CloseReason) {
        let Some(d) = datagram_in(&mut self.sources, key) else {
            return;
        };
        if self.nesting.is_active() {
            let gen = d.gen;
            return self.after_callback(move |r| {
                if r.gen_of(key) == Some(gen) {
                    r.close_datagram(key, reason);
                }
            });
        }
        // Already closing with nothing left to send: this is a call from its
        // own `on_close` (a panic there, or a close request); once is enough.
        if d.closing.is_some() && d.queue.is_empty() {
            return;
        }
        let final_close = matches!(
            reason,
            CloseReason::ReactorStopped | CloseReason::Panicked(_)
        );
        if final_close {
            // One last nonblocking attempt, as a stream gets.
            d.send_queued(key);
        }
        let unsent = d.queue.len();
        if final_close && unsent > 0 {
            log::warn!("datagram socket {key}: {reason}; {unsent} queued datagrams were not sent");
        }
        if !d.queue.is_empty() && !final_close {
            d.closing.get_or_insert(reason);
            return;
        }
        d.closing = Some(CloseReason::Closed);
        let _ = self.poll.registry().deregister(&mut d.socket);
        self.call_datagram(key, |h, r, id| h.on_close(r, id, &reason));
        let mut source = self.release_slot(key);
        if let Source::Datagram(d) = &mut source {
            self.cancel_user_timers(mem::take(&mut d.user_timers));
        }
        self.drop_source(source);
    }

    /// Stops (`false`) or resumes (`true`) receiving on datagram socket `id`;
    /// datagrams wait in the kernel's buffer meanwhile (and are dropped by the
    /// kernel when it is full, as UDP does).
    pub fn set_datagram_reading(&mut self, id: ConnId, reading: bool) {
        if let Some(d) = self.datagram(id) {
            d.paused = !reading;
            if reading {
                self.ready.push((id.key(), id.gen));
            }
        }
    }

    /// A second handle to datagram socket `id`, to answer from another
    /// thread or a forked child.
    pub fn try_clone_datagram(&mut self, id: ConnId) -> io::Result<BlockingDatagram> {
        let Some(d) = self.datagram(id) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{id} is not open"),
            ));
        };
        d.socket.try_clone()
    }

    pub(crate) fn datagram_timer(&mut self, key: usize, timer: TimerId) {
        self.call_datagram(key, |h, r, id| h.on_timer(r, id, timer));
    }

    pub(crate) fn datagram_local_addr(&self, id: ConnId) -> io::Result<Addr> {
        let socket = match self.sources.get(id.key()) {
            Some(Source::Datagram(d)) if d.gen == id.gen => Some(d),
            _ => None,
        };
        match socket {
            Some(d) => d.socket.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{id} is not open"),
            )),
        }
    }
}

impl DatagramSocket {
    /// Sends queued datagrams until the socket is full (false) or the queue
    /// is empty (true). A datagram the socket refuses is dropped and logged.
    fn send_queued(&mut self, key: usize) -> bool {
        while let Some((data, to)) = self.queue.front() {
            match self.socket.send_to(data, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => log::warn!("datagram socket {key}: queued datagram to {to} dropped: {e}"),
                Ok(_) => {}
            }
            self.queued -= data.len();
            self.queue.pop_front();
        }
        true
    }
}

fn datagram_in(sources: &mut slab::Slab<Source>, key: usize) -> Option<&mut DatagramSocket> {
    match sources.get_mut(key) {
        Some(Source::Datagram(d)) => Some(d),
        _ => None,
    }
}
