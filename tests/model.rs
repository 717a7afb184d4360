//! A model-based test of the loop (issue 10): a real reactor over loopback,
//! driven by random sequences of operations issued from outside the loop,
//! from a `Handle`, and from inside callbacks, checked after every step
//! against a simple model:
//!
//! - `on_close` exactly once for every connection that got `on_open` (at most
//!   once for one that did not: a failed connect), nothing after `on_close`,
//!   nothing before `on_open` but a failed connect's `on_close`;
//! - callbacks never nest;
//! - `Stats.open` equals the live connections, every listener's count equals
//!   its live connections, `Stats.panics` equals the panics user code raised;
//! - no panic escapes `run_once`, and the loop still serves afterwards.
//!
//! `PROPTEST_CASES=500 cargo test --release --test model` for a longer run.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;
use sockloop::{
    Addr, BlockingStream, CloseReason, ConnId, ConnOptions, Context, DatagramContext,
    DatagramProtocol, ListenOptions, ListenerId, Protocol, Reactor, TimerId,
};

/// Where an operation is issued from.
#[derive(Clone, Copy, Debug)]
enum From {
    /// Directly on the reactor, between turns.
    Outside,
    /// From a posted closure (a `Handle`).
    Handle,
    /// From inside a callback of a live connection (its `on_timer`).
    Callback(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Write(u8, u16),
    Close(u8),
    Abort(u8),
    ShutdownWrite(u8),
    Pause(u8),
    Resume(u8),
    SetTimer(u8, u8),
    CancelTimer(u8),
    Connect(u8),
    Adopt,
    Listen(Option<u8>),
    CloseListener(u8),
    ShutdownGraceful(u8),
    Panic,
    /// The connection whose callback runs this will panic in its `on_close`.
    PanicOnClose,
    /// Binds a UDP socket.
    Bind,
    /// Closes a datagram socket.
    DgramClose(u8),
    /// Sends from one datagram socket to another.
    DgramSend(u8, u8),
    /// Marks a datagram socket to close itself in its next `on_datagram`.
    DgramSelfClose(u8),
}

#[derive(Clone, Debug)]
enum Step {
    Do(From, Op),
    ClientConnect(u8),
    ClientWrite(u8, u8),
    ClientClose(u8),
    ClientReset(u8),
    /// `Handle::write` and `Handle::close`, not through a posted closure.
    HandleWrite(u8),
    HandleClose(u8),
    /// A datagram from a plain UDP client.
    ClientDatagram(u8),
    Turn,
}

#[derive(Default)]
struct Probe {
    id: Option<ConnId>,
    listener: Option<usize>,
    opened: bool,
    closes: u32,
    dropped: bool,
}

#[derive(Default)]
struct Model {
    probes: Vec<Probe>,
    /// Operations a connection carries out in its next `on_timer`.
    inbox: BTreeMap<usize, Vec<Op>>,
    listeners: Vec<(ListenerId, Addr)>,
    timers: Vec<TimerId>,
    panics: u64,
    in_callback: bool,
    violations: Vec<String>,
    /// Datagram sockets: id, address, `on_close` calls, whether the next
    /// datagram makes it close itself.
    dgrams: Vec<Dgram>,
}

struct Dgram {
    id: ConnId,
    addr: std::net::SocketAddr,
    closes: u32,
    close_on_next: bool,
}

impl Model {
    fn live(&self) -> Vec<(usize, ConnId)> {
        self.probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.opened && p.closes == 0)
            .filter_map(|(i, p)| Some((i, p.id?)))
            .collect()
    }
    fn pick(&self, n: u8) -> Option<(usize, ConnId)> {
        let live = self.live();
        (!live.is_empty()).then(|| live[usize::from(n) % live.len()])
    }
    fn dgram(&self, n: u8) -> Option<(usize, ConnId)> {
        let live: Vec<(usize, ConnId)> = self
            .dgrams
            .iter()
            .enumerate()
            .filter(|(_, d)| d.closes == 0)
            .map(|(i, d)| (i, d.id))
            .collect();
        (!live.is_empty()).then(|| live[usize::from(n) % live.len()])
    }
    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }
}

type Shared = Rc<RefCell<Model>>;

/// The protocol of every connection: records its callbacks and carries out
/// the operations queued for it.
struct Conn {
    model: Shared,
    serial: usize,
    panic_on_close: bool,
}

