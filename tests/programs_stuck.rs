//! socketserver programs with clients that get stuck (issue 11): idle
//! clients at shutdown in every mode, a second signal, SIGHUP, the request
//! timeout, a datagram client that never reads, and caps that keep waiting
//! clients in the kernel's backlog (issue 15, item 1). Each test prints what
//! it measured; run with `--nocapture --test-threads 1` to see the figures.
//!
//! As in the other program tests: 127.0.0.1 and ephemeral ports, Unix
//! sockets in a temporary directory, every wait has a deadline. The only
//! sleeps are sampling intervals of another process's state (its
//! descriptors, its CPU time) that nothing can signal.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{
    connect, cpu_ticks, grandchildren_of, group_members, open_fds, start_time, text, Program,
    TempDir, TIMEOUT,
};

/// Samples `value` every 10 ms until `done` accepts it, for at most `limit`.
fn poll_until<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut value: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let v = value();
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; last seen: {v:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Every process of the program's group but the program: its fork server
/// and whatever that forked. With start times, so a reused pid is not
/// mistaken for one of them.
fn helpers(server: &Program) -> Vec<(u32, u64)> {
    group_members(server.pid())
        .into_iter()
        .filter(|&pid| pid != server.pid())
        .filter_map(|pid| Some((pid, start_time(pid)?)))
        .collect()
}

/// Sends `signals` (one after the other) and returns how long the program
/// took to exit, checking exit code 0 and that no process it started is
/// left, not even a zombie.
fn stop_timed(server: &mut Program, signals: &[libc::c_int], what: &str) -> Duration {
    let before = helpers(server);
    let started = Instant::now();
    for &signal in signals {
        server.signal(signal);
    }
    let status = server.wait();
    let took = started.elapsed();
    let stderr = server.stderr();
    assert_eq!(
        status.code(),
        Some(0),
        "{what}: {status}; stderr:\n{stderr}"
    );
    let left: Vec<_> = before
        .iter()
        .filter(|&&(pid, started)| start_time(pid) == Some(started))
        .collect();
    // A child killed at the end is reaped by the fork server as it goes:
    // polled, since nothing can tell us.
    if !left.is_empty() {
        poll_until(
            &format!("{what}: the processes it started to be gone"),
            TIMEOUT,
            || {
                before
                    .iter()
                    .filter(|&&(pid, started)| start_time(pid) == Some(started))
                    .count()
            },
            |&n| n == 0,
        );
    }
    took
}

/// `n` TCP clients that connect and never send.
fn idle_clients(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| connect(addr)).collect()
}

/// How many requests of each mode an idle client blocks, and how the
/// server shows it has them (forking: children; others: descriptors).
fn wait_for_stuck(server: &Program, mode: &str, stuck: usize, base_fds: usize) {
    let pid = server.pid();
    if mode == "forking" {
        poll_until(
            "the children to be serving",
            TIMEOUT,
            || grandchildren_of(pid).len(),
            |&n| n >= stuck,
        );
    } else {
        // A running stream request holds its socket and a clone of it.
        poll_until(
            "the requests to be running",
            TIMEOUT,
            || open_fds(pid),
            |&n| n >= base_fds + stuck,
        );
    }
}

/// Issue 11, item 4: the first SIGTERM stops accepting, gives running
/// requests `--grace`, then unblocks them; the program exits 0 with no
/// child left. Before, idle clients kept it running until SIGKILL.
#[test]
fn a_first_signal_ends_every_mode_within_the_grace_with_stuck_clients() {
    let grace = 1.0;
    let cases: [(&str, &[&str], usize, usize); 4] = [
        ("sync", &[], 1, 1),
        ("pool", &["--workers", "4"], 8, 8),
        ("threading", &[], 100, 100),
        ("forking", &[], 20, 20),
    ];
    for (mode, extra, clients, stuck) in cases {
        let mut args = vec!["--port", "0", "--mode", mode, "--grace", "1"];
        args.extend_from_slice(extra);
        let mut server = Program::start_in_group("echo_server", &args);
        let addr = server.listening_one();
        let base_fds = open_fds(server.pid());
        let _clients = idle_clients(&addr, clients);
        wait_for_stuck(&server, mode, stuck, base_fds);
        let took = stop_timed(&mut server, &[libc::SIGTERM], mode);
        println!(
            "{mode}: {clients} idle clients; exit 0 {took:.2?} after SIGTERM (--grace {grace})"
        );
        assert!(
            took >= Duration::from_secs_f64(grace) && took < Duration::from_secs_f64(grace + 4.0),
            "{mode}: SIGTERM took {took:?} with --grace {grace}"
        );
    }
}

