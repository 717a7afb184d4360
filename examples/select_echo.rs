//! The classic multi-port select echo server: several TCP ports, Unix stream
//! sockets and UDP sockets, all served by one reactor on one thread.
//!
//! ```text
//! cargo run --example select_echo -- --port 50007 --port 50008 --udp 50009
//! cargo run --example echo_client -- --port 50008
//! ```
//!
//! Started by socket activation (systemd, or `kill -USR2` on a running
//! one: see docs/deploy.md) it serves the sockets it was given instead of
//! its `--port`, `--unix` and `--udp` addresses.
//!
//! Over TLS (docs/tls.md shows how to make the PEM files):
//!
//! ```text
//! cargo run --example select_echo -- --port 50007 --tls-cert cert.pem --tls-key key.pem
//! cargo run --example echo_client -- --port 50007 --tls --ca cert.pem --server-name localhost
//! ```

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use clap::Parser;
use sockloop::activation::InheritedSocket;
use sockloop::restart::RestartOptions;
use sockloop::{
    Addr, CloseReason, Context, DatagramContext, DatagramProtocol, ListenOptions, Protocol,
    Reactor, Reactors,
};

mod common;

/// Echo server on many sockets at once, in one thread.
#[derive(Parser)]
#[command(name = "select_echo", version)]
struct Args {
    /// Host or IP address to listen on; '' means all interfaces (0.0.0.0),
    /// as in Python's socketserver.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    host: String,
    /// TCP port to listen on (repeatable; 0 picks a free port). Without any
    /// --port, --unix or --udp: 50007 and 50008, as the classic server.
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Unix stream socket to listen on (repeatable); removed on exit.
    #[arg(long = "unix", value_name = "PATH")]
    unix: Vec<PathBuf>,
    /// UDP port to serve on --host (repeatable): each datagram is echoed to its sender.
    #[arg(long = "udp", value_name = "PORT")]
    udp: Vec<u16>,
    /// Reply `Echo=><data> at <time>` to each read, as the classic Python server does.
    #[arg(long)]
    stamp: bool,
    /// Reactors, each on its own thread with its own listeners on the same
    /// ports (SO_REUSEPORT); the kernel spreads connections over them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Serve TLS on every TCP and Unix stream listener with this PEM
    /// certificate chain (server certificate first); needs --tls-key.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    shutdown: common::Shutdown,
    #[command(flatten)]
    proxy: common::Proxy,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    let grace = args.shutdown.grace;
    common::run(|| {
        let mut ports = args.ports.clone();
        if ports.is_empty() && args.unix.is_empty() && args.udp.is_empty() {
            ports = vec![50007, 50008];
        }
        // Sockets given by socket activation replace every address asked for.
        let inherited = common::inherited().unwrap_or_default();
        let (unix, udp) = if inherited.is_empty() {
            (&args.unix[..], &args.udp[..])
        } else {
            ports.clear();
            (&[][..], &[][..])
        };
        #[cfg(feature = "tls")]
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(sockloop::tls::server_config(cert, key)?),
            _ => None,
        };
        let plan = Plan {
            inherited,
            proxy_protocol: args.proxy.proxy_protocol,
            streams: common::addrs(&args.host, &ports)?,
            unix: unix.iter().map(Addr::unix).collect::<io::Result<_>>()?,
            udp: common::addrs(&args.host, udp)?,
            stamp: args.stamp,
            reuse_port: args.threads > 1,
            grace,
            #[cfg(feature = "tls")]
            tls,
        };
        let threads = usize::from(args.threads);
        if threads == 1 {
            let mut reactor = Reactor::new()?;
            let bound = plan.bind(&mut reactor, true)?;
            // SIGUSR2: a new process takes the sockets over (docs/deploy.md).
            reactor.restart_on_signal(RestartOptions::new(grace))?;
            common::announce(&bound.announced())?;
            return reactor.run();
            // Dropping the reactor closes everything and removes the Unix socket files.
        }
        // One reactor per thread, each with its own listeners on the same
        // ports (SO_REUSEPORT): the first binds (and picks any port 0), the
        // others reuse what it got. Unix sockets stay with the first.
        common::ignore_restart("select_echo --threads N (N > 1)")?;
        let first: Arc<Mutex<Option<Plan>>> = Arc::default();
        let shared = first.clone();
        let reactors = Reactors::spawn(threads, move |_index, reactor| {
            let mut first = shared.lock().unwrap();
            match &*first {
                None => *first = Some(plan.bind(reactor, true)?),
                // Inherited sockets: every reactor accepts on them.
                Some(_) if !plan.inherited.is_empty() => {
                    plan.bind(reactor, false)?;
                }
                Some(bound) => {
                    bound.bind(reactor, false)?;
                }
            }
            Ok(())
        })?;
        let bound = first
            .lock()
            .unwrap()
            .take()
            .expect("the first reactor bound");
        common::announce(&bound.announced())?;
        reactors.join()
    })
}

