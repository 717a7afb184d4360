//! `write_buf` sends at once when nothing is queued (the echo fast path):
//! order with the writes around it, large transfers that fill the socket
//! (the rest is queued behind what went out), and a peer that reset.

mod common;

use std::io::Write;
use std::sync::mpsc;

use bytes::BytesMut;
use common::*;
use sockloop::{CloseReason, ConnId, Context, Protocol};

/// Writes `before`, then the data with `write_buf`, then `after`.
struct Wrap {
    before: &'static [u8],
    after: &'static [u8],
}

impl Protocol for Wrap {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write(self.before);
        cx.write_buf(data);
        assert!(data.is_empty(), "write_buf leaves the buffer empty");
        cx.write(self.after);
    }
}

fn wrap_server(before: &'static [u8], after: &'static [u8]) -> Server {
    Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Wrap { before, after })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    })
}

#[test]
fn writes_after_write_buf_in_the_same_callback_follow_it() {
    let server = wrap_server(b"", b"|");
    let mut s = connect(server.inet(0));
    for round in 0..200 {
        let msg = format!("message {round}");
        s.write_all(msg.as_bytes()).unwrap();
        let got = read_n(&mut s, msg.len() + 1);
        assert_eq!(got, format!("{msg}|").into_bytes());
    }
}

#[test]
fn write_buf_after_a_queued_write_waits_its_turn() {
    let server = wrap_server(b"<", b">");
    let mut s = connect(server.inet(0));
    for round in 0..200 {
        let msg = format!("message {round}");
        s.write_all(msg.as_bytes()).unwrap();
        let got = read_n(&mut s, msg.len() + 2);
        assert_eq!(got, format!("<{msg}>").into_bytes());
    }
}

/// Echoes with `write_buf` and reports its close reason.
struct Echo {
    closed: mpsc::Sender<String>,
    opened: Option<mpsc::Sender<ConnId>>,
}

impl Protocol for Echo {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if let Some(tx) = self.opened.take() {
            let _ = tx.send(cx.id());
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_buf(data);
    }

    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.closed.send(reason.to_string());
    }
}

#[test]
fn sixteen_mib_echoed_with_write_buf_byte_exact() {
    // 64 KiB reads echoed into a socket the client empties only as fast as
    // it reads: sends are partial, and the rest is queued behind them.
    let (tx, closed) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Echo {
                closed: tx.clone(),
                opened: None,
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    let data = pattern(16 << 20);
    let writer = {
        let mut s = s.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || s.write_all(&data).unwrap())
    };
    let got = read_n(&mut s, data.len());
    writer.join().unwrap();
    assert!(got == data, "echo differs");
    drop(s);
    assert_eq!(recv(&closed), "closed by peer");
}

#[test]
fn write_buf_to_a_reset_peer_fails_and_closes_with_reset() {
    let (tx, closed) = mpsc::channel();
    let (open_tx, opened) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Echo {
                closed: tx.clone(),
                opened: Some(open_tx.clone()),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let s = connect(server.inet(0));
    let id = recv(&opened);
    // Reset: SO_LINGER 0, then close.
    socket2::SockRef::from(&s)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(s);
    // The reset may reach the reactor as an event first (it then closes
    // with a reset on its own); either way the write fails and the close
    // says the peer reset it.
    let (result_tx, result) = mpsc::channel();
    server
        .handle
        .post(move |r| {
            let mut data = BytesMut::from(&b"late answer"[..]);
            let _ = result_tx.send(r.write_buf(id, &mut data).is_err());
        })
        .unwrap();
    assert!(recv(&result), "write_buf to a reset peer fails");
    assert_eq!(recv(&closed), "reset by peer");
}
