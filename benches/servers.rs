//! `cargo bench --bench servers`: the server examples against the real
//! load generators. HTTP: `http_hello` against the same server on tokio's
//! current_thread runtime (same decoder, one write per read), with `wrk`
//! keep-alive, pipelined ×16 (a Lua script) and `Connection: close`. RESP:
//! `resp_server` against a real `redis-server`, with `redis-benchmark`
//! `-P 1` and `-P 16` (PING, SET, GET). Server on core 0, load on core 1
//! (`taskset`), servers interleaved round by round; throughput and server
//! CPU per request (from /proc/PID/stat), medians of the rounds.
//!
//! ```text
//! apt-get install wrk redis-tools redis-server     # the load generators (Debian)
//! cargo bench --bench servers                      # 3 rounds of 3 s windows
//! cargo bench --bench servers -- --quick           # 1 round of 1 s windows (CI)
//! ```
//!
//! Without `--bench` (cargo test) it does nothing; a missing program skips
//! its part and says so.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if let Some(i) = raw.iter().position(|a| a == "--serve-tokio-http") {
        return serve_tokio_http(raw.get(i + 1).map_or("0", |s| s.as_str()));
    }
    if !raw.iter().any(|a| a == "--bench") {
        println!(
            "servers: benchmark not run (no --bench); run it with `cargo bench --bench servers`"
        );
        return ExitCode::SUCCESS;
    }
    let quick = raw.iter().any(|a| a == "--quick");
    let (rounds, secs) = if quick { (1, 1) } else { (3, 3) };
    let examples = build_examples();
    let mut rows = Vec::new();
    if have("wrk") {
        rows.extend(http(&examples, rounds, secs));
    } else {
        eprintln!("servers: wrk is not installed (apt-get install wrk): HTTP skipped");
    }
    if have("redis-benchmark") && have("redis-server") {
        rows.extend(resp(&examples, rounds, secs));
    } else {
        eprintln!("servers: redis-benchmark / redis-server not installed (apt-get install redis-tools redis-server): RESP skipped");
    }
    // Each scenario's rows: sockloop's first, then the peer it is measured
    // against; the ratios are sockloop's over the peer's.
    println!("| scenario | server | req/s | server CPU µs/req | of which user | CPU ratio | user ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for pair in rows.chunks(2) {
        for row in pair {
            let peer = &pair[pair.len() - 1].per_request;
            let (cpu, user) = (row.per_request.total, row.per_request.user);
            let ratios = if std::ptr::eq(row, &pair[0]) && pair.len() == 2 {
                format!("{:.2} | {:.2}", cpu / peer.total, user / peer.user)
            } else {
                " | ".to_string()
            };
            println!(
                "| {} | {} | {:.0} | {cpu:.2} | {user:.2} | {ratios} |",
                row.scenario, row.server, row.rate
            );
        }
    }
    ExitCode::SUCCESS
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `taskset -c CORE` when taskset exists and there are two cores.
fn pinned(core: usize, program: &str) -> Command {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if have("taskset") && cores > 1 {
        let mut c = Command::new("taskset");
        c.args(["-c", &core.to_string(), program]);
        c
    } else {
        Command::new(program)
    }
}

/// Builds the examples in this profile; their directory.
fn build_examples() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "--example",
                "http_hello",
                "--example",
                "resp_server",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    profile.join("examples")
}

/// A server process and its port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `cmd`, which prints `listening on HOST:PORT`.
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
        Server { child, port }
    }

    /// The process's CPU time so far.
    fn cpu(&self) -> Cpu {
        cpu(self.child.id())
    }
}

/// CPU time in microseconds: in user space (the server's own code, where
/// the servers differ) and in all (with the kernel's share, mostly the
/// same system calls for every server).
#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    total: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            total: self.total - before.total,
        }
    }
}

