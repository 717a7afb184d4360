//! The example programs, run as real processes: their command lines, their
//! `listening on` lines, what they say on the wire, their exit codes and
//! their error messages.
//!
//! Every server is started on ephemeral ports of 127.0.0.1 (or ::1), and a
//! test talks to it only after reading its `listening on` lines: no fixed
//! ports, no sleeps. Every wait has a deadline, and a child still running
//! when its test ends (or fails) is killed.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::thread;

use common::process::{
    assert_ctime_is_now, assert_echo, assert_help_and_unknown_flag, assert_runtime_error, connect,
    echo_clients, read_to_eof, run, taken_tcp_port, taken_udp_port, text, LineClient, Program,
    TempDir, TIMEOUT,
};

// ----- select_echo ---------------------------------------------------------------

#[test]
fn select_echo_serves_tcp_unix_and_udp_at_once() {
    let dir = TempDir::new("select");
    let sock = dir.join("echo.sock");
    let mut server = Program::start(
        "select_echo",
        &[
            "--port",
            "0",
            "--port",
            "0",
            "--unix",
            text(&sock),
            "--udp",
            "0",
        ],
    );
    let addrs = server.listening(4);
    assert_eq!(addrs[2], format!("unix:{}", sock.display()));
    let udp = addrs[3]
        .strip_prefix("udp:")
        .expect("the UDP socket is marked udp:")
        .to_string();
    assert_ne!(addrs[0], addrs[1], "two listeners, two ports");

    // Eight clients on each TCP port, all connected before any of them talks,
    // so the server holds sixteen conversations at once.
    echo_clients(&addrs[..2], 16, 5);

    // A megabyte, written while the echo is read: far more than one read or
    // one socket buffer, so it crosses the server in many pieces.
    let mut stream = connect(&addrs[1]);
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().expect("clone");
    let sent = big.clone();
    let write = thread::spawn(move || writer.write_all(&sent));
    let mut echo = vec![0; big.len()];
    stream
        .read_exact(&mut echo)
        .expect("read the echo of a megabyte");
    write.join().expect("writer").expect("write a megabyte");
    assert!(echo == big, "a megabyte came back changed");

    let mut unix = UnixStream::connect(&sock).expect("connect to the Unix socket");
    unix.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_echo(&mut unix, b"over a unix socket");

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut buf = [0; 100];
    for datagram in [&b"ping"[..], b"", b"pong"] {
        client.send_to(datagram, &udp).expect("send a datagram");
        let (n, from) = client.recv_from(&mut buf).expect("the datagram's echo");
        assert_eq!(
            &buf[..n],
            datagram,
            "one datagram back, as sent (even an empty one)"
        );
        assert_eq!(from.to_string(), udp);
    }
}

#[test]
fn select_echo_over_ipv6() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let mut server = Program::start("select_echo", &["--host", "::1", "--port", "0"]);
    let addr = server.listening_one();
    assert!(addr.starts_with("[::1]:"), "{addr}");
    assert_echo(&mut connect(&addr), b"Hello over IPv6");
    let port = addr.rsplit(':').next().expect("a port");
    let (status, stdout, stderr) = run("echo_client", &["--host", "::1", "--port", port, "six"]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, ["Client received: six"]);
}

#[test]
fn select_echo_stamps_replies_like_the_python_server() {
    let mut server = Program::start("select_echo", &["--stamp", "--port", "0", "--udp", "0"]);
    let addrs = server.listening(2);
    let mut stream = connect(&addrs[0]);
    stream.write_all(b"hello").expect("send");
    // `Echo=>hello at ` and a 24-character ctime.
    let mut reply = vec![0; "Echo=>hello at ".len() + 24];
    stream.read_exact(&mut reply).expect("the stamped reply");
    let reply = String::from_utf8(reply).expect("text");
    let time = reply
        .strip_prefix("Echo=>hello at ")
        .unwrap_or_else(|| panic!("{reply:?}"));
    assert_ctime_is_now(time);

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    client
        .send_to(b"hi", addrs[1].strip_prefix("udp:").expect("udp:"))
        .expect("send");
    let mut buf = [0; 100];
    let (n, _) = client.recv_from(&mut buf).expect("the stamped datagram");
    let reply = std::str::from_utf8(&buf[..n]).expect("text");
    assert_ctime_is_now(
        reply
            .strip_prefix("Echo=>hi at ")
            .unwrap_or_else(|| panic!("{reply:?}")),
    );
}

