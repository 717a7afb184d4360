//! The connection property: a line-echo server on a reactor, serving one
//! end of a Unix socketpair, echoes exactly the complete lines its peer sent
//! before closing, in order, whatever the chunking of the writes, the
//! interleaving of reactor turns, how slowly the peer reads its answers,
//! when the server stops reading for a while, and when the peer shuts down
//! its writing side or goes away; and it closes after the peer's FIN, not
//! before.
//!
//! Shared by the `connection` fuzz target (fuzz/fuzz_targets/connection.rs)
//! and the proptest in tests/properties.rs (`#[path]`-included). Uses
//! `sockloop`, `bytes` and `socket2` (a dependency of sockloop itself).

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use sockloop::{BlockingStream, CloseReason, ConnOptions, Context, FrameHandler, Framed, Reactor};

/// How the peer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// `shutdown(Write)`, then it reads the answers to the end.
    ShutdownWrite,
    /// Drops its socket: no more reading either.
    Drop,
}

/// One step of the peer's schedule.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// Bytes to offer to one nonblocking write (0: no write this step).
    pub write: usize,
    /// Reactor turns (`run_once(Some(Duration::ZERO))`) after the write.
    pub turns: u8,
    /// Bytes to offer to one nonblocking read of the answers (0: the peer
    /// does not read this step, so a run of zeros is a slow reader).
    pub read: usize,
    /// The server does not read during this step's turns
    /// (`Reactor::set_reading(id, false)`; resumed by the next step that
    /// does not pause): a slow server, whose peer's data and FIN arrive
    /// while it is not reading.
    pub pause: bool,
}

/// Small socket buffers and a low high-water mark, so that a peer that
/// stops reading makes the server's write queue grow and reading pause.
#[derive(Clone, Copy, Debug)]
pub struct Tight {
    /// `SO_SNDBUF` of both ends (the kernel doubles it and has a floor).
    pub sndbuf: usize,
    /// [`ConnOptions::high_water`].
    pub high_water: usize,
    /// [`ConnOptions::low_water`] (at most `high_water`).
    pub low_water: usize,
}

/// One run.
#[derive(Clone, Debug)]
pub struct ConnCase {
    /// What the peer sends: lines ending in `\n`, maybe an incomplete last one.
    pub stream: Vec<u8>,
    /// The peer closes once it has written this many bytes (clamped to the
    /// stream's length).
    pub close_at: usize,
    /// How it closes.
    pub close: CloseKind,
    /// The peer's schedule; past its end the peer drains (writes and reads
    /// 64 KiB, one turn per step) until both sides are done.
    pub steps: Vec<Step>,
    /// The server's `max_frame`: a longer line closes it with a protocol error.
    pub max_frame: usize,
    /// `None`: `ConnOptions::default()` and the system's socket buffers.
    pub tight: Option<Tight>,
}

/// Steps after the schedule before a run counts as hung.
pub const DRAIN_STEPS: usize = 5_000;
const DRAIN: Step = Step {
    write: 64 * 1024,
    turns: 1,
    read: 64 * 1024,
    pause: false,
};

/// How the server's connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEnd {
    /// `CloseReason::PeerClosed`.
    PeerClosed,
    /// `CloseReason::Reset`.
    Reset,
    /// `CloseReason::Protocol` (a line over `max_frame`).
    Protocol(String),
    /// Anything else, as displayed.
    Other(String),
}

/// What the server side saw.
#[derive(Debug, Default)]
struct ServerLog {
    closed: Option<ServerEnd>,
    /// `on_drained` calls: the write queue passed the high-water mark
    /// (reading paused), then went down to the low one.
    drained: usize,
}

/// Echoes every line, newline included.
struct LineEcho {
    max: usize,
    log: Rc<RefCell<ServerLog>>,
}

impl FrameHandler for LineEcho {
    fn max_frame(&self) -> usize {
        self.max
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        cx.write_bytes(line);
        cx.write(b"\n");
    }

