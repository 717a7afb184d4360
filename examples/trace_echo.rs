//! A request's life cycle, read from the log: the server's own steps
//! (`server_bind`, `server_activate`, then per request `verify_request`,
//! `process_request`, `finish_request`, `setup`, `handle`, `finish`,
//! `shutdown_request`) are traced by the library under the target
//! `sockloop::server`; this program turns that target up to `trace` and
//! logs from its own hooks as well, so each step appears where it happens.
//!
//! ```text
//! cargo run --example trace_echo
//! echo hello | nc 127.0.0.1 50007
//! ```

use std::io;
use std::process::ExitCode;

use clap::Parser;
use log::LevelFilter;
use sockloop::server::{Family, Request, RequestHandler, ServerBuilder};

mod common;

/// Echoes one line per connection, logging every step of the request.
#[derive(Parser)]
#[command(name = "trace_echo", version)]
struct Args {
    #[command(flatten)]
    listen: common::Listen,
    #[command(flatten)]
    serving: common::Serving,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The library's trace first, then RUST_LOG: a RUST_LOG that names
    // `sockloop::server` still has the last word.
    env_logger::Builder::new()
        .filter_module("sockloop::server", LevelFilter::Trace)
        .parse_env(env_logger::Env::default().default_filter_or("info"))
        .init();
    common::run(|| {
        let server = common::bind(args.serving.apply(ServerBuilder::new(Family::Tcp)), || {
            args.listen.addr()
        })?
        .verify_request(|peer| {
            log::info!("verify_request: {peer} may be served");
            true
        })
        .handle_error(|peer, e| log::error!("handle_error: {peer}: {e}"))
        .build(|| Traced)?;
        // serve() ends with server_close, which the library traces.
        common::serve(server, args.serving.grace)
    })
}

struct Traced;

impl RequestHandler for Traced {
    fn setup(&mut self, request: &mut Request) -> io::Result<()> {
        log::info!("setup: a handler for {}", request.client_address());
        Ok(())
    }

    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let mut line = Vec::new();
        request.rfile().read_until(b'\n', &mut line)?;
        log::info!("handle: echoing {} bytes", line.len());
        request.wfile().write_all(&line)
    }

    fn finish(&mut self, request: &mut Request) -> io::Result<()> {
        log::info!("finish: done with {}", request.client_address());
        Ok(())
    }
}
