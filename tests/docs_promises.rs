//! The documentation's checkable promises, each run against the code: one
//! test per guarantee or planning number in README.md, docs/*.md and the
//! crate docs, named `docs_promise_*`, so that a promise without a test shows
//! in review. Where another test already checks a promise in depth, the test
//! here is a small focused check of the same sentence (and names the deeper
//! one). The list of promises and their tests is in the module docs of each
//! section below.

mod common;

#[path = "../benches/echo/analysis.rs"]
mod analysis;

// ----- docs/benchmarks.md ----------------------------------------------------
//
// "Each section of the hand-written analysis is stamped with the run (date
// and commit) it was written for; regenerating marks every section written
// for another run as not reviewed."

mod benchmarks {
    use super::analysis;

    fn run(date: &str, commit: &str) -> analysis::RunId {
        analysis::RunId {
            date: date.into(),
            commit: commit.into(),
        }
    }

    #[test]
    fn docs_promise_benchmark_analysis_marks_sections_of_another_run() {
        let old = run("2026-01-01 00:00 UTC", "aaaaaaa");
        let new = run("2026-02-02 00:00 UTC", "bbbbbbb");
        let text = format!(
            "\n## Analysis\n\n{}\nintro\n\n### One\n\n{}\nfast\n\n### Two\n\nundated\n",
            new.stamp(),
            old.stamp()
        );
        let (out, stale) = analysis::review(&text, &new);
        assert_eq!(stale.len(), 2, "{stale:?}");
        assert!(out.contains(
            "### One\n> **Not reviewed for this run:** written for the run of 2026-01-01"
        ));
        assert!(out.contains("### Two\n> **Not reviewed for this run:** written for no stated run"));
        assert!(!out.contains("## Analysis\n> **Not"));
        // Idempotent, and a re-stamped section loses its mark.
        assert_eq!(analysis::review(&out, &new).0, out);
        let fixed = out.replace(&old.stamp(), &new.stamp());
        let (again, stale) = analysis::review(&fixed, &new);
        assert_eq!(stale.len(), 1);
        assert!(!again.contains("### One\n> **Not"));
    }

    #[test]
    fn docs_promise_benchmark_page_names_its_run() {
        let page = "- Date: 2026-11-23 18:50 UTC\n- Commit: `092ecf9`\n";
        assert_eq!(
            analysis::RunId::of_page(page),
            Some(run("2026-11-23 18:50 UTC", "092ecf9"))
        );
        let r = run("d", "c");
        assert_eq!(analysis::RunId::from_stamp(&r.stamp()), Some(r));
    }

    /// The page as committed carries exactly the marks the generator would
    /// give it: every analysis section stamped, and a section written for
    /// another run than the page's marked "not reviewed". A hand edit that
    /// drops a mark without re-stamping fails here.
    #[test]
    fn docs_promise_benchmark_analysis_is_stamped_for_its_run() {
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md"),
        )
        .unwrap();
        let run = analysis::RunId::of_page(&page).expect("the page names its run (Date, Commit)");
        let marker =
            "<!-- Hand-written below this line: kept when the bench regenerates the page. -->";
        let at = page.find(marker).expect("the hand-written marker") + marker.len() + 1;
        let kept = &page[at..];
        let (expected, _) = analysis::review(kept, &run);
        assert!(
            kept == expected,
            "docs/benchmarks.md: the analysis marks differ from what the generator would write:\n{}",
            expected
        );
        assert!(
            kept.contains("<!-- analysis of the run of"),
            "no stamped section"
        );
        // The stale claims of an earlier review are gone from the prose.
        for stale in [
            "fills a 64-entry",
            "re-arming the shared read buffer on\nevery read",
        ] {
            assert!(!page.contains(stale), "stale claim {stale:?}");
        }
    }
}

// ----- docs/benchmarks.md names no issue --------------------------------------

