//! `cargo bench --bench tls [-- --quick] [-- --secs S]`: sockloop's TLS echo
//! (`listen_tls`) beside tokio (current_thread) with tokio-rustls, both on
//! the same rustls with the same crypto provider (ring), in one run:
//!
//! - **pingpong**: 16 connections, each sends 64 bytes and waits for them;
//!   messages per second and the server thread's CPU per message;
//! - **bulk**: one connection echoes 64 KiB chunks; MiB per second each way
//!   and server CPU per MiB;
//! - **handshakes**: 4 clients connect, handshake, echo one byte and close,
//!   again and again (no session resumption): handshakes per second and
//!   server CPU per handshake.
//!
//! Each server runs on one thread of this process; its CPU time is that
//! thread's (`pthread_getcpuclockid`), so the clients' work is not counted.
//! The clients are blocking rustls clients on other threads. Without
//! `--bench` (as `cargo test` runs benches) it does nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sockloop::tls::rustls;
use sockloop::{Context, Protocol, Reactor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Echo;

impl Protocol for Echo {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_buf(data);
    }
}

/// A server on its own thread: its address and its CPU clock.
struct Running {
    addr: SocketAddr,
    clock: libc::clockid_t,
    _thread: thread::JoinHandle<()>,
}

impl Running {
    fn cpu(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id of a live thread and a valid timespec.
        unsafe { libc::clock_gettime(self.clock, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

fn cpu_clock(handle: &thread::JoinHandle<()>) -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (it serves until the process ends).
    let rc = unsafe { libc::pthread_getcpuclockid(handle.as_pthread_t(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid");
    clock
}

fn sockloop_server(config: Arc<rustls::ServerConfig>) -> Running {
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let mut reactor = Reactor::new().unwrap();
        let id = reactor
            .listen_tls(&"127.0.0.1:0".parse().unwrap(), config, |_| Echo)
            .unwrap();
        let addr = reactor.listener_addr(id).unwrap().as_inet().unwrap();
        tx.send(addr).unwrap();
        reactor.run().unwrap();
    });
    let addr = rx.recv().unwrap();
    Running {
        addr,
        clock: cpu_clock(&thread),
        _thread: thread,
    }
}

fn tokio_server(config: Arc<rustls::ServerConfig>) -> Running {
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let _ = sock.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let mut buf = vec![0; 64 * 1024];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    let addr = rx.recv().unwrap();
    Running {
        addr,
        clock: cpu_clock(&thread),
        _thread: thread,
    }
}

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Client {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Runs `clients` threads of `work` for `secs`; the count they report and
/// the server CPU meanwhile.
fn load(
    server: &Running,
    clients: usize,
    secs: f64,
    work: impl Fn(&AtomicBool) -> u64 + Send + Sync + 'static,
) -> (u64, Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let work = Arc::new(work);
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, total, work) = (stop.clone(), total.clone(), work.clone());
            thread::spawn(move || {
                let n = work(&stop);
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a client failed (wrong echo?)");
    }
    (
        total.load(Ordering::Relaxed),
        t0.elapsed(),
        server.cpu() - cpu0,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("tls: benchmark not run (no --bench); run it with `cargo bench --bench tls`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 0.5 } else { 3.0 });

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server_config =
        sockloop::tls::server_config_from(vec![cert.der().clone()], key_der).unwrap();
    let client_config = sockloop::tls::client_config_from(vec![cert.der().clone()]).unwrap();

    println!(
        "TLS echo, {secs} s per scenario, rustls {} with ring on both sides",
        rustls_version()
    );
    println!(
        "{:<22} {:>14} {:>16} {:>12} {:>16} {:>12} {:>18}",
        "server",
        "pingpong msg/s",
        "µs CPU/message",
        "bulk MiB/s",
        "ms CPU/MiB",
        "handshakes/s",
        "µs CPU/handshake"
    );
    for (name, server) in [
        (
            "sockloop listen_tls",
            sockloop_server(server_config.clone()),
        ),
        ("tokio + tokio-rustls", tokio_server(server_config.clone())),
    ] {
        let addr = server.addr;

        let cc = client_config.clone();
        let (msgs, wall, cpu) = load(&server, 16, secs, move |stop| {
            let mut c = client(addr, &cc);
            let msg = [b'x'; 64];
            let mut back = [0; 64];
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                c.write_all(&msg).unwrap();
                c.read_exact(&mut back).unwrap();
                assert_eq!(back, msg);
                n += 1;
            }
            n
        });
        let pp_rate = msgs as f64 / wall.as_secs_f64();
        let pp_cpu = cpu.as_secs_f64() * 1e6 / msgs.max(1) as f64;

        let cc = client_config.clone();
        let (bytes, wall, cpu) = load(&server, 1, secs, move |stop| {
            let mut c = client(addr, &cc);
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| i as u8).collect();
            let mut back = vec![0; chunk.len()];
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                c.write_all(&chunk).unwrap();
                c.read_exact(&mut back).unwrap();
                assert!(back == chunk);
                n += chunk.len() as u64;
            }
            n
        });
        let mib = bytes as f64 / (1024.0 * 1024.0);
        let bulk_rate = mib / wall.as_secs_f64();
        let bulk_cpu = cpu.as_secs_f64() * 1e3 / mib.max(1e-9);

        let cc = client_config.clone();
        let (shakes, wall, cpu) = load(&server, 4, secs, move |stop| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut c = client(addr, &cc);
                c.write_all(b"x").unwrap();
                let mut b = [0; 1];
                c.read_exact(&mut b).unwrap();
                c.conn.send_close_notify();
                let _ = c.flush();
                n += 1;
            }
            n
        });
        let hs_rate = shakes as f64 / wall.as_secs_f64();
        let hs_cpu = cpu.as_secs_f64() * 1e6 / shakes.max(1) as f64;

        println!(
            "{name:<22} {pp_rate:>14.0} {pp_cpu:>16.1} {bulk_rate:>12.0} {bulk_cpu:>16.2} {hs_rate:>12.0} {hs_cpu:>18.0}"
        );
    }
}

fn rustls_version() -> &'static str {
    // Cargo.lock pins one rustls for both servers; its version for the record.
    let lock = include_str!("../Cargo.lock");
    lock.split("[[package]]")
        .find(|p| p.contains("name = \"rustls\"\n"))
        .and_then(|p| p.split("version = \"").nth(1))
        .and_then(|v| v.split('"').next())
        .unwrap_or("?")
}
