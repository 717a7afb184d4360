//! The life of a connection and of the loop: open and close callbacks,
//! timers, outgoing connects, panics, stopping, limits.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use sockloop::{
    Addr, CloseReason, ConnOptions, Context, ListenOptions, Protocol, Reactor, TimerId,
};

/// Records every callback as a line, for tests to read in order.
struct Recorder {
    log: mpsc::Sender<String>,
    echo: bool,
}

impl Protocol for Recorder {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.log
            .send(format!("open {}", cx.peer_addr().is_ok()))
            .unwrap();
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        let text = String::from_utf8_lossy(data).into_owned();
        if self.echo {
            cx.write_bytes(data.split().freeze());
        } else {
            data.clear();
        }
        self.log.send(format!("data {text}")).unwrap();
    }
    fn on_eof(&mut self, cx: &mut Context<'_>) {
        self.log.send("eof".into()).unwrap();
        cx.close();
    }
    fn on_timer(&mut self, _: &mut Context<'_>, _: TimerId) {
        self.log.send("timer".into()).unwrap();
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.log
            .send(format!("close {reason} unsent={}", cx.queued()))
            .unwrap();
    }
}

fn recorder_server(opts: ListenOptions, echo: bool) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen_with(&any_port(), &opts, move |_| Recorder {
                log: tx.clone(),
                echo,
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

#[test]
fn callbacks_run_in_order_and_close_exactly_once() {
    let (server, log) = recorder_server(ListenOptions::default(), true);
    let mut s = connect(server.inet(0));
    assert_eq!(recv(&log), "open true");
    assert_eq!(roundtrip(&mut s, b"hi"), b"hi");
    assert_eq!(recv(&log), "data hi");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(recv(&log), "eof");
    assert_eq!(recv(&log), "close closed by peer unsent=0");
    assert!(read_to_eof(&mut s).unwrap().is_empty());
    server.stop();
    assert!(log.try_recv().is_err(), "a callback after on_close");
}

#[test]
fn dropping_the_reactor_closes_every_connection_once() {
    let (server, log) = recorder_server(ListenOptions::default(), true);
    let _clients: Vec<_> = (0..3).map(|_| connect(server.inet(0))).collect();
    for _ in 0..3 {
        assert_eq!(recv(&log), "open true");
    }
    server.stop();
    let closes: Vec<String> = log.try_iter().collect();
    assert_eq!(closes, vec!["close reactor stopped unsent=0"; 3]);
}

/// Sets timers on open: one to fire, one cancelled.
struct Timed {
    log: mpsc::Sender<(String, Instant)>,
    keep: Option<TimerId>,
}

impl Protocol for Timed {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let cancelled = cx.set_timer(Duration::from_millis(20));
        self.keep = Some(cx.set_timer(Duration::from_millis(50)));
        assert!(cx.cancel_timer(cancelled));
        assert!(!cx.cancel_timer(cancelled), "cancelled twice");
        self.log.send(("set".into(), Instant::now())).unwrap();
    }
    fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        assert_eq!(Some(timer), self.keep);
        self.log.send(("fired".into(), Instant::now())).unwrap();
        cx.write(b"tick");
        cx.close();
    }
}

#[test]
fn timers_fire_and_cancel() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Timed {
                log: tx.clone(),
                keep: None,
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    let (what, set_at) = recv(&rx);
    assert_eq!(what, "set");
    let (what, fired_at) = recv(&rx);
    assert_eq!(what, "fired", "the cancelled timer fired");
    assert!(fired_at - set_at >= Duration::from_millis(50));
    assert_eq!(read_to_eof(&mut s).unwrap(), b"tick");
}

#[test]
fn reactor_wide_timers_and_posted_closures() {
    let mut reactor = Reactor::new().unwrap();
    let fired = Rc::new(RefCell::new(Vec::new()));
    let f = fired.clone();
    let cancelled = reactor.call_later(Duration::from_millis(5), move |_| {
        f.borrow_mut().push("cancelled")
    });
    let f = fired.clone();
    reactor.call_later(Duration::from_millis(10), move |r| {
        f.borrow_mut().push("later");
        r.stop();
    });
    assert!(reactor.cancel_timer(cancelled));
    let (tx, rx) = mpsc::channel();
    reactor
        .handle()
        .post(move |_| tx.send("posted").unwrap())
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(*fired.borrow(), vec!["later"]);
    assert_eq!(rx.try_recv(), Ok("posted"));
}

