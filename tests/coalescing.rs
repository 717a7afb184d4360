//! Writes made during one callback leave together (issue 16: "pipelined
//! replies leave in few syscalls, without a wrapper"), counted by
//! `Stats::sends` over real sockets.
//!
//! The bound that separates coalesced from broken: 1000 replies queued as
//! separate pieces need at least 16 `writev`s of 64 iovecs each (the queue's
//! limit per call), whatever the socket takes; coalesced into 4 KiB tail
//! blocks they are a few pieces and leave in one or two calls per read.

mod common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sockloop::bytes::Bytes;
use sockloop::{Context, FrameHandler, Framed, ListenerId, Reactor, Stats};

/// Requests in the burst.
const N: usize = 1000;
/// Fewer sends than one-piece-per-reply could make (16 writevs of 64).
const BOUND: u64 = 8;

/// Connects, sends `burst` in one write before the server runs (so it is in
/// the server's socket when the connection is accepted: the first read can
/// take it whole, though the test does not rely on that), then runs the
/// reactor while a client thread reads until `expect` bytes came back.
/// The reply and the reactor's counters after it.
fn serve(
    mut reactor: Reactor,
    listener: ListenerId,
    burst: &[u8],
    expect: usize,
) -> (Vec<u8>, Stats) {
    let addr = reactor.listener_addr(listener).unwrap().as_inet().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(burst).unwrap();
    let mut reader = client.try_clone().unwrap();
    reader.set_read_timeout(Some(common::LIMIT)).unwrap();
    let thread = std::thread::spawn(move || {
        let mut got = vec![0; expect];
        reader.read_exact(&mut got).expect("the replies");
        got
    });
    let deadline = Instant::now() + common::LIMIT;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "no complete reply");
        reactor.run_once(Some(Duration::from_millis(20))).unwrap();
    }
    let got = thread.join().unwrap();
    (got, reactor.stats())
}

fn request(i: usize) -> String {
    format!("req {i}\n")
}

/// Echoes each line back with a one-line reply (`cx.write`: copied).
struct Echo;

impl FrameHandler for Echo {
    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        cx.write(b"+");
        cx.write(&line);
        cx.write(b"\n");
    }
}

#[test]
fn pipelined_replies_to_one_burst_leave_in_a_few_sends() {
    let mut reactor = Reactor::new().unwrap();
    let listener = reactor
        .listen(&common::any_port(), |_| Framed::new(Echo))
        .unwrap();
    let burst: String = (0..N).map(request).collect();
    let expect: String = (0..N).map(|i| format!("+{}", request(i))).collect();
    let (got, stats) = serve(reactor, listener, burst.as_bytes(), expect.len());
    assert!(got == expect.as_bytes(), "replies out of order or altered");
    println!(
        "{N} pipelined replies ({} bytes) in {} sends",
        expect.len(),
        stats.sends
    );
    assert!(stats.sends >= 1, "the counter counts nothing");
    assert!(
        stats.sends <= BOUND,
        "{N} replies took {} sends: not coalesced (one piece per write needs >= 16)",
        stats.sends
    );
}

/// A small header for each request, and for every 100th a large `Bytes`
/// (zero-copy) after it: the small writes between two large ones share a
/// block, the large ones are not copied.
struct Mixed {
    big: Bytes,
    n: usize,
    /// The worst (memory held, payload queued) seen after a write, by the
    /// excess over the memory rule.
    worst: Rc<Cell<(usize, usize)>>,
}

impl FrameHandler for Mixed {
    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        cx.write(&line);
        cx.write(b"\n");
        if self.n.is_multiple_of(100) {
            cx.write_bytes(self.big.clone());
        }
        self.n += 1;
        let id = cx.id();
        let (queued, held) = (cx.queued(), cx.reactor().queued_memory(id));
        let (w_held, w_queued) = self.worst.get();
        if held.saturating_sub(2 * queued) > w_held.saturating_sub(2 * w_queued) {
            self.worst.set((held, queued));
        }
    }
}

