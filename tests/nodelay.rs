//! Accepted TCP connections have Nagle's algorithm off (`TCP_NODELAY`)
//! unless `ConnOptions::nodelay` is false: a reply written in two turns
//! must not wait for the peer's delayed acknowledgement. The reactor sets
//! it on the listening socket, which Linux copies to each accepted one
//! (one `setsockopt` per connection saved); these tests look at the
//! accepted sockets themselves, found in this process by their peer.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;

use bytes::BytesMut;
use sockloop::{Context, ListenOptions, Protocol, Reactor};

struct Quiet;

impl Protocol for Quiet {
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
    }
}

/// `TCP_NODELAY` of this process's socket connected to `peer`.
fn server_side_nodelay(peer: SocketAddr) -> bool {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the descriptor is open for this loop's body (nothing here
        // closes descriptors) and only borrowed for two getsockopt calls.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let is_it = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == peer);
        if is_it {
            return sock.tcp_nodelay().unwrap();
        }
    }
    panic!("no socket of this process is connected to {peer}");
}

/// Accepts `n` connections on a listener with `nodelay`; the server side
/// of each: `TCP_NODELAY` on?
fn accepted(nodelay: bool, n: usize) -> Vec<bool> {
    let mut reactor = Reactor::new().unwrap();
    let mut opts = ListenOptions::default();
    opts.conn.nodelay = nodelay;
    let id = reactor
        .listen_with(&common::any_port(), &opts, |_| Quiet)
        .unwrap();
    let addr = reactor.listener_addr(id).unwrap().as_inet().unwrap();
    let clients: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    while reactor.stats().accepted < n as u64 {
        reactor.run_once(Some(common::LIMIT)).unwrap();
    }
    clients
        .iter()
        .map(|c| server_side_nodelay(c.local_addr().unwrap()))
        .collect()
}

#[test]
fn accepted_connections_have_nodelay_by_default() {
    // The first connection proves the listener's setting is inherited;
    // the later ones rely on it.
    assert_eq!(accepted(true, 3), [true, true, true]);
}

#[test]
fn nodelay_false_leaves_nagle_on() {
    assert_eq!(accepted(false, 2), [false, false]);
}
