//! The server examples against real clients: `http_hello` (raw HTTP/1.x
//! over TCP, and `wrk` when installed), `resp_server` (raw RESP, and
//! `redis-cli` when installed). A test that needs a program that is not
//! installed says so and passes (`.ci/run` installs them).

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::process::{connect, read_to_eof, Program};

/// Whether `program` can be run; prints why a test skips when not.
fn installed(program: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok();
    if !found {
        eprintln!("skipped: {program} is not installed (apt-get install wrk redis-tools)");
    }
    found
}

/// One response: its status line and body (by Content-Length).
fn response(reader: &mut impl BufRead) -> (String, Vec<u8>, Vec<String>) {
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            length = v.parse().unwrap();
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (status.trim_end().to_string(), body, headers)
}

fn http(args: &[&str]) -> (Program, String) {
    let mut all = vec!["--port", "0"];
    all.extend_from_slice(args);
    let mut server = Program::start("http_hello", &all);
    let addr = server.listening_one();
    (server, addr)
}

#[test]
fn http_keep_alive_pipelining_and_404() {
    let (_server, addr) = http(&[]);
    let mut c = BufReader::new(connect(&addr));
    // Two requests one after the other on one connection.
    for _ in 0..2 {
        c.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, body, headers) = response(&mut c);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, b"Hello, world!\n");
        assert!(!headers.iter().any(|h| h == "Connection: close"));
    }
    // Sixteen pipelined in one write, mixed paths: answered in order.
    let mut burst = Vec::new();
    for i in 0..16 {
        let path = if i % 3 == 0 { "/missing" } else { "/" };
        burst.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    c.get_mut().write_all(&burst).unwrap();
    for i in 0..16 {
        let (status, _, _) = response(&mut c);
        let want = if i % 3 == 0 {
            "HTTP/1.1 404 Not Found"
        } else {
            "HTTP/1.1 200 OK"
        };
        assert_eq!(status, want, "response {i}");
    }
}

#[test]
fn http_close_and_http_1_0_end_the_connection() {
    let (_server, addr) = http(&[]);
    for request in [
        &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut c = connect(&addr);
        c.write_all(request).unwrap();
        let all = read_to_eof(&mut c);
        let (status, body, headers) = response(&mut &all[..]);
        assert_eq!(
            (status.as_str(), &body[..]),
            ("HTTP/1.1 200 OK", &b"Hello, world!\n"[..])
        );
        assert!(headers.iter().any(|h| h == "Connection: close"));
    }
    // HTTP/1.0 with keep-alive stays open.
    let mut c = BufReader::new(connect(&addr));
    for _ in 0..2 {
        c.get_mut()
            .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (status, _, headers) = response(&mut c);
        assert_eq!(status, "HTTP/1.1 200 OK");
        // A 1.0 client assumes a close unless told otherwise.
        assert!(
            headers.iter().any(|h| h == "Connection: keep-alive"),
            "{headers:?}"
        );
    }
}

/// The status line and headers of one response, without reading a body
/// (the answer to HEAD has none).
fn response_head(reader: &mut impl BufRead) -> (String, Vec<String>) {
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return (status.trim_end().to_string(), headers);
        }
        headers.push(line);
    }
}

#[test]
fn http_head_gets_the_headers_without_a_body() {
    let (_server, addr) = http(&[]);
    let mut c = BufReader::new(connect(&addr));
    // Pipelined HEADs between GETs: a body byte after a HEAD answer would
    // be read as the next status line.
    c.get_mut()
        .write_all(
            b"HEAD / HTTP/1.1\r\n\r\nHEAD /missing HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n\
              HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /missing HTTP/1.1\r\n\r\n",
        )
        .unwrap();
    let (status, headers) = response_head(&mut c);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.iter().any(|h| h == "Content-Length: 14"),
        "{headers:?}"
    );
    let (status, headers) = response_head(&mut c);
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(
        headers.iter().any(|h| h == "Content-Length: 10"),
        "{headers:?}"
    );
    let (status, body, _) = response(&mut c);
    assert_eq!(
        (status.as_str(), &body[..]),
        ("HTTP/1.1 200 OK", &b"Hello, world!\n"[..])
    );
    let (status, headers) = response_head(&mut c);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.iter().any(|h| h == "Connection: keep-alive"),
        "{headers:?}"
    );
    let (status, body, _) = response(&mut c);
    assert_eq!(
        (status.as_str(), &body[..]),
        ("HTTP/1.1 404 Not Found", &b"Not Found\n"[..])
    );
    // Nothing else came: the last answer ends the stream.
    c.get_mut()
        .write_all(b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("Connection: close\r\n\r\n"),
        "{text:?}"
    );
    // Other methods: 405, with the methods that are served.
    let mut c = connect(&addr);
    c.write_all(b"DELETE / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let all = read_to_eof(&mut c);
    let (status, _, headers) = response(&mut &all[..]);
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(
        headers.iter().any(|h| h == "Allow: GET, HEAD"),
        "{headers:?}"
    );
}

