//! A minimal HTTP/1.1 server: `200 Hello, world!` for `GET /`, 404 for other
//! paths, with keep-alive, pipelining, `Connection: close`, HTTP/1.0, and
//! the answers a server owes to bad requests: 400 (malformed), 431 (head
//! over `--max-head`), 413 (body over `--max-body`), 501 (chunked bodies).
//!
//! ```text
//! cargo run --release --example http_hello -- --port 8080
//! curl -v http://127.0.0.1:8080/
//! wrk -c 64 -d 5 http://127.0.0.1:8080/
//! ```

use std::process::ExitCode;

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
}

const BODY: &[u8] = b"Hello, world!\n";

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let (max_head, max_body) = (args.max_head, args.max_body);
        common::serve_reactor(
            Reactor::new()?,
            &args.listen.addrs()?,
            &ListenOptions::default(),
            args.shutdown.grace,
            move |_| {
                let mut decoder = HttpRequests::default();
                decoder.max_body = max_body;
                Framed::with_decoder(decoder, Hello { max_head })
            },
        )
    })
}

struct Hello {
    max_head: usize,
}

/// Appends a response with `body`; `close` adds `Connection: close`.
fn respond(out: &mut BytesMut, status: (u16, &str), body: &[u8], close: bool) {
    let (code, reason) = status;
    let connection = if close { "Connection: close\r\n" } else { "" };
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
}

impl FrameHandler<Result<HttpRequest, HttpError>> for Hello {
    fn max_frame(&self) -> usize {
        self.max_head
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, request: Result<HttpRequest, HttpError>) {
        let mut out = BytesMut::with_capacity(128);
        match request {
            Ok(req) => {
                let close = !req.keep_alive();
                match (req.method(), req.target()) {
                    (b"GET", b"/") => respond(&mut out, (200, "OK"), BODY, close),
                    (b"GET", _) => respond(&mut out, (404, "Not Found"), b"Not Found\n", close),
                    _ => respond(
                        &mut out,
                        (405, "Method Not Allowed"),
                        b"Method Not Allowed\n",
                        close,
                    ),
                }
                cx.write(&out);
                if close {
                    cx.close();
                }
            }
            // The request cannot be read to its end: answer and close.
            Err(e) => {
                let (code, reason) = e.status();
                respond(
                    &mut out,
                    (code, reason),
                    format!("{reason}\n").as_bytes(),
                    true,
                );
                cx.write(&out);
                cx.close();
            }
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }
}
