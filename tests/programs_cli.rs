//! The command lines every example program shares: `--version`, the value
//! names in `--help`, `--host ''` (every interface, as in Python), and
//! values refused before anything starts.
//!
//! Servers listen on ephemeral ports; a test talks to one only after its
//! `listening on` line. Every wait has a deadline.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;

use common::process::{assert_echo, assert_usage_error, connect, run, Program, TIMEOUT};

/// Every example program.
const PROGRAMS: [&str; 13] = [
    "select_echo",
    "echo_client",
    "testecho",
    "line_echo",
    "chat_server",
    "echo_server",
    "fork_server",
    "thread_server",
    "class_server",
    "upper_server",
    "pid_echo",
    "trace_echo",
    "offload_server",
];

/// Every program that listens, with `--host` and `--port`.
const SERVERS: [&str; 11] = [
    "select_echo",
    "line_echo",
    "chat_server",
    "echo_server",
    "fork_server",
    "thread_server",
    "class_server",
    "upper_server",
    "pid_echo",
    "trace_echo",
    "offload_server",
];

#[test]
fn every_program_answers_version() {
    for name in PROGRAMS {
        let (status, stdout, stderr) = run(name, &["--version"]);
        assert!(status.success(), "{name} --version: {status}; {stderr}");
        assert_eq!(
            stdout,
            [format!("{name} {}", env!("CARGO_PKG_VERSION"))],
            "{name} --version"
        );
    }
}

/// One name per kind of value, whatever the option: a user who learnt
/// `--grace <SECS>` reads `--delay <SECS>` the same way.
#[test]
fn value_names_are_the_same_in_every_program() {
    const ALLOWED: [&str; 9] = [
        "HOST",
        "PORT",
        "PATH",
        "SECS",
        "N",
        // Values of their own kind, one option each.
        "TERMINATOR",
        "FAMILY",
        "MODE",
        "POOL",
    ];
    for name in PROGRAMS {
        let (status, stdout, _) = run(name, &["--help"]);
        assert!(status.success(), "{name} --help: {status}");
        let help = stdout.join("\n");
        // Placeholders are upper case; `<data>` in a help text is prose.
        let placeholders = help
            .split('<')
            .skip(1)
            .filter_map(|rest| rest.split_once('>').map(|(value, _)| value))
            .filter(|value| value.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        for value in placeholders {
            assert!(
                ALLOWED.contains(&value),
                "{name}: <{value}> is not one of the shared value names {ALLOWED:?}:\n{help}"
            );
        }
        // Each option that takes seconds says so in its value name.
        for line in help.lines().filter(|l| l.trim_start().starts_with("--")) {
            let option = line.split_whitespace().next().unwrap_or_default();
            if ["--delay", "--grace", "--timeout"].contains(&option) {
                assert!(line.contains("<SECS>"), "{name}: {line}");
            }
        }
    }
}

/// The port of a `listening on` address, checking that it is every interface.
fn any_interface_port(name: &str, addr: &str) -> String {
    let port = addr
        .strip_prefix("0.0.0.0:")
        .unwrap_or_else(|| panic!("{name} --host '': listening on {addr}, not 0.0.0.0"));
    port.to_string()
}

#[test]
fn an_empty_host_listens_on_every_interface() {
    for name in SERVERS {
        let mut server = Program::start(name, &["--host", "", "--port", "0", "--grace", "0"]);
        let port = any_interface_port(name, &server.listening_one());
        let mut client = connect(&format!("127.0.0.1:{port}"));
        match name {
            "select_echo" => assert_echo(&mut client, b"through 127.0.0.1"),
            "line_echo" => assert_echo(&mut client, b"a line\n"),
            "echo_server" | "upper_server" | "trace_echo" => {
                client.write_all(b"one line\n").expect("send");
                let mut reply = Vec::new();
                client.read_to_end(&mut reply).expect("the reply");
                assert!(!reply.is_empty(), "{name}: no reply");
            }
            // The others answer late (a delay) or to others (chat): the
            // connection itself shows the listener.
            _ => {}
        }
        drop(client);
        server.stop_with(libc::SIGTERM);
    }

    // A datagram server too.
    let args = ["--family", "udp", "--host", "", "--port", "0"];
    let mut server = Program::start("echo_server", &args);
    let addr = server.listening_one();
    let port = any_interface_port("echo_server", addr.strip_prefix("udp:").expect("udp:"));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket
        .send_to(b"datagram", format!("127.0.0.1:{port}"))
        .expect("send");
    let mut reply = [0; 64];
    let n = socket.recv(&mut reply).expect("the echo");
    assert_eq!(&reply[..n], b"datagram");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn clients_take_an_empty_host_as_this_machine() {
    let mut server = Program::start("select_echo", &["--port", "0"]);
    let addr = server.listening_one();
    let port = addr.rsplit_once(':').expect("HOST:PORT").1;

    let (status, stdout, stderr) = run("echo_client", &["--host", "", "--port", port, "spam"]);
    assert!(
        status.success(),
        "echo_client --host '': {status}; {stderr}"
    );
    assert_eq!(stdout, ["Client received: spam"]);

    let args = ["--host", "", "--port", port, "--clients", "2"];
    let (status, stdout, stderr) = run("testecho", &args);
    assert!(status.success(), "testecho --host '': {status}; {stderr}");
    assert_eq!(stdout.len(), 2, "{stdout:?}");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn line_echo_refuses_a_max_frame_of_zero() {
    // --port 0: were 0 accepted, the server would run (and the wait fail),
    // never on a fixed port.
    assert_usage_error(
        "line_echo",
        &["--max-frame", "0", "--port", "0"],
        "--max-frame <N>': must be at least 1 byte",
    );
    assert_usage_error(
        "line_echo",
        &["--max-frame=-5", "--port", "0"],
        "invalid digit",
    );
}
