//! Zero-downtime restart: the running process starts its successor (its
//! own binary, same arguments) and hands it its listening and datagram
//! sockets by socket activation; once the successor says it is ready, the
//! old process stops accepting and drains its connections gracefully.
//!
//! The sockets themselves pass, not their addresses: the kernel's accept
//! queue is shared by both processes for a moment and then belongs to the
//! successor alone, so no connection is refused or reset at the switch.
//!
//! The successor reports ready by writing a byte to a pipe whose descriptor
//! is named in `SOCKLOOP_READY_FD` ([`notify_ready`]); it exits before
//! that, or is not ready within the timeout, and the old process goes on
//! serving (and logs why).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::activation::{LISTEN_FDS_START, READY_FD_VAR};
use crate::reactor::Source;
use crate::Reactor;

/// Tells whoever waits for this process to serve that it is ready: call it
/// once every socket is served (after printing `listening on` lines).
///
/// - The process that started this one by a restart: a byte on the pipe
///   named in `SOCKLOOP_READY_FD` (taken from the environment by
///   [`activation::take`](crate::activation::take), which must run first);
///   a second call does nothing.
/// - systemd (`Type=notify`): `READY=1` and `MAINPID=` this pid on
///   `NOTIFY_SOCKET` (`sd_notify(3)`), so that after a restart systemd
///   follows the successor as the service's main process (the unit needs
///   `NotifyAccess=all`, as the successor is not the process it started).
///
/// Returns whether there was anyone to tell (a `NOTIFY_SOCKET` that cannot
/// be reached is logged, not an error).
pub fn notify_ready() -> io::Result<bool> {
    // A service manager that cannot be told is no reason to stop serving.
    let systemd = notify_systemd(&format!("READY=1\nMAINPID={}\n", std::process::id()))
        .unwrap_or_else(|e| {
            log::warn!("cannot tell the service manager we are ready: {e}");
            false
        });
    let Some(pipe) = crate::activation::take_ready_pipe() else {
        return Ok(systemd);
    };
    let byte = b"R";
    // SAFETY: writes one byte from a valid buffer.
    let n = unsafe { libc::write(pipe.as_raw_fd(), byte.as_ptr().cast(), 1) };
    if n != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Sends `state` to systemd's `NOTIFY_SOCKET` (a path, or `@name` in the
/// abstract namespace), if set; whether it was.
fn notify_systemd(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        }
        _ => socket.send_to(state.as_bytes(), &target),
    };
    sent.map_err(|e| io::Error::new(e.kind(), format!("NOTIFY_SOCKET {target:?}: {e}")))?;
    Ok(true)
}

/// How a restart goes: build it with [`RestartOptions::new`] and set fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RestartOptions {
    /// How long the old process's connections get to finish once the
    /// successor is ready ([`Reactor::shutdown_graceful`]).
    pub grace: Duration,
    /// How long the successor may take to report ready before it is
    /// killed and the old process serves on (default 30 s).
    pub ready_timeout: Duration,
}