#[test]
fn select_echo_stops_cleanly_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = TempDir::new("signal");
        let sock = dir.join("echo.sock");
        // The client stays connected: a short grace, then the close.
        let mut server = Program::start(
            "select_echo",
            &["--port", "0", "--unix", text(&sock), "--grace", "0.3"],
        );
        let addrs = server.listening(2);
        assert!(sock.exists(), "the Unix socket file exists while serving");
        // An open connection must not hold up the exit.
        let mut client = connect(&addrs[0]);
        assert_echo(&mut client, b"still here");

        server.signal(signal);
        let status = server.wait();
        assert_eq!(
            status.code(),
            Some(0),
            "signal {signal}: {status}; stderr: {}",
            server.stderr()
        );
        assert!(
            !sock.exists(),
            "signal {signal}: the Unix socket file was left behind"
        );
        assert!(
            read_to_eof(&mut client).is_empty(),
            "the client sees the server's close"
        );
    }
}

/// A grace too long to add to a clock reading means "wait for the clients",
/// not a panic in the signal handler (exit 101).
#[test]
fn select_echo_with_an_endless_grace_waits_for_its_client() {
    let mut server = Program::start("select_echo", &["--port", "0", "--grace", "1e19"]);
    let addrs = server.listening(1);
    let mut client = connect(&addrs[0]);
    assert_echo(&mut client, b"before");
    server.signal(libc::SIGTERM);
    // Still serving the open connection after the signal.
    assert_echo(&mut client, b"after the signal");
    drop(client);
    let status = server.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr: {}",
        server.stderr()
    );
}

#[test]
fn select_echo_unix_socket_in_use_or_stale() {
    let dir = TempDir::new("stale");
    let sock = dir.join("echo.sock");
    let mut first = Program::start("select_echo", &["--port", "0", "--unix", text(&sock)]);
    first.listening(2);

    // A live server keeps its socket: a second one is refused, and must not
    // remove the first one's file on its way out.
    let second = run("select_echo", &["--port", "0", "--unix", text(&sock)]);
    assert_runtime_error("select_echo", &second, text(&sock));
    let mut client = UnixStream::connect(&sock).expect("the first server still answers");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_echo(&mut client, b"first");

    // A killed server cannot clean up; the file it leaves is stale and the
    // next server takes its place.
    first.signal(libc::SIGKILL);
    first.wait();
    assert!(sock.exists(), "SIGKILL leaves the socket file");
    let mut third = Program::start("select_echo", &["--port", "0", "--unix", text(&sock)]);
    third.listening(2);
    let mut client = UnixStream::connect(&sock).expect("connect to the new server");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_echo(&mut client, b"third");
}

// ----- the clients ----------------------------------------------------------------

#[test]
fn echo_client_prints_each_reply() {
    let mut server = Program::start("select_echo", &["--port", "0"]);
    let addr = server.listening_one();
    let port = addr.rsplit(':').next().expect("a port");
    let (status, stdout, stderr) = run("echo_client", &["--port", port]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        stdout,
        [
            "Client received: Hello",
            "Client received: network",
            "Client received: world"
        ]
    );

    let (status, stdout, _) = run(
        "echo_client",
        &["--host", "127.0.0.1", "--port", port, "spam", "eggs"],
    );
    assert!(status.success());
    assert_eq!(stdout, ["Client received: spam", "Client received: eggs"]);
}

#[test]
fn echo_client_reports_a_refused_connection() {
    // A port that was free a moment ago: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let result = run("echo_client", &["--port", &port.to_string()]);
    assert_runtime_error("echo_client", &result, &format!("127.0.0.1:{port}"));
}

#[test]
fn testecho_runs_eight_clients_against_select_echo_and_line_echo() {
    for server_name in ["select_echo", "line_echo"] {
        let mut server = Program::start(server_name, &["--port", "0"]);
        let addr = server.listening_one();
        let port = addr.rsplit(':').next().expect("a port");
        let (status, stdout, stderr) = run("testecho", &["--clients", "8", "--port", port]);
        assert!(
            status.success(),
            "against {server_name}: {status}; stdout {stdout:?}; stderr {stderr}"
        );
        let expected: Vec<String> = (1..=8)
            .map(|n| format!("client {n}: ok (3 messages)"))
            .collect();
        assert_eq!(stdout, expected, "against {server_name}");
    }
}

