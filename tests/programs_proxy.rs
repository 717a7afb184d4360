//! `tcp_proxy` (Reactor::link) between real sockets: bytes intact both
//! ways with half-closes passed on, bounded memory for a client that does
//! not read, and the end of either side ending the other.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::pattern;
use common::process::{connect, hwm_kib, Program};

/// A proxy to a fresh backend listener.
fn proxy() -> (Program, String, TcpListener) {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = backend.local_addr().unwrap().to_string();
    let mut server = Program::start("tcp_proxy", &["--port", "0", "--to", &to]);
    let addr = server.listening_one();
    (server, addr, backend)
}

fn accept(backend: &TcpListener) -> TcpStream {
    let (s, _) = backend.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

#[test]
fn fifty_megabytes_each_way_intact_with_half_closes() {
    const SIZE: usize = 50 << 20;
    let (_server, addr, backend) = proxy();
    let mut client = connect(&addr);
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The backend reads everything to the client's half-close, then answers
    // with as much again and half-closes in turn.
    let far = thread::spawn(move || {
        let mut s = accept(&backend);
        let mut got = Vec::with_capacity(SIZE);
        s.read_to_end(&mut got).unwrap();
        assert!(got == pattern(SIZE), "client -> backend bytes differ");
        let mut reply = pattern(SIZE);
        reply.reverse();
        s.write_all(&reply).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // The client's end of stream comes back as ours.
        assert_eq!(s.read(&mut [0; 1]).unwrap(), 0);
    });
    let sender = {
        let mut c = client.try_clone().unwrap();
        thread::spawn(move || {
            c.write_all(&pattern(SIZE)).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::with_capacity(SIZE);
    client.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    far.join().unwrap();
    let mut want = pattern(SIZE);
    want.reverse();
    assert!(
        back == want,
        "backend -> client bytes differ ({} bytes)",
        back.len()
    );
}

#[test]
fn a_client_that_does_not_read_holds_the_backend_back() {
    let (server, addr, backend) = proxy();
    let client = connect(&addr);
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut s = accept(&backend);
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // Write until the proxy stops taking bytes (the write times out).
    let chunk = vec![7u8; 1 << 16];
    let mut sent = 0usize;
    while sent < (400 << 20) {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let hwm = hwm_kib(server.pid());
    eprintln!(
        "backend sent {} KiB before being held back; proxy VmHWM {hwm} KiB",
        sent >> 10
    );
    // Without backpressure on the producing side the proxy would queue up
    // to its 64 MiB max_queued (then drop the client).
    assert!(
        sent < (48 << 20),
        "the backend was not held back: {sent} bytes taken"
    );
    assert!(hwm < 40 * 1024, "proxy memory grew to {hwm} KiB");
    // The client still gets every byte once it reads.
    drop(s);
    let mut client = client;
    let mut got = 0usize;
    let mut buf = vec![0; 1 << 16];
    loop {
        match client.read(&mut buf).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    assert_eq!(got, sent);
}

#[test]
fn either_side_closing_ends_the_other() {
    let (_server, addr, backend) = proxy();
    // The backend closes: the client reads what was sent, then its end.
    let mut client = connect(&addr);
    let mut s = accept(&backend);
    s.write_all(b"bye").unwrap();
    drop(s);
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");
    // The client resets: the backend connection ends.
    let client = connect(&addr);
    let mut s = accept(&backend);
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn a_refused_backend_closes_the_client() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = free.local_addr().unwrap().to_string();
    drop(free);
    let mut server = Program::start("tcp_proxy", &["--port", "0", "--to", &to]);
    let addr = server.listening_one();
    let mut client = connect(&addr);
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert!(got.is_empty());
}

/// A listener that completes no more handshakes: a backlog of 0 whose one
/// place is taken, so the kernel drops further SYNs and a connect to it
/// neither succeeds nor fails. Returns it, its address, and what fills it.
fn unanswering_backend() -> (socket2::Socket, String, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // The first connect takes the queue's one place (never accepted); then
    // a connect attempt must time out, or the kernel's policy differs.
    let filler = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("the backlog did not fill: {other:?}"),
    }
    (listener, addr.to_string(), vec![filler])
}

#[test]
fn a_backend_that_never_answers_closes_the_client_at_the_connect_timeout() {
    let (_listener, to, _fillers) = unanswering_backend();
    let mut server = Program::start(
        "tcp_proxy",
        &["--port", "0", "--to", &to, "--connect-timeout", "1"],
    );
    let addr = server.listening_one();
    let mut client = connect(&addr);
    client.write_all(b"hello").unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    // Bounded by `connect`'s read timeout: fails if the proxy holds on. A
    // reset instead of an end of stream is a close too.
    let _ = client.read_to_end(&mut got);
    let took = start.elapsed();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // The proxy says why.
    let log = server.stop_with(libc::SIGTERM);
    assert!(
        log.contains(&format!("cannot connect to {to}")) && log.contains("timed out"),
        "{log}"
    );
}
