//! Plumbing shared by the example programs, so that each example shows only
//! its protocol. Included with `mod common;`; cargo does not build a
//! directory's `mod.rs` as an example of its own.

// Each example uses a different subset of these helpers.
#![allow(dead_code)]

pub mod http_reply;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;
use sockloop::activation::InheritedSocket;
use sockloop::restart::RestartOptions;
use sockloop::server::{Family, Request, Server, ServerBuilder};
use sockloop::{Addr, ListenOptions, Protocol, Reactor};

/// The program's name, for error messages. This file is compiled into each
/// example, so the crate name is the example's own.
pub const PROGRAM: &str = env!("CARGO_CRATE_NAME");

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init_logger() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// Runs a program's body and turns its result into the exit status: an
/// error is one line on stderr and exit code 1, never a panic and backtrace
/// (which is what returning `Err` from `main` would print in debug form).
pub fn run(body: impl FnOnce() -> io::Result<()>) -> ExitCode {
    // Before any thread: it changes the environment.
    let taken = sockloop::activation::take().map(|sockets| {
        if let Some(sockets) = &sockets {
            log::info!(
                "socket activation: {} inherited sockets; no default address is bound",
                sockets.len()
            );
        }
        *INHERITED.lock().unwrap() = sockets;
    });
    match taken.and_then(|()| body()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sockets passed by socket activation (systemd, or the process this one
/// replaces in a restart), until a program takes them.
static INHERITED: Mutex<Option<Vec<InheritedSocket>>> = Mutex::new(None);

/// The sockets passed by socket activation, if any: a program serves those
/// and binds none of its own addresses.
pub fn inherited() -> Option<Vec<InheritedSocket>> {
    INHERITED.lock().unwrap().take()
}

/// `addr` on a socketserver-style server being built, or the inherited
/// sockets instead when there are any.
pub fn bind(
    builder: ServerBuilder,
    addr: impl FnOnce() -> io::Result<Addr>,
) -> io::Result<ServerBuilder> {
    match inherited() {
        Some(sockets) => Ok(sockets.into_iter().fold(builder, ServerBuilder::inherit)),
        None => Ok(builder.bind(addr()?)),
    }
}

/// `--proxy-protocol`: connections come through a load balancer that
/// sends a PROXY header (HAProxy's `send-proxy` / `send-proxy-v2`).
#[derive(clap::Args)]
pub struct Proxy {
    /// Every connection begins with a PROXY protocol header (v1 or v2) naming
    /// the real client; a connection without one is closed.
    #[arg(long)]
    pub proxy_protocol: bool,
}

/// Where the classic programs meet: Python's examples use port 50007, on
/// this machine unless told otherwise.
const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 50007;

/// `--host` and `--port` of a server with one socket. Flattened into a
/// program's arguments with `#[command(flatten)]`.
#[derive(clap::Args)]
pub struct Listen {
    /// Host or IP address to listen on; '' means all interfaces (0.0.0.0),
    /// as in Python's socketserver.
    #[arg(long, value_name = "HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// TCP port to listen on (0 picks a free port).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
}

impl Listen {
    /// The address to bind. The error names the host.
    pub fn addr(&self) -> io::Result<Addr> {
        Addr::resolve(bind_host(&self.host), self.port)
    }
}

/// `--host` and a repeatable `--port`, for a reactor server that listens on
/// several ports at once.
#[derive(clap::Args)]
pub struct ListenPorts {
    /// Host or IP address to listen on; '' means all interfaces (0.0.0.0),
    /// as in Python's socketserver.
    #[arg(long, value_name = "HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// TCP port to listen on (repeatable; 0 picks a free port).
    #[arg(long = "port", value_name = "PORT", default_values_t = [DEFAULT_PORT])]
    pub ports: Vec<u16>,
}

impl ListenPorts {
    /// The addresses to bind, one per `--port`.
    pub fn addrs(&self) -> io::Result<Vec<Addr>> {
        addrs(&self.host, &self.ports)
    }
}

/// `--host` and `--port` of the server a client talks to.
#[derive(clap::Args)]
pub struct Connect {
    /// Server host; '' means this machine (127.0.0.1), as a Python client's
    /// `connect(('', port))`.
    #[arg(long, value_name = "HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// Server port.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
}

impl Connect {
    /// The server's address, for `std::net`: a name resolves to an IP address.
    pub fn addr(&self) -> io::Result<SocketAddr> {
        let host = if self.host.is_empty() {
            "127.0.0.1"
        } else {
            &self.host
        };
        let addr = Addr::resolve(host, self.port)?;
        Ok(addr.as_inet().expect("resolve gives an IP address"))
    }
}

/// The host to bind for `--host`: Python's socketserver binds `''` to every
/// interface (`INADDR_ANY`), and so do we; a resolver would refuse it.
pub fn bind_host(host: &str) -> &str {
    if host.is_empty() {
        "0.0.0.0"
    } else {
        host
    }
}

/// Resolves `host` with each of `ports` (`''` is every interface, see
/// [`bind_host`]). The error names the host.
pub fn addrs(host: &str, ports: &[u16]) -> io::Result<Vec<Addr>> {
    ports
        .iter()
        .map(|&port| Addr::resolve(bind_host(host), port))
        .collect()
}

/// Tells whoever started us (a person, a test, a supervisor) where we
/// accept connections: one `listening on ADDR` line per socket, with the real
/// port when 0 was asked. Call it once everything is bound, so that a failure
/// on the last address does not follow a promise made for the first. Flushed
/// at once: stdout is block-buffered when it is a pipe.
pub fn announce(addrs: &[String]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    for addr in addrs {
        writeln!(out, "listening on {addr}")?;
    }
    out.flush()?;
    // Started by a restart: the old process may stop accepting now.
    if sockloop::restart::notify_ready()? {
        log::info!("restart: told the old process we are ready");
    }
    Ok(())
}

/// How a socketserver program bounds its requests and its shutdown:
/// `--timeout` and `--grace`. Flattened into a program's arguments.
#[derive(clap::Args)]
pub struct Serving {
    /// Seconds a request may wait for its client to send or take data; past
    /// it the request ends with a timeout error (0: wait forever). The bound
    /// is per read or write: an idle client cannot hold a worker longer, but
    /// one that sends a byte now and then can.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    pub timeout: Duration,
    /// Seconds running requests get to finish after the first SIGINT,
    /// SIGTERM or SIGHUP; then their sockets are shut down and children
    /// get SIGTERM. A second signal cuts them off at once.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    pub grace: Duration,
}

impl Serving {
    /// Applies `--timeout` to a server being built.
    pub fn apply(&self, builder: ServerBuilder) -> ServerBuilder {
        builder.request_timeout((!self.timeout.is_zero()).then_some(self.timeout))
    }
}

/// Serves a socketserver-style `server` until a signal, then closes it
/// and returns: exit code 0, no child left, the Unix socket file removed.
///
/// SIGINT, SIGTERM and SIGHUP (the terminal went away) all stop the
/// program: the first one stops accepting and gives running requests
/// `grace`, then unblocks them (their sockets are shut down, children get
/// SIGTERM, then SIGKILL); a second one unblocks them at once. SIGQUIT
/// keeps its default (a core dump, like SIGKILL it leaves the socket file
/// behind).
///
/// A `Server` runs its own reactor inside `serve_forever`, so the signals
/// are caught on a thread of their own, which asks for the shutdown through
/// a `ServerHandle`.
pub fn serve(mut server: Server, grace: Duration) -> io::Result<()> {
    ignore_restart("the socketserver examples")?;
    // Registered before the announcement: from then on a signal must find its handler.
    // `Signals` reports the signals pending when its thread wakes, as a set:
    // two deliveries before it runs would count as one. So every delivery is
    // also counted, by a handler registered first (it runs first).
    let arrived = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        let arrived = arrived.clone();
        // SAFETY: the action only increments an atomic: async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                arrived.fetch_add(1, Ordering::SeqCst);
            })
        }?;
    }
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handle = server.handle();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut heard = 0;
            for signal in signals.forever() {
                let now = arrived.load(Ordering::SeqCst);
                if now <= heard || heard >= 2 {
                    continue;
                }
                let grace = if heard == 0 && now == 1 {
                    log::info!("signal {signal} received, stopping: requests get {grace:?}");
                    grace
                } else {
                    log::info!("signal {signal} received again ({now} in all), stopping now");
                    Duration::ZERO
                };
                heard = now;
                // Waits for serve_forever to return: on a thread of its own,
                // so that a second signal is still heard.
                let handle = handle.clone();
                let _ = thread::Builder::new()
                    .name("shutdown".into())
                    .spawn(move || handle.shutdown_graceful(grace));
            }
        })?;
    let bound: Vec<String> = server
        .server_address()
        .iter()
        .map(|addr| match server.family() {
            // `udp:` tells it apart from a TCP listener on the same address.
            Family::Udp => format!("udp:{addr}"),
            _ => addr.to_string(),
        })
        .collect();
    announce(&bound)?;
    let served = server.serve_forever();
    server.server_close();
    served
}

