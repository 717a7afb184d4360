//! The example programs, run as real processes: their command lines, their
//! `listening on` lines, what they say on the wire, their exit codes and
//! their error messages.
//!
//! Every server is started on ephemeral ports of 127.0.0.1 (or ::1), and a
//! test talks to it only after reading its `listening on` lines: no fixed
//! ports, no sleeps. Every wait has a deadline, and a child still running
//! when its test ends (or fails) is killed.

use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest any one step may take: a start-up, an answer, an exit.
const TIMEOUT: Duration = Duration::from_secs(10);

// ----- the programs ------------------------------------------------------------

/// The path of example `name`, built for this test's profile.
///
/// A plain `cargo test` builds the example programs before it runs tests,
/// but `cargo test --test programs` does not, and `--all-targets` builds them
/// only as test harnesses; so they are built here, once per test run (a
/// no-op when they are up to date).
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/programs-HASH -> target/<profile>
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

    /// Waits for `n` `listening on ADDR` lines and returns the addresses.
    fn listening(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut addrs = Vec::new();
        while addrs.len() < n {
            let line = match self
                .stdout
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => self.fail("no `listening on` line in time"),
                Err(RecvTimeoutError::Disconnected) => self.fail("exited before listening"),
            };
            match line.strip_prefix("listening on ") {
                Some(addr) => addrs.push(addr.to_string()),
                None => self.fail(&format!("unexpected output {line:?}")),
            }
        }
        addrs
    }

    /// Like [`listening`](Program::listening) for one TCP listener: its address.
    fn listening_one(&mut self) -> String {
        self.listening(1).remove(0)
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

fn try_connect(addr: &str) -> io::Result<TcpStream> {
    let addr = addr.parse().expect("an IP:PORT address");
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

fn connect(addr: &str) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Sends `msg` and checks that exactly `msg` comes back.
fn assert_echo(stream: &mut (impl Read + Write), msg: &[u8]) {
    stream.write_all(msg).expect("send");
    let mut echo = vec![0; msg.len()];
    stream.read_exact(&mut echo).expect("read the echo");
    assert_eq!(String::from_utf8_lossy(&echo), String::from_utf8_lossy(msg));
}

/// Reads until the server closes the connection; fails on a timeout.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("read up to the server's close");
    rest
}

/// A line-reading client, for line-based servers.
struct LineClient {
    reader: BufReader<TcpStream>,
    name: String,
}

impl LineClient {
    fn connect(addr: &str) -> LineClient {
        let stream = connect(addr);
        // What the server sees as the peer's address: the chat's name for us.
        let name = stream.local_addr().expect("local address").to_string();
        LineClient {
            reader: BufReader::new(stream),
            name,
        }
    }

    fn send(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .expect("send");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("{}: the server closed the connection", self.name),
            Ok(_) => line.strip_suffix('\n').expect("a whole line").to_string(),
            Err(e) => panic!("{}: no line from the server: {e}", self.name),
        }
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = env::temp_dir().join(format!("sockloop-programs-{}-{tag}-{n}", process::id()));
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

// ----- select_echo ---------------------------------------------------------------

#[test]
fn select_echo_serves_tcp_unix_and_udp_at_once() {
    let dir = TempDir::new("select");
    let sock = dir.join("echo.sock");
    let mut server = Program::start(
        "select_echo",
        &[
            "--port",
            "0",
            "--port",
            "0",
            "--unix",
            text(&sock),
            "--udp",
            "0",
        ],
    );
    let addrs = server.listening(4);
    assert_eq!(addrs[2], format!("unix:{}", sock.display()));
    let udp = addrs[3]
        .strip_prefix("udp:")
        .expect("the UDP socket is marked udp:")
        .to_string();
    assert_ne!(addrs[0], addrs[1], "two listeners, two ports");

    // Eight clients on each TCP port, all connected before any of them talks,
    // so the server holds sixteen conversations at once.
    let clients = 16;
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let addr = addrs[i % 2].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let stream = try_connect(&addr);
                barrier.wait(); // reached even when the connect failed: no one waits forever
                let mut stream =
                    stream.unwrap_or_else(|e| panic!("client {i}: connect to {addr}: {e}"));
                for j in 0..5 {
                    assert_echo(&mut stream, format!("client {i} message {j}\n").as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }

    // A megabyte, written while the echo is read: far more than one read or
    // one socket buffer, so it crosses the server in many pieces.
    let mut stream = connect(&addrs[1]);
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().expect("clone");
    let sent = big.clone();
    let write = thread::spawn(move || writer.write_all(&sent));
    let mut echo = vec![0; big.len()];
    stream
        .read_exact(&mut echo)
        .expect("read the echo of a megabyte");
    write.join().expect("writer").expect("write a megabyte");
    assert!(echo == big, "a megabyte came back changed");

    let mut unix = UnixStream::connect(&sock).expect("connect to the Unix socket");
    unix.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_echo(&mut unix, b"over a unix socket");

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut buf = [0; 100];
    for datagram in [&b"ping"[..], b"", b"pong"] {
        client.send_to(datagram, &udp).expect("send a datagram");
        let (n, from) = client.recv_from(&mut buf).expect("the datagram's echo");
        assert_eq!(
            &buf[..n],
            datagram,
            "one datagram back, as sent (even an empty one)"
        );
        assert_eq!(from.to_string(), udp);
    }
}

#[test]
fn select_echo_over_ipv6() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let mut server = Program::start("select_echo", &["--host", "::1", "--port", "0"]);
    let addr = server.listening_one();
    assert!(addr.starts_with("[::1]:"), "{addr}");
    assert_echo(&mut connect(&addr), b"Hello over IPv6");
    let port = addr.rsplit(':').next().expect("a port");
    let (status, stdout, stderr) = run("echo_client", &["--host", "::1", "--port", port, "six"]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, ["Client received: six"]);
}

#[test]
fn select_echo_stamps_replies_like_the_python_server() {
    let mut server = Program::start("select_echo", &["--stamp", "--port", "0", "--udp", "0"]);
    let addrs = server.listening(2);
    let mut stream = connect(&addrs[0]);
    stream.write_all(b"hello").expect("send");
    // `Echo=>hello at ` and a 24-character ctime.
    let mut reply = vec![0; "Echo=>hello at ".len() + 24];
    stream.read_exact(&mut reply).expect("the stamped reply");
    let reply = String::from_utf8(reply).expect("text");
    let time = reply
        .strip_prefix("Echo=>hello at ")
        .unwrap_or_else(|| panic!("{reply:?}"));
    assert_ctime_is_now(time);

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    client
        .send_to(b"hi", addrs[1].strip_prefix("udp:").expect("udp:"))
        .expect("send");
    let mut buf = [0; 100];
    let (n, _) = client.recv_from(&mut buf).expect("the stamped datagram");
    let reply = std::str::from_utf8(&buf[..n]).expect("text");
    assert_ctime_is_now(
        reply
            .strip_prefix("Echo=>hi at ")
            .unwrap_or_else(|| panic!("{reply:?}")),
    );
}

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

#[test]
fn select_echo_stops_cleanly_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = TempDir::new("signal");
        let sock = dir.join("echo.sock");
        let mut server = Program::start("select_echo", &["--port", "0", "--unix", text(&sock)]);
        let addrs = server.listening(2);
        assert!(sock.exists(), "the Unix socket file exists while serving");
        // An open connection must not hold up the exit.
        let mut client = connect(&addrs[0]);
        assert_echo(&mut client, b"still here");

        server.signal(signal);
        let status = server.wait();
        assert_eq!(
            status.code(),
            Some(0),
            "signal {signal}: {status}; stderr: {}",
            server.stderr()
        );
        assert!(
            !sock.exists(),
            "signal {signal}: the Unix socket file was left behind"
        );
        assert!(
            read_to_eof(&mut client).is_empty(),
            "the client sees the server's close"
        );
    }
}

