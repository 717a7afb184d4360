//! A line-based chat server: each line a client sends goes to every other
//! client, prefixed with the sender's address; joins and departures are
//! announced to the others.
//!
//! ```text
//! cargo run --example chat_server
//! nc 127.0.0.1 50007      # in two or more terminals
//! ```

use std::collections::BTreeSet;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use sockloop::{
    CloseReason, ConnId, ConnOptions, Context, FrameHandler, Framed, ListenOptions, Reactor,
};

mod common;

/// Relays each line to every other connected client.
#[derive(Parser)]
#[command(name = "chat_server", version)]
struct Args {
    #[command(flatten)]
    listen: common::ListenPorts,
    #[command(flatten)]
    shutdown: common::Shutdown,
    #[command(flatten)]
    proxy: common::Proxy,
}

/// Who is in the room: the reactor's shared state, reached from every
/// callback as `cx.state::<Members>()`. Every protocol runs on the
/// reactor's one thread, one callback at a time, so no lock (and no
/// `Rc<RefCell<..>>` cloned into each protocol) is needed.
#[derive(Default)]
struct Members(BTreeSet<ConnId>);

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        // One room for all ports: the reactor's.
        // Everyone's lines pile up in the queue of a member who stops reading;
        // past 1 MiB that member is dropped rather than buffered for without
        // end. Members who read hold talkers back instead (see `broadcast`).
        let mut conn = ConnOptions::default();
        conn.max_queued = Some(1 << 20);
        let mut opts = ListenOptions::default();
        opts.conn = conn;
        // Behind a load balancer, members are named by their own
        // addresses (from the PROXY header), not the balancer's.
        opts.proxy_protocol = args.proxy.proxy_protocol;
        common::serve_reactor(
            Reactor::new()?,
            &args.listen.addrs()?,
            &opts,
            args.shutdown.grace,
            move |peer| {
                Framed::new(Chatter {
                    name: peer.to_string(),
                })
            },
        )
    })
}

struct Chatter {
    name: String,
}

impl Chatter {
    /// Queues `line` to every member but this one.
    fn broadcast(&self, cx: &mut Context<'_>, line: &[u8]) {
        let me = cx.id();
        let others: Vec<ConnId> = cx.state::<Members>().0.iter().copied().collect();
        for id in others.into_iter().filter(|&id| id != me) {
            // Fails only for a member on its way out (closing, or just
            // dropped for a full queue): its `left` notice follows.
            if cx.write_to(id, line).is_ok() {
                // A talker faster than a member reads waits for that member
                // (it is held back by TCP flow control meanwhile), so a burst
                // does not fill the queues of members who read. A member
                // that stopped reading, or reads too slowly to drain within
                // `stall_timeout`, stops holding the talker and is dropped
                // at `max_queued` unless it catches up.
                cx.pause_until_drained(id);
            }
        }
    }
}

impl FrameHandler for Chatter {
    /// A graceful stop closes between lines (after those queued are sent).
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    fn on_open(&mut self, cx: &mut Context<'_>) {
        log::info!("{} joined", self.name);
        let me = cx.id();
        cx.state::<Members>().0.insert(me);
        self.broadcast(cx, format!("* {} joined\n", self.name).as_bytes());
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        let mut message = Vec::with_capacity(self.name.len() + 2 + line.len() + 1);
        message.extend_from_slice(self.name.as_bytes());
        message.extend_from_slice(b": ");
        message.extend_from_slice(&line);
        message.push(b'\n');
        self.broadcast(cx, &message);
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        log::info!("{} left: {reason}", self.name);
        let me = cx.id();
        cx.state::<Members>().0.remove(&me);
        self.broadcast(cx, format!("* {} left\n", self.name).as_bytes());
    }
}
