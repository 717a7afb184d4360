//! Forking servers. These tests fork, so they count and wait for this
//! process's children: they run one at a time.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};
use sockloop::Addr;

use super::common::process::{children_of, new_children, serial, zombies_of};
use super::common::*;
use super::{concurrent_clients, echo_matrix, errors_reach_handle_error, EchoLine};

#[test]
fn echo_in_every_family_forking() {
    let _serial = serial();
    echo_matrix(Mode::forking());
    assert_eq!(zombies_of(std::process::id()), Vec::<u32>::new());
}

#[test]
fn eight_concurrent_clients_forking() {
    let _serial = serial();
    concurrent_clients(Mode::forking());
    assert_eq!(zombies_of(std::process::id()), Vec::<u32>::new());
}

#[test]
fn handler_errors_in_children_reach_handle_error() {
    let _serial = serial();
    let log = temp_path("errors-log");
    errors_reach_handle_error(Mode::forking(), Some(&log));
    std::fs::remove_file(log).unwrap();
}

#[test]
fn children_are_reaped_while_serving_with_or_without_sigchld() {
    let _serial = serial();
    for reap_on_sigchld in [true, false] {
        // The deprecated field must still make no difference.
        #[allow(deprecated)]
        let mode = Mode::Forking {
            max_children: 40,
            block_on_close: true,
            reap_on_sigchld,
        };
        let server = ServerBuilder::new(Family::Tcp)
            .bind(any_port())
            .mode(mode)
            .spawn(|| EchoLine)
            .unwrap();
        for _ in 0..5 {
            super::examine(Family::Tcp, &server.server_address()[0]);
        }
        // Observed, not ordered: the loop reaps on its own schedule.
        wait_until("children to be reaped while serving", || {
            zombies_of(std::process::id()).is_empty()
        });
        server.shutdown().unwrap();
    }
}

/// A counter in memory shared with forked children (an anonymous shared
/// mapping survives fork, unlike ordinary memory).
struct SharedCounters {
    ptr: *mut AtomicUsize,
}

unsafe impl Send for SharedCounters {}
unsafe impl Sync for SharedCounters {}

impl SharedCounters {
    fn new() -> SharedCounters {
        // SAFETY: a fresh anonymous mapping of one page, checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        SharedCounters { ptr: ptr.cast() }
    }

    /// [0]: running now, [1]: most ever running at once.
    fn get(&self, i: usize) -> &AtomicUsize {
        // SAFETY: the page holds 512 zero-initialised words; we use two.
        unsafe { &*self.ptr.add(i) }
    }
}

/// Counts itself in the shared page while it works for 200 ms.
struct Counted(&'static SharedCounters);

impl RequestHandler for Counted {
    fn handle(&mut self, request: &mut Request) -> io::Result<()> {
        let now = self.0.get(0).fetch_add(1, Ordering::SeqCst) + 1;
        self.0.get(1).fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200)); // the slow work
        self.0.get(0).fetch_sub(1, Ordering::SeqCst);
        request.wfile().write_all(b"done\n")
    }
}

#[test]
fn max_children_bounds_the_running_children() {
    let _serial = serial();
    let counters: &'static SharedCounters = Box::leak(Box::new(SharedCounters::new()));
    let mode = Mode::forking_with(2, true);
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(mode)
        .spawn(move || Counted(counters))
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let clients: Vec<_> = (0..4).map(|_| connect(addr)).collect();
    for mut c in clients {
        assert_eq!(
            read_to_eof(&mut c).unwrap(),
            b"done\n",
            "every client is served in the end"
        );
    }
    server.shutdown().unwrap();
    assert_eq!(
        counters.get(1).load(Ordering::SeqCst),
        2,
        "most children at once"
    );
    assert_eq!(zombies_of(std::process::id()), Vec::<u32>::new());
}

#[test]
fn a_child_forked_by_the_application_keeps_its_exit_status() {
    let _serial = serial();
    // SAFETY: the child only exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(72) };
    }
    assert!(pid > 0);
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .spawn(|| EchoLine)
        .unwrap();
    for _ in 0..3 {
        super::examine(Family::Tcp, &server.server_address()[0]);
    }
    server.shutdown().unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(
        unsafe { libc::waitpid(pid, &mut status, 0) },
        pid,
        "the server reaped a child not its own"
    );
    assert!(libc::WIFEXITED(status));
    assert_eq!(libc::WEXITSTATUS(status), 72);
}

