//! Relaying two connections into each other (Twisted's portforward): the
//! bytes one side reads are queued on the other without a copy, the side
//! that produces pauses while the other is over its high-water mark, a
//! half-close crosses over, and the end of either ends both.

use bytes::BytesMut;

use crate::reactor::conn::Closing;
use crate::reactor::handler::ConnHandler;
use crate::{CloseReason, ConnId, Reactor, TimerId};

/// The handler of one side of a link.
struct Relay {
    other: ConnId,
}

impl ConnHandler for Relay {
    fn on_open(&mut self, _r: &mut Reactor, _id: ConnId) {}

    fn on_data(&mut self, r: &mut Reactor, id: ConnId, data: &mut BytesMut) {
        let chunk = data.split().freeze();
        // Over its high-water mark: this side reads again when it drains
        // (its `on_drained`), not after a stall timeout.
        if r.write_bytes(self.other, chunk).is_ok()
            && r.conn_ref(self.other).is_some_and(|c| c.over_high_water)
        {
            r.set_reading(id, false);
        }
    }

    /// This side drained what the other sent: the other reads again.
    fn on_drained(&mut self, r: &mut Reactor, _id: ConnId) {
        r.set_reading(self.other, true);
    }

    /// The peer of this side will send no more: neither will the other
    /// side's peer be sent more (FIN, once what is queued is sent). Once
    /// both peers are done, both close when their queues are sent.
    fn on_eof(&mut self, r: &mut Reactor, id: ConnId) {
        r.shutdown_write(self.other);
        if r.conn_ref(self.other).is_none_or(|c| c.eof) {
            r.close(id);
            r.close(self.other);
        }
    }

    fn on_timer(&mut self, _r: &mut Reactor, _id: ConnId, _timer: TimerId) {}

    /// A relay cannot tell a finished transfer from one under way (an
    /// EOF-delimited download looks idle between reads): it goes on until
    /// its peers end it, and the grace period's end cuts it (`on_close`).
    fn on_shutdown(&mut self, _r: &mut Reactor, _id: ConnId) {}

    /// The other side ends too, after sending what it holds, with this
    /// side's reason when it was not clean. Cut by the end of a graceful
    /// shutdown's grace, both sides are reset (`SO_LINGER` 0), not closed
    /// with a FIN: a peer must not take a cut transfer for a complete one.
    fn on_close(&mut self, r: &mut Reactor, id: ConnId, reason: &CloseReason) {
        if matches!(reason, CloseReason::ReactorStopped) {
            for side in [id, self.other] {
                if let Some(conn) = r.conn(side) {
                    conn.stream.reset_on_close();
                }
            }
            r.close_id(self.other, Closing::Now(CloseReason::ReactorStopped));
            return;
        }
        let reason = if reason.is_clean() {
            CloseReason::Closed
        } else {
            CloseReason::Protocol(format!("the connection relayed to, {id}, ended: {reason}"))
        };
        r.close_id(self.other, Closing::AfterFlush(reason));
    }
}

impl Reactor {
    /// Relays connections `a` and `b` into each other from now on
    /// (Twisted's portforward): what either reads is queued on the other
    /// without a copy (as [`write_bytes`](Reactor::write_bytes) does); the
    /// side that produces stops reading while the other's queue is over
    /// its high-water mark and reads again when that one is down to its
    /// low-water mark, however long that takes (its memory stays bounded
    /// by about one high-water mark and one read); a peer's half-close is
    /// passed on (FIN to the other peer once its bytes are sent); a close
    /// or reset of either ends the other, after it has sent what it holds,
    /// with a reason that names the first. Input `a` or `b` left
    /// unconsumed goes across first.
    ///
    /// Their protocols are dropped (without `on_close`): from now on the
    /// reactor serves them. Called from a callback, it takes effect when
    /// the callback returns. Fails with `NotConnected` if either is not
    /// open (nothing changes then).
    ///
    /// ```no_run
    /// use sockloop::{Addr, Context, Protocol, Reactor};
    /// use bytes::BytesMut;
    ///
    /// /// The backend side: links itself to the client once connected.
    /// struct Backend(sockloop::ConnId);
    /// impl Protocol for Backend {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         let _ = cx.pipe(self.0);
    ///     }
    ///     fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {}
    /// }
    /// ```
    pub fn link(&mut self, a: ConnId, b: ConnId) -> std::io::Result<()> {
        let open = |r: &Reactor, id| {
            r.conn_ref(id)
                .is_some_and(|c| matches!(c.closing, Closing::No))
        };
        if a == b || !open(self, a) || !open(self, b) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("cannot link {a} and {b}: not two open connections"),
            ));
        }
        self.after_callback(move |r| {
            for (id, other) in [(a, b), (b, a)] {
                let Some(conn) = r.conn(id) else { continue };
                let old = conn.handler.replace(Box::new(Relay { other }));
                conn.paused_by_user = false;
                let eof = conn.eof;
                // Input left unconsumed goes across first: offered to the
                // relay again, or, after the peer's FIN (no read comes any
                // more to offer it), written across now.
                let early = if eof {
                    conn.rbuf.take().filter(|b| !b.is_empty())
                } else {
                    conn.redeliver = conn.rbuf.as_ref().is_some_and(|b| !b.is_empty());
                    None
                };
                if let Some(old) = old {
                    r.guarded("dropping a linked protocol", move |_| drop(old));
                }
                if let Some(early) = early {
                    let _ = r.write_bytes(other, early.freeze());
                }
                if eof {
                    r.shutdown_write(other);
                }
                r.schedule_read(id.key());
            }
        });
        Ok(())
    }

    /// `id`'s peer closed its side (sent FIN): nothing more will be read
    /// from it. False for a closed connection.
    pub fn peer_closed(&self, id: ConnId) -> bool {
        self.conn_ref(id).is_some_and(|c| c.eof)
    }
}
