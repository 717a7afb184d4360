//! A close after flush is orderly: input the peer sends after `close()` is
//! read and dropped, so closing never finds unread bytes (which would make
//! the kernel reset the connection and throw away what the peer had not read
//! yet); the peer gets everything queued and then a plain end of stream.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use sockloop::{CloseReason, ConnOptions, Context, ListenOptions, Protocol};

/// Queues `size` bytes at once, then closes.
struct Firehose {
    size: usize,
    log: mpsc::Sender<String>,
}

impl Protocol for Firehose {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.write_bytes(pattern(self.size));
        cx.close();
    }
    fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {
        panic!("no input is delivered after close()");
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.log
            .send(format!("{reason} unsent={}", cx.queued()))
            .unwrap();
    }
}

fn firehose_server(size: usize, conn: ConnOptions) -> (Server, mpsc::Receiver<String>) {
    firehose_on(any_port(), size, conn)
}

fn firehose_on(
    addr: sockloop::Addr,
    size: usize,
    conn: ConnOptions,
) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let opts = ListenOptions {
        conn,
        ..ListenOptions::default()
    };
    let server = Server::start(move |r| {
        let id = r
            .listen_with(&addr, &opts, move |_| Firehose {
                size,
                log: tx.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

/// The case: 4 MiB queued and `close()` in `on_open`; the client
/// sends 32 bytes before it reads. It must get all 4 MiB and a plain EOF, on
/// every run (the old code reset the connection and lost 0.1–2.9 MB).
#[test]
fn close_after_a_big_write_delivers_everything_despite_unread_input() {
    const SIZE: usize = 4 << 20;
    let (server, log) = firehose_server(SIZE, ConnOptions::default());
    let expected = pattern(SIZE);
    for run in 0..5 {
        let mut s = connect(server.inet(0));
        s.write_all(&[b'z'; 32]).unwrap();
        let got = read_to_eof(&mut s).unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(got.len(), SIZE, "run {run}");
        assert!(got == expected, "run {run}: bytes differ");
        drop(s);
        assert_eq!(recv(&log), "closed unsent=0", "run {run}");
    }
}

/// The same over a Unix stream socket, where unread input at close resets
/// the peer too.
#[test]
fn close_after_a_big_write_is_orderly_on_unix_sockets() {
    const SIZE: usize = 4 << 20;
    let path = temp_path("orderly");
    let (server, log) = firehose_on(
        sockloop::Addr::unix(&path).unwrap(),
        SIZE,
        ConnOptions::default(),
    );
    for run in 0..3 {
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(&[b'z'; 32]).unwrap();
        let got = read_to_eof(&mut s).unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(got.len(), SIZE, "run {run}");
        drop(s);
        assert_eq!(recv(&log), "closed unsent=0", "run {run}");
    }
    drop(server);
    let _ = std::fs::remove_file(&path);
}

/// A peer that keeps sending after our close, and never closes, does not
/// keep the connection: past the discard bound it is closed, and `on_close`
/// says so.
#[test]
fn a_peer_that_keeps_sending_after_close_is_cut_off_at_the_bound() {
    let conn = ConnOptions {
        close_discard: 64 * 1024,
        ..ConnOptions::default()
    };
    let (server, log) = firehose_server(10, conn);
    let mut s = connect(server.inet(0));
    let mut greeting = [0; 10];
    s.read_exact(&mut greeting).unwrap();
    let started = Instant::now();
    // Writes fail once the server has given up (reset or broken pipe).
    let chunk = [b'y'; 16 * 1024];
    let mut sent = 0;
    while sent < 64 << 20 && s.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    let reason = recv(&log);
    assert!(
        reason.starts_with("peer kept sending after close"),
        "{reason} after {sent} bytes"
    );
    assert!(started.elapsed() < LIMIT);
}

/// A peer that neither reads to the end nor closes is let go after the
/// linger time; with nothing unread the close is still orderly.
#[test]
fn a_peer_that_never_closes_is_let_go_after_the_linger_time() {
    let conn = ConnOptions {
        close_linger: Duration::from_millis(200),
        ..ConnOptions::default()
    };
    let (server, log) = firehose_server(10, conn);
    let mut s = connect(server.inet(0));
    let started = Instant::now();
    let mut greeting = [0; 10];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(recv(&log), "closed unsent=0");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(read_to_eof(&mut s).unwrap().is_empty());
}

/// A peer that resets the connection while the close waits for its end of
/// stream: `on_close` says `Reset`, not a clean close.
#[test]
fn a_reset_during_the_close_is_reported() {
    use std::os::fd::AsRawFd;
    let (server, log) = firehose_server(10, ConnOptions::default());
    let mut s = connect(server.inet(0));
    let mut greeting = [0; 10];
    s.read_exact(&mut greeting).unwrap();
    // Unread input at close resets the connection: that is the point.
    s.write_all(b"unread").unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
    assert_eq!(recv(&log), "reset by peer unsent=0");
}

/// A peer that goes on sending after our FIN, slowly (under the discard
/// bound) and without closing, is cut off when the linger time is up, and
/// `on_close` says so rather than "closed".
#[test]
fn a_peer_still_sending_when_the_linger_time_is_up_is_reported() {
    let conn = ConnOptions {
        close_linger: Duration::from_millis(300),
        ..ConnOptions::default()
    };
    let (server, log) = firehose_server(10, conn);
    let mut s = connect(server.inet(0));
    let mut greeting = [0; 10];
    s.read_exact(&mut greeting).unwrap();
    assert!(read_to_eof(&mut s).unwrap().is_empty(), "our FIN");
    let started = Instant::now();
    // A trickle: one byte every 20 ms, until the server gives up.
    let reason = loop {
        if let Ok(reason) = log.try_recv() {
            break reason;
        }
        assert!(started.elapsed() < LIMIT, "never closed");
        let _ = s.write_all(b"t");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        reason.starts_with("peer kept sending after close"),
        "{reason}"
    );
}
