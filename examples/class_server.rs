//! thread_server's service written the socketserver way: a request handler
//! class with `setup`, `handle` and `finish`, on a threading server. The
//! server makes one handler per client and runs the three steps in order on
//! that client's thread; `finish` runs even when `handle` failed.
//!
//! ```text
//! cargo run --example class_server -- --delay 5
//! cargo run --example echo_client      # in several terminals at once
//! ```

use std::io;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::Parser;
use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};

mod common;

/// Serves each client with a `RequestHandler`, on a thread of its own.
#[derive(Parser)]
#[command(name = "class_server", version)]
struct Args {
    #[command(flatten)]
    listen: common::Listen,
    #[command(flatten)]
    serving: common::Serving,
    /// Seconds each handler sleeps before answering.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds, allow_negative_numbers = true)]
    delay: Duration,
}

/// A client silent this long is dropped, so that it cannot hold its thread forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let delay = args.delay;
        let server = common::bind(args.serving.apply(ServerBuilder::new(Family::Tcp)), || {
            args.listen.addr()
        })?
        .mode(Mode::threading())
        .build(move || ClientHandler { delay, replies: 0 })?;
        common::serve(server, args.serving.grace)
    })
}

/// socketserver's `MyClientHandler`; a fresh one serves each client.
struct ClientHandler {
    delay: Duration,
    replies: usize,
}

impl RequestHandler for ClientHandler {
    fn setup(&mut self, request: &mut Request) -> io::Result<()> {
        request.set_timeout(Some(IDLE_TIMEOUT))?;
        // Each reply is one small write the client waits for: do not let Nagle hold it back.
        request.set_nodelay(true)?;
        let thread = thread::current();
        let name = thread.name().unwrap_or("unnamed");
        log::info!("thread {name} serving {}", request.client_address());
        Ok(())
    }

    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        thread::sleep(self.delay);
        // Counted as they go: `finish` reports them even if a later read fails.
        while common::reply_stamped(request)? {
            self.replies += 1;
        }
        Ok(())
    }

    fn finish(&mut self, request: &mut Request) -> io::Result<()> {
        log::info!(
            "done with {}, replies: {}",
            request.client_address(),
            self.replies
        );
        Ok(())
    }
}
