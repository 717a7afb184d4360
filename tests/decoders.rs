//! `Framed` with a `Decoder` (RESP, netstrings) over real sockets: frames
//! split anywhere, the frame bound and timeout as for terminators; and
//! `ConnOptions::max_unconsumed`, the input bound of a raw protocol.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use sockloop::{
    CloseReason, ConnOptions, Context, FrameError, FrameHandler, Framed, HttpError, HttpRequest,
    HttpRequests, ListenOptions, Netstrings, Oversized, Protocol, Resp, RespCommand,
};

/// Answers each RESP command with its arguments joined by `|`.
struct Commands {
    timeout: Option<Duration>,
    closed: mpsc::Sender<String>,
}

impl FrameHandler<RespCommand> for Commands {
    fn max_frame(&self) -> usize {
        256
    }

    fn frame_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, args: RespCommand) {
        let joined: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        cx.write(&joined.join(&b"|"[..]));
        cx.write(b"\n");
    }

    fn on_oversized(&mut self, cx: &mut Context<'_>, _head: &[u8]) -> Oversized {
        cx.write(b"-ERR Protocol error\r\n");
        Oversized::Close
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.closed.send(reason.to_string());
    }
}

fn resp_server(timeout: Option<Duration>) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| {
                Framed::with_decoder(
                    Resp::default(),
                    Commands {
                        timeout,
                        closed: tx.clone(),
                    },
                )
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

#[test]
fn resp_commands_arrive_whole_however_split() {
    let (server, _closed) = resp_server(None);
    let input =
        b"*2\r\n$4\r\nECHO\r\n$5\r\na\r\nb\n\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
    let want = b"ECHO|a\r\nb\n\nPING\nSET|k|\n";
    // All at once (pipelined), then a byte at a time.
    let mut c = connect(server.inet(0));
    c.write_all(input).unwrap();
    assert_eq!(read_n(&mut c, want.len()), want);
    for &b in input {
        c.write_all(&[b]).unwrap();
    }
    assert_eq!(read_n(&mut c, want.len()), want);
}

#[test]
fn a_resp_protocol_error_is_answered_and_closes() {
    let (server, closed) = resp_server(None);
    let mut c = connect(server.inet(0));
    c.write_all(b"PING\r\n*1\r\n+x\r\n").unwrap();
    let got = read_to_eof(&mut c).unwrap();
    assert_eq!(got, b"PING\n-ERR Protocol error\r\n");
    assert!(recv(&closed).contains("expected '$'"));
    // A bulk string over the bound is refused before it is buffered.
    let mut c = connect(server.inet(0));
    c.write_all(b"*1\r\n$100000\r\n").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"-ERR Protocol error\r\n");
    // A typed FrameError::TooLong (its text is the reason's).
    let reason = recv(&closed);
    assert!(
        reason.contains("frame of 100000 bytes over the 256-byte limit"),
        "{reason}"
    );
}

#[test]
fn the_frame_timeout_applies_to_decoded_frames() {
    let (server, closed) = resp_server(Some(Duration::from_millis(200)));
    let mut c = connect(server.inet(0));
    c.write_all(b"*2\r\n$4\r\nECHO\r\n").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"");
    assert!(recv(&closed).contains("took longer"));
}

/// Echoes netstrings; a long one is answered and skipped.
struct Strings;

impl FrameHandler for Strings {
    fn max_frame(&self) -> usize {
        10
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes) {
        cx.write(b"<");
        cx.write_bytes(frame);
        cx.write(b">");
    }

    fn on_oversized(&mut self, cx: &mut Context<'_>, _head: &[u8]) -> Oversized {
        cx.write(b"!");
        Oversized::Skip
    }
}