fn big() -> Bytes {
    (0..4 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn mixed_small_and_large_writes_keep_order_memory_bound_and_few_sends() {
    let mut reactor = Reactor::new().unwrap();
    let worst = Rc::new(Cell::new((0, 0)));
    let seen = worst.clone();
    let listener = reactor
        .listen(&common::any_port(), move |_| {
            Framed::new(Mixed {
                big: big(),
                n: 0,
                worst: seen.clone(),
            })
        })
        .unwrap();
    let burst: String = (0..N).map(request).collect();
    let mut expect = Vec::new();
    for i in 0..N {
        expect.extend_from_slice(request(i).as_bytes());
        if i.is_multiple_of(100) {
            expect.extend_from_slice(&big());
        }
    }
    let (got, stats) = serve(reactor, listener, burst.as_bytes(), expect.len());
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "replies out of order or altered");
    println!(
        "{N} mixed replies ({} bytes, {} large) in {} sends",
        expect.len(),
        N / 100,
        stats.sends
    );
    // 21 pieces (10 large, 11 runs of small ones) fit one writev; a socket
    // that takes the 50 KB in parts adds a send per part. One piece per
    // small write would need at least 16.
    assert!(
        stats.sends < 16,
        "{} sends: the small writes were not coalesced",
        stats.sends
    );
    // The memory rule (docs/design.md, "Memory follows the bytes held"):
    // the queue holds at most twice its payload plus a few KiB, burst or not.
    let (held, queued) = worst.get();
    assert!(
        held <= 2 * queued + 12 * 1024,
        "the queue held {held} bytes for {queued} queued"
    );
}

/// The same over TLS: each write is its own record, and the records of one
/// callback share the queue's blocks as plaintext writes do. One write per
/// reply here (1000 records, 30 KB: the socket takes them in one or two).
#[cfg(feature = "tls")]
#[test]
fn pipelined_replies_over_tls_leave_in_a_few_sends() {
    #[path = "common/tls.rs"]
    mod certs;

    /// [`Echo`] in one write per reply.
    struct EchoOneWrite;

    impl FrameHandler for EchoOneWrite {
        fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
            let mut reply = Vec::with_capacity(line.len() + 2);
            reply.push(b'+');
            reply.extend_from_slice(&line);
            reply.push(b'\n');
            cx.write(&reply);
        }
    }

    let c = certs::TestCerts::new("coalescing");
    let mut reactor = Reactor::new().unwrap();
    let listener = reactor
        .listen_tls(&common::any_port(), c.server_config(), |_| {
            Framed::new(EchoOneWrite)
        })
        .unwrap();
    let addr = reactor.listener_addr(listener).unwrap().as_inet().unwrap();
    let burst: String = (0..N).map(request).collect();
    let expect: String = (0..N).map(|i| format!("+{}", request(i))).collect();
    let expect_len = expect.len();
    let config = c.client_config();
    // The client does the handshake, sends the burst in one write and
    // reads the replies, while this thread runs the reactor.
    let thread = std::thread::spawn(move || {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(common::LIMIT)).unwrap();
        let name = sockloop::tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = sockloop::tls::rustls::ClientConnection::new(config, name).unwrap();
        let mut tls = sockloop::tls::rustls::StreamOwned::new(conn, sock);
        tls.write_all(burst.as_bytes()).unwrap();
        tls.flush().unwrap();
        let mut got = vec![0; expect_len];
        tls.read_exact(&mut got).expect("the replies");
        got
    });
    let deadline = Instant::now() + common::LIMIT;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "no complete reply");
        reactor.run_once(Some(Duration::from_millis(20))).unwrap();
    }
    let got = thread.join().unwrap();
    assert!(got == expect.as_bytes(), "replies out of order or altered");
    let sends = reactor.stats().sends;
    println!("TLS: handshake and {N} pipelined replies in {sends} sends");
    // The handshake's flight (and session tickets) add one or two.
    assert!(
        sends <= BOUND,
        "TLS: {N} replies took {sends} sends: not coalesced"
    );
}
