//! The handler's say over framing: an oversized frame may be answered and
//! skipped (Twisted's `lineLengthExceeded`), and raw mode hands the rest of
//! the buffer over and back (LineReceiver's `setRawMode` /
//! `setLineMode(rest)`), with the peer's bytes arriving in any chunks.

mod common;

use std::io::Write;
use std::sync::mpsc;

use bytes::{Buf, Bytes, BytesMut};
use common::*;
use sockloop::{CloseReason, Context, FrameHandler, Framed, Oversized, Terminator};

/// Lines (or length-prefixed frames) up to `max` bytes; an oversized one is
/// answered `ERR` and skipped. `RAW n` switches to raw mode for n bytes.
struct Liner {
    prefixed: bool,
    max: usize,
    raw_left: usize,
    events: mpsc::Sender<String>,
}

impl FrameHandler for Liner {
    fn terminator(&self) -> Terminator<'_> {
        match (self.raw_left, self.prefixed) {
            (0, false) => Terminator::Delimiter(b"\n"),
            (0, true) => Terminator::LengthPrefixed,
            _ => Terminator::Raw,
        }
    }

    fn max_frame(&self) -> usize {
        self.max
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes) {
        if let Some(n) = frame.strip_prefix(b"RAW ") {
            self.raw_left = std::str::from_utf8(n).unwrap().parse().unwrap();
        }
        cx.write(&frame);
        cx.write(b"\n");
        self.events
            .send(format!("frame {}", String::from_utf8_lossy(&frame)))
            .unwrap();
    }

    fn on_oversized(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Oversized {
        assert!(head.len() <= self.max);
        cx.write(b"ERR too long\n");
        self.events
            .send(format!("oversized {}", String::from_utf8_lossy(head)))
            .unwrap();
        Oversized::Skip
    }

    fn on_raw(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        let take = self.raw_left.min(data.len());
        let raw = data.split_to(take);
        self.raw_left -= take;
        cx.write(b"[");
        cx.write(&raw);
        cx.write(b"]");
        self.events
            .send(format!("raw {}", String::from_utf8_lossy(&raw)))
            .unwrap();
    }

    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        self.events.send(format!("close {reason}")).unwrap();
    }
}

fn liner(prefixed: bool, max: usize) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| {
                Framed::new(Liner {
                    prefixed,
                    max,
                    raw_left: 0,
                    events: tx.clone(),
                })
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

/// Sends `data` in `chunk`-byte writes (Nagle off), half-closes, and returns
/// everything the server answered until its close.
fn exchange(server: &Server, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut s = connect(server.inet(0));
    s.set_nodelay(true).unwrap();
    for piece in data.chunks(chunk) {
        s.write_all(piece).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    read_to_eof(&mut s).unwrap()
}

fn events_until_close(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        let e = recv(rx);
        if e.starts_with("close") {
            events.push(e);
            return events;
        }
        events.push(e);
    }
}

#[test]
fn an_oversized_line_is_answered_and_skipped_and_the_next_line_served() {
    let (server, rx) = liner(false, 16);
    let mut input = b"short\n".to_vec();
    input.extend_from_slice(&[b'x'; 100]);
    input.extend_from_slice(b"\nafter\n");
    // Also a line whose delimiter is already in the buffer beyond the limit.
    input.extend_from_slice(b"yyyyyyyyyyyyyyyyyyyy\nlast\n");
    for chunk in [1, 2, 3, 7, input.len()] {
        let answer = exchange(&server, &input, chunk);
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "short\nERR too long\nafter\nERR too long\nlast\n",
            "chunk {chunk}"
        );
        let events = events_until_close(&rx);
        assert_eq!(events.len(), 6, "chunk {chunk}: {events:?}");
        assert_eq!(events[0], "frame short");
        assert!(events[1].starts_with("oversized x"), "{events:?}");
        assert_eq!(events[2], "frame after");
        assert!(events[3].starts_with("oversized y"), "{events:?}");
        assert_eq!(events[4], "frame last");
        assert_eq!(events[5], "close closed by peer");
    }
}

#[test]
fn an_oversized_length_prefixed_frame_is_skipped_by_its_announced_length() {
    let (server, rx) = liner(true, 8);
    let mut input = Vec::new();
    for frame in [&b"abc"[..], &[b'z'; 100], b"ok"] {
        input.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        input.extend_from_slice(frame);
    }
    for chunk in [1, 3, input.len()] {
        let answer = exchange(&server, &input, chunk);
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "abc\nERR too long\nok\n",
            "chunk {chunk}"
        );
        let events = events_until_close(&rx);
        assert_eq!(events.len(), 4, "chunk {chunk}: {events:?}");
    }
}