/// `issue N` (or `issue #N`, `issues N`) anywhere in `text`.
fn names_an_issue(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.match_indices("issue").any(|(i, _)| {
        let rest = lower[i + "issue".len()..].trim_start_matches(['s', ' ', '#']);
        rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// The page and plots speak to the crate's readers, who do not have this
/// project's tracker: neither the page as committed nor any text the bench
/// writes into it (string literals of benches/echo*, comments aside) names an
/// issue.
#[test]
fn docs_promise_benchmark_page_names_no_issue() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/benchmarks.md")).unwrap();
    if let Some(line) = page.lines().find(|l| names_an_issue(l)) {
        panic!("docs/benchmarks.md names an issue: {line}");
    }
    let mut sources = vec![root.join("benches/echo.rs")];
    for entry in std::fs::read_dir(root.join("benches/echo")).unwrap() {
        sources.push(entry.unwrap().path());
    }
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
        if let Some(line) = code.find(|l| l.contains('"') && names_an_issue(l)) {
            panic!("{} writes an issue number: {line}", path.display());
        }
    }
    assert!(names_an_issue("Targets (issue 5)") && names_an_issue("see issues #9"));
    assert!(!names_an_issue("no issue here") && !names_an_issue("tissue"));
}

// ----- shared helpers ----------------------------------------------------------

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use sockloop::{
    CloseReason, ConnId, ConnOptions, Context, FrameHandler, Framed, ListenOptions, Protocol,
    Reactor, Terminator,
};

/// A protocol driven by its peer, line by line: `echo X`, `close`, `abort`,
/// `panic`, `write-then-close X`; reports `open ID`, `eof`, `close REASON
/// unsent=N` (with a count of on_close calls) to the test.
struct Scripted {
    log: mpsc::Sender<String>,
    closes: u32,
}

impl Protocol for Scripted {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.log.send(format!("open {:?}", cx.id())).unwrap();
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        while let Some(at) = data.iter().position(|&b| b == b'\n') {
            let line = data.split_to(at + 1);
            let line = std::str::from_utf8(&line[..at]).unwrap().to_string();
            match line.split_once(' ').unwrap_or((&line, "")) {
                ("echo", rest) => cx.write(format!("{rest}\n").as_bytes()),
                ("close", _) => cx.close(),
                ("abort", _) => cx.abort(),
                ("panic", _) => panic!("asked to panic"),
                ("write-then-close", rest) => {
                    cx.write(rest.as_bytes());
                    cx.close();
                    cx.write(b"dropped");
                    assert!(cx.is_closing());
                }
                _ => cx.write(b"?\n"),
            }
        }
    }
    fn on_eof(&mut self, cx: &mut Context<'_>) {
        self.log.send("eof".into()).unwrap();
        cx.close();
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.closes += 1;
        self.log
            .send(format!(
                "close {reason} unsent={} calls={}",
                cx.queued(),
                self.closes
            ))
            .unwrap();
    }
}

