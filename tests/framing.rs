//! asynchat-style framing over real sockets, with the peer's bytes arriving
//! in chunks of 1, 2 and 3 (the cases of CPython's test_asynchat).

mod common;

use std::io::Write;
use std::sync::mpsc;

use bytes::Bytes;
use common::*;
use sockloop::{CloseReason, Context, FrameHandler, Framed, Terminator};

/// Reports each frame; its terminator comes from the test. After a frame
/// `body N`, the next frame is exactly N bytes (a terminator change between
/// frames, as an HTTP-like header/body protocol does).
struct Collector {
    delimiter: Vec<u8>,
    count: Option<usize>,
    next_count: Option<usize>,
    max: usize,
    frames: mpsc::Sender<Result<Bytes, String>>,
}

impl FrameHandler for Collector {
    fn terminator(&self) -> Terminator<'_> {
        match (self.next_count, self.count) {
            (Some(n), _) | (None, Some(n)) => Terminator::Count(n),
            (None, None) if self.delimiter.is_empty() => Terminator::None,
            (None, None) => Terminator::Delimiter(&self.delimiter),
        }
    }

    fn max_frame(&self) -> usize {
        self.max
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes) {
        self.next_count = frame
            .strip_prefix(b"body ")
            .map(|n| std::str::from_utf8(n).unwrap().parse().unwrap());
        if &frame[..] == b"QUIT" {
            cx.write(b"bye\n");
            cx.close();
        }
        self.frames.send(Ok(frame)).unwrap();
    }

    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        if !reason.is_clean() {
            self.frames.send(Err(reason.to_string())).unwrap();
        }
    }
}

fn collector(
    delimiter: &[u8],
    count: Option<usize>,
    max: usize,
) -> (Server, mpsc::Receiver<Result<Bytes, String>>) {
    let (tx, rx) = mpsc::channel();
    let delimiter = delimiter.to_vec();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| {
                Framed::new(Collector {
                    delimiter: delimiter.clone(),
                    count,
                    next_count: None,
                    max,
                    frames: tx.clone(),
                })
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

/// Sends `data` in `chunk`-byte writes with Nagle off, so the server's reads
/// see the pieces.
fn send_chunked(server: &Server, data: &[u8], chunk: usize) -> std::net::TcpStream {
    let mut s = connect(server.inet(0));
    s.set_nodelay(true).unwrap();
    for piece in data.chunks(chunk) {
        s.write_all(piece).unwrap();
    }
    s
}

#[test]
fn line_terminators_split_across_reads() {
    for delimiter in [&b"\n"[..], b"\r\n", b"qqq"] {
        for chunk in 1..=3 {
            let (server, frames) = collector(delimiter, None, 1024);
            let mut data = b"hello ".to_vec();
            data.extend_from_slice(b"world");
            data.extend_from_slice(delimiter);
            data.extend_from_slice(b"I'm not dead yet!");
            data.extend_from_slice(delimiter);
            let _s = send_chunked(&server, &data, chunk);
            assert_eq!(
                recv(&frames).unwrap(),
                "hello world",
                "{delimiter:?} / {chunk}"
            );
            assert_eq!(
                recv(&frames).unwrap(),
                "I'm not dead yet!",
                "{delimiter:?} / {chunk}"
            );
        }
    }
}

#[test]
fn an_empty_line_is_an_empty_record() {
    let (server, frames) = collector(b"\n", None, 1024);
    let _s = send_chunked(&server, b"hello world\n\nI'm not dead yet!\n", 2);
    assert_eq!(recv(&frames).unwrap(), "hello world");
    assert_eq!(recv(&frames).unwrap(), "");
    assert_eq!(recv(&frames).unwrap(), "I'm not dead yet!");
}

#[test]
fn numeric_terminators_take_exact_counts() {
    for count in [1, 6] {
        let (server, frames) = collector(b"", Some(count), 1024);
        let data = b"hello world, I'm not dead yet!\n";
        let _s = send_chunked(&server, data, 3);
        for expected in data.chunks(count).filter(|c| c.len() == count) {
            assert_eq!(recv(&frames).unwrap(), expected);
        }
    }
}

#[test]
fn no_terminator_delivers_bytes_as_they_come() {
    let (server, frames) = collector(b"", None, 1024);
    let data = b"hello world\nI'm not dead yet!\n";
    let _s = send_chunked(&server, data, 3);
    let mut got = Vec::new();
    while got.len() < data.len() {
        got.extend_from_slice(&recv(&frames).unwrap());
    }
    assert_eq!(got, data);
}

#[test]
fn the_terminator_changes_between_frames() {
    let (server, frames) = collector(b"\r\n", None, 1024);
    let _s = send_chunked(&server, b"body 5\r\nab\r\ncnext\r\n", 2);
    assert_eq!(recv(&frames).unwrap(), "body 5");
    assert_eq!(recv(&frames).unwrap(), "ab\r\nc");
    assert_eq!(recv(&frames).unwrap(), "next");
}

#[test]
fn an_oversized_frame_closes_with_a_reason() {
    let (server, frames) = collector(b"\n", None, 16);
    let mut s = send_chunked(&server, &[b'x'; 100], 100);
    let reason = recv(&frames).unwrap_err();
    assert!(reason.contains("16-byte"), "{reason}");
    assert!(read_to_eof(&mut s).unwrap_or_default().is_empty());
}

#[test]
fn quit_gets_its_answer_before_the_close_and_later_lines_are_ignored() {
    let (server, frames) = collector(b"\n", None, 1024);
    let mut s = send_chunked(&server, b"one\nQUIT\nnever seen\n", 64);
    assert_eq!(recv(&frames).unwrap(), "one");
    assert_eq!(recv(&frames).unwrap(), "QUIT");
    assert_eq!(read_to_eof(&mut s).unwrap(), b"bye\n");
    drop(server);
    assert!(frames.try_iter().all(|f| f.is_err()), "a frame after QUIT");
}
