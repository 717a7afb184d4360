//! A real HAProxy (the distribution's package; `.ci/run` installs it) in
//! front of two `select_echo --proxy-protocol` processes with
//! `send-proxy-v2`, health-checked with `check-send-proxy` (PROXY v2 LOCAL
//! headers): clients connect through it, get their echoes, and the backends
//! log the clients' own addresses, not HAProxy's.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{Program, TempDir, TIMEOUT};

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free a moment ago (HAProxy binds it itself).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn haproxy_send_proxy_v2_in_front_of_two_select_echo() {
    // /usr/sbin is not on every user's PATH.
    let haproxy = ["haproxy", "/usr/sbin/haproxy"]
        .into_iter()
        .find(|p| Command::new(p).arg("-v").output().is_ok())
        .expect("haproxy is not installed: `apt-get install -y haproxy` (.ci/run does it)");
    let mut backends: Vec<Program> = (0..2)
        .map(|_| Program::start("select_echo", &["--port", "0", "--proxy-protocol"]))
        .collect();
    let addrs: Vec<String> = backends.iter_mut().map(|b| b.listening_one()).collect();
    let dir = TempDir::new("haproxy");
    let port = free_port();
    let config = format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    balance roundrobin\n\
         \x20   server s1 {} send-proxy-v2 check check-send-proxy inter 200ms\n\
         \x20   server s2 {} send-proxy-v2 check check-send-proxy inter 200ms\n",
        addrs[0], addrs[1]
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let _haproxy = Haproxy(
        Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let front = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + TIMEOUT;
    let mut clients = Vec::new();
    let mut i = 0;
    while clients.len() < 6 {
        // HAProxy takes a moment to bind, and to find both servers up.
        let attempt = TcpStream::connect(&front).and_then(|mut s| {
            s.set_read_timeout(Some(TIMEOUT))?;
            let msg = format!("hello {i}");
            s.write_all(msg.as_bytes())?;
            let mut got = vec![0; msg.len()];
            s.read_exact(&mut got)?;
            assert_eq!(got, msg.as_bytes());
            Ok(s)
        });
        i += 1;
        match attempt {
            Ok(s) => clients.push(s),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no echo through haproxy at {front}: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let ports: Vec<String> = clients
        .iter()
        .map(|c| c.local_addr().unwrap().to_string())
        .collect();
    drop(clients);
    drop(_haproxy);
    let logs: Vec<String> = backends
        .iter_mut()
        .map(|b| b.stop_with(libc::SIGTERM))
        .collect();
    for client in &ports {
        let seen = format!("connection from {client}");
        assert!(
            logs.iter().any(|log| log.contains(&seen)),
            "no backend saw {client} (its own address) through haproxy; logs:\n{}",
            logs.join("\n---\n")
        );
    }
    for (n, log) in logs.iter().enumerate() {
        assert!(
            log.contains("connection from 127.0.0.1:"),
            "backend {n} got no client:\n{log}"
        );
        assert!(
            !log.contains("PROXY header"),
            "backend {n} refused a header:\n{log}"
        );
    }
}
