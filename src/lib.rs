//! Nonblocking network servers on one thread: a [`Reactor`] on `mio` that
//! serves many listening ports (TCP, Unix stream) and datagram sockets (UDP,
//! Unix datagram) in one loop, with asyncore-style callbacks ([`Protocol`]),
//! asynchat-style framing ([`Framed`]), and writes that never block.
//!
//! The classic select echo server, on two ports at once:
//!
//! ```
//! use std::io::{Read, Write};
//! use sockloop::bytes::BytesMut;
//! use sockloop::{Addr, Context, Protocol, Reactor};
//!
//! struct Echo;
//!
//! impl Protocol for Echo {
//!     fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
//!         cx.write_buf(data); // all of it: large reads as they are, small ones copied
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let any_port: Addr = "127.0.0.1:0".parse()?;
//! let first = reactor.listen(&any_port, |_peer| Echo)?;
//! let second = reactor.listen(&any_port, |_peer| Echo)?;
//! let ports = [reactor.listener_addr(first)?, reactor.listener_addr(second)?];
//!
//! // A client on another thread talks to both ports, then stops the loop.
//! let handle = reactor.handle();
//! let client = std::thread::spawn(move || -> std::io::Result<()> {
//!     for addr in ports {
//!         let mut stream = std::net::TcpStream::connect(addr.as_inet().unwrap())?;
//!         stream.write_all(b"Hello network world")?;
//!         let mut reply = [0; 19];
//!         stream.read_exact(&mut reply)?;
//!         assert_eq!(&reply, b"Hello network world");
//!     }
//!     handle.stop();
//!     Ok(())
//! });
//! reactor.run()?;
//! client.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! How a byte travels (readiness, read, protocol, write queue, socket) and the
//! rules for backpressure and closing are in [`guide::design`]; a table from
//! asyncore, asynchat and the select server to this crate is in
//! [`guide::asyncore`]; socketserver users start at [`guide::socketserver`];
//! long work is [`guide::offload`]'s subject. All pages are listed in
//! [`guide`].
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]

// One clear message instead of a page of unresolved `libc` items: the crate
// relies on signalfd, SOCK_CLOEXEC / MSG_CMSG_CLOEXEC, MSG_NOSIGNAL, TIOCOUTQ
// and /proc, and is built and tested on Linux only.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "sockloop supports Linux only: it uses signalfd, SOCK_CLOEXEC, MSG_CMSG_CLOEXEC, \
     MSG_NOSIGNAL, TIOCOUTQ and /proc, which macOS and the BSDs lack or spell differently"
);

// The layers, bottom up (docs/design.md): each module imports only from the
// ones above it in this list.
pub mod guide;
mod net;
mod offload;
mod process;
mod protocol;
mod reactor;
pub mod restart;
pub mod server;

/// The `bytes` crate this API speaks (`Bytes`, `BytesMut` in `on_data`,
/// `write_bytes`, frames): `use sockloop::bytes::BytesMut;` needs no
/// dependency of your own and always matches sockloop's version.
pub use bytes;

/// The kinds of [`Context`]: a stream connection's (the default) and a
/// datagram socket's ([`DatagramContext`]), which share what they can both do.
pub mod context {
    pub use crate::protocol::context::{Datagram, Kind, Stream};
}

pub use net::addr::Addr;
pub use net::allow::AllowList;
pub use net::blocking::{BlockingDatagram, BlockingStream};
#[cfg(feature = "tls")]
pub use net::tls;
pub use net::{activation, proxy};
pub use net::{ConnOptions, LingeringClose, ListenOptions};
pub use offload::{OffloadOptions, ProcessPool};
pub use protocol::context::{Context, DatagramContext};
pub use protocol::framing::{
    Cut, Decoder, FrameDecoder, FrameError, FrameHandler, Framed, HttpError, HttpRequest,
    HttpRequests, Netstrings, Oversized, Resp, RespCommand, Terminator,
};
pub use protocol::{DatagramProtocol, Protocol};
pub use reactor::error::QueueFull;
pub use reactor::handle::Handle;
pub use reactor::id::{ConnId, ListenerId, TimerId};
pub use reactor::multi::{Reactors, ReactorsHandle};
pub use reactor::producer::Producer;
pub use reactor::reason::CloseReason;
pub use reactor::{Reactor, Stats};

