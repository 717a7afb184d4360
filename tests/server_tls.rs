//! socketserver over TLS (`ServerBuilder::tls`): blocking handlers in every
//! stream mode and family, close_notify at the end of a request, and a
//! failed or silent handshake reported to `handle_error`.
#![cfg(feature = "tls")]

#[path = "common/tls.rs"]
mod certs;
mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use certs::TestCerts;
use common::{any_port, recv, temp_path, LIMIT};
use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};
use sockloop::tls::rustls;
use sockloop::Addr;

/// Reads one line and writes it back, upper-cased.
struct UpperLine;

impl RequestHandler for UpperLine {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let mut line = String::new();
        request.rfile().read_line(&mut line)?;
        request.wfile().write_all(line.to_uppercase().as_bytes())
    }
}

fn modes() -> Vec<(&'static str, Mode)> {
    vec![
        ("sync", Mode::Sync),
        (
            "threading",
            Mode::Threading {
                daemon_threads: false,
                block_on_close: true,
                max_threads: 16,
            },
        ),
        (
            "forking",
            Mode::Forking {
                max_children: 8,
                block_on_close: true,
                reap_on_sigchld: true,
            },
        ),
        ("pool", Mode::pool(2)),
    ]
}

fn ask<S: Read + Write>(c: &TestCerts, sock: S, line: &[u8]) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(c.client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(line).unwrap();
    tls.flush().unwrap();
    let mut reply = Vec::new();
    // Fails with UnexpectedEof unless the server sent close_notify.
    tls.read_to_end(&mut reply)
        .expect("a clean TLS end of request");
    reply
}

#[test]
fn tls_requests_in_every_stream_mode_and_family() {
    let c = TestCerts::new("server");
    for (name, mode) in modes() {
        for family in [Family::Tcp, Family::UnixStream] {
            let addr = match family {
                Family::Tcp => any_port(),
                _ => Addr::unix(temp_path("tls-server")).unwrap(),
            };
            let server = ServerBuilder::new(family)
                .bind(addr)
                .mode(mode.clone())
                .tls(c.server_config())
                .spawn(|| UpperLine)
                .unwrap();
            let at = server.server_address()[0].clone();
            for i in 0..3 {
                let line = format!("hello {name} {i}\n");
                let reply = match family {
                    Family::Tcp => {
                        let s = TcpStream::connect(at.as_inet().unwrap()).unwrap();
                        s.set_read_timeout(Some(LIMIT)).unwrap();
                        ask(&c, s, line.as_bytes())
                    }
                    _ => {
                        let s = UnixStream::connect(at.as_path().unwrap()).unwrap();
                        s.set_read_timeout(Some(LIMIT)).unwrap();
                        ask(&c, s, line.as_bytes())
                    }
                };
                assert_eq!(reply, line.to_uppercase().as_bytes(), "{name} {family:?}");
            }
            server.shutdown().unwrap();
        }
    }
}

#[test]
fn failed_and_silent_handshakes_reach_handle_error_and_others_go_on() {
    let c = TestCerts::new("server-err");
    for (name, mode) in modes() {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let server = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(mode)
            .tls(c.server_config())
            .tls_handshake_timeout(Duration::from_millis(300))
            .handle_error(move |_, e| {
                let _ = tx.lock().unwrap().send(e.to_string());
            })
            .spawn(|| UpperLine)
            .unwrap();
        let at = server.server_address()[0].as_inet().unwrap();

        let mut plain = TcpStream::connect(at).unwrap();
        plain.set_read_timeout(Some(LIMIT)).unwrap();
        plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut sink = Vec::new();
        let _ = plain.read_to_end(&mut sink); // closed by the server
                                              // A forked child reports to its own copy of the hook: not seen here.
        let forked = name == "forking";
        if !forked {
            let e = recv(&rx);
            assert!(e.contains("TLS handshake failed"), "{name}: {e}");
        }

        let mut silent = TcpStream::connect(at).unwrap();
        silent.set_read_timeout(Some(LIMIT)).unwrap();
        let _ = silent.read_to_end(&mut sink);
        if !forked {
            let e = recv(&rx);
            assert!(e.contains("TLS handshake not done within"), "{name}: {e}");
        }

        let s = TcpStream::connect(at).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        assert_eq!(ask(&c, s, b"still here\n"), b"STILL HERE\n", "{name}");
        server.shutdown().unwrap();
    }
}

#[test]
fn tls_needs_a_stream_family() {
    let c = TestCerts::new("server-udp");
    let built = ServerBuilder::new(Family::Udp)
        .bind(any_port())
        .tls(c.server_config())
        .build(|| UpperLine);
    let Err(e) = built else {
        panic!("a datagram server refuses TLS");
    };
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

/// The handshake timeout is a deadline for the whole handshake, not a
/// timeout per read: a client that drips a real ClientHello a byte every
/// 150 ms is cut off after `tls_handshake_timeout` (300 ms), and a Sync
/// server's next client is served soon after. (Before, each byte re-armed
/// the timeout: the good client waited the ~6 s of the drip; red team
/// rt-tls F1.)
#[test]
fn a_dripping_handshake_is_cut_at_the_handshake_deadline() {
    let c = TestCerts::new("drip");
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::Sync)
        .tls(c.server_config())
        .tls_handshake_timeout(Duration::from_millis(300))
        .spawn(|| UpperLine)
        .unwrap();
    let at = server.server_address()[0].as_inet().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut cc = rustls::ClientConnection::new(c.client_config(), name).unwrap();
    let mut hello = Vec::new();
    cc.write_tls(&mut hello).unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let drip = std::thread::spawn(move || {
        let mut s = TcpStream::connect(at).unwrap();
        let t0 = std::time::Instant::now();
        for (i, b) in hello[..40].iter().enumerate() {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            if i == 0 {
                let _ = started_tx.send(());
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        t0.elapsed()
    });
    recv(&started_rx);
    let t0 = std::time::Instant::now();
    let good = TcpStream::connect(at).unwrap();
    good.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(ask(&c, good, b"hi\n"), b"HI\n");
    let waited = t0.elapsed();
    server.shutdown().unwrap();
    let dripped = drip.join().unwrap();
    assert!(
        waited < Duration::from_secs(3),
        "the good client waited {waited:?} behind a handshake dripped over {dripped:?} \
         (timeout 300 ms)"
    );
}