#[test]
fn block_on_close_waits_for_children() {
    let _serial = serial();
    let counters: &'static SharedCounters = Box::leak(Box::new(SharedCounters::new()));
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .build(move || Counted(counters))
        .unwrap();
    let mut client = connect(server.server_address()[0].as_inet().unwrap());
    server.handle_request().unwrap();
    server.server_close(); // waits for the child
    assert_eq!(server.active_requests(), 0);
    assert_eq!(zombies_of(std::process::id()), Vec::<u32>::new());
    assert_eq!(read_to_eof(&mut client).unwrap(), b"done\n");
    let _ = client.flush();
}

/// A handler holding a file it opened before the fork (issue 11, item 1):
/// the child used to close every descriptor it did not serve, so the file's
/// number was free, the request's second handle took it, and the handler's
/// writes "to its file" went to the client's socket.
#[test]
fn a_child_keeps_the_descriptors_it_does_not_own() {
    let _serial = serial();
    let path = temp_path("handler-file");
    let file = Arc::new(std::fs::File::create(&path).unwrap());
    let handler_file = file.clone();
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .spawn(move || {
            let file = handler_file.clone();
            move |request: &mut Request| {
                (&*file).write_all(b"written by the handler\n")?;
                let mut line = Vec::new();
                request.rfile().read_until(b'\n', &mut line)?;
                request.wfile().write_all(&line)
            }
        })
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let mut client = connect(addr);
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_to_eof(&mut client).unwrap(), b"ping\n");
    server.shutdown().unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "written by the handler\n"
    );
    drop(file);
    std::fs::remove_file(path).unwrap();
}

/// A panic in `handle_error` inside a child (issue 11, item 2) used to
/// unwind into the parent's frames copied in the child: their destructors
/// ran there, and `UnlinkOnDrop` removed the live server's socket file.
#[test]
fn a_panic_in_handle_error_in_a_child_ends_the_child_only() {
    let _serial = serial();
    let path = temp_path("panicking-hook");
    let mut server = ServerBuilder::new(Family::UnixStream)
        .bind(Addr::unix(&path).unwrap())
        .mode(Mode::forking())
        .handle_error(|_, e| panic!("handle_error fails too: {e}"))
        .build(|| |_: &mut Request| Err(io::Error::other("the handler fails")))
        .unwrap();
    // Dropped in any process other than this one, it leaves a mark: the
    // child unwound into this test's frames.
    let marks = temp_path("unwound-into-the-parent");
    let _witness = Witness(std::process::id(), marks.clone());
    let handle = server.handle();
    let client_path = path.clone();
    let clients = std::thread::spawn(move || {
        let mut replies = Vec::new();
        for _ in 0..3 {
            let served = std::os::unix::net::UnixStream::connect(&client_path).and_then(|mut c| {
                c.set_read_timeout(Some(LIMIT))?;
                read_to_eof(&mut c)
            });
            replies.push(served.map_err(|e| e.to_string()));
            // Each child has ended (and, on the old code, unwound) before the next client.
            wait_until("the child to end", || {
                zombies_of(std::process::id()).is_empty()
            });
        }
        handle.shutdown();
        replies
    });
    server.serve_forever().unwrap();
    let replies = clients.join().unwrap();
    assert!(path.exists(), "a child removed the server's socket file");
    server.server_close();
    assert!(!path.exists());
    assert_eq!(replies, vec![Ok(Vec::new()); 3]);
    let unwound = std::fs::read_to_string(&marks).unwrap_or_default();
    assert_eq!(unwound, "", "children ran this test's destructors");
}

struct Witness(u32, std::path::PathBuf);

impl Drop for Witness {
    fn drop(&mut self) {
        if std::process::id() != self.0 {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.1)
                .unwrap();
            writeln!(f, "{}", std::process::id()).unwrap();
        } else {
            let _ = std::fs::remove_file(&self.1);
        }
    }
}

/// `request.server().shutdown()` from a forked handler reaches the parent
/// (issue 15, item 3): it used to change only the child's copy.
#[test]
fn a_forked_handler_can_shut_the_server_down() {
    let _serial = serial();
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .build(|| {
            |request: &mut Request| {
                request.server().shutdown();
                request.wfile().write_all(b"bye\n")
            }
        })
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let handle = server.handle();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut client = connect(addr);
        let reply = read_to_eof(&mut client).unwrap();
        tx.send(reply).unwrap();
        // A watchdog, not a synchronisation: fails the test instead of hanging it.
        std::thread::sleep(LIMIT);
        handle.shutdown();
    });
    let started = Instant::now();
    server.serve_forever().unwrap();
    assert_eq!(recv(&rx), b"bye\n");
    assert!(
        started.elapsed() < LIMIT,
        "serve_forever ran on after the child's shutdown()"
    );
    server.server_close();
}

