//! socketserver on the reactor, case by case after CPython's
//! test_socketserver: the echo matrix, life cycle, errors, hooks, modes.

#[path = "../common/mod.rs"]
mod common;
mod forking;

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};
use sockloop::Addr;

pub const TEST_STR: &[u8] = b"hello world\n";

/// Reads one line and writes it back (CPython's `MyHandler`).
pub struct EchoLine;

impl RequestHandler for EchoLine {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let mut line = Vec::new();
        request.rfile().read_until(b'\n', &mut line)?;
        request.wfile().write_all(&line)
    }
}

/// An address of the family's kind on loopback or in the temp directory.
pub fn address_for(family: Family) -> Addr {
    match family {
        Family::Tcp | Family::Udp => any_port(),
        Family::UnixStream | Family::UnixDatagram => Addr::unix(temp_path("server")).unwrap(),
        other => panic!("no address for {other:?}"),
    }
}

/// One request as a client: `hello world\n` must come back whole.
pub fn examine(family: Family, addr: &Addr) {
    let reply = match family {
        Family::Tcp => {
            let mut s = connect(addr.as_inet().unwrap());
            s.write_all(TEST_STR).unwrap();
            read_to_eof(&mut s).unwrap()
        }
        Family::UnixStream => {
            let mut s = UnixStream::connect(addr.as_path().unwrap()).unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.write_all(TEST_STR).unwrap();
            read_to_eof(&mut s).unwrap()
        }
        Family::Udp => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.send_to(TEST_STR, addr.as_inet().unwrap()).unwrap();
            let mut buf = [0; 64];
            let n = s.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        }
        Family::UnixDatagram => {
            // The client binds its own path, or the server could not answer.
            let path = temp_path("client");
            let s = UnixDatagram::bind(&path).unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.send_to(TEST_STR, addr.as_path().unwrap()).unwrap();
            let mut buf = [0; 64];
            let n = s.recv(&mut buf).unwrap();
            std::fs::remove_file(path).unwrap();
            buf[..n].to_vec()
        }
        other => panic!("no client for {other:?}"),
    };
    assert_eq!(reply, TEST_STR, "{family:?}");
}

pub const FAMILIES: [Family; 4] = [
    Family::Tcp,
    Family::Udp,
    Family::UnixStream,
    Family::UnixDatagram,
];

/// Serves three sequential clients in `mode`, for every family, then shuts
/// down: Unix socket files are removed.
pub fn echo_matrix(mode: Mode) {
    for family in FAMILIES {
        let server = ServerBuilder::new(family)
            .bind(address_for(family))
            .mode(mode.clone())
            .spawn(|| EchoLine)
            .unwrap();
        let addr = server.server_address()[0].clone();
        for _ in 0..3 {
            examine(family, &addr);
        }
        server.shutdown().unwrap();
        if let Some(path) = addr.as_path() {
            assert!(!path.exists(), "{family:?} left its socket file");
        }
    }
}

#[test]
fn echo_in_every_family_sync() {
    echo_matrix(Mode::Sync);
}

#[test]
fn echo_in_every_family_threading() {
    echo_matrix(Mode::threading());
}

#[test]
fn echo_in_every_family_pool() {
    echo_matrix(Mode::pool(2));
}

/// 8 clients at once, each holding its connection until all have connected:
/// only a server that runs requests side by side can answer them.
pub fn concurrent_clients(mode: Mode) {
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(mode)
        .spawn(|| EchoLine)
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let clients: Vec<_> = (0..8).map(|_| connect(addr)).collect();
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                let line = format!("client {i}\n");
                c.write_all(line.as_bytes()).unwrap();
                assert_eq!(read_to_eof(&mut c).unwrap(), line.as_bytes());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    server.shutdown().unwrap();
}

#[test]
fn eight_concurrent_clients_threading() {
    concurrent_clients(Mode::threading());
}

#[test]
fn eight_concurrent_clients_pool() {
    concurrent_clients(Mode::pool(3));
}

