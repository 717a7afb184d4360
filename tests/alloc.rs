//! Heap use of the reactor thread, counted by a global allocator that tallies
//! allocations per thread: an echo in steady state allocates nothing, and an
//! idle connection costs well under 1 KiB of user-space memory.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use common::*;
use sockloop::{Context, FrameHandler, Framed, Protocol, Reactor};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + layout.size() as i64));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE_BYTES.try_with(|c| c.set(c.get() - layout.size() as i64));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        let delta = new_size as i64 - layout.size() as i64;
        let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + delta));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The reactor thread's counters, as read by a posted probe.
static PROBE_ALLOCS: AtomicU64 = AtomicU64::new(0);
static PROBE_LIVE: AtomicI64 = AtomicI64::new(0);
static PROBE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Reads the reactor thread's counters without allocating there (the probe
/// stores into statics; the closure's box is allocated by the caller).
fn probe(server: &Server) -> (u64, i64) {
    let seq = PROBE_SEQ.load(Ordering::Acquire);
    server
        .handle
        .post(|_: &mut Reactor| {
            PROBE_ALLOCS.store(ALLOCS.with(Cell::get), Ordering::Relaxed);
            PROBE_LIVE.store(LIVE_BYTES.with(Cell::get), Ordering::Relaxed);
            PROBE_SEQ.fetch_add(1, Ordering::Release);
        })
        .unwrap();
    wait_until("the probe to run", || {
        PROBE_SEQ.load(Ordering::Acquire) > seq
    });
    (
        PROBE_ALLOCS.load(Ordering::Relaxed),
        PROBE_LIVE.load(Ordering::Relaxed),
    )
}

struct ZeroCopyEcho;
impl Protocol for ZeroCopyEcho {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_bytes(data.split().freeze());
    }
}

struct CopyEcho;
impl Protocol for CopyEcho {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write(data);
        data.clear();
    }
}

struct LineEcho;
impl FrameHandler for LineEcho {
    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        cx.write_bytes(line);
        cx.write(b"\n");
    }
}

/// Runs `rounds` exchanges of `msg` on 4 connections after a warm-up and
/// returns the reactor thread's allocations during them. Each message is
/// sent in two writes split at `split`, so the server sees partial frames.
fn steady_state_allocations(server: &Server, msg: &[u8], split: usize, rounds: usize) -> u64 {
    let mut clients: Vec<_> = (0..4).map(|_| connect(server.inet(0))).collect();
    for c in &clients {
        c.set_nodelay(true).unwrap();
    }
    let mut exchange = |n: usize| {
        for _ in 0..n {
            for c in clients.iter_mut() {
                c.write_all(&msg[..split]).unwrap();
            }
            for c in clients.iter_mut() {
                c.write_all(&msg[split..]).unwrap();
            }
            for c in clients.iter_mut() {
                assert_eq!(read_n(c, msg.len()), msg);
            }
        }
    };
    exchange(200);
    let (before, _) = probe(server);
    exchange(rounds);
    let (after, _) = probe(server);
    after - before
}

fn server_with<P: Protocol>(make: fn() -> P) -> Server {
    Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| make()).unwrap();
        vec![r.listener_addr(id).unwrap()]
    })
}

#[test]
fn echo_allocates_nothing_per_message() {
    let server = server_with(|| ZeroCopyEcho);
    assert_eq!(
        steady_state_allocations(&server, &[b'x'; 64], 64, 2000),
        0,
        "zero-copy echo"
    );
    let server = server_with(|| CopyEcho);
    assert_eq!(
        steady_state_allocations(&server, &[b'y'; 64], 64, 2000),
        0,
        "copying echo"
    );
    let server = server_with(|| Framed::new(LineEcho));
    // Lines split over two sends, so the reactor keeps partial frames.
    let msg = b"a line in two parts\n";
    assert_eq!(
        steady_state_allocations(&server, msg, 10, 2000),
        0,
        "framed echo"
    );
}

#[test]
fn an_idle_connection_costs_under_one_kib() {
    let server = server_with(|| ZeroCopyEcho);
    // Warm up the slab and the shared buffers first.
    let warm: Vec<_> = (0..50).map(|_| connect(server.inet(0))).collect();
    drop(warm);
    let (_, before) = probe(&server);
    let mut clients: Vec<_> = (0..500).map(|_| connect(server.inet(0))).collect();
    for c in clients.iter_mut() {
        assert_eq!(roundtrip(c, b"once, then idle"), b"once, then idle");
    }
    let (_, after) = probe(&server);
    let per_conn = (after - before) / 500;
    eprintln!("reactor heap per idle connection: {per_conn} bytes");
    assert!(per_conn < 1024, "{per_conn} bytes per idle connection");
}
