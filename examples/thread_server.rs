//! The classic threading server: each client is served by a thread of its
//! own, which first sleeps to simulate blocking work, then answers every
//! read with `Echo=><data> at <time>` until the client closes.
//!
//! ```text
//! cargo run --example thread_server -- --delay 5
//! cargo run --example echo_client      # in several terminals at once
//! ```

use std::io;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::Parser;
use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};

mod common;

/// Serves each client on a thread of its own, after a delay.
#[derive(Parser)]
#[command(name = "thread_server", version)]
struct Args {
    #[command(flatten)]
    listen: common::Listen,
    #[command(flatten)]
    serving: common::Serving,
    /// Seconds each thread sleeps before answering.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds, allow_negative_numbers = true)]
    delay: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let delay = args.delay;
        let server = common::bind(args.serving.apply(ServerBuilder::new(Family::Tcp)), || {
            args.listen.addr()
        })?
        .mode(Mode::threading())
        .build(move || Client { delay })?;
        common::serve(server, args.serving.grace)
    })
}

/// One client, on its own thread.
struct Client {
    delay: Duration,
}

impl RequestHandler for Client {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let thread = thread::current();
        let name = thread.name().unwrap_or("unnamed");
        log::info!("thread {name} serving {}", request.client_address());
        // The blocking work: clients arriving meanwhile get threads of their own.
        thread::sleep(self.delay);
        while common::reply_stamped(request)? {}
        Ok(()) // the client closed; the thread ends
    }
}
