//! A Redis-protocol key-value server: PING, ECHO, SET, GET, DEL, EXISTS,
//! DBSIZE and QUIT over RESP2, multi-bulk (what `redis-cli` and client
//! libraries send) and inline (`PING` typed into `nc`). The keys live in
//! the reactor's shared state, reached from every connection's callbacks.
//!
//! Inline commands follow Redis's quoting: `SET k "two words\n"` (double
//! quotes take `\n \r \t \b \a \\ \"` and `\xHH`), `SET k 'it\'s'` (single
//! quotes take only `\'`); a closing quote must be followed by a space or
//! the end of the line; an inline command is at most 64 KiB, as Redis's.
//! Unbalanced quotes are answered
//! `-ERR Protocol error: unbalanced quotes in request` and the connection
//! is closed, as any protocol error or command over `--max-command` is (the
//! error says which). Empty lines are ignored. Connections have no idle
//! timeout, as Redis's default `timeout 0`.
//!
//! ```text
//! cargo run --release --example resp_server -- --port 6380
//! redis-cli -p 6380 set greeting hello
//! redis-benchmark -p 6380 -t ping,set,get -P 16 -q
//! ```

use std::collections::HashMap;
use std::process::ExitCode;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use sockloop::{
    CloseReason, Context, FrameError, FrameHandler, Framed, ListenOptions, Oversized, Reactor,
    Resp, RespCommand,
};

mod common;

/// Serves a key-value store over the Redis protocol.
#[derive(Parser)]
#[command(name = "resp_server", version)]
struct Args {
    #[command(flatten)]
    listen: common::ListenPorts,
    #[command(flatten)]
    shutdown: common::Shutdown,
    /// The largest command accepted, in bytes (its arguments and their
    /// framing; an inline command: at most 64 KiB); a longer one is
    /// answered with a protocol error and closes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_command: usize,
}

/// The keys: one map for all connections, in the reactor's shared state.
#[derive(Default)]
struct Db(HashMap<Bytes, Bytes>);

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let max = args.max_command;
        common::serve_reactor(
            Reactor::new()?,
            &args.listen.addrs()?,
            &ListenOptions::default(),
            args.shutdown.grace,
            move |_| Framed::with_decoder(Resp::default(), Client { max }),
        )
    })
}

struct Client {
    max: usize,
}

/// Appends a bulk string reply (`$5\r\nhello\r\n`).
fn bulk(out: &mut BytesMut, value: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn integer(out: &mut BytesMut, n: usize) {
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

/// The reply to one command, appended to `out`; false to close after it.
fn execute(cx: &mut Context<'_>, args: &[Bytes], out: &mut BytesMut) -> bool {
    let name = args[0].to_ascii_uppercase();
    match (&name[..], args.len()) {
        (b"PING", 1) => out.extend_from_slice(b"+PONG\r\n"),
        (b"PING", 2) | (b"ECHO", 2) => bulk(out, &args[1]),
        (b"SET", 3) => {
            cx.state::<Db>().0.insert(args[1].clone(), args[2].clone());
            out.extend_from_slice(b"+OK\r\n");
        }
        (b"GET", 2) => match cx.state::<Db>().0.get(&args[1]) {
            Some(value) => bulk(out, value),
            None => out.extend_from_slice(b"$-1\r\n"),
        },
        (b"DEL", n) if n >= 2 => {
            let db = &mut cx.state::<Db>().0;
            let removed = args[1..].iter().filter(|k| db.remove(*k).is_some()).count();
            integer(out, removed);
        }
        (b"EXISTS", n) if n >= 2 => {
            let db = &cx.state::<Db>().0;
            integer(
                out,
                args[1..].iter().filter(|k| db.contains_key(*k)).count(),
            );
        }
        (b"DBSIZE", 1) => integer(out, cx.state::<Db>().0.len()),
        // redis-benchmark asks for the server's configuration: there is none.
        (b"CONFIG", _) => out.extend_from_slice(b"*0\r\n"),
        (b"QUIT", 1) => {
            out.extend_from_slice(b"+OK\r\n");
            return false;
        }
        (b"PING" | b"ECHO" | b"SET" | b"GET" | b"DEL" | b"EXISTS" | b"DBSIZE" | b"QUIT", _) => {
            out.extend_from_slice(
                format!(
                    "-ERR wrong number of arguments for '{}' command\r\n",
                    String::from_utf8_lossy(&args[0]).to_lowercase()
                )
                .as_bytes(),
            );
        }
        _ => out.extend_from_slice(
            format!(
                "-ERR unknown command '{}'\r\n",
                String::from_utf8_lossy(&args[0]).escape_debug()
            )
            .as_bytes(),
        ),
    }
    true
}

impl FrameHandler<RespCommand> for Client {
    fn max_frame(&self) -> usize {
        self.max
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, args: RespCommand) {
        let mut out = BytesMut::new();
        let go_on = execute(cx, &args, &mut out);
        cx.write(&out);
        if !go_on {
            cx.close();
        }
    }

    /// Redis's answer to what is not RESP, or too long: an error that says
    /// why (`-ERR Protocol error: unbalanced quotes in request`), then close.
    fn on_refused(&mut self, cx: &mut Context<'_>, error: &FrameError, _head: &[u8]) -> Oversized {
        let why = match error {
            FrameError::Malformed(why) => why.clone(),
            other => format!("Protocol error: {other}"),
        };
        // One line: a stray CR or LF would end the error early.
        let why = why.replace(['\r', '\n'], " ");
        cx.write(format!("-ERR {why}\r\n").as_bytes());
        Oversized::Close
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        if !reason.is_clean() {
            log::info!("{}: {reason}", cx.id());
        }
    }
}