impl RestartOptions {
    /// `grace` for the old connections, the default ready timeout.
    pub fn new(grace: Duration) -> RestartOptions {
        RestartOptions {
            grace,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

impl Reactor {
    /// Restarts on SIGUSR2 ([`restart`](Reactor::restart)).
    pub fn restart_on_signal(&mut self, opts: RestartOptions) -> io::Result<()> {
        crate::activation::remember_program();
        let busy = Arc::new(AtomicBool::new(false));
        self.on_signal(&[signal_hook::consts::SIGUSR2], move |reactor, _| {
            if busy.swap(true, Ordering::AcqRel) {
                log::warn!("restart: one is under way already; signal ignored");
                return;
            }
            let done = busy.clone();
            if let Err(e) = reactor.restart(&opts, move || done.store(false, Ordering::Release)) {
                log::error!("restart failed: {e}; serving on");
                busy.store(false, Ordering::Release);
            }
        })
    }

    /// Starts this program again (as it was started: `argv[0]`, resolved
    /// against the start-up directory or `PATH`, so a switched `current`
    /// symlink runs the new release; same arguments, same environment) with this reactor's listening and datagram sockets
    /// passed by socket activation, and returns. When the successor reports
    /// ready ([`notify_ready`]) this reactor stops accepting and shuts down
    /// gracefully, so [`run`](Reactor::run) returns once its connections are
    /// done. If the successor exits first or is not ready in time, it is
    /// reaped (killed if need be), the failure is logged, `failed` is called
    /// on the loop thread, and this reactor serves on.
    ///
    /// Fails at once (serving on) if the successor cannot be started.
    pub fn restart(
        &mut self,
        opts: &RestartOptions,
        failed: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let fds: Vec<RawFd> = self
            .sources
            .iter()
            .filter_map(|(_, s)| match s {
                Source::Listener(l) => Some(l.raw_fd()),
                Source::Datagram(d) => Some(d.raw_fd()),
                _ => None,
            })
            .collect();
        if fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nothing to hand over: no listening socket",
            ));
        }
        let started = Instant::now();
        let (ready_r, pid) = spawn_successor(&fds)?;
        log::info!(
            "restart: started successor, pid {pid}, with {} sockets; waiting for it to be ready",
            fds.len()
        );
        let handle = self.handle();
        let (grace, timeout) = (opts.grace, opts.ready_timeout);
        // Who decides the successor's fate: the waiting thread (ready, or
        // failed) or this reactor told to stop first (then it is killed, not
        // left running as an orphan holding the sockets).
        let decided = Arc::new(AtomicBool::new(false));
        let stopped = decided.clone();
        self.on_stop.push(Box::new(move || {
            if stopped.swap(true, Ordering::AcqRel) {
                return;
            }
            // SAFETY: signals our own child, not reaped yet (we decide).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let status = reap(pid);
            log::warn!(
                "restart: told to stop before successor {pid} was ready: terminated it ({status})"
            );
        }));
        std::thread::Builder::new()
            .name("restart".into())
            .spawn(move || {
                let result = wait_ready(&ready_r, timeout);
                if decided.swap(true, Ordering::AcqRel) {
                    return; // stopping: the loop killed and reaped it
                }
                match result {
                    Ok(()) => {
                        log::info!(
                            "restart: successor {pid} ready after {:?}; stopping accepting, draining",
                            started.elapsed()
                        );
                        let _ = handle.post(move |r| r.hand_over(grace));
                    }
                    Err(e) => {
                        let status = reap(pid);
                        log::error!("restart: successor {pid} {e} ({status}); serving on");
                        let _ = handle.post(move |_| failed());
                    }
                }
            })?;
        Ok(())
    }

    /// The successor has the sockets: stop serving them here (leaving Unix
    /// socket files in place) and drain.
    fn hand_over(&mut self, grace: Duration) {
        for (_, source) in self.sources.iter_mut() {
            match source {
                Source::Listener(l) => l.keep_file(),
                Source::Datagram(d) => d.keep_file(),
                _ => {}
            }
        }
        self.shutdown_graceful(grace);
    }
}

/// Waits for the ready byte: an error says what happened instead.
fn wait_ready(pipe: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let left = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("was not ready within {timeout:?}"),
            ));
        }
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue; // timeout (checked above) or EINTR
        }
        let mut byte = [0u8; 1];
        // SAFETY: reads at most one byte into a valid buffer.
        let n = unsafe { libc::read(pipe.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        return match n {
            1 => Ok(()),
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "exited (or closed its ready pipe) before it was ready",
            )),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                Err(e)
            }
        };
    }
}

/// Reaps a successor that failed, killing it if it still runs; says how it ended.
fn reap(pid: libc::pid_t) -> String {
    let mut status = 0;
    for attempt in 0..50 {
        // SAFETY: waits for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                format!("exit status {}", libc::WEXITSTATUS(status))
            } else {
                format!("killed by signal {}", libc::WTERMSIG(status))
            };
        }
        if r < 0 {
            return format!("not reaped: {}", io::Error::last_os_error());
        }
        if attempt == 10 {
            // SAFETY: signals our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "did not end after SIGKILL".into()
}

