//! A fork server, as Python multiprocessing's `forkserver`: a small process
//! forked once, early, that forks every later child on request.
//!
//! fork() copies only the calling thread. Any lock another thread held at
//! that moment (the allocator's, `log`'s, stdout's, a user's mutex) stays
//! held forever in the child, and the first child that takes it hangs. A
//! server that forks a child per request, or replaces a crashed worker, does
//! so long after the program started threads (a `spawn`ed server, offload
//! threads, a logger's thread, the user's own). So the fork happens once, at
//! start-up, into a process that never starts a thread and runs no user code
//! of its own; every later child is forked from that quiet copy, and the
//! sockets the child must serve are passed to it over a Unix socket with
//! `SCM_RIGHTS`.
//!
//! Commands are `SOCK_SEQPACKET` messages (one command per message, its
//! descriptors attached): `F` forks a child running the job with the
//! descriptors and the payload, answered with the child's pid (or
//! `-errno`); `C` replaces the configuration every later child gets; `K`
//! signals one live child, `A` every live child. Children are reaped by the
//! fork server (signalfd for SIGCHLD), which reports `[pid][status]` records
//! on an optional stream socket. End of stream on the command socket ends
//! the fork server; its children go on to finish their requests.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::Mutex;
use std::time::Duration;

use super::serve::{serve, PANICKED};
use super::wire::{send_message, seqpacket_pair, CONFIGURE, FORK, SIGNAL, SIGNAL_ALL};

/// What a forked child runs: its descriptors, the payload of its `F`
/// command and the last configuration; returns the exit status.
pub(crate) type Job = Box<dyn Fn(Vec<OwnedFd>, &[u8], &[u8]) -> i32>;

/// Signals that stop a program: the fork server ignores them (the parent
/// decides what becomes of the children, and must hear of their exits).
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// How long the parent waits for the pid of a child it asked for. A fork
/// takes milliseconds; a fork server that does not answer within this is
/// taken for broken and killed (the loop that asked must not stay blocked,
/// and a late answer must never be read as the next request's).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The parent's side: the command socket and the fork server's pid.
pub(crate) struct ForkServer {
    /// The command socket. Commands that need no answer (signals) are
    /// sent on it at any time (a seqpacket message is sent whole).
    ctl: OwnedFd,
    /// A socket only the fork server holds the other end of (its children
    /// close it): end of stream on it says the fork server is gone, as an
    /// event for a loop to wait on (see [`take_lifeline`](Self::take_lifeline)).
    lifeline: Mutex<Option<UnixStream>>,
    /// Held while a fork is asked for and answered, so that two threads'
    /// answers cannot cross: a signal never waits for a fork's answer.
    asking: Mutex<()>,
    pid: libc::pid_t,
    /// Why the fork server is gone (it exited, we killed it after it did
    /// not answer, or the server closed), once set: it is reaped or being
    /// reaped by whoever set it, and no child can be forked any more.
    gone: Mutex<Option<String>>,
}