#[test]
fn select_echo_unix_socket_in_use_or_stale() {
    let dir = TempDir::new("stale");
    let sock = dir.join("echo.sock");
    let mut first = Program::start("select_echo", &["--port", "0", "--unix", text(&sock)]);
    first.listening(2);

    // A live server keeps its socket: a second one is refused, and must not
    // remove the first one's file on its way out.
    let second = run("select_echo", &["--port", "0", "--unix", text(&sock)]);
    assert_runtime_error("select_echo", &second, text(&sock));
    let mut client = UnixStream::connect(&sock).expect("the first server still answers");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_echo(&mut client, b"first");

    // A killed server cannot clean up; the file it leaves is stale and the
    // next server takes its place.
    first.signal(libc::SIGKILL);
    first.wait();
    assert!(sock.exists(), "SIGKILL leaves the socket file");
    let mut third = Program::start("select_echo", &["--port", "0", "--unix", text(&sock)]);
    third.listening(2);
    let mut client = UnixStream::connect(&sock).expect("connect to the new server");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_echo(&mut client, b"third");
}

// ----- the clients ----------------------------------------------------------------

#[test]
fn echo_client_prints_each_reply() {
    let mut server = Program::start("select_echo", &["--port", "0"]);
    let addr = server.listening_one();
    let port = addr.rsplit(':').next().expect("a port");
    let (status, stdout, stderr) = run("echo_client", &["--port", port]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        stdout,
        [
            "Client received: Hello",
            "Client received: network",
            "Client received: world"
        ]
    );

    let (status, stdout, _) = run(
        "echo_client",
        &["--host", "127.0.0.1", "--port", port, "spam", "eggs"],
    );
    assert!(status.success());
    assert_eq!(stdout, ["Client received: spam", "Client received: eggs"]);
}

