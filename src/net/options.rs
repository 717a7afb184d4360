//! [`ListenOptions`] and [`ConnOptions`]: how a listener is bound and what
//! its connections get, read like socketserver's class attributes.

use std::io;
use std::time::Duration;

/// How a listener is bound, and what its connections get.
///
/// Fields are public so options read like socketserver's class attributes:
/// start from `default()` and set what differs. The struct is
/// `#[non_exhaustive]` (options are added without breaking callers), so a
/// struct literal does not compile outside this crate, not even with
/// `..Default::default()`:
///
/// ```
/// use std::time::Duration;
/// use sockloop::ListenOptions;
///
/// let mut opts = ListenOptions::default();
/// opts.backlog = 4096;
/// opts.max_connections = Some(10_000);
/// opts.conn.idle_timeout = Some(Duration::from_secs(300));
/// assert!(opts.reuse_address);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Length of the kernel's queue of connections not yet accepted
    /// (`listen(2)` backlog). Default 1024; Python's socketserver uses 5, which
    /// refuses clients under any burst.
    pub backlog: u32,
    /// `SO_REUSEADDR`: rebind a port still in TIME_WAIT after a restart. Default on.
    pub reuse_address: bool,
    /// `SO_REUSEPORT`: several sockets (one reactor per core) share one port. Default off.
    pub reuse_port: bool,
    /// `IPV6_V6ONLY` for IPv6 binds: when false a `[::]` listener also takes IPv4. Default false.
    pub only_v6: bool,
    /// Stop accepting while this many connections from this listener are open;
    /// the kernel's backlog holds the rest until one closes. Default: no cap.
    pub max_connections: Option<usize>,
    /// Permissions of a Unix socket file (for example `0o660` to admit a
    /// group); the umask's otherwise. Default: none set.
    pub unix_mode: Option<u32>,
    /// Accept only clients in these networks; others are closed at once and
    /// logged. Default: everyone.
    pub allow: Option<crate::AllowList>,
    /// Every connection must begin with a PROXY protocol header (v1 or v2,
    /// as HAProxy's `send-proxy` / `send-proxy-v2` send it) before anything
    /// reaches the protocol. The header's client address is then the
    /// connection's peer: for the factory, the allow-list and
    /// [`Context::peer_addr`](crate::Context::peer_addr); the proxy's own
    /// address is [`Context::proxy_addr`](crate::Context::proxy_addr). A
    /// connection without a valid header within `proxy_timeout` is closed
    /// and logged. A connection waiting for its header counts against
    /// `max_connections` and the reactor's cap (it holds a descriptor), so
    /// a flood of silent ones waits in the backlog beyond the cap. Only for
    /// listeners that nothing but the proxy can reach: the header is
    /// believed. Default off.
    pub proxy_protocol: bool,
    /// How long a connection may take to send its whole PROXY header
    /// (default 5 s).
    pub proxy_timeout: Duration,
    /// Settings for every connection this listener accepts.
    pub conn: ConnOptions,
    /// Serve TLS with this configuration (feature `tls`): every accepted
    /// connection does its handshake on the loop before `on_open` (see
    /// [`Reactor::listen_tls`](crate::Reactor::listen_tls)). Default: none.
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl ListenOptions {
    /// Refuses settings that cannot be meant, when they are given (listen),
    /// not when the first connection meets them.
    pub(crate) fn check(&self) -> io::Result<()> {
        self.conn.check()
    }
}

/// A configuration mistake.
fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
            only_v6: false,
            max_connections: None,
            unix_mode: None,
            allow: None,
            proxy_protocol: false,
            proxy_timeout: Duration::from_secs(5),
            conn: ConnOptions::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Buffering and timeout settings of one stream connection: start from
