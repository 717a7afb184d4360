//! TLS on the reactor (feature `tls`).
#![cfg(feature = "tls")]

#[path = "common/tls.rs"]
mod certs;
mod common;

use certs::TestCerts;

#[test]
fn pem_loading_errors_say_what_is_wrong() {
    let c = TestCerts::new("pem");
    assert!(sockloop::tls::server_config(&c.cert_pem, &c.key_pem).is_ok());
    assert!(sockloop::tls::client_config(&c.ca_pem).is_ok());

    let missing = c.ca_pem.with_file_name("nope.pem");
    let e = sockloop::tls::server_config(&missing, &c.key_pem).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");

    let e = sockloop::tls::server_config(&c.cert_pem, &c.other_key_pem).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");

    // A key file where the chain should be: no certificate in it.
    let e = sockloop::tls::server_config(&c.key_pem, &c.key_pem).unwrap_err();
    assert!(e.to_string().contains("empty chain"), "{e}");
    let e = sockloop::tls::server_config(&c.cert_pem, &c.cert_pem).unwrap_err();
    assert!(e.to_string().contains("no private key"), "{e}");
    let e = sockloop::tls::server_config_from(Vec::new(), c.key()).unwrap_err();
    assert!(e.to_string().contains("empty certificate chain"), "{e}");
    let e = sockloop::tls::client_config(&c.key_pem).unwrap_err();
    assert!(e.to_string().contains("empty chain"), "{e}");

    let garbage = c.ca_pem.with_file_name("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = sockloop::tls::load_certs(&garbage).unwrap_err();
    assert!(e.to_string().contains("garbage.pem"), "{e}");
}

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{any_port, pattern, recv, temp_path, Server, LIMIT};
use sockloop::tls::rustls;
use sockloop::{Addr, CloseReason, ConnOptions, Context, ListenOptions, Protocol};

/// Echoes; reports its close reason and whether `on_open`/`on_eof` ran.
struct Echo {
    events: mpsc::Sender<String>,
}

impl Protocol for Echo {
    fn on_open(&mut self, _: &mut Context<'_>) {
        let _ = self.events.send("open".into());
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_buf(data);
    }
    fn on_eof(&mut self, cx: &mut Context<'_>) {
        let _ = self.events.send("eof".into());
        cx.close();
    }
    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.events.send(format!("close: {reason:?}"));
    }
}

fn tls_echo_server(
    config: Arc<rustls::ServerConfig>,
    opts: ConnOptions,
    unix: Option<std::path::PathBuf>,
) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let mut lopts = ListenOptions::default();
        lopts.tls = Some(config);
        lopts.conn = opts;
        let mut addrs = Vec::new();
        let t = tx.clone();
        let id = r
            .listen_with(&any_port(), &lopts, move |_| Echo { events: t.clone() })
            .unwrap();
        addrs.push(r.listener_addr(id).unwrap());
        if let Some(path) = unix {
            let t = tx.clone();
            let id = r
                .listen_with(&Addr::unix(&path).unwrap(), &lopts, move |_| Echo {
                    events: t.clone(),
                })
                .unwrap();
            addrs.push(r.listener_addr(id).unwrap());
        }
        addrs
    });
    (server, rx)
}

