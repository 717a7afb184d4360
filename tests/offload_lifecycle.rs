//! Offloaded work follows its connection (issue 9, cases 5 and 6): a
//! closed connection's queued work never runs, a paused connection still
//! notices its peer's reset, a half-close gets every answer; and a pause
//! holds back the frames already read (Twisted's `test_pausing`), which come
//! when reading resumes, without waiting for the peer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use common::*;
use sockloop::{
    Context, FrameHandler, Framed, OffloadOptions, ProcessPool, Protocol, Reactor, TimerId,
};

/// Blocking work per job.
const JOB: Duration = Duration::from_millis(200);
/// Blocking work of a thread job whose line starts with `long`.
const LONG_JOB: Duration = Duration::from_millis(1000);

/// Every line but `ping` is a job of `JOB` whose answer is the line; `ping`
/// is answered on the loop. Counts the jobs that started.
struct Jobs {
    processes: Option<ProcessPool>,
    started: Arc<AtomicUsize>,
}

impl FrameHandler for Jobs {
    fn on_frame(&mut self, cx: &mut Context<'_>, line: Bytes) {
        if &line[..] == b"ping" {
            return cx.write(b"pong\n");
        }
        let answer = |cx: &mut Context<'_>, result: std::io::Result<Vec<u8>>| match result {
            Ok(mut reply) => {
                reply.push(b'\n');
                cx.write_bytes(reply);
            }
            Err(e) => cx.write(format!("error: {e}\n").as_bytes()),
        };
        match &self.processes {
            Some(pool) => pool.submit(cx, line, answer),
            None => {
                let started = self.started.clone();
                cx.offload(
                    move || {
                        started.fetch_add(1, Ordering::SeqCst);
                        let long = line.starts_with(b"long");
                        std::thread::sleep(if long { LONG_JOB } else { JOB });
                        line.to_vec()
                    },
                    answer,
                )
            }
        }
    }
}

/// A worker process's job: `JOB` of work, then the request back. A request
/// `NAME DIR` first leaves a mark `DIR/NAME`: the count of jobs started,
/// which a worker process cannot add to the test's counter.
fn slow(request: &[u8]) -> Vec<u8> {
    if let Some((name, dir)) = std::str::from_utf8(request)
        .ok()
        .and_then(|r| r.split_once(' '))
    {
        std::fs::write(std::path::Path::new(dir).join(name), b"").unwrap();
    }
    std::thread::sleep(JOB);
    request.to_vec()
}