/// The README's example is compiled as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Dropping these at once is a mistake the compiler reports: a builder that
/// binds nothing, a server shut down as soon as it started, reactors whose
/// threads nobody joins.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// sockloop::server::ServerBuilder::new(sockloop::server::Family::Tcp)
///     .bind("127.0.0.1:0".parse().unwrap());
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # use sockloop::server::{Family, Request, ServerBuilder};
/// # fn f() -> std::io::Result<()> {
/// ServerBuilder::new(Family::Tcp)
///     .bind("127.0.0.1:0".parse().unwrap())
///     .spawn(|| |_: &mut Request| Ok(()))?;
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # use sockloop::server::{Family, Request, ServerBuilder};
/// # fn f() -> std::io::Result<()> {
/// ServerBuilder::new(Family::Tcp)
///     .bind("127.0.0.1:0".parse().unwrap())
///     .build(|| |_: &mut Request| Ok(()))?;
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # fn f() -> std::io::Result<()> {
/// sockloop::Reactors::spawn(1, |_, _| Ok(()))?;
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # use sockloop::{bytes::BytesMut, FrameDecoder, Terminator};
/// let mut buf = BytesMut::from(&b"far too long"[..]);
/// FrameDecoder::default().skip_frame(&mut buf, Terminator::Delimiter(b"\n"));
/// ```
///
/// The same code that keeps the values compiles:
///
/// ```
/// #![deny(unused_must_use)]
/// # use sockloop::server::{Family, Request, ServerBuilder};
/// # fn f() -> std::io::Result<()> {
/// let builder = ServerBuilder::new(Family::Tcp).bind("127.0.0.1:0".parse().unwrap());
/// let server = builder.spawn(|| |_: &mut Request| Ok(()))?;
/// server.shutdown()?;
/// let server = ServerBuilder::new(Family::Tcp)
///     .bind("127.0.0.1:0".parse().unwrap())
///     .build(|| |_: &mut Request| Ok(()))?;
/// drop(server);
/// let reactors = sockloop::Reactors::spawn(1, |_, _| Ok(()))?;
/// reactors.handle().stop();
/// reactors.join()?;
/// # Ok(()) }
/// ```
#[cfg(doctest)]
struct MustUseDoctests;

/// Options and enums that will grow are `#[non_exhaustive]`, so growing them
/// breaks no caller: options start from `default()`, and a `match` on an
/// enum has a catch-all arm.
///
/// ```compile_fail,E0639
/// let opts = sockloop::ListenOptions { backlog: 16, ..Default::default() };
/// ```
///
/// ```compile_fail,E0639
/// let opts = sockloop::ConnOptions { nodelay: false, ..Default::default() };
/// ```
///
/// ```compile_fail,E0639
/// let opts = sockloop::OffloadOptions { workers: 2, ..Default::default() };
/// ```
///
/// ```compile_fail,E0639
/// let stats = sockloop::Stats { accepted: 1, ..Default::default() };
/// ```
///
/// ```compile_fail,E0004
/// fn clean(reason: &sockloop::CloseReason) -> bool {
///     use sockloop::CloseReason::*;
///     match reason {
///         Closed | PeerClosed => true,
///         Reset | ConnectFailed(_) | IdleTimeout | WriteQueueFull { .. } | Panicked(_)
///         | Protocol(_) | Error(_) | ReactorStopped | PeerKeptSending { .. }
///         | PeerStalled { .. } | InputOverLimit { .. } => false,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn name(t: sockloop::Terminator<'_>) -> &'static str {
///     use sockloop::Terminator::*;
///     match t { Delimiter(_) => "d", Count(_) => "c", LengthPrefixed => "l", None => "n", Raw => "r" }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn name(m: &sockloop::server::Mode) -> &'static str {
///     use sockloop::server::Mode::*;
///     match m { Sync => "s", Threading { .. } => "t", Forking { .. } => "f", Pool { .. } => "p" }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn name(f: sockloop::server::Family) -> &'static str {
///     use sockloop::server::Family::*;
///     match f { Tcp => "t", Udp => "u", UnixStream => "s", UnixDatagram => "d" }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn name(o: sockloop::Oversized) -> &'static str {
///     match o { sockloop::Oversized::Close => "c", sockloop::Oversized::Skip => "s" }
/// }
/// ```
#[cfg(doctest)]
struct NonExhaustiveDoctests;
