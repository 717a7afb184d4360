//! TLS as a transport between a stream connection's socket and its protocol
//! (feature `tls`). rustls is a state machine without I/O of its own, so it
//! runs on the loop like any other bytes:
//!
//! - **Input**: rustls reads ciphertext from the socket and hands back
//!   plaintext, which lands in the same read buffer a plain read fills
//!   ([`TlsConn::read`], called by `read_conn`); the protocol's `on_data`
//!   and `Framed` see no difference.
//! - **Output**: what the protocol writes is encrypted at once and the
//!   records go into the connection's ordinary write queue
//!   ([`TlsConn::encrypt`]): the water marks, `max_queued`, backpressure and
//!   the close bounds count and hold the bytes that go to the socket, as for a
//!   plain connection. rustls itself holds nothing between calls (its own
//!   buffer limit is off, since each call empties it into the queue).
//! - **Handshake**: on the loop, without blocking; `on_open` runs when it is
//!   done. It is bounded in time (`ConnOptions::tls_handshake_timeout`, from
//!   the accept or connect) and in bytes read
//!   (`ConnOptions::tls_handshake_limit`). A failure (a plain-text client, a
//!   bad certificate, a timeout) sends rustls' alert if the socket takes it,
//!   logs one line and closes the connection with [`CloseReason::Tls`].
//! - **Closing**: `close()` queues close_notify behind the queued data, then
//!   the usual shutdown and linger follow; the peer's close_notify is
//!   `on_eof`; an end of stream without it is `on_eof` too, and the close is
//!   reported as [`CloseReason::TlsTruncated`]; `abort()` sends nothing.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::mem;
use std::sync::Arc;

use bytes::BytesMut;

use crate::net::tls::{server_name as server_name_of, tls_error};
use crate::net::Stream;
use crate::reactor::conn::{Closing, Conn};
use crate::reactor::handler::ConnHandler;
use crate::reactor::wqueue::{TailPool, WriteQueue};
use crate::reactor::{conn_in, TimerTarget};
use crate::{Addr, CloseReason, ConnId, ConnOptions, Reactor, TimerId};

/// The TLS state of one connection.
pub(crate) struct TlsConn {
    session: rustls::Connection,
    /// Ciphertext read while handshaking, against `handshake_limit`.
    handshake_read: usize,
    handshake_limit: usize,
    handshake_timer: Option<TimerId>,
    /// The handshake completed during a read: `on_open` is due.
    open_due: bool,
    /// rustls produced records during a read (handshake messages, an alert,
    /// a key update): they are in the queue, a flush is due.
    output: bool,
    /// Why the session failed during a read: the connection closes.
    failure: Option<String>,
    notify_queued: bool,
    /// The peer's stream ended without close_notify.
    truncated: bool,
    /// Plaintext written before rustls may send application data: rustls
    /// holds it (not the write queue) until then; counted against
    /// `max_queued` and reported with the queue.
    early: usize,
}

impl TlsConn {
    fn new(mut session: rustls::Connection, opts: &ConnOptions) -> Box<TlsConn> {
        // Each call moves rustls' records into the write queue, whose own
        // limits apply; rustls' limit would only make writes fail.
        session.set_buffer_limit(None);
        Box::new(TlsConn {
            session,
            handshake_read: 0,
            handshake_limit: opts.tls_handshake_limit,
            handshake_timer: None,
            open_due: false,
            output: false,
            failure: None,
            notify_queued: false,
            truncated: false,
            early: 0,
        })
    }

    fn server(config: Arc<rustls::ServerConfig>, opts: &ConnOptions) -> io::Result<Box<TlsConn>> {
        let session = rustls::ServerConnection::new(config).map_err(tls_error)?;
        Ok(TlsConn::new(session.into(), opts))
    }

    /// Encrypts `data` and queues the records.
    pub(crate) fn encrypt(&mut self, data: &[u8], wq: &mut WriteQueue, pool: &mut TailPool) {
        // Without a buffer limit rustls takes everything (before the end of
        // the handshake it keeps the plaintext and encrypts it then).
        let _ = self.session.writer().write_all(data);
        // Records out: rustls sends application data now (and sent what it
        // held). None: it holds `data` until the handshake is done.
        if self.take_output(wq, pool) {
            self.early = 0;
        } else {
            self.early += data.len();
        }
    }

    /// Moves the records rustls has ready into the write queue; true if any.
    fn take_output(&mut self, wq: &mut WriteQueue, pool: &mut TailPool) -> bool {
        let mut any = false;
        while self.session.wants_write() {
            match self.session.write_tls(&mut QueueSink { wq, pool }) {
                Ok(0) | Err(_) => break, // the sink takes all: not reached
                Ok(_) => any = true,
            }
        }
        any
    }