/// A second signal unblocks at once, whatever the grace.
#[test]
fn a_second_signal_ends_at_once() {
    for mode in ["sync", "threading", "forking"] {
        let mut server = Program::start_in_group(
            "echo_server",
            &["--port", "0", "--mode", mode, "--grace", "60"],
        );
        let addr = server.listening_one();
        let base_fds = open_fds(server.pid());
        let _clients = idle_clients(&addr, 2);
        wait_for_stuck(&server, mode, 1, base_fds);
        // Two kinds: two of the same kind sent at once may arrive as one.
        let took = stop_timed(&mut server, &[libc::SIGTERM, libc::SIGINT], mode);
        println!("{mode}: SIGTERM then SIGINT with --grace 60: exit 0 after {took:.2?}");
        assert!(
            took < Duration::from_secs(3),
            "{mode}: two signals took {took:?}"
        );
    }
}

/// SIGHUP is a stop signal like SIGTERM, and the socket file goes away
/// (before, SIGHUP killed the program and left the file behind).
#[test]
fn sighup_stops_the_programs_and_removes_the_socket_file() {
    let dir = TempDir::new("sighup");
    let sock = dir.join("echo.sock");
    let mut server = Program::start(
        "echo_server",
        &["--family", "unix", "--unix", text(&sock), "--grace", "1"],
    );
    server.listening_one();
    server.stop_with(libc::SIGHUP);
    assert!(!sock.exists(), "the socket file was left behind");
    // A reactor program too.
    let mut server = Program::start("line_echo", &["--port", "0"]);
    server.listening_one();
    server.stop_with(libc::SIGHUP);
}

/// Issue 11, item 5: with `--timeout`, an idle client holds the only
/// worker of a sync server for that long, not forever; its request ends
/// with a timeout error, logged.
#[test]
fn an_idle_client_holds_a_sync_server_only_for_the_request_timeout() {
    let mut server = Program::start(
        "echo_server",
        &["--port", "0", "--mode", "sync", "--timeout", "0.5"],
    );
    let addr = server.listening_one();
    let _idle = connect(&addr);
    let started = Instant::now();
    let mut client = connect(&addr);
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.write_all(b"next\n").unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    let waited = started.elapsed();
    assert_eq!(reply, b"next\n");
    let stderr = server.stop_with(libc::SIGTERM);
    println!("sync, --timeout 0.5: the next client was answered after {waited:.2?}");
    assert!(stderr.contains("timed out"), "stderr:\n{stderr}");
}