/// A server of [`Jobs`] with `workers` threads or worker processes; the
/// counter of jobs started (threads only: a worker process cannot reach it).
fn jobs_server(processes: bool, workers: usize) -> (Server, Arc<AtomicUsize>) {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let make = move || match processes {
        true => Reactor::new(),
        false => Reactor::with_offload({
            let mut options = OffloadOptions::default();
            options.workers = workers;
            options
        }),
    };
    let server = Server::start_with(make, move |r| {
        let pool = if processes {
            Some(ProcessPool::start(r, workers, slow).unwrap())
        } else {
            None
        };
        let id = r
            .listen(&any_port(), move |_| {
                Framed::new(Jobs {
                    processes: pool.clone(),
                    started: counter.clone(),
                })
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    (server, started)
}

/// 200 job lines in one write, each `jobN DIR`.
fn many_lines(dir: &std::path::Path) -> Vec<u8> {
    (0..200)
        .flat_map(|i| format!("job{i:05} {}\n", dir.display()).into_bytes())
        .collect()
}

/// Closes with a reset (SO_LINGER 0), as a crashed client does.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// A client fills the pool, is paused, and resets: its queued jobs go at
/// once, so the next client waits for no more than the job running.
///
/// Judged by the jobs that started, not by time (an 800 ms bound failed at
/// 800.7 ms on a loaded machine): when the next client's answer comes, the
/// running job and the next client's have started, and perhaps one more
/// that was taken in the instant before the reset was noticed. Before the
/// fix, the 65 jobs the thread pool had taken ran first (13 s: the read
/// times out at `LIMIT`), and the worker process's 16 queued requests.
fn departed_client_leaves_no_work(processes: bool) {
    let (server, started) = jobs_server(processes, 1);
    let addr = server.inet(0);
    let marks = temp_path("marks");
    std::fs::create_dir(&marks).unwrap();
    // One write: the `pong` says the server has read the lines too (its
    // answer is written while the buffer is being framed), and the first
    // job has gone to the worker.
    let mut first = BufReader::new(connect(addr));
    let mut lines = b"ping\n".to_vec();
    lines.extend_from_slice(&many_lines(&marks));
    first.get_mut().write_all(&lines).unwrap();
    assert_eq!(line(&mut first), "pong");
    reset(first.into_inner());

    let mut next = BufReader::new(connect(addr));
    let asked = Instant::now();
    let job = format!("next {}", marks.display());
    next.get_mut()
        .write_all(format!("{job}\n").as_bytes())
        .unwrap();
    assert_eq!(line(&mut next), job);
    let took = asked.elapsed();
    let n = if processes {
        std::fs::read_dir(&marks).unwrap().count()
    } else {
        started.load(Ordering::SeqCst)
    };
    std::fs::remove_dir_all(&marks).unwrap();
    assert!(
        n <= 3,
        "processes={processes}: {n} jobs started (the next client waited {took:?}): \
         the departed client's queue ran"
    );
}

#[test]
fn a_departed_clients_thread_jobs_never_start() {
    departed_client_leaves_no_work(false);
}

#[test]
fn a_departed_clients_process_requests_never_reach_a_worker() {
    departed_client_leaves_no_work(true);
}

/// `ping`, two jobs, then a half-close: all three answers come, then the
/// server's close.
fn half_close_gets_every_answer(processes: bool) {
    let (server, _) = jobs_server(processes, 2);
    let mut client = BufReader::new(connect(server.inet(0)));
    client.get_mut().write_all(b"ping\njob1\njob2\n").unwrap();
    client.get_mut().shutdown(Shutdown::Write).unwrap();
    let mut answers = Vec::new();
    client.read_to_end(&mut answers).unwrap();
    let mut answers: Vec<&str> = std::str::from_utf8(&answers).unwrap().lines().collect();
    answers[1..].sort_unstable(); // the two jobs run in parallel
    assert_eq!(answers, ["pong", "job1", "job2"], "processes={processes}");
}

#[test]
fn a_half_close_gets_every_thread_answer() {
    half_close_gets_every_answer(false);
}

#[test]
fn a_half_close_gets_every_process_answer() {
    half_close_gets_every_answer(true);
}

/// Many clients fill the pool and reset while paused: every one of their
/// connections closes at once, though the pool is busy for seconds more.
///
/// "At once" is counted in jobs: the pool holds two, and a paused
/// connection that noticed its reset only when resumed would first hand
/// the pool its job, one every `JOB` (about 20 started by the last close).
/// Time is judged against that scale too: well before the 4 s of work.
#[test]
fn paused_connections_notice_a_reset_at_once() {
    let (closed_tx, closed) = mpsc::channel();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let opts = {
        let mut options = OffloadOptions::default();
        options.workers = 1;
        options.queue = 1;
        options
    };
    let server = Server::start_with(
        move || Reactor::with_offload(opts),
        move |r| {
            struct Tell(Jobs, mpsc::Sender<String>);
            impl Protocol for Tell {
                fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
                    // Every line is a job, whatever the pool says: the pool's
                    // pause alone must hold the connection.
                    while let Some(at) = data.iter().position(|&b| b == b'\n') {
                        let line = data.split_to(at).freeze();
                        data.advance(1);
                        self.0.on_frame(cx, line);
                    }
                }
                fn on_close(&mut self, _: &mut Context<'_>, reason: &sockloop::CloseReason) {
                    let _ = self.1.send(reason.to_string());
                }
            }
            let id = r
                .listen(&any_port(), move |_| {
                    Tell(
                        Jobs {
                            processes: None,
                            started: counter.clone(),
                        },
                        closed_tx.clone(),
                    )
                })
                .unwrap();
            vec![r.listener_addr(id).unwrap()]
        },
    );
    let addr = server.inet(0);
    const CLIENTS: usize = 20;
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            let mut c = BufReader::new(connect(addr));
            // The `pong` says the job line has been read too.
            c.get_mut()
                .write_all(format!("ping\nclient{i}\n").as_bytes())
                .unwrap();
            assert_eq!(line(&mut c), "pong");
            c.into_inner()
        })
        .collect();
    // All but the first two are paused (the pool holds two jobs), with
    // 20 × 200 ms of work ahead.
    let reset_at = Instant::now();
    for c in clients {
        reset(c);
    }
    for n in 0..CLIENTS {
        let reason = closed
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("only {n} of {CLIENTS} connections closed"));
        assert!(
            reason.contains("reset"),
            "closed for another reason: {reason}"
        );
    }
    let took = reset_at.elapsed();
    let jobs = started.load(Ordering::SeqCst);
    assert!(
        jobs <= 4,
        "{jobs} jobs started before {CLIENTS} resets were noticed ({took:?})"
    );
    assert!(
        took < JOB * CLIENTS as u32 / 2,
        "{CLIENTS} resets took {took:?} to be noticed"
    );
}

/// Frames and raw bytes after a pause wait for the resume, then come
/// without the peer sending anything more.
struct PauseEach {
    seen: mpsc::Sender<String>,
    resume: Option<TimerId>,
}

impl PauseEach {
    fn pause(&mut self, cx: &mut Context<'_>, what: &str) {
        self.seen.send(what.to_string()).unwrap();
        cx.pause_reading();
        self.resume = Some(cx.set_timer(Duration::from_millis(20)));
    }

    fn resume(&mut self, cx: &mut Context<'_>) {
        self.seen.send("resumed".into()).unwrap();
        cx.resume_reading();
    }
}

/// A raw protocol that takes one line per pause (issue 15, item 10).
impl Protocol for PauseEach {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        if let Some(at) = memchr(data) {
            let line = data.split_to(at + 2);
            self.pause(cx, std::str::from_utf8(&line[..at]).unwrap());
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
        self.resume(cx);
    }
}