#[test]
fn stop_from_another_thread_takes_effect_at_once() {
    let mut reactor = Reactor::new().unwrap();
    reactor
        .listen(&any_port(), |_| Recorder {
            log: mpsc::channel().0,
            echo: false,
        })
        .unwrap();
    let handle = reactor.handle();
    let (tx, rx) = mpsc::channel();
    let stopper = std::thread::spawn(move || {
        // The loop blocks in poll with no timeout: only the waker can end it.
        rx.recv().unwrap();
        let asked = Instant::now();
        handle.stop();
        asked
    });
    reactor.call_later(Duration::ZERO, move |_| tx.send(()).unwrap());
    reactor.run().unwrap();
    let stopped = Instant::now();
    let asked = stopper.join().unwrap();
    assert!(
        stopped - asked < Duration::from_millis(100),
        "took {:?}",
        stopped - asked
    );
}

#[test]
fn stop_before_run_is_not_lost() {
    let mut reactor = Reactor::new().unwrap();
    reactor.handle().stop();
    reactor.run().unwrap(); // returns at once instead of blocking forever
    assert!(reactor.handle().post(|_| {}).is_ok());
}

#[test]
fn handle_is_refused_once_the_reactor_is_gone() {
    let handle = Reactor::new().unwrap().handle();
    let err = handle.post(|_| {}).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
}

/// Panics on the line `boom`, echoes anything else.
struct Fragile;

impl Protocol for Fragile {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        if data.starts_with(b"boom") {
            cx.write(b"queued before the panic\n");
            panic!("told to explode");
        }
        cx.write_bytes(data.split().freeze());
    }
}

#[test]
fn a_panicking_callback_closes_only_its_connection() {
    let server = Server::start(|r| {
        let id = r.listen(&any_port(), |_| Fragile).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut calm = connect(server.inet(0));
    let mut doomed = connect(server.inet(0));
    assert_eq!(roundtrip(&mut calm, b"one"), b"one");
    doomed.write_all(b"boom").unwrap();
    // What it queued before panicking is still delivered, then the close.
    assert_eq!(
        read_to_eof(&mut doomed).unwrap(),
        b"queued before the panic\n"
    );
    assert_eq!(roundtrip(&mut calm, b"two"), b"two");
    let mut fresh = connect(server.inet(0));
    assert_eq!(roundtrip(&mut fresh, b"three"), b"three");
}

/// An outgoing connection: reports open/close, sends a greeting.
struct Dialer {
    log: mpsc::Sender<String>,
}

impl Protocol for Dialer {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.write(b"hello from the loop");
        cx.shutdown_write();
        self.log.send("open".into()).unwrap();
    }
    fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
        self.log
            .send(format!("data {}", String::from_utf8_lossy(&data.split())))
            .unwrap();
    }
    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        self.log.send(format!("close {reason}")).unwrap();
    }
}

#[test]
fn connect_reaches_a_server_and_half_closes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: Addr = listener.local_addr().unwrap().into();
    let (tx, log) = mpsc::channel();
    let server = Server::start(move |r| {
        r.connect(&addr, Dialer { log: tx }).unwrap();
        vec![]
    });
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(recv(&log), "open");
    // shutdown_write: the peer reads the greeting, then end of stream.
    assert_eq!(read_to_eof(&mut peer).unwrap(), b"hello from the loop");
    peer.write_all(b"reply").unwrap();
    drop(peer);
    assert_eq!(recv(&log), "data reply");
    assert_eq!(recv(&log), "close closed by peer");
    drop(server);
}

#[test]
fn connect_to_a_closed_port_reports_refusal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr: Addr = port.into(); // the listener is gone: nothing listens there
    let (tx, log) = mpsc::channel();
    let _server = Server::start(move |r| {
        if let Err(e) = r.connect(&addr, Dialer { log: tx.clone() }) {
            tx.send(format!("close connect failed: {e}")).unwrap();
        }
        vec![]
    });
    let line = recv(&log);
    assert!(
        line.starts_with("close connect failed") && line.contains("refused"),
        "{line}"
    );
}

