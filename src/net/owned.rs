//! The descriptors the crate owns in this process: every reactor's poll
//! descriptor, listeners, connections and datagram sockets.
//!
//! A process forked later (a fork server) holds copies of them all; a copy
//! keeps a closed server's port listening, or a closed connection open
//! (its peer never sees the end), so a fork server closes every descriptor
//! listed here. One registry for the whole process: a fork server started
//! from one reactor (a process pool) or before any (a forking server) must
//! also close what other reactors, on other threads, own. User descriptors
//! are never listed: a child must never close what it does not own.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::Mutex;

static LISTED: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// Lists a descriptor while it lives. Declare it as the field before the
/// descriptor's owner, so that it is unlisted before the descriptor
/// closes: a number reused by someone else is then never closed by a fork
/// server (at worst one closed descriptor stays open in a fork server
/// started in between).
#[derive(Debug)]
pub(crate) struct Listed(RawFd);

impl Listed {
    pub(crate) fn new(fd: RawFd) -> Listed {
        let mut set = LISTED.lock().unwrap_or_else(|p| p.into_inner());
        set.get_or_insert_with(HashSet::new).insert(fd);
        Listed(fd)
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut set = LISTED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = set.as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Every descriptor listed now.
pub(crate) fn listed() -> Vec<RawFd> {
    let set = LISTED.lock().unwrap_or_else(|p| p.into_inner());
    set.as_ref()
        .map_or_else(Vec::new, |s| s.iter().copied().collect())
}