#[test]
fn echo_client_reports_a_refused_connection() {
    // A port that was free a moment ago: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let result = run("echo_client", &["--port", &port.to_string()]);
    assert_runtime_error("echo_client", &result, &format!("127.0.0.1:{port}"));
}

#[test]
fn testecho_runs_eight_clients_against_select_echo_and_line_echo() {
    for server_name in ["select_echo", "line_echo"] {
        let mut server = Program::start(server_name, &["--port", "0"]);
        let addr = server.listening_one();
        let port = addr.rsplit(':').next().expect("a port");
        let (status, stdout, stderr) = run("testecho", &["--clients", "8", "--port", port]);
        assert!(
            status.success(),
            "against {server_name}: {status}; stdout {stdout:?}; stderr {stderr}"
        );
        let expected: Vec<String> = (1..=8)
            .map(|n| format!("client {n}: ok (3 messages)"))
            .collect();
        assert_eq!(stdout, expected, "against {server_name}");
    }
}

#[test]
fn testecho_fails_when_echoes_differ() {
    // --stamp changes every reply: each client must notice, and the run fail.
    let mut server = Program::start("select_echo", &["--stamp", "--port", "0"]);
    let addr = server.listening_one();
    let port = addr.rsplit(':').next().expect("a port");
    let (status, stdout, stderr) = run("testecho", &["--clients", "2", "--port", port]);
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(stdout.len(), 2, "{stdout:?}");
    assert!(
        stdout.iter().all(|line| line.contains("FAILED")),
        "{stdout:?}"
    );
    assert_eq!(stderr.trim_end(), "testecho: error: 2 of 2 clients failed");
}

// ----- line_echo -----------------------------------------------------------------

#[test]
fn line_echo_with_crlf_terminator_echoes_records_and_says_bye() {
    let mut server = Program::start("line_echo", &["--terminator", "\\r\\n", "--port", "0"]);
    let addr = server.listening_one();
    let mut stream = connect(&addr);
    // A record split across writes, and a bare \n that is not a terminator.
    stream.write_all(b"hello\r\nwor").expect("send");
    stream.write_all(b"ld\r\nline\none\r\n").expect("send");
    let expected = b"hello\r\nworld\r\nline\none\r\n";
    let mut echo = [0; 24];
    stream.read_exact(&mut echo).expect("the echoes");
    assert_eq!(&echo, expected);

    // Whatever follows QUIT is not answered: the server says bye and closes.
    stream.write_all(b"QUIT\r\nignored\r\n").expect("send");
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut stream)),
        "bye\r\n"
    );
}

#[test]
fn line_echo_disconnects_a_record_over_max_frame() {
    let mut server = Program::start("line_echo", &["--max-frame", "16", "--port", "0"]);
    let addr = server.listening_one();
    let mut stream = connect(&addr);
    assert_echo(&mut stream, b"exactly 16 bytes\n");
    stream.write_all(&[b'x'; 100]).expect("send");
    assert!(
        read_to_eof(&mut stream).is_empty(),
        "no answer, only the close"
    );
    // The server itself goes on.
    assert_echo(&mut connect(&addr), b"next\n");
}

// ----- chat_server ---------------------------------------------------------------