fn cpu(pid: u32) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Cpu {
        user: field(11) * 1e6 / hz,
        total: (field(11) + field(12)) * 1e6 / hz,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One server in one scenario: medians of the rounds.
struct Row {
    scenario: String,
    server: String,
    rate: f64,
    /// CPU microseconds per request.
    per_request: Cpu,
}

/// What the rounds measured for one server in one scenario.
#[derive(Clone, Default)]
struct Samples {
    rates: Vec<f64>,
    user: Vec<f64>,
    total: Vec<f64>,
}

impl Samples {
    fn push(&mut self, rate: f64, cpu: Cpu, requests: f64) {
        self.rates.push(rate);
        let per = |us: f64| {
            if requests > 0.0 {
                us / requests
            } else {
                f64::NAN
            }
        };
        self.user.push(per(cpu.user));
        self.total.push(per(cpu.total));
    }

    fn row(self, scenario: &str, server: &str) -> Row {
        Row {
            scenario: scenario.to_string(),
            server: server.to_string(),
            rate: median(self.rates),
            per_request: Cpu {
                user: median(self.user),
                total: median(self.total),
            },
        }
    }
}

/// A named way to start a server.
type Starter<'a> = (&'a str, Box<dyn Fn() -> Server + 'a>);

fn http(examples: &std::path::Path, rounds: usize, secs: u64) -> Vec<Row> {
    let script = std::env::temp_dir().join(format!("sockloop-pipeline-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        "init = function(args)\n  local r = {}\n  for i = 1, 16 do r[i] = wrk.format(nil, \"/\") end\n  req = table.concat(r)\nend\nrequest = function() return req end\n",
    )
    .unwrap();
    let me = std::env::current_exe().unwrap();
    let servers: Vec<Starter> = vec![
        ("sockloop http_hello", {
            let exe = examples.join("http_hello");
            Box::new(move || {
                let mut c = pinned(0, exe.to_str().unwrap());
                c.args(["--port", "0"]);
                Server::start(c)
            })
        }),
        ("tokio current_thread", {
            let me = me.clone();
            Box::new(move || {
                let mut c = pinned(0, me.to_str().unwrap());
                c.args(["--serve-tokio-http", "0"]);
                Server::start(c)
            })
        }),
    ];
    let scenarios: Vec<(&str, Vec<String>)> = vec![
        ("HTTP keep-alive (wrk -c64)", vec![]),
        (
            "HTTP pipelined x16",
            vec!["-s".into(), script.to_str().unwrap().into()],
        ),
        (
            "HTTP Connection: close",
            vec!["-H".into(), "Connection: close".into()],
        ),
    ];
    let mut rows = Vec::new();
    for (scenario, extra) in &scenarios {
        let mut samples: Vec<Samples> = vec![Samples::default(); servers.len()];
        for _ in 0..rounds {
            for (i, (_, start)) in servers.iter().enumerate() {
                let server = start();
                let before = server.cpu();
                let out = pinned(1, "wrk")
                    .args(["-t1", "-c64", &format!("-d{secs}")])
                    .args(extra)
                    .arg(format!("http://127.0.0.1:{}/", server.port))
                    .output()
                    .unwrap();
                let cpu = server.cpu() - before;
                let text = String::from_utf8_lossy(&out.stdout);
                let total: f64 = text
                    .lines()
                    .find(|l| l.contains("requests in"))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0.0);
                // wrk counts responses: a pipelined script's 16 are 16.
                let requests = total;
                samples[i].push(requests / secs as f64, cpu, requests);
            }
        }
        for (i, (name, _)) in servers.iter().enumerate() {
            rows.push(samples[i].clone().row(scenario, name));
        }
    }
    let _ = std::fs::remove_file(script);
    rows
}

fn resp(examples: &std::path::Path, rounds: usize, secs: u64) -> Vec<Row> {
    let exe = examples.join("resp_server");
    let start_sockloop = || {
        let mut c = pinned(0, exe.to_str().unwrap());
        c.args(["--port", "0"]);
        Server::start(c)
    };
    let start_redis = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = pinned(0, "redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Ready once it answers.
        for _ in 0..500 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"PING\r\n");
                let mut b = [0; 7];
                if s.read_exact(&mut b).is_ok() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Server { child, port }
    };
    let servers: Vec<(&str, &dyn Fn() -> Server)> = vec![
        ("sockloop resp_server", &start_sockloop),
        ("redis-server", &start_redis),
    ];
    // Requests per test: a fixed count (redis-benchmark has no duration),
    // about `secs` seconds' worth on a quiet 2-core machine, so that the
    // user-space share is a few dozen clock ticks, not a handful.
    let mut rows = Vec::new();
    for pipeline in ["1", "16"] {
        let n = if pipeline == "16" {
            (secs * 1_000_000).to_string()
        } else {
            (secs * 80_000).to_string()
        };
        let mut samples: std::collections::BTreeMap<(String, usize), Samples> = Default::default();
        for _ in 0..rounds {
            for (i, (_, start)) in servers.iter().enumerate() {
                for test in ["ping_mbulk", "set", "get"] {
                    let server = start();
                    let before = server.cpu();
                    let out = pinned(1, "redis-benchmark")
                        .args([
                            "-p",
                            &server.port.to_string(),
                            "-c",
                            "50",
                            "-n",
                            &n,
                            "-P",
                            pipeline,
                            "-t",
                            test,
                            "--csv",
                        ])
                        .output()
                        .unwrap();
                    let cpu = server.cpu() - before;
                    let text = String::from_utf8_lossy(&out.stdout);
                    let rate: f64 = text
                        .lines()
                        .filter(|l| !l.starts_with("\"test\""))
                        .find_map(|l| l.split(',').nth(1))
                        .and_then(|v| v.trim_matches('"').parse().ok())
                        .unwrap_or(0.0);
                    let requests: f64 = n.parse().unwrap();
                    let entry = samples.entry((test.to_string(), i)).or_default();
                    entry.push(rate, cpu, requests);
                }
            }
        }
        for ((test, i), samples) in samples {
            let scenario = format!("RESP -P {pipeline} {}", test.to_uppercase());
            rows.push(samples.row(&scenario, servers[i].0));
        }
    }
    rows
}

/// `http_hello`'s answers, the same code in both servers.
#[path = "../examples/common/http_reply.rs"]
mod http_reply;

/// The HTTP hello server on tokio's current_thread runtime: the same
/// decoder and the same answers (`http_reply`), one write of all the
/// responses to one read.
fn serve_tokio_http(port: &str) -> ExitCode {
    use sockloop::{Decoder, HttpRequests};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        println!("listening on {}", listener.local_addr().unwrap());
        let _ = std::io::stdout().flush();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::with_capacity(8192);
                let mut out = Vec::with_capacity(4096);
                let mut decoder = HttpRequests::default();
                loop {
                    match s.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let mut close = false;
                    while let Ok(Some(req)) = decoder.decode(&mut buf, 8192) {
                        if !http_reply::answer(&mut out, &req) {
                            close = true;
                            break;
                        }
                    }
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                    if close {
                        return;
                    }
                }
            });
        }
    });
    ExitCode::SUCCESS
}