#[test]
fn netstrings_skip_an_oversized_one_and_go_on() {
    let server = Server::start(|r| {
        let id = r
            .listen(&any_port(), |_| {
                Framed::with_decoder(Netstrings::default(), Strings)
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    let mut input = b"3:abc,".to_vec();
    input.extend_from_slice(format!("{}:", 5000).as_bytes());
    input.extend_from_slice(&[b'x'; 5000]);
    input.extend_from_slice(b",0:,2:ok,");
    for piece in input.chunks(333) {
        c.write_all(piece).unwrap();
    }
    assert_eq!(read_n(&mut c, 12), b"<abc>!<><ok>");
}

/// Keeps all its input (a parser waiting for an end that never comes).
struct Hoarder(mpsc::Sender<String>);

impl Protocol for Hoarder {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        if data.starts_with(b"hello") {
            cx.write(b"hi");
            let _ = data.split_to(5);
        }
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("{reason:?}"));
    }
}

#[test]
fn max_unconsumed_closes_a_raw_protocol_that_hoards_input() {
    let (tx, closed) = mpsc::channel();
    let server = Server::start(move |r| {
        let mut opts = ListenOptions::default();
        opts.conn = ConnOptions::default();
        opts.conn.max_unconsumed = Some(4096);
        let id = r
            .listen_with(&any_port(), &opts, move |_| Hoarder(tx.clone()))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    c.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut c, 2), b"hi");
    // Up to the limit the input is kept...
    c.write_all(&[b'x'; 4000]).unwrap();
    c.write_all(b"").unwrap();
    // ...past it the connection ends, with what was queued delivered.
    c.write_all(&[b'y'; 200]).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert_eq!(recv(&closed), "InputOverLimit { limit: 4096 }");
}

/// Answers each HTTP request with `ok`, with a frame timeout.
struct Requests {
    timeout: Duration,
    closed: mpsc::Sender<String>,
}

impl FrameHandler<Result<HttpRequest, HttpError>> for Requests {
    fn frame_timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, _req: Result<HttpRequest, HttpError>) {
        cx.write(b"ok\n");
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.closed.send(reason.to_string());
    }
}

fn http_server(timeout: Duration) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| {
                Framed::with_decoder(
                    HttpRequests::default(),
                    Requests {
                        timeout,
                        closed: tx.clone(),
                    },
                )
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

#[test]
fn an_http_request_has_one_deadline_for_its_head_and_body() {
    let (server, closed) = http_server(Duration::from_millis(300));
    // The head arrives whole (the decoder takes it off the buffer), its
    // body never: the request is still under way, and its clock runs.
    let mut c = connect(server.inet(0));
    let start = Instant::now();
    c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"");
    assert!(recv(&closed).contains("took longer"));
    assert!(start.elapsed() < LIMIT / 2, "{:?}", start.elapsed());
    // Empty lines sent forever are no way around it either.
    let mut c = connect(server.inet(0));
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // The attacker's pace; the test waits for the close by reading.
        while w.write_all(b"\r\n").is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(recv(&closed).contains("took longer"));
    writer.join().unwrap();
    // A request that completes in time is answered, and the next one gets
    // a deadline of its own.
    let mut c = connect(server.inet(0));
    c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\nGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_n(&mut c, 6), b"ok\nok\n");
}

/// Answers a refused command with its reason and a timed-out one with a
/// last word: `on_refused` and `on_frame_timeout`.
struct Explains;

impl FrameHandler<RespCommand> for Explains {
    fn max_frame(&self) -> usize {
        64
    }

    fn frame_timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, _args: RespCommand) {
        cx.write(b"+OK\r\n");
    }

    fn on_refused(&mut self, cx: &mut Context<'_>, error: &FrameError, head: &[u8]) -> Oversized {
        cx.write(format!("-ERR {error} ({} bytes seen)\r\n", head.len()).as_bytes());
        Oversized::Close
    }

    fn on_frame_timeout(&mut self, cx: &mut Context<'_>) {
        cx.write(b"-ERR too slow\r\n");
    }
}

#[test]
fn a_handler_answers_a_refusal_with_its_reason_and_a_timeout_with_a_last_word() {
    let server = Server::start(|r| {
        let id = r
            .listen(&any_port(), |_| {
                Framed::with_decoder(Resp::default(), Explains)
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    c.write_all(b"PING\r\nECHO \"open\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut c).unwrap()),
        "+OK\r\n-ERR Protocol error: unbalanced quotes in request (12 bytes seen)\r\n"
    );
    let mut c = connect(server.inet(0));
    c.write_all(b"*1\r\n$100\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut c).unwrap()),
        "-ERR frame of 100 bytes over the 64-byte limit (10 bytes seen)\r\n"
    );
    let mut c = connect(server.inet(0));
    c.write_all(b"*1\r\n").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"-ERR too slow\r\n");
}
