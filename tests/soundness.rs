//! Loop soundness: callbacks never nest, user code that panics anywhere
//! leaves the loop serving, deadlines saturate, ids never alias, closing is
//! cheap, and a Unix socket file is removed only by its owner.
//!
//! Each test drives a reactor on the test thread with `run_once`, so what
//! happened when is visible without another thread.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{any_port, temp_path, LIMIT};
use sockloop::{
    Addr, BlockingStream, CloseReason, ConnOptions, Context, DatagramContext, DatagramProtocol,
    Protocol, Reactor,
};

type Log = Rc<RefCell<Vec<String>>>;
type Act = Box<dyn FnMut(&mut Context<'_>)>;

fn log(log: &Log, entry: impl Into<String>) {
    log.borrow_mut().push(entry.into());
}

/// Turns the loop until `done` holds (bounded by the test time limit).
fn turn_until(reactor: &mut Reactor, what: &str, mut done: impl FnMut(&mut Reactor) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done(reactor) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        reactor
            .run_once(Some(Duration::from_millis(20)))
            .expect("run_once");
    }
}

/// Records every callback with a name; optionally runs `act` in `on_data`.
struct Recorder {
    name: &'static str,
    log: Log,
    act: Option<Act>,
}

impl Recorder {
    fn new(name: &'static str, log: &Log) -> Recorder {
        Recorder {
            name,
            log: log.clone(),
            act: None,
        }
    }
}

impl Protocol for Recorder {
    fn on_open(&mut self, _cx: &mut Context<'_>) {
        log(&self.log, format!("{} open", self.name));
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
        log(&self.log, format!("{} data start", self.name));
        if let Some(act) = &mut self.act {
            act(cx);
        }
        log(&self.log, format!("{} data end", self.name));
    }
    fn on_shutdown(&mut self, _cx: &mut Context<'_>) {
        log(&self.log, format!("{} shutdown", self.name));
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        log(&self.log, format!("{} close {reason}", self.name));
    }
}

/// Accepts one connection on a fresh listener and returns the client side.
fn accept_one(
    reactor: &mut Reactor,
    log: &Log,
    proto: impl FnMut(&Addr) -> Recorder + 'static,
) -> TcpStream {
    let l = reactor.listen(&any_port(), proto).unwrap();
    let addr = reactor.listener_addr(l).unwrap().as_inet().unwrap();
    let client = common::connect(addr);
    turn_until(reactor, "accept", |_| {
        log.borrow().iter().any(|e| e.ends_with("open"))
    });
    client
}

#[test]
fn adopt_from_a_callback_opens_after_the_callback() {
    let events: Log = Default::default();
    let mut reactor = Reactor::new().unwrap();
    let l2 = events.clone();
    let mut client = accept_one(&mut reactor, &events, move |_| {
        let l3 = l2.clone();
        let mut r = Recorder::new("a", &l2);
        r.act = Some(Box::new(move |cx| {
            let (mine, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            cx.reactor()
                .adopt(
                    BlockingStream::Unix(mine),
                    &ConnOptions::default(),
                    Recorder::new("b", &l3),
                )
                .unwrap();
            log(&l3, "adopted");
        }));
        r
    });
    client.write_all(b"x").unwrap();
    turn_until(&mut reactor, "b open", |_| {
        events.borrow().iter().any(|e| e == "b open")
    });
    let events = events.borrow();
    let pos = |what: &str| events.iter().position(|e| e == what).unwrap();
    assert!(
        pos("a data end") < pos("b open"),
        "on_open of the adopted connection ran inside a's callback: {events:?}"
    );
}

#[test]
fn shutdown_graceful_from_a_callback_reaches_the_caller_too() {
    let events: Log = Default::default();
    let mut reactor = Reactor::new().unwrap();
    let l2 = events.clone();
    let mut n = 0;
    let l = reactor
        .listen(&any_port(), move |_| {
            n += 1;
            let mut r = Recorder::new(if n == 1 { "first" } else { "second" }, &l2);
            if n == 1 {
                r.act = Some(Box::new(|cx| {
                    cx.reactor().shutdown_graceful(Duration::from_secs(5))
                }));
            }
            r
        })
        .unwrap();
    let addr = reactor.listener_addr(l).unwrap().as_inet().unwrap();
    let mut first = common::connect(addr);
    turn_until(&mut reactor, "first", |r| r.connection_count() == 1);
    let _second = common::connect(addr);
    turn_until(&mut reactor, "second", |r| r.connection_count() == 2);
    first.write_all(b"x").unwrap();
    turn_until(&mut reactor, "shutdown", |_| {
        events.borrow().iter().any(|e| e.ends_with("shutdown"))
    });
    reactor.run_once(Some(Duration::ZERO)).unwrap();
    let shutdowns: Vec<String> = events
        .borrow()
        .iter()
        .filter(|e| e.ends_with("shutdown"))
        .cloned()
        .collect();
    assert_eq!(shutdowns.len(), 2, "on_shutdown calls: {shutdowns:?}");
}

struct ClosingDatagram {
    log: Log,
}

impl DatagramProtocol for ClosingDatagram {
    fn on_datagram(&mut self, cx: &mut DatagramContext<'_>, _data: &[u8], _from: &Addr) {
        log(&self.log, "datagram");
        cx.close();
    }
    fn on_close(&mut self, _cx: &mut DatagramContext<'_>, reason: &CloseReason) {
        log(&self.log, format!("close {reason}"));
    }
}

#[test]
fn a_datagram_socket_closed_from_its_own_callback_gets_on_close() {
    let events: Log = Default::default();
    let mut reactor = Reactor::new().unwrap();
    let path = temp_path("dgram-close");
    let addr = Addr::unix(&path).unwrap();
    reactor
        .bind_datagram(
            &addr,
            ClosingDatagram {
                log: events.clone(),
            },
        )
        .unwrap();
    let client = UnixDatagram::unbound().unwrap();
    client.send_to(b"hi", &path).unwrap();
    turn_until(&mut reactor, "datagram", |_| !events.borrow().is_empty());
    reactor.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*events.borrow(), ["datagram", "close closed"]);
    drop(reactor);
    assert_eq!(events.borrow().len(), 2, "on_close ran twice");
}