/// `default()` and set what differs (the struct is `#[non_exhaustive]`, see
/// [`ListenOptions`]). Accepted connections get their listener's
/// [`ListenOptions::conn`]; outgoing ones are given theirs by
/// [`Reactor::connect_with`](crate::Reactor::connect_with).
///
/// ```
/// use sockloop::ConnOptions;
///
/// let mut conn = ConnOptions::default();
/// conn.high_water = 256 << 10;
/// conn.max_queued = Some(4 << 20);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnOptions {
    /// Stop reading from the peer once this many bytes wait in the write queue
    /// (default 64 KiB, Twisted's value): a peer that sends but never reads
    /// cannot grow the server's memory.
    pub high_water: usize,
    /// Read again, and call `on_drained`, once the queue is down to this many
    /// bytes (default 16 KiB). Above `high_water` it is refused (`InvalidInput`
    /// from `listen_with`, `connect_with` or `adopt`).
    pub low_water: usize,
    /// Close the connection with [`CloseReason::WriteQueueFull`] rather than
    /// queue more than this (default 64 MiB). `None` trusts the protocol to
    /// respect `on_drained`.
    ///
    /// [`CloseReason::WriteQueueFull`]: crate::CloseReason::WriteQueueFull
    pub max_queued: Option<usize>,
    /// A connection over its high-water mark holds back the producers that
    /// asked to wait for it ([`Context::pause_until_drained`]) for at most
    /// this long (default 1 s): if its queue is not down to its low-water
    /// mark by then (its peer stopped reading, or reads slower than that),
    /// it counts as stalled and its producers go on without it. It then
    /// meets `max_queued` if its peer does not catch up, and holds its
    /// producers back again once it is down to its low-water mark. One peer
    /// that stopped reading, or reads slowly, thus cannot hold back the
    /// others; a consumer must drain from the high-water mark to the
    /// low-water one (48 KiB by default) within this time to keep pacing
    /// its producers.
    ///
    /// [`Context::pause_until_drained`]: crate::Context::pause_until_drained
    pub stall_timeout: Duration,
    /// Close connections that neither read nor wrote for this long. Default:
    /// never (as is any duration too long for the clock, `Duration::MAX`
    /// included: every deadline of the reactor saturates).
    pub idle_timeout: Option<Duration>,
    /// `TCP_NODELAY` on accepted and connected TCP sockets. Default on: the
    /// write queue already coalesces, so Nagle only adds latency.
    pub nodelay: bool,
    /// Give up an outgoing connect after this long (default 30 s), with
    /// [`CloseReason::ConnectFailed`]. Not used for accepted connections.
    ///
    /// [`CloseReason::ConnectFailed`]: crate::CloseReason::ConnectFailed
    pub connect_timeout: Option<Duration>,
    /// After `close()`, how long the peer may take none of the bytes still
    /// owed to it (queued, or sent but not yet acknowledged) before the
    /// connection is cut off (default 30 s), with
    /// [`CloseReason::PeerStalled`] and a warning that counts the bytes
    /// lost. A peer that keeps taking bytes, however slowly, is not cut off:
    /// meanwhile its input is read and dropped (it costs reads, not memory,
    /// and it is bounded: see `close_discard`).
    /// The check looks every quarter of this, so
    /// the cut comes up to about half as much again after the last progress.
    ///
    /// [`CloseReason::PeerStalled`]: crate::CloseReason::PeerStalled
    pub close_stall: Duration,
    /// Once the peer has everything (the queue sent and acknowledged, the
    /// write side shut down: the peer reads to a clean end of stream), how
    /// long to wait for the peer to close its side (default 2 s). Whatever
    /// the peer still sends is read and dropped: closing a socket with
    /// unread input resets the connection, and a reset throws away what the
    /// peer has not read yet. A peer that sent anything during this time is
    /// closed with [`CloseReason::PeerKeptSending`] when it is up.
    ///
    /// [`CloseReason::PeerKeptSending`]: crate::CloseReason::PeerKeptSending
    pub close_linger: Duration,
    /// How many bytes the peer may send, once it has everything (see
    /// `close_linger`), before the connection is closed anyway with
    /// [`CloseReason::PeerKeptSending`] (default 1 MiB). Before that, while
    /// the peer is still taking our bytes, its input is never a reason to
    /// cut it off (a peer that uploads while it reads the answer would lose
    /// the rest of the answer to the reset): it is read and dropped up to
    /// this plus 4 times what the socket took since `close()`, and beyond
    /// that left unread (TCP's flow control holds the peer back) until the
    /// peer takes more.
    ///
    /// [`CloseReason::PeerKeptSending`]: crate::CloseReason::PeerKeptSending
    pub close_discard: usize,
    /// Whether a close waits for the peer's end of stream even when no
    /// more input is expected (default [`LingeringClose::Always`]).
    pub lingering_close: LingeringClose,
    /// The most input a protocol may leave unconsumed in `on_data` (a
    /// request still incomplete), beyond which the connection is closed
    /// with [`CloseReason::InputOverLimit`] once its queued bytes are
    /// sent: the input bound of a raw protocol, as
    /// [`FrameHandler::max_frame`](crate::FrameHandler::max_frame) is a
    /// framed one's. Input left while reading is paused does not count
    /// (it is offered again). Default `None`: the protocol bounds its input.
    ///
    /// [`CloseReason::InputOverLimit`]: crate::CloseReason::InputOverLimit
    pub max_unconsumed: Option<usize>,
    /// A TLS connection whose handshake is not done this long after the
    /// accept or connect is closed with [`CloseReason::Tls`] (default
    /// 10 s): a client that connects and stalls cannot hold a descriptor.
    ///
    /// [`CloseReason::Tls`]: crate::CloseReason::Tls
    pub tls_handshake_timeout: Duration,
    /// A TLS peer that sends more than this many bytes before the
    /// handshake is done is cut off with [`CloseReason::Tls`] (default
    /// 64 KiB: a client's hello and certificates fit with room to spare).
    ///
    /// [`CloseReason::Tls`]: crate::CloseReason::Tls
    pub tls_handshake_limit: usize,
}

