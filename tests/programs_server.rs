//! The socketserver example programs, run as real processes: echo_server in
//! every family and mode, the classic forking and threading servers, the
//! handler-class server, the upper-case server, pid_echo and trace_echo;
//! their replies, their logs, their exit codes and their error messages.
//!
//! As in `programs.rs`: ephemeral ports on 127.0.0.1 and Unix sockets in a
//! temporary directory, a server is talked to only after its `listening on`
//! line, every wait has a deadline, and a child still running when its test
//! ends (or fails) is killed.

mod common;

use std::collections::HashSet;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{
    assert_ctime_is_now, assert_help_and_unknown_flag, assert_runtime_error, assert_usage_error,
    connect, grandchildren_of, read_line, read_to_eof, run, taken_tcp_port, taken_udp_port, text,
    Program, TempDir, TIMEOUT,
};

const TEST_STR: &[u8] = b"hello world\n";

// ----- echo_server: every family in every mode -----------------------------------

const FAMILIES: [&str; 4] = ["tcp", "udp", "unix", "unix-dgram"];

/// One request as a client of `family`: `hello world\n` must come back whole.
fn examine(family: &str, addr: &str, dir: &TempDir, n: usize) {
    let reply = match family {
        "tcp" => {
            let mut stream = connect(addr);
            stream.write_all(TEST_STR).expect("send");
            // The server closes after the one request.
            read_to_eof(&mut stream)
        }
        "unix" => {
            let path = addr.strip_prefix("unix:").expect("unix:PATH");
            let mut stream = UnixStream::connect(path).expect("connect to the Unix socket");
            stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            stream.write_all(TEST_STR).expect("send");
            read_to_eof(&mut stream)
        }
        "udp" => {
            let client = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
            client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let server = addr.strip_prefix("udp:").expect("udp:IP:PORT");
            client.send_to(TEST_STR, server).expect("send");
            let mut buf = [0; 100];
            let (len, from) = client.recv_from(&mut buf).expect("the echoed datagram");
            assert_eq!(
                from.to_string(),
                server,
                "answered from the server's address"
            );
            buf[..len].to_vec()
        }
        "unix-dgram" => {
            // The client binds a path of its own, or the server could not answer.
            let own = dir.join(&format!("client-{n}.sock"));
            let client = UnixDatagram::bind(&own).expect("bind a Unix datagram client");
            client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let path = addr.strip_prefix("unix:").expect("unix:PATH");
            client.send_to(TEST_STR, path).expect("send");
            let mut buf = [0; 100];
            let len = client.recv(&mut buf).expect("the echoed datagram");
            buf[..len].to_vec()
        }
        _ => unreachable!("{family}"),
    };
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(TEST_STR),
        "{family} client {n}"
    );
}

/// Starts echo_server with `--mode mode` (and `extra` flags) in each family,
/// serves three clients one after the other, then stops it with SIGTERM:
/// exit code 0 and no Unix socket file left behind.
fn echo_matrix(mode: &str, extra: &[&str]) {
    for family in FAMILIES {
        let dir = TempDir::new(&format!("{mode}-{family}"));
        let sock = dir.join("echo.sock");
        let mut args = vec!["--family", family, "--mode", mode];
        args.extend_from_slice(extra);
        if family.starts_with("unix") {
            args.extend(["--unix", text(&sock)]);
        } else {
            args.extend(["--port", "0"]);
        }
        let mut server = Program::start("echo_server", &args);
        let addr = server.listening_one();
        match family {
            "tcp" => assert!(addr.starts_with("127.0.0.1:"), "{addr}"),
            "udp" => assert!(addr.starts_with("udp:127.0.0.1:"), "{addr}"),
            _ => assert_eq!(addr, format!("unix:{}", sock.display())),
        }
        assert!(!addr.ends_with(":0"), "the real port is announced: {addr}");
        for n in 0..3 {
            examine(family, &addr, &dir, n);
        }
        server.stop_with(libc::SIGTERM);
        assert!(
            !sock.exists(),
            "{mode} {family}: the socket file was left behind"
        );
    }
}

#[test]
fn echo_server_sync_in_every_family() {
    echo_matrix("sync", &[]);
}

#[test]
fn echo_server_threading_in_every_family() {
    echo_matrix("threading", &[]);
}