/// Reads until the server closes; the bytes and how long it took. Fails if
/// the server has not closed within `limit`.
fn until_closed(c: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    c.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, start.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, start.elapsed()),
            Err(e) => panic!(
                "not closed after {:?} ({e}); got {:?}",
                start.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Sends `first`, then `byte` every 200 ms until the connection fails.
fn dribble(c: &TcpStream, first: &[u8], byte: &'static [u8]) -> thread::JoinHandle<()> {
    let mut w = c.try_clone().unwrap();
    w.set_nodelay(true).unwrap();
    w.write_all(first).unwrap();
    thread::spawn(move || {
        // The pace of the attack, not a synchronisation: the server's
        // answer is waited for by reading.
        for _ in 0..100 {
            thread::sleep(Duration::from_millis(200));
            if w.write_all(byte).is_err() {
                return;
            }
        }
    })
}

#[test]
fn http_a_request_dribbled_in_gets_408_at_the_header_timeout() {
    let (_server, addr) = http(&["--header-timeout", "1", "--idle-timeout", "60"]);
    // A header line a byte at a time; then a body; then only empty lines:
    // each arrival is activity, none of them extends the request's deadline.
    for (first, byte) in [
        (&b"GET / HTTP/1.1\r\n"[..], &b"X"[..]),
        (b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n", b"a"),
        (b"\r\n", b"\r\n"),
    ] {
        let mut c = connect(&addr);
        let writer = dribble(&c, first, byte);
        let (got, took) = until_closed(&mut c, Duration::from_secs(10));
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text:?}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text:?}");
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(4),
            "closed after {took:?}"
        );
        writer.join().unwrap();
    }
    // A head whose body never comes: the deadline covers head and body.
    let mut c = connect(&addr);
    c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let (got, took) = until_closed(&mut c, Duration::from_secs(10));
    assert!(
        got.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    // A client that keeps up is served.
    let mut c = BufReader::new(connect(&addr));
    c.get_mut().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(response(&mut c).0, "HTTP/1.1 200 OK");
}

#[test]
fn http_a_silent_connection_is_closed_at_the_idle_timeout() {
    let (_server, addr) = http(&["--idle-timeout", "1"]);
    // Kept alive after an answer, then silent; and silent from the start.
    let mut served = BufReader::new(connect(&addr));
    served
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(response(&mut served).0, "HTTP/1.1 200 OK");
    assert!(served.buffer().is_empty());
    let mut silent = connect(&addr);
    for c in [served.get_mut(), &mut silent] {
        let (got, took) = until_closed(c, Duration::from_secs(10));
        // Closed without a word: nothing was asked.
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        assert!(took < Duration::from_secs(4), "closed after {took:?}");
    }
}

#[test]
fn http_clients_beyond_max_connections_wait_for_a_free_slot() {
    let (_server, addr) = http(&["--max-connections", "2"]);
    let mut first = Vec::new();
    for _ in 0..2 {
        let mut c = BufReader::new(connect(&addr));
        c.get_mut().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(response(&mut c).0, "HTTP/1.1 200 OK");
        first.push(c);
    }
    // The third connects (the kernel's backlog takes it) but is not read.
    let mut third = connect(&addr);
    third.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let err = third.read(&mut [0; 64]).expect_err("served beyond the cap");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    // One of the first two leaves: the third is served.
    drop(first.pop());
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut third = BufReader::new(third);
    assert_eq!(response(&mut third).0, "HTTP/1.1 200 OK");
    // And the one still open is still served.
    first[0]
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(response(&mut first[0]).0, "HTTP/1.1 200 OK");
}