impl ConnOptions {
    /// Refuses settings that cannot be meant (see [`ListenOptions::check`]).
    pub(crate) fn check(&self) -> io::Result<()> {
        if self.low_water > self.high_water {
            return Err(invalid(format!(
                "low_water ({}) is above high_water ({}): reading would resume at once",
                self.low_water, self.high_water
            )));
        }
        Ok(())
    }
}

impl Default for ConnOptions {
    fn default() -> ConnOptions {
        ConnOptions {
            high_water: 64 * 1024,
            low_water: 16 * 1024,
            max_queued: Some(64 * 1024 * 1024),
            stall_timeout: Duration::from_secs(1),
            idle_timeout: None,
            nodelay: true,
            connect_timeout: Some(Duration::from_secs(30)),
            close_stall: Duration::from_secs(30),
            close_linger: Duration::from_secs(2),
            close_discard: 1024 * 1024,
            lingering_close: LingeringClose::Always,
            max_unconsumed: None,
            tls_handshake_timeout: Duration::from_secs(10),
            tls_handshake_limit: 64 * 1024,
        }
    }
}

/// When a close after flush waits for the peer's end of stream
/// ([`ConnOptions::lingering_close`]; nginx's `lingering_close on|auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LingeringClose {
    /// Always (the default): once the queue is sent, shut down the write
    /// side, read and drop what the peer still sends, and close at its end
    /// of stream, or `close_linger` after it has everything. A close then
    /// never resets the connection, whatever the peer does.
    #[default]
    Always,
    /// Only when more input may come: a connection whose input was read up
    /// to what had arrived (nothing left unconsumed or sent since
    /// `close()`, and, asked of the kernel when the queue is sent, nothing
    /// unread: `SIOCINQ`) and whose peer has acknowledged every byte
    /// (`SIOCOUTQ`) closes at once, without waiting for the peer: the
    /// kernel sends the end of stream after the data, and the descriptor is
    /// free at once. Others linger as with `Always`. Bytes the
    /// peer sends later are answered with a reset: a Linux peer still reads
    /// everything it was sent, but may then get the reset instead of a
    /// clean end of stream (other systems may drop what the peer had not
    /// read). For protocols whose peer sends nothing after the last answer
    /// and does not take the end of stream as part of it (an HTTP response
    /// with a `Content-Length` to `Connection: close`, a reply to QUIT).
    /// `Framed`'s own closes, after a refused frame or one that took too
    /// long, always linger (the rest of the frame may still come), and
    /// [`Context::set_lingering_close`](crate::Context::set_lingering_close)
    /// makes one connection's close linger (an error answer): it
    /// saves the wait for the peer's FIN (an event and a read, for two
    /// `ioctl`s) and up to `close_linger` of the descriptor per connection
    /// (nginx's default).
    Auto,
}
