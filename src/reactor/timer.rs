//! Timers: a binary heap of deadlines over a slab of entries, and the
//! reactor's use of it (what fires when: `TimerTarget`; the idle timeout,
//! timers protocols set, `call_later`).
//!
//! Cancelling removes the slab entry and leaves the heap alone; a heap entry
//! whose slab entry is gone (or was reused: the generation differs) is skipped
//! when it reaches the top. That makes set and cancel O(log n) and O(1).
//!
//! Every deadline saturates: a delay so long that `now + delay` overflows
//! `Instant` means "never" (the entry exists and can be cancelled, but is not
//! in the heap), never a panic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::reactor::conn::Closing;
use crate::reactor::Source;
use crate::{CloseReason, ConnId, Reactor, TimerId};

struct Entry<T> {
    gen: u32,
    target: T,
}

/// Deadlines with a payload `T` saying what to do when one expires.
pub(crate) struct Timers<T> {
    entries: Slab<Entry<T>>,
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    next_gen: u32,
}

impl<T> Timers<T> {
    pub(crate) fn new() -> Timers<T> {
        Timers {
            entries: Slab::new(),
            heap: BinaryHeap::new(),
            next_gen: 0,
        }
    }

    /// A timer that expires `delay` after `now` (never, if that overflows).
    pub(crate) fn insert(&mut self, now: Instant, delay: Duration, target: T) -> TimerId {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let key = self.entries.insert(Entry { gen, target });
        let id = TimerId::new(key, gen);
        if let Some(deadline) = now.checked_add(delay) {
            self.heap.push(Reverse((deadline, id)));
        }
        // Cancelled entries linger in the heap until their deadline; keep them
        // from outnumbering the live ones when a protocol re-arms timers often.
        if self.heap.len() > 64 && self.heap.len() > 4 * self.entries.len() {
            let entries = &self.entries;
            self.heap
                .retain(|Reverse((_, id))| Self::live(entries, *id));
        }
        id
    }

    fn live(entries: &Slab<Entry<T>>, id: TimerId) -> bool {
        entries.get(id.key()).is_some_and(|e| e.gen == id.gen)
    }

