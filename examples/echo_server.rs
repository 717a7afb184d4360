//! socketserver's echo server in every family and every mode: the same
//! handler serves TCP, UDP, Unix stream and Unix datagram requests, one at a
//! time, on a thread each, in a forked child each, or on a pool of threads.
//! A stream request is what one read brings (up to 1024 bytes, the seeds'
//! `recv(1024)`), echoed once; then the connection closes.
//!
//! ```text
//! cargo run --example echo_server -- --family tcp --mode threading
//! cargo run --example echo_server -- --family unix-dgram --mode forking --unix /tmp/echo.sock
//! ```
//!
//! A client has `--timeout` seconds (default 60) for each read and write of
//! its request; SIGINT, SIGTERM or SIGHUP give running requests `--grace`
//! seconds (default 5), then cut them off; a second signal cuts them off at
//! once.

use std::io;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};
use sockloop::Addr;

mod common;

/// Echoes one read per connection (up to 1024 bytes), or each datagram, back to its sender.
#[derive(Parser)]
#[command(name = "echo_server", version)]
// The shared --host and --port serve udp as well here, and the unix families not at all.
#[command(mut_arg("host", |a| a.help("Host or IP address to listen on (tcp and udp); '' means all interfaces (0.0.0.0), as in Python's socketserver")))]
#[command(mut_arg("port", |a| a.help("Port to listen on (tcp and udp; 0 picks a free port)")))]
struct Args {
    #[command(flatten)]
    listen: common::Listen,
    #[command(flatten)]
    serving: common::Serving,
    #[command(flatten)]
    proxy: common::Proxy,
    /// Socket family.
    #[arg(long, value_enum, default_value_t = FamilyArg::Tcp)]
    family: FamilyArg,
    /// Where each request runs.
    #[arg(long, value_enum, default_value_t = ModeArg::Sync)]
    mode: ModeArg,
    /// Threads in the pool (--mode pool).
    #[arg(long, value_name = "N", default_value = "4")]
    workers: NonZeroUsize,
    /// Children at once; more clients wait (--mode forking).
    #[arg(long, value_name = "N", default_value = "40")]
    max_children: NonZeroUsize,
    /// Socket path (required by, and only for, the unix families); removed on exit.
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FamilyArg {
    Tcp,
    Udp,
    Unix,
    UnixDgram,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Sync,
    Threading,
    Forking,
    Pool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Clap cannot tie a flag to another flag's value: checked here, still a usage error (exit 2).
    let unix_family = matches!(args.family, FamilyArg::Unix | FamilyArg::UnixDgram);
    if unix_family != args.unix.is_some() {
        let msg = if unix_family {
            "--family unix and unix-dgram need --unix PATH"
        } else {
            "--unix PATH goes with --family unix or unix-dgram"
        };
        Args::command()
            .error(ErrorKind::ArgumentConflict, msg)
            .exit();
    }
    common::init_logger();
    common::run(|| {
        let family = match args.family {
            FamilyArg::Tcp => Family::Tcp,
            FamilyArg::Udp => Family::Udp,
            FamilyArg::Unix => Family::UnixStream,
            FamilyArg::UnixDgram => Family::UnixDatagram,
        };
        let addr = match &args.unix {
            Some(path) => Addr::unix(path)?,
            None => args.listen.addr()?,
        };
        let mode = match args.mode {
            ModeArg::Sync => Mode::Sync,
            ModeArg::Threading => Mode::threading(),
            ModeArg::Forking => Mode::forking_with(args.max_children.get(), true),
            ModeArg::Pool => Mode::pool(args.workers.get()),
        };
        let server = common::bind(args.serving.apply(ServerBuilder::new(family)), || Ok(addr))?
            .proxy_protocol(args.proxy.proxy_protocol)
            .mode(mode)
            .build(|| Echo)?;
        common::serve(server, args.serving.grace)
    })
}

struct Echo;

impl RequestHandler for Echo {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let reply = match request.packet() {
            // A datagram goes back whole, as one datagram.
            Some(packet) => packet.to_vec(),
            // A stream request is what one read brings, as the seeds' handlers
            // answer one `recv(1024)`: a client that sends `Hello, world` with
            // no newline and waits gets it back (one waiting for a line hung).
            // A line sent in one write arrives in one read; the server closes
            // the connection after it.
            None => {
                let mut data = vec![0; 1024];
                let n = common::recv(request, &mut data)?;
                data.truncate(n);
                data
            }
        };
        log::info!("{} bytes from {}", reply.len(), request.client_address());
        request.wfile().write_all(&reply)
    }
}