/// fork() from a process whose other threads hold the allocator, `log` and
/// stdout (issue 11, item 3): children forked directly from such a process
/// hang on the lock a thread held at the fork. Children come from the fork
/// server, forked at build time, before these threads existed.
#[test]
fn five_hundred_children_while_threads_hammer_the_allocator_log_and_stdout() {
    let _serial = serial();
    let _ = env_logger::builder().is_test(true).try_init();
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking_with(16, true))
        .build(|| {
            |request: &mut Request| {
                // What handlers do: allocate, log, print.
                let mut line = Vec::with_capacity(64);
                request.rfile().read_until(b'\n', &mut line)?;
                log::info!("child {} got {} bytes", std::process::id(), line.len());
                println!("child {} answering", std::process::id());
                request.wfile().write_all(&line)
            }
        })
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..4)
        .map(|n| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let v: Vec<u8> = vec![n; 1 + (rounds as usize % 4096)];
                    log::info!("hammer {n} round {rounds} {}", v.len());
                    println!("hammer {n} round {rounds}");
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let handle = server.handle();
    let clients = std::thread::spawn(move || {
        let started = Instant::now();
        let mut failures = Vec::new();
        for i in 0..500 {
            let mut client = connect(addr);
            client.set_read_timeout(Some(LIMIT)).unwrap();
            let msg = format!("request {i}\n");
            client.write_all(msg.as_bytes()).unwrap();
            match read_to_eof(&mut client) {
                Ok(reply) if reply == msg.as_bytes() => {}
                other => {
                    failures.push(format!("request {i}: {other:?}"));
                    break;
                }
            }
        }
        let elapsed = started.elapsed();
        handle.shutdown_graceful(Duration::from_secs(1));
        (failures, elapsed)
    });
    server.serve_forever().unwrap();
    server.server_close();
    stop.store(true, Ordering::Relaxed);
    let rounds: u64 = hammers.into_iter().map(|h| h.join().unwrap()).sum();
    let (failures, elapsed) = clients.join().unwrap();
    eprintln!("500 forked requests in {elapsed:?} while 4 threads made {rounds} rounds");
    assert_eq!(failures, Vec::<String>::new());
}

/// The fork server killed from outside: requests are refused at once and
/// reported to `handle_error`; the server goes on and shuts down cleanly.
#[test]
fn a_killed_fork_server_fails_requests_cleanly() {
    let _serial = serial();
    let before = children_of(std::process::id());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .handle_error(move |_, e| seen.lock().unwrap().push(e.to_string()))
        .spawn(|| EchoLine)
        .unwrap();
    let fork_server = new_children(&before);
    assert_eq!(fork_server.len(), 1, "one fork server: {fork_server:?}");
    let addr = server.server_address()[0].as_inet().unwrap();
    super::examine(Family::Tcp, &server.server_address()[0]);
    // SAFETY: killing the fork server of the server under test.
    unsafe { libc::kill(fork_server[0] as i32, libc::SIGKILL) };
    // A client that comes before the server noticed is closed at once
    // (handle_error hears why); after, it is refused.
    if let Ok(mut client) = std::net::TcpStream::connect(addr) {
        client.set_read_timeout(Some(LIMIT)).unwrap();
        if client.write_all(b"hello\n").is_ok() {
            assert_eq!(read_to_eof(&mut client).unwrap_or_default(), b"");
        }
    }
    // It fails loudly (a supervisor can restart it) and reaps the dead
    // fork server instead of leaving a zombie for the rest of its life.
    wait_until("the server to stop on its own", || server.is_finished());
    let e = server.shutdown().unwrap_err();
    assert!(e.to_string().contains("killed by signal 9"), "{e}");
    assert_eq!(zombies_of(std::process::id()), Vec::<u32>::new());
    let refused = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    drop(errors);
}