fn scripted(opts: ListenOptions) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen_with(&any_port(), &opts, move |_| Scripted {
                log: tx.clone(),
                closes: 0,
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

/// The next event that is not `open ...`.
fn next_event(rx: &mpsc::Receiver<String>) -> String {
    loop {
        let e = recv(rx);
        if !e.starts_with("open") {
            return e;
        }
    }
}

fn line(s: &mut TcpStream, text: &str) {
    s.write_all(format!("{text}\n").as_bytes()).unwrap();
}

// ----- README.md and the defaults every page quotes ----------------------------
//
// README: "reading stops above a high-water mark (64 KiB) and resumes at a
// low-water mark"; "Requires Rust 1.88 or newer". docs/asyncore.md:
// "Backlog default 1024", "reuse_address: On by default. reuse_port (off)
// and only_v6 (off)", "Defaults: 64 KiB, 16 KiB, 64 MiB, none, on, 30 s",
// "max_frame: Default 64 KiB", "close_linger (2 s)", "close_discard (1 MiB)",
// "close_stall (30 s)".
// docs/design.md: "stall_timeout (1 s)".

#[test]
fn docs_promise_defaults_users_plan_with() {
    let c = ConnOptions::default();
    assert_eq!(c.high_water, 64 * 1024);
    assert_eq!(c.low_water, 16 * 1024);
    assert_eq!(c.max_queued, Some(64 * 1024 * 1024));
    assert_eq!(c.idle_timeout, None);
    assert!(c.nodelay);
    assert_eq!(c.connect_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.close_stall, Duration::from_secs(30));
    assert_eq!(c.close_linger, Duration::from_secs(2));
    assert_eq!(c.close_discard, 1024 * 1024);
    assert_eq!(c.stall_timeout, Duration::from_secs(1));
    let l = ListenOptions::default();
    assert_eq!(l.backlog, 1024);
    assert!(l.reuse_address && !l.reuse_port && !l.only_v6);
    assert_eq!(l.max_connections, None);
    struct Lines;
    impl FrameHandler for Lines {
        fn on_frame(&mut self, _: &mut Context<'_>, _: Bytes) {}
    }
    assert_eq!(Lines.max_frame(), 64 * 1024);
    assert_eq!(Lines.terminator(), Terminator::Delimiter(b"\n"));
    assert_eq!(Lines.frame_timeout(), None);
}

#[test]
fn docs_promise_readme_rust_version_matches_cargo_toml() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    assert!(
        readme.contains(&format!("Requires Rust {version} or newer, on Linux")),
        "README's Rust version is not Cargo.toml's {version}"
    );
}

// ----- reading: docs/asyncore.md "The reactor reads (up to 64 KiB at a time)" ---

#[test]
fn docs_promise_a_read_delivers_at_most_64_kib() {
    struct Sizes(mpsc::Sender<usize>);
    impl Protocol for Sizes {
        fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
            self.0.send(data.len()).unwrap();
            data.clear();
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| Sizes(tx.clone())).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut s = connect(server.inet(0));
    s.write_all(&vec![b'x'; 4 << 20]).unwrap();
    let (mut total, mut largest) = (0, 0);
    while total < 4 << 20 {
        let n = recv(&rx);
        total += n;
        largest = largest.max(n);
    }
    assert!(largest <= 64 * 1024, "one on_data got {largest} bytes");
}

// ----- closing: docs/design.md's table, "on_close runs exactly once, last",
// "In it, cx.queued() is the number of accepted bytes that were never sent";
// docs/asyncore.md "Once the connection is closing, writes are dropped",
// "reason.is_clean() is true for Closed and PeerClosed" -------------------------

#[test]
fn docs_promise_close_sends_the_queue_then_closes_with_closed() {
    let (server, rx) = scripted(ListenOptions::default());
    let mut s = connect(server.inet(0));
    line(&mut s, "write-then-close bye");
    // Writes after close() are dropped; what came before arrives, then EOF.
    assert_eq!(read_to_eof(&mut s).unwrap(), b"bye");
    drop(s);
    assert_eq!(next_event(&rx), "close closed unsent=0 calls=1");
}

#[test]
fn docs_promise_peer_fin_calls_on_eof_then_closes_with_peer_closed() {
    let (server, rx) = scripted(ListenOptions::default());
    let mut s = connect(server.inet(0));
    line(&mut s, "echo hi");
    assert_eq!(read_n(&mut s, 3), b"hi\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(next_event(&rx), "eof");
    assert_eq!(next_event(&rx), "close closed by peer unsent=0 calls=1");
    assert!(read_to_eof(&mut s).unwrap().is_empty());
}

#[test]
fn docs_promise_abort_drops_the_queue_and_counts_it() {
    // A peer that does not read: the queue backs up; abort counts it in on_close.
    struct Flood(mpsc::Sender<String>);
    impl Protocol for Flood {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            cx.write_bytes(vec![b'f'; 32 << 20]);
            cx.set_timer(Duration::from_millis(200));
        }
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
        fn on_timer(&mut self, cx: &mut Context<'_>, _: sockloop::TimerId) {
            cx.abort();
        }
        fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
            self.0.send(format!("{reason} {}", cx.queued())).unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| Flood(tx.clone())).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let _s = connect(server.inet(0));
    let report = recv(&rx);
    let (reason, unsent) = report.rsplit_once(' ').unwrap();
    let unsent: usize = unsent.parse().unwrap();
    assert_eq!(reason, "closed");
    assert!(unsent > 0 && unsent <= 32 << 20, "{report}");
}

// docs/design.md: "peer takes none of what is still owed to it after
// `close()` ... for `close_stall`: reset now; a warning counts the queued and
// in-flight bytes lost | `PeerStalled { unsent }`"; "Bytes already sent that
// a forced close destroys ... are not in `cx.queued()`; ... `PeerStalled {
// unsent }` includes them".
#[test]
fn docs_promise_a_closing_peer_that_takes_nothing_is_cut_off_with_peer_stalled() {
    struct CloseBig(mpsc::Sender<String>);
    impl Protocol for CloseBig {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            cx.write_bytes(vec![b'f'; 16 << 20]);
            cx.close();
        }
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut BytesMut) {}
        fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
            let unsent = match reason {
                CloseReason::PeerStalled { unsent } => *unsent,
                _ => 0,
            };
            self.0
                .send(format!("{reason}|{unsent}|{}", cx.queued()))
                .unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut opts = ListenOptions::default();
    opts.conn.close_stall = Duration::from_millis(100);
    let server = Server::start(move |r| {
        let id = r
            .listen_with(&any_port(), &opts, move |_| CloseBig(tx.clone()))
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let _s = connect(server.inet(0)); // never reads
    let report = recv(&rx);
    let mut parts = report.split('|');
    let reason = parts.next().unwrap();
    let unsent: usize = parts.next().unwrap().parse().unwrap();
    let queued: usize = parts.next().unwrap().parse().unwrap();
    assert!(reason.starts_with("peer stopped taking bytes"), "{report}");
    assert!(
        queued > 0 && unsent > queued && unsent <= 16 << 20,
        "{report}"
    );
}

#[test]
fn docs_promise_a_peer_reset_closes_with_reset() {
    use std::os::fd::AsRawFd;
    let (server, rx) = scripted(ListenOptions::default());
    let s = connect(server.inet(0));
    assert!(recv(&rx).starts_with("open"));
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
    drop(s); // RST
    assert_eq!(next_event(&rx), "close reset by peer unsent=0 calls=1");
}

#[test]
fn docs_promise_idle_timeout_closes_with_idle_timeout() {
    let mut opts = ListenOptions::default();
    opts.conn.idle_timeout = Some(Duration::from_millis(100));
    let (server, rx) = scripted(opts);
    let mut s = connect(server.inet(0));
    assert_eq!(next_event(&rx), "close idle timeout unsent=0 calls=1");
    assert!(read_to_eof(&mut s).unwrap().is_empty());
}

#[test]
fn docs_promise_a_panic_closes_only_its_connection_after_its_queue() {
    let (server, rx) = scripted(ListenOptions::default());
    let mut a = connect(server.inet(0));
    let mut b = connect(server.inet(0));
    line(&mut a, "echo before");
    assert_eq!(read_n(&mut a, 7), b"before\n");
    a.write_all(b"echo last\npanic\n").unwrap();
    assert_eq!(read_to_eof(&mut a).unwrap(), b"last\n");
    let e = next_event(&rx);
    assert!(
        e.starts_with("close callback panicked: asked to panic"),
        "{e}"
    );
    line(&mut b, "echo still here");
    assert_eq!(read_n(&mut b, 11), b"still here\n");
    let (tx, stats) = mpsc::channel();
    server
        .handle
        .post(move |r| tx.send(r.stats().panics).unwrap())
        .unwrap();
    assert_eq!(recv(&stats), 1, "Stats::panics counts it");
}

#[test]
fn docs_promise_dropping_the_reactor_closes_with_reactor_stopped_once() {
    let (server, rx) = scripted(ListenOptions::default());
    let mut s = connect(server.inet(0));
    line(&mut s, "echo x");
    assert_eq!(read_n(&mut s, 2), b"x\n");
    server.stop();
    assert_eq!(next_event(&rx), "close reactor stopped unsent=0 calls=1");
    assert!(rx.try_recv().is_err(), "a second on_close");
}

#[test]
fn docs_promise_is_clean_means_closed_or_peer_closed() {
    assert!(CloseReason::Closed.is_clean());
    assert!(CloseReason::PeerClosed.is_clean());
    for r in [
        CloseReason::Reset,
        CloseReason::IdleTimeout,
        CloseReason::ReactorStopped,
        CloseReason::Panicked("x".into()),
        CloseReason::Protocol("x".into()),
        CloseReason::WriteQueueFull { limit: 1 },
        CloseReason::PeerKeptSending { discarded: 1 },
        CloseReason::PeerStalled { unsent: 1 },
    ] {
        assert!(!r.is_clean(), "{r}");
    }
}

// ----- ids: README "stale connection ids never reach a new connection";
// docs/design.md "a late write to a closed connection fails with NotConnected" --

#[test]
fn docs_promise_a_stale_id_never_reaches_a_new_connection() {
    struct Ids(mpsc::Sender<ConnId>);
    impl Protocol for Ids {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            self.0.send(cx.id()).unwrap();
        }
        fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
            cx.write_bytes(data.split().freeze());
        }
    }
    let (tx, ids) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| Ids(tx.clone())).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut first = connect(server.inet(0));
    let old = recv(&ids);
    first.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut first).unwrap().is_empty());
    drop(first);
    // The slot is free again; the next connection may take it.
    let mut second = connect(server.inet(0));
    let new = recv(&ids);
    assert_ne!(old, new);
    let (tx, result) = mpsc::channel();
    server
        .handle
        .post(move |r| {
            tx.send(r.write(old, b"stranger\n").map_err(|e| e.kind()))
                .unwrap()
        })
        .unwrap();
    assert_eq!(recv(&result), Err(std::io::ErrorKind::NotConnected));
    let _ = server.handle.write(old, Bytes::from_static(b"stranger\n"));
    second.write_all(b"mine\n").unwrap();
    assert_eq!(
        read_n(&mut second, 5),
        b"mine\n",
        "nothing of the stale id's writes"
    );
}

