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

use std::io::{self, Write};
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What a forked child runs: its descriptors, the payload of its `F`
/// command and the last configuration; returns the exit status.
pub(crate) type Job = Box<dyn Fn(Vec<OwnedFd>, &[u8], &[u8]) -> i32>;

const FORK: u8 = b'F';
const CONFIGURE: u8 = b'C';
const SIGNAL: u8 = b'K';
const SIGNAL_ALL: u8 = b'A';

/// Signals that stop a program: the fork server ignores them (the parent
/// decides what becomes of the children, and must hear of their exits).
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Descriptors one command may carry.
const MAX_FDS: usize = 4;

/// The exit status of a child whose job panicked (EX_SOFTWARE).
const PANICKED: i32 = 70;

/// How long the parent waits for the pid of a child it asked for. A fork
/// takes milliseconds; a fork server that does not answer within this is
/// taken for broken and killed (the loop that asked must not stay blocked,
/// and a late answer must never be read as the next request's).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The parent's side: the command socket and the fork server's pid.
pub(crate) struct ForkServer {
    /// Held while a fork is asked for and answered, so that two threads'
    /// answers cannot cross (signals have no answer and need no lock).
    ctl: Mutex<OwnedFd>,
    /// The same descriptor, for commands that need no answer (a seqpacket
    /// message is sent whole): a signal never waits for a fork's answer.
    ctl_fd: RawFd,
    pid: libc::pid_t,
    /// Why the fork server is gone (killed, or killed by us after it did
    /// not answer), once it was reaped: no child can be forked any more.
    gone: Mutex<Option<String>>,
    reaped: AtomicBool,
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
                drop(ours);
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
                serve(theirs, reports, kill_children, &job)
            }));
            // SAFETY: ends the process without unwinding into, or running
            // the destructors of, the parent's state it only copied.
            unsafe { libc::_exit(if outcome.is_ok() { 0 } else { PANICKED }) }
        }
        drop((out, err));
        // SAFETY: restores this thread's mask as it was.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, ptr::null_mut()) };
        if pid == -1 {
            return Err(io::Error::last_os_error());
        }
        let forks = ForkServer {
            ctl_fd: ours.as_raw_fd(),
            ctl: Mutex::new(ours),
            pid,
            gone: Mutex::new(None),
            reaped: AtomicBool::new(false),
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
        let ctl = self.ctl.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = send_message(ctl.as_raw_fd(), &message, fds) {
            return Err(self.broken(format!("the fork server is gone: {e}")));
        }
        let answer = Self::read_answer(&ctl);
        drop(ctl);
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

    fn answer(&self) -> io::Result<i32> {
        Self::read_answer(&self.ctl.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// One 4-byte answer, waited for at most [`ANSWER_TIMEOUT`].
    fn read_answer(ctl: &OwnedFd) -> io::Result<i32> {
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
        if gone.is_none() && !self.reaped.load(Ordering::Acquire) {
            let mut status = 0;
            // SAFETY: waits (without blocking) for our own child only.
            let reaped = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if reaped == self.pid {
                self.reaped.store(true, Ordering::Release);
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
        if self.reaped.swap(true, Ordering::AcqRel) {
            gone.get_or_insert(why);
        } else {
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

    /// Replaces the configuration that every later child gets.
    pub(crate) fn configure(&self, config: &[u8]) -> io::Result<()> {
        let mut message = vec![CONFIGURE];
        message.extend_from_slice(config);
        send_message(self.raw_ctl(), &message, &[])
    }

    /// Sends `signal` to child `pid`, if it is still running (the fork
    /// server only signals children it has not reaped: never a reused pid).
    pub(crate) fn signal(&self, pid: libc::pid_t, signal: i32) {
        let mut message = vec![SIGNAL];
        message.extend_from_slice(&pid.to_ne_bytes());
        message.extend_from_slice(&signal.to_ne_bytes());
        let _ = send_message(self.raw_ctl(), &message, &[]);
    }

    /// Sends `signal` to every child still running.
    pub(crate) fn signal_all(&self, signal: i32) {
        let mut message = vec![SIGNAL_ALL];
        message.extend_from_slice(&signal.to_ne_bytes());
        let _ = send_message(self.raw_ctl(), &message, &[]);
    }

    fn raw_ctl(&self) -> RawFd {
        self.ctl_fd
    }
}

impl ForkServer {
    /// Ends the fork server: end of stream on its command socket, a bounded
    /// wait (it may be killing its children, or blocked writing reports
    /// nobody reads), then SIGKILL; reaped either way. Later forks fail.
    /// Idempotent; also done on drop.
    pub(crate) fn end(&self) {
        if self.reaped.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
            gone.get_or_insert_with(|| "the server is closed".to_string());
        }
        // SAFETY: ends our side of the stream; the descriptor stays ours
        // (the raw one: a fork waiting for its answer holds the mutex, and
        // is answered with end of stream).
        unsafe { libc::shutdown(self.ctl_fd, libc::SHUT_RDWR) };
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

/// Decodes an exit report: `(pid, wait status)`.
pub(crate) fn decode_report(record: &[u8; 8]) -> (libc::pid_t, i32) {
    let pid = i32::from_ne_bytes(record[..4].try_into().expect("4 bytes"));
    let status = i32::from_ne_bytes(record[4..].try_into().expect("4 bytes"));
    (pid, status)
}

/// Encodes a report (also what a child sends to reach its parent).
pub(crate) fn encode_report(pid: libc::pid_t, status: i32) -> [u8; 8] {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&pid.to_ne_bytes());
    record[4..].copy_from_slice(&status.to_ne_bytes());
    record
}

/// Writes `record` whole to a stream socket (MSG_NOSIGNAL: a vanished
/// reader is an error, not a SIGPIPE).
pub(crate) fn send_record(fd: RawFd, record: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while sent < record.len() {
        // SAFETY: sends from a buffer we own, within its length.
        let n = unsafe {
            libc::send(
                fd,
                record[sent..].as_ptr().cast(),
                record.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: writes two descriptors into the array on success.
    let done = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if done == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Both directions are bounded: a stopped fork server whose queue is full
/// must not hold the loop in `sendmsg` forever either.
fn ours_timeout(fd: &OwnedFd) -> io::Result<()> {
    let sock = socket2::SockRef::from(fd);
    sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    sock.set_write_timeout(Some(ANSWER_TIMEOUT))
}

fn send_message(fd: RawFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut control = [0u64; 8]; // room for CMSG_SPACE(4 fds), aligned
                                 // SAFETY: msghdr points at buffers that live across the call; the
                                 // control message is written within `control` (CMSG_SPACE of at most
                                 // MAX_FDS descriptors fits in 64 bytes).
    unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            let bytes = mem::size_of_val(raw.as_slice()) as u32;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as _;
            ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast(), raw.len());
        }
        loop {
            if libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives one command: `None` at end of stream.
fn recv_message(fd: RawFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    // SAFETY: a peek with no buffer; MSG_TRUNC makes it return the length.
    let len = unsafe { libc::recv(fd, ptr::null_mut(), 0, libc::MSG_PEEK | libc::MSG_TRUNC) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut data = vec![0u8; (len as usize).max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 8];
    let mut fds = Vec::new();
    // SAFETY: msghdr points at buffers that live across the call; control
    // messages are read only within the length the kernel reports, and each
    // descriptor received is owned by nobody else yet.
    let n = unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        n
    };
    if n == 0 && len == 0 {
        return Ok(None);
    }
    data.truncate(n as usize);
    Ok(Some((data, fds)))
}

fn int_at(data: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// The fork server's loop. Touches no lock another thread could have held
/// at the fork (no logging, no stdout): it only allocates (the allocator is
/// fork-safe: glibc takes its locks around fork), forks, signals and reaps.
fn serve(ctl: OwnedFd, reports: Option<RawFd>, kill_children: bool, job: &Job) -> ! {
    // SAFETY: signal dispositions and masks of this single-threaded process.
    let (signals, old_mask) = unsafe {
        // A Ctrl-C, or a service manager's SIGTERM, reaches the whole
        // process group: the parent decides what becomes of the children
        // (and must hear of their exits), so the fork server outlives it.
        // It ends at end of stream on its command socket.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let mut set: libc::sigset_t = mem::zeroed();
        let mut old: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            libc::_exit(1);
        }
        (OwnedFd::from_raw_fd(fd), old)
    };
    let mut live: Vec<libc::pid_t> = Vec::new();
    let mut config: Vec<u8> = Vec::new();
    loop {
        let mut polled = [
            libc::pollfd {
                fd: ctl.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds, for the duration of the call.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR
        }
        if polled[1].revents != 0 {
            let mut info = [0u8; 128];
            // SAFETY: drains the signalfd into a buffer we own.
            while unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), 128) } > 0 {}
            reap(&mut live, reports);
        }
        if polled[0].revents == 0 {
            continue;
        }
        let (command, fds) = match recv_message(ctl.as_raw_fd()) {
            Ok(Some(message)) => message,
            Ok(None) => {
                if kill_children {
                    for &pid in &live {
                        // SAFETY: live children of ours, killed and reaped.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                            libc::waitpid(pid, ptr::null_mut(), 0);
                        }
                    }
                }
                unsafe_exit(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => unsafe_exit(1),
        };
        match command.first() {
            Some(&FORK) => {
                let answer = fork_child(
                    &command[1..],
                    fds,
                    &config,
                    &ctl,
                    &signals,
                    reports,
                    &old_mask,
                    job,
                );
                if answer > 0 {
                    live.push(answer);
                }
                // SAFETY: sends from a buffer we own.
                unsafe {
                    libc::send(
                        ctl.as_raw_fd(),
                        answer.to_ne_bytes().as_ptr().cast(),
                        4,
                        libc::MSG_NOSIGNAL,
                    )
                };
            }
            Some(&CONFIGURE) => config = command[1..].to_vec(),
            Some(&SIGNAL) => {
                if let (Some(pid), Some(signal)) = (int_at(&command, 1), int_at(&command, 5)) {
                    if live.contains(&pid) {
                        // SAFETY: a live child of ours, not yet reaped.
                        unsafe { libc::kill(pid, signal) };
                    }
                }
            }
            Some(&SIGNAL_ALL) => {
                if let Some(signal) = int_at(&command, 1) {
                    for &pid in &live {
                        // SAFETY: as above.
                        unsafe { libc::kill(pid, signal) };
                    }
                }
            }
            _ => {}
        }
    }
}

fn unsafe_exit(status: i32) -> ! {
    // SAFETY: ends the fork server without running the parent's destructors.
    unsafe { libc::_exit(status) }
}

/// Reaps every child that exited and reports it.
fn reap(live: &mut Vec<libc::pid_t>, reports: Option<RawFd>) {
    loop {
        let mut status = 0;
        // SAFETY: the fork server's only children are the ones it forked.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        live.retain(|&p| p != pid);
        if let Some(fd) = reports {
            if send_record(fd, &encode_report(pid, status)).is_err() {
                unsafe_exit(0); // the parent is gone
            }
        }
    }
}

/// Forks one child; returns its pid or `-errno`.
#[allow(clippy::too_many_arguments)]
fn fork_child(
    payload: &[u8],
    fds: Vec<OwnedFd>,
    config: &[u8],
    ctl: &OwnedFd,
    signals: &OwnedFd,
    reports: Option<RawFd>,
    old_mask: &libc::sigset_t,
    job: &Job,
) -> libc::pid_t {
    // SAFETY: the fork server is single-threaded: fork is safe here.
    match unsafe { libc::fork() } {
        -1 => -io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EAGAIN),
        0 => {
            // SAFETY: this child's own mask and dispositions; the closed
            // descriptors are the fork server's own, never used again here.
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, old_mask, ptr::null_mut());
                libc::close(ctl.as_raw_fd());
                libc::close(signals.as_raw_fd());
            }
            crate::process::child::restore_default_signals();
            let _ = reports; // kept: the job may report through it
            let status = panic::catch_unwind(AssertUnwindSafe(|| job(fds, payload, config)))
                .unwrap_or(PANICKED);
            let _ = panic::catch_unwind(|| {
                let _ = io::stdout().flush();
                let _ = io::stderr().flush();
            });
            unsafe_exit(status)
        }
        pid => pid, // dropping `fds` closes the fork server's copies
    }
}
