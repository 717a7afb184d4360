//! A minimal HTTP/1.1 server: `200 Hello, world!` for `GET /` (and its
//! headers alone for `HEAD /`), 404 for other paths, 405 for other methods,
//! with keep-alive (announced with `Connection: keep-alive` to an HTTP/1.0
//! client that asked for it), pipelining, `Connection: close`, HTTP/1.0,
//! and the answers a server owes to bad requests: 400 (malformed), 431 (head
//! over `--max-head`), 413 (body over `--max-body`), 501 (chunked bodies).
//!
//! Slow and idle clients cannot hold it (slowloris):
//! - `--header-timeout SECS` (default 10): a request must arrive in full,
//!   head and body, within this many seconds of its first byte. It is a
//!   deadline, not a per-read timeout: a client that dribbles a byte now
//!   and then is answered `408 Request Timeout` and closed when it passes.
//! - `--idle-timeout SECS` (default 60): a connection that sends and takes
//!   nothing for this long (a keep-alive connection between requests) is
//!   closed, silently, as nginx's `keepalive_timeout` does.
//! - `--max-connections N` (default 1024, over all `--port`s): at the cap
//!   the server stops accepting. Further clients wait in the kernel's
//!   listen backlog (1024): their connect succeeds and what they send waits
//!   unread until a connection closes, then they are served in turn; once
//!   the backlog is full too, the kernel drops further connection attempts
//!   (the clients retry their SYN). With the two timeouts, slots free up by
//!   themselves: a connection closed by a timeout holds its slot until its
//!   client has the last answer and closes too, or about 2 s after that
//!   (`ConnOptions::close_linger`: the server waits for the client's close
//!   so that the 408 is not lost to a reset).
//!
//! `0` turns any of the three off.
//!
//! ```text
//! cargo run --release --example http_hello -- --port 8080
//! curl -v http://127.0.0.1:8080/
//! wrk -c 64 -d 5 http://127.0.0.1:8080/
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sockloop::{
    Context, FrameHandler, Framed, HttpError, HttpRequest, HttpRequests, LingeringClose,
    ListenOptions, Reactor,
};

mod common;

use common::http_reply;

/// Answers every request with a fixed page.
#[derive(Parser)]
#[command(name = "http_hello", version)]
struct Args {
    #[command(flatten)]
    listen: common::ListenPorts,
    #[command(flatten)]
    shutdown: common::Shutdown,
    /// The largest request head accepted, in bytes (beyond: 431).
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    max_head: usize,
    /// The largest request body accepted, in bytes (beyond: 413).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds a request (head and body) may take to arrive once its first
    /// byte has; then 408 and close. 0: no limit.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = common::seconds)]
    header_timeout: Duration,
    /// Seconds a connection may send and take nothing (keep-alive between
    /// requests) before it is closed. 0: no limit.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = common::seconds)]
    idle_timeout: Duration,
    /// Connections open at once, over all ports; beyond it clients wait in
    /// the kernel's backlog until one closes. 0: no cap.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
}

/// `0` turns a limit off.
fn limit(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let (max_head, max_body) = (args.max_head, args.max_body);
        let header_timeout = limit(args.header_timeout);
        let mut opts = ListenOptions::default();
        opts.conn.idle_timeout = limit(args.idle_timeout);
        // After an ordinary answer to `Connection: close` the client sends
        // nothing more: close at once rather than wait for its FIN (nginx's
        // `lingering_close auto`). Error answers linger (on_frame).
        opts.conn.lingering_close = LingeringClose::Auto;
        let mut reactor = Reactor::new()?;
        reactor.set_max_connections((args.max_connections > 0).then_some(args.max_connections));
        common::serve_reactor(
            reactor,
            &args.listen.addrs()?,
            &opts,
            args.shutdown.grace,
            move |_| {
                let mut decoder = HttpRequests::default();
                decoder.max_body = max_body;
                Framed::with_decoder(
                    decoder,
                    Hello {
                        max_head,
                        header_timeout,
                        out: Vec::new(),
                    },
                )
            },
        )
    })
}

struct Hello {
    max_head: usize,
    header_timeout: Option<Duration>,
    /// The response being written, kept between requests: allocated once
    /// per connection, it holds a response's size (~100 bytes).
    out: Vec<u8>,
}

impl FrameHandler<Result<HttpRequest, HttpError>> for Hello {
    fn max_frame(&self) -> usize {
        self.max_head
    }

    /// The request is one frame, head and body (the decoder says a body is
    /// still to come), so this is the deadline for all of it.
    fn frame_timeout(&self) -> Option<Duration> {
        self.header_timeout
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, request: Result<HttpRequest, HttpError>) {
        self.out.clear();
        let keep_alive = http_reply::answer(&mut self.out, &request);
        cx.write(&self.out);
        if request.is_err() {
            // The client may still be sending what was refused (a body over
            // --max-body): read and drop it, so that no reset takes the
            // answer from it.
            cx.set_lingering_close(LingeringClose::Always);
        }
        if !keep_alive {
            cx.close();
        }
    }

    /// A request that has begun to arrive missed `--header-timeout`: say so
    /// (Apache's behaviour; nginx closes without a word) before the close,
    /// so that a slow legitimate client learns why. An idle connection with
    /// no request begun is closed silently by the idle timeout instead: a
    /// 408 there could be read as the answer to a request sent meanwhile.
    fn on_frame_timeout(&mut self, cx: &mut Context<'_>) {
        self.out.clear();
        http_reply::respond(
            &mut self.out,
            (408, "Request Timeout"),
            "Connection: close\r\n",
            b"Request Timeout\n",
            false,
        );
        cx.write(&self.out);
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }
}