// ----- the loop: docs/asyncore.md "run() ... does not return when the last
// socket closes", "Handle::stop works from any thread and wakes the loop at
// once", README "a panicking callback closes only its connection" (factory:
// "A panic in a factory drops only that connection"); "shutdown_graceful(grace)
// stops accepting and lets open connections finish" ------------------------------

#[test]
fn docs_promise_stop_from_another_thread_wakes_the_loop_at_once() {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut reactor = Reactor::new().unwrap();
        tx.send(reactor.handle()).unwrap();
        reactor.run().unwrap();
        Instant::now()
    });
    let handle = recv(&rx);
    std::thread::sleep(Duration::from_millis(50)); // let it block in poll (no timer)
    let asked = Instant::now();
    handle.stop();
    let returned = thread.join().unwrap();
    let took = returned.saturating_duration_since(asked);
    // "At once": no polling interval (socketserver's is 0.5 s).
    assert!(
        took < Duration::from_millis(250),
        "run() returned {took:?} after stop()"
    );
}

#[test]
fn docs_promise_run_does_not_return_when_the_last_socket_closes() {
    let (server, rx) = scripted(ListenOptions::default());
    let mut s = connect(server.inet(0));
    line(&mut s, "close");
    assert!(read_to_eof(&mut s).unwrap().is_empty());
    drop(s);
    assert!(next_event(&rx).starts_with("close"));
    // Still serving: a new client is answered.
    let mut again = connect(server.inet(0));
    line(&mut again, "echo alive");
    assert_eq!(read_n(&mut again, 6), b"alive\n");
}

