//! Helpers for the tests that run the example programs as real processes
//! (`programs.rs`, `programs_server.rs`, `programs_offload.rs`): finding and
//! building the examples, a [`Program`] guard that waits for its `listening
//! on` lines, collects its stderr and kills it on drop, blocking clients with
//! time limits, scratch directories, and checks of what the programs print.
//!
//! Kept apart from the in-process helpers of `common/mod.rs` (which has a
//! `connect(SocketAddr)` and a `read_to_eof` of its own): a test binary
//! imports from `common::process` what it needs, by name.
//!
//! Every wait here has a deadline ([`TIMEOUT`]); nothing sleeps to order
//! events: a test talks to a server only after its `listening on` lines.

// Each test binary uses a different subset (as for `common/mod.rs`).
#![allow(dead_code)]

use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest any one step may take: a start-up, an answer, an exit.
pub const TIMEOUT: Duration = Duration::from_secs(10);

// ----- the programs ------------------------------------------------------------

/// The path of example `name`, built for this test's profile.
///
/// A plain `cargo test` builds the example programs before it runs tests,
/// but `cargo test --test programs` does not, and `--all-targets` builds them
/// only as test harnesses; so they are built here, once per test run (a
/// no-op when they are up to date).
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/<test binary>-HASH -> target/<profile>
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
    // What cargo sets for a test run describes this package; a build script
    // that names one of them in `rerun-if-env-changed` (ring names
    // CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...) would see it change between
    // this build and the caller's, and rebuild on each (ring: 30 s).
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                key,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
            )
        {
            cmd.env_remove(key);
        }
    }
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
pub struct Program {
    name: &'static str,
    child: Child,
    stdout: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
    /// Started in a process group of its own, killed as a whole.
    own_group: bool,
}

impl Program {
    pub fn start(name: &'static str, args: &[&str]) -> Program {
        Program::spawn(name, args, &[], false)
    }

    /// Like [`start`](Program::start), with `env` added to the environment.
    pub fn start_env(name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Program {
        Program::spawn(name, args, env, false)
    }

    /// Like [`start`](Program::start), in a process group of its own (whose
    /// id is the program's pid): what it forks, and what those fork, can be
    /// found by [`group_members`] even once orphaned.
    pub fn start_in_group(name: &'static str, args: &[&str]) -> Program {
        Program::spawn(name, args, &[], true)
    }

    fn spawn(name: &'static str, args: &[&str], env: &[(&str, &str)], own_group: bool) -> Program {
        let mut command = Command::new(example(name));
        command
            .args(args)
            // Stamps in local time are checked against UTC unless a test says otherwise.
            .env("TZ", "UTC")
            .envs(env.iter().copied());
        if own_group {
            command.process_group(0);
        }
        Program::spawn_command(name, command, own_group)
    }

    /// Starts `command` (which runs example `name`, perhaps through a
    /// launcher) as [`start`](Program::start) does.
    pub fn spawn_command(name: &'static str, mut command: Command, own_group: bool) -> Program {
        command
            // The output tests check should not depend on the caller's RUST_LOG.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
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
            own_group,
        }
    }