    /// Queues close_notify (once); true if it did now.
    pub(crate) fn queue_close_notify(&mut self, wq: &mut WriteQueue, pool: &mut TailPool) -> bool {
        if mem::replace(&mut self.notify_queued, true) {
            return false;
        }
        self.session.send_close_notify();
        self.take_output(wq, pool);
        true
    }

    /// True until close_notify is queued.
    #[inline]
    pub(crate) fn notify_due(&self) -> bool {
        !self.notify_queued
    }

    /// Reads ciphertext from `stream` and puts the plaintext in the spare
    /// room of `buf`, as a plain read would: `Ok(n)` plaintext bytes,
    /// `Ok(0)` the end of the peer's stream (close_notify, or a truncation,
    /// noted), `WouldBlock` when the socket has nothing more. It goes on
    /// until `buf` is full or the socket is drained, so a short count means
    /// the socket is drained, unless the stream ended meanwhile: then
    /// `trust_short_read` is cleared, as the end is already taken from the
    /// socket and no edge will announce it. What rustls produces on the way
    /// (records for the peer, the end of the handshake, a failure) is noted
    /// for [`Reactor::tls_events`].
    ///
    /// Not inlined: the plain read path it sits beside stays as small.
    #[inline(never)]
    pub(crate) fn read(
        &mut self,
        stream: &Stream,
        wq: &mut WriteQueue,
        pool: &mut TailPool,
        buf: &mut BytesMut,
        trust_short_read: &mut bool,
    ) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let room = buf.capacity() - buf.len();
            if room == 0 {
                return Ok(total);
            }
            let mut reader = self.session.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    // close_notify came: a clean end of stream.
                    *trust_short_read = false;
                    return Ok(total);
                }
                Ok(chunk) => {
                    let n = chunk.len().min(room);
                    buf.extend_from_slice(&chunk[..n]);
                    reader.consume(n);
                    total += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    if self.session.is_handshaking() {
                        return self.fail("peer closed the connection during the handshake");
                    }
                    self.truncated = true;
                    *trust_short_read = false;
                    return Ok(total);
                }
                Err(e) => return Err(e),
            }
            match self.session.read_tls(&mut SocketReader(stream)) {
                // The end of the socket's stream: rustls notes it, and the
                // reader above reports it next.
                Ok(0) => continue,
                Ok(n) if self.session.is_handshaking() => {
                    self.handshake_read += n;
                    if self.handshake_read > self.handshake_limit {
                        let limit = self.handshake_limit;
                        return self.fail(format!("handshake over its {limit}-byte limit"));
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if total > 0 { Ok(total) } else { Err(e) };
                }
                Err(e) => return Err(e),
            }
            let handshaking = self.session.is_handshaking();
            let processed = self.session.process_new_packets();
            // Handshake messages, or the alert that reports a failure.
            self.output |= self.take_output(wq, pool);
            if let Err(e) = processed {
                return self.fail(e.to_string());
            }
            if handshaking && !self.session.is_handshaking() {
                self.open_due = true;
                // What rustls held went out with the handshake's end.
                self.early = 0;
            }
        }
    }

    /// Notes a failure for `tls_events`; the read stops.
    fn fail(&mut self, why: impl Into<String>) -> io::Result<usize> {
        self.failure = Some(why.into());
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// A `Read` over the connection's socket for rustls' `read_tls`.
struct SocketReader<'a>(&'a Stream);

impl Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0 {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

/// A `Write` that appends to a write queue, for rustls' `write_tls`.
struct QueueSink<'a> {
    wq: &'a mut WriteQueue,
    pool: &'a mut TailPool,
}

impl Write for QueueSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.wq.push_copy(data, self.pool);
        Ok(data.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.wq.push_copy(b, self.pool);
            n += b.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn {
    /// Plaintext rustls holds until the end of the handshake (0 for a plain
    /// connection): written, not yet in the queue.
    #[inline]
    pub(crate) fn tls_held(&self) -> usize {
        self.tls.as_deref().map_or(0, |t| t.early)
    }

    /// Puts the handshake timer in place (set by `add_conn`).
    fn set_handshake_timer(&mut self, timer: TimerId) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.handshake_timer = Some(timer);
        }
    }

    /// At the close: the handshake timer to cancel, and the reason made
    /// precise: a clean close after a truncated stream says so.
    pub(crate) fn tls_finish(&mut self, reason: &mut CloseReason) -> Option<TimerId> {
        let tls = self.tls.as_deref_mut()?;
        if tls.truncated && reason.is_clean() {
            *reason = CloseReason::TlsTruncated;
        }
        tls.handshake_timer.take()
    }
}

