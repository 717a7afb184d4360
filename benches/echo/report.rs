//! Medians with min–max over the rounds, ratios against the same run's
//! baseline, the Markdown tables, the targets and docs/benchmarks.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::servers::{Kind, Scenario, Server};

/// One server in one scenario in one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub msgs_s: f64,
    pub mb_s: f64,
    /// Latency, µs.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// Server CPU seconds per million messages.
    pub cpu_per_m: f64,
    /// Load generator CPU / wall time.
    pub client: f64,
    pub syscalls: Option<f64>,
    /// Peak RSS of the server tree, MiB; growth per connection, KiB.
    pub hwm_mib: f64,
    pub per_conn_kib: f64,
    pub threads: f64,
    pub procs: f64,
    /// Long work: seconds from first connect to last reply; server CPU seconds.
    pub makespan: f64,
    pub server_cpu: f64,
    /// Long work, offload servers: the loop's ping round trip (µs), p50 and
    /// p99 before the clients came, then p50 and p99 while they were served.
    pub probe: Option<[f64; 4]>,
    pub late: f64,
    /// Cores used by other processes on the machine during the window.
    pub others: f64,
}

/// Everything one run measured.
#[derive(Default)]
pub struct Results {
    /// (scenario index, server index) → one sample per round.
    pub cells: BTreeMap<(usize, usize), Vec<Sample>>,
    pub errors: Vec<(usize, usize, String)>,
    pub skipped: Vec<(usize, usize, String)>,
    /// User-space instructions per echoed message under callgrind (pingpong).
    pub instructions: Vec<(&'static str, Result<f64, String>)>,
    /// Why they were not counted.
    pub instructions_skipped: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub med: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stat(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Stat {
    let mut v: Vec<f64> = samples.iter().map(f).filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Stat {
            med: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        med,
        min: v[0],
        max: v[n - 1],
    }
}

/// 3 significant digits, with k / M for large numbers.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let (v, suffix) = match x.abs() {
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e4 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    let digits = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    format!("{v:.digits$}{suffix}")
}

fn cell(s: Stat) -> String {
    if !s.med.is_finite() {
        return "n/a".into();
    }
    if s.min == s.max {
        return num(s.med);
    }
    format!("{} ({}–{})", num(s.med), num(s.min), num(s.max))
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

pub struct Report<'a> {
    pub scenarios: &'a [Scenario],
    pub servers: &'a [Server],
    pub results: &'a Results,
}

impl Report<'_> {
    pub fn samples(&self, sc: &str, server: &str) -> Option<&[Sample]> {
        let si = self.scenarios.iter().position(|s| s.key == sc)?;
        let vi = self.servers.iter().position(|s| s.key == server)?;
        self.results.cells.get(&(si, vi)).map(|v| v.as_slice())
    }

    pub fn med(&self, sc: &str, server: &str, f: impl Fn(&Sample) -> f64) -> f64 {
        self.samples(sc, server)
            .map_or(f64::NAN, |s| stat(s, f).med)
    }

    /// Rows in server order: the ones measured, then failures; skips apart.
    fn rows(&self, si: usize) -> Vec<(usize, Result<&[Sample], &str>)> {
        let mut rows = Vec::new();
        for vi in 0..self.servers.len() {
            if let Some(s) = self.results.cells.get(&(si, vi)) {
                rows.push((vi, Ok(s.as_slice())));
            } else if let Some((_, _, e)) =
                self.results.errors.iter().find(|e| e.0 == si && e.1 == vi)
            {
                rows.push((vi, Err(e.as_str())));
            }
        }
        rows
    }

    /// The callgrind figure: instructions per echoed message (pingpong).
    pub fn instructions(&self) -> String {
        let mut out = String::new();
        if let Some(why) = &self.results.instructions_skipped {
            let _ = writeln!(
                out,
                "### Instructions per echoed message (callgrind)\n\nNot counted: {why}.\n"
            );
            return out;
        }
        if self.results.instructions.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "### Instructions per echoed message (callgrind)\n\n\
User-space instructions the server executes per echoed message under the pingpong load (64 B, 50 connections), \
counted by `valgrind --tool=callgrind`: (I(3 s) − I(1 s)) / (M(3 s) − M(1 s)) over two runs of the load, which \
cancels start-up and connection set-up. Exact and free of timing noise; system calls are not included.\n\n\
| server | instructions per message |\n|---|---|"
        );
        for (key, got) in &self.results.instructions {
            let cell = match got {
                Ok(n) => format!("{n:.0}"),
                Err(e) => format!("error: {e}"),
            };
            let _ = writeln!(out, "| `{key}` | {cell} |");
        }
        out.push('\n');
        out
    }

