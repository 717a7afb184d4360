//! A request that came with the handshake is read in the turn that accepts
//! the connection, not a loop turn later (the speculative read after
//! accept, issue 16: one `epoll_wait` less per short-lived connection).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sockloop::{Context, Protocol, Reactor};

struct Echo;

impl Protocol for Echo {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_buf(data);
    }
}

#[test]
fn the_first_request_is_answered_in_the_accepting_turn() {
    let mut reactor = Reactor::new().unwrap();
    let id = reactor.listen(&common::any_port(), |_| Echo).unwrap();
    let addr = reactor.listener_addr(id).unwrap().as_inet().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    // On loopback the bytes are in the server's socket once write returns.
    client.write_all(b"ping").unwrap();
    while reactor.stats().accepted == 0 {
        reactor.run_once(Some(common::LIMIT)).unwrap();
    }
    client.set_nonblocking(true).unwrap();
    let mut buf = [0; 4];
    let n = client
        .read(&mut buf)
        .expect("the answer is there after the turn that accepted");
    assert_eq!(&buf[..n], b"ping");
    // And the connection goes on as usual.
    client.write_all(b"pong").unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + common::LIMIT;
    while got != b"pong" {
        assert!(Instant::now() < deadline, "no second answer");
        reactor.run_once(Some(Duration::from_millis(50))).unwrap();
        match client.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
}
