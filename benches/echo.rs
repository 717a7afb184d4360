//! `cargo bench --bench echo`: sockloop's echo servers beside thread-per-
//! connection servers, a hand-written mio loop, tokio and Python's
//! socketserver, each in its own process, in interleaved rounds; a Markdown
//! table on stdout, docs/benchmarks.md and SVG plots in docs/img/.
//!
//! ```text
//! cargo bench --bench echo                                   # everything (about 25 minutes)
//! cargo bench --bench echo -- --quick                        # a short smoke run, 1 round
//! cargo bench --bench echo -- --scenario pingpong,bulk --server select_echo,tokio_ct
//! cargo bench --bench echo -- --list                         # servers and scenarios
//! ```
//!
//! Without `--bench` in its arguments (cargo test running bench targets in
//! test mode) it prints one line and exits. `--serve NAME` runs one of the
//! reference servers (the bench starts itself that way); `--drive ADDR` runs
//! the load generator alone against a server started by hand, for profiling.
//! The modules are in benches/echo/ (a bench's crate root looks for modules
//! beside it, hence the `#[path]`s).

#[path = "echo/analysis.rs"]
mod analysis;
#[path = "echo/callgrind.rs"]
mod callgrind;
#[path = "echo/loadgen.rs"]
mod loadgen;
#[path = "echo/longwork.rs"]
mod longwork;
#[path = "echo/measure.rs"]
mod measure;
#[path = "echo/plots.rs"]
mod plots;
#[path = "echo/refs.rs"]
mod refs;
#[path = "echo/report.rs"]
mod report;
#[path = "echo/servers.rs"]
mod servers;
#[path = "echo/sys.rs"]
mod sys;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use measure::{method, run_one, Timing};
use report::{Page, Report, Results};
use servers::{Env, Server};

