//! Backpressure across connections (Twisted's producer/consumer): a
//! connection that writes to others (a chat talker, a proxy) holds back its
//! own input while a connection it writes to is over its high-water mark,
//! and reads again once that one drains.
//!
//! A protocol asks for it after a write with
//! [`Context::pause_until_drained`](crate::Context::pause_until_drained).
//! The waiting producer is released when the consumer's queue is down to
//! its low-water mark, when the consumer closes, or when the consumer has
//! not come down to its low-water mark within `ConnOptions::stall_timeout`
//! of holding the producer back: a consumer whose peer stopped reading, or
//! reads slower than that, does not hold everyone back; it goes on queueing
//! until `max_queued` cuts it off, or until it catches up (down to low
//! water), from when it holds its producers back again.

use crate::reactor::conn_in;
use crate::{ConnId, Reactor};

impl Reactor {
    /// True while connection `id`'s write queue is over its high-water mark
    /// (and not yet down to the low-water one) and it has not stalled (see
    /// [`ConnOptions::stall_timeout`](crate::ConnOptions::stall_timeout)).
    /// False for a closed or closing connection.
    pub fn is_backed_up(&self, id: ConnId) -> bool {
        self.conn_ref(id).is_some_and(|c| c.is_backed_up())
    }

    /// Stops reading from `producer` until `consumer` drains (its queue is
    /// down to its low-water mark), closes, or stalls (does not drain within
    /// [`ConnOptions::stall_timeout`](crate::ConnOptions::stall_timeout)
    /// of holding a producer back), if `consumer` is
    /// backed up now ([`is_backed_up`](Reactor::is_backed_up)); true if it
    /// did. Asking again for the same pair changes nothing; a producer that
    /// waits for several consumers reads again when the last one releases it.
    /// Bytes the producer has already read are not affected: a protocol
    /// that wants to stop mid-read checks
    /// [`Context::is_reading`](crate::Context::is_reading).
    pub fn pause_until_drained(&mut self, producer: ConnId, consumer: ConnId) -> bool {
        if producer == consumer || self.conn(producer).is_none() {
            return false;
        }
        let Some(c) = self.conn(consumer) else {
            return false;
        };
        if !c.is_backed_up() {
            return false;
        }
        if c.producers.contains(&producer) {
            return true;
        }
        c.producers.push(producer);
        let first = c.producers.len() == 1;
        let (drained, stall) = (c.drained, c.opts.stall_timeout);
        self.conn(producer).expect("checked above").waiting_for += 1;
        if first {
            self.call_later(stall, move |r| r.check_stalled(consumer, drained));
        }
        true
    }

    /// Lets every producer waiting for connection `key` read again (the ones
    /// that wait for no other connection).
    pub(crate) fn release_producers(&mut self, key: usize) {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return;
        };
        if conn.producers.is_empty() {
            return;
        }
        for producer in std::mem::take(&mut conn.producers) {
            if let Some(p) = self.conn(producer) {
                p.waiting_for -= 1;
                if p.waiting_for == 0 {
                    self.schedule_read(producer.key());
                }
            }
        }
    }

    /// The stall check of a consumer with waiting producers: not down to
    /// its low-water mark since `drained` means its peer reads slower than
    /// `stall_timeout` allows (or not at all): its producers go on without it.
    fn check_stalled(&mut self, consumer: ConnId, drained: u32) {
        let Some(c) = self.conn(consumer) else {
            return;
        };
        // Drained meanwhile: its producers were released then, and those
        // waiting now started a check of their own.
        if c.producers.is_empty() || c.drained != drained {
            return;
        }
        log::info!(
            "{consumer}: not down to its low-water mark within {:?} ({} bytes queued); \
             its producers go on without it",
            c.opts.stall_timeout,
            c.wq.len()
        );
        c.stalled = true;
        self.release_producers(consumer.key());
    }
}
