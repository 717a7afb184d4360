//! User code on the loop: the rule that callbacks never nest, and the guard
//! around every piece of user code.
//!
//! **Callbacks never nest.** A protocol callback holds `&mut Reactor` (through
//! its `Context`), so it can ask for anything. What would run other user code
//! at once (another connection's `on_open` after `adopt`, every `on_shutdown`
//! after `shutdown_graceful`, a datagram socket's `on_close`, an offload
//! completion) is queued with [`Reactor::after_callback`] instead, and carried
//! out by [`Reactor::settle`] as soon as the callback has returned, before the
//! next event: one queue for every such operation. Writes, closes, pauses and
//! flushes of streams need no queueing: they only mark state that `settle`
//! acts on.
//!
//! **Every piece of user code is guarded.** Protocol callbacks are caught by
//! `Reactor::call` (their connection closes); posted closures, `call_later`
//! closures, signal handlers and a closed source's `Drop` by
//! [`Reactor::guarded`] (counted in [`Stats::panics`](crate::Stats::panics)
//! and logged; the loop goes on).
//! Should anything else unwind out of a turn, [`TurnGuard`] puts the loop's
//! own state back, so the next `run_once` works.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};

use mio::Events;

use crate::reactor::panic_message;
use crate::Reactor;

/// An operation postponed until no callback is running.
pub(crate) type Deferred = Box<dyn FnOnce(&mut Reactor)>;

/// The loop's bookkeeping of running user code.
#[derive(Default)]
pub(crate) struct Nesting {
    /// Protocol callbacks on the stack (0 or 1 while the rule holds).
    depth: u32,
    deferred: VecDeque<Deferred>,
}

impl Nesting {
    /// True while a protocol callback runs.
    pub(crate) fn is_active(&self) -> bool {
        self.depth > 0
    }
}

impl Reactor {
    /// True while a protocol callback runs.
    pub(crate) fn in_callback(&self) -> bool {
        self.nesting.is_active()
    }

    /// Runs `op` now when no protocol callback is running, else queues it to
    /// run right after the callback returns (in the order queued).
    pub(crate) fn after_callback(&mut self, op: impl FnOnce(&mut Reactor) + 'static) {
        if self.in_callback() {
            self.nesting.deferred.push_back(Box::new(op));
        } else {
            op(self);
        }
    }

    /// Whether an operation is postponed, for `settle`'s quick check.
    #[inline]
    pub(crate) fn has_deferred(&self) -> bool {
        !self.nesting.deferred.is_empty()
    }

    /// The next postponed operation, for `settle`.
    pub(crate) fn take_deferred(&mut self) -> Option<Deferred> {
        self.nesting.deferred.pop_front()
    }

    /// Runs one protocol callback `f`, counting it as running; a panic is
    /// returned, not propagated.
    pub(crate) fn enter_callback<R>(
        &mut self,
        f: impl FnOnce(&mut Reactor) -> R,
    ) -> std::thread::Result<R> {
        debug_assert_eq!(self.nesting.depth, 0, "callbacks never nest");
        self.nesting.depth += 1;
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(self)));
        self.nesting.depth -= 1;
        result
    }

    /// Drops what a closed source held: its protocol or factory is user
    /// code, whose `Drop` may panic.
    pub(crate) fn drop_source(&mut self, source: crate::reactor::Source) {
        self.guarded("dropping a protocol", move |_| drop(source));
    }

    /// Runs user code that is not a protocol callback (a posted closure, a
    /// `call_later` closure, a signal handler). A panic is counted and
    /// logged, and the loop goes on.
    pub(crate) fn guarded(&mut self, what: &str, f: impl FnOnce(&mut Reactor)) {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| f(self))) {
            self.stats.panics += 1;
            log::error!(
                "{what} panicked: {}; the loop goes on",
                panic_message(&*panic)
            );
        }
    }
}

/// Restores the loop's own state when a turn ends, normally or by unwinding:
/// not running, the events buffer in place, no callback counted as running.
pub(crate) struct TurnGuard<'a> {
    pub(crate) reactor: &'a mut Reactor,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let r = &mut *self.reactor;
        r.running = false;
        r.nesting.depth = 0;
        if r.events.is_none() {
            r.events = Some(Events::with_capacity(1024));
        }
    }
}
