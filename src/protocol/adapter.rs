//! Where the callback API meets the reactor: a [`Protocol`] is the
//! reactor's connection handler through one generic impl (a
//! [`DatagramProtocol`] likewise), which builds the callback's [`Context`]
//! on the stack, and the reactor's entry points that take protocols
//! (`listen`, `connect`, `adopt`, `bind_datagram`) box them as handlers.
//! The reactor layer below knows only its handler traits.

use std::io;

use bytes::BytesMut;

use crate::net::{ConnOptions, ListenOptions};
use crate::reactor::handler::{ConnHandler, DatagramHandler};
use crate::{
    Addr, BlockingStream, CloseReason, ConnId, Context, DatagramContext, DatagramProtocol,
    ListenerId, Protocol, Reactor, TimerId,
};

impl<P: Protocol> ConnHandler for P {
    fn on_open(&mut self, reactor: &mut Reactor, id: ConnId) {
        Protocol::on_open(self, &mut Context::new(reactor, id));
    }

    #[inline]
    fn on_data(&mut self, reactor: &mut Reactor, id: ConnId, data: &mut BytesMut) {
        Protocol::on_data(self, &mut Context::new(reactor, id), data);
    }

    fn on_drained(&mut self, reactor: &mut Reactor, id: ConnId) {
        Protocol::on_drained(self, &mut Context::new(reactor, id));
    }

    fn on_eof(&mut self, reactor: &mut Reactor, id: ConnId) {
        Protocol::on_eof(self, &mut Context::new(reactor, id));
    }

    fn on_timer(&mut self, reactor: &mut Reactor, id: ConnId, timer: TimerId) {
        Protocol::on_timer(self, &mut Context::new(reactor, id), timer);
    }

    fn on_shutdown(&mut self, reactor: &mut Reactor, id: ConnId) {
        Protocol::on_shutdown(self, &mut Context::new(reactor, id));
    }

    fn on_close(&mut self, reactor: &mut Reactor, id: ConnId, reason: &CloseReason) {
        Protocol::on_close(self, &mut Context::new(reactor, id), reason);
    }
}

impl<P: DatagramProtocol> DatagramHandler for P {
    fn on_datagram(&mut self, reactor: &mut Reactor, id: ConnId, data: &[u8], from: &Addr) {
        DatagramProtocol::on_datagram(self, &mut DatagramContext::new(reactor, id), data, from);
    }

    fn on_timer(&mut self, reactor: &mut Reactor, id: ConnId, timer: TimerId) {
        DatagramProtocol::on_timer(self, &mut DatagramContext::new(reactor, id), timer);
    }

    fn on_close(&mut self, reactor: &mut Reactor, id: ConnId, reason: &CloseReason) {
        DatagramProtocol::on_close(self, &mut DatagramContext::new(reactor, id), reason);
    }
}

impl Reactor {
    /// Listens on `addr` (TCP over IPv4 or IPv6, or a Unix socket path) with
    /// default [`ListenOptions`]; `factory` makes the protocol of each
    /// accepted connection from the peer's address.
    ///
    /// Fails with an error naming the address (port in use, permission, a
    /// missing directory); nothing is leaked on failure.
    pub fn listen<P, F>(&mut self, addr: &Addr, factory: F) -> io::Result<ListenerId>
    where
        P: Protocol,
        F: FnMut(&Addr) -> P + 'static,
    {
        self.listen_with(addr, &ListenOptions::default(), factory)
    }

    /// [`listen`](Reactor::listen) with explicit options.
    pub fn listen_with<P, F>(
        &mut self,
        addr: &Addr,
        opts: &ListenOptions,
        mut factory: F,
    ) -> io::Result<ListenerId>
    where
        P: Protocol,
        F: FnMut(&Addr) -> P + 'static,
    {
        let factory = Box::new(move |peer: &Addr| Box::new(factory(peer)) as Box<dyn ConnHandler>);
        self.listen_handlers(addr, opts, factory)
    }

