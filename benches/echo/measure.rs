//! One run: a server started, loaded, measured and stopped; the
//! description of the method for docs/benchmarks.md; and `--drive`, the load
//! generator alone against a server started by hand.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use crate::loadgen::{LoadGen, Spec};
use crate::report::{self, Sample};
use crate::servers::{self, Env, Kind, Running, Scenario, Server};
use crate::{longwork, sys};

/// Rounds and windows.
pub struct Timing {
    pub rounds: usize,
    pub warmup: Duration,
    pub window: Duration,
    pub perf: Duration,
    pub idle_warmup: Duration,
    pub idle_window: Duration,
}

/// `--drive ADDR[,ADDR...] [--conns N] [--msg BYTES] [--depth D] [--secs S]`:
/// the load generator alone against a server started by hand (for `perf`,
/// `strace -c` or callgrind on the server). Prints one line of results.
pub fn drive(raw: &[String]) -> ExitCode {
    let arg = |name: &str| {
        raw.iter()
            .position(|a| a == name)
            .and_then(|i| raw.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: f64| arg(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let addrs: Result<Vec<std::net::SocketAddr>, _> = arg("--drive")
        .unwrap_or_default()
        .split(',')
        .map(str::parse)
        .collect();
    let Ok(addrs) = addrs else {
        eprintln!("echo --drive: give ADDR[,ADDR...], such as 127.0.0.1:50007");
        return ExitCode::from(2);
    };
    let spec = Spec {
        addrs,
        conns: num("--conns", 50.0) as usize,
        msg: num("--msg", 64.0) as usize,
        depth: num("--depth", 1.0) as usize,
        rate: None,
        window: 512,
        stall: Duration::from_secs(20),
    };
    let secs = Duration::from_secs_f64(num("--secs", 5.0));
    let result = LoadGen::connect(spec).and_then(|mut lg| {
        lg.run_for(Duration::from_millis(500))?;
        lg.run_for(secs)
    });
    match result {
        Ok(p) => {
            let s = p.elapsed.as_secs_f64();
            println!(
                "{} messages in {s:.2} s: {} msg/s, {:.1} MB/s, p50 {} µs, p99 {} µs, client CPU {:.0} %",
                p.messages,
                report::num(p.messages as f64 / s),
                p.bytes as f64 / s / 1e6,
                report::num(p.hist.value_at_quantile(0.5) as f64 / 1e3),
                report::num(p.hist.value_at_quantile(0.99) as f64 / 1e3),
                p.cpu.as_secs_f64() / s * 100.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo --drive: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn method(t: &Timing, client: &[usize], server: &[usize], nofile: u64, awake: bool) -> String {
    format!(
        "- Each server runs as its own process (its own process group), pinned with `sched_setaffinity` to \
core(s) {server:?}; the load generator (one thread, one mio loop, part of the bench) is pinned to core(s) {client:?}. \
The bench waits for the server's `listening on` line, runs the load, closes its connections and stops the server \
by its pid (SIGTERM; then SIGKILL to what is left of its process group). Open-file limit: {nofile}.\n\
- Connections are opened in a sliding window of at most 512 waiting for their first echo (backlogs are 1024), \
spread round-robin over the server's ports; the clock starts only once every connection has had its first echo, \
after a {:.1} s warm-up. Measurement window: {:.1} s ({:.1} s for idle9000 after {:.1} s warm-up). {} interleaved \
rounds: each round runs every server once, in the same order, each scenario in turn.\n\
- Every echoed byte is checked against what was sent; a mismatch fails the run. Latency is per message, from the \
moment it is queued to the moment its last byte is back, in an HDR histogram (3 significant digits). idle9000 \
sends on a fixed schedule and measures from the scheduled time.\n\
- Server CPU: the CPU time of the server's whole process tree over the measurement window, per million echoed \
messages: the tree from /proc (parent pids), each live process's CPU-time clock (`clock_getcpuclockid`: utime + stime \
of all its threads, to the nanosecond; /proc/PID/stat counts whole 10 ms ticks, which loses most of what 50 forked \
children do in a window) plus cutime + cstime from /proc/PID/stat for children already reaped. Client CPU: \
the load generator thread's own CPU time over the window; above 90 % the run is client-bound, and throughput then \
measures the client, not the server (compare CPU per message instead).\n\
- The machine may be shared: before each run the bench waits (up to 10 s) until other processes use less than \
0.15 cores, and it records what they used during each window (machine busy time from /proc/stat minus the server's \
and the load generator's); each scenario's table says how much that was.
- Syscalls per message (pingpong only): `perf stat -I 100 -e raw_syscalls:sys_enter -p <server pids> -- sleep {:.1}` \
in a window after the measured one (so tracing does not touch the CPU figures); system calls per second over its \
whole 100 ms intervals (the first and last are dropped), divided by the messages echoed per second in that window.\n\
- Memory (idle9000): VmHWM summed over the server's processes at the end of the window; per connection: (VmHWM − \
VmRSS before the first connection) / 9000. Kernel memory (socket buffers, thread stacks in the kernel) is not in RSS.\n\
- Reference servers set TCP_NODELAY on accepted sockets and use a backlog of 1024, as sockloop does; they read 4 KiB \
at a time (tokio's own echo example reads 1 KiB). The `sl_*` servers are sockloop's socketserver modes with an echo \
handler that serves the connection until the client closes: the `echo_server` example answers one line and closes, so \
it cannot carry a persistent connection. Servers log at `warn` (`RUST_LOG=warn`).\n\
- {}",
        t.warmup.as_secs_f64(),
        t.window.as_secs_f64(),
        t.idle_window.as_secs_f64(),
        t.idle_warmup.as_secs_f64(),
        t.rounds,
        t.perf.as_secs_f64(),
        if awake {
            "While the bench runs it holds /dev/cpu_dma_latency at 0 (PM QoS), so idle cores poll instead of halting: \
on a virtual machine a halted vCPU is slow to wake (see the round trips under Machine), and without this the figures \
measure the hypervisor. `--allow-idle` turns it off."
        } else {
            "Idle cores were allowed to halt (`--allow-idle`, or /dev/cpu_dma_latency not writable): on a virtual \
machine every wake-up across cores then costs what the round trips under Machine say."
        },
    )
}

/// One server, one scenario, one round.
pub fn run_one(
    srv: &Server,
    sc: &Scenario,
    env: &Env,
    t: &Timing,
    perf: bool,
    client_cores: &[usize],
) -> io::Result<Sample> {
    let mut server = Running::start(srv, sc, env)?;
    let roots = server.pids();
    let before = sys::sample_tree(&roots);
    if sc.kind == Kind::LongWork {
        let (reply, probe) = servers::long_reply(srv.key);
        let t0 = sys::sample_tree(&roots);
        let r = longwork::one_shot(
            &server.addrs,
            sc.conns,
            sc.msg,
            reply,
            probe,
            Duration::from_secs(60),
        )?;
        // Let the last handlers see end-of-stream and be reaped before counting CPU.
        std::thread::sleep(Duration::from_millis(100));
        let t1 = sys::sample_tree(&roots);
        server.check(srv.key)?;
        server.stop();
        let secs = r.makespan.as_secs_f64();
        return Ok(Sample {
            msgs_s: sc.conns as f64 / secs,
            p50: r.hist.value_at_quantile(0.5) as f64 / 1e3,
            p99: r.hist.value_at_quantile(0.99) as f64 / 1e3,
            p999: r.hist.value_at_quantile(0.999) as f64 / 1e3,
            client: r.cpu.as_secs_f64() / secs,
            makespan: secs,
            server_cpu: t1.cpu - t0.cpu,
            probe: r.probe.map(|(idle, busy)| {
                let q = |h: &hdrhistogram::Histogram<u64>, x| h.value_at_quantile(x) as f64 / 1e3;
                [q(&idle, 0.5), q(&idle, 0.99), q(&busy, 0.5), q(&busy, 0.99)]
            }),
            ..Sample::default()
        });
    }
    let spec = Spec {
        addrs: server.addrs.clone(),
        conns: sc.conns,
        msg: sc.msg,
        depth: sc.depth,
        rate: sc.rate,
        window: 512,
        stall: Duration::from_secs(20),
    };
    let mut lg = LoadGen::connect(spec)?;
    let (warmup, window) = if sc.kind == Kind::Idle {
        (t.idle_warmup, t.idle_window)
    } else {
        (t.warmup, t.window)
    };
    lg.run_for(warmup)?;
    let t0 = sys::sample_tree(&roots);
    let busy0 = sys::machine_busy();
    let p = lg.run_for(window)?;
    let busy1 = sys::machine_busy();
    let t1 = sys::sample_tree(&roots);
    server.check(srv.key)?;
    let mut syscalls = None;
    if perf {
        let pids = sys::tree_pids(&roots);
        let out = env.logs.join(format!("perf-{}.txt", srv.key));
        if let Some(mut run) = sys::Perf::start(&pids, t.perf, &out, client_cores) {
            let q = lg.run_until(|| run.done())?;
            if let Some(per_s) = run.rate() {
                syscalls = Some(per_s / (q.messages as f64 / q.elapsed.as_secs_f64()));
            }
        }
    }
    drop(lg);
    server.check(srv.key)?;
    server.stop();
    let secs = p.elapsed.as_secs_f64();
    if p.messages == 0 {
        return Err(io::Error::other(
            "no message echoed in the measurement window",
        ));
    }
    let q = |x: f64| p.hist.value_at_quantile(x) as f64 / 1e3;
    Ok(Sample {
        msgs_s: p.messages as f64 / secs,
        mb_s: p.bytes as f64 / secs / 1e6,
        p50: q(0.5),
        p99: q(0.99),
        p999: q(0.999),
        cpu_per_m: (t1.cpu - t0.cpu) / p.messages as f64 * 1e6,
        client: p.cpu.as_secs_f64() / secs,
        syscalls,
        hwm_mib: t1.hwm_kb as f64 / 1024.0,
        per_conn_kib: (t1.hwm_kb as f64 - before.rss_kb as f64) / sc.conns as f64,
        threads: t1.threads as f64,
        procs: t1.processes as f64,
        late: p.late as f64,
        others: ((busy1 - busy0) - (t1.cpu - t0.cpu) - p.cpu.as_secs_f64()).max(0.0) / secs,
        ..Sample::default()
    })
}
