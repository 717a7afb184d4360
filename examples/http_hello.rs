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

use bytes::BytesMut;
use clap::Parser;
use sockloop::{
    Context, FrameHandler, Framed, HttpError, HttpRequest, HttpRequests, ListenOptions, Reactor,
};

mod common;

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

const BODY: &[u8] = b"Hello, world!\n";

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
                    },
                )
            },
        )
    })
}

struct Hello {
    max_head: usize,
    header_timeout: Option<Duration>,
}

/// Appends a response: the status line, `headers` (whole lines), a
/// `Content-Length` of `body`, and the body itself unless `head_only`
/// (the answer to HEAD: the length the body would have, no body).
fn respond(out: &mut BytesMut, status: (u16, &str), headers: &str, body: &[u8], head_only: bool) {
    let (code, reason) = status;
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// The `Connection` header a response owes: `close` when the connection
/// ends after it; `keep-alive` for an HTTP/1.0 client that asked to keep
/// it (1.0 closes by default, so it must be told); none for HTTP/1.1.
fn connection(req: &HttpRequest) -> &'static str {
    match (req.keep_alive(), req.minor_version()) {
        (false, _) => "Connection: close\r\n",
        (true, 0) => "Connection: keep-alive\r\n",
        (true, _) => "",
    }
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
        let mut out = BytesMut::with_capacity(128);
        match request {
            Ok(req) => {
                let conn = connection(&req);
                let head_only = req.method() == b"HEAD";
                match (req.method(), req.target()) {
                    (b"GET" | b"HEAD", b"/") => {
                        respond(&mut out, (200, "OK"), conn, BODY, head_only)
                    }
                    (b"GET" | b"HEAD", _) => respond(
                        &mut out,
                        (404, "Not Found"),
                        conn,
                        b"Not Found\n",
                        head_only,
                    ),
                    _ => respond(
                        &mut out,
                        (405, "Method Not Allowed"),
                        &format!("Allow: GET, HEAD\r\n{conn}"),
                        b"Method Not Allowed\n",
                        false,
                    ),
                }
                cx.write(&out);
                if !req.keep_alive() {
                    cx.close();
                }
            }
            // The request cannot be read to its end: answer and close.
            Err(e) => {
                let (code, reason) = e.status();
                let body = format!("{reason}\n");
                respond(
                    &mut out,
                    (code, reason),
                    "Connection: close\r\n",
                    body.as_bytes(),
                    false,
                );
                cx.write(&out);
                cx.close();
            }
        }
    }

    /// A request that has begun to arrive missed `--header-timeout`: say so
    /// (Apache's behaviour; nginx closes without a word) before the close,
    /// so that a slow legitimate client learns why. An idle connection with
    /// no request begun is closed silently by the idle timeout instead: a
    /// 408 there could be read as the answer to a request sent meanwhile.
    fn on_frame_timeout(&mut self, cx: &mut Context<'_>) {
        let mut out = BytesMut::with_capacity(128);
        respond(
            &mut out,
            (408, "Request Timeout"),
            "Connection: close\r\n",
            b"Request Timeout\n",
            false,
        );
        cx.write(&out);
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }
}
