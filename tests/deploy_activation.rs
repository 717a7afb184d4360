//! Socket activation, as processes: a launcher that does what systemd does
//! (binds, places the sockets at fd 3 on, sets LISTEN_FDS, LISTEN_PID and
//! LISTEN_FDNAMES, then executes the server), and systemd's own
//! `systemd-socket-activate` when it is installed. The example servers serve
//! the sockets they are given, announce each, and bind none of their own;
//! a malformed LISTEN_FDS or a descriptor that is not a socket is a clear
//! error.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::process::{example, Program, TempDir, TIMEOUT};

/// Runs example `name` the way systemd starts a socket-activated service:
/// `fds` at 3, 4, …, `LISTEN_FDS`, `LISTEN_FDNAMES` if given, and
/// `LISTEN_PID` set to the server's own pid (the shell's `$$`, which `exec`
/// keeps).
fn launch(name: &'static str, args: &[&str], fds: &[RawFd], env: &[(&str, &str)]) -> Program {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(example(name))
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string());
    for (k, v) in env {
        command.env(k, v);
    }
    let fds = fds.to_vec();
    // SAFETY: only dup2/fcntl between fork and exec (async-signal-safe),
    // on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            // Out of the way first, so that placing one cannot overwrite another.
            let mut high = [0; 16];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD, 100);
            }
            for (i, &fd) in high[..fds.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    Program::spawn_command(name, command, false)
}

fn echo_tcp(addr: &str, msg: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn select_echo_serves_every_kind_it_is_given_and_binds_nothing() {
    let dir = TempDir::new("act-kinds");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ustream = UnixListener::bind(dir.join("s")).unwrap();
    let udgram = UnixDatagram::bind(dir.join("d")).unwrap();
    let fds = [
        tcp.as_raw_fd(),
        udp.as_raw_fd(),
        ustream.as_raw_fd(),
        udgram.as_raw_fd(),
    ];
    // --port 50007 would be its own address: it must not be bound.
    let mut server = launch(
        "select_echo",
        &["--port", "50007", "--udp", "50009"],
        &fds,
        &[("LISTEN_FDNAMES", "web:dns:local:log")],
    );
    let mut addrs = server.listening(4);
    addrs.sort();
    let tcp_addr = tcp.local_addr().unwrap().to_string();
    let mut expect = vec![
        tcp_addr.clone(),
        format!("udp:{}", udp.local_addr().unwrap()),
        format!("unix:{}", dir.join("s").display()),
        format!("udp:unix:{}", dir.join("d").display()),
    ];
    expect.sort();
    assert_eq!(
        addrs, expect,
        "one line per inherited socket, and only those"
    );
    drop((tcp, udp, ustream, udgram)); // the server holds its own copies

    echo_tcp(&tcp_addr, b"over tcp");
    let mut u = UnixStream::connect(dir.join("s")).unwrap();
    u.set_read_timeout(Some(TIMEOUT)).unwrap();
    u.write_all(b"over unix").unwrap();
    let mut got = [0; 9];
    u.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over unix");
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.send_to(
        b"over udp",
        addrs.iter().find(|a| a.starts_with("udp:1")).unwrap()[4..].to_string(),
    )
    .unwrap();
    let mut buf = [0; 64];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over udp");
    let d = UnixDatagram::bind(dir.join("client")).unwrap();
    d.set_read_timeout(Some(TIMEOUT)).unwrap();
    d.send_to(b"over unix dgram", dir.join("d")).unwrap();
    let n = d.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over unix dgram");
    // Closed, so that the graceful stop need not wait out its grace period.
    drop(u);

    let stderr = server.stop_with(libc::SIGTERM);
    assert!(stderr.contains("4 inherited sockets"), "{stderr}");
    // The socket files were the launcher's: the server leaves them.
    assert!(dir.join("s").exists() && dir.join("d").exists());
}

#[test]
fn reactor_and_socketserver_examples_use_inherited_sockets() {
    // Reactor examples (select_echo's own code, the others through the
    // shared helper), and socketserver ones
    // (sync, threading and forking modes) through `ServerBuilder::inherit`.
    for (name, args, line) in [
        ("line_echo", &[][..], "hello\n"),
        // Every reactor accepts on the one inherited socket.
        ("select_echo", &["--threads", "2"][..], "hello\n"),
        ("chat_server", &[][..], ""),
        ("echo_server", &["--mode", "threading"][..], "hello\n"),
        ("echo_server", &["--mode", "forking"][..], "hello\n"),
        ("upper_server", &[][..], "hello\n"),
    ] {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let want = tcp.local_addr().unwrap().to_string();
        let mut server = launch(name, args, &[tcp.as_raw_fd()], &[]);
        assert_eq!(server.listening_one(), want, "{name}");
        drop(tcp);
        if !line.is_empty() {
            let mut s = TcpStream::connect(&want).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.write_all(line.as_bytes()).unwrap();
            let mut reply = String::new();
            BufReader::new(&s).read_line(&mut reply).unwrap();
            assert_eq!(reply.to_lowercase(), line, "{name} {args:?}");
        } else {
            TcpStream::connect(&want).unwrap();
        }
        server.stop_with(libc::SIGTERM);
    }
}

#[test]
fn wrong_kind_for_the_server_is_an_error() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut server = launch("echo_server", &[], &[udp.as_raw_fd()], &[]);
    let status = server.wait();
    let stderr = server.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a Udp socket, not one for a Tcp server"),
        "{stderr}"
    );
}