impl Conn {
    fn new(model: &Shared, listener: Option<usize>) -> Conn {
        let mut m = model.borrow_mut();
        m.probes.push(Probe {
            listener,
            ..Probe::default()
        });
        Conn {
            model: model.clone(),
            serial: m.probes.len() - 1,
            panic_on_close: false,
        }
    }

    /// Checks the callback's place in the connection's life and marks the
    /// loop as inside a callback until the returned guard drops.
    fn enter(&self, what: &str, opening: bool, closing: bool) -> Entered {
        let mut m = self.model.borrow_mut();
        if m.in_callback {
            m.violation(format!(
                "#{}: {what} nested in another callback",
                self.serial
            ));
        }
        m.in_callback = true;
        let p = &m.probes[self.serial];
        let (opened, closes) = (p.opened, p.closes);
        if closes > 0 {
            m.violation(format!("#{}: {what} after on_close", self.serial));
        }
        if !opened && !opening && !closing {
            m.violation(format!("#{}: {what} before on_open", self.serial));
        }
        Entered(self.model.clone())
    }
}

struct Entered(Shared);
impl Drop for Entered {
    fn drop(&mut self) {
        self.0.borrow_mut().in_callback = false;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.model.borrow_mut().probes[self.serial].dropped = true;
    }
}

impl Protocol for Conn {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _e = self.enter("on_open", true, false);
        let mut m = self.model.borrow_mut();
        let p = &mut m.probes[self.serial];
        if p.opened {
            m.violation(format!("#{}: on_open twice", self.serial));
        }
        let p = &mut m.probes[self.serial];
        p.opened = true;
        p.id = Some(cx.id());
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &mut BytesMut) {
        let _e = self.enter("on_data", false, false);
        data.clear();
    }
    fn on_drained(&mut self, _cx: &mut Context<'_>) {
        let _e = self.enter("on_drained", false, false);
    }
    fn on_eof(&mut self, cx: &mut Context<'_>) {
        let _e = self.enter("on_eof", false, false);
        cx.close();
    }
    fn on_shutdown(&mut self, _cx: &mut Context<'_>) {
        let _e = self.enter("on_shutdown", false, false);
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, _timer: TimerId) {
        let _e = self.enter("on_timer", false, false);
        let ops = self
            .model
            .borrow_mut()
            .inbox
            .remove(&self.serial)
            .unwrap_or_default();
        for op in ops {
            match op {
                Op::Panic => {
                    self.model.borrow_mut().panics += 1;
                    panic!("a callback panics (on purpose)");
                }
                Op::PanicOnClose => self.panic_on_close = true,
                op => perform(cx.reactor(), &self.model, op),
            }
        }
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, _reason: &CloseReason) {
        let _e = self.enter("on_close", false, true);
        self.model.borrow_mut().probes[self.serial].closes += 1;
        if self.panic_on_close {
            self.panic_on_close = false;
            self.model.borrow_mut().panics += 1;
            panic!("on_close panics (on purpose)");
        }
    }
}