#[test]
fn echo_server_forking_in_every_family() {
    echo_matrix("forking", &["--max-children", "2"]);
}

#[test]
fn echo_server_pool_in_every_family() {
    echo_matrix("pool", &["--workers", "2"]);
}

// ----- the classic servers: fork_server, thread_server, class_server ----------------

/// The delay each handler sleeps before answering.
const DELAY: &str = "0.2";
/// Clients at once: eight, so that one after the other (8 x 0.2 s) and side
/// by side (0.2 s) lie far apart, with a second of slack for a loaded
/// machine (four clients and a 700 ms bound left 0.1 s below the 0.8 s of
/// the serial case and 0.5 s above the concurrent one).
const CLIENTS: usize = 8;
/// Three quarters of the 1.6 s of the clients served one after the other.
const CONCURRENT_BOUND: Duration = Duration::from_millis(1200);

/// `CLIENTS` clients at once, each sending one message and reading its
/// stamped reply, then closing. Returns how long they took together.
fn concurrent_clients(addr: &str) -> Duration {
    let clients = CLIENTS;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, barrier) = (addr.to_string(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut stream = connect(&addr);
                let msg = format!("client {i}");
                stream.write_all(msg.as_bytes()).expect("send");
                let prefix = format!("Echo=>{msg} at ");
                let mut reply = vec![0; prefix.len() + 24]; // a ctime is 24 characters
                stream.read_exact(&mut reply).expect("the stamped reply");
                let reply = String::from_utf8(reply).expect("text");
                let time = reply
                    .strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{reply:?}"));
                assert_ctime_is_now(time);
                // The handler answers until the client closes, then closes too.
                stream.shutdown(Shutdown::Write).expect("shutdown");
                assert!(
                    read_to_eof(&mut stream).is_empty(),
                    "nothing after the reply"
                );
            })
        })
        .collect();
    let started = Instant::now();
    barrier.wait();
    for t in threads {
        t.join().expect("a client failed");
    }
    started.elapsed()
}

/// Starts `name` with `--delay 0.2` and checks that `CLIENTS` clients are
/// served side by side; returns the server, still running.
fn serves_concurrently(name: &'static str, extra: &[&str]) -> Program {
    let mut args = vec!["--port", "0", "--delay", DELAY];
    args.extend_from_slice(extra);
    let mut server = Program::start(name, &args);
    let addr = server.listening_one();
    let took = concurrent_clients(&addr);
    assert!(
        took < CONCURRENT_BOUND,
        "{name} {extra:?}: {CLIENTS} clients took {took:?}: not served concurrently"
    );
    assert!(
        took >= Duration::from_millis(200),
        "{name}: answered in {took:?}, before the delay"
    );
    server
}

/// The values logged after `marker` (up to the next space), one per line.
fn logged_after<'a>(stderr: &'a str, marker: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter_map(|line| line.split_once(marker))
        .map(|(_, rest)| rest.split(' ').next().unwrap_or(rest))
        .collect()
}