#[test]
fn docs_promise_a_panicking_factory_drops_only_that_connection() {
    let (tx, _events) = mpsc::channel();
    let server = Server::start(move |r| {
        let mut n = 0;
        let id = r
            .listen(&any_port(), move |_| {
                n += 1;
                assert!(n != 1, "factory refuses the first");
                Scripted {
                    log: tx.clone(),
                    closes: 0,
                }
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut first = connect(server.inet(0));
    let _ = first.write_all(b"echo x\n");
    let mut buf = Vec::new();
    let _ = first.read_to_end(&mut buf); // closed (EOF or reset), no answer
    assert!(buf.is_empty());
    let mut second = connect(server.inet(0));
    line(&mut second, "echo ok");
    assert_eq!(read_n(&mut second, 3), b"ok\n");
}

#[test]
fn docs_promise_graceful_shutdown_stops_accepting_and_lets_connections_finish() {
    let (server, rx) = scripted(ListenOptions::default());
    let addr = server.inet(0);
    let mut s = connect(addr);
    line(&mut s, "echo one");
    assert_eq!(read_n(&mut s, 4), b"one\n");
    server
        .handle
        .post(|r| r.shutdown_graceful(Duration::from_secs(30)))
        .unwrap();
    // No new connections: the listener is closed.
    wait_until("the listener to close", || {
        TcpStream::connect(addr).is_err()
    });
    // The open one is still served until its peer closes.
    line(&mut s, "echo two");
    assert_eq!(read_n(&mut s, 4), b"two\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut s).unwrap().is_empty());
    assert_eq!(next_event(&rx), "eof");
    assert!(next_event(&rx).starts_with("close closed by peer"));
    server.stop();
}

// ----- backpressure: docs/design.md "a client that sends but never reads
// holds the server to about the high-water mark plus one read"
// (tests/stream.rs checks it with 32 MiB) ---------------------------------------

#[test]
fn docs_promise_a_peer_that_never_reads_holds_the_queue_near_the_high_water_mark() {
    struct Echo(mpsc::Sender<ConnId>);
    impl Protocol for Echo {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            self.0.send(cx.id()).unwrap();
        }
        fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
            cx.write_bytes(data.split().freeze());
        }
    }
    let (tx, ids) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| Echo(tx.clone())).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let s = connect(server.inet(0));
    let id = recv(&ids);
    let mut writer = s.try_clone().unwrap();
    // Sends until the socket is shut down below (it blocks once the kernel
    // buffers on both sides are full and the server has stopped reading).
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'p'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 256 << 20 && writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let queued = |server: &Server| {
        let (tx, rx) = mpsc::channel();
        server
            .handle
            .post(move |r| tx.send(r.queued(id)).unwrap())
            .unwrap();
        recv(&rx)
    };
    let high = ConnOptions::default().high_water;
    // Over the high-water mark once, reading stops until the queue is down
    // to the low-water mark, which a peer that does not read never brings.
    let low = ConnOptions::default().low_water;
    wait_until("the queue to back up", || queued(&server) > low);
    let mut largest = 0;
    for _ in 0..100 {
        largest = largest.max(queued(&server));
        std::thread::sleep(Duration::from_millis(1));
    }
    s.shutdown(std::net::Shutdown::Both).unwrap();
    let sent = sender.join().unwrap();
    assert!(sent < 256 << 20, "the server never stopped reading");
    assert!(
        largest <= high + 64 * 1024,
        "{largest} bytes queued for a peer that does not read"
    );
}

// ----- docs/design.md: "Writes use MSG_NOSIGNAL: a peer that is gone shows up as
// BrokenPipe, never as a SIGPIPE that kills the process" ------------------------

/// Run in a child process of this test binary, with SIGPIPE at its default
/// action (Rust programs ignore it): a write without MSG_NOSIGNAL to a peer
/// that is gone would kill the child.
#[test]
fn docs_promise_a_vanished_peer_never_raises_sigpipe() {
    if std::env::var_os("SOCKLOOP_SIGPIPE_CHILD").is_some() {
        // SAFETY: restoring the default action of a signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        struct Talker(mpsc::Sender<String>);
        impl Protocol for Talker {
            fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
                data.clear();
                cx.write(b"answer");
                cx.set_timer(Duration::from_millis(50));
            }
            fn on_timer(&mut self, cx: &mut Context<'_>, _: sockloop::TimerId) {
                for _ in 0..64 {
                    cx.write(&[b'w'; 64 * 1024]);
                }
            }
            fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
                self.0.send(reason.to_string()).unwrap();
            }
        }
        let (tx, rx) = mpsc::channel();
        let server = Server::start(move |r| {
            let id = r.listen(&any_port(), move |_| Talker(tx.clone())).unwrap();
            vec![r.listener_addr(id).unwrap()]
        });
        let mut s = connect(server.inet(0));
        s.write_all(b"go").unwrap();
        drop(s); // gone before the server's big write
        let reason = recv(&rx);
        assert!(
            reason.contains("reset") || reason.contains("closed"),
            "{reason}"
        );
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "docs_promise_a_vanished_peer_never_raises_sigpipe",
            "--nocapture",
        ])
        .env("SOCKLOOP_SIGPIPE_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ----- framing: docs/asyncore.md "Reproduced from asynchat" and "Different
// from asynchat", FrameHandler::on_oversized's default ----------------------------

struct Frames {
    term: &'static [u8],
    count: Option<usize>,
    max: usize,
    log: mpsc::Sender<String>,
}

impl FrameHandler for Frames {
    fn terminator(&self) -> Terminator<'_> {
        match self.count {
            Some(n) => Terminator::Count(n),
            None => Terminator::Delimiter(self.term),
        }
    }
    fn max_frame(&self) -> usize {
        self.max
    }
    fn on_frame(&mut self, _: &mut Context<'_>, frame: Bytes) {
        // `body N`: the next frame is N bytes (asynchat's set_terminator(n)).
        if let Some(n) = frame.strip_prefix(b"body ") {
            self.count = Some(std::str::from_utf8(n).unwrap().parse().unwrap());
        }
        self.log
            .send(format!("frame {}", String::from_utf8_lossy(&frame)))
            .unwrap();
    }
    fn on_oversized(&mut self, cx: &mut Context<'_>, head: &[u8]) -> sockloop::Oversized {
        self.log.send(format!("oversized {}", head.len())).unwrap();
        // What the trait's default does.
        let _ = cx;
        sockloop::Oversized::Close
    }
    fn on_close(&mut self, _: &mut Context<'_>, reason: &CloseReason) {
        self.log.send(format!("close {reason}")).unwrap();
    }
}

