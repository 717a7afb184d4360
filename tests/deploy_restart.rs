//! Zero-downtime restart, as processes: `select_echo` under continuous load
//! from 8 client threads that open connections in a loop gets SIGUSR2; its
//! successor takes the listening socket over, the old process drains and
//! exits 0, and not one connection fails. A successor that cannot start
//! leaves the old process serving, and says so.
//!
//! The test process makes itself a child subreaper, so that the successor
//! (a child of the old process, orphaned when it exits) is reparented here
//! and can be stopped and reaped.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{example, TempDir, TIMEOUT};

/// A server process whose stdout and stderr lines arrive on channels (a
/// successor shares both pipes, so neither ends when the old one exits).
struct Proc {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

fn lines(
    pipe: impl Read + Send + 'static,
    log: Option<Arc<Mutex<Vec<String>>>>,
) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(log) = &log {
                log.lock().unwrap().push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
    rx
}

impl Proc {
    fn start(program: &std::path::Path, args: &[&str]) -> Proc {
        Proc::start_env(program, args, &[])
    }

    fn start_env(
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = lines(child.stdout.take().unwrap(), None);
        let stderr = lines(child.stderr.take().unwrap(), Some(log.clone()));
        Proc {
            child,
            stdout,
            stderr,
            log,
        }
    }

    fn listening(&self) -> String {
        let line = self
            .stdout
            .recv_timeout(TIMEOUT)
            .expect("a `listening on` line");
        line.strip_prefix("listening on ").expect(&line).to_string()
    }

