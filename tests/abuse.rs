//! Clients that misbehave and servers that must stay up: allow-lists,
//! connection caps, trickled frames, panics counted, graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use sockloop::{
    AllowList, CloseReason, Context, FrameHandler, Framed, ListenOptions, Protocol, Reactor,
};

struct Echo;

impl Protocol for Echo {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_bytes(data.split().freeze());
    }
}

#[test]
fn a_peer_outside_the_allow_list_is_closed_at_once() {
    let (tx, stats) = mpsc::channel();
    let server = Server::start(move |r| {
        let mut closed = ListenOptions::default();
        closed.allow = Some("10.0.0.0/8".parse().unwrap());
        let mut open = ListenOptions::default();
        open.allow = Some("127.0.0.0/8, ::1".parse().unwrap());
        let a = r.listen_with(&any_port(), &closed, |_| Echo).unwrap();
        let b = r.listen_with(&any_port(), &open, |_| Echo).unwrap();
        r.call_later(Duration::ZERO, move |r| drop(tx.send(r.handle())));
        vec![r.listener_addr(a).unwrap(), r.listener_addr(b).unwrap()]
    });
    let handle = recv(&stats);
    let mut denied = connect(server.inet(0));
    let _ = denied.write_all(b"let me in");
    let mut buf = [0; 16];
    assert!(
        matches!(denied.read(&mut buf), Ok(0) | Err(_)),
        "a refused client got an answer"
    );
    let mut allowed = connect(server.inet(1));
    assert_eq!(roundtrip(&mut allowed, b"hello"), b"hello");
    let (tx, rx) = mpsc::channel();
    handle.post(move |r| tx.send(r.stats()).unwrap()).unwrap();
    let stats = recv(&rx);
    assert_eq!((stats.refused, stats.accepted), (1, 1));
    assert!("300.1.1.1/8".parse::<AllowList>().is_err());
}

#[test]
fn a_global_cap_holds_every_listener() {
    let server = Server::start(|r| {
        r.set_max_connections(Some(2));
        let a = r.listen(&any_port(), |_| Echo).unwrap();
        let b = r.listen(&any_port(), |_| Echo).unwrap();
        vec![r.listener_addr(a).unwrap(), r.listener_addr(b).unwrap()]
    });
    let mut first = connect(server.inet(0));
    let mut second = connect(server.inet(1));
    assert_eq!(roundtrip(&mut first, b"1"), b"1");
    assert_eq!(roundtrip(&mut second, b"2"), b"2");
    let mut third = connect(server.inet(0));
    third.write_all(b"3").unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(third.read(&mut [0]).is_err(), "served above the global cap");
    drop(second); // a connection of the *other* listener frees the place
    third.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(read_n(&mut third, 1), b"3");
}

/// Line echo that gives each line 200 ms to arrive.
struct Patient(mpsc::Sender<String>);

impl FrameHandler for Patient {
    fn frame_timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        cx.write_bytes(line);
        cx.write(b"\n");
    }
    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        self.0.send(reason.to_string()).unwrap();
    }
}

#[test]
fn a_trickled_frame_times_out_but_a_steady_stream_does_not() {
    let (tx, reasons) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Framed::new(Patient(tx.clone())))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    // Slowloris: half a line, then nothing.
    let started = Instant::now();
    let mut slow = connect(server.inet(0));
    slow.write_all(b"GET / HT").unwrap();
    let reason = recv(&reasons);
    assert!(reason.contains("took longer than 200ms"), "{reason}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(read_to_eof(&mut slow).unwrap_or_default().is_empty());
    // Lines that keep completing, each read ending mid-line, for 600 ms.
    let mut steady = connect(server.inet(0));
    steady.set_nodelay(true).unwrap();
    let until = Instant::now() + Duration::from_millis(600);
    let mut sent = 0;
    while Instant::now() < until {
        steady.write_all(b"line\nli").unwrap();
        steady.write_all(b"ne\n").unwrap();
        sent += 2;
        assert_eq!(read_n(&mut steady, 5), b"line\n");
        assert_eq!(read_n(&mut steady, 5), b"line\n");
    }
    assert!(sent > 2);
    assert!(reasons.try_recv().is_err(), "a steady client was closed");
}

/// Panics on `boom`; echoes otherwise.
struct Fragile;

impl Protocol for Fragile {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        assert!(!data.starts_with(b"boom"), "boom");
        cx.write_bytes(data.split().freeze());
    }
}