#[test]
fn http_a_request_a_byte_at_a_time() {
    let (_server, addr) = http(&[]);
    let mut c = BufReader::new(connect(&addr));
    c.get_mut().set_nodelay(true).unwrap();
    let request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    for &b in request.iter() {
        c.get_mut().write_all(&[b]).unwrap();
    }
    // POST is not served: 405, and the connection goes on.
    assert_eq!(response(&mut c).0, "HTTP/1.1 405 Method Not Allowed");
    for &b in b"GET / HTTP/1.1\r\n\r\n".iter() {
        c.get_mut().write_all(&[b]).unwrap();
    }
    assert_eq!(response(&mut c).0, "HTTP/1.1 200 OK");
}

#[test]
fn http_bad_and_oversized_requests_get_their_status_and_a_close() {
    let (_server, addr) = http(&["--max-head", "1024", "--max-body", "100"]);
    let mut long_head = b"GET / HTTP/1.1\r\n".to_vec();
    while long_head.len() < 2000 {
        long_head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    long_head.extend_from_slice(b"\r\n");
    let cases: [(&[u8], &str); 4] = [
        (b"HELLO\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (&long_head, "HTTP/1.1 431 Request Header Fields Too Large"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
            "HTTP/1.1 413 Content Too Large",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 501 Not Implemented",
        ),
    ];
    for (request, want) in cases {
        let mut c = connect(&addr);
        // A good request first: it is answered before the bad one.
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        c.write_all(request).unwrap();
        let all = read_to_eof(&mut c);
        let mut rest = &all[..];
        assert_eq!(response(&mut rest).0, "HTTP/1.1 200 OK");
        assert_eq!(response(&mut rest).0, want);
        assert!(rest.is_empty(), "nothing after the error");
    }
}

/// An error answer lingers: a client still uploading the body the server
/// refused goes on sending without a reset, then reads the 413 and a clean
/// end of stream. (`Connection: close` answers close at once instead:
/// `LingeringClose::Auto`.)
#[test]
fn http_a_refused_upload_goes_on_without_a_reset() {
    let (_server, addr) = http(&["--max-body", "100"]);
    let mut c = connect(&addr);
    c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 300000\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(c.try_clone().unwrap());
    assert_eq!(response(&mut reader).0, "HTTP/1.1 413 Content Too Large");
    // The server has answered and closed its side; the upload goes on. A
    // socket closed at once would answer it with a reset (the writes fail).
    for _ in 0..30 {
        c.write_all(&[b'x'; 10_000])
            .expect("no reset while uploading");
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .expect("a clean end of stream");
    assert!(rest.is_empty());
}

#[test]
fn http_under_wrk() {
    if !installed("wrk") {
        return;
    }
    let (_server, addr) = http(&[]);
    let out = Command::new("wrk")
        .args(["-t1", "-c16", "-d1", &format!("http://{addr}/")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Requests/sec"), "{text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{text}"
    );
}

fn resp(args: &[&str]) -> (Program, String) {
    let mut all = vec!["--port", "0"];
    all.extend_from_slice(args);
    let mut server = Program::start("resp_server", &all);
    let addr = server.listening_one();
    (server, addr)
}

/// Sends `request` and reads `want.len()` bytes of reply.
fn ask(c: &mut TcpStream, request: &[u8], want: &[u8]) {
    c.write_all(request).unwrap();
    let mut got = vec![0; want.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

#[test]
fn resp_commands_inline_and_multibulk() {
    let (_server, addr) = resp(&[]);
    let mut c = connect(&addr);
    ask(&mut c, b"PING\r\n", b"+PONG\r\n");
    ask(&mut c, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    ask(
        &mut c,
        b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n",
        b"$4\r\na\r\nb\r\n",
    );
    ask(
        &mut c,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n",
        b"+OK\r\n",
    );
    ask(&mut c, b"set j v2\r\n", b"+OK\r\n");
    ask(&mut c, b"GET k\r\n", b"$2\r\nv1\r\n");
    ask(&mut c, b"EXISTS k j nope\r\n", b":2\r\n");
    ask(&mut c, b"DBSIZE\r\n", b":2\r\n");
    ask(&mut c, b"DEL k nope\r\n", b":1\r\n");
    ask(&mut c, b"GET k\r\n", b"$-1\r\n");
    // The keys are shared by all connections.
    let mut other = connect(&addr);
    ask(&mut other, b"GET j\r\n", b"$2\r\nv2\r\n");
    // Errors are RESP errors and the connection goes on.
    ask(&mut c, b"FLY\r\n", b"-ERR unknown command 'FLY'\r\n");
    ask(
        &mut c,
        b"GET\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    // Pipelined: every reply, in order.
    ask(
        &mut c,
        b"PING\r\nECHO x\r\n*1\r\n$6\r\nDBSIZE\r\n",
        b"+PONG\r\n$1\r\nx\r\n:1\r\n",
    );
    c.write_all(b"QUIT\r\nPING\r\n").unwrap();
    assert_eq!(read_to_eof(&mut c), b"+OK\r\n");
}

#[test]
fn resp_inline_commands_follow_redis_quoting() {
    let (_server, addr) = resp(&[]);
    let mut c = connect(&addr);
    ask(&mut c, b"ECHO \"a b\"\r\n", b"$3\r\na b\r\n");
    ask(&mut c, b"SET k \"x\\ny\\x41\\\"\"\r\n", b"+OK\r\n");
    ask(&mut c, b"GET k\r\n", b"$5\r\nx\nyA\"\r\n");
    ask(&mut c, b"ECHO 'it\\'s \\n'\r\n", b"$7\r\nit's \\n\r\n");
    // Empty lines are no command: no answer of their own.
    ask(&mut c, b"\r\n  \r\nPING\r\n", b"+PONG\r\n");
    // Quotes split across reads, a byte at a time.
    c.set_nodelay(true).unwrap();
    for &b in b"ECHO \"p q\" 'r'\r\n".iter() {
        c.write_all(&[b]).unwrap();
    }
    let mut got = vec![0; b"-ERR wrong number of arguments for 'echo' command\r\n".len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR wrong number of arguments for 'echo' command\r\n"
    );
    // Unbalanced quotes: Redis's error, then the connection closes.
    c.write_all(b"ECHO \"hello\r\nPING\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut c)),
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    let mut c = connect(&addr);
    c.write_all(b"ECHO \"a\"b\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut c)),
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
}

#[test]
fn resp_input_is_bounded() {
    let (_server, addr) = resp(&["--max-command", "1024"]);
    let mut c = connect(&addr);
    ask(&mut c, b"PING\r\n", b"+PONG\r\n");
    // A bulk string announced over the bound is refused before it arrives;
    // a line that never ends is refused once over it.
    for request in [&b"*2\r\n$3\r\nSET\r\n$100000000\r\n"[..], &[b'a'; 5000]] {
        let mut c = connect(&addr);
        let _ = c.write_all(request);
        let got = read_to_eof(&mut c);
        assert!(got.starts_with(b"-ERR Protocol error"), "{got:?}");
    }
    // Not RESP at all.
    let mut c = connect(&addr);
    c.write_all(b"*1\r\n:12\r\n").unwrap();
    assert!(read_to_eof(&mut c).starts_with(b"-ERR Protocol error"));
}

#[test]
fn resp_with_redis_cli() {
    if !installed("redis-cli") {
        return;
    }
    let (_server, addr) = resp(&[]);
    let port = addr.rsplit(':').next().unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    };
    assert_eq!(cli(&["ping"]), "PONG");
    assert_eq!(cli(&["set", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&["get", "greeting"]), "hello world");
    assert_eq!(cli(&["exists", "greeting", "other"]), "1");
    assert_eq!(cli(&["dbsize"]), "1");
    assert_eq!(cli(&["del", "greeting"]), "1");
    assert_eq!(cli(&["get", "greeting"]), "");
    assert!(cli(&["nosuch"]).starts_with("ERR unknown command"));
    if installed("redis-benchmark") {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                port,
                "-t",
                "ping,set,get",
                "-n",
                "2000",
                "-P",
                "8",
                "-q",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("GET:"), "{text}");
    }
}
