//! Producers: bytes pulled into a connection's write queue as it drains
//! (asynchat's `push_with_producer` and its producer fifo, Twisted's pull
//! producer).
//!
//! A connection with producers keeps a fifo of what is still to send, in
//! order: producers and the plain writes made after them. Whenever its write
//! queue is at or below the low-water mark, the reactor moves the next bytes
//! from the fifo into the queue, asking the producer at the front for more
//! until it says it is done. So a producer of any piece size streams at the
//! socket's pace, with no more than about the low-water mark queued, and
//! nothing depends on `on_drained` (which only follows a rise over the
//! high-water mark).

use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};

use bytes::Bytes;

use crate::reactor::conn::Conn;
use crate::{ConnId, Reactor};

/// A source of bytes that a connection pulls from as it can send them (see
/// [`Context::write_producer`](crate::Context::write_producer)).
///
/// Any `FnMut() -> Option<Bytes>` closure is a producer.
pub trait Producer: 'static {
    /// The next piece to send (any size, empty included), or `None` when
    /// there is no more (asynchat's `more()`). Called on the loop thread,
    /// so it must not block; a panic closes the connection, as a panic in a
    /// callback does.
    fn more(&mut self) -> Option<Bytes>;
}

impl<F: FnMut() -> Option<Bytes> + 'static> Producer for F {
    fn more(&mut self) -> Option<Bytes> {
        self()
    }
}

/// What a connection still has to send behind its producers.
#[derive(Default)]
pub(crate) struct Fifo {
    items: VecDeque<Pending>,
    /// Payload bytes of the `Data` items.
    pub(crate) held: usize,
}

enum Pending {
    Producer(Box<dyn Producer>),
    /// A write made while a producer was ahead of it.
    Data(Bytes),
}

/// Bytes a producer's call counts for at least, so that a producer of empty
/// or tiny pieces also meets the per-turn budget.
const CALL_COST: usize = 64;

/// Bytes moved into one connection's queue per flush, before other
/// connections get their turn (the read budget's size).
pub(crate) const PRODUCE_BUDGET: usize = 512 * 1024;

impl Fifo {
    /// Holds a write behind the producers, copied by the write queue's
    /// rule ([`copies`](crate::reactor::wqueue::copies)) so that it does not
    /// keep a larger buffer alive.
    pub(crate) fn push_data(&mut self, data: Bytes, read_block: Option<usize>) {
        self.held += data.len();
        let data = if crate::reactor::wqueue::copies(data.len(), read_block) {
            Bytes::copy_from_slice(&data)
        } else {
            data
        };
        self.items.push_back(Pending::Data(data));
    }
}

impl Conn {
    /// Bytes waiting behind producers, for `queued()` and `max_queued`.
    pub(crate) fn fifo_held(&self) -> usize {
        self.fifo.as_ref().map_or(0, |f| f.held)
    }

    /// Holds a write behind this connection's producers, in order: `None`
    /// when it has none (the write goes to the queue as usual), else the
    /// `max_queued` check's result.
    pub(crate) fn hold_behind_producers(
        &mut self,
        data: Bytes,
        read_block: Option<usize>,
    ) -> Option<Result<(), usize>> {
        self.fifo.as_ref()?;
        if let Err(limit) = self.check_limit(data.len()) {
            return Some(Err(limit));
        }
        self.fifo.as_mut()?.push_data(data, read_block);
        Some(Ok(()))
    }
}

impl Reactor {
    /// Streams from `producer` on connection `id` after everything queued
    /// before (see [`Context::write_producer`](crate::Context::write_producer)).
    pub fn write_producer(&mut self, id: ConnId, producer: impl Producer) -> io::Result<()> {
        let conn = crate::reactor::ops::open_for_writes(&mut self.sources, id)?;
        conn.fifo
            .get_or_insert_with(Box::default)
            .items
            .push_back(Pending::Producer(Box::new(producer)));
        self.schedule_flush(id.key());
        Ok(())
    }

    /// Moves bytes from connection `key`'s fifo into its write queue while
    /// the queue is at or below the low-water mark, spending at most
    /// `budget`; returns what was spent. The fifo goes when it is empty.
    pub(crate) fn pump(&mut self, key: usize, budget: usize) -> usize {
        let mut spent = 0;
        while spent < budget {
            let Some(conn) = crate::reactor::conn_in(&mut self.sources, key) else {
                return spent;
            };
            // Plaintext rustls holds during a TLS handshake counts too.
            if conn.wq.len() + conn.tls_held() > conn.opts.low_water {
                break;
            }
            let Some(fifo) = conn.fifo.as_mut() else {
                break;
            };
            let piece = match fifo.items.front_mut() {
                None => {
                    conn.fifo = None;
                    break;
                }
                Some(Pending::Data(_)) => match fifo.items.pop_front() {
                    Some(Pending::Data(data)) => {
                        fifo.held -= data.len();
                        data
                    }
                    _ => unreachable!("the front was data"),
                },
                Some(Pending::Producer(producer)) => {
                    // User code, but it cannot reach the loop: no nesting,
                    // only a panic to catch.
                    match panic::catch_unwind(AssertUnwindSafe(|| producer.more())) {
                        Ok(Some(piece)) => {
                            spent += CALL_COST;
                            piece
                        }
                        Ok(None) => {
                            fifo.items.pop_front();
                            continue;
                        }
                        Err(payload) => {
                            // Nothing after a broken producer makes sense.
                            let held = fifo.held;
                            conn.fifo = None;
                            let id = ConnId::new(key, conn.gen);
                            if held > 0 {
                                log::warn!("{id}: {held} bytes queued behind a producer dropped");
                            }
                            self.panicked(id, &*payload);
                            return spent;
                        }
                    }
                }
            };
            spent += piece.len();
            conn.push_piece(piece, &mut self.tails);
        }
        spent
    }
}