#[test]
fn panics_are_counted() {
    let (tx, handles) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), |_| Fragile).unwrap();
        tx.send(r.handle()).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let handle = recv(&handles);
    for _ in 0..3 {
        let mut s = connect(server.inet(0));
        s.write_all(b"boom").unwrap();
        assert!(read_to_eof(&mut s).unwrap_or_default().is_empty());
    }
    let mut fine = connect(server.inet(0));
    assert_eq!(roundtrip(&mut fine, b"still up"), b"still up");
    let (tx, rx) = mpsc::channel();
    handle
        .post(move |r| tx.send(r.stats().panics).unwrap())
        .unwrap();
    assert_eq!(recv(&rx), 3);
}

#[test]
fn graceful_shutdown_lets_every_client_finish_its_echo() {
    const CLIENTS: usize = 100;
    const SIZE: usize = 1 << 20;
    let (tx, done) = mpsc::channel();
    let (addr_tx, addrs) = mpsc::channel();
    let reactor_thread = std::thread::spawn(move || {
        let mut reactor = Reactor::new().unwrap();
        let id = reactor.listen(&any_port(), |_| Echo).unwrap();
        addr_tx
            .send((reactor.handle(), reactor.listener_addr(id).unwrap()))
            .unwrap();
        reactor.run().unwrap(); // returns when the last client has finished
        tx.send(reactor.stats()).unwrap();
    });
    let (handle, addr) = recv(&addrs);
    let addr = addr.as_inet().unwrap();
    let data = pattern(SIZE);
    let (progress_tx, progress) = mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (data, progress_tx) = (data.clone(), progress_tx.clone());
            let mut s = connect(addr);
            std::thread::spawn(move || {
                let writer = {
                    let mut w = s.try_clone().unwrap();
                    let data = data.clone();
                    std::thread::spawn(move || {
                        w.write_all(&data).unwrap();
                        w.shutdown(Shutdown::Write).unwrap();
                    })
                };
                let mut got = read_n(&mut s, 4096);
                progress_tx.send(()).unwrap(); // mid-way: some echo is back
                got.extend(read_to_eof(&mut s).unwrap());
                writer.join().unwrap();
                got == data
            })
        })
        .collect();
    for _ in 0..CLIENTS {
        recv(&progress);
    }
    handle.shutdown_graceful(LIMIT).unwrap();
    // New clients are refused once the listener is closed.
    wait_until("the listener to close", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    for c in clients {
        assert!(c.join().unwrap(), "a client's echo was cut short");
    }
    let stats = recv(&done);
    assert_eq!(stats.open, 0);
    reactor_thread.join().unwrap();
}

#[test]
fn graceful_shutdown_closes_stragglers_at_the_deadline() {
    let (tx, done) = mpsc::channel();
    let (addr_tx, addrs) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reactor = Reactor::new().unwrap();
        let id = reactor.listen(&any_port(), |_| Echo).unwrap();
        addr_tx
            .send((reactor.handle(), reactor.listener_addr(id).unwrap()))
            .unwrap();
        reactor.run().unwrap();
        tx.send(()).unwrap();
    });
    let (handle, addr) = recv(&addrs);
    let mut idle = connect(addr.as_inet().unwrap());
    assert_eq!(roundtrip(&mut idle, b"x"), b"x");
    let asked = Instant::now();
    handle
        .shutdown_graceful(Duration::from_millis(300))
        .unwrap();
    recv(&done);
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert!(read_to_eof(&mut idle).unwrap_or_default().is_empty());
}

/// Panics on every datagram.
struct FragileDatagram;

impl sockloop::DatagramProtocol for FragileDatagram {
    fn on_datagram(&mut self, _: &mut sockloop::DatagramContext<'_>, _: &[u8], _: &sockloop::Addr) {
        panic!("bad datagram");
    }
}

#[test]
fn panics_in_datagram_handlers_and_completions_are_counted_too() {
    let (tx, handles) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.bind_datagram(&any_port(), FragileDatagram).unwrap();
        tx.send(r.handle()).unwrap();
        vec![r.local_addr(id).unwrap()]
    });
    let handle = recv(&handles);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"x", server.inet(0)).unwrap();
    wait_until("the panic to be counted", || {
        let (tx, rx) = mpsc::channel();
        handle
            .post(move |r| tx.send(r.stats().panics).unwrap())
            .unwrap();
        recv(&rx) == 1
    });
}
