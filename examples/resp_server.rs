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

use bytes::Bytes;
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

/// Replies go straight into the connection's write queue: the writes of
/// one callback leave in one send (a pipelined batch's replies together),
/// and small writes are copied into shared blocks, so a reply allocates
/// nothing.
fn bulk(cx: &mut Context<'_>, value: &Bytes) {
    let mut digits = [0; 24];
    cx.write(header(&mut digits, b'$', value.len()));
    // Zero-copy when large (the write queue copies small ones).
    cx.write_bytes(value.clone());
    cx.write(b"\r\n");
}

fn integer(cx: &mut Context<'_>, n: usize) {
    let mut digits = [0; 24];
    cx.write(header(&mut digits, b':', n));
}

/// `$5\r\n` or `:5\r\n`, formatted in `buf`.
fn header(buf: &mut [u8; 24], kind: u8, mut n: usize) -> &[u8] {
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 1;
    buf[at] = kind;
    &buf[at..]
}

/// A key or value to keep: a copy, as Redis makes one. The argument is a
/// slice of the reactor's read buffer, which a stored slice would keep
/// alive whole (64 KiB for a 3-byte value).
fn owned(arg: &Bytes) -> Bytes {
    Bytes::copy_from_slice(arg)
}

/// Runs one command and writes its reply; false to close after it.
fn execute(cx: &mut Context<'_>, args: &[Bytes]) -> bool {
    let name = &args[0][..];
    let is = |command: &str| name.eq_ignore_ascii_case(command.as_bytes());
    let n = args.len();
    if is("GET") && n == 2 {
        match cx.state::<Db>().0.get(&args[1]).cloned() {
            Some(value) => bulk(cx, &value),
            None => cx.write(b"$-1\r\n"),
        }
    } else if is("SET") && n == 3 {
        cx.state::<Db>().0.insert(owned(&args[1]), owned(&args[2]));
        cx.write(b"+OK\r\n");
    } else if is("PING") && n == 1 {
        cx.write(b"+PONG\r\n");
    } else if (is("PING") || is("ECHO")) && n == 2 {
        bulk(cx, &args[1]);
    } else if is("DEL") && n >= 2 {
        let db = &mut cx.state::<Db>().0;
        let removed = args[1..].iter().filter(|k| db.remove(*k).is_some()).count();
        integer(cx, removed);
    } else if is("EXISTS") && n >= 2 {
        let db = &cx.state::<Db>().0;
        let found = args[1..].iter().filter(|k| db.contains_key(*k)).count();
        integer(cx, found);
    } else if is("DBSIZE") && n == 1 {
        let keys = cx.state::<Db>().0.len();
        integer(cx, keys);
    } else if is("CONFIG") {
        // redis-benchmark asks for the server's configuration: there is none.
        cx.write(b"*0\r\n");
    } else if is("QUIT") && n == 1 {
        cx.write(b"+OK\r\n");
        return false;
    } else if [
        "PING", "ECHO", "SET", "GET", "DEL", "EXISTS", "DBSIZE", "QUIT",
    ]
    .into_iter()
    .any(is)
    {
        let reply = format!(
            "-ERR wrong number of arguments for '{}' command\r\n",
            String::from_utf8_lossy(name).to_lowercase()
        );
        cx.write(reply.as_bytes());
    } else {
        let reply = format!(
            "-ERR unknown command '{}'\r\n",
            String::from_utf8_lossy(name).escape_debug()
        );
        cx.write(reply.as_bytes());
    }
    true
}

impl FrameHandler<RespCommand> for Client {
    fn max_frame(&self) -> usize {
        self.max
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, args: RespCommand) {
        if !execute(cx, &args) {
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