    fn on_drained(&mut self, _cx: &mut Context<'_>) {
        self.log.borrow_mut().drained += 1;
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let closed = match reason {
            CloseReason::PeerClosed => ServerEnd::PeerClosed,
            CloseReason::Reset => ServerEnd::Reset,
            CloseReason::Protocol(msg) => ServerEnd::Protocol(msg.clone()),
            other => ServerEnd::Other(other.to_string()),
        };
        let mut log = self.log.borrow_mut();
        assert!(log.closed.is_none(), "on_close called twice");
        log.closed = Some(closed);
    }
}

/// What a run measured, for tests that want to know more than "it passed".
#[derive(Clone, Debug)]
pub struct Report {
    /// Steps taken (schedule and drain).
    pub steps: usize,
    /// Times backpressure engaged and was released (`on_drained` calls).
    pub drained: usize,
    /// Bytes the peer wrote before closing.
    pub written: usize,
    /// Bytes of answers it read.
    pub echoed: usize,
    /// How the server's connection ended.
    pub closed: ServerEnd,
}

/// What the server must answer to `sent`, and whether it must refuse it:
/// every complete line up to the first one over `max`; an incomplete last
/// line over `max` is refused too (the decoder does not wait for its end).
pub fn expected_echo(sent: &[u8], max: usize) -> (Vec<u8>, bool) {
    let mut echo = Vec::new();
    let mut rest = sent;
    while let Some(p) = rest.iter().position(|&b| b == b'\n') {
        if p > max {
            return (echo, true);
        }
        echo.extend_from_slice(&rest[..=p]);
        rest = &rest[p + 1..];
    }
    (echo, rest.len() > max)
}

