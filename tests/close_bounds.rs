//! The bounds of a close whose whole answer went into the kernel at once:
//! the linger then learns whether the peer has everything only when it
//! looks (a quarter of the shorter of close_linger and close_stall after
//! the FIN) or when the peer sends something. A peer that never reads is
//! still cut at most half a close_stall late, whatever close_linger is,
//! and one that sends after it had everything is still reported.
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use sockloop::{CloseReason, ConnOptions, Context, ListenOptions, Protocol};

struct Firehose {
    size: usize,
    log: mpsc::Sender<String>,
}

impl Protocol for Firehose {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.write_bytes(pattern(self.size));
        cx.close();
    }
    fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.log.send(format!("{reason} unsent={}", cx.queued()));
    }
}

fn run(
    size: usize,
    linger: Duration,
    stall: Duration,
    wait: Duration,
) -> Option<(String, Duration)> {
    let (tx, rx) = mpsc::channel();
    let mut opts = ListenOptions::default();
    opts.conn = ConnOptions::default();
    opts.conn.close_stall = stall;
    opts.conn.close_linger = linger;
    let server = Server::start(move |r| {
        let id = r
            .listen_with(&any_port(), &opts, move |_| Firehose {
                size,
                log: tx.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let started = Instant::now();
    // A client that never reads and never closes.
    let s = std::net::TcpStream::connect(server.inet(0)).unwrap();
    let got = rx.recv_timeout(wait).ok().map(|r| (r, started.elapsed()));
    drop(s);
    drop(server);
    got
}

/// design.md: "the stall cut comes up to half a `close_stall` late".
#[test]
fn a_stalled_peer_is_cut_in_time_whatever_the_linger() {
    for size in [4 << 20, 8 << 20, 2 << 20] {
        let stall = Duration::from_millis(300);
        let got = run(
            size,
            Duration::from_secs(20),
            stall,
            Duration::from_secs(12),
        );
        eprintln!("size={size} linger=20s stall=300ms -> {got:?}");
        let (reason, waited) = got.expect("never cut off within 12 s");
        assert!(reason.starts_with("peer stopped taking"), "{reason}");
        assert!(
            waited < stall * 3 / 2 + Duration::from_millis(300),
            "{size}: {waited:?}"
        );
    }
}

/// close_linger = Duration::MAX ("never"): the stall bound must still cut.
#[test]
fn a_stalled_peer_is_cut_with_an_unbounded_linger() {
    let got = run(
        2 << 20,
        Duration::MAX,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    eprintln!("linger=MAX stall=200ms -> {got:?}");
    assert!(
        got.is_some(),
        "a never-reading peer was not cut off within 5 s"
    );
}

/// A client that has the (small) answer and then sends a few bytes, and
/// neither sends more nor closes: design.md says a peer
/// "having sent anything during close_linger" is closed with
/// PeerKeptSending at the linger's end.
#[test]
fn a_peer_that_sends_after_it_had_everything_is_reported() {
    use std::io::{Read, Write};
    let (tx, rx) = mpsc::channel();
    let mut opts = ListenOptions::default();
    opts.conn.close_linger = Duration::from_millis(800);
    let server = Server::start(move |r| {
        let id = r
            .listen_with(&any_port(), &opts, move |_| Firehose {
                size: 100,
                log: tx.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = std::net::TcpStream::connect(server.inet(0)).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let started = Instant::now();
    let reason = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    eprintln!(
        "got {} bytes; on_close after {:?}: {reason}",
        got.len(),
        started.elapsed()
    );
    assert!(reason.contains("kept sending"), "{reason}");
}