#[test]
fn connect_to_a_missing_unix_path_fails_at_once() {
    let mut reactor = Reactor::new().unwrap();
    let addr = Addr::unix(temp_path("nobody-home")).unwrap();
    let err = reactor
        .connect(
            &addr,
            Dialer {
                log: mpsc::channel().0,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("nobody-home"), "{err}");
}

#[test]
fn idle_connections_are_closed_with_a_reason() {
    let mut opts = ListenOptions::default();
    opts.conn.idle_timeout = Some(Duration::from_millis(100));
    let (server, log) = recorder_server(opts, true);
    let mut s = connect(server.inet(0));
    assert_eq!(recv(&log), "open true");
    let opened = Instant::now();
    // Activity postpones the timeout.
    assert_eq!(roundtrip(&mut s, b"ping"), b"ping");
    assert_eq!(recv(&log), "data ping");
    assert_eq!(recv(&log), "close idle timeout unsent=0");
    assert!(opened.elapsed() >= Duration::from_millis(100));
    assert!(read_to_eof(&mut s).unwrap_or_default().is_empty());
}

/// Answers any input with 8 MiB written at once, ignoring backpressure.
struct Firehose(mpsc::Sender<String>);

impl Protocol for Firehose {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
        for _ in 0..8 {
            cx.write_bytes(vec![7u8; 1 << 20]);
        }
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.0
            .send(format!("{reason}; unsent {}", cx.queued()))
            .unwrap();
    }
}

#[test]
fn a_protocol_that_ignores_backpressure_hits_the_hard_cap() {
    let (tx, log) = mpsc::channel();
    let server = Server::start(move |r| {
        let mut opts = ListenOptions::default();
        opts.conn.max_queued = Some(4 << 20);
        let id = r
            .listen_with(&any_port(), &opts, move |_| Firehose(tx.clone()))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    s.write_all(b"go").unwrap();
    assert_eq!(
        recv(&log),
        "write queue over its 4194304-byte limit (peer not reading); unsent 4194304"
    );
    let got = read_to_eof(&mut s).map(|v| v.len()).unwrap_or(0);
    assert!(got <= 4 << 20, "received {got} bytes");
}

/// Pauses reading on open; the test resumes it through the handle.
struct Gate(mpsc::Sender<sockloop::ConnId>);

impl Protocol for Gate {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.pause_reading();
        cx.write(b"paused\n");
        self.0.send(cx.id()).unwrap();
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_bytes(data.split().freeze());
    }
}

#[test]
fn pause_and_resume_reading() {
    let (tx, ids) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| Gate(tx.clone())).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    let id = recv(&ids);
    assert_eq!(read_n(&mut s, 7), b"paused\n");
    s.write_all(b"waiting").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(s.read(&mut [0; 8]).is_err(), "read while paused");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    // The bytes wait in the kernel; resuming must find them without a new edge.
    server
        .handle
        .post(move |r| r.set_reading(id, true))
        .unwrap();
    assert_eq!(read_n(&mut s, 7), b"waiting");
    server
        .handle
        .write(id, &b" and a write from another thread"[..])
        .unwrap();
    assert_eq!(read_n(&mut s, 32), b" and a write from another thread");
}

#[test]
fn a_connect_that_gets_no_answer_times_out() {
    // A listener with a backlog of 0 that never accepts: once its queue is
    // full, Linux drops further SYNs, so a connect neither succeeds nor fails.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let target = socket.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<_> = (0..4)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&target.into()); // EINPROGRESS: the handshake goes on
            s
        })
        .collect();
    let (tx, log) = mpsc::channel();
    let _server = Server::start(move |r| {
        let mut opts = ConnOptions::default();
        opts.connect_timeout = Some(Duration::from_millis(300));
        r.connect_with(&target.into(), &opts, Dialer { log: tx })
            .unwrap();
        vec![]
    });
    let started = Instant::now();
    let line = recv(&log);
    if line == "open" {
        // The kernel took this connection after all (a looser backlog policy):
        // nothing to time out here.
        eprintln!("backlog did not fill on this kernel; timeout not exercised");
        return;
    }
    assert!(
        line.contains("connect failed") && line.contains("timed out"),
        "{line}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    drop(fillers);
}