    /// Removes a pending timer, returning its payload; `None` if it already
    /// fired or was cancelled.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<T> {
        if Self::live(&self.entries, id) {
            Some(self.entries.remove(id.key()).target)
        } else {
            None
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id))) = self.heap.peek() {
            if Self::live(&self.entries, *id) {
                return Some(*deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes one timer whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(TimerId, T)> {
        while self.next_deadline()? <= now {
            let Reverse((_, id)) = self.heap.pop()?;
            if let Some(target) = self.cancel(id) {
                return Some((id, target));
            }
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What a timer does when it expires.
pub(crate) enum TimerTarget {
    /// A timer a protocol set on its connection or datagram socket.
    User(ConnId),
    Idle(ConnId),
    ConnectTimeout(ConnId),
    /// A closing connection's look at its peer's progress (closing.rs).
    Linger(ConnId),
    /// A closing connection's `close_stall` check (closing.rs).
    StallCheck(ConnId),
    /// A TLS connection's handshake deadline (tls.rs).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    TlsHandshake(ConnId),
    /// Resume accepting after an `EMFILE` back-off.
    ResumeAccept(crate::ListenerId),
    Call(Box<dyn FnOnce(&mut Reactor)>),
}

/// The reactor's timers: firing them, the idle timeout, timers set by
/// protocols and `call_later`.
impl Reactor {
    pub(crate) fn fire_timers(&mut self) {
        // Timer handlers read the clock from here: one clock read per turn.
        self.now = Instant::now();
        let now = self.now;
        while let Some((timer, target)) = self.timers.pop_expired(now) {
            match target {
                TimerTarget::User(id) => self.user_timer(id, timer),
                TimerTarget::Idle(id) => self.idle_timer(id),
                TimerTarget::ConnectTimeout(id) => {
                    let err = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                    self.close_id(id, Closing::Now(CloseReason::ConnectFailed(err)));
                }
                TimerTarget::Linger(id) => self.linger_expired(id),
                TimerTarget::StallCheck(id) => self.stall_check(id),
                TimerTarget::TlsHandshake(id) => self.tls_handshake_expired(id),
                TimerTarget::ResumeAccept(id) => self.resume_accept(id),
                TimerTarget::Call(f) => self.guarded("a call_later closure", f),
            }
            self.settle();
        }
    }

    pub(crate) fn idle_timer(&mut self, id: ConnId) {
        let now = self.now;
        let Some(conn) = self.conn(id) else { return };
        conn.idle_timer = None;
        let Some(limit) = conn.opts.idle_timeout else {
            return;
        };
        let idle = now.saturating_duration_since(conn.last_active);
        if idle >= limit {
            log::info!("{id}: idle for {idle:?}, closing");
            return self.close_id(id, Closing::Now(CloseReason::IdleTimeout));
        }
        // Activity since the timer was set: re-arm for the rest, instead of
        // moving a heap entry on every read.
        let timer = self.timers.insert(now, limit - idle, TimerTarget::Idle(id));
        self.conn(id).expect("checked above").idle_timer = Some(timer);
    }

    pub(crate) fn user_timer(&mut self, id: ConnId, timer: TimerId) {
        if self.gen_of(id.key()) != Some(id.gen) {
            return;
        }
        self.forget_user_timer(id, timer);
        match &self.sources[id.key()] {
            Source::Conn(_) => {
                self.call(id.key(), |h, r, id| h.on_timer(r, id, timer));
            }
            Source::Datagram(_) => self.datagram_timer(id.key(), timer),
            _ => {}
        }
    }

    /// Sets a timer on connection or datagram socket `id`: its protocol's
    /// `on_timer` is called after `delay`, unless cancelled or the id closed
    /// (closing cancels it). A delay too long to represent means never.
    pub fn set_timer(&mut self, id: ConnId, delay: Duration) -> TimerId {
        let timer = self
            .timers
            .insert(Instant::now(), delay, TimerTarget::User(id));
        match self.user_timers(id) {
            Some(timers) => timers.push(timer),
            // Nothing to call: the id is closed.
            None => {
                self.timers.cancel(timer);
            }
        }
        timer
    }

    /// The pending user timers of connection or datagram socket `id`, so that
    /// closing it can cancel them.
    fn user_timers(&mut self, id: ConnId) -> Option<&mut Vec<TimerId>> {
        match self.sources.get_mut(id.key()) {
            Some(Source::Conn(c)) if c.gen == id.gen => Some(&mut c.user_timers),
            Some(Source::Datagram(d)) if d.gen == id.gen => Some(&mut d.user_timers),
            _ => None,
        }
    }

    /// Takes `timer` off its connection's list (it fired or was cancelled).
    pub(crate) fn forget_user_timer(&mut self, id: ConnId, timer: TimerId) {
        if let Some(timers) = self.user_timers(id) {
            if let Some(at) = timers.iter().position(|t| *t == timer) {
                timers.swap_remove(at);
            }
        }
    }

    /// Cancels every user timer of a closing connection or socket.
    pub(crate) fn cancel_user_timers(&mut self, timers: Vec<TimerId>) {
        for timer in timers {
            self.timers.cancel(timer);
        }
    }

    /// Calls `f` on the loop after `delay` (Twisted's `callLater`).
    pub fn call_later(
        &mut self,
        delay: Duration,
        f: impl FnOnce(&mut Reactor) + 'static,
    ) -> TimerId {
        self.timers
            .insert(Instant::now(), delay, TimerTarget::Call(Box::new(f)))
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.timers.cancel(timer) {
            Some(TimerTarget::User(id)) => {
                self.forget_user_timer(id, timer);
                true
            }
            Some(_) => true,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_skips_cancelled() {
        let mut t = Timers::new();
        let now = Instant::now();
        let a = t.insert(now, Duration::from_millis(30), "a");
        let _b = t.insert(now, Duration::from_millis(10), "b");
        let c = t.insert(now, Duration::from_millis(20), "c");
        assert_eq!(t.cancel(c), Some("c"));
        assert_eq!(t.cancel(c), None, "second cancel is a no-op");
        assert_eq!(t.pop_expired(now), None);
        let later = now + Duration::from_millis(40);
        assert_eq!(t.pop_expired(later).map(|x| x.1), Some("b"));
        assert_eq!(t.pop_expired(later), Some((a, "a")));
        assert_eq!(t.pop_expired(later), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_deadline_past_the_end_of_time_is_never() {
        let mut t = Timers::new();
        let now = Instant::now();
        let never = t.insert(now, Duration::MAX, "never");
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.pop_expired(now + Duration::from_secs(1 << 40)), None);
        assert_eq!(t.cancel(never), Some("never"));
    }

    #[test]
    fn heap_stays_bounded_under_rearm() {
        let mut t = Timers::new();
        let now = Instant::now();
        for i in 0..10_000u64 {
            let id = t.insert(now, Duration::from_secs(i), ());
            t.cancel(id);
        }
        assert!(
            t.heap.len() <= 65,
            "heap kept {} dead entries",
            t.heap.len()
        );
    }
}