#[test]
fn testecho_fails_when_echoes_differ() {
    // --stamp changes every reply: each client must notice, and the run fail.
    let mut server = Program::start("select_echo", &["--stamp", "--port", "0"]);
    let addr = server.listening_one();
    let port = addr.rsplit(':').next().expect("a port");
    let (status, stdout, stderr) = run("testecho", &["--clients", "2", "--port", port]);
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(stdout.len(), 2, "{stdout:?}");
    assert!(
        stdout.iter().all(|line| line.contains("FAILED")),
        "{stdout:?}"
    );
    assert_eq!(stderr.trim_end(), "testecho: error: 2 of 2 clients failed");
}

// ----- line_echo -----------------------------------------------------------------

#[test]
fn line_echo_with_crlf_terminator_echoes_records_and_says_bye() {
    let mut server = Program::start("line_echo", &["--terminator", "\\r\\n", "--port", "0"]);
    let addr = server.listening_one();
    let mut stream = connect(&addr);
    // A record split across writes, and a bare \n that is not a terminator.
    stream.write_all(b"hello\r\nwor").expect("send");
    stream.write_all(b"ld\r\nline\none\r\n").expect("send");
    let expected = b"hello\r\nworld\r\nline\none\r\n";
    let mut echo = [0; 24];
    stream.read_exact(&mut echo).expect("the echoes");
    assert_eq!(&echo, expected);

    // Whatever follows QUIT is not answered: the server says bye and closes.
    stream.write_all(b"QUIT\r\nignored\r\n").expect("send");
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut stream)),
        "bye\r\n"
    );
}