#[test]
fn panics_in_posted_closures_timers_and_signal_handlers_leave_the_loop_serving() {
    let mut reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    handle.post(|_| panic!("posted closure")).unwrap();
    reactor.run_once(Some(Duration::from_millis(100))).unwrap();
    reactor.call_later(Duration::ZERO, |_| panic!("call_later closure"));
    reactor.run_once(Some(Duration::from_millis(100))).unwrap();
    let sig = libc::SIGUSR2;
    reactor
        .on_signal(&[sig], |_, _| panic!("signal handler"))
        .unwrap();
    // SAFETY: raising a signal the reactor has a handler for.
    unsafe { libc::raise(sig) };
    turn_until(&mut reactor, "the signal", |r| r.stats().panics == 3);

    // Still serving: an echo round trip, and a later posted closure runs.
    struct Echo;
    impl Protocol for Echo {
        fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
            cx.write_bytes(data.split().freeze());
        }
    }
    let l = reactor.listen(&any_port(), |_| Echo).unwrap();
    let mut client = common::connect(reactor.listener_addr(l).unwrap().as_inet().unwrap());
    client.write_all(b"ping").unwrap();
    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    turn_until(&mut reactor, "the echo", |_| {
        let mut buf = [0; 16];
        if let Ok(n) = client.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got == b"ping"
    });
    let ran = Rc::new(RefCell::new(false));
    let ran2 = ran.clone();
    reactor.call_later(Duration::ZERO, move |_| *ran2.borrow_mut() = true);
    turn_until(&mut reactor, "a later closure", |_| *ran.borrow());
    assert_eq!(reactor.stats().panics, 3);
}

#[test]
fn dropping_the_reactor_sends_queued_datagrams() {
    let qlen: usize = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10);
    let count = 2 * qlen.min(200);
    let mut reactor = Reactor::new().unwrap();
    let target = temp_path("dgram-sink");
    let sink = UnixDatagram::bind(&target).unwrap();
    sink.set_nonblocking(true).unwrap();
    struct Quiet;
    impl DatagramProtocol for Quiet {
        fn on_datagram(&mut self, _: &mut DatagramContext<'_>, _: &[u8], _: &Addr) {}
    }
    let from = temp_path("dgram-src");
    let id = reactor
        .bind_datagram(&Addr::unix(&from).unwrap(), Quiet)
        .unwrap();
    let to = Addr::unix(&target).unwrap();
    for i in 0..count {
        reactor.send_to(id, &(i as u32).to_be_bytes(), &to).unwrap();
    }
    let drain = || {
        let mut got = Vec::new();
        let mut buf = [0; 8];
        while let Ok(n) = sink.recv(&mut buf) {
            got.push(u32::from_be_bytes(buf[..n].try_into().unwrap()));
        }
        got
    };
    let before = drain();
    assert!(
        before.len() < count,
        "nothing was queued: the test proves nothing"
    );
    drop(reactor);
    let after = drain();
    let all: Vec<u32> = before.into_iter().chain(after).collect();
    assert_eq!(
        all,
        (0..count as u32).collect::<Vec<_>>(),
        "queued datagrams lost when the reactor was dropped"
    );
    let _ = std::fs::remove_file(&target);
}

