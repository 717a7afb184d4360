//! The socketserver example programs, run as real processes: echo_server in
//! every family and mode, the classic forking and threading servers, the
//! handler-class server, the upper-case server, pid_echo and trace_echo;
//! their replies, their logs, their exit codes and their error messages.
//!
//! As in `programs.rs`: ephemeral ports on 127.0.0.1 and Unix sockets in a
//! temporary directory, a server is talked to only after its `listening on`
//! line, every wait has a deadline, and a child still running when its test
//! ends (or fails) is killed.

use std::collections::HashSet;
use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest any one step may take: a start-up, an answer, an exit.
const TIMEOUT: Duration = Duration::from_secs(10);

const TEST_STR: &[u8] = b"hello world\n";

// ----- the programs (as in programs.rs) ----------------------------------------

/// The path of example `name`, built for this test's profile.
///
/// `cargo test --test programs_server` does not build the example programs,
/// so they are built here, once per test run (a no-op when up to date).
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/programs_server-HASH -> target/<profile>
    let exe = env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    BUILT.get_or_init(|| build_examples(profile_dir));
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example {name} not found at {}",
        path.display()
    );
    path
}

fn build_examples(profile_dir: &Path) {
    // Set by cargo when it runs tests; without it, trust what is built.
    let Some(cargo) = env::var_os("CARGO") else {
        return;
    };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--examples", "--quiet"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => {}
    }
    let status = cmd.status().expect("run cargo build --examples");
    assert!(status.success(), "cargo build --examples failed: {status}");
}

/// A running example program. Dropping it kills the process; if the test is
/// failing, the program's stderr is printed first, to show what it logged.
struct Program {
    name: &'static str,
    child: Child,
    stdout: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
}

impl Program {
    fn start(name: &'static str, args: &[&str]) -> Program {
        let mut child = Command::new(example(name))
            .args(args)
            // The output tests check should not depend on the caller's RUST_LOG.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        // Both pipes are drained by threads: a child blocked on a full pipe
        // would hang the test, and the stdout lines arrive with timeouts.
        let (lines, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || {
            let mut text = Vec::new();
            let _ = err.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        Program {
            name,
            child,
            stdout,
            stderr: Some(stderr),
            status: None,
        }
    }

    /// Waits for the one `listening on ADDR` line and returns the address.
    fn listening(&mut self) -> String {
        let line = match self.stdout.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => self.fail("no `listening on` line in time"),
            Err(RecvTimeoutError::Disconnected) => self.fail("exited before listening"),
        };
        match line.strip_prefix("listening on ") {
            Some(addr) => addr.to_string(),
            None => self.fail(&format!("unexpected output {line:?}")),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid we spawned and have not yet reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits for the program to exit.
    fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return status;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => self.fail("still running after the timeout"),
                Err(e) => self.fail(&format!("wait failed: {e}")),
            }
        }
    }

    /// Everything the program wrote to stdout, once it has exited.
    fn stdout(&mut self) -> Vec<String> {
        self.wait();
        let deadline = Instant::now() + TIMEOUT;
        let mut lines = Vec::new();
        loop {
            match self
                .stdout
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Disconnected) => return lines,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: stdout still open after exit", self.name)
                }
            }
        }
    }

    /// Everything the program wrote to stderr, once it has exited.
    fn stderr(&mut self) -> String {
        self.wait();
        self.stderr
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default()
    }

    /// Sends `signal`, checks for a clean exit (code 0) and returns stderr.
    fn stop_with(&mut self, signal: libc::c_int) -> String {
        self.signal(signal);
        let status = self.wait();
        let stderr = self.stderr();
        assert_eq!(
            status.code(),
            Some(0),
            "{} after signal {signal}: {status}; stderr:\n{stderr}",
            self.name
        );
        stderr
    }

    /// Kills the program and fails the test, showing what it wrote to stderr.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        panic!("{}: {why}; its stderr:\n{stderr}", self.name);
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            if let Some(stderr) = self.stderr.take().and_then(|t| t.join().ok()) {
                eprintln!("--- stderr of {}:\n{stderr}", self.name);
            }
        }
    }
}

/// Runs a program that is expected to finish by itself.
fn run(name: &'static str, args: &[&str]) -> (ExitStatus, Vec<String>, String) {
    let mut program = Program::start(name, args);
    let status = program.wait();
    (status, program.stdout(), program.stderr())
}

