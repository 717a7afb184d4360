//! Unit tests of accepting that need a listener made outside `listen`.

use super::*;
use crate::reactor::handler::ConnHandler;
use crate::{CloseReason, ConnId, TimerId};
use bytes::BytesMut;

struct Quiet;

impl ConnHandler for Quiet {
    fn on_open(&mut self, _: &mut Reactor, _: ConnId) {}
    fn on_data(&mut self, _: &mut Reactor, _: ConnId, data: &mut BytesMut) {
        data.clear();
    }
    fn on_drained(&mut self, _: &mut Reactor, _: ConnId) {}
    fn on_eof(&mut self, _: &mut Reactor, _: ConnId) {}
    fn on_timer(&mut self, _: &mut Reactor, _: ConnId, _: TimerId) {}
    fn on_shutdown(&mut self, _: &mut Reactor, _: ConnId) {}
    fn on_close(&mut self, _: &mut Reactor, _: ConnId, _: &CloseReason) {}
}

/// An inherited listener may come with `TCP_NODELAY` on (a predecessor
/// that set it for its own connections): `nodelay = false` still gives
/// connections with Nagle on, and `true` connections without.
#[test]
fn accepted_connections_get_the_options_nodelay_whatever_the_listener_came_with() {
    for wanted in [false, true] {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&std_listener)
            .set_tcp_nodelay(!wanted)
            .unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = Listener::Tcp(mio::net::TcpListener::from_std(std_listener));
        let mut reactor = Reactor::new().unwrap();
        let mut opts = ListenOptions::default();
        opts.conn.nodelay = wanted;
        let factory: Factory = Box::new(|_| Box::new(Quiet) as Box<dyn ConnHandler>);
        reactor
            .add_listener_socket(listener, &opts, Acceptor::Handlers(factory))
            .unwrap();
        let _clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        while reactor.stats().accepted < 3 {
            reactor.run_once(Some(Duration::from_secs(10))).unwrap();
        }
        let got: Vec<bool> = reactor
            .sources
            .iter()
            .filter_map(|(_, s)| match s {
                Source::Conn(c) => Some(c.stream.nodelay().unwrap()),
                _ => None,
            })
            .collect();
        assert_eq!(got, [wanted; 3], "nodelay = {wanted}");
    }
}
