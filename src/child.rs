//! The first things a forked child does, whoever forked it: forget the
//! parent's signal handlers and close the descriptors it does not need.

use std::os::fd::RawFd;

/// Signals a child must not inherit handlers for: the parent's (signal-hook's,
/// which only write to a pipe the child never reads) would swallow them, and
/// a Ctrl-C or `kill` must end the child as it ends the parent.
pub(crate) fn restore_default_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
        // SAFETY: resetting a disposition to the default is always valid.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// Closes every descriptor above stderr except `keep`.
///
/// A child holding copies of the parent's sockets keeps them open: a client
/// the parent closed would not see end-of-stream until the child exits.
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    let mut first = 3;
    for fd in keep.into_iter().chain([RawFd::MAX]) {
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd.saturating_add(1);
    }
}

fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: closes descriptors of this process only; nothing here uses them.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0,
        )
    };
    if done == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc says is open.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| (first..=last).contains(fd)) {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}