fn memchr(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
}

/// A frame handler that pauses after every frame (Twisted's test_pausing).
struct FramePause(PauseEach);

impl FrameHandler for FramePause {
    fn terminator(&self) -> sockloop::Terminator<'_> {
        sockloop::Terminator::Delimiter(b"\r\n")
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, frame: Bytes) {
        self.0.pause(cx, std::str::from_utf8(&frame).unwrap());
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
        self.0.resume(cx);
    }
}

fn pauses_hold_back_what_is_buffered(framed: bool) {
    let (seen_tx, seen) = mpsc::channel();
    let server = Server::start(move |r| {
        let id = if framed {
            r.listen(&any_port(), move |_| {
                Framed::new(FramePause(PauseEach {
                    seen: seen_tx.clone(),
                    resume: None,
                }))
            })
        } else {
            r.listen(&any_port(), move |_| PauseEach {
                seen: seen_tx.clone(),
                resume: None,
            })
        }
        .unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut client = connect(server.inet(0));
    // One segment; the client then waits, as a request/response peer does.
    client.write_all(b"hello\r\nworld\r\n").unwrap();
    let events: Vec<String> = (0..4)
        .map(|n| {
            seen.recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("framed={framed}: event {n} never came"))
        })
        .collect();
    assert_eq!(
        events,
        ["hello", "resumed", "world", "resumed"],
        "framed={framed}"
    );
}

#[test]
fn a_raw_protocol_gets_buffered_bytes_when_it_resumes() {
    pauses_hold_back_what_is_buffered(false);
}

#[test]
fn framed_stops_at_a_pause_and_goes_on_at_the_resume() {
    pauses_hold_back_what_is_buffered(true);
}

/// What "`ping` is answered at once" means (issue 15 item 6, docs/offload.md):
/// from another connection, at once however full the pool; from the
/// connection whose own lines fill it, once the lines ahead of it have been
/// taken by the pool, i.e. after `lines - (workers + queue)` jobs finished.
#[test]
fn ping_waits_only_behind_its_own_jobs() {
    const LINES: usize = 8;
    let (workers, queue) = (1, 2);
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let opts = {
        let mut options = OffloadOptions::default();
        options.workers = workers;
        options.queue = queue;
        options
    };
    let server = Server::start_with(
        move || Reactor::with_offload(opts),
        move |r| {
            let id = r
                .listen(&any_port(), move |_| {
                    Framed::new(Jobs {
                        processes: None,
                        started: counter.clone(),
                    })
                })
                .unwrap();
            vec![r.listener_addr(id).unwrap()]
        },
    );
    let addr = server.inet(0);
    let mut busy = BufReader::new(connect(addr));
    // The first job is long: it runs while the other client pings.
    let names: Vec<String> = (0..LINES)
        .map(|i| format!("{}{i}", if i == 0 { "long" } else { "job" }))
        .collect();
    let mut lines: Vec<u8> = names
        .iter()
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    lines.extend_from_slice(b"ping\n");
    busy.get_mut().write_all(&lines).unwrap();
    wait_until("the first job to start", || {
        started.load(Ordering::SeqCst) == 1
    });

    // Another client is answered at once, though the pool is full: before
    // the job running ends. Counted, not timed (a 200 ms bound is what a
    // loaded machine's scheduler can take): the second job starts only
    // when the first, of `LONG_JOB`, is over. A loop that waited for room
    // in the pool would answer after it.
    let mut other = BufReader::new(connect(addr));
    let asked = Instant::now();
    other.get_mut().write_all(b"ping\n").unwrap();
    assert_eq!(line(&mut other), "pong");
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "another client's ping waited for a job to end ({:?})",
        asked.elapsed()
    );

    // The busy client's own ping comes after the jobs the pool could not
    // take when it was sent; every answer comes, in order.
    let answers: Vec<String> = (0..=LINES).map(|_| line(&mut busy)).collect();
    let pong_at = answers.iter().position(|a| a == "pong").expect("a pong");
    assert_eq!(
        pong_at,
        LINES - (workers + queue),
        "pong after {pong_at} answers: {answers:?}"
    );
    let jobs: Vec<&String> = answers.iter().filter(|a| *a != "pong").collect();
    assert_eq!(jobs, names.iter().collect::<Vec<_>>(), "answers in order");
}

/// The result of a job that was running when its client left goes nowhere:
/// not to the client that comes next (which may get the same slot, and its
/// job the same place in the pool's books).
#[test]
fn a_departed_clients_running_result_reaches_no_one() {
    let (server, started) = jobs_server(false, 1);
    let addr = server.inet(0);
    let mut first = connect(addr);
    first.write_all(b"first\n").unwrap();
    wait_until("the first job to start", || {
        started.load(Ordering::SeqCst) == 1
    });
    reset(first);
    // Noticed at once (reading, not paused): its slot is free for the next.
    let mut next = BufReader::new(connect(addr));
    next.get_mut().write_all(b"next\n").unwrap();
    assert_eq!(line(&mut next), "next");
}