/// SIGUSR2 (docs/deploy.md's reload signal) is logged and ignored by a
/// program that cannot restart (`what`): its default action would kill it
/// and reset every connection.
pub fn ignore_restart(what: &'static str) -> io::Result<()> {
    let mut signals = Signals::new([SIGUSR2])?;
    thread::Builder::new()
        .name("sigusr2".into())
        .spawn(move || {
            for _ in signals.forever() {
                log::warn!("SIGUSR2 received: restart is not supported by {what}; ignored");
            }
        })?;
    Ok(())
}

/// Listens on every one of `addrs` (or on the inherited sockets instead,
/// when there are any), each connection getting a protocol from
/// `factory`, then runs `reactor` until SIGINT or SIGTERM: the first lets
/// open connections finish for `grace`, a second stops at once. SIGUSR2
/// restarts the program without dropping a connection (see
/// docs/deploy.md). What the reactor servers share; each shows only its
/// protocol.
pub fn serve_reactor<P, F>(
    mut reactor: Reactor,
    addrs: &[Addr],
    opts: &ListenOptions,
    grace: Duration,
    factory: F,
) -> io::Result<()>
where
    P: Protocol,
    // Cloned once per listener: each socket owns its factory.
    F: FnMut(&Addr) -> P + Clone + 'static,
{
    let mut bound = Vec::new();
    match inherited() {
        Some(sockets) => {
            for socket in sockets {
                let id = reactor.listen_inherited(socket, opts, factory.clone())?;
                bound.push(reactor.listener_addr(id)?.to_string());
            }
        }
        None => {
            for addr in addrs {
                let id = reactor.listen_with(addr, opts, factory.clone())?;
                bound.push(reactor.listener_addr(id)?.to_string());
            }
        }
    }
    // Before the announcement: from then on a signal must find its handler.
    reactor.stop_on_signals(grace)?;
    reactor.restart_on_signal(RestartOptions::new(grace))?;
    announce(&bound)?;
    reactor.run()
}