/// A blocking rustls client that verifies the server against the test CA.
fn client<S: Read + Write>(
    c: &TestCerts,
    sock: S,
) -> rustls::StreamOwned<rustls::ClientConnection, S> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(c.client_config(), name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn tcp(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Echoes `data` through a TLS stream in chunks (the stream cannot be
/// split between a writer and a reader thread).
fn echo_through<S: Read + Write>(tls: &mut S, data: &[u8]) {
    let mut back = vec![0; 64 * 1024];
    for chunk in data.chunks(64 * 1024) {
        tls.write_all(chunk).unwrap();
        tls.flush().unwrap();
        let got = &mut back[..chunk.len()];
        tls.read_exact(got).unwrap();
        assert!(got == chunk, "echo differs");
    }
}

#[test]
fn echoes_4_mib_over_tls_on_tcp_and_unix_with_a_verifying_client() {
    let c = TestCerts::new("echo");
    let path = temp_path("tls-echo");
    let (server, events) = tls_echo_server(
        c.server_config(),
        ConnOptions::default(),
        Some(path.clone()),
    );
    let data = pattern(4 * 1024 * 1024);

    let mut t = client(&c, tcp(server.inet(0)));
    echo_through(&mut t, &data);
    assert_eq!(recv(&events), "open", "on_open after the handshake");
    // Our close_notify: the server's on_eof, a clean close, and its
    // close_notify back (read_to_end fails on a truncation).
    t.conn.send_close_notify();
    t.flush().unwrap();
    let mut rest = Vec::new();
    t.read_to_end(&mut rest).expect("the server's close_notify");
    assert!(rest.is_empty());
    assert_eq!(recv(&events), "eof");
    assert_eq!(recv(&events), "close: PeerClosed");

    let unix = UnixStream::connect(&path).unwrap();
    unix.set_read_timeout(Some(LIMIT)).unwrap();
    let mut u = client(&c, unix);
    echo_through(&mut u, &data);
    assert_eq!(recv(&events), "open");
    drop(u);
    server.stop();
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_client_that_does_not_trust_the_server_fails_the_handshake() {
    let c = TestCerts::new("untrusted");
    let other = TestCerts::new("other");
    let (server, events) = tls_echo_server(c.server_config(), ConnOptions::default(), None);
    let mut t = client(&other, tcp(server.inet(0)));
    let e = t.write_all(b"hello").and_then(|_| t.flush()).and_then(|_| {
        let mut b = [0; 1];
        t.read(&mut b).map(|_| ())
    });
    assert!(e.is_err(), "the client rejects an unknown CA");
    let close = recv(&events);
    assert!(close.starts_with("close: Tls("), "{close}");
    server.stop();
}

/// Server side: `close()` sends what is queued, then close_notify.
struct SayByeAndClose;

impl Protocol for SayByeAndClose {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.write(&pattern(300_000));
        cx.write(b"bye");
        cx.close();
    }
    fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
}

#[test]
fn close_sends_the_queue_then_close_notify() {
    let c = TestCerts::new("bye");
    let config = c.server_config();
    let server = Server::start(move |r| {
        let id = r
            .listen_tls(&any_port(), config, |_| SayByeAndClose)
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut t = client(&c, tcp(server.inet(0)));
    let mut all = Vec::new();
    // read_to_end fails with UnexpectedEof unless close_notify came.
    t.read_to_end(&mut all).expect("a clean TLS end of stream");
    let mut want = pattern(300_000);
    want.extend_from_slice(b"bye");
    assert!(all == want, "got {} bytes", all.len());
    server.stop();
}

#[test]
fn an_end_of_stream_without_close_notify_is_a_truncation() {
    let c = TestCerts::new("trunc");
    let (server, events) = tls_echo_server(c.server_config(), ConnOptions::default(), None);
    let mut t = client(&c, tcp(server.inet(0)));
    echo_through(&mut t, b"some bytes");
    assert_eq!(recv(&events), "open");
    t.sock.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        recv(&events),
        "eof",
        "a truncation is still the end of input"
    );
    assert_eq!(recv(&events), "close: TlsTruncated");
    server.stop();
}

#[test]
fn a_silent_client_meets_the_handshake_timeout() {
    let c = TestCerts::new("timeout");
    let mut opts = ConnOptions::default();
    opts.tls_handshake_timeout = Duration::from_millis(200);
    let (server, events) = tls_echo_server(c.server_config(), opts, None);
    let mut s = tcp(server.inet(0));
    let start = Instant::now();
    let close = recv(&events);
    assert!(close.contains("handshake not done within"), "{close}");
    let mut b = [0; 16];
    assert_eq!(
        s.read(&mut b).unwrap_or(0),
        0,
        "the server closed the socket"
    );
    assert!(start.elapsed() < LIMIT);
    server.stop();
}

#[test]
fn the_handshake_byte_limit_cuts_off_a_flood() {
    let c = TestCerts::new("flood");
    let mut opts = ConnOptions::default();
    opts.tls_handshake_limit = 1000;
    let (server, events) = tls_echo_server(c.server_config(), opts, None);
    let mut s = tcp(server.inet(0));
    // A handshake record header announcing 16 KiB, then the bytes.
    let mut flood = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    flood.extend(std::iter::repeat_n(0x01, 16 * 1024));
    let _ = s.write_all(&flood);
    let close = recv(&events);
    assert!(
        close.contains("byte limit") || close.starts_with("close: Tls("),
        "{close}"
    );
    server.stop();
}

/// The first bytes of a real ClientHello.
fn client_hello(c: &TestCerts) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(c.client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[test]
fn plain_text_and_truncated_handshakes_leave_nothing_and_disturb_no_one() {
    let c = TestCerts::new("abuse");
    let (server, events) = tls_echo_server(c.server_config(), ConnOptions::default(), None);
    let addr = server.inet(0);
    let hello = client_hello(&c);
    let mut good = client(&c, tcp(addr));
    echo_through(&mut good, b"before");
    assert_eq!(recv(&events), "open");

    let mut bad = Vec::new();
    for i in 0..100 {
        let mut s = tcp(addr);
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
        } else {
            s.write_all(&hello[..hello.len() / 2]).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        }
        bad.push(s);
        if i % 10 == 0 {
            echo_through(&mut good, b"meanwhile");
        }
    }
    // Each bad client sees its connection closed by the server (EOF or a
    // reset): the server let go of its descriptor.
    for s in &mut bad {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let mut reasons = Vec::new();
    for _ in 0..100 {
        reasons.push(recv(&events));
    }
    assert!(
        reasons.iter().all(|r| r.starts_with("close: Tls(")),
        "{reasons:?}"
    );
    let plain = reasons
        .iter()
        .filter(|r| r.contains("during the handshake"))
        .count();
    assert_eq!(plain, 50, "{reasons:?}");
    echo_through(&mut good, &pattern(100_000));
    let stats = {
        let (tx, rx) = mpsc::channel();
        server
            .handle
            .post(move |r| {
                let _ = tx.send(r.stats());
            })
            .unwrap();
        recv(&rx)
    };
    assert_eq!(stats.open, 1, "only the good client is left: {stats:?}");
    server.stop();
}

/// A sockloop client: sends on open, checks the echo, closes.
struct Client {
    data: Vec<u8>,
    got: Vec<u8>,
    done: mpsc::Sender<(Vec<u8>, String)>,
}

impl Protocol for Client {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.write(&self.data);
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        self.got.extend_from_slice(data);
        data.clear();
        if self.got.len() == self.data.len() {
            cx.close();
        }
    }
    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        let _ = self
            .done
            .send((std::mem::take(&mut self.got), format!("{reason:?}")));
    }
}

#[test]
fn connect_tls_talks_to_listen_tls_and_both_close_cleanly() {
    let c = TestCerts::new("connect");
    let (server, events) = tls_echo_server(c.server_config(), ConnOptions::default(), None);
    let addr: Addr = server.addrs[0].clone();
    let (tx, rx) = mpsc::channel();
    let data = pattern(1_000_000);
    let client_config = c.client_config();
    let sent = data.clone();
    let client = Server::start(move |r| {
        r.connect_tls(
            &addr,
            "localhost",
            client_config,
            Client {
                data: sent,
                got: Vec::new(),
                done: tx,
            },
        )
        .unwrap();
        Vec::new()
    });
    let (got, reason) = recv(&rx);
    assert!(
        got == data,
        "echo of {} bytes, got {}",
        data.len(),
        got.len()
    );
    assert_eq!(reason, "Closed");
    assert_eq!(recv(&events), "open");
    assert_eq!(
        recv(&events),
        "eof",
        "our close_notify is the server's on_eof"
    );
    assert_eq!(recv(&events), "close: PeerClosed");
    client.stop();
    server.stop();
}

#[test]
fn connect_tls_rejects_a_server_name_the_certificate_does_not_have() {
    let c = TestCerts::new("name");
    let (server, _events) = tls_echo_server(c.server_config(), ConnOptions::default(), None);
    let addr: Addr = server.addrs[0].clone();
    let (tx, rx) = mpsc::channel();
    let client_config = c.client_config();
    let client = Server::start(move |r| {
        r.connect_tls(
            &addr,
            "example.com",
            client_config,
            Client {
                data: b"x".to_vec(),
                got: Vec::new(),
                done: tx,
            },
        )
        .unwrap();
        Vec::new()
    });
    let (_, reason) = recv(&rx);
    assert!(
        reason.starts_with("Tls(") && reason.contains("not valid for name"),
        "{reason}"
    );
    client.stop();
    server.stop();
}

/// Reports its close reason.
struct CloseTo(mpsc::Sender<String>);

impl Protocol for CloseTo {
    fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("close: {reason:?}"));
    }
}

/// Writes by id before the handshake is done wait inside rustls (it cannot
/// encrypt yet); they count against `max_queued` as queued bytes do, so a
/// peer that never finishes the handshake cannot make them grow without
/// bound. (Before, 4 MiB were taken against a 1 MiB limit.)
#[test]
fn writes_before_the_handshake_ends_count_against_max_queued() {
    let c = TestCerts::new("early");
    // Accepts, never answers: the handshake never ends.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Addr::from(silent.local_addr().unwrap());
    let mut r = sockloop::Reactor::new().unwrap();
    let mut opts = ConnOptions::default();
    opts.max_queued = Some(1 << 20);
    let (tx, rx) = mpsc::channel();
    let id = r
        .connect_tls_with(&addr, "localhost", c.client_config(), &opts, CloseTo(tx))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..64 {
        match r.write(id, &chunk) {
            Ok(()) => accepted += chunk.len(),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        // The connect completes and the ClientHello goes out meanwhile.
        r.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert!(
        accepted <= 1 << 20,
        "{accepted} bytes taken over a 1 MiB limit"
    );
    let e = refused.expect("the write over the limit fails");
    assert!(e.to_string().contains("1048576"), "{e}");
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        r.run_once(Some(Duration::from_millis(10))).unwrap();
        if let Ok(ev) = rx.try_recv() {
            assert!(ev.contains("WriteQueueFull"), "{ev}");
            return;
        }
    }
    panic!("no close");
}

/// What was written before the end of the handshake (counted against the
/// limit while rustls held it) goes out after it, all of it, and the count
/// is released: the echo comes back whole.
#[test]
fn writes_before_the_handshake_are_sent_after_it() {
    let c = TestCerts::new("early2");
    let (server, _events) = tls_echo_server(c.server_config(), ConnOptions::default(), None);
    let mut r = sockloop::Reactor::new().unwrap();
    let mut opts = ConnOptions::default();
    opts.max_queued = Some(256 * 1024);
    struct Collect(mpsc::Sender<usize>);
    impl Protocol for Collect {
        fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
            let _ = self.0.send(data.len());
            data.clear();
        }
    }
    let (tx, rx) = mpsc::channel();
    let addr = server.addrs[0].clone();
    let id = r
        .connect_tls_with(&addr, "localhost", c.client_config(), &opts, Collect(tx))
        .unwrap();
    let data = pattern(200 * 1024);
    r.write(id, &data).unwrap();
    // Held by rustls, reported with the queue (beside the ClientHello).
    let queued = r.queued(id);
    assert!(queued >= data.len(), "{queued}");
    let mut got = 0;
    let deadline = Instant::now() + LIMIT;
    while got < data.len() && Instant::now() < deadline {
        r.run_once(Some(Duration::from_millis(10))).unwrap();
        got += rx.try_iter().sum::<usize>();
    }
    assert_eq!(got, data.len());
    // The limit was released: as much again is taken.
    r.write(id, &data).unwrap();
}