/// What a restart executes: the program as it was started, so that a
/// deployment that switched a symlink (`current -> releases/v2`) or
/// replaced the file runs the new release; `/proc/self/exe` (the binary
/// this process runs) only when that path no longer names an executable.
fn program() -> io::Result<OsString> {
    if let Some(started) = crate::activation::started_as() {
        let found = if started.is_absolute() {
            Some(started.clone()).filter(|p| executable(p))
        } else {
            search_path(started)
        };
        match found {
            Some(path) => return Ok(path.into_os_string()),
            None => log::warn!(
                "restart: {} (as started) is no executable now; running /proc/self/exe",
                started.display()
            ),
        }
    }
    let mut exe = std::env::current_exe()?.into_os_string();
    // The binary was replaced on disk (a new release): run the new one.
    if let Some(path) = exe.as_bytes().strip_suffix(b" (deleted)") {
        exe = OsString::from(std::ffi::OsStr::from_bytes(path));
    }
    Ok(exe)
}

/// `name` looked up in `PATH` as `execvp` does (an empty entry is the
/// working directory; no `PATH`: `/bin:/usr/bin`).
fn search_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(name)
            } else {
                dir.join(name)
            }
        })
        .find(|p| executable(p))
}

fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path.
    path.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// Forks and executes this binary with `fds` at 3, 4, … and the ready
/// pipe's write end after them; returns the pipe's read end and the pid.
fn spawn_successor(fds: &[RawFd]) -> io::Result<(OwnedFd, libc::pid_t)> {
    let n = fds.len() as RawFd;
    let ready_target = LISTEN_FDS_START + n;
    let exe = program()?;
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
    };
    let path = cstr(exe.as_bytes())?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| cstr(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| {
            !matches!(
                k.as_bytes(),
                b"LISTEN_FDS" | b"LISTEN_PID" | b"LISTEN_FDNAMES" | b"SOCKLOOP_READY_FD"
            )
        })
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<io::Result<_>>()?;
    env.push(cstr(format!("LISTEN_FDS={n}").as_bytes())?);
    env.push(cstr(format!("{READY_FD_VAR}={ready_target}").as_bytes())?);
    // Filled in by the child, which alone knows its pid: digits, then NUL.
    let mut listen_pid = b"LISTEN_PID=".to_vec();
    let digits_at = listen_pid.len();
    listen_pid.resize(digits_at + 24, 0);
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(listen_pid.as_ptr().cast());
    envp.push(std::ptr::null());

    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both ends were just created and are ours.
    let (ready_r, ready_w) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let mut sources: Vec<RawFd> = fds.to_vec();
    sources.push(ready_w.as_raw_fd());
    let pid_buf = listen_pid.as_mut_ptr();

    // SAFETY: after fork the child calls only async-signal-safe functions
    // (fcntl, dup2, getpid, execve, _exit) on memory prepared before the
    // fork, then executes or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this is the child.
        unsafe { child(&mut sources, pid_buf.add(digits_at), &path, &argv, &envp) }
    }
    drop(ready_w);
    Ok((ready_r, pid))
}

/// The child between fork and exec. Moves the sockets above the target
/// range first, so that placing one cannot overwrite another.
///
/// # Safety
/// Only in the child of `fork`, with buffers prepared before it.
unsafe fn child(
    sources: &mut [RawFd],
    pid_digits: *mut u8,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let high = LISTEN_FDS_START + sources.len() as RawFd;
    for fd in sources.iter_mut() {
        let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, high);
        if moved < 0 {
            libc::_exit(126);
        }
        *fd = moved;
    }
    for (i, &fd) in sources.iter().enumerate() {
        // dup2 clears close-on-exec on the copy.
        if libc::dup2(fd, LISTEN_FDS_START + i as RawFd) < 0 {
            libc::_exit(126);
        }
    }
    let mut pid = libc::getpid() as u64;
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (pid % 10) as u8;
        len += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for i in 0..len {
        *pid_digits.add(i) = digits[len - 1 - i];
    }
    *pid_digits.add(len) = 0;
    libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    libc::_exit(127);
}
