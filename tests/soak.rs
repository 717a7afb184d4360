//! The soak run: ten minutes of mixed load on three example servers at once,
//! with each server's resident memory and open descriptors sampled every
//! second. Ignored by a plain `cargo test`; run it with
//!
//! ```text
//! SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! (`SOAK_SECS` defaults to 600; a shorter run, e.g. `SOAK_SECS=60`, is
//! summarised in thirds instead of minutes.) The load is moderate, a few
//! hundred requests a second in all, so that the run can go on beside other
//! work:
//!
//! - **echo**: 3 clients on `select_echo`, each a steady connection sending
//!   about 50 messages/s of 1 B to 2 KiB (one in 50 is 64 KiB) and checking
//!   every echo byte for byte;
//! - **chat**: 6 members of `chat_server`, each saying a numbered line 10
//!   times a second and checking that every other member's lines reach it
//!   complete and in order (6 × 10 lines/s in, 300 relayed; about 520
//!   relayed with the churn's joins, lines and leaves);
//! - **offload**: 2 clients of `offload_server --pool processes --workers 2
//!   --delay 0.005`, each about 40 lines/s answered by the worker processes,
//!   and a `ping` answered on the loop every fifth request;
//! - **churn**: 2 threads opening and closing about 25 connections/s each,
//!   in turn: an echo then a close, half a message then a reset (SO_LINGER 0),
//!   a chat line then a close (a join and a leave for every member), a
//!   `ping` to the offload server then a close.
//!
//! Every second the sampler reads `VmRSS` and the number of entries of
//! `/proc/PID/fd` of each server (and the sum over the offload server's
//! worker processes), and prints a summary per minute. The run fails if any
//! request failed, if a server's peak RSS in the last minute exceeds that of
//! the first minute by more than [`RSS_GROWTH_KIB`], if its peak descriptor
//! count grew by more than [`FD_GROWTH`] (the churn's connections in
//! flight), if its descriptors do not return to their count before the load
//! once the load stops, or if a server does not exit 0 on SIGTERM.

mod common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::process::{children_of, open_fds, rss_kib, try_connect, Program, TIMEOUT};
use socket2::SockRef;

/// Most a server's peak RSS may grow from the first minute to the last.
const RSS_GROWTH_KIB: u64 = 1024;
/// Most a server's peak descriptor count may grow from the first minute to
/// the last: the connections the churn threads may hold at a sampling instant
/// (each thread holds one, and the server may not yet have closed the one
/// before it).
const FD_GROWTH: usize = 2 * CHURN_THREADS;

const ECHO_CLIENTS: usize = 3;
const ECHO_PER_SEC: u32 = 50;
const CHAT_MEMBERS: usize = 6;
const CHAT_PER_SEC: u32 = 10;
const OFFLOAD_CLIENTS: usize = 2;
const OFFLOAD_PER_SEC: u32 = 40;
const CHURN_THREADS: usize = 2;
const CHURN_PER_SEC: u32 = 25;

// ----- bookkeeping shared by the load threads ----------------------------------------

