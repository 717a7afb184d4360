//! Process-pool workers replaced while other threads hold the allocator,
//! `log` and stdout (issue 11, item 3): a replacement forked directly from
//! such a process inherits whichever of their locks was held at the fork
//! and hangs on it. Workers come from the pool's fork server, forked by
//! `ProcessPool::start` before these threads existed.

mod common;

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use common::process::{children_of, new_children, serial, socket_inodes};
use common::*;
use sockloop::{Context, FrameHandler, Framed, ProcessPool};

/// Each line goes to the pool; the answer (or the error) comes back.
struct ToPool(ProcessPool);

impl FrameHandler for ToPool {
    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        self.0.submit(cx, line, |cx, result| match result {
            Ok(mut reply) => {
                reply.push(b'\n');
                cx.write_bytes(reply);
            }
            Err(_) => cx.write(b"error\n"),
        });
    }
}

/// What a worker does: `die` ends the worker; anything else is allocated,
/// logged, printed and answered in upper case.
fn work(request: &[u8]) -> Vec<u8> {
    if request == b"die" {
        // SAFETY: ends this worker process on purpose, at once.
        unsafe { libc::_exit(3) };
    }
    let answer = request.to_ascii_uppercase();
    log::info!(
        "worker {} answers {} bytes",
        std::process::id(),
        answer.len()
    );
    println!("worker {} answering", std::process::id());
    answer
}

/// These tests count this process's children: one at a time.

#[test]
fn two_hundred_replacement_workers_while_threads_hammer_the_allocator_log_and_stdout() {
    let _serial = serial();
    let _ = env_logger::builder().is_test(true).try_init();
    let server = Server::start(|r| {
        let pool = ProcessPool::start(r, 2, work).unwrap();
        let id = r
            .listen(&any_port(), move |_| Framed::new(ToPool(pool.clone())))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..4)
        .map(|n| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let v: Vec<u8> = vec![n; 1 + (rounds as usize % 4096)];
                    log::info!("hammer {n} round {rounds} {}", v.len());
                    println!("hammer {n} round {rounds}");
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let stream = TcpStream::connect(server.inet(0)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut client = BufReader::new(stream);
    let started = Instant::now();
    for i in 0..200 {
        // A worker dies; its replacement is forked now, amid the hammering.
        assert_eq!(ask(&mut client, "die"), "error", "round {i}");
        assert_eq!(
            ask(&mut client, &format!("hello {i}")),
            format!("HELLO {i}")
        );
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let rounds: u64 = hammers.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!(
        "200 workers replaced and answering in {elapsed:?} while 4 threads made {rounds} rounds"
    );
    server.stop();
}

/// With its fork server killed, a pool whose workers then die can run
/// nothing more: a job must be answered with an error at once, not wait
/// forever.
#[test]
fn a_pool_that_lost_its_fork_server_and_workers_fails_every_job() {
    let _serial = serial();
    let before = children_of(std::process::id());
    let server = Server::start(|r| {
        let pool = ProcessPool::start(r, 1, work).unwrap();
        let id = r
            .listen(&any_port(), move |_| Framed::new(ToPool(pool.clone())))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut client =
        BufReader::new(TcpStream::connect(server.addrs[0].as_inet().unwrap()).unwrap());
    client
        .get_ref()
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(ask(&mut client, "x"), "X");
    let fork_server = new_children(&before);
    assert_eq!(fork_server.len(), 1, "one fork server: {fork_server:?}");
    let workers = children_of(fork_server[0]);
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    // SAFETY: killing the pool's own fork server, then its worker.
    unsafe {
        libc::kill(fork_server[0] as i32, libc::SIGKILL);
        libc::kill(workers[0] as i32, libc::SIGKILL);
    }
    for _ in 0..3 {
        assert_eq!(ask(&mut client, "y"), "error");
    }
    drop(server);
}

/// A fork server closes every descriptor the crate owns in the process,
/// connections of other reactors included: a copy left open in it keeps a
/// connection's socket alive after its reactor closed it (the fork server
/// only closed its own reactor's descriptors and the process's listening
/// sockets).
#[test]
fn a_pool_started_beside_another_reactor_holds_none_of_its_connections() {
    let _serial = serial();
    let me = std::process::id();
    let mut serving = sockloop::Reactor::new().unwrap();
    let id = serving.listen(&any_port(), |_| Quiet).unwrap();
    let addr = serving.listener_addr(id).unwrap();
    let _client = TcpStream::connect(addr.as_inet().unwrap()).unwrap();
    let before = socket_inodes(me);
    let deadline = Instant::now() + LIMIT;
    while serving.stats().open == 0 {
        assert!(Instant::now() < deadline, "never accepted");
        serving.run_once(Some(LIMIT)).unwrap();
    }
    let accepted: Vec<String> = socket_inodes(me).difference(&before).cloned().collect();
    assert_eq!(accepted.len(), 1, "one accepted socket: {accepted:?}");
    let children = children_of(me);
    let mut other = sockloop::Reactor::new().unwrap();
    let pool = ProcessPool::start(&mut other, 1, work).unwrap();
    let fork_server = new_children(&children);
    assert_eq!(fork_server.len(), 1, "one fork server: {fork_server:?}");
    let held = socket_inodes(fork_server[0]);
    assert!(
        !held.contains(&accepted[0]),
        "the fork server holds the other reactor's connection {}",
        accepted[0]
    );
    drop((pool, other, serving));
}

/// Takes what comes and answers nothing.
struct Quiet;

impl sockloop::Protocol for Quiet {
    fn on_data(&mut self, _: &mut Context<'_>, data: &mut bytes::BytesMut) {
        data.clear();
    }
}