#[test]
fn malformed_variables_and_non_sockets_are_clear_errors() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    type Case<'a> = (Vec<RawFd>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![tcp.as_raw_fd()],
            vec![("LISTEN_FDS", "one")],
            "LISTEN_FDS=\"one\" is not a number",
        ),
        (
            vec![tcp.as_raw_fd()],
            vec![("LISTEN_FDS", "2")],
            "inherited fd 4 (LISTEN_FDS): Bad file descriptor",
        ),
        (
            vec![file.as_raw_fd()],
            vec![],
            "inherited fd 3 is not a socket",
        ),
        (vec![unbound.as_raw_fd()], vec![], "is not listening"),
    ];
    for name in ["select_echo", "line_echo", "echo_server"] {
        for (fds, env, mentions) in &cases {
            let mut server = launch(name, &[], fds, env);
            let status = server.wait();
            let stdout = server.stdout();
            let stderr = server.stderr();
            assert_eq!(status.code(), Some(1), "{name} {env:?}: {stderr}");
            assert!(stderr.contains(mentions), "{name} {env:?}: {stderr}");
            assert!(stdout.is_empty(), "{name} announced {stdout:?}");
        }
    }
}

#[test]
fn not_for_us_is_ignored_and_unset() {
    // LISTEN_PID names another process: the server binds its own address,
    // and the variables do not reach what it starts.
    let mut command = Command::new(example("select_echo"));
    command
        .args(["--port", "0"])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1");
    let mut server = Program::spawn_command("select_echo", command, false);
    let addr = server.listening_one();
    echo_tcp(&addr, b"own socket");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn systemd_socket_activate_starts_select_echo() {
    let Ok(_) = Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
    else {
        eprintln!("systemd-socket-activate is not installed: covered by the launcher above only");
        return;
    };
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap().to_string();
    drop(probe);
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["-l", &addr, "--fdname=echo"])
        .arg(example("select_echo"))
        .args(["--port", "50007"]);
    let mut server = Program::spawn_command("select_echo", command, false);
    // It starts the server on the first connection, which then waits in the backlog.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut s = loop {
        match TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("systemd-socket-activate did not listen on {addr}: {e}"),
        }
    };
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"activated").unwrap();
    let mut got = [0; 9];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"activated");
    assert_eq!(server.listening_one(), addr);
    drop(s);
    server.stop_with(libc::SIGTERM);
}

#[test]
fn forked_children_do_not_keep_the_inherited_listener() {
    // Red team F10: a fork server (forking server, process pool) and what it
    // forks kept the inherited socket open, so the port stayed bound after
    // the server stopped accepting. A self-bound listener is closed there;
    // an inherited one must be too. Fails on the old code.
    for (name, args) in [
        (
            "offload_server",
            &["--pool", "processes", "--workers", "2", "--delay", "0"][..],
        ),
        ("echo_server", &["--mode", "forking"][..]),
    ] {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let want = tcp.local_addr().unwrap().to_string();
        let inode = std::fs::read_link(format!("/proc/self/fd/{}", tcp.as_raw_fd()))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut server = launch(name, args, &[tcp.as_raw_fd()], &[]);
        assert_eq!(server.listening_one(), want, "{name}");
        drop(tcp);
        // A round trip: the pool's workers (or the fork server) are up.
        let mut s = TcpStream::connect(&want).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).unwrap();
        assert!(reply.to_lowercase().contains("hello"), "{name}: {reply:?}");
        let forked: Vec<u32> = common::process::children_of(server.pid())
            .into_iter()
            .chain(common::process::grandchildren_of(server.pid()))
            .collect();
        assert!(!forked.is_empty(), "{name}: no forked process found");
        let holders: Vec<u32> = forked
            .iter()
            .copied()
            .filter(|&pid| common::process::socket_inodes(pid).contains(&inode))
            .collect();
        assert!(
            holders.is_empty(),
            "{name}: forked processes {holders:?} (of {forked:?}) hold the inherited listener"
        );
        assert!(common::process::socket_inodes(server.pid()).contains(&inode));
        server.stop_with(libc::SIGTERM);
    }
}