    /// The results: one table per scenario measured.
    pub fn tables(&self) -> String {
        let mut out = self.instructions();
        for (si, sc) in self.scenarios.iter().enumerate() {
            let rows = self.rows(si);
            let skipped: Vec<String> = self
                .results
                .skipped
                .iter()
                .filter(|s| s.0 == si)
                .map(|s| format!("`{}` ({})", self.servers[s.1].key, s.2))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "### {}: {}\n", sc.key, sc.what);
            match sc.kind {
                Kind::Load => self.load_table(&mut out, sc, &rows),
                Kind::Idle => self.idle_table(&mut out, sc, &rows),
                Kind::LongWork => self.long_table(&mut out, &rows),
            }
            let all: Vec<Sample> = rows
                .iter()
                .filter_map(|r| r.1.ok())
                .flatten()
                .cloned()
                .collect();
            if sc.kind != Kind::LongWork && !all.is_empty() {
                let o = stat(&all, |x| x.others);
                let noisy = all.iter().filter(|x| x.others > 0.25).count();
                let _ = writeln!(
                    out,
                    "\nOther processes on the machine during the windows: median {:.2} cores, max {:.2}; \
{noisy} of {} runs above 0.25.",
                    o.med,
                    o.max,
                    all.len()
                );
            }
            if !skipped.is_empty() {
                let _ = writeln!(out, "\nNot run here: {}.", skipped.join("; "));
            }
            out.push('\n');
        }
        out
    }

    fn base(&self, sc: &Scenario, server: &str, f: impl Fn(&Sample) -> f64) -> f64 {
        self.med(sc.key, server, f)
    }

    fn load_table(
        &self,
        out: &mut String,
        sc: &Scenario,
        rows: &[(usize, Result<&[Sample], &str>)],
    ) {
        let _ = writeln!(out, "| server | msg/s | × tokio_ct | MB/s | p50 µs | p99 µs | p99.9 µs | server CPU s / M msg | × tokio_ct | client CPU | syscalls / msg |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        let base_rate = self.base(sc, "tokio_ct", |s| s.msgs_s);
        let base_cpu = self.base(sc, "tokio_ct", |s| s.cpu_per_m);
        for (vi, r) in rows {
            let key = self.servers[*vi].key;
            let Ok(s) = r else {
                let _ = writeln!(
                    out,
                    "| {key} | **failed**: {} |||||||||| ",
                    r.unwrap_err().replace('|', "/")
                );
                continue;
            };
            let client = stat(s, |x| x.client * 100.0);
            let client = if client.med > 90.0 {
                format!("**{:.0} %** client-bound", client.med)
            } else {
                format!("{:.0} %", client.med)
            };
            let sys = if sc.syscalls {
                cell(stat(s, |x| x.syscalls.unwrap_or(f64::NAN)))
            } else {
                "–".into()
            };
            let _ = writeln!(
                out,
                "| {key} | {} | {} | {} | {} | {} | {} | {} | {} | {client} | {sys} |",
                cell(stat(s, |x| x.msgs_s)),
                ratio(stat(s, |x| x.msgs_s).med, base_rate),
                cell(stat(s, |x| x.mb_s)),
                cell(stat(s, |x| x.p50)),
                cell(stat(s, |x| x.p99)),
                cell(stat(s, |x| x.p999)),
                cell(stat(s, |x| x.cpu_per_m)),
                ratio(stat(s, |x| x.cpu_per_m).med, base_cpu),
            );
        }
    }

    fn idle_table(
        &self,
        out: &mut String,
        sc: &Scenario,
        rows: &[(usize, Result<&[Sample], &str>)],
    ) {
        let _ = writeln!(out, "| server | p50 µs | p99 µs | p99.9 µs | peak RSS MiB | × mio_raw | RSS / connection KiB | threads | processes | server CPU s / M msg | client CPU | late sends |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        let base_hwm = self.base(sc, "mio_raw", |s| s.hwm_mib);
        for (vi, r) in rows {
            let key = self.servers[*vi].key;
            let Ok(s) = r else {
                let _ = writeln!(
                    out,
                    "| {key} | **failed**: {} ||||||||||| ",
                    r.unwrap_err().replace('|', "/")
                );
                continue;
            };
            let _ = writeln!(
                out,
                "| {key} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} % | {} |",
                cell(stat(s, |x| x.p50)),
                cell(stat(s, |x| x.p99)),
                cell(stat(s, |x| x.p999)),
                cell(stat(s, |x| x.hwm_mib)),
                ratio(stat(s, |x| x.hwm_mib).med, base_hwm),
                cell(stat(s, |x| x.per_conn_kib)),
                num(stat(s, |x| x.threads).med),
                num(stat(s, |x| x.procs).med),
                cell(stat(s, |x| x.cpu_per_m)),
                stat(s, |x| x.client * 100.0).med,
                num(stat(s, |x| x.late).med),
            );
        }
    }

    fn long_table(&self, out: &mut String, rows: &[(usize, Result<&[Sample], &str>)]) {
        let _ = writeln!(out, "| server | at once | ideal s (clients × work / at once) | makespan s | × ideal | p50 ms | p99 ms | server CPU s | loop ping p50 / p99 µs, idle → busy |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for (vi, r) in rows {
            let key = self.servers[*vi].key;
            let Ok(s) = r else {
                let _ = writeln!(
                    out,
                    "| {key} | **failed**: {} |||||||| ",
                    r.unwrap_err().replace('|', "/")
                );
                continue;
            };
            let probe = if s.iter().any(|x| x.probe.is_some()) {
                let p = |i: usize| stat(s, |x| x.probe.map_or(f64::NAN, |p| p[i])).med;
                format!(
                    "{} / {} → {} / {}",
                    num(p(0)),
                    num(p(1)),
                    num(p(2)),
                    num(p(3))
                )
            } else {
                "–".into()
            };
            let workers = long_workers(key);
            let ideal = 200.0 * crate::servers::LONG_WORK.as_secs_f64() / workers as f64;
            let m = stat(s, |x| x.makespan);
            let _ = writeln!(
                out,
                "| {key} | {workers} | {ideal:.2} | {} | {} | {} | {} | {} | {probe} |",
                cell(m),
                ratio(m.med, ideal),
                cell(stat(s, |x| x.p50 / 1000.0)),
                cell(stat(s, |x| x.p99 / 1000.0)),
                cell(stat(s, |x| x.server_cpu)),
            );
        }
    }

    /// The targets the crate set itself, each met / missed with the measured ratio.
    pub fn targets(&self) -> String {
        let mut out = String::from("| target | measured | status |\n|---|---|---|\n");
        let mut row = |target: &str, measured: Option<String>, ok: bool| {
            let status = match (&measured, ok) {
                (None, _) => "not measured",
                (Some(_), true) => "met",
                (Some(_), false) => "**missed**",
            };
            let measured = measured.unwrap_or_else(|| "not run".into());
            let _ = writeln!(out, "| {target} | {measured} | {status} |");
        };
        let ok = |x: f64| x.is_finite();
        for sc in ["pingpong", "pipelined"] {
            let (mine, base) = (
                self.samples(sc, "select_echo"),
                self.samples(sc, "tokio_ct"),
            );
            let (Some(mine), Some(base)) = (mine, base) else {
                row(&format!("{sc}: select_echo server CPU per message ≤ 0.95× tokio_ct, throughput no lower"), None, false);
                continue;
            };
            let cpu = stat(mine, |s| s.cpu_per_m).med / stat(base, |s| s.cpu_per_m).med;
            let (r1, r0) = (stat(mine, |s| s.msgs_s), stat(base, |s| s.msgs_s));
            let rate = r1.med / r0.med;
            let overlap = if rate < 1.0 && r1.max >= r0.min {
                " (min–max ranges overlap)"
            } else {
                ""
            };
            row(
                &format!("{sc}: select_echo server CPU per message ≤ 0.95× tokio_ct, throughput no lower"),
                Some(format!("CPU {cpu:.2}×, throughput {rate:.2}×{overlap}")),
                cpu <= 0.95 && rate >= 1.0,
            );
        }
        let instr = self
            .results
            .instructions
            .iter()
            .find(|(k, _)| *k == "select_echo")
            .and_then(|(_, r)| r.as_ref().ok().copied());
        row(
            "pingpong: ≤ 500 user-space instructions per echoed message (select_echo, callgrind)",
            instr.map(|n| format!("{n:.0}")),
            instr.is_some_and(|n| n <= 500.0),
        );
        let sys = self.med("pingpong", "select_echo", |s| {
            s.syscalls.unwrap_or(f64::NAN)
        });
        row(
            "pingpong: ≤ 2.1 system calls per echoed message (select_echo)",
            ok(sys).then(|| format!("{sys:.2}")),
            sys <= 2.1,
        );
        let hwm = self.med("idle9000", "select_echo", |s| s.hwm_mib)
            / self.med("idle9000", "mio_raw", |s| s.hwm_mib);
        let per = self.med("idle9000", "select_echo", |s| s.per_conn_kib);
        row(
            "idle9000: select_echo peak RSS ≤ 0.5× the raw mio loop (≤ 1 KiB per idle connection)",
            ok(hwm).then(|| format!("{hwm:.2}× ({per:.2} KiB per connection)")),
            hwm <= 0.5 && per <= 1.0,
        );
        let x = self.med("conn1000", "select_echo", |s| s.msgs_s)
            / self.med("conn1000", "std_threads", |s| s.msgs_s);
        row(
            "conn1000: select_echo throughput ≥ 2× thread-per-connection (std_threads)",
            ok(x).then(|| format!("{x:.2}×")),
            x >= 2.0,
        );
        for key in ["offload_threads", "offload_procs"] {
            let m = self.med("longwork", key, |s| s.makespan);
            let ideal = 200.0 * crate::servers::LONG_WORK.as_secs_f64() / long_workers(key) as f64;
            let p = |i: usize| self.med("longwork", key, |s| s.probe.map_or(f64::NAN, |p| p[i]));
            let (idle99, busy99) = (p(1), p(3));
            row(
                &format!(
                    "longwork: {key} finishes in about clients × work / workers (≤ 1.2×), \
the loop's ping p99 unaffected (≤ 2× its idle p99, or < 1 ms)"
                ),
                ok(m).then(|| {
                    format!(
                        "{:.2}× ideal; ping p99 {} µs idle, {} µs busy",
                        m / ideal,
                        num(idle99),
                        num(busy99)
                    )
                }),
                m / ideal <= 1.2 && busy99 <= (2.0 * idle99).max(1000.0),
            );
        }
        out
    }
}

/// Requests served at once in the long-work scenario.
pub fn long_workers(key: &str) -> usize {
    match key {
        "thread_server" => 200,
        "fork_server" => 40,
        _ => crate::servers::LONG_WORKERS,
    }
}

/// The hand-written part of docs/benchmarks.md starts after this line and is
/// kept when the page is regenerated.
pub const KEEP_MARKER: &str =
    "<!-- Hand-written below this line: kept when the bench regenerates the page. -->";

pub struct Page<'a> {
    pub command: String,
    pub date: String,
    /// The code measured: `git rev-parse --short HEAD` (`-dirty` with changes).
    pub commit: String,
    pub machine: String,
    pub versions: String,
    pub method: String,
    pub report: &'a Report<'a>,
}