/// What to listen on; after binding, the real addresses.
struct Plan {
    /// Sockets passed by socket activation: served instead of the rest.
    inherited: Vec<InheritedSocket>,
    proxy_protocol: bool,
    streams: Vec<Addr>,
    unix: Vec<Addr>,
    udp: Vec<Addr>,
    stamp: bool,
    reuse_port: bool,
    grace: Duration,
    #[cfg(feature = "tls")]
    tls: Option<Arc<sockloop::tls::ServerConfig>>,
}

impl Plan {
    /// Binds the plan on `reactor` (Unix sockets only if `first`) and
    /// returns it with the bound addresses.
    fn bind(&self, reactor: &mut Reactor, first: bool) -> io::Result<Plan> {
        let stamp = self.stamp;
        let mut opts = ListenOptions::default();
        opts.reuse_port = self.reuse_port;
        opts.proxy_protocol = self.proxy_protocol;
        #[cfg(feature = "tls")]
        {
            opts.tls = self.tls.clone();
        }
        let mut bound = Plan {
            inherited: Vec::new(),
            streams: Vec::new(),
            unix: Vec::new(),
            udp: Vec::new(),
            proxy_protocol: self.proxy_protocol,
            stamp: self.stamp,
            reuse_port: self.reuse_port,
            grace: self.grace,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        };
        // Every reactor accepts on its own descriptor of each inherited
        // socket (one accept queue: the kernel hands each connection to one).
        for socket in &self.inherited {
            let socket = socket.try_clone()?;
            if socket.kind().is_stream() {
                let id = reactor.listen_inherited(socket, &opts, move |peer: &Addr| Echo {
                    peer: peer.clone(),
                    stamp,
                })?;
                bound.add_stream(reactor.listener_addr(id)?);
            } else {
                let id = reactor.bind_datagram_inherited(socket, &opts, UdpEcho { stamp })?;
                bound.udp.push(reactor.local_addr(id)?);
            }
        }
        let unix = if first { &self.unix[..] } else { &[] };
        for addr in self.streams.iter().chain(unix) {
            let id = reactor.listen_with(addr, &opts, move |peer: &Addr| Echo {
                peer: peer.clone(),
                stamp,
            })?;
            bound.add_stream(reactor.listener_addr(id)?);
        }
        for addr in &self.udp {
            let id = reactor.bind_datagram_with(addr, &opts, UdpEcho { stamp })?;
            bound.udp.push(reactor.local_addr(id)?);
        }
        // Before the announcement: from then on a signal must find its handler.
        reactor.stop_on_signals(self.grace)?;
        Ok(bound)
    }

    /// Records a bound stream listener under its family.
    fn add_stream(&mut self, addr: Addr) {
        if addr.is_unix() {
            self.unix.push(addr)
        } else {
            self.streams.push(addr)
        }
    }

    fn announced(&self) -> Vec<String> {
        let streams = self.streams.iter().chain(&self.unix).map(Addr::to_string);
        // `udp:` tells a UDP socket from a TCP listener on the same address.
        streams
            .chain(self.udp.iter().map(|a| format!("udp:{a}")))
            .collect()
    }
}

struct Echo {
    peer: Addr,
    stamp: bool,
}

impl Protocol for Echo {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        log::info!("{}: connection from {}", cx.id(), self.peer);
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        if self.stamp {
            cx.write_bytes(common::stamped(data));
            data.clear();
        } else {
            // All of it goes out: a large read as it is (no copy), a small
            // one copied into the connection's write block.
            cx.write_buf(data);
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        log::info!("{}: {reason}", cx.id());
    }
}

struct UdpEcho {
    stamp: bool,
}

impl DatagramProtocol for UdpEcho {
    fn on_datagram(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Addr) {
        let reply = if self.stamp {
            common::stamped(data)
        } else {
            data.to_vec()
        };
        // A failed reply concerns this one peer; the socket serves the others on.
        if let Err(e) = cx.send_to(&reply, from) {
            log::warn!("reply to {from} dropped: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::common::ctime_in;
    use jiff::tz::{Offset, TimeZone};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn ctime_matches_python() {
        // time.asctime(time.gmtime(t)), then with TZ='<+0530>-5:30'
        // time.asctime(time.localtime(t)), for each t.
        let india = TimeZone::fixed(Offset::from_seconds(5 * 3600 + 30 * 60).unwrap());
        for (t, utc, plus_0530) in [
            (0, "Thu Jan  1 00:00:00 1970", "Thu Jan  1 05:30:00 1970"),
            (
                1_000_000_000,
                "Sun Sep  9 01:46:40 2001",
                "Sun Sep  9 07:16:40 2001",
            ),
            (
                951_782_400,
                "Tue Feb 29 00:00:00 2000",
                "Tue Feb 29 05:30:00 2000",
            ),
            (
                4_107_542_399,
                "Sun Feb 28 23:59:59 2100",
                "Mon Mar  1 05:29:59 2100",
            ),
        ] {
            let at = UNIX_EPOCH + Duration::from_secs(t);
            assert_eq!(ctime_in(at, &TimeZone::UTC), utc);
            assert_eq!(ctime_in(at, &india), plus_0530);
        }
    }
}