#[test]
fn shutdown_right_after_start_never_hangs() {
    // CPython issue #2302: shutdown() possibly before serve_forever is entered.
    let started = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|_| {
            // A server is not Send: it is built on the thread that serves it.
            let (tx, rx) = mpsc::channel();
            let serving = std::thread::spawn(move || {
                let mut server = ServerBuilder::new(Family::Tcp)
                    .bind(any_port())
                    .build(|| EchoLine)
                    .unwrap();
                tx.send(server.handle()).unwrap();
                server.serve_forever()
            });
            recv(&rx).shutdown(); // perhaps before serve_forever is entered
            serving
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn server_close_on_a_server_that_never_served() {
    for mode in [
        Mode::Sync,
        Mode::threading(),
        Mode::pool(2),
        Mode::forking(),
    ] {
        let mut server = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(mode)
            .build(|| EchoLine)
            .unwrap();
        let addr = server.server_address()[0].as_inet().unwrap();
        server.server_close();
        server.server_close(); // idempotent
                               // The port is free again: the listening socket is closed.
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}

#[test]
fn several_addresses_in_one_server() {
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .bind("[::1]:0".parse().unwrap())
        .mode(Mode::threading())
        .spawn(|| EchoLine);
    let Ok(server) = server else {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    };
    for addr in server.server_address() {
        examine(Family::Tcp, addr);
    }
}

#[test]
fn a_bad_address_is_a_clear_error() {
    let err = ServerBuilder::new(Family::UnixStream)
        .bind(any_port())
        .build(|| EchoLine)
        .err()
        .unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = ServerBuilder::new(Family::Tcp)
        .bind(taken.local_addr().unwrap().into())
        .allow_reuse_address(false)
        .spawn(|| EchoLine)
        .err()
        .unwrap();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
}

/// Asks the server to shut down from inside the request.
struct ShutsDown;

impl RequestHandler for ShutsDown {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        request.server().shutdown();
        request.wfile().write_all(b"bye\n")
    }
}

#[test]
fn shutdown_from_a_handler_does_not_deadlock() {
    for mode in [Mode::Sync, Mode::threading(), Mode::pool(1)] {
        let mut server = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(mode)
            .build(|| ShutsDown)
            .unwrap();
        let addr = server.server_address()[0].as_inet().unwrap();
        let client = std::thread::spawn(move || read_to_eof(&mut connect(addr)).unwrap());
        server.serve_forever().unwrap(); // returns: the handler's shutdown took effect
        assert_eq!(client.join().unwrap(), b"bye\n");
    }
}

/// Fails on the line `fail`, panics on `panic`, echoes anything else.
struct Moody;

impl RequestHandler for Moody {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let mut line = Vec::new();
        request.rfile().read_until(b'\n', &mut line)?;
        match &line[..] {
            b"fail\n" => Err(io::Error::other("told to fail")),
            b"panic\n" => panic!("told to panic"),
            _ => request.wfile().write_all(&line),
        }
    }
}

/// Sends `line` and returns what came back before EOF.
fn ask(addr: std::net::SocketAddr, line: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(line).unwrap();
    read_to_eof(&mut s).unwrap_or_default()
}

pub fn errors_reach_handle_error(mode: Mode, log_path: Option<&std::path::Path>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let log_path = log_path.map(|p| p.to_path_buf());
    let child_log = log_path.clone();
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(mode)
        .handle_error(move |peer, e| {
            assert!(peer.as_inet().is_some());
            // A forked child cannot reach the parent's memory: use a file.
            if let Some(path) = &child_log {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .unwrap();
                writeln!(f, "{e}").unwrap();
            }
            seen.lock().unwrap().push(e.to_string());
        })
        .spawn(|| Moody)
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    assert_eq!(ask(addr, b"fail\n"), b"");
    assert_eq!(ask(addr, b"panic\n"), b"");
    assert_eq!(ask(addr, b"fine\n"), b"fine\n", "the next client is served");
    server.shutdown().unwrap();
    let errors = match log_path {
        Some(path) => std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect(),
        None => errors.lock().unwrap().clone(),
    };
    assert_eq!(
        errors,
        vec!["told to fail", "handler panicked: told to panic"]
    );
}

#[test]
fn handler_errors_and_panics_reach_handle_error() {
    for mode in [Mode::Sync, Mode::threading(), Mode::pool(2)] {
        errors_reach_handle_error(mode, None);
    }
}

/// Records that it was built at all.
struct Tattletale(Arc<AtomicBool>);

impl RequestHandler for Tattletale {
    fn handle(&mut self, _: &mut Request) -> io::Result<()> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_refused_request_builds_no_handler_and_the_client_sees_eof() {
    let built = Arc::new(AtomicBool::new(false));
    let flag = built.clone();
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .verify_request(|_| false)
        .build(move || Tattletale(flag.clone()))
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let client = std::thread::spawn(move || {
        let mut s = connect(addr);
        read_to_eof(&mut s).unwrap()
    });
    server.handle_request().unwrap();
    assert!(client.join().unwrap().is_empty());
    assert!(!built.load(Ordering::SeqCst));
}

#[test]
fn finished_threads_do_not_accumulate() {
    // bpo-37193: ThreadingMixIn kept every thread it ever started.
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::threading())
        .build(|| EchoLine)
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    for _ in 0..10 {
        let mut client = connect(addr);
        client.write_all(TEST_STR).unwrap();
        server.handle_request().unwrap();
        assert_eq!(read_to_eof(&mut client).unwrap(), TEST_STR);
    }
    assert!(
        server.active_requests() < 10,
        "{} threads tracked",
        server.active_requests()
    );
}

/// Takes 300 ms, then says so.
struct Slow(Arc<AtomicBool>);

impl RequestHandler for Slow {
    fn handle(&mut self, _: &mut Request) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(300)); // the work being waited for
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn block_on_close_waits_for_running_threads_or_not() {
    for block_on_close in [true, false] {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let mut server = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(Mode::Threading {
                daemon_threads: false,
                block_on_close,
                max_threads: 256,
            })
            .build(move || Slow(flag.clone()))
            .unwrap();
        let _client = connect(server.server_address()[0].as_inet().unwrap());
        server.handle_request().unwrap();
        server.server_close();
        assert_eq!(
            done.load(Ordering::SeqCst),
            block_on_close,
            "block_on_close = {block_on_close}"
        );
    }
}

#[test]
fn handle_request_times_out_once() {
    let timeouts = Arc::new(AtomicUsize::new(0));
    let count = timeouts.clone();
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .timeout(Some(Duration::from_millis(200)))
        .handle_timeout(move || {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build(|| EchoLine)
        .unwrap();
    let started = Instant::now();
    server.handle_request().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(timeouts.load(Ordering::SeqCst), 1);
}

#[test]
fn service_actions_run_every_turn() {
    let turns = Arc::new(AtomicUsize::new(0));
    let count = turns.clone();
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .service_actions(move || {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .spawn(|| EchoLine)
        .unwrap();
    let before = turns.load(Ordering::SeqCst);
    examine(Family::Tcp, &server.server_address()[0]);
    // The hook runs after the turn that served the request, which may be
    // just after the client saw its answer.
    wait_until("a turn after the request", || {
        turns.load(Ordering::SeqCst) > before
    });
}

/// Writes a line, reads the client's answer, then writes 16 MiB.
struct Talker;

pub const BIG: usize = 16 << 20;

impl RequestHandler for Talker {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        request.wfile().write_all(b"write data\n")?; // no flush: must arrive as is
        let mut answer = Vec::new();
        request.rfile().read_until(b'\n', &mut answer)?;
        assert_eq!(answer, b"client response\n");
        request.wfile().write_all(&pattern(BIG))
    }
}

#[test]
fn writes_reach_the_client_unflushed_and_a_big_one_whole() {
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::threading())
        .spawn(|| Talker)
        .unwrap();
    let mut s = connect(server.server_address()[0].as_inet().unwrap());
    let mut line = [0; 11];
    s.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"write data\n");
    s.write_all(b"client response\n").unwrap();
    let got = read_to_eof(&mut s).unwrap();
    assert!(got == pattern(BIG), "got {} bytes", got.len());
}

#[test]
fn datagram_servers_answer_an_empty_datagram() {
    for family in [Family::Udp, Family::UnixDatagram] {
        struct Echo;
        impl RequestHandler for Echo {
            fn handle(&mut self, request: &mut Request) -> io::Result<()> {
                let packet = request.packet().unwrap().to_vec();
                request.wfile().write_all(&packet)
            }
        }
        let server = ServerBuilder::new(family)
            .bind(address_for(family))
            .spawn(|| Echo)
            .unwrap();
        let addr = server.server_address()[0].clone();
        let mut buf = [0u8; 16];
        let n = match family {
            Family::Udp => {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                s.send_to(b"", addr.as_inet().unwrap()).unwrap();
                s.recv(&mut buf).unwrap()
            }
            _ => {
                let path = temp_path("empty");
                let s = UnixDatagram::bind(&path).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                s.send_to(b"", addr.as_path().unwrap()).unwrap();
                let n = s.recv(&mut buf).unwrap();
                std::fs::remove_file(path).unwrap();
                n
            }
        };
        assert_eq!(n, 0, "{family:?}");
    }
}

#[test]
fn a_full_pool_pauses_accepting_and_loses_nothing() {
    let (tx, rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(rx));
    struct Gated(Arc<Mutex<mpsc::Receiver<()>>>);
    impl RequestHandler for Gated {
        fn handle(&mut self, request: &mut Request) -> io::Result<()> {
            self.0.lock().unwrap().recv_timeout(LIMIT).unwrap();
            request.wfile().write_all(b"done\n")
        }
    }
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::pool(1))
        .spawn(move || Gated(gate.clone()))
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    // One busy worker, one queued request, the rest wait in the backlog.
    let clients: Vec<_> = (0..6).map(|_| connect(addr)).collect();
    for _ in 0..6 {
        tx.send(()).unwrap();
    }
    for mut c in clients {
        assert_eq!(read_to_eof(&mut c).unwrap(), b"done\n");
    }
}

#[test]
fn a_closure_is_a_handler_and_split_gives_both_ends() {
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::threading())
        .spawn(|| {
            |request: &mut Request| {
                let (rfile, wfile) = request.split();
                io::copy(rfile, wfile).map(|_| ())
            }
        })
        .unwrap();
    let mut s = connect(server.server_address()[0].as_inet().unwrap());
    s.write_all(b"copied through\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s).unwrap(), b"copied through\n");
}

/// Says `ready` and then echoes a line: a client that reads `ready` and
/// never sends knows its request is running and stuck.
struct ReadyThenEcho;

impl RequestHandler for ReadyThenEcho {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        request.wfile().write_all(b"ready\n")?;
        EchoLine.handle(request)
    }
}