impl Page<'_> {
    pub fn render(&self, kept: Option<&str>) -> String {
        let r = self.report;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Benchmarks: sockloop beside threaded servers and tokio\n"
        );
        let _ = writeln!(out, "Generated by `cargo bench --bench echo` (benches/echo.rs); rerun it to refresh this page.");
        let _ = writeln!(out, "Everything above the hand-written section is regenerated; the plots are in docs/img/. Each section of the hand-written analysis is stamped with the run (date and commit) it was written for; regenerating marks every section written for another run as not reviewed (benches/echo/analysis.rs), and `cargo test` checks that the marks are there.\n");
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Commit: `{}`", self.commit);
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Software: {}\n", self.versions);
        let _ = writeln!(out, "## How it is measured\n\n{}\n", self.method);
        let _ = writeln!(out, "## Servers\n\n| key | what it is |\n|---|---|");
        for s in r.servers {
            if r.results.cells.keys().any(|k| r.servers[k.1].key == s.key)
                || r.results.errors.iter().any(|e| r.servers[e.1].key == s.key)
            {
                let _ = writeln!(out, "| `{}` | {} |", s.key, s.what);
            }
        }
        let _ = writeln!(
            out,
            "\n## Targets\n\nAgainst peers of the same run.\n\n{}",
            r.targets()
        );
        let _ = writeln!(
            out,
            "## Results\n\nMedian (min–max) over the rounds.\n\n{}",
            r.tables()
        );
        let _ = writeln!(out, "## Plots\n");
        for (file, what) in crate::plots::FILES {
            let _ = writeln!(out, "![{what}](img/{file})\n");
        }
        let _ = writeln!(out, "{KEEP_MARKER}");
        match kept {
            Some(k) => out.push_str(k),
            None => out.push_str("\n## Analysis\n\n(Write what the numbers mean here; this part survives regeneration.)\n"),
        }
        out
    }

    /// The run this page shows, for the analysis stamps.
    fn run(&self) -> crate::analysis::RunId {
        crate::analysis::RunId {
            date: self.date.clone(),
            commit: self.commit.clone(),
        }
    }

    /// Writes the page, keeping the hand-written part of the old one, each
    /// of its sections marked when it was written for another run (see
    /// benches/echo/analysis.rs); says on stderr which need review.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let kept = old.find(KEEP_MARKER).map(|i| {
            let (text, stale) =
                crate::analysis::review(&old[i + KEEP_MARKER.len() + 1..], &self.run());
            for s in &stale {
                eprintln!("echo bench: analysis not reviewed for this run: {s}");
            }
            if !stale.is_empty() {
                eprintln!(
                    "echo bench: {} analysis sections are marked in docs/benchmarks.md; check them \
against the new numbers and stamp them `{}`",
                    stale.len(),
                    self.run().stamp()
                );
            }
            text
        });
        std::fs::write(path, self.render(kept.as_deref()))
    }
}