#[test]
fn chat_server_relays_lines_to_the_others_and_announces_joins_and_leaves() {
    let mut server = Program::start("chat_server", &["--port", "0"]);
    let addr = server.listening_one();
    let mut a = LineClient::connect(&addr);
    let mut b = LineClient::connect(&addr);
    // Each notice read also proves its subject is in the room before the next step.
    assert_eq!(a.line(), format!("* {} joined", b.name));
    let mut c = LineClient::connect(&addr);
    assert_eq!(a.line(), format!("* {} joined", c.name));
    assert_eq!(b.line(), format!("* {} joined", c.name));

    a.send("hello from a");
    assert_eq!(b.line(), format!("{}: hello from a", a.name));
    assert_eq!(c.line(), format!("{}: hello from a", a.name));
    // b answers only after it got a's line, so had a been sent its own line,
    // a would read that before b's.
    b.send("hi from b");
    assert_eq!(a.line(), format!("{}: hi from b", b.name));
    assert_eq!(c.line(), format!("{}: hi from b", b.name));

    let c_name = c.name.clone();
    drop(c);
    assert_eq!(a.line(), format!("* {c_name} left"));
    assert_eq!(b.line(), format!("* {c_name} left"));
}

#[test]
fn chat_server_drops_a_member_who_does_not_read() {
    let mut server = Program::start("chat_server", &["--port", "0"]);
    let addr = server.listening_one();
    let mut a = LineClient::connect(&addr);
    let silent = LineClient::connect(&addr);
    assert_eq!(a.line(), format!("* {} joined", silent.name));
    // `a` talks while `silent` never reads: once the kernel's buffers are
    // full, a's lines queue up for `silent` until the server's 1 MiB cap.
    let mut writer = a.reader.get_ref().try_clone().expect("clone");
    let talk = thread::spawn(move || {
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        for _ in 0..32 * 1024 {
            if writer.write_all(&line).is_err() {
                break;
            }
        }
    });
    assert_eq!(a.line(), format!("* {} left", silent.name));
    a.reader
        .get_ref()
        .shutdown(std::net::Shutdown::Both)
        .expect("shutdown");
    talk.join().expect("the talker");
}

// ----- bad command lines and addresses ------------------------------------------------

const PROGRAMS: [&str; 5] = [
    "select_echo",
    "echo_client",
    "testecho",
    "line_echo",
    "chat_server",
];
const SERVERS: [&str; 3] = ["select_echo", "line_echo", "chat_server"];

#[test]
fn every_program_has_help_and_rejects_unknown_flags() {
    for name in PROGRAMS {
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
    for name in ["select_echo", "echo_client", "line_echo", "chat_server"] {
        let (status, _, stderr) = run(name, &["--port", "70000"]);
        assert_eq!(
            status.code(),
            Some(2),
            "{name} --port 70000: {status}; {stderr}"
        );
    }
    let (status, _, stderr) = run("line_echo", &["--terminator", ""]);
    assert_eq!(
        status.code(),
        Some(2),
        "empty terminator: {status}; {stderr}"
    );
}

#[test]
fn servers_report_a_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let port = addr.rsplit(':').next().expect("a port");
    for name in SERVERS {
        assert_runtime_error(name, &run(name, &["--port", port]), &addr);
    }
    // The first listener was fine; still nothing is announced.
    assert_runtime_error(
        "select_echo",
        &run("select_echo", &["--port", "0", "--port", port]),
        &addr,
    );

    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let port = addr.rsplit(':').next().expect("a port");
    assert_runtime_error(
        "select_echo",
        &run("select_echo", &["--port", "0", "--udp", port]),
        &addr,
    );
}

#[test]
fn servers_report_a_host_that_does_not_resolve() {
    for name in SERVERS {
        let result = run(name, &["--host", "no-such-host.invalid", "--port", "0"]);
        assert_runtime_error(name, &result, "no-such-host.invalid");
    }
    let result = run("echo_client", &["--host", "no-such-host.invalid"]);
    assert_runtime_error("echo_client", &result, "no-such-host.invalid");
}

#[test]
fn select_echo_reports_a_unix_path_in_a_missing_directory() {
    let dir = TempDir::new("missing");
    let sock = dir.join("no-such-dir").join("echo.sock");
    let result = run("select_echo", &["--port", "0", "--unix", text(&sock)]);
    assert_runtime_error("select_echo", &result, text(&sock));
}
