//! Helpers shared by the integration tests: a reactor on its own thread, and
//! blocking clients with time limits.
#![allow(dead_code)]

/// Running the example programs as child processes (the `programs*` tests).
pub mod process;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sockloop::{Addr, Handle, Reactor};

/// How long any single wait in a test may take before it counts as a hang.
pub const LIMIT: Duration = Duration::from_secs(10);

/// A reactor running on its own thread; stopped and joined on drop.
pub struct Server {
    pub handle: Handle,
    pub addrs: Vec<Addr>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Builds a reactor on a new thread with `setup` (which returns the
    /// addresses to connect to), then runs it until stopped.
    pub fn start(setup: impl FnOnce(&mut Reactor) -> Vec<Addr> + Send + 'static) -> Server {
        Server::start_with(Reactor::new, setup)
    }

    /// [`start`](Server::start) on the reactor `make` builds (one with
    /// offload options, say).
    pub fn start_with(
        make: impl FnOnce() -> io::Result<Reactor> + Send + 'static,
        setup: impl FnOnce(&mut Reactor) -> Vec<Addr> + Send + 'static,
    ) -> Server {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut reactor = make().expect("reactor");
            let addrs = setup(&mut reactor);
            tx.send((reactor.handle(), addrs)).unwrap();
            reactor.run().expect("run");
        });
        let (handle, addrs) = rx.recv_timeout(LIMIT).expect("server setup");
        Server {
            handle,
            addrs,
            thread: Some(thread),
        }
    }

    pub fn inet(&self, i: usize) -> std::net::SocketAddr {
        self.addrs[i].as_inet().expect("an inet address")
    }

    /// Stops the reactor and waits for its thread (which drops the reactor,
    /// so every `on_close` has run when this returns).
    pub fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            thread.join().expect("reactor thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.join();
        } else if self.thread.is_some() {
            self.handle.stop();
        }
    }
}

pub fn any_port() -> Addr {
    "127.0.0.1:0".parse().unwrap()
}

/// A fresh path for a Unix socket in the temp directory.
pub fn temp_path(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("sockloop-{}-{name}-{n}.sock", std::process::id()))
}

pub fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    stream
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until end of stream.
pub fn read_to_eof(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Sends `data` and reads back as many bytes.
pub fn roundtrip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).unwrap();
    read_n(stream, data.len())
}

/// Receives from a channel within the time limit.
pub fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(LIMIT).expect("event within the time limit")
}

/// Waits until `cond` holds, polling every millisecond (used only to observe
/// another thread's state, never to order events).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A byte pattern that shows misordering and loss (not a repeated byte).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}

/// Sends `line` and a newline, and returns the one line that comes back.
pub fn ask(stream: &mut io::BufReader<TcpStream>, line: &str) -> String {
    stream
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    io::BufRead::read_line(stream, &mut reply).unwrap();
    reply.trim_end().to_string()
}
