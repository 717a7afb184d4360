//! The load generator: one thread, one mio loop, many client connections.
//!
//! It opens connections in a sliding window (never more waiting for their
//! first echo than `window`, which is kept under the server's backlog), and
//! only once every connection has had its first echo does the caller start
//! the clock. Connections are spread round-robin over the server's ports.
//! Each connection sends fixed-size messages, keeping `depth` in flight (or
//! one per `1/rate` seconds), checks every echoed byte against what it sent,
//! and records each message's round trip in an HDR histogram.
//!
//! Every connection's byte stream is a window onto one shared pseudo-random
//! pattern whose length is a prime larger than any read, so a lost, repeated
//! or reordered chunk shows up as a mismatch; checking is a `memcmp`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::sys;

/// A prime above the read buffer (64 KiB): at most one wrap per read.
const PATTERN: usize = 69_623;
const READ_BUF: usize = 64 * 1024;
/// At most this much written per call.
const WRITE_MAX: usize = 256 * 1024;

/// One load.
#[derive(Clone, Debug)]
pub struct Spec {
    pub addrs: Vec<SocketAddr>,
    pub conns: usize,
    pub msg: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Messages per second per connection (then `depth` is 1); None: as fast as echoed.
    pub rate: Option<f64>,
    /// Most connections waiting for their first echo at once.
    pub window: usize,
    /// Give up when no connection makes progress for this long.
    pub stall: Duration,
}

/// What one phase measured.
pub struct Phase {
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Latency in ns of the messages sent in this phase and echoed in it.
    pub hist: Histogram<u64>,
    /// The load generator thread's CPU time during the phase.
    pub cpu: Duration,
    /// Scheduled sends skipped because the previous message was still out (rate mode).
    pub late: u64,
}

struct Conn {
    s: TcpStream,
    /// Where this connection's stream starts in the pattern.
    base: usize,
    connected: bool,
    /// Bytes queued for sending / written / echoed and checked.
    target: u64,
    sent: u64,
    recv: u64,
    /// Send time of each message in flight, oldest first.
    inflight: VecDeque<Instant>,
    /// Messages fully echoed so far.
    done: u64,
}

pub struct LoadGen {
    spec: Spec,
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    pattern: Vec<u8>,
    rbuf: Vec<u8>,
    /// Full-depth sending on (off while connecting).
    running: bool,
    // Per-phase counters.
    phase_start: Instant,
    messages: u64,
    bytes: u64,
    hist: Histogram<u64>,
    late: u64,
    /// Rate mode: next connection due and when.
    next_due: usize,
    next_at: Instant,
    /// Connections that have had their first echo.
    established: usize,
    /// The events of one turn (kept to reuse its allocation).
    ready: Vec<(usize, bool, bool)>,
}

pub fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..PATTERN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("histogram bounds")
}