/// Issue 11, item 6: a Unix-datagram client that sends and never reads.
/// Answers that find its queue full are dropped after a bounded wait (with
/// a log line), without spinning; another client is answered meanwhile and
/// SIGTERM still ends the program. Before: 100-199 % CPU, the sync server
/// answered nobody, SIGTERM hung.
#[test]
fn a_datagram_client_that_never_reads_costs_no_cpu() {
    for mode in ["sync", "threading", "pool", "forking"] {
        let dir = TempDir::new(&format!("dgram-{mode}"));
        let sock = dir.join("echo.sock");
        let mut server = Program::start_in_group(
            "echo_server",
            &[
                "--family",
                "unix-dgram",
                "--mode",
                mode,
                "--unix",
                text(&sock),
                "--grace",
                "1",
            ],
        );
        server.listening_one();
        let deaf = UnixDatagram::bind(dir.join("deaf.sock")).unwrap();
        for i in 0..40 {
            deaf.send_to(format!("datagram {i}\n").as_bytes(), &sock)
                .unwrap();
        }
        let group = || -> u64 { group_members(server.pid()).into_iter().map(cpu_ticks).sum() };
        let (cpu_before, started) = (group(), Instant::now());
        // Another client is answered while the deaf one's answers wait.
        let other = UnixDatagram::bind(dir.join("other.sock")).unwrap();
        other.set_read_timeout(Some(TIMEOUT)).unwrap();
        other.send_to(b"hello\n", &sock).unwrap();
        let mut buf = [0; 64];
        let n = other
            .recv(&mut buf)
            .expect("an answer while a client does not read");
        let answered = started.elapsed();
        assert_eq!(&buf[..n], b"hello\n");
        // CPU over a 2 s window while the deaf client's answers are pending.
        thread::sleep(Duration::from_secs(2).saturating_sub(answered));
        let ticks = group() - cpu_before;
        let window = started.elapsed();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = ticks as f64 / hz / window.as_secs_f64();
        let took = stop_timed(&mut server, &[libc::SIGTERM], mode);
        println!(
            "unix-dgram {mode}: a client that never reads: {:.1} % CPU over {window:.2?}; \
             another client answered after {answered:.2?}; SIGTERM: exit 0 after {took:.2?}",
            cpu * 100.0
        );
        assert!(cpu < 0.25, "{mode}: {:.0} % CPU", cpu * 100.0);
        drop(deaf);
    }
}

/// Issue 15, item 1: at the cap, accepting stops, so that waiting clients
/// stay in the kernel's backlog, not in our descriptor table. Stopped
/// (SIGSTOP) while 400 clients connect, then resumed, the server used to
/// accept 128 per listener turn, twice, before it paused: 8 → 265 fds in
/// pool mode with one worker, 10 → 262 with `--max-children 4`.
#[test]
fn caps_accept_no_more_than_can_start() {
    let cases: [(&str, &[&str], usize); 2] = [
        ("pool", &["--workers", "1"], 2 + 1),
        ("forking", &["--max-children", "4"], 4),
    ];
    for (mode, extra, allowed) in cases {
        let mut args = vec!["--port", "0", "--mode", mode, "--grace", "0.2"];
        args.extend_from_slice(extra);
        let mut server = Program::start_in_group("echo_server", &args);
        let addr = server.listening_one();
        let pid = server.pid();
        let base = open_fds(pid);
        server.signal(libc::SIGSTOP);
        let clients = idle_clients(&addr, 400);
        server.signal(libc::SIGCONT);
        // Sampled for half a second: what the accept loop takes, it takes
        // at once once resumed.
        let mut most = 0;
        let sampling = Instant::now();
        while sampling.elapsed() < Duration::from_millis(500) {
            most = most.max(open_fds(pid));
            thread::sleep(Duration::from_millis(5));
        }
        println!(
            "{mode} {extra:?}: 400 clients while stopped: fds {base} before, at most {most} after"
        );
        assert!(
            most <= base + allowed + 2,
            "{mode} {extra:?}: {base} fds before, {most} after"
        );
        drop(clients);
        stop_timed(&mut server, &[libc::SIGTERM], mode);
    }
}

/// Unix stream clients too: a client of `--family unix` that never sends
/// holds a forked child; SIGTERM ends it within the grace.
#[test]
fn a_stuck_unix_client_of_a_forking_server_ends_with_the_grace() {
    let dir = TempDir::new("stuck-unix");
    let sock = dir.join("echo.sock");
    let mut server = Program::start_in_group(
        "echo_server",
        &[
            "--family",
            "unix",
            "--unix",
            text(&sock),
            "--mode",
            "forking",
            "--grace",
            "0.5",
        ],
    );
    server.listening_one();
    let _stuck = UnixStream::connect(&sock).unwrap();
    poll_until(
        "a child to serve",
        TIMEOUT,
        || grandchildren_of(server.pid()).len(),
        |&n| n >= 1,
    );
    let took = stop_timed(&mut server, &[libc::SIGTERM], "forking unix");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(!sock.exists());
}