fn framed(
    term: &'static [u8],
    count: Option<usize>,
    max: usize,
) -> (Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r
            .listen(&any_port(), move |_| {
                Framed::new(Frames {
                    term,
                    count,
                    max,
                    log: tx.clone(),
                })
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, rx)
}

fn send_bytewise(server: &Server, data: &[u8]) -> TcpStream {
    let mut s = connect(server.inet(0));
    s.set_nodelay(true).unwrap();
    for b in data {
        s.write_all(&[*b]).unwrap();
    }
    s
}

#[test]
fn docs_promise_a_delimiter_split_across_reads_is_found() {
    let (server, rx) = framed(b"\r\n", None, 1024);
    let _s = send_bytewise(&server, b"hello\r\nworld\r\n");
    assert_eq!(recv(&rx), "frame hello");
    assert_eq!(recv(&rx), "frame world");
}

#[test]
fn docs_promise_an_empty_line_gives_an_empty_frame() {
    let (server, rx) = framed(b"\n", None, 1024);
    let _s = send_bytewise(&server, b"a\n\nb\n");
    assert_eq!(recv(&rx), "frame a");
    assert_eq!(recv(&rx), "frame ");
    assert_eq!(recv(&rx), "frame b");
}

#[test]
fn docs_promise_a_terminator_change_applies_to_frames_already_buffered() {
    let (server, rx) = framed(b"\n", None, 1024);
    let mut s = connect(server.inet(0));
    // One write: the body is in the buffer when the header switches to Count.
    s.write_all(b"body 4\nab\ncnext\n").unwrap();
    assert_eq!(recv(&rx), "frame body 4");
    assert_eq!(recv(&rx), "frame ab\nc");
    // Count stays in force (it repeats; asynchat's fires once).
    assert_eq!(recv(&rx), "frame next");
}

#[test]
fn docs_promise_count_repeats_every_n_bytes() {
    let (server, rx) = framed(b"", Some(3), 1024);
    let _s = send_bytewise(&server, b"abcdefghi");
    for f in ["abc", "def", "ghi"] {
        assert_eq!(recv(&rx), format!("frame {f}"));
    }
}

#[test]
fn docs_promise_count_zero_and_an_empty_delimiter_close_with_protocol() {
    for (term, count) in [(&b""[..], None), (&b"\n"[..], Some(0))] {
        let (server, rx) = framed(term, count, 1024);
        let mut s = connect(server.inet(0));
        s.write_all(b"anything\n").unwrap();
        let e = recv(&rx);
        assert!(
            e.starts_with("close protocol error"),
            "{term:?} {count:?}: {e}"
        );
        assert!(read_to_eof(&mut s).unwrap().is_empty());
    }
}

#[test]
fn docs_promise_an_incomplete_last_frame_is_discarded_at_eof() {
    let (server, rx) = framed(b"\n", None, 1024);
    let mut s = connect(server.inet(0));
    s.write_all(b"whole\npart").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(recv(&rx), "frame whole");
    assert_eq!(recv(&rx), "close closed by peer");
    assert!(read_to_eof(&mut s).unwrap().is_empty());
}

#[test]
fn docs_promise_a_frame_over_max_frame_goes_to_on_oversized_and_closes_by_default() {
    let (server, rx) = framed(b"\n", None, 16);
    let mut s = connect(server.inet(0));
    s.write_all(&[b'x'; 100]).unwrap();
    assert_eq!(recv(&rx), "oversized 16");
    let e = recv(&rx);
    assert!(
        e.starts_with("close protocol error") && e.contains("16-byte"),
        "{e}"
    );
    assert!(read_to_eof(&mut s).unwrap().is_empty());
}

// ----- docs/offload.md: "The pool has OffloadOptions::workers threads
// (default 4) and a queue of queue jobs (default 64)", "grace (default 5 s)",
// "A job that panics gives then an error; the thread survives", "a thread
// costs a stack (2 MiB reserved ...)", "then runs ... if the connection is
// still open". Deeper: tests/offload.rs, tests/offload_lifecycle.rs. ----------

#[test]
fn docs_promise_offload_defaults() {
    let o = sockloop::OffloadOptions::default();
    assert_eq!(o.workers, 4);
    assert_eq!(o.queue, 64);
    assert_eq!(o.grace, Duration::from_secs(5));
}

/// Answers each line with what its job says: `panic` panics on the pool,
/// `stack` reports the size of the memory mapping its thread's stack is in,
/// anything else is echoed.
struct Jobs;

impl FrameHandler for Jobs {
    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        cx.offload(
            move || match &line[..] {
                b"panic" => panic!("job exploded"),
                b"stack" => {
                    let here = 0u8;
                    stack_mapping_size(&here as *const u8 as usize).to_string()
                }
                other => String::from_utf8_lossy(other).into_owned(),
            },
            |cx, result| match result {
                Ok(answer) => cx.write(format!("{answer}\n").as_bytes()),
                Err(e) => cx.write(format!("error: {e}\n").as_bytes()),
            },
        );
    }
}

