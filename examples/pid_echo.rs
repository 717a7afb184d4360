//! Shows who serves whom: what each read brings (up to 1024 bytes: a line
//! typed into `nc`, or a message sent without a newline, as the socketserver
//! seeds' clients do) is echoed behind the pid of the forked child (or the
//! name of the thread) serving the connection. Two clients at once see two
//! different workers; messages on one connection, the same one.
//!
//! ```text
//! cargo run --example pid_echo -- --mode forking
//! nc 127.0.0.1 50007      # in two terminals
//! ```

use std::io;
use std::process::{self, ExitCode};
use std::thread;

use clap::{Parser, ValueEnum};
use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};

mod common;

/// Echoes each message prefixed with the pid or thread serving it.
#[derive(Parser)]
#[command(name = "pid_echo", version)]
struct Args {
    #[command(flatten)]
    listen: common::Listen,
    #[command(flatten)]
    serving: common::Serving,
    /// A process or a thread per connection.
    #[arg(long, value_enum, default_value_t = ModeArg::Forking)]
    mode: ModeArg,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ModeArg {
    Forking,
    Threading,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let forking = args.mode == ModeArg::Forking;
        let mode = if forking {
            Mode::forking()
        } else {
            Mode::threading()
        };
        let server = common::bind(args.serving.apply(ServerBuilder::new(Family::Tcp)), || {
            args.listen.addr()
        })?
        .mode(mode)
        .build(move || Who { forking })?;
        common::serve(server, args.serving.grace)
    })
}

struct Who {
    /// A forked child is single-threaded (its thread is the parent's `main`),
    /// so there the pid is what tells workers apart.
    forking: bool,
}

impl RequestHandler for Who {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let who = if self.forking {
            process::id().to_string()
        } else {
            thread::current().name().unwrap_or("unnamed").to_string()
        };
        log::info!("{who} serving {}", request.client_address());
        // One reply per read, as the seeds' `recv(1024)`: a client that sends
        // a message without a newline and waits for the answer gets it.
        let mut data = [0; 1024];
        loop {
            let n = common::recv(request, &mut data)?;
            if n == 0 {
                return Ok(());
            }
            let mut reply = format!("{who}: ").into_bytes();
            reply.extend_from_slice(&data[..n]);
            request.wfile().write_all(&reply)?;
        }
    }
}