    /// Waits for a stderr line containing `text` and returns it.
    fn logged(&self, text: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {text:?}; log:\n{}", self.log()),
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our unreaped child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops and reaps an orphaned successor (reparented to us, the subreaper).
fn stop_successor(pid: i32) -> i32 {
    // SAFETY: signals and reaps a process that is our child by reparenting.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + TIMEOUT;
        let mut status = 0;
        loop {
            if libc::waitpid(pid, &mut status, libc::WNOHANG) == pid {
                return status;
            }
            if Instant::now() > deadline {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
                panic!("successor {pid} did not stop on SIGTERM");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Waits (bounded) for a process reparented to us to exit; its status.
fn reaped(pid: i32) -> i32 {
    let deadline = Instant::now() + TIMEOUT;
    let mut status = 0;
    // SAFETY: waits without blocking for a process reparented to us.
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
        assert!(Instant::now() < deadline, "{pid} did not exit");
        thread::sleep(Duration::from_millis(5));
    }
    status
}

fn successor_pid(line: &str) -> i32 {
    let after = line.split("pid ").nth(1).expect(line);
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
}

/// 8 threads that connect, send a line, read its echo and close, in a loop.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|i| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let msg = format!("client {i} connection {n}\n");
                        match roundtrip(addr, msg.as_bytes()) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{msg:?}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more connections have succeeded.
    fn wait_for(&self, n: u64) {
        let target = self.count() + n;
        let deadline = Instant::now() + TIMEOUT;
        while self.count() < target {
            assert!(
                Instant::now() < deadline,
                "load stalled at {}",
                self.count()
            );
            assert!(
                self.failures.lock().unwrap().is_empty(),
                "{:?}",
                self.failures.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.lock().unwrap().clone(),
        )
    }
}

fn roundtrip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.write_all(msg)?;
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got)?;
    if got != msg {
        return Err(std::io::Error::other(format!("echo {got:?}")));
    }
    Ok(())
}

#[test]
fn restart_under_load_loses_no_connection() {
    become_subreaper();
    let mut old = Proc::start(&example("select_echo"), &["--port", "0", "--grace", "5"]);
    let addr = old.listening();
    let load = Load::start(addr.parse().unwrap(), 8);
    load.wait_for(1000);
    let before = load.count();
    let signalled = Instant::now();
    old.signal(libc::SIGUSR2);
    let pid = successor_pid(&old.logged("restart: started successor"));
    assert_eq!(
        old.listening(),
        addr,
        "the successor announces the same socket"
    );
    let status = old.wait_exit();
    let to_exit = signalled.elapsed();
    let during = load.count() - before;
    assert_eq!(
        status.code(),
        Some(0),
        "old process: {status}; log:\n{}",
        old.log()
    );
    // The successor alone serves now.
    load.wait_for(1000);
    let (made, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed of {made}: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    println!(
        "restart under load: {made} connections by 8 clients, 0 failed; {during} between SIGUSR2 \
         and the old process's exit, which took {to_exit:?}"
    );
    roundtrip(addr.parse().unwrap(), b"the successor serves\n").unwrap();
    let status = stop_successor(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "successor status {status}"
    );
}

#[test]
fn a_successor_that_fails_leaves_the_old_one_serving() {
    become_subreaper();
    // A copy of the binary, replaced by a failing script before the restart:
    // the restart runs whatever is at the path now (a new release).
    let dir = TempDir::new("restart-fail");
    let path = dir.join("select_echo");
    std::fs::copy(example("select_echo"), &path).unwrap();
    let mut old = Proc::start(&path, &["--port", "0"]);
    let addr: SocketAddr = old.listening().parse().unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "#!/bin/sh\necho 'broken release' >&2\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();

    let load = Load::start(addr, 4);
    load.wait_for(50);
    old.signal(libc::SIGUSR2);
    let line = old.logged("serving on");
    assert!(line.contains("exit status 3"), "{line}");
    load.wait_for(100);
    // A second attempt is allowed once the first has failed.
    old.signal(libc::SIGUSR2);
    old.logged("serving on");
    load.wait_for(50);
    let (made, failures) = load.stop();
    assert!(failures.is_empty(), "{failures:?} of {made}");
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the old process must go on"
    );
    old.signal(libc::SIGTERM);
    assert_eq!(old.wait_exit().code(), Some(0));
}

#[test]
fn systemd_is_told_the_successor_is_the_main_process() {
    // What systemd (Type=notify, NotifyAccess=all) hears on NOTIFY_SOCKET:
    // READY=1 with the first process's pid, then with the successor's.
    become_subreaper();
    let dir = TempDir::new("restart-notify");
    let path = dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut old = Proc::start_env(
        &example("select_echo"),
        &["--port", "0"],
        &[("NOTIFY_SOCKET", &path)],
    );
    let addr = old.listening();
    let mut buf = [0; 256];
    let n = notify.recv(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(first, format!("READY=1\nMAINPID={}\n", old.child.id()));
    old.signal(libc::SIGUSR2);
    let pid = successor_pid(&old.logged("restart: started successor"));
    let n = notify.recv(&mut buf).unwrap();
    let second = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(second, format!("READY=1\nMAINPID={pid}\n"));
    assert_eq!(old.wait_exit().code(), Some(0));
    roundtrip(addr.parse().unwrap(), b"served by the successor\n").unwrap();
    let status = stop_successor(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "successor status {status}"
    );
}

#[test]
fn the_old_process_serves_its_open_connections_until_its_grace_ends() {
    become_subreaper();
    let mut old = Proc::start(&example("select_echo"), &["--port", "0", "--grace", "1"]);
    let addr: SocketAddr = old.listening().parse().unwrap();
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.set_read_timeout(Some(TIMEOUT)).unwrap();
    let echo = |s: &mut TcpStream, msg: &[u8]| {
        s.write_all(msg).unwrap();
        let mut got = vec![0; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    };
    echo(&mut kept, b"before");
    old.signal(libc::SIGUSR2);
    let pid = successor_pid(&old.logged("restart: started successor"));
    old.logged("stopping accepting, draining");
    let draining = Instant::now();
    // The old process still serves the connection it had...
    echo(&mut kept, b"during the drain");
    // ... while new ones go to the successor.
    roundtrip(addr, b"new connection\n").unwrap();
    // At the end of --grace it closes what is left, then exits 0.
    let mut rest = Vec::new();
    let _ = kept.read_to_end(&mut rest);
    let status = old.wait_exit();
    let took = draining.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(800),
        "drained after {took:?}, before --grace 1"
    );
    assert!(took < Duration::from_secs(5), "drained after {took:?}");
    let status = stop_successor(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "successor status {status}"
    );
}

#[test]
fn chained_restarts_keep_every_socket_the_unix_file_included() {
    become_subreaper();
    let dir = TempDir::new("restart-chain");
    let unix = dir.join("echo.sock");
    let unix_arg = unix.to_str().unwrap();
    let mut old = Proc::start(
        &example("select_echo"),
        &["--port", "0", "--unix", unix_arg, "--udp", "0"],
    );
    let addrs: Vec<String> = (0..3).map(|_| old.listening()).collect();
    let tcp: SocketAddr = addrs[0].parse().unwrap();
    let udp: SocketAddr = addrs[2].strip_prefix("udp:").unwrap().parse().unwrap();
    let check = |round: &str| {
        roundtrip(tcp, b"tcp\n").unwrap_or_else(|e| panic!("{round}: tcp: {e}"));
        let mut u = std::os::unix::net::UnixStream::connect(&unix)
            .unwrap_or_else(|e| panic!("{round}: unix socket file: {e}"));
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        u.write_all(b"unix").unwrap();
        let mut got = [0; 4];
        u.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"unix", "{round}");
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.send_to(b"udp", udp).unwrap();
        let mut buf = [0; 8];
        let n = c
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{round}: udp: {e}"));
        assert_eq!(&buf[..n], b"udp", "{round}");
    };
    check("first process");
    old.signal(libc::SIGUSR2);
    let first = successor_pid(&old.logged("restart: started successor"));
    let again: Vec<String> = (0..3).map(|_| old.listening()).collect();
    assert_eq!(again, addrs, "the successor announces the same sockets");
    assert_eq!(old.wait_exit().code(), Some(0));
    check("first successor");
    // The successor restarts in turn.
    // SAFETY: kill(2) on a process reparented to us, not yet reaped.
    assert_eq!(unsafe { libc::kill(first, libc::SIGUSR2) }, 0);
    let second = successor_pid(&old.logged("restart: started successor"));
    old.logged("stopping accepting, draining");
    let status = reaped(first);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "first successor {status}"
    );
    check("second successor");
    let status = stop_successor(second);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "second successor {status}"
    );
}

/// Red team F2: programs that cannot restart (several reactor threads, the
/// socketserver examples) log and ignore SIGUSR2, the reload signal
/// docs/deploy.md gives systemd, instead of dying by its default action
/// with every connection reset.
#[test]
fn programs_that_cannot_restart_ignore_the_restart_signal() {
    for (name, args) in [
        ("select_echo", &["--port", "0", "--threads", "2"][..]),
        ("echo_server", &["--port", "0", "--mode", "threading"][..]),
        ("echo_server", &["--port", "0", "--mode", "forking"][..]),
    ] {
        let mut p = Proc::start(&example(name), args);
        let addr: SocketAddr = p.listening().parse().unwrap();
        let mut held = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        held.set_read_timeout(Some(TIMEOUT)).unwrap();
        // Served first (a socketserver handler answers one message, then closes).
        roundtrip(addr, b"before").unwrap();
        let mut got = [0; 6];
        p.signal(libc::SIGUSR2);
        p.logged("restart is not supported");
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "{name} {args:?} died"
        );
        held.write_all(b"after!").unwrap();
        held.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"after!", "{name} {args:?}");
        roundtrip(addr, b"new client").unwrap();
        drop(held);
        p.signal(libc::SIGTERM);
        assert_eq!(p.wait_exit().code(), Some(0), "{name} {args:?}");
    }
}

