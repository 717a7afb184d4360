//! The example programs behind a proxy (`--proxy-protocol`), as processes:
//! chat members are named by the addresses in their PROXY headers, the
//! socketserver echo answers after the header, and a connection without a
//! valid header is closed with a log line that says why.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::process::{Program, TIMEOUT};

fn connect(addr: &str, header: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(header).unwrap();
    s
}

fn assert_closed(mut s: TcpStream) {
    let mut buf = [0; 16];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "not closed");
}

#[test]
fn chat_members_are_named_by_their_own_addresses() {
    let mut server = Program::start("chat_server", &["--port", "0", "--proxy-protocol"]);
    let addr = server.listening_one();
    let a = connect(&addr, b"PROXY TCP4 192.0.2.10 127.0.0.1 1000 7\r\n");
    let mut a = BufReader::new(a);
    // v2 for the second member.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[192, 0, 2, 11, 127, 0, 0, 1, 0x07, 0xd0, 0, 7]);
    let mut b = connect(&addr, &v2);
    let mut line = String::new();
    a.read_line(&mut line).unwrap();
    assert_eq!(line, "* 192.0.2.11:2000 joined\n");
    b.write_all(b"hi\n").unwrap();
    line.clear();
    a.read_line(&mut line).unwrap();
    assert_eq!(line, "192.0.2.11:2000: hi\n");
    assert_closed(connect(&addr, b"HELLO\r\n"));
    drop((a, b));
    let stderr = server.stop_with(libc::SIGTERM);
    assert!(stderr.contains("192.0.2.10:1000 joined"), "{stderr}");
    assert!(
        stderr.contains("closed: invalid PROXY header: no PROXY header"),
        "the refusal is logged with its reason:\n{stderr}"
    );
}

#[test]
fn select_echo_and_echo_server_answer_after_the_header_only() {
    for (name, args) in [
        ("select_echo", &["--port", "0", "--proxy-protocol"][..]),
        (
            "echo_server",
            &["--port", "0", "--proxy-protocol", "--mode", "threading"][..],
        ),
    ] {
        let mut server = Program::start(name, args);
        let addr = server.listening_one();
        let mut s = connect(&addr, b"PROXY TCP6 2001:db8::1 ::1 4242 7\r\nhello\n");
        let mut got = [0; 6];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\n", "{name}");
        drop(s);
        // Truncated: the client gives up halfway through the header.
        let s = connect(&addr, b"PROXY TCP6 2001:db8::1");
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_closed(s);
        let stderr = server.stop_with(libc::SIGTERM);
        assert!(
            stderr.contains("truncated PROXY header"),
            "{name}:\n{stderr}"
        );
        if name == "select_echo" {
            assert!(
                stderr.contains("connection from [2001:db8::1]:4242"),
                "{stderr}"
            );
        }
    }
}
