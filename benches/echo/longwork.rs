//! The long-work load: every client connects at once, sends one line that
//! costs the server blocking work, waits for the answer and closes. For the
//! offload servers a probe connection meanwhile sends `ping` lines, which the
//! loop answers itself: its latency is the loop's own, while workers are busy.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::loadgen::{err, histogram};
use crate::sys;

/// What the server sends back for a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The same bytes.
    Echo,
    /// `Echo=>` + the line with its newline + ` at ` + a 24-character ctime
    /// (the classic `fork_server` / `thread_server` examples).
    Stamped,
    /// `Echo=>` + the line without its newline + ` at ` + ctime + `\n`
    /// (`offload_server`, a line server).
    StampedLine,
}

/// What it measured.
pub struct OneShot {
    /// First connect to last answer.
    pub makespan: Duration,
    /// ns from each client's connect to its answer.
    pub hist: Histogram<u64>,
    pub cpu: Duration,
    /// The probe's ping round trips (ns) before the clients came, and while
    /// they were being served.
    pub probe: Option<(Histogram<u64>, Histogram<u64>)>,
}

/// Client `i`'s line: printable, `msg` bytes with the newline, unique.
fn line(i: usize, msg: usize) -> Vec<u8> {
    let mut l = format!("client {i:05} ").into_bytes();
    l.resize(msg.max(l.len() + 1) - 1, b'x');
    l.push(b'\n');
    l
}

fn expected(reply: Reply, line: &[u8]) -> (usize, Vec<u8>) {
    match reply {
        Reply::Echo => (line.len(), line.to_vec()),
        Reply::Stamped => (6 + line.len() + 4 + 24, [b"Echo=>", line, b" at "].concat()),
        Reply::StampedLine => (
            6 + line.len() - 1 + 4 + 24 + 1,
            [b"Echo=>", &line[..line.len() - 1], b" at "].concat(),
        ),
    }
}

/// Pings `addr` once every 5 ms: `warm` pings first (sent on `ready` when
/// done), then until `stop`. Returns (before, during) round trips.
fn probe(
    addr: SocketAddr,
    warm: usize,
    ready: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) -> io::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let (mut before, mut during) = (histogram(), histogram());
    let mut n = 0;
    while n < warm || !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        s.write_all(b"ping\n")?;
        let mut pong = [0u8; 5];
        s.read_exact(&mut pong)?;
        if &pong != b"pong\n" {
            return Err(err(format!(
                "probe: {:?} instead of pong",
                String::from_utf8_lossy(&pong)
            )));
        }
        let ns = (t.elapsed().as_nanos() as u64).max(1_000);
        if n < warm {
            before.saturating_record(ns);
        } else {
            during.saturating_record(ns);
        }
        n += 1;
        if n == warm {
            let _ = ready.send(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((before, during))
}

/// Runs `clients` one-line clients against `addrs` (they must all fit the
/// backlog: they connect at once); with `with_probe`, a ping probe beside them.
pub fn one_shot(
    addrs: &[SocketAddr],
    clients: usize,
    msg: usize,
    reply: Reply,
    with_probe: bool,
    limit: Duration,
) -> io::Result<OneShot> {
    let stop = Arc::new(AtomicBool::new(false));
    let probe_thread = if with_probe {
        let (tx, rx) = mpsc::channel();
        let (addr, flag) = (addrs[0], stop.clone());
        let t = std::thread::spawn(move || probe(addr, 50, tx, flag));
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            stop.store(true, Ordering::Relaxed);
            return Err(match t.join() {
                Ok(Err(e)) => err(format!("probe: {e}")),
                _ => err("probe: no pong within 10 s".into()),
            });
        }
        Some(t)
    } else {
        None
    };
    let result = clients_run(addrs, clients, msg, reply, limit);
    stop.store(true, Ordering::Relaxed);
    let probe = match probe_thread {
        Some(t) => Some(t.join().map_err(|_| err("probe panicked".into()))??),
        None => None,
    };
    let (makespan, hist, cpu) = result?;
    Ok(OneShot {
        makespan,
        hist,
        cpu,
        probe,
    })
}

fn clients_run(
    addrs: &[SocketAddr],
    clients: usize,
    msg: usize,
    reply: Reply,
    limit: Duration,
) -> io::Result<(Duration, Histogram<u64>, Duration)> {
    struct Client {
        s: Option<TcpStream>,
        line: Vec<u8>,
        sent: usize,
        got: Vec<u8>,
        t0: Instant,
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let cpu0 = sys::thread_cpu();
    let start = Instant::now();
    let mut cs: Vec<Client> = Vec::with_capacity(clients);
    for i in 0..clients {
        let addr = addrs[i % addrs.len()];
        let mut s =
            TcpStream::connect(addr).map_err(|e| err(format!("connect #{i} to {addr}: {e}")))?;
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        cs.push(Client {
            s: Some(s),
            line: line(i, msg),
            sent: 0,
            got: Vec::new(),
            t0: Instant::now(),
        });
    }
    let mut hist = histogram();
    let mut left = clients;
    let mut buf = [0u8; 4096];
    while left > 0 {
        if start.elapsed() > limit {
            return Err(err(format!(
                "{left} of {clients} clients still waiting after {limit:?}"
            )));
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut cs[i];
            let Some(s) = c.s.as_mut() else { continue };
            if let Some(e) = s.take_error()? {
                return Err(err(format!("client #{i}: {e}")));
            }
            if c.sent < c.line.len() {
                if s.peer_addr().is_err() {
                    continue; // still connecting
                }
                match s.write(&c.line[c.sent..]) {
                    Ok(k) => c.sent += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(err(format!("client #{i}: {e}"))),
                }
            }
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        return Err(err(format!(
                            "client #{i}: closed after {} bytes",
                            c.got.len()
                        )))
                    }
                    Ok(n) => c.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(err(format!("client #{i}: {e}"))),
                }
            }
            let (len, prefix) = expected(reply, &c.line);
            if c.got.len() > len {
                return Err(err(format!(
                    "client #{i}: {} bytes back, expected {len}",
                    c.got.len()
                )));
            }
            if c.got.len() == len {
                let ok = c.got.starts_with(&prefix)
                    && (reply != Reply::StampedLine || c.got.ends_with(b"\n"));
                if !ok {
                    return Err(err(format!(
                        "echo mismatch for client #{i}: {:?}",
                        String::from_utf8_lossy(&c.got)
                    )));
                }
                hist.saturating_record((c.t0.elapsed().as_nanos() as u64).max(1_000));
                c.s = None; // closes: the server's handler sees end of stream
                left -= 1;
            }
        }
    }
    Ok((
        start.elapsed(),
        hist,
        sys::thread_cpu().saturating_sub(cpu0),
    ))
}
