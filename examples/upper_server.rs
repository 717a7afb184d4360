//! The first socketserver example of Python's documentation: a synchronous
//! TCP server whose handler reads one line and answers it in upper case.
//!
//! ```text
//! cargo run --example upper_server
//! echo 'hello world' | nc 127.0.0.1 50007
//! ```

use std::io;
use std::process::ExitCode;

use clap::Parser;
use sockloop::server::{Family, Request, RequestHandler, ServerBuilder};

mod common;

/// Answers one line per connection, in upper case.
#[derive(Parser)]
#[command(name = "upper_server", version)]
struct Args {
    #[command(flatten)]
    listen: common::Listen,
    #[command(flatten)]
    serving: common::Serving,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        // The default mode, Sync: one client at a time, like Python's TCPServer.
        let server = common::bind(args.serving.apply(ServerBuilder::new(Family::Tcp)), || {
            args.listen.addr()
        })?
        .build(|| Upper)?;
        common::serve(server, args.serving.grace)
    })
}

/// Python's `MyTCPHandler`.
struct Upper;

impl RequestHandler for Upper {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let mut line = Vec::new();
        request.rfile().read_until(b'\n', &mut line)?;
        log::info!(
            "{} wrote: {}",
            request.client_address(),
            String::from_utf8_lossy(line.trim_ascii_end())
        );
        // Bytes, not str: any input is answered, and only ASCII changes (as Python's bytes.upper).
        request.wfile().write_all(&line.to_ascii_uppercase())
    }
}