    /// [`listen_with`](Reactor::listen_with) on a listening socket passed by
    /// socket activation ([`activation::take`](crate::activation::take)).
    /// Binding options (`backlog`, `reuse_*`, `unix_mode`) were the binder's
    /// to choose and are not applied; the rest are. A Unix socket's file is
    /// left in place when it closes. Fails if the socket is not a listening
    /// stream socket.
    pub fn listen_inherited<P, F>(
        &mut self,
        socket: crate::activation::InheritedSocket,
        opts: &ListenOptions,
        mut factory: F,
    ) -> io::Result<ListenerId>
    where
        P: Protocol,
        F: FnMut(&Addr) -> P + 'static,
    {
        let factory = Box::new(move |peer: &Addr| Box::new(factory(peer)) as Box<dyn ConnHandler>);
        self.listen_inherited_handlers(socket, opts, factory)
    }

    /// Opens an outgoing stream connection served by `proto`.
    ///
    /// Success calls `on_open`; a refusal, an unreachable host or the
    /// `connect_timeout` of the default [`ConnOptions`] ends in `on_close` with
    /// [`CloseReason::ConnectFailed`]. An address that cannot even be tried
    /// fails here and the protocol is dropped unused.
    pub fn connect(&mut self, addr: &Addr, proto: impl Protocol) -> io::Result<ConnId> {
        self.connect_with(addr, &ConnOptions::default(), proto)
    }

    /// [`connect`](Reactor::connect) with explicit connection options.
    pub fn connect_with(
        &mut self,
        addr: &Addr,
        opts: &ConnOptions,
        proto: impl Protocol,
    ) -> io::Result<ConnId> {
        self.connect_handler(addr, opts, Box::new(proto))
    }

    /// Serves an already connected stream with `proto`: one end of a
    /// socketpair, a socket inherited from a parent or a service manager.
    /// `on_open` runs at once, or, called from a callback, when it returns.
    pub fn adopt(
        &mut self,
        stream: BlockingStream,
        opts: &ConnOptions,
        proto: impl Protocol,
    ) -> io::Result<ConnId> {
        self.adopt_handler(stream, opts, Box::new(proto))
    }

    /// Binds a UDP or Unix datagram socket at `addr`, served by `proto`.
    pub fn bind_datagram(
        &mut self,
        addr: &Addr,
        proto: impl DatagramProtocol,
    ) -> io::Result<ConnId> {
        self.bind_datagram_with(addr, &ListenOptions::default(), proto)
    }

    /// [`bind_datagram`](Reactor::bind_datagram) with explicit options
    /// (`reuse_address`, `reuse_port`, `only_v6`; `conn.max_queued` bounds the
    /// send queue).
    pub fn bind_datagram_with(
        &mut self,
        addr: &Addr,
        opts: &ListenOptions,
        proto: impl DatagramProtocol,
    ) -> io::Result<ConnId> {
        self.bind_datagram_handler(addr, opts, Box::new(proto))
    }

    /// Serves a UDP or Unix datagram socket passed by socket activation
    /// ([`activation::take`](crate::activation::take)) with `proto`; of
    /// `opts` only `conn.max_queued` applies (the binder chose the rest).
    /// A Unix socket's file is left in place when it closes.
    pub fn bind_datagram_inherited(
        &mut self,
        socket: crate::activation::InheritedSocket,
        opts: &ListenOptions,
        proto: impl DatagramProtocol,
    ) -> io::Result<ConnId> {
        self.bind_datagram_inherited_handler(socket, opts, Box::new(proto))
    }

    /// Delivers an offloaded answer to `f` with a [`Context`] for connection
    /// `id` (see `Reactor::deliver_work`): false, and `f` dropped, if the
    /// connection is gone or closing at once.
    pub(crate) fn work_done(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut Context<'_>) + 'static,
    ) -> bool {
        self.deliver_work(id, move |reactor, id| f(&mut Context::new(reactor, id)))
    }
}