// ----- deadlines saturate ------------------------------------------------

struct Quiet;
impl Protocol for Quiet {
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
    }
}

#[test]
fn durations_past_the_end_of_time_mean_never() {
    let mut reactor = Reactor::new().unwrap();
    let mut opts = sockloop::ListenOptions::default();
    opts.conn.idle_timeout = Some(Duration::MAX);
    let l = reactor.listen_with(&any_port(), &opts, |_| Quiet).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let _client = common::connect(addr.as_inet().unwrap());
    turn_until(&mut reactor, "accept", |r| r.connection_count() == 1);

    let mut conn_opts = ConnOptions::default();
    conn_opts.connect_timeout = Some(Duration::MAX);
    let out = reactor.connect_with(&addr, &conn_opts, Quiet).unwrap();
    turn_until(&mut reactor, "connect", |r| r.connection_count() == 3);
    let timer = reactor.set_timer(out, Duration::MAX);
    reactor.call_later(Duration::MAX, |_| panic!("never"));
    reactor
        .handle()
        .post(|r| r.shutdown_graceful(Duration::MAX))
        .unwrap();
    for _ in 0..3 {
        reactor.run_once(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(
        reactor.cancel_timer(timer),
        "a never-timer is pending until cancelled"
    );
    assert_eq!(reactor.stats().panics, 0);
    assert_eq!(reactor.connection_count(), 3, "nothing timed out");

    // The offload pool's grace at reactor drop.
    drop(reactor);
    let mut reactor = Reactor::with_offload({
        let mut options = sockloop::OffloadOptions::default();
        options.grace = Duration::MAX;
        options
    })
    .unwrap();
    struct Offloads(Rc<RefCell<bool>>);
    impl Protocol for Offloads {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            let done = self.0.clone();
            cx.offload(|| 1, move |_, r| *done.borrow_mut() = r.is_ok());
        }
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
    }
    let done = Rc::new(RefCell::new(false));
    let (mine, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    reactor
        .adopt(
            BlockingStream::Unix(mine),
            &ConnOptions::default(),
            Offloads(done.clone()),
        )
        .unwrap();
    turn_until(&mut reactor, "the offload job", |_| *done.borrow());
    drop(reactor);
}

#[test]
fn a_server_timeout_past_the_end_of_time_means_no_timeout() {
    use sockloop::server::{Family, Request, ServerBuilder};
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind("127.0.0.1:0".parse().unwrap())
        .timeout(Some(Duration::MAX))
        .handle_timeout(|| panic!("timed out"))
        .build(|| |_: &mut Request| Ok(()))
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = common::connect(addr);
        c.write_all(b"x\n").unwrap();
        let _ = c.read(&mut [0; 8]);
    });
    server.handle_request().unwrap();
    client.join().unwrap();
}

// ----- ids never alias -----------------------------------------------------

