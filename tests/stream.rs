//! Stream connections over real loopback and Unix sockets: echo, large
//! transfers, backpressure, half-close, resets, many clients, no lost edges.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use bytes::BytesMut;
use common::*;
use sockloop::{Addr, CloseReason, ConnId, Context, ListenOptions, Protocol, Reactor};

/// Echoes everything and reports its close reason (and unsent bytes).
struct Echo {
    closed: Option<mpsc::Sender<(String, usize)>>,
    max_queued: Arc<AtomicUsize>,
}

impl Echo {
    fn new() -> Echo {
        Echo {
            closed: None,
            max_queued: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Protocol for Echo {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_bytes(data.split().freeze());
        self.max_queued.fetch_max(cx.queued(), Ordering::Relaxed);
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        if let Some(tx) = &self.closed {
            let _ = tx.send((reason.to_string(), cx.queued()));
        }
    }
}

fn echo_server(ports: usize) -> Server {
    Server::start(move |r| {
        (0..ports)
            .map(|_| {
                let id = r.listen(&any_port(), |_| Echo::new()).unwrap();
                r.listener_addr(id).unwrap()
            })
            .collect()
    })
}

#[test]
fn multi_port_echo_with_concurrent_clients() {
    let server = echo_server(2);
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let addr = server.inet(i % 2);
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for round in 0..20 {
                    let msg = format!("client {i} round {round}\n");
                    assert_eq!(roundtrip(&mut s, msg.as_bytes()), msg.as_bytes());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn sixteen_mib_echoed_byte_exact() {
    let server = echo_server(1);
    let mut s = connect(server.inet(0));
    let data = pattern(16 << 20);
    let writer = {
        let mut s = s.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || s.write_all(&data).unwrap())
    };
    let got = read_n(&mut s, data.len());
    writer.join().unwrap();
    assert!(got == data, "echo differs");
}

#[test]
fn slow_reader_is_held_back_and_then_gets_everything() {
    let max_queued = Arc::new(AtomicUsize::new(0));
    let seen = max_queued.clone();
    let opts = ListenOptions::default();
    let high_water = opts.conn.high_water;
    let server = Server::start(move |r| {
        let id = r
            .listen_with(&any_port(), &opts, move |_| Echo {
                closed: None,
                max_queued: seen.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    let data = pattern(32 << 20);
    let (done_tx, done_rx) = mpsc::channel();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            s.write_all(&data).unwrap();
            done_tx.send(()).unwrap();
        })
    };
    // The client reads nothing: its writer blocks once the kernel buffers on
    // both sides are full, because the server stopped reading.
    assert!(
        done_rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "32 MiB went through a peer that reads nothing: no backpressure"
    );
    let queued = max_queued.load(Ordering::Relaxed);
    // One read (64 KiB) may land on top of a queue just under the mark.
    assert!(
        queued <= high_water + 64 * 1024,
        "server queued {queued} bytes"
    );
    let got = read_n(&mut s, data.len());
    writer.join().unwrap();
    assert!(got == data, "echo differs");
}

#[test]
fn half_close_gets_reply_then_eof() {
    let server = echo_server(1);
    let mut s = connect(server.inet(0));
    s.write_all(b"last words\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s).unwrap(), b"last words\n");
}

#[test]
fn peer_reset_mid_line_closes_only_that_connection() {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Echo {
                closed: Some(tx.clone()),
                ..Echo::new()
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut survivor = connect(server.inet(0));
    assert_eq!(roundtrip(&mut survivor, b"before\n"), b"before\n");
    let victim = connect(server.inet(0));
    let sock = socket2::SockRef::from(&victim);
    sock.set_linger(Some(std::time::Duration::ZERO)).unwrap();
    (&victim).write_all(b"half a li").unwrap();
    drop(victim); // linger 0: RST
    let (reason, _) = recv(&rx);
    assert!(
        reason.contains("reset") || reason.contains("closed"),
        "reason: {reason}"
    );
    assert_eq!(roundtrip(&mut survivor, b"after\n"), b"after\n");
}

#[test]
fn fifty_connections_at_once_are_all_served() {
    let server = echo_server(1);
    let mut streams: Vec<TcpStream> = (0..50).map(|_| connect(server.inet(0))).collect();
    for (i, s) in streams.iter_mut().enumerate() {
        s.write_all(format!("{i:04}").as_bytes()).unwrap();
    }
    for (i, s) in streams.iter_mut().enumerate() {
        assert_eq!(read_n(s, 4), format!("{i:04}").as_bytes());
    }
}

#[test]
fn big_burst_then_a_later_line_loses_no_edge() {
    let server = echo_server(1);
    let mut s = connect(server.inet(0));
    let burst = pattern(256 * 1024);
    let writer = {
        let mut s = s.try_clone().unwrap();
        let burst = burst.clone();
        std::thread::spawn(move || s.write_all(&burst).unwrap())
    };
    assert!(read_n(&mut s, burst.len()) == burst);
    writer.join().unwrap();
    // The server has drained its socket and waits; this must wake it.
    assert_eq!(roundtrip(&mut s, b"later\n"), b"later\n");
}

#[test]
fn unix_stream_echo_and_socket_file_removed() {
    let path = temp_path("echo");
    let p = path.clone();
    let server = Server::start(move |r| {
        let id = r.listen(&Addr::unix(&p).unwrap(), |_| Echo::new()).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    assert_eq!(server.addrs[0].as_path(), Some(path.as_path()));
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"over unix\n").unwrap();
    assert_eq!(read_n(&mut s, 10), b"over unix\n");
    server.stop();
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn stale_unix_socket_file_is_replaced_but_a_live_one_is_not() {
    let path = temp_path("stale");
    // A socket file whose server is gone: bound, then the listener dropped
    // without unlinking (as after a crash).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut reactor = Reactor::new().unwrap();
    let addr = Addr::unix(&path).unwrap();
    reactor
        .listen(&addr, |_| Echo::new())
        .expect("stale file replaced");
    let err = Reactor::new()
        .unwrap()
        .listen(&addr, |_| Echo::new())
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // A regular file is never removed.
    let file = temp_path("regular");
    std::fs::write(&file, b"data").unwrap();
    assert!(reactor
        .listen(&Addr::unix(&file).unwrap(), |_| Echo::new())
        .is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    std::fs::remove_file(file).unwrap();
}

#[test]
fn ipv6_loopback_echo() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    };
    drop(probe);
    let server = Server::start(|r| {
        let id = r
            .listen(&"[::1]:0".parse().unwrap(), |_| Echo::new())
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    assert!(server.inet(0).is_ipv6());
    let mut s = connect(server.inet(0));
    assert_eq!(roundtrip(&mut s, b"six\n"), b"six\n");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: Addr = taken.local_addr().unwrap().into();
    let mut reactor = Reactor::new().unwrap();
    let mut opts = ListenOptions::default();
    opts.reuse_address = false;
    let err = reactor
        .listen_with(&addr, &opts, |_| Echo::new())
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// Counts open connections: max_connections pauses accepting at the cap.
#[test]
fn max_connections_pauses_accepting_until_one_closes() {
    let server = Server::start(|r| {
        let mut opts = ListenOptions::default();
        opts.max_connections = Some(2);
        let id = r.listen_with(&any_port(), &opts, |_| Echo::new()).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut a = connect(server.inet(0));
    let mut b = connect(server.inet(0));
    assert_eq!(roundtrip(&mut a, b"a"), b"a");
    assert_eq!(roundtrip(&mut b, b"b"), b"b");
    // The third connects (the kernel's backlog takes it) but is not served...
    let mut c = connect(server.inet(0));
    c.write_all(b"c").unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0];
    assert!(c.read(&mut byte).is_err(), "served above the cap");
    // ...until one of the first two leaves.
    drop(a);
    c.set_read_timeout(Some(LIMIT)).unwrap();
    c.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"c");
}

#[test]
fn write_to_a_stale_id_is_refused() {
    let (tx, rx) = mpsc::channel::<ConnId>();
    let (result_tx, result_rx) = mpsc::channel();
    struct Remember(mpsc::Sender<ConnId>);
    impl Protocol for Remember {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            self.0.send(cx.id()).unwrap();
        }
        fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
            cx.write_bytes(data.split().freeze());
        }
    }
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| Remember(tx.clone()))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let first = connect(server.inet(0));
    let old = recv(&rx);
    drop(first);
    // Same slot, new generation: a new connection must not get the old id's bytes.
    let mut second = connect(server.inet(0));
    let new = recv(&rx);
    assert_ne!(old, new);
    // Wait until the old one is closed on the server side, then write to it.
    let probe = result_tx.clone();
    wait_until("the first connection to close", || {
        let (tx, rx) = mpsc::channel();
        server
            .handle
            .post(move |r: &mut Reactor| tx.send(r.is_closing(old)).unwrap())
            .unwrap();
        recv(&rx)
    });
    server
        .handle
        .post(move |r: &mut Reactor| {
            probe
                .send(r.write(old, b"stray").map_err(|e| e.kind()))
                .unwrap()
        })
        .unwrap();
    assert_eq!(recv(&result_rx), Err(std::io::ErrorKind::NotConnected));
    assert_eq!(roundtrip(&mut second, b"mine"), b"mine");
}

#[test]
fn a_live_unix_socket_with_a_full_queue_is_not_mistaken_for_stale() {
    // A live listener with a backlog of 0 and one queued connection: a
    // blocking probe connect would wait forever; binding must fail at once.
    let path = temp_path("full");
    let live = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    live.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    live.listen(0).unwrap();
    let _queued: Vec<_> = (0..2)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).ok()?;
            s.set_nonblocking(true).ok()?;
            s.connect(&socket2::SockAddr::unix(&path).unwrap()).ok()?;
            Some(s)
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let result = Reactor::new()
            .unwrap()
            .listen(&Addr::unix(&p).unwrap(), |_| Echo::new())
            .map(|_| ());
        tx.send(result.map_err(|e| e.kind())).unwrap();
    });
    assert_eq!(recv(&rx), Err(std::io::ErrorKind::AddrInUse));
    assert!(path.exists(), "a live server's socket file was removed");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_fin_that_arrives_while_reading_is_held_back_is_not_lost() {
    // The client's last bytes and its FIN arrive while the server has stopped
    // reading (its write queue is over the high-water mark); once the queue
    // drains, the server must still see the end of stream and close.
    let server = echo_server(1);
    for _ in 0..5 {
        let mut s = connect(server.inet(0));
        let data = pattern(4 << 20);
        let writer = {
            let mut s = s.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                s.write_all(&data).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
            })
        };
        let got = read_to_eof(&mut s).expect("end of stream within the time limit");
        writer.join().unwrap();
        assert!(got == data);
    }
}

#[test]
fn a_unix_socket_file_gets_the_mode_asked_for() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_path("mode");
    let mut reactor = Reactor::new().unwrap();
    let mut opts = ListenOptions::default();
    opts.unix_mode = Some(0o600);
    let id = reactor
        .listen_with(&Addr::unix(&path).unwrap(), &opts, |_| Echo::new())
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    reactor.close_listener(id);
    assert!(!path.exists(), "closing the listener removes its file");
}
