//! Producers (asynchat's `push_with_producer`): a connection pulls from them
//! whenever its queue is at or below the low-water mark, so a producer of
//! small pieces streams as well as one of large pieces, never stalls, and
//! never piles up more than about the low-water mark.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use sockloop::{CloseReason, ConnOptions, Context, Protocol, TimerId};

const TOTAL: usize = 8 << 20;

/// Streams `TOTAL` bytes of `pattern` in pieces of `piece` bytes from a
/// producer, then writes `END` and closes; samples its queue every
/// millisecond and reports the largest.
struct Streamer {
    piece: usize,
    max_queued: usize,
    report: mpsc::Sender<String>,
}

impl Protocol for Streamer {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let data = Bytes::from(pattern(TOTAL));
        let piece = self.piece;
        let mut at = 0;
        cx.write_producer(move || {
            if at == data.len() {
                return None;
            }
            let end = (at + piece).min(data.len());
            let next = data.slice(at..end);
            at = end;
            Some(next)
        });
        // Both wait for the producer: asynchat's fifo order.
        cx.write(b"END");
        cx.close();
        cx.set_timer(Duration::from_millis(1));
    }
    fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
        self.max_queued = self.max_queued.max(cx.queued());
        cx.set_timer(Duration::from_millis(1));
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.report
            .send(format!(
                "{reason} unsent={} max_queued={}",
                cx.queued(),
                self.max_queued
            ))
            .unwrap();
    }
}

fn stream_in_pieces(piece: usize) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Streamer {
                piece,
                max_queued: 0,
                report: tx.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    let got = read_to_eof(&mut s).unwrap();
    assert_eq!(got.len(), TOTAL + 3, "piece {piece}");
    assert!(
        got[..TOTAL] == pattern(TOTAL)[..],
        "piece {piece}: bytes differ"
    );
    assert_eq!(&got[TOTAL..], b"END");
    drop(s);
    let report = recv(&rx);
    let low_water = ConnOptions::default().low_water;
    let max: usize = report.rsplit('=').next().unwrap().parse().unwrap();
    assert!(report.starts_with("closed unsent=0"), "{report}");
    // Filled only up to the low-water mark, plus one piece (and the `END`
    // written while the first piece was still queued).
    assert!(max <= low_water + piece + 3, "piece {piece}: {report}");
}

#[test]
fn a_producer_streams_8_mib_in_8_byte_pieces() {
    stream_in_pieces(8);
}

#[test]
fn a_producer_streams_8_mib_in_64_kib_pieces() {
    stream_in_pieces(64 * 1024);
}

/// Several producers and writes between them go out in the order given.
#[test]
fn producers_and_writes_keep_their_order() {
    struct Ordered;
    impl Protocol for Ordered {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            cx.write(b"<");
            for name in ["a", "b", "c"] {
                let mut left = 1000;
                cx.write_producer(move || {
                    (left > 0).then(|| {
                        left -= 1;
                        Bytes::from(name)
                    })
                });
                cx.write(b"|");
            }
            cx.write_producer(|| None); // an empty producer ends at once
            cx.write(b">");
            cx.close();
        }
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
    }
    let server = Server::start(|r| {
        let id = r.listen(&any_port(), |_| Ordered).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let got = read_to_eof(&mut connect(server.inet(0))).unwrap();
    let expected = format!(
        "<{}|{}|{}|>",
        "a".repeat(1000),
        "b".repeat(1000),
        "c".repeat(1000)
    );
    assert_eq!(String::from_utf8(got).unwrap(), expected);
}

/// A producer that panics closes its connection with the panic's reason,
/// after what it had produced; the loop goes on.
#[test]
fn a_panicking_producer_closes_only_its_connection() {
    struct Bomb(mpsc::Sender<String>);
    impl Protocol for Bomb {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            let mut calls = 0;
            cx.write_producer(move || {
                calls += 1;
                assert!(calls < 3, "producer exploded");
                Some(Bytes::from_static(b"ok"))
            });
            cx.write(b"never");
        }
        fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
            cx.write_bytes(data.split().freeze());
        }
        fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
            self.0.send(reason.to_string()).unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| Bomb(tx.clone())).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let got = read_to_eof(&mut connect(server.inet(0))).unwrap();
    assert_eq!(got, b"okok");
    assert!(recv(&rx).contains("producer exploded"));
}