/// Runs one case and checks the properties; panics on the first that fails.
pub fn check(case: &ConnCase) -> Report {
    let close_at = case.close_at.min(case.stream.len());
    let (server_end, peer_end) = UnixStream::pair().expect("socketpair");
    let mut opts = ConnOptions::default();
    if let Some(t) = case.tight {
        for end in [&server_end, &peer_end] {
            socket2::SockRef::from(end)
                .set_send_buffer_size(t.sndbuf)
                .expect("SO_SNDBUF");
        }
        opts.high_water = t.high_water;
        opts.low_water = t.low_water.min(t.high_water);
    }
    let log = Rc::new(RefCell::new(ServerLog::default()));
    let mut reactor = Reactor::new().expect("reactor");
    let handler = LineEcho {
        max: case.max_frame,
        log: log.clone(),
    };
    let id = reactor
        .adopt(
            BlockingStream::Unix(server_end),
            &opts,
            Framed::new(handler),
        )
        .expect("adopt");
    // BlockingStream's writes use MSG_NOSIGNAL: a fuzzer's process (libFuzzer's
    // main, not Rust's) does not ignore SIGPIPE.
    let mut peer = Some(BlockingStream::Unix(peer_end));
    peer.as_ref()
        .unwrap()
        .set_nonblocking(true)
        .expect("nonblocking");

    let mut written = 0;
    let mut server_paused = false;
    let mut write_broken = false;
    let mut closed_at_step: Option<usize> = None;
    let mut server_closed_at_step: Option<usize> = None;
    let mut peer_done = false; // read EOF or a reset
    let mut peer_reset = false;
    let mut echo = Vec::new();
    let mut rbuf = vec![0u8; DRAIN.read];
    let total = case.steps.len() + DRAIN_STEPS;
    let mut finished = None;

    for i in 0..total {
        let step = case.steps.get(i).copied().unwrap_or(DRAIN);
        if closed_at_step.is_none() && written < close_at && step.write > 0 {
            let end = (written + step.write).min(close_at);
            let mut sock = peer.as_ref().expect("open until closed");
            match sock.write(&case.stream[written..end]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
                {
                    write_broken = true
                }
                Err(e) => panic!("peer write: {e}"),
            }
        }
        if closed_at_step.is_none() && (written == close_at || write_broken) {
            match case.close {
                CloseKind::ShutdownWrite => {
                    let sock = peer.as_ref().expect("open until closed");
                    if let Err(e) = sock.shutdown(Shutdown::Write) {
                        assert!(write_broken, "peer shutdown(Write): {e}");
                    }
                }
                CloseKind::Drop => peer = None,
            }
            closed_at_step = Some(i);
        }
        // Only on a change: resuming schedules a read, and a read scheduled
        // every step would hide a connection that forgets to read.
        if step.pause != server_paused {
            server_paused = step.pause;
            reactor.set_reading(id, !server_paused);
        }
        for _ in 0..step.turns {
            reactor.run_once(Some(Duration::ZERO)).expect("run_once");
        }
        if server_closed_at_step.is_none() && log.borrow().closed.is_some() {
            server_closed_at_step = Some(i);
        }
        if let (Some(mut sock), false, true) = (peer.as_ref(), peer_done, step.read > 0) {
            let want = step.read.min(rbuf.len());
            match sock.read(&mut rbuf[..want]) {
                Ok(0) => peer_done = true,
                Ok(n) => echo.extend_from_slice(&rbuf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    peer_done = true;
                    peer_reset = true;
                }
                Err(e) => panic!("peer read: {e}"),
            }
        }
        // Done when both sides are: the server closed; the peer closed (a
        // refused line closes the server first, then the peer's writes break)
        // and read to the end or went away.
        let peer_finished = closed_at_step.is_some() && (peer.is_none() || peer_done);
        if server_closed_at_step.is_some() && peer_finished {
            finished = Some(i + 1);
            break;
        }
    }

    let closed = log.borrow().closed.clone();
    let Some(steps) = finished else {
        panic!(
            "no end after {total} steps: wrote {written}/{close_at}, closed at {closed_at_step:?}, \
             server {closed:?}, peer done {peer_done}, {} bytes echoed",
            echo.len()
        );
    };
    let closed = closed.expect("finished means the server closed");
    let stats = reactor.stats();
    assert_eq!(stats.panics, 0, "a callback panicked");
    assert_eq!(stats.open, 0, "the connection is still counted open");
    let fin_step = closed_at_step.expect("finished means the peer closed");

    let (want, refused) = expected_echo(&case.stream[..written], case.max_frame);
    match case.close {
        CloseKind::ShutdownWrite => {
            assert_eq!(
                echo,
                want,
                "echo differs ({} bytes read, {} expected)",
                echo.len(),
                want.len()
            );
            if refused {
                assert!(
                    matches!(closed, ServerEnd::Protocol(_)),
                    "a line over {} bytes must close with a protocol error, not {closed:?}",
                    case.max_frame
                );
            } else {
                assert_eq!(closed, ServerEnd::PeerClosed, "close reason");
                assert!(!write_broken, "the server went away before the peer's FIN");
                assert!(!peer_reset, "the peer's read was reset after a clean close");
                assert!(
                    server_closed_at_step.expect("closed") >= fin_step,
                    "the server closed (step {server_closed_at_step:?}) before the peer's FIN \
                     (step {fin_step})"
                );
                assert_eq!(written, close_at);
            }
        }
        CloseKind::Drop => {
            assert!(
                want.starts_with(&echo),
                "what the peer read before going away is not a prefix of the echo"
            );
            let allowed = match closed {
                ServerEnd::PeerClosed | ServerEnd::Reset => true,
                ServerEnd::Protocol(_) => refused,
                ServerEnd::Other(_) => false,
            };
            assert!(allowed, "close reason {closed:?} (refused: {refused})");
        }
    }
    let drained = log.borrow().drained;
    Report {
        steps,
        drained,
        written,
        echoed: echo.len(),
        closed,
    }
}
