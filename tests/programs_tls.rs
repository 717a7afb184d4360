//! The programs over TLS, as real processes: `select_echo --tls-cert
//! --tls-key` on two TCP ports and a Unix socket with a verifying client,
//! `echo_client --tls --ca`, Python's ssl module and `openssl s_client` as
//! outside clients (skipped, with the reason printed, when absent; CI
//! installs them), bad clients that leave no descriptor, a client that
//! sends without reading against the server's memory, and certificate
//! files that cannot be used.
#![cfg(feature = "tls")]

#[path = "common/tls.rs"]
mod certs;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use certs::TestCerts;
use common::process::{
    assert_runtime_error, connect, hwm_kib, open_fds, rss_kib, run, Program, TempDir, TIMEOUT,
};
use sockloop::tls::rustls;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}

fn tls_server(c: &TestCerts, extra: &[&str]) -> Program {
    let mut args = vec![
        "--tls-cert",
        c.cert_pem.to_str().unwrap(),
        "--tls-key",
        c.key_pem.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Program::start("select_echo", &args)
}

fn client<S: Read + Write>(
    c: &TestCerts,
    sock: S,
) -> rustls::StreamOwned<rustls::ClientConnection, S> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(c.client_config(), name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Echoes `data` in 64 KiB chunks (a TLS stream has one reader and writer).
fn echo_through<S: Read + Write>(tls: &mut S, data: &[u8]) {
    let mut back = vec![0; 64 * 1024];
    for chunk in data.chunks(64 * 1024) {
        tls.write_all(chunk).unwrap();
        let got = &mut back[..chunk.len()];
        tls.read_exact(got).unwrap();
        assert!(got == chunk, "echo differs");
    }
}

/// Ends a session cleanly: our close_notify, then the server's.
fn close_cleanly<S: Read + Write>(tls: &mut rustls::StreamOwned<rustls::ClientConnection, S>) {
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("the server's close_notify");
    assert!(rest.is_empty());
}

#[test]
fn select_echo_serves_4_mib_over_tls_on_every_stream_listener() {
    let c = TestCerts::new("prog-echo");
    let dir = TempDir::new("tls-echo");
    let sock = dir.join("echo.sock");
    let mut server = tls_server(
        &c,
        &[
            "--port",
            "0",
            "--port",
            "0",
            "--unix",
            sock.to_str().unwrap(),
        ],
    );
    let addrs = server.listening(3);
    let data = pattern(4 * 1024 * 1024);
    for addr in &addrs[..2] {
        let mut t = client(&c, connect(addr));
        echo_through(&mut t, &data);
        close_cleanly(&mut t);
    }
    let path = addrs[2].strip_prefix("unix:").expect("a unix: address");
    let unix = UnixStream::connect(path).unwrap();
    unix.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut u = client(&c, unix);
    echo_through(&mut u, &data);
    close_cleanly(&mut u);
    let log = server.stop_with(libc::SIGTERM);
    assert!(
        !log.contains("TlsTruncated") && !log.contains("TLS:"),
        "{log}"
    );
}

#[test]
fn echo_client_verifies_against_the_given_ca() {
    let c = TestCerts::new("prog-client");
    let mut server = tls_server(&c, &["--port", "0"]);
    let addr = server.listening_one();
    let port = addr.rsplit_once(':').unwrap().1.to_string();
    let ca = c.ca_pem.to_str().unwrap();
    let (status, stdout, stderr) = run(
        "echo_client",
        &[
            "--port",
            &port,
            "--tls",
            "--ca",
            ca,
            "--server-name",
            "localhost",
            "spam",
            "eggs",
        ],
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, ["Client received: spam", "Client received: eggs"]);

    // A CA that did not sign the server's certificate: refused.
    let other = TestCerts::new("prog-client-other");
    let out = run(
        "echo_client",
        &[
            "--port",
            &port,
            "--tls",
            "--ca",
            other.ca_pem.to_str().unwrap(),
            "spam",
        ],
    );
    assert_runtime_error("echo_client", &out, "certificate");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn certificate_files_that_cannot_be_used_stop_select_echo_clearly() {
    let c = TestCerts::new("prog-bad");
    let cert = c.cert_pem.to_str().unwrap();
    let key = c.key_pem.to_str().unwrap();
    let missing = c.cert_pem.with_file_name("missing.pem");
    let missing = missing.to_str().unwrap();
    for (args, mentions) in [
        (vec!["--tls-cert", missing, "--tls-key", key], "missing.pem"),
        (vec!["--tls-cert", key, "--tls-key", key], "empty chain"),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                c.other_key_pem.to_str().unwrap(),
            ],
            "does not match",
        ),
    ] {
        let mut args = args;
        args.extend(["--port", "0"]);
        let out = run("select_echo", &args);
        assert_runtime_error("select_echo", &out, mentions);
    }
}

/// A program (`python3`, `openssl`) that answers `--version`, or why not.
fn have(program: &str, check: &[&str]) -> Option<String> {
    match Command::new(program).args(check).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`{program} {}` failed: {}",
            check.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("{program} not found ({e})")),
    }
}

