//! The cost of accept + close beside many idle connections (issue 10): closing
//! must not walk the open connections. Ignored (a measurement, not a check):
//!
//! ```text
//! cargo test --release --test close_cost -- --ignored --nocapture
//! ```
//!
//! It measures the reactor thread's own CPU time (`RUSAGE_THREAD`) per
//! accept + close cycle, with no idle connection and with 8,000, interleaved
//! over two rounds, and prints the ratio (target: at most 1.3).

mod common;

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use common::{any_port, Server, LIMIT};
use sockloop::{Context, Handle, Protocol};

const CYCLES: usize = 3000;
const IDLE: usize = 8000;

/// Closes as soon as it opens.
struct CloseAtOnce;
impl Protocol for CloseAtOnce {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }
    fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
    }
}

/// Stays open, doing nothing.
struct Idle;
impl Protocol for Idle {
    fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
    }
}

/// CPU time (user + system) of the reactor's thread so far, and its open count.
fn reactor_cpu(handle: &Handle) -> (Duration, usize) {
    let (tx, rx) = mpsc::channel();
    handle
        .post(move |r| {
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage fills the struct we own.
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
            let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
            let _ = tx.send((t(usage.ru_utime) + t(usage.ru_stime), r.connection_count()));
        })
        .unwrap();
    rx.recv_timeout(LIMIT).unwrap()
}

fn cycles(addr: std::net::SocketAddr, handle: &Handle) -> Duration {
    let (before, _) = reactor_cpu(handle);
    for _ in 0..CYCLES {
        let mut c = common::connect(addr);
        let mut buf = [0u8; 1];
        assert_eq!(c.read(&mut buf).unwrap(), 0, "closed by the server");
    }
    let (after, _) = reactor_cpu(handle);
    (after - before) / CYCLES as u32
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (release)"]
fn accept_and_close_cost_beside_idle_connections() {
    let server = Server::start(|r| {
        let a = r.listen(&any_port(), |_| CloseAtOnce).unwrap();
        let b = r.listen(&any_port(), |_| Idle).unwrap();
        vec![r.listener_addr(a).unwrap(), r.listener_addr(b).unwrap()]
    });
    let (closing, idle) = (server.inet(0), server.inet(1));
    let mut with_none = Vec::new();
    let mut with_idle = Vec::new();
    for _round in 0..2 {
        with_none.push(cycles(closing, &server.handle));
        let clients: Vec<_> = (0..IDLE).map(|_| common::connect(idle)).collect();
        common::wait_until("idle connections accepted", || {
            reactor_cpu(&server.handle).1 == IDLE
        });
        with_idle.push(cycles(closing, &server.handle));
        drop(clients);
        common::wait_until("idle connections closed", || {
            reactor_cpu(&server.handle).1 == 0
        });
    }
    let none = with_none.iter().min().unwrap();
    let busy = with_idle.iter().min().unwrap();
    println!(
        "accept + close, reactor CPU per cycle: {none:?} with no idle connection, \
         {busy:?} with {IDLE} (runs {with_none:?} / {with_idle:?}); ratio {:.2}",
        busy.as_secs_f64() / none.as_secs_f64()
    );
    server.stop();
}
