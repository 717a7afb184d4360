//! Timers: a binary heap of deadlines over a slab of entries.
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
use std::time::{Duration, Instant};

use slab::Slab;

use crate::TimerId;

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