#[test]
fn a_restart_runs_the_release_the_start_path_names_now() {
    // Red team F11: a symlink-switch deployment (`current -> releases/vN`)
    // started as `current/select_echo`; after `current` is switched, the
    // restart must run the new release (the path as started), not the
    // binary the old process runs (`/proc/self/exe`). Fails on the old code.
    become_subreaper();
    let dir = TempDir::new("restart-symlink");
    let (v1, v2) = (dir.join("releases/v1"), dir.join("releases/v2"));
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    std::os::unix::fs::symlink(example("select_echo"), v1.join("select_echo")).unwrap();
    let script = format!(
        "#!/bin/sh\necho 'release v2 started' >&2\nexec '{}' \"$@\"\n",
        example("select_echo").display()
    );
    std::fs::write(v2.join("select_echo"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        v2.join("select_echo"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink(&v1, dir.join("current")).unwrap();
    let mut old = Proc::start(&dir.join("current/select_echo"), &["--port", "0"]);
    let addr: SocketAddr = old.listening().parse().unwrap();
    // The deployment's atomic switch.
    std::os::unix::fs::symlink(&v2, dir.join("current.new")).unwrap();
    std::fs::rename(dir.join("current.new"), dir.join("current")).unwrap();

    old.signal(libc::SIGUSR2);
    let pid = successor_pid(&old.logged("started successor"));
    assert_eq!(old.wait_exit().code(), Some(0), "{}", old.log());
    roundtrip(addr, b"after the switch\n").unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !old.log().contains("release v2 started") {
        if Instant::now() > deadline {
            stop_successor(pid);
            panic!("the successor is not release v2; log:\n{}", old.log());
        }
        thread::sleep(Duration::from_millis(5));
    }
    stop_successor(pid);
}

#[test]
fn stopping_before_the_successor_is_ready_kills_it() {
    // Red team F3: SIGTERM while the successor is still starting left it
    // running as an orphan that holds the listening socket. Fails on the old
    // code (the successor is still alive after the old process exited).
    become_subreaper();
    let dir = TempDir::new("restart-stop-early");
    let path = dir.join("select_echo");
    std::fs::copy(example("select_echo"), &path).unwrap();
    let mut old = Proc::start(&path, &["--port", "0"]);
    old.listening();
    // The next release never gets ready: it holds the sockets and sleeps.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "#!/bin/sh\necho 'slow release' >&2\nexec sleep 60\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();

    old.signal(libc::SIGUSR2);
    let pid = successor_pid(&old.logged("started successor"));
    old.logged("slow release");
    old.signal(libc::SIGTERM);
    assert_eq!(old.wait_exit().code(), Some(0), "{}", old.log());
    // SAFETY: kill(pid, 0) only checks whether the pid exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if alive {
        stop_successor(pid);
        panic!("successor {pid} left running; log:\n{}", old.log());
    }
    old.logged("terminated it");
}