#[derive(Default)]
struct Tally {
    echo: AtomicU64,
    chat_sent: AtomicU64,
    chat_received: AtomicU64,
    offload: AtomicU64,
    churn: AtomicU64,
    errors: AtomicU64,
    /// The first few errors, to show what went wrong.
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 20 {
            eprintln!("soak: error: {what}");
            first.push(what);
        }
    }

    fn counts(&self) -> [u64; 6] {
        [
            &self.echo,
            &self.chat_sent,
            &self.chat_received,
            &self.offload,
            &self.churn,
            &self.errors,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// Everything a load thread needs.
#[derive(Clone)]
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    echo: String,
    chat: String,
    offload: String,
}

/// Paces a loop at `per_sec` iterations a second (a rate, not a
/// synchronisation: nothing waits for anything by sleeping).
struct Pace {
    start: Instant,
    interval: Duration,
    n: u32,
}

impl Pace {
    fn new(per_sec: u32) -> Pace {
        Pace {
            start: Instant::now(),
            interval: Duration::from_secs(1) / per_sec,
            n: 0,
        }
    }

    fn tick(&mut self) {
        self.n += 1;
        let due = self.start + self.interval * self.n;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
}

/// xorshift64: message sizes and contents without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn message(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (seed as usize).wrapping_add(j * 7) as u8 ^ (j >> 8) as u8)
        .collect()
}

// ----- the load ----------------------------------------------------------------------

fn echo_client(load: Load, k: usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1));
    let mut pace = Pace::new(ECHO_PER_SEC);
    let mut stream: Option<TcpStream> = None;
    while !load.stop.load(Ordering::Relaxed) {
        pace.tick();
        let r = rng.next();
        let len = if r.is_multiple_of(50) {
            64 << 10
        } else {
            1 + (r >> 8) as usize % 2048
        };
        let msg = message(r, len);
        let result = (|| -> io::Result<()> {
            if stream.is_none() {
                stream = Some(try_connect(&load.echo)?);
            }
            let s = stream.as_mut().expect("connected");
            s.write_all(&msg)?;
            let mut echo = vec![0; len];
            s.read_exact(&mut echo)?;
            if echo != msg {
                return Err(io::Error::other(format!("echo of {len} bytes differs")));
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                load.tally.echo.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                load.tally.error(format!("echo client {k}: {e}"));
                stream = None; // a fresh connection for the next message
            }
        }
    }
}

/// A chat member: says `m{k} {seq}` lines while a reader thread checks that
/// every other member's lines arrive complete and in order.
fn chat_member(load: Load, k: usize) {
    let stream = match try_connect(&load.chat) {
        Ok(s) => s,
        Err(e) => return load.tally.error(format!("chat member {k}: connect: {e}")),
    };
    // Reads block for at most TIMEOUT; members talk 10 times a second.
    let reader = stream.try_clone().expect("clone");
    let (stop, tally) = (load.stop.clone(), load.tally.clone());
    let read = thread::spawn(move || {
        let mut last: HashMap<String, u64> = HashMap::new();
        for line in BufReader::new(reader).lines() {
            let line = match line {
                Ok(line) => line,
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(e) => return tally.error(format!("chat member {k}: read: {e}")),
            };
            tally.chat_received.fetch_add(1, Ordering::Relaxed);
            if line.starts_with("* ") {
                continue; // someone joined or left
            }
            let Some((_, said)) = line.split_once(": ") else {
                tally.error(format!("chat member {k}: odd line {line:?}"));
                continue;
            };
            // Member lines `m{j} {seq}`; the churn's lines `c ...` are not counted.
            let Some((who, seq)) = said.split_once(' ').filter(|(w, _)| w.starts_with('m')) else {
                continue;
            };
            let Ok(seq) = seq.parse::<u64>() else {
                tally.error(format!("chat member {k}: odd line {line:?}"));
                continue;
            };
            if let Some(prev) = last.insert(who.to_string(), seq) {
                if seq != prev + 1 {
                    tally.error(format!(
                        "chat member {k}: {who} said {seq} after {prev} (lost or reordered)"
                    ));
                }
            }
        }
        if !stop.load(Ordering::Relaxed) {
            tally.error(format!("chat member {k}: the server closed the connection"));
        }
    });
    let mut writer = stream;
    let mut pace = Pace::new(CHAT_PER_SEC);
    let mut seq = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        pace.tick();
        if let Err(e) = writer.write_all(format!("m{k} {seq}\n").as_bytes()) {
            load.tally.error(format!("chat member {k}: send: {e}"));
            break;
        }
        load.tally.chat_sent.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    // Ends the reader: it sees the end of the stream (or an error) at once.
    let _ = writer.shutdown(Shutdown::Both);
    read.join().expect("chat reader");
}

