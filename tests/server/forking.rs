//! Forking servers. These tests fork, so they count and wait for this
//! process's children: they run one at a time.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sockloop::server::{Family, Mode, Request, RequestHandler, ServerBuilder};

use super::common::*;
use super::{concurrent_clients, echo_matrix, errors_reach_handle_error, EchoLine};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pids of this process's children that are zombies (exited, not reaped).
fn zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
            let after = stat.rsplit(')').next()?;
            let mut fields = after.split_whitespace();
            let (state, ppid) = (fields.next()?, fields.next()?);
            let pid = stat.split_whitespace().next()?.parse().ok()?;
            (state == "Z" && ppid == me).then_some(pid)
        })
        .collect()
}

#[test]
fn echo_in_every_family_forking() {
    let _serial = serial();
    echo_matrix(Mode::forking());
    assert_eq!(zombies(), Vec::<i32>::new());
}

#[test]
fn eight_concurrent_clients_forking() {
    let _serial = serial();
    concurrent_clients(Mode::forking());
    assert_eq!(zombies(), Vec::<i32>::new());
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
            zombies().is_empty()
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
    let mode = Mode::Forking {
        max_children: 2,
        block_on_close: true,
        reap_on_sigchld: true,
    };
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
    assert_eq!(zombies(), Vec::<i32>::new());
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
    assert_eq!(zombies(), Vec::<i32>::new());
    assert_eq!(read_to_eof(&mut client).unwrap(), b"done\n");
    let _ = client.flush();
}
