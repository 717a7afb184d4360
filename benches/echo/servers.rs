//! The servers under test and the scenarios, which server runs in which
//! scenario (and why not, when it does not), and starting and stopping a
//! server as processes of its own.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::sys;

/// How a server is started.
#[derive(Clone, Debug)]
pub enum Launch {
    /// `target/release/examples/NAME ARGS`, `procs` processes of it (each
    /// announcing `ports` listeners).
    Example {
        name: &'static str,
        args: Vec<String>,
        procs: usize,
        ports: usize,
    },
    /// This bench binary: `--serve NAME --port 0`.
    Bench(&'static str),
    /// `python3 -c refs::PYTHON KIND 0`.
    Python(&'static str),
}

pub struct Server {
    pub key: &'static str,
    pub what: String,
    pub launch: Launch,
}

/// Every server, in table order; `reactors` is select_echo_mt's `--threads`.
/// The baseline of the event-loop scenarios is `tokio_ct`; long work has none.
pub fn all(reactors: usize) -> Vec<Server> {
    use Launch::*;
    let ex = |name, args: &[&str], ports| Example {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        procs: 1,
        ports,
    };
    let delay = format!("{}", LONG_WORK.as_secs_f64());
    let workers = LONG_WORKERS.to_string();
    let n = reactors.to_string();
    vec![
        Server { key: "select_echo", what: "sockloop `select_echo` example: one reactor on one thread, 2 ports".into(), launch: ex("select_echo", &["--port", "0", "--port", "0"], 2) },
        Server { key: "select_echo_mt", what: format!("sockloop `select_echo --threads {reactors}`: {reactors} reactors on {reactors} threads sharing 2 ports (SO_REUSEPORT)"), launch: ex("select_echo", &["--threads", &n, "--port", "0", "--port", "0"], 2) },
        Server { key: "sl_threading", what: "sockloop socketserver `Mode::Threading` (max_threads raised from 256 to 100000): a thread per connection, blocking echo handler".into(), launch: Bench("sockloop_threading") },
        Server { key: "sl_forking", what: "sockloop socketserver `Mode::Forking` (max_children raised to 100000): a process per connection".into(), launch: Bench("sockloop_forking") },
        Server { key: "sl_pool", what: format!("sockloop socketserver `Mode::pool(4)` (long work: `pool({LONG_WORKERS})`)"), launch: Bench("sockloop_pool") },
        Server { key: "std_threads", what: "reference: std thread per connection, blocking read / write_all".into(), launch: Bench("std_threads") },
        Server { key: "mio_raw", what: "reference: hand-written mio loop, 4 KiB read buffer per connection, reads until WouldBlock".into(), launch: Bench("mio_raw") },
        Server { key: "tokio_ct", what: "tokio current_thread runtime, a task per connection (tokio's echo example)".into(), launch: Bench("tokio_ct") },
        Server { key: "tokio_mt", what: "tokio multi-thread runtime (default workers: one per core the server may use)".into(), launch: Bench("tokio_mt") },
        Server { key: "py_threading", what: "Python socketserver.ThreadingTCPServer (request_queue_size raised from 5 to 1024, daemon threads)".into(), launch: Python("threading") },
        Server { key: "py_forking", what: "Python socketserver.ForkingTCPServer (request_queue_size raised to 1024, max_children raised from 40 to 100000)".into(), launch: Python("forking") },
        Server { key: "thread_server", what: "sockloop `thread_server --delay 0.05` example: a thread per client (`Mode::threading()`), stamped echo".into(), launch: ex("thread_server", &["--port", "0", "--delay", &delay], 1) },
        Server { key: "fork_server", what: "sockloop `fork_server --delay 0.05` example: a process per client (`Mode::Forking`, its max_children 40, reaped by a sweep), stamped echo".into(), launch: ex("fork_server", &["--port", "0", "--delay", &delay], 1) },
        // ---- REACTOR + OFFLOAD SERVERS (long work) ------------------------------------
        // `examples/offload_server.rs`: a line server; each line costs --delay of blocking
        // work on a worker and is answered `Echo=><line> at <ctime>\n`; `ping` is answered
        // `pong` on the loop (the probe). Skipped while the example does not exist.
        Server { key: "offload_threads", what: format!("sockloop `offload_server --pool threads --workers {LONG_WORKERS}`: reactor + thread offload (`cx.offload`)"), launch: ex("offload_server", &["--port", "0", "--pool", "threads", "--workers", &workers, "--delay", &delay], 1) },
        Server { key: "offload_procs", what: format!("sockloop `offload_server --pool processes --workers {LONG_WORKERS}`: reactor + pre-forked process offload (`ProcessPool`)"), launch: ex("offload_server", &["--port", "0", "--pool", "processes", "--workers", &workers, "--delay", &delay], 1) },
        // --------------------------------------------------------------------------------
    ]
}

/// What a long-work server answers, and whether it answers `ping` on its loop.
pub fn long_reply(key: &str) -> (crate::longwork::Reply, bool) {
    use crate::longwork::Reply;
    match key {
        "thread_server" | "fork_server" => (Reply::Stamped, false),
        "offload_threads" | "offload_procs" => (Reply::StampedLine, true),
        _ => (Reply::Echo, false),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// As fast as echoed: throughput, latency, CPU per message.
    Load,
    /// A fixed rate per connection: latency and memory per connection.
    Idle,
    /// Every client needs blocking work once: time to serve them all.
    LongWork,
}

pub struct Scenario {
    pub key: &'static str,
    pub what: &'static str,
    pub kind: Kind,
    pub conns: usize,
    pub msg: usize,
    pub depth: usize,
    /// Messages per second per connection (Idle).
    pub rate: Option<f64>,
    /// Count the server's system calls per message with perf.
    pub syscalls: bool,
}

/// Blocking work per client in the long-work scenario, and pool size.
pub const LONG_WORK: Duration = Duration::from_millis(50);
pub const LONG_WORKERS: usize = 10;

pub fn scenarios() -> Vec<Scenario> {
    let s = |key, what, kind, conns, msg, depth, rate, syscalls| Scenario {
        key,
        what,
        kind,
        conns,
        msg,
        depth,
        rate,
        syscalls,
    };
    vec![
        s(
            "pingpong",
            "64 B messages, 50 connections, one message in flight each",
            Kind::Load,
            50,
            64,
            1,
            None,
            true,
        ),
        s(
            "pipelined",
            "64 B messages, 50 connections, 16 in flight each",
            Kind::Load,
            50,
            64,
            16,
            None,
            false,
        ),
        s(
            "bulk",
            "64 KiB messages, 4 connections, 4 in flight each (256 KiB)",
            Kind::Load,
            4,
            65_536,
            4,
            None,
            false,
        ),
        s(
            "conn1000",
            "ping-pong on 1000 connections, 64 B messages",
            Kind::Load,
            1000,
            64,
            1,
            None,
            false,
        ),
        s(
            "idle9000",
            "9000 mostly idle connections, 64 B at 1 message/s each",
            Kind::Idle,
            9000,
            64,
            1,
            Some(1.0),
            false,
        ),
        s(
            "longwork",
            "200 clients at once, each needs 50 ms of blocking work, then one 64 B echo",
            Kind::LongWork,
            200,
            64,
            1,
            None,
            false,
        ),
    ]
}

/// Whether `server` takes part in `scenario`; Err: why not.
pub fn applies(server: &Server, sc: &Scenario, root: &Path) -> Result<(), String> {
    let long_only = matches!(
        server.key,
        "thread_server" | "fork_server" | "offload_threads" | "offload_procs"
    );
    if sc.kind == Kind::LongWork {
        if !(long_only || server.key == "sl_pool") {
            return Err("long work runs the blocking-work servers only".into());
        }
    } else if long_only {
        return Err("a long-work server (50 ms sleep per client, stamped echo)".into());
    }
    if server.key == "sl_pool" && sc.kind != Kind::LongWork && sc.conns > 4 {
        return Err("a pool of 4 threads holds 4 connections; the other persistent connections would wait forever".into());
    }
    if matches!(server.key, "sl_forking" | "py_forking") && sc.conns > 1000 {
        return Err("9000 processes: not run".into());
    }
    if let Launch::Example { name, .. } = &server.launch {
        if !root.join("examples").join(format!("{name}.rs")).exists() {
            return Err(format!("examples/{name}.rs does not exist yet"));
        }
    }
    if let Launch::Python(_) = server.launch {
        if sys::version_of("python3", "--version").is_none() {
            return Err("python3 is not on this machine".into());
        }
    }
    Ok(())
}

/// Arguments for a bench-run server in `sc`.
fn bench_args(name: &str, sc: &Scenario) -> Vec<String> {
    let mut a = vec![
        "--serve".to_string(),
        name.to_string(),
        "--port".into(),
        "0".into(),
    ];
    if sc.kind == Kind::LongWork {
        a.push("--work-ms".into());
        a.push(LONG_WORK.as_millis().to_string());
        a.push("--workers".into());
        a.push(LONG_WORKERS.to_string());
    }
    a
}

/// Where the servers run.
pub struct Env {
    pub examples: PathBuf,
    pub server_cores: Vec<usize>,
    pub logs: PathBuf,
}

/// A server that is running: its processes and its addresses.
pub struct Running {
    children: Vec<Child>,
    pub addrs: Vec<SocketAddr>,
    log: PathBuf,
}

impl Running {
    pub fn start(server: &Server, sc: &Scenario, env: &Env) -> io::Result<Running> {
        Running::start_wrapped(server, sc, env, &[])
    }

    /// [`start`](Running::start) under a wrapper program (`wrapper[0]`, with
    /// the rest of `wrapper` as its first arguments): valgrind.
    pub fn start_wrapped(
        server: &Server,
        sc: &Scenario,
        env: &Env,
        wrapper: &[String],
    ) -> io::Result<Running> {
        let log = env.logs.join(format!("{}-{}.log", server.key, sc.key));
        let command = |program: &Path| match wrapper.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
        };
        let (cmds, ports): (Vec<Command>, usize) = match &server.launch {
            Launch::Example {
                name,
                args,
                procs,
                ports,
            } => {
                let mut v = Vec::new();
                for _ in 0..*procs {
                    let mut c = command(&env.examples.join(name));
                    c.args(args).env("RUST_LOG", "warn");
                    v.push(c);
                }
                (v, *ports)
            }
            Launch::Bench(name) => {
                // This very binary, even if a rebuild has replaced the file
                // meanwhile; a wrapper needs its real path (to the wrapper,
                // /proc/self/exe is itself).
                let exe = if wrapper.is_empty() {
                    PathBuf::from("/proc/self/exe")
                } else {
                    std::env::current_exe()?
                };
                let mut c = command(&exe);
                c.args(bench_args(name, sc));
                (vec![c], 1)
            }
            Launch::Python(kind) => {
                let mut c = Command::new("python3");
                c.args(["-c", crate::refs::PYTHON, kind, "0"]);
                (vec![c], 1)
            }
        };
        let mut run = Running {
            children: Vec::new(),
            addrs: Vec::new(),
            log: log.clone(),
        };
        for mut cmd in cmds {
            let cores = env.server_cores.clone();
            let err = File::create(&log)?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(err)
                .process_group(0);
            // SAFETY: only sched_setaffinity (one system call) between fork and exec.
            unsafe {
                cmd.pre_exec(move || sys::pin(0, &cores));
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| io::Error::other(format!("{}: cannot start: {e}", server.key)))?;
            let out = child.stdout.take().expect("piped stdout");
            run.children.push(child);
            let (tx, rx) = mpsc::channel();
            // Reads the announcement, then drains stdout to the end.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            for _ in 0..ports {
                let left = deadline.saturating_duration_since(Instant::now());
                let addr = rx
                    .recv_timeout(left)
                    .map_err(|_| run.failure(server.key, "no `listening on` line"))?;
                let addr: SocketAddr = addr.parse().map_err(|e| {
                    io::Error::other(format!("{}: bad address {addr:?}: {e}", server.key))
                })?;
                run.addrs.push(addr);
            }
        }
        Ok(run)
    }

    pub fn pids(&self) -> Vec<i32> {
        self.children.iter().map(|c| c.id() as i32).collect()
    }

    fn failure(&self, key: &str, what: &str) -> io::Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "{key}: {what}; its stderr ends: {}",
            tail.join(" | ")
        ))
    }

    /// Err if a server process has exited.
    pub fn check(&mut self, key: &str) -> io::Result<()> {
        for i in 0..self.children.len() {
            if let Ok(Some(status)) = self.children[i].try_wait() {
                return Err(self.failure(key, &format!("exited during the run ({status})")));
            }
        }
        Ok(())
    }

    /// SIGTERM to each server process by its pid; after 3 s, or once it is
    /// gone, SIGKILL to its process group (forked children that remain).
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(3));
    }

    /// [`stop`](Running::stop) with a longer wait for the exit.
    pub fn stop_within(mut self, wait: Duration) {
        for c in &self.children {
            // SAFETY: signals to processes this bench started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + wait;
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let pgid = c.id() as i32;
            // SAFETY: the group this bench created for the server (process_group(0)).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: as in stop.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Builds the examples that `servers` need (`cargo build --release --example
/// ...`) and copies them from `built` to `to`: the run uses its own copies,
/// so a build by someone else meanwhile cannot swap a server mid-run.
pub fn build_examples(servers: &[&Server], root: &Path, built: &Path, to: &Path) -> io::Result<()> {
    let mut names: Vec<&str> = Vec::new();
    for s in servers {
        if let Launch::Example { name, .. } = &s.launch {
            if !names.contains(name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--quiet"]);
    for n in &names {
        cmd.args(["--example", n]);
    }
    let status = cmd.status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "cargo build --release --example {} failed: {status}",
            names.join(" --example ")
        )));
    }
    std::fs::create_dir_all(to)?;
    for n in &names {
        let dest = to.join(n);
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(built.join(n), &dest)
            .map_err(|e| io::Error::other(format!("copying example {n}: {e}")))?;
    }
    Ok(())
}