/// Checks the one-line error of a program that could not start serving.
fn assert_runtime_error(
    name: &str,
    (status, stdout, stderr): &(ExitStatus, Vec<String>, String),
    mentions: &str,
) {
    assert_eq!(status.code(), Some(1), "{name}: {status}; stderr: {stderr}");
    assert!(
        stdout.is_empty(),
        "{name} announced although it failed: {stdout:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{name}: expected one error line, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with(&format!("{name}: error: ")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(mentions),
        "{name}: {:?} does not mention {mentions:?}",
        lines[0]
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

// ----- clients and scratch space ----------------------------------------------------

fn connect(addr: &str) -> TcpStream {
    let sock = addr.parse().expect("an IP:PORT address");
    let stream = TcpStream::connect_timeout(&sock, TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    stream
}

/// Reads until the server closes the connection; fails on a timeout.
fn read_to_eof(stream: &mut impl Read) -> Vec<u8> {
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("read up to the server's close");
    rest
}

/// Reads one `\n`-terminated line, without the `\n`.
fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => panic!("the server closed the connection"),
        Ok(_) => line.strip_suffix('\n').expect("a whole line").to_string(),
        Err(e) => panic!("no line from the server: {e}"),
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = env::temp_dir().join(format!("sockloop-srvprog-{}-{tag}-{n}", process::id()));
        fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

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
        let addr = server.listening();
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
/// Four clients served one after the other would take 4 x 0.2 s.
const CONCURRENT_BOUND: Duration = Duration::from_millis(700);

/// Four clients at once, each sending one message and reading its stamped
/// reply, then closing. Returns how long they took together.
fn four_concurrent_clients(addr: &str) -> Duration {
    let clients = 4;
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

/// Starts `name` with `--delay 0.2` and checks that four clients are
/// served side by side; returns the server, still running.
fn serves_concurrently(name: &'static str, extra: &[&str]) -> Program {
    let mut args = vec!["--port", "0", "--delay", DELAY];
    args.extend_from_slice(extra);
    let mut server = Program::start(name, &args);
    let addr = server.listening();
    let took = four_concurrent_clients(&addr);
    assert!(
        took < CONCURRENT_BOUND,
        "{name} {extra:?}: four clients took {took:?}: not served concurrently"
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

/// The pids whose parent is `parent`, zombies included (Linux `/proc`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// Four clients, each served by a child of its own that logs its pid; with
/// `reaped`, the server also reaps every child once they are done (by the
/// sweep, or on SIGCHLD with `--signal`), while it goes on serving.
fn fork_server_serves(extra: &[&str], reaped: bool) {
    let mut server = serves_concurrently("fork_server", extra);
    let pid = server.pid();
    if reaped {
        // Polled with a deadline, like an exit: the loop reaps on its own schedule.
        let deadline = Instant::now() + TIMEOUT;
        while !children_of(pid).is_empty() {
            assert!(
                Instant::now() < deadline,
                "fork_server {extra:?}: children not reaped: {:?}",
                children_of(pid)
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
    let stderr = server.stop_with(libc::SIGTERM);
    let pids: HashSet<&str> = logged_after(&stderr, "child ").into_iter().collect();
    assert_eq!(
        pids.len(),
        4,
        "four children, each logging its pid:\n{stderr}"
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
        4,
        "four threads, each logging its name:\n{stderr}"
    );
    assert!(names.iter().all(|n| n.starts_with("request-")), "{names:?}");
}

#[test]
fn class_server_serves_clients_on_threads() {
    let stderr = serves_concurrently("class_server", &[]).stop_with(libc::SIGTERM);
    assert_eq!(logged_after(&stderr, "thread ").len(), 4, "{stderr}");
    assert_eq!(logged_after(&stderr, ", replies: 1").len(), 4, "{stderr}");
}

#[test]
fn class_server_answers_every_read_and_finishes() {
    let mut server = Program::start("class_server", &["--port", "0", "--delay", "0"]);
    let addr = server.listening();
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
    let addr = server.listening();
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
    let addr = server.listening();
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
    let addr = server.listening();
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
        let (status, stdout, _) = run(name, &["--help"]);
        assert!(status.success(), "{name} --help: {status}");
        assert!(
            stdout
                .iter()
                .any(|l| l.starts_with(&format!("Usage: {name}"))),
            "{name}: {stdout:?}"
        );

        let (status, _, stderr) = run(name, &["--no-such-flag"]);
        assert_eq!(status.code(), Some(2), "{name}: {status}");
        assert!(stderr.contains("--no-such-flag"), "{name}: {stderr}");
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
        let (status, stdout, stderr) = run(name, args);
        assert_eq!(
            status.code(),
            Some(2),
            "{name} {args:?}: {status}; {stderr}"
        );
        assert!(stdout.is_empty(), "{name} {args:?}: {stdout:?}");
        assert!(stderr.contains(mentions), "{name} {args:?}: {stderr}");
    }
}

#[test]
fn servers_report_a_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let port = addr.rsplit(':').next().expect("a port");
    for name in SERVERS {
        let (status, stdout, stderr) = run(name, &["--port", port]);
        if name == "trace_echo" {
            // It traces server_bind before the bind fails: the error is its last line.
            let last = stderr.lines().last().unwrap_or_default().to_string();
            assert_runtime_error(name, &(status, stdout, last), &addr);
        } else {
            assert_runtime_error(name, &(status, stdout, stderr), &addr);
        }
    }

    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let port = addr.rsplit(':').next().expect("a port");
    assert_runtime_error(
        "echo_server",
        &run("echo_server", &["--family", "udp", "--port", port]),
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

// ----- ctime ---------------------------------------------------------------------------

/// Checks `Mon Nov 23 16:58:22 2026` (UTC): the layout of Python's
/// `time.ctime()`, a weekday that matches the date, and a time within a
/// minute of now.
fn assert_ctime_is_now(time: &str) {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let bad = || -> ! { panic!("not a ctime: {time:?}") };
    let b = time.as_bytes();
    if b.len() != 24 || [b[3], b[7], b[10], b[19]] != [b' '; 4] || b[13] != b':' || b[16] != b':' {
        bad();
    }
    let num = |range: std::ops::Range<usize>| -> i64 {
        time[range].trim_start().parse().unwrap_or_else(|_| bad())
    };
    let weekday = DAYS
        .iter()
        .position(|&d| d == &time[..3])
        .unwrap_or_else(|| bad());
    let month = MONTHS
        .iter()
        .position(|&m| m == &time[4..7])
        .unwrap_or_else(|| bad()) as i64
        + 1;
    let (day, year) = (num(8..10), num(20..24));
    let secs_of_day = num(11..13) * 3600 + num(14..16) * 60 + num(17..19);

    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    assert_eq!(
        weekday as i64,
        (days + 4).rem_euclid(7),
        "wrong weekday in {time:?}"
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let stamped = days * 86_400 + secs_of_day;
    assert!((now - stamped).abs() <= 60, "{time:?} is not now (UTC)");
}