impl Reactor {
    /// Opens an outgoing TLS connection served by `handler` (see
    /// `Reactor::connect_tls`): the connect, then the handshake verifying
    /// `server_name`, then `on_open`.
    pub(crate) fn connect_tls_handler(
        &mut self,
        addr: &Addr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        opts: &ConnOptions,
        handler: Box<dyn ConnHandler>,
    ) -> io::Result<ConnId> {
        let name = server_name_of(server_name)?;
        let session = rustls::ClientConnection::new(config, name).map_err(tls_error)?;
        let tls = TlsConn::new(session.into(), opts);
        let id = self.connect_inner(addr, opts, handler, Some(tls))?;
        // The ClientHello waits in the queue for the connect to complete.
        if let Some(conn) = conn_in(&mut self.sources, id.key()) {
            if let Some(tls) = conn.tls.as_deref_mut() {
                tls.take_output(&mut conn.wq, &mut self.tails);
            }
        }
        Ok(id)
    }

    /// The TLS state for a connection accepted by a listener with
    /// `config`; `None` (and a log line) if rustls refuses to start.
    pub(crate) fn tls_accepting(
        config: &Arc<rustls::ServerConfig>,
        opts: &ConnOptions,
        peer: &Addr,
    ) -> Option<Box<TlsConn>> {
        match TlsConn::server(Arc::clone(config), opts) {
            Ok(tls) => Some(tls),
            Err(e) => {
                log::error!("cannot start TLS for {peer}: {e}; connection dropped");
                None
            }
        }
    }

    /// Arms the handshake timeout of a new TLS connection.
    pub(crate) fn tls_added(&mut self, id: ConnId) {
        let Some(conn) = self.conn(id) else { return };
        let limit = conn.opts.tls_handshake_timeout;
        let timer = self
            .timers
            .insert(self.now, limit, TimerTarget::TlsHandshake(id));
        if let Some(conn) = self.conn(id) {
            conn.set_handshake_timer(timer);
        }
    }

    pub(crate) fn tls_handshake_expired(&mut self, id: ConnId) {
        let Some(conn) = self.conn(id) else { return };
        let Some(tls) = conn.tls.as_deref_mut() else {
            return;
        };
        tls.handshake_timer = None;
        if !tls.session.is_handshaking() {
            return;
        }
        let limit = conn.opts.tls_handshake_timeout;
        tls.failure = Some(format!("handshake not done within {limit:?}"));
        self.tls_events(id.key());
    }

    /// Acts on what a TLS read noted: a failure closes the connection (after
    /// one try to send rustls' alert), records for the peer are flushed, the
    /// end of the handshake calls `on_open`. False when the connection
    /// should not go on with the plaintext read (it closed, closes or
    /// paused meanwhile).
    #[inline(never)]
    pub(crate) fn tls_events(&mut self, key: usize) -> bool {
        let Some(conn) = conn_in(&mut self.sources, key) else {
            return false;
        };
        let Some(tls) = conn.tls.as_deref_mut() else {
            return true;
        };
        if let Some(why) = tls.failure.take() {
            // A flood of failing clients costs no peer lookup nor string
            // unless the line is written.
            if log::log_enabled!(log::Level::Info) {
                let id = ConnId::new(key, conn.gen);
                let peer = conn
                    .stream
                    .peer_addr()
                    .map_or_else(|_| "no peer".to_string(), |a| a.to_string());
                log::info!("{id} ({peer}): TLS: {why}; closing");
            }
            // The alert, if the socket takes it now; nothing else waits.
            if matches!(conn.closing, Closing::No) {
                let _ = conn.flush(&mut self.tails, &mut self.stats.sends, self.now);
            }
            self.close_at(key, Closing::Now(CloseReason::Tls(why)));
            return false;
        }
        let output = mem::take(&mut tls.output);
        let open = mem::take(&mut tls.open_due);
        let timer = if open {
            tls.handshake_timer.take()
        } else {
            None
        };
        if output {
            conn.note_queued();
            self.schedule_flush(key);
        }
        if let Some(timer) = timer {
            self.timers.cancel(timer);
        }
        if !open {
            return true;
        }
        self.opened(key);
        conn_in(&mut self.sources, key).is_some_and(|c| c.wants_read() && !c.discards_input())
    }
}