/// `shutdown_graceful` bounds the shutdown of a server whose requests are
/// stuck on idle clients (issue 11, item 4), in every mode: the requests
/// get the grace, then their sockets are shut down (children get SIGTERM).
/// Before, `shutdown` + `server_close` waited as long as the clients idled.
#[test]
fn shutdown_graceful_ends_stuck_requests_after_the_grace_in_every_mode() {
    let _serial = common::process::serial();
    for mode in [
        Mode::Sync,
        Mode::threading(),
        Mode::pool(2),
        Mode::forking(),
    ] {
        let server = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(mode.clone())
            .spawn(|| ReadyThenEcho)
            .unwrap();
        let addr = server.server_address()[0].as_inet().unwrap();
        let running = if mode == Mode::Sync { 1 } else { 2 };
        let mut stuck: Vec<_> = (0..running).map(|_| connect(addr)).collect();
        for client in &mut stuck {
            assert_eq!(read_n(client, 6), b"ready\n");
        }
        let started = Instant::now();
        server
            .shutdown_graceful(Duration::from_millis(300))
            .unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(4),
            "{mode:?}: shutdown_graceful(300 ms) took {took:?}"
        );
        // The stuck clients were let go: end of stream.
        for client in &mut stuck {
            assert_eq!(read_to_eof(client).unwrap(), b"");
        }
    }
}

