//! The classic forking server: each client is served by a child process,
//! which first sleeps to simulate blocking work, then answers every read
//! with `Echo=><data> at <time>` until the client closes. Clients that
//! arrive meanwhile are not kept waiting: each has its own child.
//!
//! ```text
//! cargo run --example fork_server -- --delay 5
//! cargo run --example echo_client      # in several terminals at once
//! ```

use std::io;
use std::process::{self, ExitCode};
use std::thread;
use std::time::Duration;

use clap::Parser;
use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};

mod common;

/// Serves each client in a forked child, after a delay.
#[derive(Parser)]
#[command(name = "fork_server", version)]
struct Args {
    #[command(flatten)]
    listen: common::Listen,
    #[command(flatten)]
    serving: common::Serving,
    /// Seconds each child sleeps before answering.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds, allow_negative_numbers = true)]
    delay: Duration,
    /// Kept for old command lines; no effect: the server's fork server
    /// reaps each child and reports its exit to the loop as it happens.
    #[arg(long)]
    #[allow(dead_code)]
    signal: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let delay = args.delay;
        let server = common::bind(args.serving.apply(ServerBuilder::new(Family::Tcp)), || {
            args.listen.addr()
        })?
        .mode(Mode::forking_with(40, true))
        .build(move || Client { delay })?;
        common::serve(server, args.serving.grace)
    })
}

/// One client, in its own process.
struct Client {
    delay: Duration,
}

impl RequestHandler for Client {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        log::info!(
            "child {} serving {}",
            process::id(),
            request.client_address()
        );
        // The blocking work: clients arriving meanwhile get children of their own.
        thread::sleep(self.delay);
        while common::reply_stamped(request)? {}
        Ok(()) // the client closed; the child exits
    }
}