/// The size of the readable and writable mapping that holds `addr`, from
/// /proc/self/maps.
fn stack_mapping_size(addr: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for l in maps.lines() {
        let range = l.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        if (a..b).contains(&addr) {
            return b - a;
        }
    }
    0
}

fn jobs_server() -> Server {
    Server::start(|r| {
        let id = r.listen(&any_port(), |_| Framed::new(Jobs)).unwrap();
        vec![r.listener_addr(id).unwrap()]
    })
}

#[test]
fn docs_promise_a_job_that_panics_gives_then_an_error_and_the_pool_goes_on() {
    let server = jobs_server();
    let mut s = std::io::BufReader::new(connect(server.inet(0)));
    // More panics than workers: every thread survives its panic.
    for _ in 0..6 {
        let answer = ask(&mut s, "panic");
        assert!(answer.starts_with("error: "), "{answer}");
    }
    assert_eq!(ask(&mut s, "still works"), "still works");
}

#[test]
fn docs_promise_an_offload_thread_reserves_a_2_mib_stack() {
    let server = jobs_server();
    let mut s = std::io::BufReader::new(connect(server.inet(0)));
    let size: usize = ask(&mut s, "stack").parse().unwrap();
    let mib = 1024 * 1024;
    // 2 MiB, give or take the guard page and thread-local storage.
    assert!(
        (2 * mib - 64 * 1024..=2 * mib + 64 * 1024).contains(&size),
        "an offload thread's stack mapping is {size} bytes"
    );
}

// ----- docs/socketserver.md: the attribute table's defaults (`max_threads`
// 256 in `Mode::threading()`, `max_children` 40, `daemon_threads` false,
// `block_on_close` true, `max_packet_size` 8192: "longer datagrams are cut");
// `serve_forever`: "no interval; the loop sleeps until ... a shutdown wakes
// it"; `active_requests()` "counts every running request". Deeper:
// tests/server.rs, tests/programs_server.rs, tests/reliability.rs. ----------

mod socketserver {
    use super::*;
    use sockloop::server::{Family, Mode, Request, ServerBuilder};

    #[test]
    fn docs_promise_socketserver_mode_defaults() {
        match Mode::threading() {
            Mode::Threading {
                daemon_threads,
                block_on_close,
                max_threads,
            } => {
                assert!(!daemon_threads && block_on_close);
                assert_eq!(max_threads, 256);
            }
            _ => panic!("threading() is not Threading"),
        }
        match Mode::forking() {
            Mode::Forking {
                max_children,
                block_on_close,
                ..
            } => {
                assert_eq!(max_children, 40);
                assert!(block_on_close);
            }
            _ => panic!("forking() is not Forking"),
        }
    }

    #[test]
    fn docs_promise_a_datagram_over_max_packet_size_is_cut_at_8192() {
        let server = ServerBuilder::new(Family::Udp)
            .bind("127.0.0.1:0".parse().unwrap())
            .spawn(|| {
                |request: &mut Request| {
                    let n = request.packet().unwrap_or_default().len();
                    request.wfile().write_all(n.to_string().as_bytes())
                }
            })
            .unwrap();
        let addr = server.server_address()[0].as_inet().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        client.send_to(&[7u8; 10_000], addr).unwrap();
        let mut answer = [0; 64];
        let n = client.recv(&mut answer).unwrap();
        assert_eq!(&answer[..n], b"8192");
        server.shutdown().unwrap();
    }