#[test]
fn python_ssl_client_talks_to_select_echo() {
    if let Some(why) = have("python3", &["-c", "import ssl"]) {
        println!("skipped: {why} (.ci/run installs python3)");
        return;
    }
    let c = TestCerts::new("prog-python");
    let mut server = tls_server(&c, &["--port", "0"]);
    let addr = server.listening_one();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = r#"
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((host, port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        data = b"x" * 100000
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("server closed early")
            got += chunk
        assert got == data
        print(s.version(), "echoed", len(got))
        s.unwrap()  # close_notify both ways
        print("clean close")
"#;
    let out = Command::new("python3")
        .args(["-c", script, host, port, c.ca_pem.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("echoed 100000") && stdout.contains("clean close"),
        "{stdout}"
    );
    server.stop_with(libc::SIGTERM);
}

#[test]
fn openssl_s_client_talks_to_select_echo() {
    if let Some(why) = have("openssl", &["version"]) {
        println!("skipped: {why} (.ci/run installs openssl)");
        return;
    }
    let c = TestCerts::new("prog-openssl");
    let mut server = tls_server(&c, &["--port", "0"]);
    let addr = server.listening_one();
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr,
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(&c.ca_pem)
        // -quiet implies -ign_eof; -no_ign_eof ends the session at the end of stdin.
        .args(["-verify_return_error", "-quiet", "-no_ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = s_client.stdin.take().unwrap();
    let stdout = s_client.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    stdin.write_all(b"hello from s_client\n").unwrap();
    stdin.flush().unwrap();
    let line = rx.recv_timeout(TIMEOUT);
    drop(stdin); // s_client ends the session
    let deadline = Instant::now() + TIMEOUT;
    while s_client.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = s_client.kill();
            panic!("openssl s_client did not end after its stdin closed");
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut err = String::new();
    let _ = s_client.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(line.ok().as_deref(), Some("hello from s_client"), "{err}");
    let log = server.stop_with(libc::SIGTERM);
    assert!(
        log.contains("closed by peer"),
        "s_client's close_notify: {log}"
    );
}

#[test]
fn bad_clients_leave_no_descriptor_and_a_good_one_goes_on() {
    let c = TestCerts::new("prog-bad-clients");
    let mut server = tls_server(&c, &["--port", "0"]);
    let addr = server.listening_one();
    let mut good = client(&c, connect(&addr));
    echo_through(&mut good, b"first");
    let fds = open_fds(server.pid());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut hello = Vec::new();
    rustls::ClientConnection::new(c.client_config(), name)
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let mut bad = Vec::new();
    for i in 0..100 {
        let mut s = connect(&addr);
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
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
    let t0 = Instant::now();
    for s in &mut bad {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // the server closes each
    }
    eprintln!("bad clients closed after {:?}", t0.elapsed());
    echo_through(&mut good, &pattern(200_000));
    eprintln!("echo after {:?}", t0.elapsed());
    let deadline = Instant::now() + TIMEOUT;
    while open_fds(server.pid()) > fds {
        assert!(
            Instant::now() < deadline,
            "descriptors left: {} > {fds}",
            open_fds(server.pid())
        );
        thread::sleep(Duration::from_millis(5));
    }
    close_cleanly(&mut good);
    let log = server.stop_with(libc::SIGTERM);
    assert_eq!(
        log.matches("): TLS: ").count(),
        100,
        "one line per bad client:\n{log}"
    );
}

#[test]
fn a_tls_client_that_sends_without_reading_does_not_grow_the_server() {
    let c = TestCerts::new("prog-memory");
    let mut server = tls_server(&c, &["--port", "0"]);
    let addr = server.listening_one();
    let pid = server.pid();
    let mut warm = client(&c, connect(&addr));
    echo_through(&mut warm, &pattern(256 * 1024));
    close_cleanly(&mut warm);
    let before = rss_kib(pid);

    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (counter, finished) = (sent.clone(), done.clone());
    let stream = connect(&addr);
    // Blocked sends end after this long without progress.
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let flood = thread::spawn(move || {
        let mut t = client(&c, stream);
        let chunk = pattern(64 * 1024);
        while counter.load(Ordering::Relaxed) < 128 * 1024 * 1024 {
            if t.write_all(&chunk).is_err() {
                break; // held back: the server stopped reading
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        finished.store(true, Ordering::Relaxed);
        t // not read, not closed until measured
    });
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the flood neither ended nor stalled"
        );
        peak = peak.max(rss_kib(pid));
        thread::sleep(Duration::from_millis(5));
    }
    let peak = peak.max(hwm_kib(pid));
    let t = flood.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "server RSS {before} KiB before, peak {peak} KiB (+{} KiB) while a TLS client sent {} KiB without reading",
        peak.saturating_sub(before),
        sent / 1024
    );
    assert!(
        sent < 128 * 1024 * 1024,
        "the server read all of it: no backpressure"
    );
    assert!(
        peak.saturating_sub(before) < 16 * 1024,
        "server grew {} KiB",
        peak - before
    );
    drop(t);
    server.stop_with(libc::SIGTERM);
}
