//! Seed fidelity: the programs modelled on the classic Python servers answer
//! those servers' own clients, run unchanged (tests/seeds/*.py, Python 3
//! syntax aside), and what a telnet user or the stamping servers' users
//! send gets the answer they expect.
//!
//! The Python clients have no timeout of their own: a server that does not
//! answer makes them hang, which is what these tests catch, so each runs
//! under a deadline and is killed past it. Without `python3` those tests
//! print why they are skipped and pass (CI has python3).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use common::process::{assert_ctime_is_now_at, connect, run, Program, TIMEOUT};

/// Runs `tests/seeds/<script>` against `addr` (`IP:PORT`) and returns its
/// stdout lines; `None` (with the reason printed) when there is no python3.
fn seed_client(script: &str, addr: &str) -> Option<Vec<String>> {
    seed_client_with(script, addr, &[])
}

/// [`seed_client`] with more arguments after the address.
fn seed_client_with(script: &str, addr: &str, args: &[&str]) -> Option<Vec<String>> {
    if Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("skipped: no python3 on PATH to run the seed client {script}");
        return None;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/seeds")
        .join(script);
    let (ip, port) = addr.rsplit_once(':').expect("IP:PORT");
    let child = Command::new("python3")
        .arg(&path)
        .args([ip, port])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    let (done, output) = mpsc::channel::<std::io::Result<Output>>();
    thread::spawn(move || done.send(child.wait_with_output()));
    let output = match output.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("wait for python3"),
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned; its waiter reaps it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{script} against {addr} hung: no answer within {TIMEOUT:?}");
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script}: {}; stderr:\n{stderr}",
        output.status
    );
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// The socketserver documentation's threaded client: `sendall(message)`,
/// no newline, then one `recv(1024)`; answered `<thread>: <message>`.
#[test]
fn the_threaded_seed_client_gets_its_answers_from_pid_echo() {
    for mode in ["threading", "forking"] {
        let mut server = Program::start("pid_echo", &["--mode", mode, "--port", "0"]);
        let addr = server.listening_one();
        let Some(lines) = seed_client("threaded_client.py", &addr) else {
            return;
        };
        assert_eq!(lines.len(), 3, "{mode}: {lines:?}");
        for (k, line) in (1..).zip(&lines) {
            let (who, message) = line
                .strip_prefix("Received: ")
                .and_then(|rest| rest.split_once(": "))
                .unwrap_or_else(|| panic!("{mode}: {line:?}"));
            assert_eq!(message, format!("Hello World {k}"), "{mode}: {line:?}");
            match mode {
                "threading" => assert!(who.starts_with("request-"), "{line:?}"),
                _ => assert!(who.parse::<u32>().is_ok(), "{line:?}"),
            }
        }
        server.stop_with(libc::SIGTERM);
    }
}

