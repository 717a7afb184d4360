//! Reliability of the example programs under abuse, as real processes: a
//! client that never reads, storms of resets, thousands of forked requests,
//! and a graceful shutdown in the middle of twenty transfers. What each test
//! measures (resident memory, descriptors, zombies, time) is printed; run
//! with `--nocapture` to see it, e.g.
//!
//! ```text
//! cargo test --test reliability -- --nocapture --test-threads 1
//! ```
//!
//! (docs/reliability.md records the numbers.) Running out of descriptors is
//! `tests/emfile.rs`; stale Unix sockets are `tests/stream.rs` and
//! `tests/programs.rs`.
//!
//! Same rules as the other program tests: 127.0.0.1 and ephemeral ports
//! only, a test talks to a server after its `listening on` line, every wait
//! has a deadline, and a child is killed when its test ends or fails. The
//! only sleeps are polling intervals: waiting for another process's state
//! that nothing can signal (its descriptors, its children, a writer that no
//! longer moves), and sampling a server's memory and descriptors while a
//! load runs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{
    children_of, connect, grandchildren_of, hwm_kib, open_fds, read_to_eof, rss_kib, state,
    zombies_of, Program, TIMEOUT,
};
use socket2::SockRef;

/// Polls `value` every 10 ms until `done` accepts it, for at most `limit`;
/// returns the last value and how long it took. Only for state of another
/// process that nothing can notify us of (its descriptors, its children).
fn poll_until<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut value: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        let v = value();
        if done(&v) {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; last seen: {v:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops a program with SIGTERM, checks that it exits 0 and logged no
/// panic, and returns its log.
fn stop_without_panic(server: &mut Program, name: &str) -> String {
    let stderr = server.stop_with(libc::SIGTERM);
    assert!(
        !stderr.contains("panicked"),
        "{name} panicked; stderr:\n{stderr}"
    );
    stderr
}

// ----- a slow reader ---------------------------------------------------------------

/// What a client that never reads may cost the server: the high-water mark
/// (64 KiB) twice, plus allowance for allocator and page granularity.
const SLOW_READER_BOUND_KIB: u64 = 2 * 1024;
const SLOW_TOTAL: usize = 256 << 20;
const CHUNK: usize = 64 << 10;

/// Chunk `index` of the slow reader's stream: each 8-byte word holds its own
/// position in the stream, so a lost, repeated or misordered byte shows.
fn fill_chunk(index: usize, buf: &mut [u8]) {
    let first = (index * CHUNK / 8) as u64;
    for (k, word) in buf.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&(first + k as u64).to_le_bytes());
    }
}

