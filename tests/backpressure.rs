//! Backpressure across connections (`Context::pause_until_drained`): a
//! relay that writes one client's bytes to another is held back while the
//! other is over its high-water mark and its peer reads, and goes on when
//! that peer stops reading altogether (after `stall_timeout`), which then
//! meets its `max_queued` cap.

mod common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use sockloop::{CloseReason, ConnId, ConnOptions, Context, ListenOptions, Protocol, Reactor};

/// The first connection is the sink; every later one relays to it.
struct Relay {
    sink: Rc<Cell<Option<ConnId>>>,
    /// The largest queue seen on the sink.
    max_queued: Arc<AtomicUsize>,
    sink_closed: Arc<AtomicUsize>,
}

impl Protocol for Relay {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if self.sink.get().is_none() {
            self.sink.set(Some(cx.id()));
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        let sink = self.sink.get().expect("a sink");
        if sink == cx.id() {
            data.clear();
            return;
        }
        if cx.write_to(sink, data).is_ok() {
            let queued = cx.reactor().queued(sink);
            self.max_queued.fetch_max(queued, Ordering::Relaxed);
            cx.pause_until_drained(sink);
        }
        data.clear();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        if Some(cx.id()) == self.sink.get() {
            if let CloseReason::WriteQueueFull { .. } = reason {
                self.sink_closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Setup {
    server: Server,
    max_queued: Arc<AtomicUsize>,
    sink_closed: Arc<AtomicUsize>,
}

fn relay_server(stall: Duration) -> Setup {
    let max_queued = Arc::new(AtomicUsize::new(0));
    let sink_closed = Arc::new(AtomicUsize::new(0));
    let (mq, sc) = (max_queued.clone(), sink_closed.clone());
    let server = Server::start(move |r: &mut Reactor| {
        let sink = Rc::new(Cell::new(None));
        let opts = ListenOptions {
            conn: ConnOptions {
                max_queued: Some(1 << 20),
                stall_timeout: stall,
                ..ConnOptions::default()
            },
            ..ListenOptions::default()
        };
        let id = r
            .listen_with(&any_port(), &opts, move |_| Relay {
                sink: sink.clone(),
                max_queued: mq.clone(),
                sink_closed: sc.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    Setup {
        server,
        max_queued,
        sink_closed,
    }
}

/// The sink connects first and is known to the server before the source.
fn sink_then_source(server: &Server) -> (TcpStream, TcpStream) {
    let mut sink = connect(server.inet(0));
    // A round trip through the listener: the sink's on_open has run once a
    // second connection is served (accepts are in order).
    let source = connect(server.inet(0));
    sink.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = sink.write(b"");
    (sink, source)
}

#[test]
fn a_relay_waits_for_a_slow_reader_and_delivers_everything() {
    let s = relay_server(Duration::from_secs(5));
    let (mut sink, source) = sink_then_source(&s.server);
    const TOTAL: usize = 8 << 20;
    let input = pattern(TOTAL);
    let expect = input.clone();
    let mut writer = source.try_clone().unwrap();
    let writing = std::thread::spawn(move || writer.write_all(&input).unwrap());
    // Read slowly: small reads, each a little later than the source writes.
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = [0; 4096];
    while got.len() < TOTAL {
        let n = sink.read(&mut buf).unwrap();
        assert!(n > 0, "the sink was closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    writing.join().unwrap();
    assert!(got == expect, "bytes lost or reordered");
    let max = s.max_queued.load(Ordering::Relaxed);
    eprintln!("largest queue on the sink: {max} bytes");
    // High water (64 KiB) plus one read of the source (64 KiB), with room.
    assert!(
        max <= 256 * 1024,
        "the relay outran its reader: {max} bytes queued"
    );
    assert_eq!(s.sink_closed.load(Ordering::Relaxed), 0);
    drop(source);
}

#[test]
fn a_sink_that_stops_reading_stops_holding_the_relay() {
    let s = relay_server(Duration::from_millis(200));
    let (sink, mut source) = sink_then_source(&s.server);
    // The sink never reads: after the stall timeout the relay goes on, the
    // sink's queue reaches its 1 MiB cap and it is closed; the source can
    // send everything.
    source.set_write_timeout(Some(LIMIT)).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..(16 << 20) / chunk.len() {
        source.write_all(&chunk).unwrap();
        if s.sink_closed.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    wait_until("the stuck sink to be cut off", || {
        s.sink_closed.load(Ordering::Relaxed) == 1
    });
    drop(sink);
}