/// `server_close` never waits forever (issue 11, item 4): past
/// `close_timeout` its stuck requests are unblocked.
#[test]
fn server_close_is_bounded_by_close_timeout() {
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::threading())
        .close_timeout(Duration::from_millis(200))
        .build(|| EchoLine)
        .unwrap();
    let _client = connect(server.server_address()[0].as_inet().unwrap());
    server.handle_request().unwrap();
    assert_eq!(server.active_requests(), 1);
    let started = Instant::now();
    server.server_close();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(4),
        "server_close took {took:?}"
    );
}

/// `request_timeout` applies to a request's reads (issue 11, item 5):
/// an idle client's request ends with `TimedOut` for `handle_error`.
#[test]
fn request_timeout_ends_an_idle_request_with_a_timeout_error() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .request_timeout(Some(Duration::from_millis(100)))
        .handle_error(move |_, e| {
            let _ = tx.lock().unwrap().send((e.kind(), e.to_string()));
        })
        .build(|| EchoLine)
        .unwrap();
    let _idle = connect(server.server_address()[0].as_inet().unwrap());
    let started = Instant::now();
    server.handle_request().unwrap(); // Sync: returns when the request ended
    let (kind, text) = recv(&rx);
    assert_eq!(kind, io::ErrorKind::TimedOut, "{text}");
    assert!(started.elapsed() < LIMIT);
}

