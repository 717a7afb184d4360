//! A connection's write queue, built so that the memory it holds follows
//! the bytes it holds (docs/design.md, "Memory follows the bytes held").
//!
//! Small writes are copied into a *tail* block of [`TAIL_BLOCK`] bytes taken
//! from a pool shared by the reactor's connections, so that many small
//! writes share one block and an echo in steady state allocates nothing.
//! Large `Bytes` are queued as they are (zero-copy pays for them), in front
//! of the tail. Every piece is charged what it keeps alive, and the code
//! keeps that charge within twice the payload plus a constant:
//!
//! - a tail block that gets frozen (to put a zero-copy piece after it) is
//!   copied out to storage of its own size when less than half full;
//! - a `Bytes` that points into the reactor's read buffer is copied unless
//!   it is at least half of a read ([`Reactor`](crate::Reactor) tells which),
//!   so that a one-byte echo does not pin 64 KiB;
//! - a front piece that the socket took most of is copied out once what is
//!   left is under half of what it holds;
//! - once the queue is empty the tail block goes back to the pool and a grown
//!   array of pieces is freed: an idle connection holds no queue storage.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};

use crate::net::Stream;

/// Size of a tail block (and of the pool's blocks).
pub(crate) const TAIL_BLOCK: usize = 4 * 1024;
/// A `Bytes` of unknown origin shorter than this is copied: cheap, and it
/// may be a small slice of a large block.
pub(crate) const COPY_BELOW: usize = TAIL_BLOCK / 2;
/// The rule of what is copied rather than kept as it is (for the write
/// queue, and for writes held behind producers): a piece of `n` bytes is
/// copied when it is small, or a small part of the read buffer it lies in
/// (`read_block`: that buffer's size), as it would keep all of it alive.
#[inline]
pub(crate) fn copies(n: usize, read_block: Option<usize>) -> bool {
    match read_block {
        Some(block) => n * 2 < block,
        None => n < COPY_BELOW,
    }
}

/// Tail blocks kept for reuse by the reactor (256 KiB at most).
pub(crate) const TAIL_POOL: usize = 64;
/// How many queued pieces one `writev` takes at most (Linux's IOV_MAX is 1024;
/// 64 already moves far more than a socket buffer holds).
const MAX_IOVECS: usize = 64;
/// Array slots of pieces an empty queue keeps (an array grown by a burst is freed).
const KEEP_SLOTS: usize = 4;

/// The reactor's pool of emptied tail blocks.
pub(crate) type TailPool = Vec<Vec<u8>>;

/// One queued piece and the memory it is charged for.
struct Piece {
    data: Bytes,
    /// Bytes of memory this piece keeps alive (at least `data.len()`).
    held: usize,
}

#[derive(Default)]
pub(crate) struct WriteQueue {
    /// Pieces to send before the tail, in order.
    pieces: VecDeque<Piece>,
    /// Sum of `held` over `pieces`.
    pieces_held: usize,
    /// Copied writes, after the pieces. Its capacity is fixed once allocated
    /// (never grown by `extend`), so its memory is known exactly.
    tail: Vec<u8>,
    /// Bytes at the front of `tail` already sent (only while `pieces` is empty).
    head: usize,
    /// Payload bytes queued.
    queued: usize,
}

impl WriteQueue {
    /// Payload bytes queued and not yet taken by the socket.
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// The memory the queue's buffers hold (what the allocator gave them, or
    /// for a zero-copy piece what it is known to keep alive).
    pub(crate) fn held(&self) -> usize {
        self.pieces_held
            + self.tail.capacity()
            + self.pieces.capacity() * std::mem::size_of::<Piece>()
    }

    /// Queues a copy of `data`.
    #[inline]
    pub(crate) fn push_copy(&mut self, data: &[u8], pool: &mut TailPool) {
        let n = data.len();
        if self.tail.capacity() - self.tail.len() >= n {
            self.tail.extend_from_slice(data);
            self.queued += n;
        } else if self.tail.capacity() == 0 && n <= TAIL_BLOCK && !pool.is_empty() {
            // The steady state: an empty queue takes a block from the pool.
            let block = pool.pop().expect("not empty");
            // The old tail holds no memory (capacity 0): nothing to drop.
            std::mem::forget(std::mem::replace(&mut self.tail, block));
            self.tail.extend_from_slice(data);
            self.queued += n;
        } else {
            self.push_copy_slow(data, pool);
        }
    }

