//! The first thing a forked child does, whoever forked it: forget the
//! parent's signal handlers.
//!
//! Descriptors are not closed wholesale: a child must never close what it
//! does not own (a handler's pre-opened file would be closed, and the next
//! socket would reuse its number). Children come from the fork server
//! (src/process/), which closed the crate's own descriptors once at its
//! start; each child gets only the sockets it serves on top of that.

/// Signals a child must not inherit handlers for: the parent's (signal-hook's,
/// which only write to a pipe the child never reads) would swallow them, and
/// a Ctrl-C or `kill` must end the child as it ends the parent.
pub(crate) fn restore_default_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
        // SAFETY: resetting a disposition to the default is always valid.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}
