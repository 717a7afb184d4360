//! `tcp_proxy` under a graceful stop (SIGTERM; a SIGUSR2 restart drains the
//! old process the same way): relayed transfers run to their end within
//! `--grace`, and one the grace cuts is reset, so the client can tell it
//! from a complete one (finding H1 of the rt-core red team; the first test
//! is theirs, `notes/rt-core/rt_proxy_graceful.rs`).
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use common::pattern;
use common::process::{connect, Program};

/// A backend listener, `tcp_proxy --grace GRACE` to it, and a client of
/// the proxy whose reads time out after `read_limit`.
fn proxy(grace: &str, read_limit: Duration) -> (TcpListener, Program, std::net::TcpStream) {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = backend.local_addr().unwrap().to_string();
    let mut server = Program::start("tcp_proxy", &["--port", "0", "--to", &to, "--grace", grace]);
    let client = connect(&server.listening_one());
    client.set_read_timeout(Some(read_limit)).unwrap();
    (backend, server, client)
}

#[test]
fn sigterm_lets_a_relayed_download_finish_within_the_grace() {
    const SIZE: usize = 20 << 20;
    let (backend, mut server, mut client) = proxy("30", Duration::from_secs(20));
    client.write_all(b"go").unwrap();
    let far = thread::spawn(move || {
        let (mut s, _) = backend.accept().unwrap();
        let mut two = [0; 2];
        s.read_exact(&mut two).unwrap();
        // The backend sends its whole answer; a broken pipe here is the bug.
        let sent = s.write_all(&pattern(SIZE));
        drop(s);
        sent
    });
    // Read slowly; SIGTERM once the transfer is under way.
    let mut got = Vec::with_capacity(SIZE);
    let mut buf = [0; 16384];
    let mut signalled = false;
    loop {
        let n = client.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > (2 << 20) && !signalled {
            server.signal(libc::SIGTERM);
            signalled = true;
        }
        thread::sleep(Duration::from_micros(300));
    }
    let backend_result = far.join().unwrap();
    assert!(
        got.len() == SIZE && got == pattern(SIZE),
        "client got {} of {SIZE} bytes and then a clean EOF; backend: {backend_result:?}",
        got.len()
    );
    // Both peers done: the proxy exits long before the 30 s grace.
    drop(client);
    assert_eq!(server.wait().code(), Some(0), "{}", server.stderr());
}

#[test]
fn a_relay_stays_usable_both_ways_after_sigterm_and_ends_with_its_peers() {
    let (backend, mut server, mut client) = proxy("30", Duration::from_secs(10));
    client.write_all(b"1").unwrap();
    let (mut far, _) = backend.accept().unwrap();
    far.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut one = [0; 1];
    far.read_exact(&mut one).unwrap();
    // The pair is quiet now: the old code closed it at the signal.
    server.signal(libc::SIGTERM);
    // Whether the proxy has handled the signal before the bytes below or
    // not, the pair must carry them (the old code closed it at the signal).
    far.write_all(b"answer").unwrap();
    let mut answer = [0; 6];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"answer");
    client.write_all(b"more").unwrap();
    let mut more = [0; 4];
    far.read_exact(&mut more).unwrap();
    assert_eq!(&more, b"more");
    // Both peers end: so does the pair, and the proxy exits.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        far.read(&mut more).unwrap(),
        0,
        "the client's FIN went across"
    );
    drop(far);
    assert_eq!(
        client.read(&mut more).unwrap(),
        0,
        "the backend's FIN went across"
    );
    assert_eq!(server.wait().code(), Some(0), "{}", server.stderr());
}

#[test]
fn a_transfer_cut_by_the_end_of_the_grace_is_reset_not_ended() {
    let (backend, mut server, mut client) = proxy("1", Duration::from_secs(10));
    client.write_all(b"go").unwrap();
    let far = thread::spawn(move || {
        let (mut s, _) = backend.accept().unwrap();
        let mut two = [0; 2];
        s.read_exact(&mut two).unwrap();
        // More than every buffer on the way holds: the client does not read
        // until the proxy is gone, so this is still sending at the cut.
        s.write_all(&pattern(64 << 20))
    });
    let mut first = [0; 1024];
    client.read_exact(&mut first).unwrap();
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().code(), Some(0), "{}", server.stderr());
    let stderr = server.stderr();
    assert!(
        far.join().unwrap().is_err(),
        "the backend could send everything"
    );
    let mut buf = vec![0; 1 << 16];
    let mut got = first.len();
    let end = loop {
        match client.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got += n,
            Err(e) => break Some(e),
        }
    };
    match end {
        Some(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        None => panic!("a cut transfer ended with a clean EOF after {got} bytes; proxy:\n{stderr}"),
    }
}