/// Carries out `op` on the reactor (from wherever the caller is).
fn perform(r: &mut Reactor, model: &Shared, op: Op) {
    let pick = |n: u8| model.borrow().pick(n);
    match op {
        Op::Write(n, len) => {
            if let Some((_, id)) = pick(n) {
                let _ = r.write(id, &vec![b'x'; usize::from(len)]);
            }
        }
        Op::Close(n) => pick(n).into_iter().for_each(|(_, id)| r.close(id)),
        Op::Abort(n) => pick(n).into_iter().for_each(|(_, id)| r.abort(id)),
        Op::ShutdownWrite(n) => pick(n).into_iter().for_each(|(_, id)| r.shutdown_write(id)),
        Op::Pause(n) => pick(n)
            .into_iter()
            .for_each(|(_, id)| r.set_reading(id, false)),
        Op::Resume(n) => pick(n)
            .into_iter()
            .for_each(|(_, id)| r.set_reading(id, true)),
        Op::SetTimer(n, ms) => {
            if let Some((_, id)) = pick(n) {
                let t = r.set_timer(id, Duration::from_millis(u64::from(ms)));
                model.borrow_mut().timers.push(t);
            }
        }
        Op::CancelTimer(n) => {
            let t = {
                let m = model.borrow();
                (!m.timers.is_empty()).then(|| m.timers[usize::from(n) % m.timers.len()])
            };
            if let Some(t) = t {
                r.cancel_timer(t);
            }
        }
        Op::Connect(n) => {
            let addr = {
                let m = model.borrow();
                (!m.listeners.is_empty())
                    .then(|| m.listeners[usize::from(n) % m.listeners.len()].1.clone())
            };
            if let Some(addr) = addr {
                let _ = r.connect(&addr, Conn::new(model, None));
            }
        }
        Op::Adopt => {
            let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            drop(theirs); // the adopted connection sees EOF and closes
            let _ = r.adopt(
                BlockingStream::Unix(mine),
                &ConnOptions::default(),
                Conn::new(model, None),
            );
        }
        Op::Listen(cap) => {
            let tag = model.borrow().listeners.len();
            let mut opts = ListenOptions::default();
            opts.max_connections = cap.map(usize::from);
            let m2 = model.clone();
            let id = r
                .listen_with(&common::any_port(), &opts, move |_| {
                    Conn::new(&m2, Some(tag))
                })
                .unwrap();
            let addr = r.listener_addr(id).unwrap();
            model.borrow_mut().listeners.push((id, addr));
        }
        Op::CloseListener(n) => {
            let id = {
                let m = model.borrow();
                (!m.listeners.is_empty()).then(|| m.listeners[usize::from(n) % m.listeners.len()].0)
            };
            if let Some(id) = id {
                r.close_listener(id);
            }
        }
        Op::ShutdownGraceful(ms) => r.shutdown_graceful(Duration::from_millis(u64::from(ms))),
        Op::Panic => {
            // Outside a callback, a panic is a posted closure's.
            let model = SendPtr(model.clone());
            r.handle()
                .post(move |_| {
                    let model = model;
                    model.0.borrow_mut().panics += 1;
                    panic!("a posted closure panics (on purpose)")
                })
                .unwrap();
        }
        // Only a connection's own callback can arm it (see `on_timer`).
        Op::PanicOnClose => {}
        Op::Bind => {
            let serial = model.borrow().dgrams.len();
            let proto = DgramProbe {
                model: model.clone(),
                serial,
            };
            let id = r.bind_datagram(&common::any_port(), proto).unwrap();
            let addr = r.local_addr(id).unwrap().as_inet().unwrap();
            model.borrow_mut().dgrams.push(Dgram {
                id,
                addr,
                closes: 0,
                close_on_next: false,
            });
        }
        Op::DgramClose(n) => {
            let d = model.borrow().dgram(n);
            if let Some((_, id)) = d {
                r.close(id);
            }
        }
        Op::DgramSend(n, m) => {
            let (from, to) = {
                let m2 = model.borrow();
                (m2.dgram(n), m2.dgram(m).map(|(i, _)| m2.dgrams[i].addr))
            };
            if let (Some((_, id)), Some(to)) = (from, to) {
                let _ = r.send_to(id, b"dgram", &Addr::from(to));
            }
        }
        Op::DgramSelfClose(n) => {
            let d = model.borrow().dgram(n);
            if let Some((i, _)) = d {
                model.borrow_mut().dgrams[i].close_on_next = true;
            }
        }
    }
}

/// The protocol of every datagram socket.
struct DgramProbe {
    model: Shared,
    serial: usize,
}

impl DgramProbe {
    fn enter(&self, what: &str) -> Entered {
        let mut m = self.model.borrow_mut();
        if m.in_callback {
            m.violation(format!(
                "dgram {}: {what} nested in another callback",
                self.serial
            ));
        }
        m.in_callback = true;
        if m.dgrams.get(self.serial).is_some_and(|d| d.closes > 0) {
            m.violation(format!("dgram {}: {what} after on_close", self.serial));
        }
        Entered(self.model.clone())
    }
}

impl DatagramProtocol for DgramProbe {
    fn on_datagram(&mut self, cx: &mut DatagramContext<'_>, _data: &[u8], _from: &Addr) {
        let _e = self.enter("on_datagram");
        let close = std::mem::take(&mut self.model.borrow_mut().dgrams[self.serial].close_on_next);
        if close {
            cx.close();
        }
    }
    fn on_close(&mut self, _cx: &mut DatagramContext<'_>, _reason: &CloseReason) {
        let _e = self.enter("on_close");
        // A statement, not the tail: the borrow must end before `_e` drops.
        self.model.borrow_mut().dgrams[self.serial].closes += 1;
    }
}

struct World {
    reactor: Reactor,
    model: Shared,
    clients: Vec<TcpStream>,
    udp: std::net::UdpSocket,
}

