//! The promises of docs/servers.md ("Writing real servers"), each run
//! against the code (named `docs_promise_*` as in tests/docs_promises.rs).
//! Deeper tests of the same features: tests/programs_proxy.rs and
//! tests/proxy_graceful.rs (the relay), tests/decoders.rs (decoders,
//! `max_unconsumed`), tests/write_after_close.rs, tests/coalescing.rs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use sockloop::{
    Addr, CloseReason, ConnId, Context, FrameHandler, Framed, ListenOptions, Netstrings, Protocol,
    Resp, RespCommand,
};

/// The page's forwarder: the client's protocol connects, the backend's
/// links the two.
struct Client {
    to: Addr,
}

impl Protocol for Client {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.pause_reading();
        let client = cx.id();
        if cx.connect(&self.to, Backend { client }).is_err() {
            cx.close();
        }
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {}
    fn on_eof(&mut self, _cx: &mut Context<'_>) {}
}

struct Backend {
    client: ConnId,
}

impl Protocol for Backend {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        // Linking a connection to itself is refused, and changes nothing.
        let me = cx.id();
        let refused = cx.reactor().link(me, me).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::NotConnected);
        if cx.pipe(self.client).is_err() {
            cx.close();
        }
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {}
    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        cx.reactor().close(self.client);
    }
}

/// "A half-close crosses over", "Either end ends both", and the bytes go
/// both ways, the client's early bytes included.
#[test]
fn docs_promise_servers_link_relays_both_ways_passes_half_close_and_ends_both() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let to: Addr = backend.local_addr().unwrap().to_string().parse().unwrap();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Client { to: to.clone() })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut client = connect(server.inet(0));
    // Sent before the backend is even connected: it waits, then crosses.
    client.write_all(b"early").unwrap();
    let (mut back, _) = backend.accept().unwrap();
    back.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(read_n(&mut back, 5), b"early");
    back.write_all(b"answer").unwrap();
    assert_eq!(read_n(&mut client, 6), b"answer");

    // The client's half-close reaches the backend, which can still answer.
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    back.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    back.write_all(b"after your FIN").unwrap();
    assert_eq!(read_n(&mut client, 14), b"after your FIN");

    // The backend's end ends the client's side too: a clean EOF.
    drop(back);
    assert_eq!(read_to_eof(&mut client).unwrap(), b"");
    server.stop();
}

/// A raw protocol that keeps everything it is given.
struct Hoarder(mpsc::Sender<String>);

impl Protocol for Hoarder {
    fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {}
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

/// "input left unconsumed beyond it closes the connection [...] with
/// `CloseReason::InputOverLimit { limit }` ("unconsumed input over its
/// 1048576-byte limit")".
#[test]
fn docs_promise_servers_max_unconsumed_closes_with_its_reason() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let mut opts = ListenOptions::default();
        opts.conn.max_unconsumed = Some(1 << 20);
        let id = r
            .listen_with(&any_port(), &opts, move |_| Hoarder(tx.clone()))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    let _ = c.write_all(&vec![b'x'; (1 << 20) + 4096]);
    assert_eq!(recv(&rx), "unconsumed input over its 1048576-byte limit");
    server.stop();
}

/// Reports how its connection ended.
struct Netstring(mpsc::Sender<String>);

impl FrameHandler for Netstring {
    fn frame_timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
    fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes) {
        cx.write_bytes(frame);
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

/// "a client sending a request a byte a minute (slowloris) is closed with
/// `CloseReason::Protocol("a frame took longer than 10s to arrive")`".
#[test]
fn docs_promise_servers_frame_timeout_applies_to_decoders() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| {
                Framed::with_decoder(Netstrings::default(), Netstring(tx.clone()))
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    c.write_all(b"2:hi,5:ab").unwrap();
    assert_eq!(read_n(&mut c, 2), b"hi");
    assert_eq!(
        recv(&rx),
        "protocol error: a frame took longer than 200ms to arrive"
    );
    server.stop();
}

/// Reports how its connection ended; answers nothing.
struct Commands(mpsc::Sender<String>);

impl FrameHandler<RespCommand> for Commands {
    fn on_frame(&mut self, cx: &mut Context<'_>, _args: RespCommand) {
        cx.write(b"+OK\r\n");
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

/// "the connection's `CloseReason::Protocol` carries the decoder's reason
/// [...] `Protocol error: expected '$', got 'x'` from `Resp`".
#[test]
fn docs_promise_servers_a_decoder_error_is_the_close_reason() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| {
                Framed::with_decoder(Resp::default(), Commands(tx.clone()))
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    c.write_all(b"PING\r\n*1\r\nxyz\r\n").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"+OK\r\n");
    let reason = recv(&rx);
    assert!(
        reason.contains("Protocol error: expected '$', got 'x'"),
        "{reason}"
    );
    server.stop();
}

/// Closes on its first input, then tries to write.
struct WriteAfterClose(mpsc::Sender<ErrorKind>);

impl Protocol for WriteAfterClose {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
        cx.write(b"bye\n");
        cx.close();
        let id = cx.id();
        let kind = cx.reactor().write(id, b"lost").unwrap_err().kind();
        let _ = self.0.send(kind);
    }
}

/// "what was queued before the close is sent, but nothing after it [...]
/// `Reactor::write` [...] return[s] an `io::Error` (`NotConnected`)".
#[test]
fn docs_promise_servers_writes_after_close_fail_with_not_connected() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| WriteAfterClose(tx.clone()))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    c.write_all(b"x").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"bye\n");
    assert_eq!(recv(&rx), ErrorKind::NotConnected);
    server.stop();
}

/// Leaves what it reads; at the peer's FIN, connects to `to` and links.
struct LinkAtEof {
    to: Addr,
}

impl Protocol for LinkAtEof {
    fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {}

    fn on_eof(&mut self, cx: &mut Context<'_>) {
        let client = cx.id();
        let to = self.to.clone();
        cx.connect(&to, PipeOnOpen { other: client }).unwrap();
    }
}

struct PipeOnOpen {
    other: ConnId,
}

impl Protocol for PipeOnOpen {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.pipe(self.other).unwrap();
    }

    fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {}
}

/// "Input left unconsumed goes across first", also when the peer has
/// already sent its FIN (no read comes any more to offer it again).
#[test]
fn docs_promise_servers_link_carries_unconsumed_input_of_a_finished_peer() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let to: Addr = backend.local_addr().unwrap().to_string().parse().unwrap();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| LinkAtEof { to: to.clone() })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut client = connect(server.inet(0));
    client.write_all(b"early").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (mut back, _) = backend.accept().unwrap();
    back.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    back.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"early");
    server.stop();
}