pub fn err(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl LoadGen {
    /// Opens every connection and waits for each one's first echo.
    pub fn connect(spec: Spec) -> io::Result<LoadGen> {
        assert!(spec.msg > 0 && spec.depth > 0 && !spec.addrs.is_empty());
        let now = Instant::now();
        let mut lg = LoadGen {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Vec::with_capacity(spec.conns),
            pattern: pattern(),
            rbuf: vec![0; READ_BUF],
            running: false,
            phase_start: now,
            messages: 0,
            bytes: 0,
            hist: histogram(),
            late: 0,
            next_due: 0,
            next_at: now,
            established: 0,
            ready: Vec::with_capacity(1024),
            spec,
        };
        let mut established = 0;
        let mut last_progress = Instant::now();
        while established < lg.spec.conns {
            while lg.conns.len() < lg.spec.conns && lg.conns.len() - established < lg.spec.window {
                lg.open()?;
            }
            lg.turn(Some(Duration::from_millis(50)))?;
            if lg.established > established {
                established = lg.established;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > lg.spec.stall {
                return Err(err(format!(
                    "only {established} of {} connections got their first echo ({} opened)",
                    lg.spec.conns,
                    lg.conns.len()
                )));
            }
        }
        Ok(lg)
    }

    fn open(&mut self) -> io::Result<()> {
        let i = self.conns.len();
        let addr = self.spec.addrs[i % self.spec.addrs.len()];
        let mut s =
            TcpStream::connect(addr).map_err(|e| err(format!("connect #{i} to {addr}: {e}")))?;
        self.poll
            .registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        self.conns.push(Conn {
            s,
            base: (i * 7_919) % PATTERN,
            connected: false,
            target: 0,
            sent: 0,
            recv: 0,
            inflight: VecDeque::new(),
            done: 0,
        });
        Ok(())
    }

    /// Runs the load for `d`; the clock of the returned phase starts now.
    pub fn run_for(&mut self, d: Duration) -> io::Result<Phase> {
        let end = Instant::now() + d;
        self.run_until(|| Instant::now() >= end)
    }

    /// Runs the load until `stop` says so (asked at least every 10 ms).
    pub fn run_until(&mut self, mut stop: impl FnMut() -> bool) -> io::Result<Phase> {
        let cpu0 = sys::thread_cpu();
        self.phase_start = Instant::now();
        self.messages = 0;
        self.bytes = 0;
        self.late = 0;
        self.hist.reset();
        if !self.running {
            self.running = true;
            self.next_at = self.phase_start;
            if self.spec.rate.is_none() {
                for i in 0..self.conns.len() {
                    self.refill(i, self.phase_start);
                    self.flush(i)?;
                }
            }
        }
        let mut last_progress = (Instant::now(), 0);
        while !stop() {
            let mut timeout = Duration::from_millis(10);
            if let Some(rate) = self.spec.rate {
                let now = Instant::now();
                let gap = Duration::from_secs_f64(1.0 / rate / self.conns.len() as f64);
                while self.next_at <= now {
                    let i = self.next_due;
                    if self.conns[i].inflight.is_empty() {
                        self.queue(i, self.next_at);
                        self.flush(i)?;
                    } else {
                        self.late += 1;
                    }
                    self.next_due = (i + 1) % self.conns.len();
                    self.next_at += gap;
                }
                timeout = timeout.min(self.next_at - now);
            }
            self.turn(Some(timeout))?;
            if self.messages > last_progress.1 {
                last_progress = (Instant::now(), self.messages);
            } else if last_progress.0.elapsed() > self.spec.stall {
                return Err(err(format!(
                    "no message echoed for {:?}",
                    last_progress.0.elapsed()
                )));
            }
        }
        let elapsed = self.phase_start.elapsed();
        let mut hist = histogram();
        std::mem::swap(&mut hist, &mut self.hist);
        Ok(Phase {
            messages: self.messages,
            bytes: self.bytes,
            elapsed,
            hist,
            cpu: sys::thread_cpu().saturating_sub(cpu0),
            late: self.late,
        })
    }

    /// Queues one more message on connection `i`, sent (for latency) at `at`.
    fn queue(&mut self, i: usize, at: Instant) {
        let c = &mut self.conns[i];
        c.target += self.spec.msg as u64;
        c.inflight.push_back(at);
    }

    /// Tops connection `i` up to `depth` messages in flight.
    fn refill(&mut self, i: usize, now: Instant) {
        let depth = if self.running && self.spec.rate.is_none() {
            self.spec.depth
        } else {
            1
        };
        while self.conns[i].inflight.len() < depth {
            self.queue(i, now);
        }
    }

    /// One poll and its events.
    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            r => r?,
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.events.iter().map(|e| {
            let readable = e.is_readable() || e.is_read_closed() || e.is_error();
            (e.token().0, readable, e.is_writable())
        }));
        let r = self.dispatch(&ready);
        self.ready = ready;
        r
    }

    fn dispatch(&mut self, ready: &[(usize, bool, bool)]) -> io::Result<()> {
        for &(i, readable, writable) in ready {
            if !self.conns[i].connected {
                if !writable && !readable {
                    continue;
                }
                let c = &mut self.conns[i];
                if let Some(e) = c.s.take_error()? {
                    return Err(err(format!("connection #{i}: {e}")));
                }
                match c.s.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                    Err(e) => return Err(err(format!("connection #{i}: {e}"))),
                }
                c.connected = true;
                c.s.set_nodelay(true)?;
                let now = Instant::now();
                self.refill(i, now);
                self.flush(i)?;
            }
            if readable {
                self.read(i)?;
            }
            if writable {
                self.flush(i)?;
            }
        }
        Ok(())
    }

    /// Reads what connection `i` has, checks it, completes messages, refills.
    fn read(&mut self, i: usize) -> io::Result<()> {
        loop {
            let n = match self.conns[i].s.read(&mut self.rbuf) {
                Ok(0) => {
                    return Err(err(format!(
                        "connection #{i}: the server closed it after {} bytes",
                        self.conns[i].recv
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err(format!("connection #{i}: {e}"))),
            };
            let c = &mut self.conns[i];
            if c.recv + n as u64 > c.sent {
                return Err(err(format!(
                    "echo mismatch on connection #{i}: {} bytes back, only {} sent",
                    c.recv + n as u64,
                    c.sent
                )));
            }
            let start = (c.base as u64 + c.recv) as usize % PATTERN;
            let first = n.min(PATTERN - start);
            if self.rbuf[..first] != self.pattern[start..start + first]
                || self.rbuf[first..n] != self.pattern[..n - first]
            {
                let at = (0..n)
                    .find(|&k| self.rbuf[k] != self.pattern[(start + k) % PATTERN])
                    .unwrap_or(0);
                return Err(err(format!(
                    "echo mismatch on connection #{i} at byte {}: got {:#04x}, sent {:#04x}",
                    c.recv + at as u64,
                    self.rbuf[at],
                    self.pattern[(start + at) % PATTERN]
                )));
            }
            c.recv += n as u64;
            self.bytes += n as u64;
            let msg = self.spec.msg as u64;
            let now = Instant::now();
            while c.recv >= (c.done + 1) * msg {
                let sent_at = c.inflight.pop_front().expect("a message in flight");
                c.done += 1;
                if c.done == 1 {
                    self.established += 1;
                }
                if self.running {
                    self.messages += 1;
                    if sent_at >= self.phase_start {
                        let ns = now.saturating_duration_since(sent_at).as_nanos() as u64;
                        self.hist.saturating_record(ns.max(1_000));
                    }
                }
            }
            if self.running && self.spec.rate.is_none() {
                self.refill(i, now);
            }
            self.flush(i)?;
            if n < self.rbuf.len() {
                // A short read emptied the socket: the next edge will come.
                return Ok(());
            }
        }
    }

    /// Writes what connection `i` has queued, as far as the socket takes it.
    fn flush(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        if !c.connected {
            return Ok(());
        }
        while c.sent < c.target {
            let len = ((c.target - c.sent) as usize).min(WRITE_MAX);
            let start = (c.base as u64 + c.sent) as usize % PATTERN;
            let first = len.min(PATTERN - start);
            let mut rest = len - first;
            let mut bufs = [
                IoSlice::new(&self.pattern[start..start + first]),
                IoSlice::new(&[]),
            ];
            let mut nbufs = 1;
            if rest > 0 {
                // WRITE_MAX may exceed the pattern: at most one more wrap per call.
                rest = rest.min(PATTERN);
                bufs[1] = IoSlice::new(&self.pattern[..rest]);
                nbufs = 2;
            }
            match c.s.write_vectored(&bufs[..nbufs]) {
                Ok(k) => c.sent += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(format!("connection #{i}: {e}"))),
            }
        }
        Ok(())
    }
}