/// The fork server killed while a child serves a client that sends nothing:
/// the server hears of it at once (the fork server's lifeline closes, an
/// event) and fails, though nothing else happens on its loop. It used to
/// ask (`waitpid`) at every turn instead, and no turn came.
#[test]
fn a_fork_server_killed_while_a_child_waits_stops_the_idle_server() {
    let _serial = serial();
    let before = children_of(std::process::id());
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .spawn(|| EchoLine)
        .unwrap();
    let fork_server = new_children(&before);
    assert_eq!(fork_server.len(), 1, "one fork server: {fork_server:?}");
    let silent = connect(server.server_address()[0].as_inet().unwrap());
    wait_until("the child to be forked", || {
        !children_of(fork_server[0]).is_empty()
    });
    // SAFETY: killing the fork server of the server under test.
    unsafe { libc::kill(fork_server[0] as i32, libc::SIGKILL) };
    wait_until("the server to stop on its own", || server.is_finished());
    drop(silent); // the orphaned child reads end of stream and exits
    let e = server.shutdown().unwrap_err();
    assert!(e.to_string().contains("killed by signal 9"), "{e}");
}

/// A fork server copies every socket the program has; it must not keep
/// the crate's other servers' listeners open (their clients would connect
/// to a closed server and hang).
#[test]
fn a_closed_forking_servers_port_is_not_held_by_another_fork_server() {
    let _serial = serial();
    let first = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .spawn(|| EchoLine)
        .unwrap();
    let first_addr = first.server_address()[0].as_inet().unwrap();
    let second = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .spawn(|| EchoLine)
        .unwrap();
    first.shutdown().unwrap();
    match std::net::TcpStream::connect(first_addr) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => {
            let ss = std::process::Command::new("ss")
                .args(["-ltnpH", &format!("sport = :{}", first_addr.port())])
                .output()
                .unwrap();
            let holder = String::from_utf8_lossy(&ss.stdout).into_owned();
            panic!("{first_addr} still accepts connections after its server closed: {holder}")
        }
    }
    super::examine(Family::Tcp, &second.server_address()[0]);
    second.shutdown().unwrap();
}

/// A fork server that does not answer (stopped) is killed after a short
/// bound and the server fails: the loop is not blocked for 10 s per
/// request, and no late answer is ever read as a later request's pid.
#[test]
fn a_fork_server_that_does_not_answer_is_killed_and_the_server_fails() {
    let _serial = serial();
    let before = children_of(std::process::id());
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .spawn(|| EchoLine)
        .unwrap();
    let fork_server = new_children(&before);
    assert_eq!(fork_server.len(), 1, "one fork server: {fork_server:?}");
    let addr = server.server_address()[0].as_inet().unwrap();
    // SAFETY: stopping the fork server of the server under test.
    unsafe { libc::kill(fork_server[0] as i32, libc::SIGSTOP) };
    let started = Instant::now();
    let mut client = connect(addr);
    client
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    client.write_all(b"hello\n").unwrap();
    assert_eq!(
        read_to_eof(&mut client).unwrap(),
        b"",
        "refused, not served"
    );
    wait_until("the server to stop on its own", || server.is_finished());
    let took = started.elapsed();
    let e = server.shutdown().unwrap_err();
    assert!(e.to_string().contains("did not answer"), "{e}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert_eq!(
        new_children(&before),
        Vec::<u32>::new(),
        "fork server reaped"
    );
}

/// A service manager stops a service with SIGTERM to its whole process
/// group: the fork server must survive it (the server decides what becomes
/// of the children, and must hear of their exits).
#[test]
fn the_fork_server_survives_a_sigterm() {
    let _serial = serial();
    let before = children_of(std::process::id());
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .spawn(|| EchoLine)
        .unwrap();
    let fork_server = new_children(&before);
    assert_eq!(fork_server.len(), 1, "one fork server: {fork_server:?}");
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: signalling the fork server of the server under test.
        unsafe { libc::kill(fork_server[0] as i32, signal) };
    }
    for _ in 0..3 {
        super::examine(Family::Tcp, &server.server_address()[0]);
    }
    assert_eq!(new_children(&before), fork_server, "still there");
    server.shutdown().unwrap();
}

/// `server_close` ends and reaps the fork server even while a handle lives
/// on (the example programs' signal thread holds one for their whole life:
/// the fork server used to outlive the program, left to init).
#[test]
fn server_close_reaps_the_fork_server_while_handles_live() {
    let _serial = serial();
    let before = children_of(std::process::id());
    let mut server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .mode(Mode::forking())
        .build(|| EchoLine)
        .unwrap();
    let handle = server.handle();
    assert_eq!(new_children(&before).len(), 1, "one fork server");
    server.server_close();
    assert_eq!(
        new_children(&before),
        Vec::<u32>::new(),
        "fork server reaped"
    );
    drop(handle);
}