/// A client sends 256 MiB to `select_echo` and reads nothing: once the
/// server's queue passes the high-water mark it stops reading, TCP stops
/// the client, and the server's memory stays flat. Then the client reads,
/// and all 256 MiB come back in order.
///
/// The debug build of the example is used as is: the whole test takes 4 to
/// 6 s with it (2 CPUs), the 256 MiB at 50-70 MiB/s.
#[test]
fn slow_reader_costs_the_server_about_the_high_water_mark() {
    let mut server = Program::start("select_echo", &["--port", "0"]);
    let addr = server.listening_one();
    let pid = server.pid();
    let (rss_before, hwm_before) = (rss_kib(pid), hwm_kib(pid));

    let stream = connect(&addr);
    let mut writer = stream.try_clone().expect("clone");
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = sent.clone();
    let start = Instant::now();
    let write = thread::spawn(move || -> std::io::Result<()> {
        let mut chunk = vec![0; CHUNK];
        for index in 0..SLOW_TOTAL / CHUNK {
            fill_chunk(index, &mut chunk);
            writer.write_all(&chunk)?;
            progress.store((index + 1) * CHUNK, Ordering::Relaxed);
        }
        writer.shutdown(Shutdown::Write)
    });

    // The client is stuck once nothing has moved for a second: the kernel's
    // buffers on both sides are full and the server has stopped reading.
    let mut rss_max = 0;
    let mut last = (0, Instant::now());
    let stalled_at = loop {
        rss_max = rss_max.max(rss_kib(pid));
        let now = sent.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() >= Duration::from_secs(1) {
            break now;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the writer never stalled ({now} bytes sent): is the server reading without bound?"
        );
        assert!(!write.is_finished(), "the writer ended early: {:?}", {
            write.join()
        });
        thread::sleep(Duration::from_millis(10));
    };
    let (rss_stalled, hwm_stalled) = (rss_kib(pid), hwm_kib(pid));
    let growth = rss_max.max(rss_stalled).saturating_sub(rss_before);
    let hwm_growth = hwm_stalled.saturating_sub(hwm_before.max(rss_before));
    println!(
        "slow reader: {:.1} MiB sent before the client stalled; server VmRSS {rss_before} KiB \
         before, {rss_stalled} KiB stalled (max sampled {rss_max} KiB): growth {growth} KiB; \
         VmHWM {hwm_before} -> {hwm_stalled} KiB: growth {hwm_growth} KiB",
        stalled_at as f64 / (1 << 20) as f64
    );
    assert!(
        growth < SLOW_READER_BOUND_KIB && hwm_growth < SLOW_READER_BOUND_KIB,
        "a client that does not read grew the server by {growth} KiB (VmHWM by {hwm_growth} KiB)"
    );

    // Now it reads: every byte, in order, then the server's close.
    let mut reader = stream;
    let (mut got, mut want) = (vec![0; CHUNK], vec![0; CHUNK]);
    for index in 0..SLOW_TOTAL / CHUNK {
        reader
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("echo chunk {index} of {}: {e}", SLOW_TOTAL / CHUNK));
        fill_chunk(index, &mut want);
        assert!(
            got == want,
            "echo chunk {index} differs: bytes lost, repeated or misordered"
        );
    }
    assert!(read_to_eof(&mut reader).is_empty(), "bytes after the echo");
    write.join().expect("writer").expect("write 256 MiB");
    let elapsed = start.elapsed();
    let hwm_end = hwm_kib(pid);
    println!(
        "slow reader: 256 MiB echoed in order in {elapsed:.2?} ({:.0} MiB/s); VmHWM at the \
         end {hwm_end} KiB (+{} KiB over the start)",
        256.0 / elapsed.as_secs_f64(),
        hwm_end.saturating_sub(hwm_before.max(rss_before))
    );
    assert!(
        hwm_end.saturating_sub(hwm_before.max(rss_before)) < SLOW_READER_BOUND_KIB,
        "the echo at full speed grew the server's peak memory by more than {SLOW_READER_BOUND_KIB} KiB"
    );
    stop_without_panic(&mut server, "select_echo");
}

// ----- reset storms ----------------------------------------------------------------

const STORM_CLIENTS: usize = 2000;
const STORM_THREADS: usize = 8;

/// Connects a client of the storm and leaves half a record with the server.
/// Every other one first has a whole record echoed, so the server has
/// certainly read, and is holding, the half record when the reset comes.
fn half_record_client(addr: &str, i: usize) -> TcpStream {
    let mut stream = connect(addr);
    if i.is_multiple_of(2) {
        stream
            .write_all(format!("whole {i}\nhalf a rec").as_bytes())
            .expect("send");
        let want = format!("whole {i}\n");
        let mut echo = vec![0; want.len()];
        stream
            .read_exact(&mut echo)
            .expect("the whole record's echo");
        assert_eq!(echo, want.as_bytes());
    } else {
        stream.write_all(b"half a rec").expect("send");
    }
    stream
}

/// Closes with an RST instead of a FIN (SO_LINGER 0).
fn reset(stream: TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

/// Raises this process's soft descriptor limit towards `want` (children
/// started afterwards inherit it) and returns the limit now in force.
fn raise_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}