impl ForkServer {
    /// Forks the fork server. It first closes every descriptor the crate
    /// owns in this process (`net/owned.rs`: never anyone else's) and
    /// `close` (the caller's own, not listed yet), and writes exit reports
    /// to `reports` if given.
    ///
    /// Call it while the process has no other thread if you can: this one
    /// fork is the only one taken from the program itself. stdout and stderr
    /// are locked across it, so that no other thread holds them at the fork.
    ///
    /// With `kill_children`, the fork server kills its children (SIGKILL)
    /// and reaps them before it ends (a process pool's workers); without, it
    /// leaves them to finish (a forking server's requests).
    pub(crate) fn start(
        close: &[RawFd],
        reports: Option<RawFd>,
        kill_children: bool,
        job: Job,
    ) -> io::Result<ForkServer> {
        let (ours, theirs) = seqpacket_pair()?;
        ours_timeout(&ours)?;
        let (lifeline, its_lifeline) = UnixStream::pair()?;
        let threads = other_threads();
        if threads > 0 {
            // The one fork taken from the program copies whatever locks
            // these threads hold right now into every child.
            log::warn!(
                "starting a fork server while {threads} other thread(s) run: build forking \
                 servers and process pools before starting threads"
            );
        }
        // Every descriptor of the crate in this process (every reactor's
        // sockets and poll descriptor), taken before the fork (the child
        // takes no lock).
        let mut close = [close, &crate::net::owned::listed()].concat();
        close.retain(|&fd| fd != theirs.as_raw_fd() && Some(fd) != reports);
        // The stop signals are held back across the fork, so that one sent
        // to the fork server (or its group) before it ignores them does
        // not kill it: once ignored, a pending one is discarded.
        // SAFETY: plain sigset operations on values we own; the mask is
        // this thread's, restored below in both processes.
        let saved = unsafe {
            let mut stops: libc::sigset_t = mem::zeroed();
            let mut saved: libc::sigset_t = mem::zeroed();
            libc::sigemptyset(&mut stops);
            for signal in STOP_SIGNALS {
                libc::sigaddset(&mut stops, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &stops, &mut saved);
            saved
        };
        let out = io::stdout().lock();
        let err = io::stderr().lock();
        // SAFETY: fork has no memory-safety preconditions of its own. The
        // child runs `serve`, which only forks, signals and reaps, and ends
        // in `_exit` whatever happens: it never returns into our frames.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop((out, err));
            // SAFETY: this single-threaded process's own dispositions and
            // mask (its children restore the defaults).
            unsafe {
                for signal in STOP_SIGNALS {
                    libc::signal(signal, libc::SIG_IGN);
                }
                libc::pthread_sigmask(libc::SIG_SETMASK, &saved, ptr::null_mut());
            }
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                drop((ours, lifeline));
                for &fd in &close {
                    // SAFETY: `close` lists descriptors the crate owns; the
                    // objects that own them are never used in this process,
                    // which runs only `serve` and leaves with `_exit`.
                    unsafe { libc::close(fd) };
                }
                // Ready: the parent returns only now, so that a socket it
                // closes next is not still open here.
                // SAFETY: sends from a buffer we own.
                unsafe {
                    libc::send(
                        theirs.as_raw_fd(),
                        0i32.to_ne_bytes().as_ptr().cast(),
                        4,
                        libc::MSG_NOSIGNAL,
                    )
                };
                serve(theirs, its_lifeline.into(), reports, kill_children, &job)
            }));
            // SAFETY: ends the process without unwinding into, or running
            // the destructors of, the parent's state it only copied.
            unsafe { libc::_exit(if outcome.is_ok() { 0 } else { PANICKED }) }
        }
        drop((out, err));
        // SAFETY: restores this thread's mask as it was.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, ptr::null_mut()) };
        drop(its_lifeline);
        if pid == -1 {
            return Err(io::Error::last_os_error());
        }
        let forks = ForkServer {
            ctl: ours,
            lifeline: Mutex::new(Some(lifeline)),
            asking: Mutex::new(()),
            pid,
            gone: Mutex::new(None),
        };
        match forks.answer() {
            Ok(0) => Ok(forks),
            Ok(_) => Err(forks.broken("the fork server did not start".into())),
            Err(e) => Err(forks.broken(format!("the fork server did not start: {e}"))),
        }
    }

    /// Asks for a child that runs the job with `fds` and `payload`;
    /// returns its pid. The descriptors stay open here: close them after.
    ///
    /// A fork server that cannot be reached or does not answer within
    /// [`ANSWER_TIMEOUT`] is killed and reaped: every later call fails at
    /// once, and [`gone`](Self::gone) says why.
    pub(crate) fn fork(&self, fds: &[BorrowedFd<'_>], payload: &[u8]) -> io::Result<libc::pid_t> {
        if let Some(why) = self.gone() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, why));
        }
        let mut message = Vec::with_capacity(1 + payload.len());
        message.push(FORK);
        message.extend_from_slice(payload);
        let asking = self.asking.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = send_message(self.ctl.as_raw_fd(), &message, fds) {
            drop(asking);
            return Err(self.broken(format!("the fork server is gone: {e}")));
        }
        let answer = self.answer();
        drop(asking);
        match answer {
            Ok(pid) if pid > 0 => Ok(pid),
            Ok(errno) => Err(io::Error::from_raw_os_error(-errno)),
            // A late answer would be read as the next request's: the
            // channel is never used again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(self.broken(format!(
                "fork server did not answer within {ANSWER_TIMEOUT:?}"
            ))),
            Err(e) => Err(self.broken(format!("fork server did not answer: {e}"))),
        }
    }

    /// One 4-byte answer, waited for at most [`ANSWER_TIMEOUT`].
    fn answer(&self) -> io::Result<i32> {
        let ctl = &self.ctl;
        let mut answer = [0u8; 4];
        let n = loop {
            // SAFETY: reads into a buffer we own, of the length given.
            let n = unsafe { libc::recv(ctl.as_raw_fd(), answer.as_mut_ptr().cast(), 4, 0) };
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        match n {
            4 => Ok(i32::from_ne_bytes(answer)),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the fork server is gone",
            )),
        }
    }

    /// Why the fork server is gone, if it is: checks (without waiting)
    /// whether it exited, and reaps it.
    pub(crate) fn gone(&self) -> Option<String> {
        let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        if gone.is_none() {
            let mut status = 0;
            // SAFETY: waits (without blocking) for our own child only.
            let reaped = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if reaped == self.pid {
                *gone = Some(describe_exit(self.pid, status));
            }
        }
        gone.clone()
    }

    /// Reaps a fork server that failed us (killed first if it does not end
    /// on its own within a moment: it may be stopped, or stuck); the error
    /// to return.
    fn broken(&self, why: String) -> io::Error {
        let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        if gone.is_none() {
            // A fork server that closed its socket is dying: wait a moment
            // for it, so that how it ended is what we report.
            let ended = reap_within(self.pid, Duration::from_millis(200));
            let why = match ended {
                Some(Some(status)) => format!("{} ({why})", describe_exit(self.pid, status)),
                Some(None) => why,
                None => {
                    // SAFETY: our own child, not reaped yet.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    let _ = reap_within(self.pid, Duration::MAX);
                    format!("{why}; killed it")
                }
            };
            *gone = Some(why);
        }
        let why = gone.clone().unwrap_or_default();
        log::error!("{why}: no more processes can be forked");
        io::Error::new(io::ErrorKind::BrokenPipe, why)
    }

    /// The loop's end of the lifeline, once: register it and read until end
    /// of stream, which comes when the fork server ends (nothing is ever
    /// sent on it), whatever its children do.
    pub(crate) fn take_lifeline(&self) -> Option<UnixStream> {
        self.lifeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Why the fork server is gone, if that is known already (no system
    /// call: for a loop to ask at every turn).
    pub(crate) fn known_gone(&self) -> Option<String> {
        self.gone.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The fork server's lifeline closed: it is ending or gone. Reaps it
    /// (a bounded wait: it is exiting) and says why.
    pub(crate) fn lost(&self) -> String {
        match self.gone() {
            Some(why) => why,
            None => self.broken("its lifeline closed".to_string()).to_string(),
        }
    }

    /// Replaces the configuration that every later child gets.
    pub(crate) fn configure(&self, config: &[u8]) -> io::Result<()> {
        let mut message = vec![CONFIGURE];
        message.extend_from_slice(config);
        send_message(self.ctl.as_raw_fd(), &message, &[])
    }

    /// Sends `signal` to child `pid`, if it is still running (the fork
    /// server only signals children it has not reaped: never a reused pid).
    pub(crate) fn signal(&self, pid: libc::pid_t, signal: i32) {
        let mut message = vec![SIGNAL];
        message.extend_from_slice(&pid.to_ne_bytes());
        message.extend_from_slice(&signal.to_ne_bytes());
        let _ = send_message(self.ctl.as_raw_fd(), &message, &[]);
    }

    /// Sends `signal` to every child still running.
    pub(crate) fn signal_all(&self, signal: i32) {
        let mut message = vec![SIGNAL_ALL];
        message.extend_from_slice(&signal.to_ne_bytes());
        let _ = send_message(self.ctl.as_raw_fd(), &message, &[]);
    }
}

impl ForkServer {
    /// Ends the fork server: end of stream on its command socket, a bounded
    /// wait (it may be killing its children, or blocked writing reports
    /// nobody reads), then SIGKILL; reaped either way. Later forks fail.
    /// Idempotent; also done on drop.
    pub(crate) fn end(&self) {
        {
            let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
            if gone.is_some() {
                return; // reaped, or being reaped
            }
            *gone = Some("the server is closed".to_string());
        }
        // SAFETY: ends our side of the stream; the descriptor stays ours (a
        // fork waiting for its answer is answered with end of stream).
        unsafe { libc::shutdown(self.ctl.as_raw_fd(), libc::SHUT_RDWR) };
        if reap_within(self.pid, Duration::from_secs(1)).is_none() {
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = reap_within(self.pid, Duration::MAX);
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        self.end();
    }
}

/// Waits at most `bound` for child `pid` to end: `None` if it still runs,
/// else `Some` of its wait status (`None` if it is not ours to reap any
/// more: never signal that pid).
fn reap_within(pid: libc::pid_t, bound: Duration) -> Option<Option<i32>> {
    let mut pause = Duration::from_micros(100);
    let mut waited = Duration::ZERO;
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, without blocking.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 => {}
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            reaped if reaped == pid => return Some(Some(status)),
            _ => return Some(None),
        }
        if waited >= bound {
            return None;
        }
        std::thread::sleep(pause);
        waited += pause;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Says how a fork server ended, from its wait status.
fn describe_exit(pid: libc::pid_t, status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!(
            "the fork server {pid} was killed by signal {}",
            libc::WTERMSIG(status)
        )
    } else {
        format!(
            "the fork server {pid} exited with status {}",
            libc::WEXITSTATUS(status)
        )
    }
}

/// Threads of this process besides the caller (`/proc/self/status`).
fn other_threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Threads:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |n| n.saturating_sub(1))
}

/// Both directions are bounded: a stopped fork server whose queue is full
/// must not hold the loop in `sendmsg` forever either.
fn ours_timeout(fd: &OwnedFd) -> io::Result<()> {
    let sock = socket2::SockRef::from(fd);
    sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    sock.set_write_timeout(Some(ANSWER_TIMEOUT))
}