/// The book's forking client: `send('Hello, world')`, then one `recv(1024)`.
#[test]
fn the_forking_seed_client_gets_its_answer_from_echo_server_in_every_mode() {
    for mode in ["forking", "sync", "threading", "pool"] {
        let mut server = Program::start("echo_server", &["--mode", mode, "--port", "0"]);
        let addr = server.listening_one();
        let Some(lines) = seed_client("forking_client.py", &addr) else {
            return;
        };
        assert_eq!(
            lines,
            ["Sending : b'Hello, world'", "Received: b'Hello, world'"],
            "{mode}"
        );
        server.stop_with(libc::SIGTERM);
    }
    // And from the program that shows the child's pid, as the seed's server did.
    let mut server = Program::start("pid_echo", &["--mode", "forking", "--port", "0"]);
    let addr = server.listening_one();
    let lines = seed_client("forking_client.py", &addr).expect("python3 was there a moment ago");
    let reply = lines[1]
        .strip_prefix("Received: b'")
        .and_then(|r| r.strip_suffix(": Hello, world'"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let child: u32 = reply.parse().unwrap_or_else(|_| panic!("{lines:?}"));
    assert_ne!(child, server.pid(), "served by a child");
    server.stop_with(libc::SIGTERM);
}

/// The documentation's first client sends a line and reads one `recv(1024)`;
/// its server reads with `rfile.readline()`, and so does upper_server.
#[test]
fn the_documentation_tcp_client_gets_its_line_from_upper_server() {
    let mut server = Program::start("upper_server", &["--port", "0"]);
    let addr = server.listening_one();
    let Some(lines) = seed_client_with("tcp_client.py", &addr, &["hello", "world"]) else {
        return;
    };
    // The seed's handler strips the line before answering; upper_server
    // answers the line as read, so the client prints its newline too.
    assert_eq!(
        lines,
        ["Sent:     hello world", "Received: HELLO WORLD", ""],
        "{lines:?}"
    );
    server.stop_with(libc::SIGTERM);
}

/// A line still comes back whole from echo_server when it is sent in one
/// write, as the CPython test's client sends `hello world\n`; a client that
/// waits for its answer before sending more is answered what it sent.
#[test]
fn echo_server_answers_what_one_read_brings() {
    let mut server = Program::start("echo_server", &["--mode", "threading", "--port", "0"]);
    let addr = server.listening_one();
    for message in [&b"hello world\n"[..], b"no newline", &[b'x'; 1024]] {
        let mut client = connect(&addr);
        client.write_all(message).expect("send");
        let mut reply = Vec::new();
        client
            .read_to_end(&mut reply)
            .expect("the answer, then EOF");
        assert_eq!(reply, message);
    }
    server.stop_with(libc::SIGTERM);
}

/// `testecho --stamped` checks `Echo=><message> at <ctime>` from every
/// stamping server, and fails against a plain echo.
#[test]
fn testecho_checks_stamped_replies() {
    let servers: [(&str, &[&str]); 4] = [
        ("fork_server", &["--delay", "0"]),
        ("thread_server", &["--delay", "0"]),
        ("class_server", &["--delay", "0"]),
        ("select_echo", &["--stamp"]),
    ];
    for (name, extra) in servers {
        let mut args = vec!["--port", "0"];
        args.extend_from_slice(extra);
        let mut server = Program::start(name, &args);
        let addr = server.listening_one();
        let port = addr.rsplit_once(':').expect("IP:PORT").1;
        let (status, stdout, stderr) =
            run("testecho", &["--stamped", "--port", port, "--clients", "4"]);
        assert!(status.success(), "{name}: {status}; {stdout:?} {stderr}");
        assert_eq!(stdout.len(), 4, "{name}: {stdout:?}");
        assert!(stdout.iter().all(|l| l.ends_with(": ok (3 messages)")));
        server.stop_with(libc::SIGTERM);
    }

    let mut plain = Program::start("select_echo", &["--port", "0"]);
    let addr = plain.listening_one();
    let port = addr.rsplit_once(':').expect("IP:PORT").1;
    let (status, stdout, _) = run("testecho", &["--stamped", "--port", port, "--clients", "1"]);
    assert_eq!(status.code(), Some(1), "a plain echo is not stamped");
    assert!(stdout[0].contains("FAILED"), "{stdout:?}");
    plain.stop_with(libc::SIGTERM);
}

/// The stamp is local time, as Python's `time.ctime()`: with
/// `TZ=<+0530>-5:30` it reads 5 h 30 min ahead of UTC.
#[test]
fn stamps_are_in_local_time() {
    let env = [("TZ", "<+0530>-5:30")];
    for (name, args) in [
        ("select_echo", &["--port", "0", "--stamp"][..]),
        ("fork_server", &["--port", "0", "--delay", "0"]),
    ] {
        let mut server = Program::start_env(name, args, &env);
        let addr = server.listening_one();
        let mut client = connect(&addr);
        client.write_all(b"when").expect("send");
        let mut reply = vec![0; "Echo=>when at ".len() + 24];
        client.read_exact(&mut reply).expect("the stamped reply");
        let reply = String::from_utf8(reply).expect("text");
        let time = reply.strip_prefix("Echo=>when at ").expect("stamped");
        assert_ctime_is_now_at(time, 5 * 3600 + 30 * 60);
        drop(client);
        server.stop_with(libc::SIGTERM);
    }
}

/// telnet sends `\r\n`: in line mode (the default `\n` terminator) the `\r`
/// is not part of the record, so `QUIT\r\n` quits; each echo ends as the
/// client's line did.
#[test]
fn line_echo_serves_telnet_lines() {
    let mut server = Program::start("line_echo", &["--port", "0"]);
    let addr = server.listening_one();
    let mut client = connect(&addr);
    client
        .write_all(b"hello\r\nfrom nc\nQUIT\r\nignored\r\n")
        .expect("send");
    let mut reply = Vec::new();
    client
        .read_to_end(&mut reply)
        .expect("echoes, bye, then EOF");
    assert_eq!(String::from_utf8_lossy(&reply), "hello\r\nfrom nc\nbye\r\n");
    server.stop_with(libc::SIGTERM);

    // With another terminator a `\r` is data like any other byte.
    let mut server = Program::start("line_echo", &["--port", "0", "--terminator", "|"]);
    let addr = server.listening_one();
    let mut client = connect(&addr);
    client.write_all(b"a\r|QUIT|").expect("send");
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).expect("echo, bye, then EOF");
    assert_eq!(String::from_utf8_lossy(&reply), "a\r|bye|");
    server.stop_with(libc::SIGTERM);
}