/// Storms of resets against `line_echo`, each client leaving half a record
/// behind: first 2000 clients connected at once and reset together (2000
/// RSTs in one burst, many in one batch of events), then 2000 more that
/// connect and reset one after the other from eight threads. No panic, the
/// server keeps serving, and its descriptors return to where they were.
#[test]
fn reset_storms_leave_no_descriptor_behind() {
    // 2000 connections at once on both sides, whatever the default soft limit (often 1024).
    let limit = raise_fd_limit(2 * STORM_CLIENTS as u64 + 256);
    let burst = STORM_CLIENTS.min((limit as usize).saturating_sub(256));
    let mut server = Program::start("line_echo", &["--port", "0"]);
    let addr = server.listening_one();
    let pid = server.pid();
    let baseline = open_fds(pid);

    // The burst: all connected, then all reset at once.
    let start = Instant::now();
    let clients: Vec<TcpStream> = (0..burst).map(|i| half_record_client(&addr, i)).collect();
    let (held, _) = poll_until(
        "line_echo to accept every client of the burst",
        TIMEOUT,
        || open_fds(pid),
        |&n| n >= baseline + burst,
    );
    let connected = start.elapsed();
    for stream in clients {
        reset(stream);
    }
    let (_, burst_settled) = poll_until(
        "line_echo's descriptors to return to their baseline after the burst",
        TIMEOUT,
        || open_fds(pid),
        |&n| n == baseline,
    );
    println!(
        "reset storm: burst of {burst} clients connected in {connected:.2?} (line_echo held \
         {held} fds, {baseline} before); all reset at once: back at {baseline} fds after \
         {burst_settled:.2?}"
    );

    // The churn: connect, half a record, reset, from eight threads at once.
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let storm: Vec<_> = (0..STORM_THREADS)
        .map(|_| {
            let (addr, next) = (addr.clone(), next.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= STORM_CLIENTS {
                    break;
                }
                reset(half_record_client(&addr, i));
            })
        })
        .collect();
    // Watch the server's descriptors while the storm lasts (a measurement:
    // the storm's end is awaited by joining, below).
    let mut peak = baseline;
    while !storm.iter().all(|t| t.is_finished()) {
        peak = peak.max(open_fds(pid));
        assert!(start.elapsed() < 6 * TIMEOUT, "the storm takes too long");
        thread::sleep(Duration::from_millis(5));
    }
    for t in storm {
        t.join().expect("a storm client failed");
    }
    let storm_time = start.elapsed();

    // Still serving, whole records and all.
    let mut client = connect(&addr);
    client.write_all(b"after the storm\nQUIT\n").expect("send");
    assert_eq!(read_to_eof(&mut client), b"after the storm\nbye\n");

    let (fds, settled) = poll_until(
        "line_echo's descriptors to return to their baseline",
        TIMEOUT,
        || open_fds(pid),
        |&n| n == baseline,
    );
    println!(
        "reset storm: {STORM_CLIENTS} connect-and-reset clients in {storm_time:.2?} from \
         {STORM_THREADS} threads; line_echo fds: {baseline} before, peak {peak} during, {fds} \
         after (at baseline {settled:.2?} after the last client's QUIT)"
    );
    let stderr = stop_without_panic(&mut server, "line_echo");
    let resets = stderr.matches("reset by peer").count();
    println!(
        "reset storm: line_echo logged {resets} of {} connections closed `reset by peer`",
        burst + STORM_CLIENTS
    );
}

// ----- forking under load ----------------------------------------------------------

const FORKED_REQUESTS: usize = 5000;
const FORK_CLIENTS: usize = 4;

fn forked_request(addr: &str, i: usize) {
    let mut stream = connect(addr);
    let line = format!("request {i}\n");
    stream.write_all(line.as_bytes()).expect("send");
    // The child answers the one line and exits, which closes the connection.
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut stream)),
        line,
        "request {i}"
    );
}

/// 5000 requests to `echo_server --mode forking`, four at a time: each is
/// served by a child of its own; afterwards no child is left unreaped (no
/// zombie) and the server's descriptors are where they were.
#[test]
fn forking_under_load_leaves_no_zombie_and_no_descriptor() {
    let mut server = Program::start("echo_server", &["--port", "0", "--mode", "forking"]);
    let addr = server.listening_one();
    let pid = server.pid();
    // One request first, so that whatever the first one sets up is in the baseline.
    forked_request(&addr, 0);
    poll_until(
        "the first child to be reaped",
        TIMEOUT,
        || grandchildren_of(pid),
        Vec::is_empty,
    );
    let baseline = open_fds(pid);

    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(1));
    let load: Vec<_> = (0..FORK_CLIENTS)
        .map(|_| {
            let (addr, next) = (addr.clone(), next.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i > FORKED_REQUESTS {
                    break;
                }
                forked_request(&addr, i);
            })
        })
        .collect();
    // Sample the server's children while the load lasts (a measurement).
    let (mut most_children, mut most_zombies, mut most_fds) = (0, 0, baseline);
    while !load.iter().all(|t| t.is_finished()) {
        let children = grandchildren_of(pid);
        let zombies = children.iter().filter(|&&c| state(c) == Some('Z')).count();
        most_children = most_children.max(children.len());
        most_zombies = most_zombies.max(zombies);
        most_fds = most_fds.max(open_fds(pid));
        assert!(start.elapsed() < 6 * TIMEOUT, "the load takes too long");
        thread::sleep(Duration::from_millis(20));
    }
    for t in load {
        t.join().expect("a forked request failed");
    }
    let load_time = start.elapsed();

    // The last children exit after their answer; the fork server reaps them.
    let (_, reaped) = poll_until(
        "every child of echo_server to be reaped",
        TIMEOUT,
        || grandchildren_of(pid),
        Vec::is_empty,
    );
    let zombies: Vec<u32> = children_of(pid).into_iter().flat_map(zombies_of).collect();
    let (fds, _) = poll_until(
        "echo_server's descriptors to return to their baseline",
        TIMEOUT,
        || open_fds(pid),
        |&n| n == baseline,
    );
    println!(
        "forking: {FORKED_REQUESTS} forked requests in {load_time:.2?} ({:.0}/s, \
         {FORK_CLIENTS} clients); during the load at most {most_children} children, \
         {most_zombies} of them zombies, {most_fds} fds; after: {} zombies \
         (last reaped {reaped:.2?} after the load), fds {baseline} before, {fds} after",
        FORKED_REQUESTS as f64 / load_time.as_secs_f64(),
        zombies.len()
    );
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    stop_without_panic(&mut server, "echo_server");
}

