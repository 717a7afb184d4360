//! The fork server's own loop, in the process forked once at start-up:
//! forks a child per `F` command, signals and reaps its children, reports
//! their exits.

use std::io::{self, Write};
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;

use super::forkserver::Job;
use super::wire::{
    encode_report, int_at, recv_message, send_record, CONFIGURE, FORK, SIGNAL, SIGNAL_ALL,
};

/// The exit status of a child whose job panicked (EX_SOFTWARE).
pub(crate) const PANICKED: i32 = 70;

/// The fork server's loop. Touches no lock another thread could have held
/// at the fork (no logging, no stdout): it only allocates (the allocator is
/// fork-safe: glibc takes its locks around fork), forks, signals and reaps.
pub(crate) fn serve(
    ctl: OwnedFd,
    lifeline: OwnedFd,
    reports: Option<RawFd>,
    kill_children: bool,
    job: &Job,
) -> ! {
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
                let answer = {
                    // The fork server's own descriptors: no child keeps them
                    // (the lifeline must end with the fork server alone).
                    let own = [ctl.as_raw_fd(), signals.as_raw_fd(), lifeline.as_raw_fd()];
                    fork_child(&command[1..], fds, &config, &own, &old_mask, job)
                };
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

pub(crate) fn unsafe_exit(status: i32) -> ! {
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
fn fork_child(
    payload: &[u8],
    fds: Vec<OwnedFd>,
    config: &[u8],
    own: &[RawFd],
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
                for &fd in own {
                    libc::close(fd);
                }
            }
            crate::process::child::restore_default_signals();
            // The report socket stays open: the job may report through it
            // (a handler asking the server to shut down).
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