/// LineReceiver's raw mode: after `RAW 5` the next five bytes go to
/// `on_raw` whatever they contain, and what follows in the same buffer is
/// lines again.
#[test]
fn raw_mode_takes_its_bytes_and_hands_the_rest_back_to_lines() {
    let (server, rx) = liner(false, 1024);
    let input = b"hello\nRAW 5\n1\n345world\nbye\n";
    for chunk in [1, 2, 3, input.len()] {
        let answer = exchange(&server, input, chunk);
        // Raw bytes may come in several pieces: `[12][3]` is `[123]`.
        let text = String::from_utf8_lossy(&answer).replace("][", "");
        assert_eq!(text, "hello\nRAW 5\n[1\n345]world\nbye\n", "chunk {chunk}");
        events_until_close(&rx);
    }
}

/// Raw input a handler keeps (it waits for more) is bounded by max_frame.
#[test]
fn raw_input_kept_past_max_frame_meets_the_oversized_hook() {
    struct Hoarder(mpsc::Sender<String>);
    impl FrameHandler for Hoarder {
        fn terminator(&self) -> Terminator<'_> {
            Terminator::Raw
        }
        fn max_frame(&self) -> usize {
            64
        }
        fn on_frame(&mut self, _: &mut Context<'_>, _: Bytes) {}
        fn on_raw(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
            // Waits for a full 1000-byte record: more than max_frame.
            if data.len() >= 1000 {
                data.advance(1000);
            }
        }
        fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
            self.0.send(reason.to_string()).unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Framed::new(Hoarder(tx.clone())))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    s.set_nodelay(true).unwrap();
    s.write_all(&[b'r'; 200]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let reason = recv(&rx);
    assert!(reason.contains("64-byte"), "{reason}");
}

/// A skipped frame is still a frame under way: `frame_timeout` bounds it, so
/// a peer cannot trickle an endless oversized line once the handler chose to
/// skip it.
#[test]
fn a_skipped_frame_is_still_bounded_by_the_frame_timeout() {
    struct Patient(mpsc::Sender<String>);
    impl FrameHandler for Patient {
        fn max_frame(&self) -> usize {
            16
        }
        fn frame_timeout(&self) -> Option<std::time::Duration> {
            Some(std::time::Duration::from_millis(200))
        }
        fn on_frame(&mut self, _: &mut Context<'_>, _: Bytes) {}
        fn on_oversized(&mut self, _: &mut Context<'_>, _: &[u8]) -> Oversized {
            Oversized::Skip
        }
        fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
            self.0.send(reason.to_string()).unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Framed::new(Patient(tx.clone())))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    s.set_nodelay(true).unwrap();
    s.write_all(&[b'x'; 100]).unwrap();
    let started = std::time::Instant::now();
    let reason = loop {
        if let Ok(reason) = rx.try_recv() {
            break reason;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the skipped line never timed out"
        );
        let _ = s.write_all(b"x");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(reason.contains("took longer than"), "{reason}");
}

/// `FrameHandler::on_shutdown` defaults as `Protocol::on_shutdown` does: a
/// graceful shutdown leaves an idle framed connection open and served until
/// its peer closes (the default closed it, unlike a plain protocol's).
#[test]
fn a_graceful_shutdown_serves_framed_connections_by_default() {
    let (server, rx) = liner(false, 64);
    let addr = server.inet(0);
    let mut s = connect(addr);
    assert_eq!(roundtrip(&mut s, b"one\n"), b"one\n");
    assert_eq!(recv(&rx), "frame one");
    server
        .handle
        .post(|r| r.shutdown_graceful(std::time::Duration::from_secs(30)))
        .unwrap();
    wait_until("the listener to close", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    // Still served after the shutdown began, as a plain protocol is.
    s.write_all(b"two\n").unwrap();
    assert_eq!(read_n(&mut s, 4), b"two\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut s).unwrap().is_empty());
    // The probes above that were accepted before the listener closed end
    // first (read at once since the speculative read after accept): their
    // closes come before this connection's events.
    let events: Vec<String> = std::iter::from_fn(|| Some(recv(&rx)))
        .skip_while(|e| e.starts_with("close"))
        .take(2)
        .collect();
    assert_eq!(events, ["frame two", "close closed by peer"]);
    server.stop();
}