    /// Waits for `n` `listening on ADDR` lines and returns the addresses.
    pub fn listening(&mut self, n: usize) -> Vec<String> {
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

    /// Like [`listening`](Program::listening) for one listener: its address.
    pub fn listening_one(&mut self) -> String {
        self.listening(1).remove(0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid we spawned and have not yet reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits for the program to exit.
    pub fn wait(&mut self) -> ExitStatus {
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
    pub fn stdout(&mut self) -> Vec<String> {
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
    pub fn stderr(&mut self) -> String {
        self.wait();
        self.stderr
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default()
    }

    /// Sends `signal`, checks for a clean exit (code 0) and returns stderr.
    pub fn stop_with(&mut self, signal: libc::c_int) -> String {
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
    pub fn fail(&mut self, why: &str) -> ! {
        self.kill();
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        panic!("{}: {why}; its stderr:\n{stderr}", self.name);
    }

    /// Kills the program (with its process group, if it has one of its
    /// own: what it forked goes too) and reaps it.
    fn kill(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // A process group id is not reused while the group has members; once
        // the leader is reaped, only a group still there is ours.
        if self.own_group && (self.status.is_none() || !group_members(self.pid()).is_empty()) {
            // SAFETY: kill(2) on the group our child leads (or led).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            if let Some(stderr) = self.stderr.take().and_then(|t| t.join().ok()) {
                eprintln!("--- stderr of {}:\n{stderr}", self.name);
            }
        }
    }
}

/// Runs a program that is expected to finish by itself.
pub fn run(name: &'static str, args: &[&str]) -> (ExitStatus, Vec<String>, String) {
    let mut program = Program::start(name, args);
    let status = program.wait();
    (status, program.stdout(), program.stderr())
}

/// Checks the one-line error of a program that could not start serving.
pub fn assert_runtime_error(
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

/// Checks that `name --help` prints its usage (exit code 0) and that an
/// unknown flag is a usage error (exit code 2) naming the flag.
pub fn assert_help_and_unknown_flag(name: &'static str) {
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

/// Checks a command line refused before anything starts: exit code 2,
/// nothing announced, and an error that mentions `mentions`.
pub fn assert_usage_error(name: &'static str, args: &[&str], mentions: &str) {
    let (status, stdout, stderr) = run(name, args);
    assert_eq!(
        status.code(),
        Some(2),
        "{name} {args:?}: {status}; {stderr}"
    );
    assert!(stdout.is_empty(), "{name} {args:?}: {stdout:?}");
    assert!(stderr.contains(mentions), "{name} {args:?}: {stderr}");
}

/// Tests that fork count and wait for this process's children (or look
/// at its fork servers): they take this lock, so that they run one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's children that are not in `before` (a fork server started
/// since, say).
pub fn new_children(before: &[u32]) -> Vec<u32> {
    children_of(std::process::id())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect()
}

/// The socket inodes (`socket:[N]`) process `pid` holds open.
pub fn socket_inodes(pid: u32) -> std::collections::HashSet<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
        .collect()
}

/// The pids whose parent is `parent`, zombies included (Linux `/proc`).
pub fn children_of(parent: u32) -> Vec<u32> {
    processes_with(4, parent.into())
}

/// The pids of `parent`'s children's children: what a fork server forked
/// (request children, pool workers), zombies included.
pub fn grandchildren_of(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .flat_map(children_of)
        .collect()
}

/// The pids in process group `pgid`, zombies included (Linux `/proc`).
pub fn group_members(pgid: u32) -> Vec<u32> {
    processes_with(5, pgid.into())
}

/// When process `pid` started (in clock ticks since boot): with the pid, it
/// tells a process apart from a later one given the same pid. `None` once
/// the pid is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

/// Every process whose `/proc/PID/stat` field `n` is `value`.
fn processes_with(n: usize, value: u64) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            (stat_field(pid, n)? == value).then_some(pid)
        })
        .collect()
}

/// Numeric field `n` (counted from 1, as in proc(5); 4 and on) of
/// `/proc/PID/stat`; `None` once the process is gone.
/// CPU time of `pid` and of its reaped children, in clock ticks (utime,
/// stime, cutime, cstime); 0 once it is gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    (14..=17).filter_map(|n| stat_field(pid, n)).sum()
}

fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces, so split after its
    // `)`, where field 3 (`state`) begins.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// A TCP port of 127.0.0.1 that a server cannot bind while the returned
/// listener lives; with its `IP:PORT` and its port.
pub fn taken_tcp_port() -> (TcpListener, String, String) {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (addr, port) = addr_and_port(taken.local_addr());
    (taken, addr, port)
}

/// A UDP port of 127.0.0.1 that a server cannot bind while the returned
/// socket lives; with its `IP:PORT` and its port.
pub fn taken_udp_port() -> (UdpSocket, String, String) {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (addr, port) = addr_and_port(taken.local_addr());
    (taken, addr, port)
}

fn addr_and_port(addr: io::Result<SocketAddr>) -> (String, String) {
    let addr = addr.expect("addr");
    (addr.to_string(), addr.port().to_string())
}

// ----- clients and scratch space ----------------------------------------------------

pub fn try_connect(addr: &str) -> io::Result<TcpStream> {
    let addr = addr.parse().expect("an IP:PORT address");
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

pub fn connect(addr: &str) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Sends `msg` and checks that exactly `msg` comes back.
pub fn assert_echo(stream: &mut (impl Read + Write), msg: &[u8]) {
    stream.write_all(msg).expect("send");
    let mut echo = vec![0; msg.len()];
    stream.read_exact(&mut echo).expect("read the echo");
    assert_eq!(String::from_utf8_lossy(&echo), String::from_utf8_lossy(msg));
}

/// `clients` clients spread over the TCP addresses `addrs` in turn, all
/// connected before any of them talks (so that the server holds every
/// conversation at once), each checking the echo of `messages` lines.
/// Returns their connections, still open.
pub fn echo_clients(addrs: &[String], clients: usize, messages: usize) -> Vec<TcpStream> {
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let addr = addrs[i % addrs.len()].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let stream = try_connect(&addr);
                barrier.wait(); // reached even when the connect failed: no one waits forever
                let mut stream =
                    stream.unwrap_or_else(|e| panic!("client {i}: connect to {addr}: {e}"));
                for j in 0..messages {
                    assert_echo(&mut stream, format!("client {i} message {j}\n").as_bytes());
                }
                stream
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a client failed"))
        .collect()
}

/// Reads until the server closes the connection; fails on a timeout.
pub fn read_to_eof(stream: &mut impl Read) -> Vec<u8> {
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("read up to the server's close");
    rest
}

/// Reads one `\n`-terminated line, without the `\n`.
pub fn read_line(reader: &mut impl BufRead) -> String {
    next_line(reader, "")
}

/// One line for `who` (empty, or `NAME: ` to tell the clients apart).
fn next_line(reader: &mut impl BufRead, who: &str) -> String {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => panic!("{who}the server closed the connection"),
        Ok(_) => line.strip_suffix('\n').expect("a whole line").to_string(),
        Err(e) => panic!("{who}no line from the server: {e}"),
    }
}

/// A line-reading client, for line-based servers.
pub struct LineClient {
    pub reader: BufReader<TcpStream>,
    /// Its own address: what the server sees as the peer.
    pub name: String,
}

impl LineClient {
    pub fn connect(addr: &str) -> LineClient {
        let stream = connect(addr);
        // What the server sees as the peer's address: the chat's name for us.
        let name = stream.local_addr().expect("local address").to_string();
        LineClient {
            reader: BufReader::new(stream),
            name,
        }
    }

    pub fn send(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .expect("send");
    }

    pub fn line(&mut self) -> String {
        next_line(&mut self.reader, &format!("{}: ", self.name))
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = env::temp_dir().join(format!("sockloop-programs-{}-{tag}-{n}", process::id()));
        fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

// ----- what the programs print ----------------------------------------------------

/// Checks `Mon Nov 23 16:58:22 2026`: the layout of Python's
/// `time.ctime()`, a weekday that matches the date, and a time within a
/// minute of now, in UTC (programs run with `TZ=UTC` unless a test sets it).
pub fn assert_ctime_is_now(time: &str) {
    assert_ctime_is_now_at(time, 0);
}

/// Like [`assert_ctime_is_now`], for a clock `offset` seconds east of UTC:
/// what a program started with that `TZ` must print.
pub fn assert_ctime_is_now_at(time: &str, offset: i64) {
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
    let stamped = days * 86_400 + secs_of_day - offset;
    assert!(
        (now - stamped).abs() <= 60,
        "{time:?} is not now (UTC{offset:+} s)"
    );
}

// ----- what a process holds (Linux /proc) -------------------------------------------------

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB;
/// `None` once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Resident memory of process `pid` now (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// The most resident memory process `pid` has had so far (`VmHWM`), in KiB.
pub fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM").unwrap_or_else(|| panic!("no VmHWM for process {pid}"))
}

/// How many file descriptors process `pid` has open (`/proc/PID/fd`).
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// The state letter of process `pid` (`R`, `S`, `Z`, ...; field 3 of
/// `/proc/PID/stat`); `None` once the pid is gone.
pub fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The children of `parent` that have exited and not been reaped (state `Z`).
pub fn zombies_of(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter(|&pid| state(pid) == Some('Z'))
        .collect()
}