impl World {
    fn new() -> World {
        let model = Shared::default();
        let mut reactor = Reactor::new().unwrap();
        perform(&mut reactor, &model, Op::Listen(None));
        perform(&mut reactor, &model, Op::Listen(Some(2)));
        World {
            reactor,
            model,
            clients: Vec::new(),
            udp: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Do(From::Outside, op) => perform(&mut self.reactor, &self.model, op),
            Step::Do(From::Handle, op) => {
                let model = SendPtr(self.model.clone());
                self.reactor
                    .handle()
                    .post(move |r| {
                        let model = model;
                        perform(r, &model.0, op)
                    })
                    .unwrap();
            }
            Step::Do(From::Callback(n), op) => {
                let target = self.model.borrow().pick(n);
                if let Some((serial, id)) = target {
                    self.model
                        .borrow_mut()
                        .inbox
                        .entry(serial)
                        .or_default()
                        .push(op);
                    self.reactor.set_timer(id, Duration::ZERO);
                }
            }
            Step::ClientConnect(n) => {
                let addr = {
                    let m = self.model.borrow();
                    m.listeners[usize::from(n) % m.listeners.len()]
                        .1
                        .as_inet()
                        .unwrap()
                };
                if let Ok(c) = TcpStream::connect(addr) {
                    c.set_nonblocking(true).unwrap();
                    self.clients.push(c);
                }
            }
            Step::ClientWrite(n, len) => {
                if let Some(c) = pick_client(&mut self.clients, n) {
                    let _ = c.write(&vec![b'y'; usize::from(len) + 1]);
                    let _ = c.read(&mut [0; 4096]);
                }
            }
            Step::ClientClose(n) => {
                if !self.clients.is_empty() {
                    let n = usize::from(n) % self.clients.len();
                    self.clients.swap_remove(n);
                }
            }
            Step::ClientReset(n) => {
                if !self.clients.is_empty() {
                    let n = usize::from(n) % self.clients.len();
                    let c = self.clients.swap_remove(n);
                    reset_on_close(&c);
                }
            }
            Step::ClientDatagram(n) => {
                let to = {
                    let m = self.model.borrow();
                    m.dgram(n).map(|(i, _)| m.dgrams[i].addr)
                };
                if let Some(to) = to {
                    let _ = self.udp.send_to(b"from a client", to);
                }
            }
            Step::HandleWrite(n) => {
                if let Some((_, id)) = self.model.borrow().pick(n) {
                    self.reactor
                        .handle()
                        .write(id, &b"from a handle"[..])
                        .unwrap();
                }
            }
            Step::HandleClose(n) => {
                if let Some((_, id)) = self.model.borrow().pick(n) {
                    self.reactor.handle().close(id).unwrap();
                }
            }
            Step::Turn => self.turn(),
        }
    }

    fn turn(&mut self) {
        self.reactor
            .run_once(Some(Duration::from_millis(1)))
            .expect("run_once");
        self.check();
    }

    /// The invariants that hold between turns.
    fn check(&self) {
        let m = self.model.borrow();
        assert!(m.violations.is_empty(), "violations: {:?}", m.violations);
        let stats = self.reactor.stats();
        let live = m.probes.iter().filter(|p| !p.dropped).count();
        assert_eq!(
            stats.open, live,
            "Stats.open vs connections alive in the reactor"
        );
        for (tag, (id, _)) in m.listeners.iter().enumerate() {
            if let Some(count) = self.reactor.listener_connections(*id) {
                let mine = m
                    .probes
                    .iter()
                    .filter(|p| !p.dropped && p.listener == Some(tag))
                    .count();
                assert_eq!(count, mine, "listener {id}'s count");
            }
        }
        assert_eq!(stats.panics, m.panics, "panics counted vs raised");
        let closed = m.probes.iter().filter(|p| p.closes > 0).count();
        assert_eq!(
            stats.closed, closed as u64,
            "Stats.closed vs on_close calls"
        );
        let accepted = m.probes.iter().filter(|p| p.listener.is_some()).count();
        assert_eq!(
            stats.accepted, accepted as u64,
            "Stats.accepted vs protocols made"
        );
        for (i, p) in m.probes.iter().enumerate() {
            assert!(p.closes <= 1, "#{i}: on_close {} times", p.closes);
        }
        for (i, d) in m.dgrams.iter().enumerate() {
            assert!(d.closes <= 1, "dgram {i}: on_close {} times", d.closes);
        }
    }