/// Parses a number of seconds such as `5` or `0.2` (for `--delay`), refusing
/// what `Duration` cannot hold (negative, NaN, infinite) instead of panicking.
pub fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// `Echo=><data> at <ctime>`: the reply of Python's classic servers.
pub fn stamped(data: &[u8]) -> Vec<u8> {
    let mut reply = b"Echo=>".to_vec();
    reply.extend_from_slice(data);
    reply.extend_from_slice(format!(" at {}", ctime(SystemTime::now())).as_bytes());
    reply
}

/// One read of `request` into `buf`: whatever arrived, as Python's
/// `recv(1024)`, not a line. A signal that interrupts the wait is not an
/// error (Python retries `recv` too, PEP 475): a graceful stop's signal must
/// leave the request its grace, as `read_until` does.
pub fn recv(request: &mut Request, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match request.rfile().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            read => return read,
        }
    }
}

/// Answers one read of `request` with [`stamped`], as the classic servers
/// do; `false` once the client has closed. A read is whatever arrived, up to
/// 1024 bytes (Python's `recv(1024)`), not a line.
pub fn reply_stamped(request: &mut Request) -> io::Result<bool> {
    let mut data = [0; 1024];
    let n = recv(request, &mut data)?;
    if n == 0 {
        return Ok(false);
    }
    request.wfile().write_all(&stamped(&data[..n]))?;
    Ok(true)
}

/// `time.ctime()`'s format, `Mon Nov 23 16:58:22 2026`, in the local time
/// zone (`TZ`, else /etc/localtime; UTC if neither names one), as Python's.
pub fn ctime(t: SystemTime) -> String {
    ctime_in(t, &TimeZone::system())
}

/// [`ctime`] in the time zone `tz`.
pub fn ctime_in(t: SystemTime, tz: &TimeZone) -> String {
    // Only a time outside jiff's range (years -9999..=9999) fails; the epoch
    // then says "no sensible time" rather than a panic in a server.
    let at = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    // %e: the day padded with a space, as C's asctime and Python's ctime.
    at.to_zoned(tz.clone())
        .strftime("%a %b %e %H:%M:%S %Y")
        .to_string()
}

/// How a reactor program stops: the first SIGINT/SIGTERM lets open
/// connections finish for `--grace` seconds, a second one stops at once.
#[derive(clap::Args)]
pub struct Shutdown {
    /// Seconds open connections get to finish after SIGINT/SIGTERM.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds, allow_negative_numbers = true)]
    pub grace: Duration,
}
