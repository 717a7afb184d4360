//! The servers the bench runs from its own binary (`echo --serve NAME --port 0`):
//! the references written the way people usually write them, sockloop's
//! socketserver modes with an echo handler that keeps the connection, and
//! the Python socketserver script.
//!
//! Every one binds 127.0.0.1 with a backlog of 1024 (as sockloop, mio and
//! tokio do), sets TCP_NODELAY on accepted sockets (as sockloop does), reads
//! 4 KiB at a time (sockloop's socketserver handlers: their 8 KiB `rfile`),
//! prints `listening on ADDR` and runs until killed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

const BUF: usize = 4096;

/// Runs server `name` on `port`; `work` is slept once per connection before
/// echoing (the long-work scenario), `workers` sizes a pool.
pub fn serve(name: &str, port: u16, work: Duration, workers: usize) -> io::Result<()> {
    match name {
        "std_threads" => std_threads(listener(port)?),
        "mio_raw" => mio_raw(listener(port)?),
        "tokio_ct" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            rt.block_on(tokio_echo(listener(port)?))
        }
        "tokio_mt" => {
            // Workers: tokio's default, one per core the server is pinned to.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_io()
                .build()?;
            rt.block_on(tokio_echo(listener(port)?))
        }
        // max_threads raised, as max_children is for forking: conn1000 and
        // idle9000 hold a thread per connection by design.
        "sockloop_threading" => sockloop(
            port,
            sockloop::server::Mode::Threading {
                daemon_threads: false,
                block_on_close: true,
                max_threads: 100_000,
            },
            work,
        ),
        "sockloop_forking" => sockloop(
            port,
            sockloop::server::Mode::forking_with(100_000, false),
            work,
        ),
        "sockloop_pool" => sockloop(port, sockloop::server::Mode::pool(workers), work),
        _ => Err(io::Error::other(format!("unknown server {name}"))),
    }
}

fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// 127.0.0.1:`port`, SO_REUSEADDR, backlog 1024, announced.
fn listener(port: u16) -> io::Result<TcpListener> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    let l: TcpListener = s.into();
    announce(l.local_addr()?)?;
    Ok(l)
}

/// A thread per connection, blocking read and write_all.
fn std_threads(l: TcpListener) -> io::Result<()> {
    loop {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        std::thread::spawn(move || {
            let mut buf = [0u8; BUF];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// tokio's echo example (with a 4 KiB buffer instead of its 1 KiB).
async fn tokio_echo(l: TcpListener) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    l.set_nonblocking(true)?;
    let l = tokio::net::TcpListener::from_std(l)?;
    loop {
        let (mut s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; BUF];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// A hand-written mio loop as most people write one: a 4 KiB read buffer
/// and an output buffer per connection, read until `WouldBlock` on every
/// readable event, a partial write parks the rest and stops reading until
/// it is flushed. Sockets are registered once for both directions.
fn mio_raw(l: TcpListener) -> io::Result<()> {
    use mio::net::TcpListener as MioListener;
    use mio::{Events, Interest, Poll, Token};

    struct Conn {
        s: mio::net::TcpStream,
        buf: Box<[u8]>,
        out: Vec<u8>,
    }
    const LISTENER: Token = Token(usize::MAX);

    l.set_nonblocking(true)?;
    let mut l = MioListener::from_std(l);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut l, LISTENER, Interest::READABLE)?;
    let mut conns: slab::Slab<Conn> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            s.set_nodelay(true)?;
                            let e = conns.vacant_entry();
                            poll.registry().register(
                                &mut s,
                                Token(e.key()),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            e.insert(Conn {
                                s,
                                buf: vec![0u8; BUF].into_boxed_slice(),
                                out: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break, // EMFILE and friends: try again on the next event
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if serve_conn(c).is_err() {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.s);
            }
        }
    }

    /// Flushes parked output, then reads and echoes until WouldBlock. Err: close.
    fn serve_conn(c: &mut Conn) -> io::Result<()> {
        loop {
            while !c.out.is_empty() {
                match c.s.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let n = match c.s.read(&mut c.buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut done = 0;
            while done < n {
                match c.s.write(&c.buf[done..n]) {
                    Ok(k) => done += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            c.out.extend_from_slice(&c.buf[done..n]);
        }
    }
}

/// sockloop's socketserver in `mode`, with an echo handler that serves the
/// connection until the client closes (the `echo_server` example answers
/// one line and closes, which no persistent-connection scenario can use).
fn sockloop(port: u16, mode: sockloop::server::Mode, work: Duration) -> io::Result<()> {
    use sockloop::server::{Family, Request, ServerBuilder};
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(sockloop::Addr::resolve("127.0.0.1", port)?)
        .mode(mode)
        .request_queue_size(1024)
        .build(move || {
            move |req: &mut Request| -> io::Result<()> {
                req.set_nodelay(true)?;
                if !work.is_zero() {
                    std::thread::sleep(work);
                }
                let (r, w) = req.split();
                loop {
                    let buf = r.fill_buf()?;
                    if buf.is_empty() {
                        return Ok(());
                    }
                    let n = buf.len();
                    w.write_all(buf)?;
                    r.consume(n);
                }
            }
        })?;
    let addr = server.server_address()[0].clone();
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    drop(out);
    server.serve_forever()
}

/// Python's socketserver echo: `python3 -c PYTHON KIND PORT`.
pub const PYTHON: &str = r#"
import socket, socketserver, sys
kind, port = sys.argv[1], int(sys.argv[2])

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        recv, send = s.recv, s.sendall
        while True:
            data = recv(4096)
            if not data:
                return
            send(data)

base = socketserver.ThreadingTCPServer if kind == "threading" else socketserver.ForkingTCPServer

class Server(base):
    allow_reuse_address = True
    request_queue_size = 1024   # socketserver's default is 5
    max_children = 100000       # ForkingMixIn's default is 40
    daemon_threads = True
    block_on_close = False

srv = Server(("127.0.0.1", port), Echo)
print("listening on %s:%d" % srv.server_address, flush=True)
srv.serve_forever()
"#;
