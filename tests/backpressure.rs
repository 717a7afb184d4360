//! Backpressure across connections (`Context::pause_until_drained`): a
//! relay that writes one client's bytes to another is held back while the
//! other is over its high-water mark and its peer reads, and goes on when
//! that peer stops reading, or reads too slowly to drain to its low-water
//! mark within `stall_timeout`; that one then meets its `max_queued` cap.

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
        let mut opts = ListenOptions::default();
        opts.conn.max_queued = Some(1 << 20);
        opts.conn.stall_timeout = stall;
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

/// The first two connections are sinks; every later one writes what it
/// reads to both and waits for them (a chat room of two listeners).
struct Fanout {
    sinks: Arc<std::sync::Mutex<Vec<ConnId>>>,
    max_queued: Arc<[AtomicUsize; 2]>,
    cut_off: Arc<[AtomicUsize; 2]>,
}

impl Protocol for Fanout {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let mut sinks = self.sinks.lock().unwrap();
        if sinks.len() < 2 {
            sinks.push(cx.id());
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        let sinks = self.sinks.lock().unwrap().clone();
        if sinks.contains(&cx.id()) {
            data.clear();
            return;
        }
        for (i, &sink) in sinks.iter().enumerate() {
            if cx.write_to(sink, data).is_ok() {
                let queued = cx.reactor().queued(sink);
                self.max_queued[i].fetch_max(queued, Ordering::Relaxed);
                cx.pause_until_drained(sink);
            }
        }
        data.clear();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let i = self
            .sinks
            .lock()
            .unwrap()
            .iter()
            .position(|&s| s == cx.id());
        if let Some(i) = i {
            if let CloseReason::WriteQueueFull { .. } = reason {
                self.cut_off[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Red team B3: one consumer that reads, but slowly (2 KiB every 100 ms,
/// below the 48 KiB per second, stall_timeout, it needs to drain from high
/// to low water), used to pace the producer for everyone: the fast consumer
/// got its bytes at the slow one's rate. Now the slow one stops holding the
/// producer back after stall_timeout; the fast one gets everything at its
/// own pace, and the slow one is either kept up or cut off at its cap.
#[test]
fn a_slow_reader_does_not_pace_the_others() {
    // Small enough that the slow sink may meet it (the kernel's buffers
    // take megabytes of what it has not read yet).
    const CAP: usize = 256 << 10;
    let max_queued = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let cut_off = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let sinks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (mq, co, s) = (max_queued.clone(), cut_off.clone(), sinks.clone());
    let (mq2, co2, sinks2) = (max_queued.clone(), cut_off.clone(), sinks.clone());
    let server = Server::start(move |r: &mut Reactor| {
        let mut opts = ListenOptions::default();
        opts.conn.max_queued = Some(CAP);
        opts.conn.stall_timeout = Duration::from_secs(1);
        let id = r
            .listen_with(&any_port(), &opts, move |_| Fanout {
                sinks: s.clone(),
                max_queued: mq.clone(),
                cut_off: co.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    // The first two connections are the sinks: the fast one (accepted
    // first), then the slow one.
    let mut fast = connect(server.inet(0));
    fast.write_all(b"hi").unwrap();
    wait_until("the fast sink to open", || {
        !sinks.lock().unwrap().is_empty()
    });
    // The slow sink: one end of a socketpair with a send buffer as small as
    // the kernel allows on the server's side, so that what it has not read
    // waits in the server's queue, not in kernel buffers, and each of its
    // reads lets the server's socket take a little more (as a TCP peer
    // reading slowly through a small window does).
    let mut slow = {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        socket2::SockRef::from(&theirs)
            .set_send_buffer_size(1)
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        server
            .handle
            .post(move |r: &mut Reactor| {
                let mut opts = ConnOptions::default();
                opts.max_queued = Some(CAP);
                opts.stall_timeout = Duration::from_secs(1);
                let proto = Fanout {
                    sinks: sinks2,
                    max_queued: mq2,
                    cut_off: co2,
                };
                r.adopt(sockloop::BlockingStream::Unix(theirs), &opts, proto)
                    .unwrap();
                tx.send(()).unwrap();
            })
            .unwrap();
        recv(&rx);
        ours
    };
    let mut source = connect(server.inet(0));
    fast.set_read_timeout(Some(LIMIT)).unwrap();
    slow.set_read_timeout(Some(LIMIT)).unwrap();
    const TOTAL: usize = 4 << 20;
    let input = pattern(TOTAL);
    let expect = input.clone();
    let writing = std::thread::spawn(move || {
        let _ = source.write_all(&input);
        source
    });
    let fast_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = fast_done.clone();
    let slow_expect = expect.clone();
    let trickling = std::thread::spawn(move || {
        // 2 KiB every 100 ms until the fast sink has everything, then as
        // fast as it can: it gets everything, in order, or is cut off.
        let mut got = Vec::new();
        let mut buf = [0; 65536];
        loop {
            let trickle = !done.load(Ordering::Relaxed);
            let want = if trickle { 2048 } else { buf.len() };
            match slow.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.len() >= TOTAL {
                break;
            }
            if trickle {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert!(
            got[..] == slow_expect[..got.len()],
            "the slow sink got wrong bytes"
        );
        got.len()
    });
    let start = std::time::Instant::now();
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = [0; 65536];
    // At the slow sink's pace (20 KB/s) the 4 MiB took 200 s.
    let bound = Duration::from_secs(20);
    while got.len() < TOTAL {
        let n = fast.read(&mut buf).unwrap();
        assert!(n > 0, "the fast sink was closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        assert!(
            start.elapsed() < bound,
            "the fast sink was paced by the slow one: {} bytes in {bound:?}",
            got.len()
        );
    }
    let took = start.elapsed();
    fast_done.store(true, Ordering::Relaxed);
    assert!(got == expect, "bytes lost or reordered");
    let slow_got = trickling.join().unwrap();
    let source = writing.join().unwrap();
    let cut = cut_off[1].load(Ordering::Relaxed);
    eprintln!(
        "fast sink: {TOTAL} bytes in {took:?}; slow sink: {slow_got} bytes read, \
         cut off: {cut}, largest queue {} (fast: {})",
        max_queued[1].load(Ordering::Relaxed),
        max_queued[0].load(Ordering::Relaxed)
    );
    assert_eq!(
        cut_off[0].load(Ordering::Relaxed),
        0,
        "the fast sink was cut off"
    );
    assert!(
        cut == 1 || slow_got == TOTAL,
        "the slow sink was neither kept up nor cut off ({slow_got} bytes)"
    );
    assert!(max_queued[1].load(Ordering::Relaxed) <= CAP);
    drop(source);
}
