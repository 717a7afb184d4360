//! Half-sync / half-async: one reactor keeps every connection, and only the
//! slow part of each request moves to workers (threads, or pre-forked
//! processes), so the loop never stops answering.
//!
//! Every line costs `--delay` seconds of blocking work and is answered
//! `Echo=><line> at <ctime>`; the line `ping` is answered `pong` on the loop
//! as soon as it is read, however busy the workers are. Lines are read in
//! order: a `ping` from a client whose own lines fill the pool waits until
//! the lines before it have been taken by the pool (its reading pauses
//! meanwhile); from any other client it is answered at once.
//!
//! ```text
//! cargo run --example offload_server -- --pool processes --workers 4 --delay 1
//! ```

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use sockloop::{
    Context, FrameHandler, Framed, ListenOptions, OffloadOptions, ProcessPool, Reactor,
};

mod common;

#[derive(Clone, Copy, ValueEnum)]
enum Pool {
    Threads,
    Processes,
}

/// A line server whose slow work runs on workers.
#[derive(Parser)]
#[command(name = "offload_server", version)]
struct Args {
    #[command(flatten)]
    listen: common::ListenPorts,
    /// Where the slow work runs.
    #[arg(long, value_enum, default_value = "threads")]
    pool: Pool,
    /// Number of worker threads or processes.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Seconds of blocking work per line.
    #[arg(long, value_name = "SECS", default_value = "1.0", value_parser = common::seconds, allow_negative_numbers = true)]
    delay: Duration,
    #[command(flatten)]
    shutdown: common::Shutdown,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    let workers = usize::from(args.workers);
    common::run(|| {
        let mut reactor = match args.pool {
            Pool::Processes => Reactor::new()?,
            Pool::Threads => Reactor::with_offload({
                let mut options = OffloadOptions::default();
                options.workers = workers;
                options
            })?,
        };
        // Workers are forked first, while the process is still small and has
        // no other thread.
        let processes = match args.pool {
            Pool::Processes => {
                let delay = args.delay;
                Some(ProcessPool::start(
                    &mut reactor,
                    workers,
                    move |line: &[u8]| slow_echo(line, delay),
                )?)
            }
            Pool::Threads => None,
        };
        let delay = args.delay;
        common::serve_reactor(
            reactor,
            &args.listen.addrs()?,
            &ListenOptions::default(),
            args.shutdown.grace,
            move |_| {
                Framed::new(Lines {
                    processes: processes.clone(),
                    delay,
                })
            },
        )
    })
}

/// The slow part: blocking work, then the classic server's reply.
fn slow_echo(line: &[u8], delay: Duration) -> Vec<u8> {
    std::thread::sleep(delay);
    let mut reply = common::stamped(line);
    reply.push(b'\n');
    reply
}

struct Lines {
    processes: Option<ProcessPool>,
    delay: Duration,
}

/// The default `on_eof`, and this `on_shutdown`, close once the answers
/// still with workers are written: a client that half-closes after its
/// lines, or a graceful stop, loses none.
impl FrameHandler for Lines {
    /// Between frames: nothing is cut short.
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        if &line[..] == b"ping" {
            return cx.write(b"pong\n");
        }
        // Runs on the loop when the work is done, if the client is still there.
        let reply = |cx: &mut Context<'_>, result: io::Result<Vec<u8>>| match result {
            Ok(reply) => cx.write_bytes(reply),
            Err(e) => cx.write(format!("error: {e}\n").as_bytes()),
        };
        match &self.processes {
            Some(pool) => pool.submit(cx, line, reply),
            None => {
                let delay = self.delay;
                cx.offload(move || slow_echo(&line, delay), reply);
            }
        }
    }
}