    #[inline(never)]
    fn push_copy_slow(&mut self, data: &[u8], pool: &mut TailPool) {
        let n = data.len();
        self.queued += n;
        if self.tail.capacity() - self.tail.len() < n && self.head > 0 && self.pieces.is_empty() {
            // Sent bytes at the front of the block: move the rest down
            // (at most a block's worth) rather than start another block.
            self.tail.drain(..self.head);
            self.head = 0;
        }
        if self.tail.capacity() - self.tail.len() < n {
            if !self.tail.is_empty() {
                self.freeze_tail();
            }
            self.recycle_tail(pool);
            self.tail = if n <= TAIL_BLOCK {
                pool.pop().unwrap_or_else(|| Vec::with_capacity(TAIL_BLOCK))
            } else {
                // Exactly what it needs: a large copy is charged its size.
                Vec::with_capacity(n)
            };
        }
        self.tail.extend_from_slice(data);
    }

    /// Queues `data` without copying, unless it is small or a small part of
    /// a large block (`read_block`: the reactor's read buffer, which the
    /// slice would keep alive); then it is copied.
    pub(crate) fn push_bytes(
        &mut self,
        data: Bytes,
        read_block: Option<usize>,
        pool: &mut TailPool,
    ) {
        let n = data.len();
        if copies(n, read_block) {
            return self.push_copy(&data, pool);
        }
        let held = read_block.map_or(n, |block| block.max(n));
        if !self.tail.is_empty() {
            self.freeze_tail();
        }
        self.queued += n;
        self.pieces_held += held;
        self.pieces.push_back(Piece { data, held });
    }

    /// Moves the tail's bytes to the pieces, so that something can be queued
    /// after them; a block less than half full is copied out at its size.
    fn freeze_tail(&mut self) {
        let len = self.tail.len() - self.head;
        let piece = if len * 2 < self.tail.capacity() {
            let data = Bytes::copy_from_slice(&self.tail[self.head..]);
            self.tail.clear();
            Piece { data, held: len }
        } else {
            let block = std::mem::take(&mut self.tail);
            let held = block.capacity();
            let mut data = Bytes::from(block);
            data.advance(self.head);
            Piece { data, held }
        };
        self.head = 0;
        self.pieces_held += piece.held;
        self.pieces.push_back(piece);
    }

    /// Gives an empty tail block back to the pool (or frees it).
    fn recycle_tail(&mut self, pool: &mut TailPool) {
        debug_assert!(self.tail.is_empty());
        let block = std::mem::take(&mut self.tail);
        if block.capacity() == TAIL_BLOCK && pool.len() < TAIL_POOL {
            pool.push(block);
        }
        self.head = 0;
    }

    /// Writes as much as the socket takes: `Ok(true)` when the queue is empty
    /// (its storage then released), `Ok(false)` when the socket is full.
    /// Each send or writev made adds one to `sends` (`Stats::sends`).
    #[inline]
    pub(crate) fn flush(
        &mut self,
        stream: &mut Stream,
        pool: &mut TailPool,
        sends: &mut u64,
    ) -> io::Result<bool> {
        if self.pieces.is_empty() && self.queued != 0 {
            // The common case, the tail alone (an echo's reply): a plain
            // send, and when it takes everything the block goes back.
            *sends += 1;
            let written = stream.write(&self.tail[self.head..]);
            if let Ok(n) = written {
                if n == self.queued {
                    self.queued = 0;
                    self.head = 0;
                    self.tail.clear();
                    self.release(pool);
                    return Ok(true);
                }
            }
            return self.flush_from(written, stream, pool, sends);
        }
        if self.is_empty() {
            self.release(pool);
            return Ok(true);
        }
        *sends += 1;
        let written = self.write_some(stream);
        self.flush_from(written, stream, pool, sends)
    }

    /// The rest of [`flush`](WriteQueue::flush) after a first write: the
    /// one loop that accounts for what the socket took and writes again.
    #[inline(never)]
    fn flush_from(
        &mut self,
        mut written: io::Result<usize>,
        stream: &mut Stream,
        pool: &mut TailPool,
        sends: &mut u64,
    ) -> io::Result<bool> {
        loop {
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
            if self.is_empty() {
                self.release(pool);
                return Ok(true);
            }
            *sends += 1;
            written = self.write_some(stream);
        }
    }

