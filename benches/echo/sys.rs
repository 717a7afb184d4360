//! What the bench asks the kernel: CPU affinity, the open-file limit, a
//! process tree's CPU time, memory and threads from /proc, the calling
//! thread's own CPU time, syscall counts through `perf stat`, and facts about
//! the machine for the report.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Cores this process may run on (its affinity mask at start).
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread (`pid` 0) or process to `cores`. Async-signal-safe
/// (one system call), so it may run between fork and exec.
pub fn pin(pid: libc::pid_t, cores: &[usize]) -> io::Result<()> {
    // SAFETY: as above; CPU_SET writes inside the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one (servers started later
/// inherit it). Returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    // SAFETY: plain struct in, plain struct out.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lim.rlim_cur)
    }
}

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One line of /proc/PID/stat: parent, reaped children's CPU ticks.
struct Stat {
    ppid: i32,
    child_ticks: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields from 3 (state) on: ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    let num = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        child_ticks: num(16)? + num(17)?,
    })
}

/// CPU time of process `pid` (every thread, live or exited), exact to the
/// nanosecond: its CPU-time clock. /proc/PID/stat's utime + stime are whole
/// clock ticks (10 ms), which loses most of the time of 50 forked children
/// that each ran a few milliseconds.
fn process_cpu(pid: i32) -> Option<f64> {
    // SAFETY: plain out-parameters.
    unsafe {
        let mut clk: libc::clockid_t = 0;
        if libc::clock_getcpuclockid(pid, &mut clk) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clk, &mut ts) != 0 {
            return None;
        }
        Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
    }
}

/// The processes of the trees rooted at `roots` (roots first).
pub fn tree_pids(roots: &[i32]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(st) = read_stat(pid) {
                children.entry(st.ppid).or_default().push(pid);
            }
        }
    }
    let mut out = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().copied());
        }
        i += 1;
    }
    out
}

/// A snapshot of a server's whole process tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct TreeSample {
    /// CPU time of every live process in the tree (all its threads, from its
    /// CPU-time clock) plus cutime + cstime (children already reaped), seconds.
    pub cpu: f64,
    pub processes: usize,
    pub threads: usize,
    /// Sums over the tree, KiB. Shared pages of forked children count once per process.
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn sample_tree(roots: &[i32]) -> TreeSample {
    let hz = clock_ticks();
    let mut s = TreeSample::default();
    for pid in tree_pids(roots) {
        let Some(st) = read_stat(pid) else { continue };
        let Some(own) = process_cpu(pid) else {
            continue;
        }; // gone meanwhile
        s.cpu += own + st.child_ticks as f64 / hz;
        s.processes += 1;
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                let val = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("Threads:") {
                    s.threads += val(line) as usize;
                } else if line.starts_with("VmRSS:") {
                    s.rss_kb += val(line);
                } else if line.starts_with("VmHWM:") {
                    s.hwm_kb += val(line);
                }
            }
        }
    }
    s
}

/// `perf stat` counting the system calls of `pids` for `window` in 100 ms
/// intervals, started in the background. The first and the last interval are
/// dropped (perf attaches and detaches in them), so the rate comes from whole
/// intervals of steady load only.
pub struct Perf {
    child: Child,
    out: PathBuf,
}

