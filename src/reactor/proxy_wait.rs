//! A connection accepted on a listener with `proxy_protocol`, waiting for
//! its PROXY header: no protocol exists yet (the factory is given the
//! header's client address), so it is a source of its own rather than a
//! state of every connection. Once the header is complete it is consumed
//! from the socket (the protocol's first bytes stay in the kernel) and the
//! connection goes on as if just accepted from the client's address.

use std::io;

use crate::net::Stream;
use crate::proxy::{self, Peeked, ProxyHeader};
use crate::reactor::source::EventSource;
use crate::reactor::{Source, TimerTarget};
use crate::{Addr, ConnId, ListenerId, Reactor, TimerId};

pub(crate) struct ProxyWait {
    /// First: unlisted before `stream` closes (a fork server closes it);
    /// `None` once taken out of its slot, so that the connection it
    /// becomes lists the descriptor alone.
    _listed: Option<crate::net::owned::Listed>,
    pub(crate) stream: Stream,
    pub(crate) gen: u32,
    listener: ListenerId,
    /// The socket's real peer: the proxy.
    peer: Addr,
    timer: TimerId,
}

/// What a connection's PROXY header said, kept with the connection.
#[derive(Debug)]
pub(crate) struct Proxied {
    /// The socket's real peer: the proxy.
    pub(crate) proxy: Addr,
    pub(crate) header: ProxyHeader,
}

impl Proxied {
    /// The client: the header's source address, or the socket's peer for
    /// `LOCAL` and `UNKNOWN` headers. A Unix source on an inet socket is
    /// judged like `UNKNOWN` too: the allow-list lets every Unix peer in
    /// (file permissions guard a Unix socket), which guards nothing on a TCP
    /// listener, so a proxy's Unix frontend must not bypass the list.
    pub(crate) fn client(&self) -> Addr {
        match &self.header.addresses {
            Some((source, _)) if !source.is_unix() || self.proxy.is_unix() => source.clone(),
            _ => self.proxy.clone(),
        }
    }
}

impl EventSource for ProxyWait {
    fn gen(&self) -> Option<u32> {
        Some(self.gen)
    }

    fn ready(reactor: &mut Reactor, key: usize, event: &mio::event::Event) {
        reactor.proxy_event(key, event.is_read_closed() || event.is_error());
    }
}

impl Reactor {
    /// The address of the proxy that connection `id` came through (the
    /// socket's real peer), `None` if it did not come with a PROXY header.
    pub fn proxy_addr(&self, id: ConnId) -> Option<Addr> {
        self.conn_ref(id)?.proxied.as_ref().map(|p| p.proxy.clone())
    }

    /// The PROXY header connection `id` began with, if any.
    pub fn proxy_header(&self, id: ConnId) -> Option<ProxyHeader> {
        self.conn_ref(id)?
            .proxied
            .as_ref()
            .map(|p| p.header.clone())
    }

    /// Holds an accepted connection until its header has come.
    pub(crate) fn await_proxy_header(
        &mut self,
        listener: ListenerId,
        mut stream: Stream,
        peer: Addr,
        timeout: std::time::Duration,
    ) {
        let gen = self.next_gen();
        let key = self.sources.vacant_entry().key();
        if let Err(e) =
            self.registry()
                .register(&mut stream, mio::Token(key), mio::Interest::READABLE)
        {
            log::error!("cannot register connection from {peer}: {e}");
            return;
        }
        let id = ConnId::new(key, gen);
        let timer = self.timers.insert(
            self.now,
            timeout,
            TimerTarget::Call(Box::new(move |r: &mut Reactor| {
                r.proxy_timed_out(id, timeout)
            })),
        );
        self.sources.insert(Source::ProxyWait(ProxyWait {
            _listed: Some(crate::net::owned::Listed::new(
                std::os::fd::AsRawFd::as_raw_fd(&stream),
            )),
            stream,
            gen,
            listener,
            peer,
            timer,
        }));
        self.proxy_pending += 1;
        self.pending_opened(listener);
    }

    /// Readable (or closed): is the header complete?
    pub(crate) fn proxy_event(&mut self, key: usize, closed: bool) {
        let Some(Source::ProxyWait(w)) = self.sources.get(key) else {
            return;
        };
        match proxy::peek(w.stream.fd(), closed) {
            Ok(Peeked::Incomplete) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.proxy_failed(key, &e),
            Ok(Peeked::Header(header)) => {
                let Some(w) = self.take_wait(key) else { return };
                let proxied = Proxied {
                    proxy: w.peer,
                    header: *header,
                };
                let client = proxied.client();
                log::debug!(
                    "{client} via {}: PROXY v{} header",
                    proxied.proxy,
                    proxied.header.version
                );
                self.admit(w.listener, w.stream, client, Some(Box::new(proxied)));
                self.unpark_if_idle();
            }
        }
    }

    fn proxy_timed_out(&mut self, id: ConnId, timeout: std::time::Duration) {
        if self.gen_of(id.key()) == Some(id.gen)
            && matches!(self.sources.get(id.key()), Some(Source::ProxyWait(_)))
        {
            self.proxy_failed(id.key(), &proxy::timed_out(timeout));
        }
    }

    fn proxy_failed(&mut self, key: usize, e: &io::Error) {
        let Some(w) = self.take_wait(key) else { return };
        if log::log_enabled!(log::Level::Warn) {
            let at = self
                .listener_addr(w.listener)
                .map_or_else(|_| "closed listener".to_string(), |a| a.to_string());
            log::warn!("{at}: connection from {} closed: {e}", w.peer);
        }
        self.stats.proxy_refused += 1;
        // A peer that sent junk gets a reset: nothing it sent is read.
        w.stream.reset_on_close();
        drop(w);
        self.unpark_if_idle();
    }

    /// Does a connection accepted by `listener` wait for its header?
    pub(crate) fn proxy_waits_on(&self, listener: ListenerId) -> bool {
        self.proxy_pending > 0
            && self
                .sources
                .iter()
                .any(|(_, s)| matches!(s, Source::ProxyWait(w) if w.listener == listener))
    }

    /// Takes the waiting connection out of its slot.
    fn take_wait(&mut self, key: usize) -> Option<ProxyWait> {
        if !matches!(self.sources.get(key), Some(Source::ProxyWait(_))) {
            return None;
        }
        let Source::ProxyWait(mut w) = self.release_slot(key) else {
            unreachable!("checked above")
        };
        let _ = self.poll.registry().deregister(&mut w.stream);
        w._listed = None;
        self.timers.cancel(w.timer);
        self.proxy_pending -= 1;
        // Off the caps: admitted, it counts again as an open connection.
        self.connection_closed(Some(w.listener));
        Some(w)
    }

    /// Closes every connection still waiting for its header (the end of a
    /// graceful shutdown, or the reactor dropped).
    pub(crate) fn drop_proxy_waits(&mut self) {
        let keys: Vec<usize> = self
            .sources
            .iter()
            .filter(|(_, s)| matches!(s, Source::ProxyWait(_)))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            if let Some(w) = self.take_wait(key) {
                log::info!(
                    "connection from {} closed before its PROXY header came",
                    w.peer
                );
            }
        }
        self.unpark_if_idle();
    }
}