/// Echo servers side by side (docs/benchmarks.md).
#[derive(Parser)]
#[command(name = "echo", bin_name = "cargo bench --bench echo --")]
struct Args {
    /// A short smoke run: 1 round, short windows; docs/ is left alone.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (repeatable or comma-separated; default: all).
    #[arg(long = "scenario", value_delimiter = ',', value_name = "NAME")]
    scenarios: Vec<String>,
    /// Servers to run (repeatable or comma-separated; default: all).
    #[arg(long = "server", value_delimiter = ',', value_name = "NAME")]
    servers: Vec<String>,
    /// Interleaved rounds (default 5; --quick: 1).
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Measurement window of the load scenarios, seconds (default 2; --quick 0.5).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Write docs/benchmarks.md and docs/img/*.svg even for a filtered or quick run.
    #[arg(long, conflicts_with = "no_docs")]
    docs: bool,
    /// Do not write docs/ even for a full run.
    #[arg(long)]
    no_docs: bool,
    /// Do not pin server and load generator to different cores.
    #[arg(long)]
    no_pin: bool,
    /// Let idle cores halt (by default the bench holds /dev/cpu_dma_latency
    /// at 0 while it runs, so that a wake-up is not a virtual machine's halt).
    #[arg(long)]
    allow_idle: bool,
    /// Skip the callgrind count of instructions per message (pingpong; it
    /// runs select_echo, tokio_ct and mio_raw under valgrind, about a minute).
    #[arg(long)]
    no_callgrind: bool,
    /// List the servers and scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw.iter().any(|a| a == "--serve") {
        return serve(&raw);
    }
    if raw.iter().any(|a| a == "--drive") {
        return measure::drive(&raw);
    }
    if !raw.iter().any(|a| a == "--bench") {
        println!("echo: benchmark not run (no --bench); run it with `cargo bench --bench echo`");
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("echo bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--serve NAME --port P [--work-ms MS] [--workers N]`.
fn serve(raw: &[String]) -> ExitCode {
    let arg = |name: &str| {
        raw.iter()
            .position(|a| a == name)
            .and_then(|i| raw.get(i + 1))
            .cloned()
    };
    let name = arg("--serve").unwrap_or_default();
    let port = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let work = Duration::from_millis(arg("--work-ms").and_then(|p| p.parse().ok()).unwrap_or(0));
    let workers = arg("--workers").and_then(|p| p.parse().ok()).unwrap_or(4);
    match refs::serve(&name, port, work, workers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo --serve {name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `NAME VERSION` of a package from Cargo.lock.
fn locked_version(root: &Path, name: &str) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let at = lock.find(&format!("name = \"{name}\"\nversion = \""))?;
    let rest = &lock[at + name.len() + 21..];
    Some(format!("{name} {}", &rest[..rest.find('"')?]))
}

/// Picks the entries named in `filter` (all when empty); Err names an unknown one.
fn select<'a, T>(
    all: &'a [T],
    filter: &[String],
    key: impl Fn(&T) -> &str,
    what: &str,
) -> io::Result<Vec<&'a T>> {
    for f in filter {
        if !all.iter().any(|t| key(t) == f) {
            let names: Vec<&str> = all.iter().map(&key).collect();
            return Err(io::Error::other(format!(
                "unknown {what} {f:?}; known: {}",
                names.join(", ")
            )));
        }
    }
    Ok(all
        .iter()
        .filter(|t| filter.is_empty() || filter.iter().any(|f| f == key(t)))
        .collect())
}

fn run(args: &Args) -> io::Result<bool> {
    let cores = sys::allowed_cores();
    let all_servers = servers::all(cores.len().saturating_sub(1).max(2));
    let all_scenarios = servers::scenarios();
    if args.list {
        for s in &all_servers {
            println!("server   {:16} {}", s.key, s.what);
        }
        for s in &all_scenarios {
            println!("scenario {:16} {}", s.key, s.what);
        }
        return Ok(true);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chosen_servers = select(&all_servers, &args.servers, |s| s.key, "server")?;
    let chosen_scenarios = select(&all_scenarios, &args.scenarios, |s| s.key, "scenario")?;
    let q = args.quick;
    let window = Duration::from_secs_f64(args.duration.unwrap_or(if q { 0.5 } else { 2.0 }));
    let t = Timing {
        rounds: args.rounds.unwrap_or(if q { 1 } else { 5 }).max(1),
        warmup: Duration::from_millis(if q { 200 } else { 500 }),
        window,
        perf: Duration::from_millis(if q { 300 } else { 1000 }),
        idle_warmup: Duration::from_millis(if q { 500 } else { 1000 }),
        idle_window: window.mul_f64(2.5).max(Duration::from_secs(1)),
    };

    // What runs where, and what is skipped (and why).
    let mut results = Results::default();
    let mut plan: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut needed: Vec<&Server> = Vec::new();
    for sc in &chosen_scenarios {
        let si = all_scenarios.iter().position(|s| s.key == sc.key).unwrap();
        let mut vis = Vec::new();
        for srv in &chosen_servers {
            let vi = all_servers.iter().position(|s| s.key == srv.key).unwrap();
            match servers::applies(srv, sc, &root) {
                Ok(()) => {
                    vis.push(vi);
                    needed.push(srv);
                }
                Err(why) => results.skipped.push((si, vi, why)),
            }
        }
        if !vis.is_empty() {
            plan.push((si, vis));
        }
    }
    if plan.is_empty() {
        return Err(io::Error::other(
            "no server runs in the chosen scenarios (see --list)",
        ));
    }

    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target/release"));
    let logs = release.join("echo-bench");
    // Build before pinning: cargo gets every core.
    servers::build_examples(&needed, &root, &release.join("examples"), &logs.join("bin"))?;
    let nofile = sys::raise_nofile()?;
    let (client_cores, server_cores) = if cores.len() >= 2 && !args.no_pin {
        (vec![cores[0]], cores[1..].to_vec())
    } else {
        (cores.clone(), cores.clone())
    };
    sys::pin(0, &client_cores)?;
    let env = Env {
        examples: logs.join("bin"),
        server_cores: server_cores.clone(),
        logs,
    };
    std::fs::create_dir_all(&env.logs)?;
    let wake_halting = sys::wakeup_rtt(client_cores[0], server_cores[0], 3000).ok();
    let awake = if args.allow_idle {
        None
    } else {
        sys::hold_cpus_awake()
    };
    if awake.is_none() && !args.allow_idle {
        eprintln!("echo bench: cannot hold /dev/cpu_dma_latency (not root?): idle cores may halt between messages");
    }
    let perf = sys::perf_works();
    if !perf {
        eprintln!("echo bench: `perf stat -e raw_syscalls:sys_enter` does not count here: syscalls per message will be n/a");
    }

    let load = sys::wait_quiet(0.15, Duration::ZERO);
    if load >= 0.15 {
        eprintln!(
            "echo bench: other processes use {load:.1} cores of this machine; \
each run waits up to {} s for them to calm down, and the tables say how much they used",
            if q { 1 } else { 10 }
        );
    }
    let total: usize = plan.iter().map(|(_, v)| v.len()).sum::<usize>() * t.rounds;
    let mut progress = Progress {
        tty: io::stderr().is_terminal(),
        done: 0,
        total,
    };
    for (si, vis) in &plan {
        let sc = &all_scenarios[*si];
        for round in 0..t.rounds {
            for &vi in vis {
                let srv = &all_servers[vi];
                if results.errors.iter().any(|e| e.0 == *si && e.1 == vi) {
                    progress.done += 1;
                    continue; // failed in an earlier round: once is enough
                }
                progress.show(&format!(
                    "{} round {}/{}: {}: waiting for a quiet machine",
                    sc.key,
                    round + 1,
                    t.rounds,
                    srv.key
                ));
                let patience = Duration::from_secs(if q { 1 } else { 10 });
                sys::wait_quiet(0.15, patience);
                progress.show(&format!(
                    "{} round {}/{}: {} ...",
                    sc.key,
                    round + 1,
                    t.rounds,
                    srv.key
                ));
                match run_one(srv, sc, &env, &t, perf && sc.syscalls, &client_cores) {
                    Ok(s) => {
                        progress.done += 1;
                        progress.step(&format!(
                            "{} round {}/{}: {}: {} msg/s, p99 {} µs",
                            sc.key,
                            round + 1,
                            t.rounds,
                            srv.key,
                            report::num(s.msgs_s),
                            report::num(s.p99)
                        ));
                        results.cells.entry((*si, vi)).or_default().push(s);
                    }
                    Err(e) => {
                        progress.done += 1;
                        progress.clear();
                        eprintln!("echo bench: {} / {}: {e}", sc.key, srv.key);
                        results.errors.push((*si, vi, e.to_string()));
                    }
                }
            }
        }
    }
    progress.clear();
    instructions(
        args,
        &plan,
        &all_scenarios,
        &all_servers,
        &env,
        &mut results,
    );

    let rep = Report {
        scenarios: &all_scenarios,
        servers: &all_servers,
        results: &results,
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{}", rep.tables())?;
    writeln!(out, "Targets:\n\n{}", rep.targets())?;
    out.flush()?;

    let full = !q
        && args.servers.is_empty()
        && args.scenarios.is_empty()
        && args.rounds.is_none_or(|r| r >= 5);
    if (full || args.docs) && !args.no_docs {
        let mut cmd = String::from("cargo bench --bench echo");
        let user: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| *a != "--bench")
            .collect();
        if !user.is_empty() {
            cmd.push_str(" --");
            for a in &user {
                cmd.push(' ');
                cmd.push_str(a);
            }
        }
        let versions = [
            sys::version_of("rustc", "-V"),
            locked_version(&root, "tokio"),
            locked_version(&root, "mio"),
            sys::version_of("python3", "--version"),
            sys::version_of("perf", "--version"),
        ];
        let versions: Vec<String> = versions.into_iter().flatten().collect();
        let mut machine = sys::machine();
        let c = (client_cores[0], server_cores[0]);
        if let (Ok(x), Some(h)) = (sys::wakeup_rtt(c.0, c.1, 3000), wake_halting) {
            machine.push_str(&format!(
                ". A one-byte pipe round trip between the load generator's core and the server's: \
p50 {:.0} µs, p99 {:.0} µs {}; p50 {:.0} µs, p99 {:.0} µs when idle cores may halt",
                x.0,
                x.1,
                if awake.is_some() {
                    "as run (idle cores poll)"
                } else {
                    "as run"
                },
                h.0,
                h.1
            ));
        }
        let page = Page {
            command: cmd,
            date: sys::utc_now(),
            commit: git_commit(&root),
            machine,
            versions: versions.join(", "),
            method: method(&t, &client_cores, &server_cores, nofile, awake.is_some()),
            report: &rep,
        };
        page.write(&root.join("docs/benchmarks.md"))?;
        plots::write_all(&rep, &root.join("docs/img"))
            .map_err(|e| io::Error::other(format!("plots: {e}")))?;
        eprintln!("echo bench: wrote docs/benchmarks.md and docs/img/*.svg");
    }
    Ok(results.errors.is_empty())
}

/// Instructions per echoed message under callgrind, for the servers of
/// `callgrind::SERVERS` that run in pingpong (or why not).
fn instructions(
    args: &Args,
    plan: &[(usize, Vec<usize>)],
    scenarios: &[servers::Scenario],
    all: &[Server],
    env: &Env,
    results: &mut Results,
) {
    let Some((si, vis)) = plan.iter().find(|(si, _)| scenarios[*si].key == "pingpong") else {
        return;
    };
    let chosen: Vec<&Server> = vis
        .iter()
        .map(|&vi| &all[vi])
        .filter(|s| callgrind::SERVERS.contains(&s.key))
        .collect();
    if chosen.is_empty() {
        return;
    }
    let why_not = if args.no_callgrind {
        Some("--no-callgrind".to_string())
    } else {
        callgrind::unavailable()
    };
    if let Some(why) = why_not {
        eprintln!("echo bench: instructions per message (callgrind) not counted: {why}");
        results.instructions_skipped = Some(why);
        return;
    }
    for srv in chosen {
        eprintln!(
            "echo bench: {}: counting instructions per message under callgrind ...",
            srv.key
        );
        let got = callgrind::per_message(srv, &scenarios[*si], env).map_err(|e| e.to_string());
        match &got {
            Ok(n) => eprintln!("echo bench: {}: {n:.0} instructions per message", srv.key),
            Err(e) => eprintln!("echo bench: {}: callgrind: {e}", srv.key),
        }
        results.instructions.push((srv.key, got));
    }
}

/// Progress on stderr (stdout carries the tables, and is often piped): on a
/// terminal one line rewritten in place; elsewhere (a log, `2>&1 | tee`) a
/// plain line per measurement done, so a long run still shows where it is.
struct Progress {
    tty: bool,
    done: usize,
    total: usize,
}

impl Progress {
    /// What is under way: shown on a terminal only (a log would fill with it).
    fn show(&self, what: &str) {
        if self.tty {
            eprint!("\r\x1b[2K[{}/{}] {what}", self.done, self.total);
            let _ = io::stderr().flush();
        }
    }

    /// A measurement done: rewritten in place on a terminal, a line of its own elsewhere.
    fn step(&self, what: &str) {
        if self.tty {
            self.show(what);
        } else {
            eprintln!("echo bench: [{}/{}] {what}", self.done, self.total);
        }
    }

    fn clear(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

/// The commit the bench measures, `-dirty` when tracked files have changes
/// (the analysis stamps name it; "unknown" outside a git checkout).
fn git_commit(root: &std::path::Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if changes.is_empty() => head,
        _ => format!("{head}-dirty"),
    }
}
