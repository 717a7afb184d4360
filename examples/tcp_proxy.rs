//! A TCP port forwarder (Twisted's `portforward`): each client that
//! connects to `--port` is relayed to a new connection to `--to HOST:PORT`,
//! both ways, with `Reactor::link`: no copy of the bytes, the side that
//! sends faster than the other side's peer reads is paused (memory stays
//! bounded), half-closes pass through, and either end closing ends both.
//!
//! A backend that does not answer the connect within `--connect-timeout`
//! seconds (default 30, Twisted's `connectTCP` default; `0`: wait for the
//! kernel to give up, about two minutes on Linux) fails its client: the
//! client's connection is closed and a warning names the client, the
//! backend address and the reason (refused, unreachable, timed out).
//!
//! ```text
//! cargo run --release --example tcp_proxy -- --port 8000 --to 127.0.0.1:80
//! curl http://127.0.0.1:8000/
//! ```

use std::process::ExitCode;
use std::time::Duration;

use bytes::BytesMut;
use clap::Parser;
use sockloop::{Addr, CloseReason, ConnId, ConnOptions, Context, ListenOptions, Protocol, Reactor};

mod common;

/// Relays every connection to another address.
#[derive(Parser)]
#[command(name = "tcp_proxy", version)]
struct Args {
    #[command(flatten)]
    listen: common::ListenPorts,
    #[command(flatten)]
    shutdown: common::Shutdown,
    /// Where to relay to: HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// Seconds a connect to the backend may take; then its client is
    /// closed. 0: until the kernel gives up.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = common::seconds)]
    connect_timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let (host, port) = args
            .to
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("--to {}: expected HOST:PORT", args.to),
                )
            })?;
        let to = Addr::resolve(host, port)?;
        let mut backend = ConnOptions::default();
        backend.connect_timeout = (!args.connect_timeout.is_zero()).then_some(args.connect_timeout);
        common::serve_reactor(
            Reactor::new()?,
            &args.listen.addrs()?,
            &ListenOptions::default(),
            args.shutdown.grace,
            move |peer| Client {
                to: to.clone(),
                opts: backend.clone(),
                peer: peer.to_string(),
                backend: None,
            },
        )
    })
}

/// A client until its backend connection is up; then the two are linked
/// and the reactor relays them (this protocol is dropped).
struct Client {
    to: Addr,
    /// The backend connection's options: its connect timeout.
    opts: ConnOptions,
    peer: String,
    backend: Option<ConnId>,
}

impl Protocol for Client {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        // What the client sends before the backend answers waits in the
        // kernel, and goes across once linked.
        cx.pause_reading();
        let client = cx.id();
        let backend = Backend {
            client,
            peer: self.peer.clone(),
            to: self.to.to_string(),
        };
        match cx.reactor().connect_with(&self.to, &self.opts, backend) {
            Ok(id) => self.backend = Some(id),
            Err(e) => {
                log::warn!("{}: cannot connect to {}: {e}", self.peer, self.to);
                cx.close();
            }
        }
    }

    fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {
        // Not reading until linked: left for the relay.
    }

    /// A half-close before the link is passed on by the link.
    fn on_eof(&mut self, _cx: &mut Context<'_>) {}

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        // Closed before the backend connected: it is not wanted any more.
        if let Some(backend) = self.backend {
            cx.reactor().abort(backend);
        }
        log::info!("{}: {reason}", self.peer);
    }
}

struct Backend {
    client: ConnId,
    /// For the log line: whose backend this is, and where it goes.
    peer: String,
    to: String,
}

impl Protocol for Backend {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if cx.pipe(self.client).is_err() {
            cx.close();
        }
    }

    fn on_data(&mut self, _cx: &mut Context<'_>, _data: &mut BytesMut) {}

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        // The connect failed (or the client went first): the client goes.
        match reason {
            CloseReason::ConnectFailed(e) => log::warn!(
                "{}: cannot connect to {}: {e}; closing the client",
                self.peer,
                self.to
            ),
            _ => log::warn!("{}: backend {}: {reason}", self.peer, self.to),
        }
        cx.reactor().close(self.client);
    }
}