// ----- graceful shutdown -----------------------------------------------------------

const SHUTDOWN_CLIENTS: usize = 20;
const SHUTDOWN_BYTES: usize = 1 << 20;
const GRACE_SECS: u64 = 5;

/// Client `c`'s megabyte: different for each client, so crossed streams show.
fn client_data(c: usize) -> Vec<u8> {
    (0..SHUTDOWN_BYTES)
        .map(|i| ((i + 13 * c) % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// SIGTERM reaches `select_echo` while twenty clients are each half-way
/// through a 1 MiB echo (each has sent 512 KiB and received some of its
/// echo; the rest is sent after the signal): every client gets its whole
/// echo, the server exits 0, and sooner than its grace period.
#[test]
fn graceful_shutdown_of_select_echo_finishes_every_echo() {
    let grace = GRACE_SECS.to_string();
    let mut server = Program::start("select_echo", &["--port", "0", "--grace", &grace]);
    let addr = server.listening_one();

    let (some_tx, some_rx) = mpsc::channel();
    let mut go = Vec::new();
    let clients: Vec<_> = (0..SHUTDOWN_CLIENTS)
        .map(|c| {
            let (go_tx, go_rx) = mpsc::channel::<()>();
            go.push(go_tx);
            let (addr, some_tx) = (addr.clone(), some_tx.clone());
            thread::spawn(move || {
                let data = Arc::new(client_data(c));
                let mut stream = connect(&addr);
                let mut writer = stream.try_clone().expect("clone");
                let sent = data.clone();
                let write = thread::spawn(move || -> std::io::Result<()> {
                    let half = SHUTDOWN_BYTES / 2;
                    writer.write_all(&sent[..half])?;
                    go_rx
                        .recv_timeout(TIMEOUT)
                        .map_err(|e| std::io::Error::new(ErrorKind::TimedOut, e))?;
                    writer.write_all(&sent[half..])?;
                    writer.shutdown(Shutdown::Write)
                });
                let mut echo = Vec::with_capacity(SHUTDOWN_BYTES);
                let mut buf = vec![0; 64 << 10];
                let mut told = false;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => echo.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("client {c}: read after {} bytes: {e}", echo.len()),
                    }
                    if !told {
                        told = true;
                        let _ = some_tx.send(c);
                    }
                }
                write
                    .join()
                    .expect("writer")
                    .unwrap_or_else(|e| panic!("client {c}: write: {e}"));
                assert_eq!(echo.len(), SHUTDOWN_BYTES, "client {c}: echo length");
                assert!(echo == *data, "client {c}: the echo differs");
            })
        })
        .collect();
    drop(some_tx);
    for _ in 0..SHUTDOWN_CLIENTS {
        some_rx
            .recv_timeout(TIMEOUT)
            .expect("every client receives some of its echo");
    }

    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    for go in go {
        let _ = go.send(());
    }
    let status = server.wait();
    let took = signalled.elapsed();
    for (c, t) in clients.into_iter().enumerate() {
        t.join()
            .unwrap_or_else(|_| panic!("client {c} did not get its whole echo"));
    }
    let stderr = server.stderr();
    println!(
        "graceful shutdown: {SHUTDOWN_CLIENTS} clients mid 1 MiB echo got all of it; \
         select_echo ended ({status}) {took:.2?} after SIGTERM (grace {GRACE_SECS} s)"
    );
    assert_eq!(status.code(), Some(0), "{status}; stderr:\n{stderr}");
    assert!(
        took < Duration::from_secs(GRACE_SECS),
        "the shutdown took {took:.2?}, not less than the grace period; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("after the grace period") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