    /// Settles, checks that the loop still serves, drops the reactor and
    /// checks that every opened connection was closed exactly once.
    fn finish(mut self) {
        for _ in 0..5 {
            self.turn();
        }
        // Still serving: a new listener accepts and reads.
        perform(&mut self.reactor, &self.model, Op::Listen(None));
        let (tag, addr) = {
            let m = self.model.borrow();
            (
                m.listeners.len() - 1,
                m.listeners.last().unwrap().1.as_inet().unwrap(),
            )
        };
        let mut c = TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + common::LIMIT;
        let accepted = |m: &Model| m.probes.iter().any(|p| p.listener == Some(tag) && p.opened);
        while !accepted(&self.model.borrow()) {
            assert!(Instant::now() < deadline, "the loop stopped accepting");
            self.reactor
                .run_once(Some(Duration::from_millis(5)))
                .unwrap();
        }
        c.write_all(b"z").unwrap();
        self.reactor
            .run_once(Some(Duration::from_millis(5)))
            .unwrap();
        self.check();
        let opened: Vec<usize> = {
            let m = self.model.borrow();
            (0..m.probes.len())
                .filter(|&i| m.probes[i].opened)
                .collect()
        };
        drop(self.clients);
        drop(self.reactor);
        let m = self.model.borrow();
        assert!(m.violations.is_empty(), "violations: {:?}", m.violations);
        for i in opened {
            assert_eq!(
                m.probes[i].closes, 1,
                "#{i} opened, closed {} times",
                m.probes[i].closes
            );
        }
        for (i, d) in m.dgrams.iter().enumerate() {
            assert_eq!(d.closes, 1, "dgram {i} closed {} times", d.closes);
        }
        assert!(
            m.probes.iter().all(|p| p.dropped),
            "a protocol outlived the reactor"
        );
    }
}

/// The test runs on one thread: the posted closure runs on it too.
struct SendPtr(Shared);
// SAFETY: the reactor (and so every posted closure) runs on the test thread.
unsafe impl Send for SendPtr {}

fn pick_client(clients: &mut [TcpStream], n: u8) -> Option<&mut TcpStream> {
    let len = clients.len();
    (len > 0).then(|| &mut clients[usize::from(n) % len])
}

fn reset_on_close(c: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setting SO_LINGER on a socket we own.
    unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn op() -> impl Strategy<Value = Op> {
    let n = any::<u8>;
    prop_oneof![
        4 => (n(), 0u16..2000).prop_map(|(a, b)| Op::Write(a, b)),
        2 => n().prop_map(Op::Close),
        2 => n().prop_map(Op::Abort),
        1 => n().prop_map(Op::ShutdownWrite),
        1 => n().prop_map(Op::Pause),
        1 => n().prop_map(Op::Resume),
        2 => (n(), 0u8..5).prop_map(|(a, b)| Op::SetTimer(a, b)),
        1 => n().prop_map(Op::CancelTimer),
        2 => n().prop_map(Op::Connect),
        1 => Just(Op::Adopt),
        1 => prop::option::of(0u8..3).prop_map(Op::Listen),
        1 => n().prop_map(Op::CloseListener),
        1 => (0u8..20).prop_map(Op::ShutdownGraceful),
        1 => Just(Op::Panic),
        1 => Just(Op::PanicOnClose),
        1 => Just(Op::Bind),
        1 => n().prop_map(Op::DgramClose),
        2 => (n(), n()).prop_map(|(a, b)| Op::DgramSend(a, b)),
        1 => n().prop_map(Op::DgramSelfClose),
    ]
}

fn from() -> impl Strategy<Value = From> {
    prop_oneof![
        1 => Just(From::Outside),
        1 => Just(From::Handle),
        3 => any::<u8>().prop_map(From::Callback),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let n = any::<u8>;
    prop_oneof![
        6 => (from(), op()).prop_map(|(f, o)| Step::Do(f, o)),
        3 => n().prop_map(Step::ClientConnect),
        2 => (n(), n()).prop_map(|(a, b)| Step::ClientWrite(a, b)),
        1 => n().prop_map(Step::ClientClose),
        1 => n().prop_map(Step::ClientReset),
        1 => n().prop_map(Step::HandleWrite),
        1 => n().prop_map(Step::HandleClose),
        2 => n().prop_map(Step::ClientDatagram),
        4 => Just(Step::Turn),
    ]
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn the_loop_keeps_its_invariants(steps in prop::collection::vec(step(), 1..60)) {
        let mut world = World::new();
        for step in steps {
            world.step(step);
            world.check();
        }
        world.finish();
    }
}