/// `max_threads` caps a threading server (issue 11, item 5): at the cap it
/// stops accepting, as `max_children` does; the rest wait in the backlog.
#[test]
fn max_threads_caps_the_running_requests() {
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::Threading {
            daemon_threads: false,
            block_on_close: true,
            max_threads: 3,
        })
        .close_timeout(Duration::ZERO)
        .timeout(Some(Duration::from_millis(100)))
        .build(|| EchoLine)
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let _idle: Vec<_> = (0..6).map(|_| connect(addr)).collect();
    for _ in 0..3 {
        server.handle_request().unwrap();
    }
    assert_eq!(server.active_requests(), 3);
    // No room: waiting clients stay waiting (handle_request times out).
    for _ in 0..2 {
        server.handle_request().unwrap();
        assert_eq!(server.active_requests(), 3);
    }
}

/// `active_requests()` counts daemon threads and threads not waited for at
/// close (issue 15, item 7): it said 0 for them.
#[test]
fn active_requests_counts_daemon_threads() {
    for (daemon_threads, block_on_close) in [(true, true), (false, false)] {
        let mut server = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(Mode::Threading {
                daemon_threads,
                block_on_close,
                max_threads: 256,
            })
            .build(|| EchoLine)
            .unwrap();
        let addr = server.server_address()[0].as_inet().unwrap();
        let mut client = connect(addr);
        server.handle_request().unwrap();
        assert_eq!(
            server.active_requests(),
            1,
            "daemon_threads {daemon_threads}, block_on_close {block_on_close}"
        );
        client.write_all(TEST_STR).unwrap();
        assert_eq!(read_to_eof(&mut client).unwrap(), TEST_STR);
        server.server_close();
    }
}

/// A mode whose bound is zero would serve nothing: the builder refuses it
/// (it was taken for 1 in silence).
#[test]
fn a_zero_bound_is_refused_when_the_server_is_built() {
    let threading = {
        let Mode::Threading {
            daemon_threads,
            block_on_close,
            ..
        } = Mode::threading()
        else {
            unreachable!()
        };
        Mode::Threading {
            daemon_threads,
            block_on_close,
            max_threads: 0,
        }
    };
    for mode in [Mode::pool(0), Mode::forking_with(0, true), threading] {
        let e = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(mode.clone())
            .build(|| EchoLine)
            .err()
            .unwrap_or_else(|| panic!("{mode:?} was accepted"));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{mode:?}: {e}");
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
}