#[test]
fn a_reused_listener_slot_keeps_its_own_count() {
    let mut reactor = Reactor::new().unwrap();
    let mut opts = sockloop::ListenOptions::default();
    opts.max_connections = Some(2);
    let old = reactor.listen_with(&any_port(), &opts, |_| Quiet).unwrap();
    let old_addr = reactor.listener_addr(old).unwrap().as_inet().unwrap();
    let mut old_clients: Vec<TcpStream> = (0..2).map(|_| common::connect(old_addr)).collect();
    turn_until(&mut reactor, "2 accepted", |r| r.connection_count() == 2);
    reactor.close_listener(old);
    reactor.run_once(Some(Duration::ZERO)).unwrap(); // frees the slot
    let new = reactor.listen_with(&any_port(), &opts, |_| Quiet).unwrap();
    assert_eq!(
        format!("{new}").split('.').next(),
        format!("{old}").split('.').next(),
        "the test needs the slot to be reused"
    );
    // The old listener's connections close: the new listener's count must not move.
    old_clients.clear();
    turn_until(&mut reactor, "old closed", |r| r.connection_count() == 0);
    let new_addr = reactor.listener_addr(new).unwrap().as_inet().unwrap();
    let mut clients: Vec<TcpStream> = (0..3).map(|_| common::connect(new_addr)).collect();
    turn_until(&mut reactor, "2 new accepted", |r| {
        r.connection_count() == 2
    });
    for _ in 0..5 {
        reactor.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(
        reactor.connection_count(),
        2,
        "the new listener's cap of 2 holds"
    );
    clients.remove(0);
    turn_until(&mut reactor, "the third accepted after one left", |r| {
        r.stats().accepted == 5
    });
}

// ----- closing cancels timers ---------------------------------------------

#[test]
fn closing_a_connection_cancels_its_timers() {
    struct SetsTimer(Rc<RefCell<Option<sockloop::TimerId>>>);
    impl Protocol for SetsTimer {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            *self.0.borrow_mut() = Some(cx.set_timer(Duration::from_secs(3600)));
            cx.abort();
        }
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
    }
    let mut reactor = Reactor::new().unwrap();
    let timer = Rc::new(RefCell::new(None));
    let (mine, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    reactor
        .adopt(
            BlockingStream::Unix(mine),
            &ConnOptions::default(),
            SetsTimer(timer.clone()),
        )
        .unwrap();
    turn_until(&mut reactor, "close", |r| r.stats().closed == 1);
    let timer = timer.borrow().expect("set");
    assert!(
        !reactor.cancel_timer(timer),
        "the closed connection's timer was still pending"
    );
}

// ----- a socket file is removed only by its owner ----------------------------

#[test]
fn a_server_leaves_another_servers_socket_file_alone() {
    let path = temp_path("owner");
    let addr = Addr::unix(&path).unwrap();
    let mut first = Reactor::new().unwrap();
    first.listen(&addr, |_| Quiet).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut second = Reactor::new().unwrap();
    second.listen(&addr, |_| Quiet).unwrap();
    drop(first);
    assert!(
        path.exists(),
        "the first server deleted the second one's socket file"
    );
    std::os::unix::net::UnixStream::connect(&path).expect("the second server still reachable");
    drop(second);
    assert!(!path.exists(), "the owner removes its file");
}

#[test]
fn a_panicking_factory_is_counted_and_its_listener_goes_on() {
    let mut reactor = Reactor::new().unwrap();
    let mut n = 0;
    let l = reactor
        .listen(&any_port(), move |_| {
            n += 1;
            assert!(n != 1, "the first connection's factory panics");
            Quiet
        })
        .unwrap();
    let addr = reactor.listener_addr(l).unwrap().as_inet().unwrap();
    let mut first = common::connect(addr);
    turn_until(&mut reactor, "the panic", |r| r.stats().panics == 1);
    assert_eq!(first.read(&mut [0; 1]).unwrap_or(0), 0, "dropped");
    let _second = common::connect(addr);
    turn_until(&mut reactor, "the second", |r| r.connection_count() == 1);
}

#[test]
fn a_protocol_whose_drop_panics_does_not_escape_the_loop() {
    struct PanicsOnDrop;
    impl Protocol for PanicsOnDrop {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            cx.abort();
        }
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
    }
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a protocol's drop panics");
        }
    }
    let mut reactor = Reactor::new().unwrap();
    let (mine, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    reactor
        .adopt(
            BlockingStream::Unix(mine),
            &ConnOptions::default(),
            PanicsOnDrop,
        )
        .unwrap();
    turn_until(&mut reactor, "the close", |r| r.stats().closed == 1);
    assert_eq!(reactor.stats().panics, 1);
    assert_eq!(reactor.connection_count(), 0);
    reactor
        .run_once(Some(Duration::ZERO))
        .expect("the loop goes on");
}

/// Whatever unwinds out of a turn (here a buffer owner's `Drop`, user code
/// the loop does not expect to panic), the next `run_once` works: the loop's
/// own state is put back on unwind.
#[test]
fn the_loop_state_is_restored_when_something_unwinds_out_of_a_turn() {
    struct Owner(Vec<u8>);
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Owner {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("a buffer owner's drop panics");
            }
        }
    }
    let mut reactor = Reactor::new().unwrap();
    let (mine, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    let id = reactor
        .adopt(BlockingStream::Unix(mine), &ConnOptions::default(), Quiet)
        .unwrap();
    let data = bytes::Bytes::from_owner(Owner(vec![7; 4 << 20]));
    let mut escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reactor.write_bytes(id, data).unwrap();
    }))
    .is_err();
    let deadline = Instant::now() + LIMIT;
    let mut buf = vec![0; 1 << 16];
    while !escaped {
        assert!(Instant::now() < deadline, "the buffer was never dropped");
        let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reactor.run_once(Some(Duration::from_millis(10)))
        }));
        match turn {
            Err(_) => escaped = true,
            Ok(result) => {
                result.expect("run_once");
            }
        }
        while theirs.read(&mut buf).is_ok_and(|n| n > 0) {}
    }
    reactor
        .run_once(Some(Duration::ZERO))
        .expect("run_once works after an unwind");
    reactor.run_once(Some(Duration::ZERO)).expect("and again");
}