impl Perf {
    pub fn start(pids: &[i32], window: Duration, out: &Path, cores: &[usize]) -> Option<Perf> {
        let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let mut cmd = Command::new("perf");
        cmd.args([
            "stat",
            "-I",
            "100",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter",
            "-o",
        ])
        .arg(out)
        .args(["-p", &list.join(","), "--", "sleep"])
        .arg(format!("{:.3}", window.as_secs_f64()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().ok()?;
        // perf runs beside the load generator, off the server's cores.
        let _ = pin(child.id() as i32, cores);
        Some(Perf {
            child,
            out: out.to_path_buf(),
        })
    }

    /// Whether it has finished (never blocks).
    pub fn done(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// System calls per second over the whole intervals, once finished;
    /// None if perf could not count or the window held fewer than 3 intervals.
    pub fn rate(mut self) -> Option<f64> {
        let status = self.child.wait().ok()?;
        let text = fs::read_to_string(&self.out).ok()?;
        let _ = fs::remove_file(&self.out);
        if !status.success() {
            return None;
        }
        // `   0.100172421,1604,,raw_syscalls:sys_enter,...`: end of interval, count.
        let mut iv: Vec<(f64, f64)> = Vec::new();
        for l in text
            .lines()
            .filter(|l| l.contains("raw_syscalls:sys_enter"))
        {
            let mut f = l.split(',');
            let t: f64 = f.next()?.trim().parse().ok()?;
            let n: f64 = f.next()?.trim().parse().unwrap_or(0.0); // <not counted>: none
            iv.push((t, n));
        }
        if iv.len() < 3 {
            return None;
        }
        let mid = &iv[1..iv.len() - 1];
        let secs = mid[mid.len() - 1].0 - iv[0].0;
        let count: f64 = mid.iter().map(|x| x.1).sum();
        (secs > 0.0 && count > 0.0).then_some(count / secs)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `perf stat -e raw_syscalls:sys_enter` counts here (tried once on `true`).
pub fn perf_works() -> bool {
    Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter",
            "--",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map(|o| {
            let err = String::from_utf8_lossy(&o.stderr);
            o.status.success()
                && err.lines().any(|l| {
                    l.contains("raw_syscalls") && l.starts_with(|c: char| c.is_ascii_digit())
                })
        })
        .unwrap_or(false)
}

/// CPU model, core count, kernel and memory, for the report.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    // Not available_parallelism(): the bench has pinned itself to one core by now.
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kb: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!(
        "{model}, {cores} cores, {:.0} GiB, Linux {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// First line of `program --version` (or `-V`), if it runs.
pub fn version_of(program: &str, flag: &str) -> Option<String> {
    let o = Command::new(program).arg(flag).output().ok()?;
    let text = if o.stdout.is_empty() {
        o.stderr
    } else {
        o.stdout
    };
    let s = String::from_utf8_lossy(&text);
    s.lines().next().map(|l| l.trim().to_string())
}

/// `2026-11-23 17:40 UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    format!(
        "{year}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60
    )
}

/// Median and p99 (µs) of a one-byte round trip over two pipes between a
/// thread pinned to core `a` and one pinned to core `b`: what a wake-up
/// across cores costs on this machine (on virtual machines, a lot).
pub fn wakeup_rtt(a: usize, b: usize, n: usize) -> io::Result<(f64, f64)> {
    use std::io::{Read, Write};
    let (mut to_b_r, mut to_b_w) = io::pipe()?;
    let (mut to_a_r, mut to_a_w) = io::pipe()?;
    let echo = std::thread::spawn(move || -> io::Result<()> {
        pin(0, &[b])?;
        let mut byte = [0u8; 1];
        for _ in 0..n {
            to_b_r.read_exact(&mut byte)?;
            to_a_w.write_all(&byte)?;
        }
        Ok(())
    });
    let timer = std::thread::spawn(move || -> io::Result<Vec<f64>> {
        pin(0, &[a])?;
        let mut byte = [0u8; 1];
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = std::time::Instant::now();
            to_b_w.write_all(&byte)?;
            to_a_r.read_exact(&mut byte)?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(v)
    });
    let mut v = timer.join().map_err(|_| io::Error::other("panicked"))??;
    echo.join().map_err(|_| io::Error::other("panicked"))??;
    v.sort_by(|x, y| x.total_cmp(y));
    Ok((v[n / 2], v[n * 99 / 100]))
}

/// Asks the kernel (PM QoS) for a CPU wake-up latency of 0 while the
/// returned file is open: idle cores poll instead of halting. On a virtual
/// machine a halted vCPU takes tens of microseconds (milliseconds at p99) to
/// wake, which would swamp every latency and throughput figure with the
/// hypervisor's scheduling. None when /dev/cpu_dma_latency is not writable.
pub fn hold_cpus_awake() -> Option<File> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .ok()?;
    f.write_all(&0i32.to_ne_bytes()).ok()?;
    Some(f)
}

/// Busy time of the whole machine so far (user, nice, system, irq, softirq
/// from /proc/stat's first line), seconds of CPU.
pub fn machine_busy() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    (get(0) + get(1) + get(2) + get(5) + get(6)) as f64 / clock_ticks()
}

/// Waits (up to `max`) until the other processes on the machine use less
/// than `cores` cores over 300 ms: other people's builds on a shared machine
/// would be measured too. Returns the load last seen.
pub fn wait_quiet(cores: f64, max: Duration) -> f64 {
    let start = std::time::Instant::now();
    loop {
        let (b0, t0) = (machine_busy(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(300));
        let load = (machine_busy() - b0) / t0.elapsed().as_secs_f64();
        if load < cores || start.elapsed() >= max {
            return load;
        }
    }
}
