//! Running out of file descriptors while accepting (tokio #3529): the server,
//! in a child process with `RLIMIT_NOFILE` lowered to 64, must keep serving
//! the clients it has, not spin on `accept`, and take new clients once
//! descriptors are free again.
//!
//! The test binary runs itself as the child (selected by an environment
//! variable), so the lowered limit touches nothing else.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use sockloop::{Context, Protocol, Reactor};

const CHILD: &str = "SOCKLOOP_EMFILE_CHILD";
const FD_LIMIT: u64 = 64;

struct Echo;
impl Protocol for Echo {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_bytes(data.split().freeze());
    }
}

fn serve_with_few_descriptors() {
    let limit = libc::rlimit {
        rlim_cur: FD_LIMIT,
        rlim_max: FD_LIMIT,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let mut reactor = Reactor::new().unwrap();
    let id = reactor.listen(&any_port(), |_| Echo).unwrap();
    println!("listening on {}", reactor.listener_addr(id).unwrap());
    std::io::stdout().flush().unwrap();
    reactor.stop_on_signals(std::time::Duration::ZERO).unwrap();
    reactor.run().unwrap();
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn echo_once(s: &mut TcpStream, msg: &[u8]) -> bool {
    s.write_all(msg).is_ok() && {
        let mut buf = vec![0; msg.len()];
        std::io::Read::read_exact(s, &mut buf).is_ok() && buf == msg
    }
}

#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    if std::env::var_os(CHILD).is_some() {
        return serve_with_few_descriptors();
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "out_of_descriptors_backs_off_and_recovers",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("child output").unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.parse().unwrap();
        }
    };
    // Far more clients than the server has descriptors for: the kernel
    // completes their handshakes from the backlog either way.
    let mut clients: Vec<TcpStream> = (0..150).map(|_| connect(addr)).collect();
    for c in clients.iter_mut() {
        c.write_all(b"x").unwrap();
    }
    // The first ones in the backlog are accepted and answered.
    for c in clients.iter_mut().take(20) {
        assert_eq!(read_n(c, 1), b"x", "an early client is served");
    }
    // Starved: it must not spin on accept. Watch its CPU for half a second.
    let before = cpu_seconds(child.0.id());
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_seconds(child.0.id()) - before;
    assert!(
        used < 0.1,
        "starved server used {used:.2} s of CPU in 0.5 s: accept spin"
    );
    // By now every client it could take has its echo; the rest wait.
    let answered = |c: &TcpStream| {
        c.set_nonblocking(true).unwrap();
        let ready = matches!(c.peek(&mut [0]), Ok(1));
        c.set_nonblocking(false).unwrap();
        ready
    };
    let served = 20 + clients[20..].iter().filter(|c| answered(c)).count();
    for c in clients[20..served].iter_mut() {
        assert_eq!(read_n(c, 1), b"x");
    }
    assert!(
        served > 30 && served < 64,
        "served {served} of 150 with {FD_LIMIT} descriptors"
    );
    // The first clients are still served.
    for c in clients.iter_mut().take(5) {
        assert!(echo_once(c, b"still there"));
    }
    // Free descriptors: every waiting client is taken after the back-off.
    let mut late = clients.pop().unwrap();
    clients.clear();
    assert_eq!(
        read_n(&mut late, 1),
        b"x",
        "a waiting client was never accepted"
    );
    assert!(echo_once(&mut late, b"finally"));
    let mut fresh = connect(addr);
    assert!(echo_once(&mut fresh, b"new"));
}