/// `reaped`, the server also reaps every child once they are done (by the
/// fork server, with or without the no-longer-needed `--signal`), while it goes on serving.
fn fork_server_serves(extra: &[&str], reaped: bool) {
    let mut server = serves_concurrently("fork_server", extra);
    let pid = server.pid();
    if reaped {
        // Polled with a deadline, like an exit: the loop reaps on its own schedule.
        let deadline = Instant::now() + TIMEOUT;
        // Children are the fork server's, which reaps them.
        while !grandchildren_of(pid).is_empty() {
            assert!(
                Instant::now() < deadline,
                "fork_server {extra:?}: children not reaped: {:?}",
                grandchildren_of(pid)
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
    let stderr = server.stop_with(libc::SIGTERM);
    let pids: HashSet<&str> = logged_after(&stderr, "child ").into_iter().collect();
    assert_eq!(
        pids.len(),
        CLIENTS,
        "a child per client, each logging its pid:\n{stderr}"
    );
    assert!(!pids.contains(pid.to_string().as_str()), "{stderr}");
}

#[test]
fn fork_server_serves_clients_in_children() {
    fork_server_serves(&[], false);
}

#[test]
fn fork_server_with_signal_reaps_on_sigchld() {
    fork_server_serves(&["--signal"], true);
}

#[test]
fn fork_server_sweep_reaps_children() {
    fork_server_serves(&[], true);
}

#[test]
fn thread_server_serves_clients_on_threads() {
    let stderr = serves_concurrently("thread_server", &[]).stop_with(libc::SIGTERM);
    let names: HashSet<&str> = logged_after(&stderr, "thread ").into_iter().collect();
    assert_eq!(
        names.len(),
        CLIENTS,
        "a thread per client, each logging its name:\n{stderr}"
    );
    assert!(names.iter().all(|n| n.starts_with("request-")), "{names:?}");
}

#[test]
fn class_server_serves_clients_on_threads() {
    let stderr = serves_concurrently("class_server", &[]).stop_with(libc::SIGTERM);
    assert_eq!(logged_after(&stderr, "thread ").len(), CLIENTS, "{stderr}");
    assert_eq!(
        logged_after(&stderr, ", replies: 1").len(),
        CLIENTS,
        "{stderr}"
    );
}

#[test]
fn class_server_answers_every_read_and_finishes() {
    let mut server = Program::start("class_server", &["--port", "0", "--delay", "0"]);
    let addr = server.listening_one();
    let mut stream = connect(&addr);
    let me = stream.local_addr().expect("local address");
    // Each message waits for its reply, so each is one read and one reply.
    for msg in ["spam", "eggs"] {
        stream.write_all(msg.as_bytes()).expect("send");
        let mut reply = vec![0; format!("Echo=>{msg} at ").len() + 24];
        stream.read_exact(&mut reply).expect("the stamped reply");
        let reply = String::from_utf8(reply).expect("text");
        assert!(reply.starts_with(&format!("Echo=>{msg} at ")), "{reply:?}");
    }
    stream.shutdown(Shutdown::Write).expect("shutdown");
    assert!(read_to_eof(&mut stream).is_empty());
    drop(stream);
    // finish ran, after handle, with the handler's count.
    let stderr = server.stop_with(libc::SIGTERM);
    assert!(
        stderr.contains(&format!("done with {me}, replies: 2")),
        "{stderr}"
    );
}

// ----- upper_server, pid_echo -----------------------------------------------------------

#[test]
fn upper_server_answers_one_line_in_upper_case() {
    let mut server = Program::start("upper_server", &["--port", "0"]);
    let addr = server.listening_one();
    for line in ["hello world\n", "Mixed Case 123 é\n"] {
        let mut stream = connect(&addr);
        stream.write_all(line.as_bytes()).expect("send");
        let reply = String::from_utf8(read_to_eof(&mut stream)).expect("text");
        // ASCII only, as Python's bytes.upper().
        assert_eq!(reply, line.to_ascii_uppercase());
    }
    let stderr = server.stop_with(libc::SIGINT);
    assert!(stderr.contains("wrote: hello world"), "{stderr}");
}

/// Opens two connections and keeps both open: each line comes back behind
/// the worker serving its connection. Returns the two workers.
fn pid_echo_workers(mode: &str) -> (u32, String, String) {
    let mut server = Program::start("pid_echo", &["--mode", mode, "--port", "0"]);
    let addr = server.listening_one();
    let mut first = BufReader::new(connect(&addr));
    let mut second = BufReader::new(connect(&addr));
    let a = ask(&mut first, "from the first");
    let b = ask(&mut second, "from the second");
    // Both connections are open: the first one's worker is still the same.
    assert_eq!(ask(&mut first, "first again"), a);
    drop((first, second));
    let pid = server.pid();
    server.stop_with(libc::SIGTERM);
    (pid, a, b)
}

#[test]
fn pid_echo_forking_serves_two_connections_from_two_children() {
    let (server, a, b) = pid_echo_workers("forking");
    let (a, b): (u32, u32) = (a.parse().expect("a pid"), b.parse().expect("a pid"));
    assert_ne!(a, b, "two connections, two children");
    assert!(
        a != server && b != server,
        "served by children, not the server"
    );
}

#[test]
fn pid_echo_threading_shows_thread_names() {
    let (_, a, b) = pid_echo_workers("threading");
    assert_ne!(a, b, "two connections, two threads");
    assert!(
        a.starts_with("request-") && b.starts_with("request-"),
        "{a} {b}"
    );
}

/// Sends one line to pid_echo and returns who answered it.
fn ask(client: &mut BufReader<TcpStream>, msg: &str) -> String {
    client
        .get_mut()
        .write_all(format!("{msg}\n").as_bytes())
        .expect("send");
    let line = read_line(client);
    let (who, echo) = line.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(echo, msg);
    who.to_string()
}

// ----- trace_echo ---------------------------------------------------------------------

#[test]
fn trace_echo_logs_the_request_life_cycle_in_order() {
    let mut server = Program::start("trace_echo", &["--port", "0"]);
    let addr = server.listening_one();
    let mut stream = connect(&addr);
    stream.write_all(TEST_STR).expect("send");
    assert_eq!(read_to_eof(&mut stream), TEST_STR);
    let stderr = server.stop_with(libc::SIGTERM);

    // `[time LEVEL target] step ...`: the target and the step of each line,
    // the library's as `sockloop::server` and the program's own as `trace_echo`.
    let steps: Vec<(&str, &str)> = stderr
        .lines()
        .filter_map(|line| {
            let (head, message) = line.split_once("] ")?;
            let target = head.rsplit(' ').next()?;
            let step = message.split([' ', ':']).next()?;
            Some((target, step))
        })
        .filter(|(target, _)| *target == "sockloop::server" || *target == "trace_echo")
        .collect();
    let lib = "sockloop::server";
    let own = "trace_echo";
    assert_eq!(
        steps,
        [
            (lib, "server_bind"),
            (lib, "server_activate"),
            (lib, "verify_request"),
            (own, "verify_request"),
            (lib, "process_request"),
            (lib, "finish_request"),
            (lib, "setup"),
            (own, "setup"),
            (lib, "handle"),
            (own, "handle"),
            (lib, "finish"),
            (own, "finish"),
            (lib, "shutdown_request"),
            (lib, "close_request"),
            (lib, "server_close"),
        ],
        "stderr:\n{stderr}"
    );
}

// ----- bad command lines and addresses ------------------------------------------------

const SERVERS: [&str; 7] = [
    "echo_server",
    "fork_server",
    "thread_server",
    "class_server",
    "upper_server",
    "pid_echo",
    "trace_echo",
];

#[test]
fn every_server_has_help_and_rejects_unknown_flags() {
    for name in SERVERS {
        assert_help_and_unknown_flag(name);
    }
}

#[test]
fn bad_values_are_usage_errors() {
    let cases: [(&'static str, &[&str], &str); 8] = [
        ("echo_server", &["--family", "unix"], "--unix"),
        ("echo_server", &["--family", "unix-dgram"], "--unix"),
        ("echo_server", &["--unix", "/tmp/x.sock"], "--unix"),
        ("echo_server", &["--family", "sctp"], "sctp"),
        ("echo_server", &["--workers", "0"], "--workers"),
        ("fork_server", &["--delay", "-1"], "negative"),
        ("thread_server", &["--delay", "soon"], "soon"),
        ("pid_echo", &["--mode", "pool"], "pool"),
    ];
    for (name, args, mentions) in cases {
        assert_usage_error(name, args, mentions);
    }
}

#[test]
fn servers_report_a_port_in_use() {
    let (_taken, addr, port) = taken_tcp_port();
    for name in SERVERS {
        let (status, stdout, stderr) = run(name, &["--port", &port]);
        if name == "trace_echo" {
            // It traces server_bind before the bind fails: the error is its last line.
            let last = stderr.lines().last().unwrap_or_default().to_string();
            assert_runtime_error(name, &(status, stdout, last), &addr);
        } else {
            assert_runtime_error(name, &(status, stdout, stderr), &addr);
        }
    }

    let (_taken, addr, port) = taken_udp_port();
    assert_runtime_error(
        "echo_server",
        &run("echo_server", &["--family", "udp", "--port", &port]),
        &addr,
    );
}

#[test]
fn echo_server_reports_a_unix_path_in_a_missing_directory() {
    let dir = TempDir::new("missing");
    let sock = dir.join("no-such-dir").join("echo.sock");
    for family in ["unix", "unix-dgram"] {
        let result = run("echo_server", &["--family", family, "--unix", text(&sock)]);
        assert_runtime_error("echo_server", &result, text(&sock));
    }
}