/// A client that pipelines lines, `QUIT` and more bytes, then reads: it gets
/// every echo, `bye` and a clean end of stream, never a reset (the old close
/// left the bytes after `QUIT` unread in the kernel, and closing such a
/// socket resets the connection and drops the echoes still queued).
#[test]
fn line_echo_pipelined_quit_with_trailing_bytes_gets_every_echo_and_no_reset() {
    let mut server = Program::start("line_echo", &["--port", "0"]);
    let addr = server.listening_one();
    for trailing in [8, 256 * 1024] {
        let mut stream = connect(&addr);
        let mut lines = Vec::new();
        for i in 0..20_000 {
            lines.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let mut expected = lines.clone();
        expected.extend_from_slice(b"bye\n");
        let mut writer = stream.try_clone().expect("clone");
        let sender = thread::spawn(move || {
            lines.extend_from_slice(b"QUIT\n");
            writer.write_all(&lines).expect("send the lines");
            // Separate writes: these come after QUIT, in later segments.
            let _ = writer.write_all(&vec![b'x'; trailing]);
        });
        let mut got = Vec::new();
        let result = stream.read_to_end(&mut got);
        sender.join().expect("sender");
        assert!(
            result.is_ok(),
            "trailing {trailing}: {result:?} after {} bytes",
            got.len()
        );
        assert!(
            got == expected,
            "trailing {trailing}: {} of {} bytes",
            got.len(),
            expected.len()
        );
    }
}

#[test]
fn line_echo_disconnects_a_record_over_max_frame() {
    let mut server = Program::start("line_echo", &["--max-frame", "16", "--port", "0"]);
    let addr = server.listening_one();
    let mut stream = connect(&addr);
    assert_echo(&mut stream, b"exactly 16 bytes\n");
    stream.write_all(&[b'x'; 100]).expect("send");
    assert!(
        read_to_eof(&mut stream).is_empty(),
        "no answer, only the close"
    );
    // The server itself goes on.
    assert_echo(&mut connect(&addr), b"next\n");
}

/// `--max-frame` at its largest means unbounded: `max + delim.len()` wrapped,
/// so every line that arrived in pieces was refused.
#[test]
fn line_echo_with_the_largest_max_frame_echoes_lines_in_pieces() {
    let mut server = Program::start(
        "line_echo",
        &["--max-frame", "18446744073709551615", "--port", "0"],
    );
    let addr = server.listening_one();
    let mut stream = connect(&addr);
    stream.write_all(b"hello ").expect("send");
    // A round trip on another connection: the server (one thread, events in
    // the order they came) has read the partial line by the time it answers.
    assert_echo(&mut connect(&addr), b"sync\n");
    stream.write_all(b"world\n").expect("send");
    let mut echo = [0; 12];
    stream
        .read_exact(&mut echo)
        .expect("the echo of a line that came in pieces");
    assert_eq!(&echo, b"hello world\n");
}

// ----- chat_server ---------------------------------------------------------------

#[test]
fn chat_server_relays_lines_to_the_others_and_announces_joins_and_leaves() {
    let mut server = Program::start("chat_server", &["--port", "0"]);
    let addr = server.listening_one();
    let mut a = LineClient::connect(&addr);
    let mut b = LineClient::connect(&addr);
    // Each notice read also proves its subject is in the room before the next step.
    assert_eq!(a.line(), format!("* {} joined", b.name));
    let mut c = LineClient::connect(&addr);
    assert_eq!(a.line(), format!("* {} joined", c.name));
    assert_eq!(b.line(), format!("* {} joined", c.name));

    a.send("hello from a");
    assert_eq!(b.line(), format!("{}: hello from a", a.name));
    assert_eq!(c.line(), format!("{}: hello from a", a.name));
    // b answers only after it got a's line, so had a been sent its own line,
    // a would read that before b's.
    b.send("hi from b");
    assert_eq!(a.line(), format!("{}: hi from b", b.name));
    assert_eq!(c.line(), format!("{}: hi from b", b.name));

    let c_name = c.name.clone();
    drop(c);
    assert_eq!(a.line(), format!("* {c_name} left"));
    assert_eq!(b.line(), format!("* {c_name} left"));
}

#[test]
fn chat_server_drops_a_member_who_does_not_read() {
    let mut server = Program::start("chat_server", &["--port", "0"]);
    let addr = server.listening_one();
    let mut a = LineClient::connect(&addr);
    let silent = LineClient::connect(&addr);
    assert_eq!(a.line(), format!("* {} joined", silent.name));
    // `a` talks while `silent` never reads: once the kernel's buffers are
    // full, a's lines queue up for `silent` until the server's 1 MiB cap.
    let mut writer = a.reader.get_ref().try_clone().expect("clone");
    let talk = thread::spawn(move || {
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        for _ in 0..32 * 1024 {
            if writer.write_all(&line).is_err() {
                break;
            }
        }
    });
    assert_eq!(a.line(), format!("* {} left", silent.name));
    a.reader
        .get_ref()
        .shutdown(std::net::Shutdown::Both)
        .expect("shutdown");
    talk.join().expect("the talker");
}

// ----- bad command lines and addresses ------------------------------------------------

const PROGRAMS: [&str; 5] = [
    "select_echo",
    "echo_client",
    "testecho",
    "line_echo",
    "chat_server",
];
const SERVERS: [&str; 3] = ["select_echo", "line_echo", "chat_server"];

#[test]
fn every_program_has_help_and_rejects_unknown_flags() {
    for name in PROGRAMS {
        assert_help_and_unknown_flag(name);
    }
    for name in ["select_echo", "echo_client", "line_echo", "chat_server"] {
        let (status, _, stderr) = run(name, &["--port", "70000"]);
        assert_eq!(
            status.code(),
            Some(2),
            "{name} --port 70000: {status}; {stderr}"
        );
    }
    let (status, _, stderr) = run("line_echo", &["--terminator", ""]);
    assert_eq!(
        status.code(),
        Some(2),
        "empty terminator: {status}; {stderr}"
    );
}

#[test]
fn servers_report_a_port_in_use() {
    let (_taken, addr, port) = taken_tcp_port();
    for name in SERVERS {
        assert_runtime_error(name, &run(name, &["--port", &port]), &addr);
    }
    // The first listener was fine; still nothing is announced.
    assert_runtime_error(
        "select_echo",
        &run("select_echo", &["--port", "0", "--port", &port]),
        &addr,
    );

    let (_taken, addr, port) = taken_udp_port();
    assert_runtime_error(
        "select_echo",
        &run("select_echo", &["--port", "0", "--udp", &port]),
        &addr,
    );
}

#[test]
fn servers_report_a_host_that_does_not_resolve() {
    for name in SERVERS {
        let result = run(name, &["--host", "no-such-host.invalid", "--port", "0"]);
        assert_runtime_error(name, &result, "no-such-host.invalid");
    }
    let result = run("echo_client", &["--host", "no-such-host.invalid"]);
    assert_runtime_error("echo_client", &result, "no-such-host.invalid");
}

#[test]
fn select_echo_reports_a_unix_path_in_a_missing_directory() {
    let dir = TempDir::new("missing");
    let sock = dir.join("no-such-dir").join("echo.sock");
    let result = run("select_echo", &["--port", "0", "--unix", text(&sock)]);
    assert_runtime_error("select_echo", &result, text(&sock));
}