    /// One write of what is queued: a plain send of the tail alone (no
    /// iovec array to build), else a `writev` of the pieces and the tail.
    fn write_some(&self, stream: &mut Stream) -> io::Result<usize> {
        if self.pieces.is_empty() {
            stream.write(&self.tail[self.head..])
        } else {
            self.write_pieces(stream)
        }
    }

    /// One `writev` of the pieces and the tail (its own function: the iovec
    /// array would otherwise weigh on every flush's stack frame).
    #[inline(never)]
    fn write_pieces(&self, stream: &mut Stream) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (slot, piece) in slices[..MAX_IOVECS - 1].iter_mut().zip(self.pieces.iter()) {
            *slot = IoSlice::new(&piece.data);
            count += 1;
        }
        if count == self.pieces.len() && !self.tail.is_empty() {
            slices[count] = IoSlice::new(&self.tail[self.head..]);
            count += 1;
        }
        stream.write_vectored(&slices[..count])
    }

    /// Frees what an empty queue does not need.
    #[inline]
    fn release(&mut self, pool: &mut TailPool) {
        if self.tail.capacity() != 0 {
            self.tail.clear();
            self.recycle_tail(pool);
        }
        if self.pieces.capacity() > KEEP_SLOTS {
            self.pieces = VecDeque::new();
        }
    }

    /// Drops `n` sent bytes from the front.
    fn consume(&mut self, mut n: usize) {
        if n == self.queued && self.pieces.is_empty() {
            // All sent, from the tail alone: the common case.
            self.queued = 0;
            self.tail.clear();
            self.head = 0;
            return;
        }
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                self.head += n;
                debug_assert!(self.head <= self.tail.len(), "wrote more than was queued");
                if self.head == self.tail.len() {
                    self.tail.clear();
                    self.head = 0;
                } else {
                    self.shrink_sent_tail();
                }
                return;
            };
            if front.data.len() <= n {
                n -= front.data.len();
                self.pieces_held -= front.held;
                self.pieces.pop_front();
            } else {
                front.data.advance(n);
                // What is left of a large piece keeps all of it alive: copy
                // it out once that is more than twice what is left (a copy of
                // at most half, so the copying is paid for by the sending).
                if front.held > TAIL_BLOCK && front.data.len() * 2 < front.held {
                    let data = Bytes::copy_from_slice(&front.data);
                    self.pieces_held -= front.held - data.len();
                    front.held = data.len();
                    front.data = data;
                }
                return;
            }
        }
    }

    /// The same rule for a large tail block mostly sent.
    fn shrink_sent_tail(&mut self) {
        let left = self.tail.len() - self.head;
        if self.tail.capacity() > TAIL_BLOCK && left * 2 < self.tail.capacity() {
            self.tail.drain(..self.head);
            self.head = 0;
            self.tail.shrink_to(TAIL_BLOCK.max(left));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The invariant of docs/design.md: memory held is at most twice the
    /// payload plus a few KiB, for any pattern of writes and partial sends.
    fn check(q: &WriteQueue) {
        let limit = 2 * q.len() + 3 * TAIL_BLOCK;
        assert!(
            q.held() <= limit,
            "held {} for {} queued",
            q.held(),
            q.len()
        );
    }

    #[test]
    fn memory_follows_payload_for_mixed_writes() {
        let mut pool = TailPool::new();
        let mut q = WriteQueue::default();
        let big = Bytes::from(vec![7u8; 100_000]);
        let mut seed = 12345u32;
        let mut expect = Vec::new();
        for _ in 0..5000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let size = match seed >> 29 {
                0..=3 => (seed >> 8) as usize % 8 + 1,
                4 | 5 => (seed >> 8) as usize % 5000,
                _ => (seed >> 8) as usize % 100_000,
            };
            match seed & 3 {
                0 | 1 => q.push_copy(&big[..size], &mut pool),
                2 => q.push_bytes(big.slice(..size), None, &mut pool),
                _ => q.push_bytes(big.slice(..size), Some(64 * 1024), &mut pool),
            }
            expect.extend_from_slice(&big[..size]);
            check(&q);
            if seed & 16 == 0 {
                let n = (seed as usize >> 4) % (q.len() + 1);
                q.consume(n);
                expect.drain(..n);
                check(&q);
            }
        }
        let mut got = Vec::new();
        for p in &q.pieces {
            got.extend_from_slice(&p.data);
        }
        got.extend_from_slice(&q.tail[q.head..]);
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "order or content changed");
    }
}