fn offload_client(load: Load, k: usize) {
    let mut pace = Pace::new(OFFLOAD_PER_SEC);
    let mut client: Option<BufReader<TcpStream>> = None;
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        pace.tick();
        n += 1;
        let (ask, want) = if n.is_multiple_of(5) {
            ("ping".to_string(), "pong".to_string())
        } else {
            let line = format!("job {k}-{n}");
            let want = format!("Echo=>{line} at ");
            (line, want)
        };
        let result = (|| -> io::Result<()> {
            if client.is_none() {
                client = Some(BufReader::new(try_connect(&load.offload)?));
            }
            let c = client.as_mut().expect("connected");
            c.get_mut().write_all(format!("{ask}\n").as_bytes())?;
            let mut reply = String::new();
            c.read_line(&mut reply)?;
            if !reply.starts_with(&want) || !reply.ends_with('\n') {
                return Err(io::Error::other(format!("{ask:?} answered {reply:?}")));
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                load.tally.offload.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                load.tally.error(format!("offload client {k}: {e}"));
                client = None;
            }
        }
    }
}

/// Connections that come and go, four kinds in turn.
fn churn(load: Load, k: usize) {
    let mut pace = Pace::new(CHURN_PER_SEC);
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        pace.tick();
        n += 1;
        let kind = n % 4;
        let result = (|| -> io::Result<()> {
            match kind {
                0 => {
                    let mut s = try_connect(&load.echo)?;
                    s.write_all(b"hello and goodbye")?;
                    let mut echo = [0; 17];
                    s.read_exact(&mut echo)?;
                    if &echo != b"hello and goodbye" {
                        return Err(io::Error::other("the echo differs"));
                    }
                    s.shutdown(Shutdown::Write)?;
                    // The server closes after our FIN: nothing more comes.
                    if s.read(&mut echo)? != 0 {
                        return Err(io::Error::other("bytes after the echo"));
                    }
                }
                1 => {
                    let mut s = try_connect(&load.echo)?;
                    s.write_all(b"half a mess")?;
                    SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                    drop(s); // RST
                }
                2 => {
                    let mut s = try_connect(&load.chat)?;
                    s.write_all(format!("c {k}-{n}\n").as_bytes())?;
                }
                _ => {
                    let mut s = BufReader::new(try_connect(&load.offload)?);
                    s.get_mut().write_all(b"ping\n")?;
                    let mut reply = String::new();
                    s.read_line(&mut reply)?;
                    if reply != "pong\n" {
                        return Err(io::Error::other(format!("ping answered {reply:?}")));
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                load.tally.churn.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => load.tally.error(format!("churn {k} (kind {kind}): {e}")),
        }
    }
}

// ----- sampling ----------------------------------------------------------------------

/// What is sampled: a server's own process, or the sum over its children.
struct Watch {
    name: &'static str,
    pid: u32,
    children: bool,
}

impl Watch {
    /// (RSS in KiB, open descriptors) now.
    fn sample(&self) -> (u64, usize) {
        if !self.children {
            return (rss_kib(self.pid), open_fds(self.pid));
        }
        children_of(self.pid)
            .into_iter()
            .fold((0, 0), |(rss, fds), pid| {
                // A child gone between the listing and the reading adds nothing.
                let r = common::process::status_kib(pid, "VmRSS").unwrap_or(0);
                let f = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                (rss + r, fds + f)
            })
    }
}

/// Minimum and maximum of RSS and descriptors over a window.
#[derive(Clone, Copy)]
struct Range {
    rss: (u64, u64),
    fds: (usize, usize),
}

impl Range {
    fn of(samples: &[(u64, usize)]) -> Range {
        Range {
            rss: (
                samples.iter().map(|s| s.0).min().unwrap_or(0),
                samples.iter().map(|s| s.0).max().unwrap_or(0),
            ),
            fds: (
                samples.iter().map(|s| s.1).min().unwrap_or(0),
                samples.iter().map(|s| s.1).max().unwrap_or(0),
            ),
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.2}", kib as f64 / 1024.0)
}

/// One request for each of the offload server's two workers: both are sent
/// before either answer is read, so the second goes to the idle worker.
fn warm_up_workers(addr: &str) {
    let mut clients: Vec<BufReader<TcpStream>> = (0..2)
        .map(|_| BufReader::new(try_connect(addr).expect("connect to offload_server")))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.get_mut()
            .write_all(format!("warm-up {i}\n").as_bytes())
            .expect("send");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut reply = String::new();
        c.read_line(&mut reply).expect("the warm-up answer");
        assert!(
            reply.starts_with(&format!("Echo=>warm-up {i} at ")),
            "{reply:?}"
        );
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn a load thread")
}

#[test]
#[ignore = "ten minutes; run with SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture"]
fn soak_mixed_load_keeps_memory_and_descriptors_flat() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .map(|s| s.parse().expect("SOAK_SECS: a number of seconds"))
        .unwrap_or(600);
    assert!(secs >= 3, "SOAK_SECS: at least 3 seconds");
    let window = if secs >= 180 { 60 } else { secs / 3 };
    let unit = if window == 60 { "minute" } else { "window" };

    let mut echo = Program::start("select_echo", &["--port", "0"]);
    let mut chat = Program::start("chat_server", &["--port", "0"]);
    let mut offload = Program::start(
        "offload_server",
        &[
            "--port",
            "0",
            "--pool",
            "processes",
            "--workers",
            "2",
            "--delay",
            "0.005",
        ],
    );
    let load = Load {
        stop: Arc::default(),
        tally: Arc::default(),
        echo: echo.listening_one(),
        chat: chat.listening_one(),
        offload: offload.listening_one(),
    };
    let watches = [
        Watch {
            name: "select_echo",
            pid: echo.pid(),
            children: false,
        },
        Watch {
            name: "chat_server",
            pid: chat.pid(),
            children: false,
        },
        Watch {
            name: "offload_server",
            pid: offload.pid(),
            children: false,
        },
        Watch {
            name: "offload workers",
            pid: offload.pid(),
            children: true,
        },
    ];
    let mut baseline: Vec<(u64, usize)> = watches.iter().map(Watch::sample).collect();
    // A worker process closes the descriptors it inherited just after the
    // fork, so its count is taken once every worker has answered a request.
    warm_up_workers(&load.offload);
    for (w, base) in watches.iter().zip(&mut baseline) {
        if w.children {
            *base = w.sample();
        }
    }
    for (w, (rss, fds)) in watches.iter().zip(&baseline) {
        println!(
            "soak: {} before the load: RSS {} MiB, {fds} fds",
            w.name,
            mib(*rss)
        );
    }
    println!(
        "soak: {secs} s of load: {ECHO_CLIENTS} echo clients x {ECHO_PER_SEC}/s, \
         {CHAT_MEMBERS} chat members x {CHAT_PER_SEC} lines/s, {OFFLOAD_CLIENTS} offload \
         clients x {OFFLOAD_PER_SEC}/s, {CHURN_THREADS} churn threads x {CHURN_PER_SEC} \
         connections/s; a summary every {window} s"
    );

    let mut threads = Vec::new();
    for k in 0..ECHO_CLIENTS {
        let load = load.clone();
        threads.push(spawn("echo", move || echo_client(load, k)));
    }
    for k in 0..CHAT_MEMBERS {
        let load = load.clone();
        threads.push(spawn("chat", move || chat_member(load, k)));
    }
    for k in 0..OFFLOAD_CLIENTS {
        let load = load.clone();
        threads.push(spawn("offload", move || offload_client(load, k)));
    }
    for k in 0..CHURN_THREADS {
        let load = load.clone();
        threads.push(spawn("churn", move || churn(load, k)));
    }

    // Sample every second, on a fixed schedule; summarise every window.
    let start = Instant::now();
    let mut windows: Vec<Vec<Range>> = Vec::new();
    let mut samples: Vec<Vec<(u64, usize)>> = vec![Vec::new(); watches.len()];
    let mut counted = load.tally.counts();
    for second in 1..=secs {
        let due = start + Duration::from_secs(second);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        for (w, s) in watches.iter().zip(&mut samples) {
            s.push(w.sample());
        }
        if second.is_multiple_of(window) || second == secs {
            let ranges: Vec<Range> = samples.iter().map(|s| Range::of(s)).collect();
            let counts = load.tally.counts();
            let d: Vec<u64> = counts.iter().zip(&counted).map(|(a, b)| a - b).collect();
            counted = counts;
            let mut line = format!("soak: {unit} {:>2} |", windows.len() + 1);
            for (w, r) in watches.iter().zip(&ranges) {
                line += &format!(
                    " {} RSS {}-{} MiB fds {}-{} |",
                    w.name,
                    mib(r.rss.0),
                    mib(r.rss.1),
                    r.fds.0,
                    r.fds.1
                );
            }
            line += &format!(
                " echo {} chat {} sent {} received, offload {} churn {} errors {}",
                d[0], d[1], d[2], d[3], d[4], d[5]
            );
            println!("{line}");
            windows.push(ranges);
            samples.iter_mut().for_each(Vec::clear);
        }
    }

    // Stop the load; every thread ends within one request.
    load.stop.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    for t in threads {
        t.join().expect("a load thread panicked");
    }
    println!("soak: load threads stopped in {:.2?}", stopping.elapsed());
    let tally = &load.tally;
    let [echoes, chat_sent, chat_received, offloads, churns, errors] = tally.counts();
    println!(
        "soak: done after {:.0?}: {echoes} echoes, {chat_sent} chat lines sent and \
         {chat_received} received, {offloads} offload requests, {churns} churn connections, \
         {errors} errors",
        start.elapsed()
    );

    // Once the load is gone, every server is back to its descriptors before it.
    let mut after = Vec::new();
    for (w, &(_, fds)) in watches.iter().zip(&baseline) {
        let deadline = Instant::now() + TIMEOUT;
        let settled = loop {
            let now = w.sample();
            if now.1 == fds || Instant::now() >= deadline {
                break now;
            }
            thread::sleep(Duration::from_millis(10));
        };
        after.push(settled);
    }

    let (first, last) = (&windows[0], &windows[windows.len() - 1]);
    let mut failures = Vec::new();
    for (i, w) in watches.iter().enumerate() {
        let rss_growth = last[i].rss.1 as i64 - first[i].rss.1 as i64;
        let fd_growth = last[i].fds.1 as i64 - first[i].fds.1 as i64;
        println!(
            "soak: {}: peak RSS first {unit} {} MiB, last {unit} {} MiB ({rss_growth:+} KiB); \
             peak fds {} -> {} ({fd_growth:+}); after the load RSS {} MiB, fds {} (before \
             the load {})",
            w.name,
            mib(first[i].rss.1),
            mib(last[i].rss.1),
            first[i].fds.1,
            last[i].fds.1,
            mib(after[i].0),
            after[i].1,
            baseline[i].1
        );
        if rss_growth > RSS_GROWTH_KIB as i64 {
            failures.push(format!(
                "{}: peak RSS grew by {rss_growth} KiB (bound {RSS_GROWTH_KIB} KiB)",
                w.name
            ));
        }
        if fd_growth > FD_GROWTH as i64 {
            failures.push(format!(
                "{}: peak fds grew by {fd_growth} (bound {FD_GROWTH})",
                w.name
            ));
        }
        if after[i].1 != baseline[i].1 {
            failures.push(format!(
                "{}: {} fds after the load, {} before",
                w.name, after[i].1, baseline[i].1
            ));
        }
    }
    if errors > 0 {
        failures.push(format!(
            "{errors} requests failed; the first: {:#?}",
            tally.first_errors.lock().unwrap()
        ));
    }
    for (name, server) in [
        ("select_echo", &mut echo),
        ("chat_server", &mut chat),
        ("offload_server", &mut offload),
    ] {
        let signalled = Instant::now();
        let stderr = server.stop_with(libc::SIGTERM);
        println!(
            "soak: {name} exited 0 {:.2?} after SIGTERM",
            signalled.elapsed()
        );
        if stderr.contains("panicked") {
            failures.push(format!("{name} panicked"));
        }
    }
    assert!(failures.is_empty(), "soak failed:\n{}", failures.join("\n"));
}