    #[test]
    fn docs_promise_shutdown_wakes_serve_forever_at_once() {
        let server = ServerBuilder::new(Family::Tcp)
            .bind("127.0.0.1:0".parse().unwrap())
            .mode(Mode::threading())
            .spawn(|| |_: &mut Request| Ok(()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50)); // idle in the loop
        let asked = Instant::now();
        server.shutdown().unwrap();
        let took = asked.elapsed();
        // socketserver polls every 0.5 s; here the stop wakes the loop.
        assert!(took < Duration::from_millis(250), "shutdown took {took:?}");
    }

    #[test]
    fn docs_promise_active_requests_counts_running_requests_daemon_threads_included() {
        for daemon_threads in [false, true] {
            let (release, go) = mpsc::channel::<()>();
            let go = std::sync::Arc::new(std::sync::Mutex::new(go));
            let mut server = ServerBuilder::new(Family::Tcp)
                .bind("127.0.0.1:0".parse().unwrap())
                .mode(Mode::Threading {
                    daemon_threads,
                    block_on_close: true,
                    max_threads: 8,
                })
                .timeout(Some(Duration::from_millis(5)))
                .build(move || {
                    let go = go.clone();
                    // Each handler waits for its release (one at a time
                    // takes the lock; the other waits for it: both run).
                    move |_: &mut Request| {
                        let _ = go.lock().unwrap().recv_timeout(LIMIT);
                        Ok(())
                    }
                })
                .unwrap();
            let addr = server.server_address()[0].as_inet().unwrap();
            let _clients: Vec<_> = (0..2).map(|_| connect(addr)).collect();
            // One request per call; each goes to a thread of its own.
            wait_until("both requests to run", || {
                server.handle_request().unwrap();
                server.active_requests() == 2
            });
            release.send(()).unwrap();
            release.send(()).unwrap();
            // The loop learns of finished requests as it turns.
            wait_until("both requests to end", || {
                server.handle_request().unwrap();
                server.active_requests() == 0
            });
        }
    }
}

// ----- docs/design.md "Memory follows the bytes held": "The memory a
// connection's write queue holds is at most twice the bytes queued in it plus
// about 8 KiB, whatever the pattern of write sizes"; `queued_memory(id)`
// reports it. Deeper (a counting allocator, idle connections at about 400
// bytes, no allocation per echoed message): tests/alloc.rs. ---------------------

#[test]
fn docs_promise_queue_memory_is_at_most_twice_the_bytes_queued_plus_8_kib() {
    struct Writer(mpsc::Sender<ConnId>);
    impl Protocol for Writer {
        fn on_open(&mut self, cx: &mut Context<'_>) {
            self.0.send(cx.id()).unwrap();
        }
        fn on_data(&mut self, _: &mut Context<'_>, data: &mut BytesMut) {
            data.clear();
        }
    }
    let (tx, ids) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = r.listen(&any_port(), move |_| Writer(tx.clone())).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let _peer = connect(server.inet(0)); // never reads
    let id = recv(&ids);
    let (tx, report) = mpsc::channel();
    server
        .handle
        .post(move |r| {
            let mut worst = (0usize, 0usize);
            // Writes of every size from 1 byte to 9 KiB, copied and zero-copy,
            // far past what the kernel takes.
            for i in 0..4000usize {
                let n = 1 + (i * 2654435761) % 9000;
                let data = vec![(i % 251) as u8; n];
                let ok = if i % 3 == 0 {
                    r.write_bytes(id, data).is_ok()
                } else {
                    r.write(id, &data).is_ok()
                };
                assert!(ok);
                let (held, queued) = (r.queued_memory(id), r.queued(id));
                if held > 2 * queued + 8 * 1024 {
                    worst = (held, queued);
                }
            }
            tx.send((worst, r.queued(id))).unwrap();
        })
        .unwrap();
    let ((held, queued), total) = recv(&report);
    assert!(total > 1 << 20, "only {total} bytes queued: the peer read?");
    assert_eq!(
        (held, queued),
        (0, 0),
        "{held} bytes held for {queued} queued: over 2× + 8 KiB"
    );
}

// ----- docs/asyncore.md: "The Addr picks the family: "0.0.0.0:50007",
// "[::1]:0", or a path containing / for a Unix socket" ---------------------------

#[test]
fn docs_promise_an_addr_picks_its_family_from_its_text() {
    let v4: sockloop::Addr = "0.0.0.0:50007".parse().unwrap();
    let v6: sockloop::Addr = "[::1]:0".parse().unwrap();
    let unix: sockloop::Addr = "/tmp/sockloop-promise.sock".parse().unwrap();
    assert!(v4.as_inet().is_some_and(|a| a.is_ipv4()));
    assert!(v6.as_inet().is_some_and(|a| a.is_ipv6()));
    assert!(unix.is_unix());
    assert_eq!(
        unix.as_path(),
        Some(std::path::Path::new("/tmp/sockloop-promise.sock"))
    );
}
