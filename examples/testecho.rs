//! Many echo clients at once, each on its own thread, checking every echo:
//! a quick way to see one single-threaded server keep several conversations
//! apart. Works against `select_echo` and `line_echo`, and with `--stamped`
//! against the servers that answer `Echo=><data> at <time>`.
//!
//! ```text
//! cargo run --example testecho -- --clients 20 --port 50007
//! cargo run --example testecho -- --stamped   # against fork_server, select_echo --stamp, ...
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::Parser;

mod common;

/// Runs echo clients in parallel and checks every reply.
#[derive(Parser)]
#[command(name = "testecho", version)]
struct Args {
    /// Number of clients running at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    clients: usize,
    /// Lines each client sends.
    #[arg(long, value_name = "N", default_value_t = 3)]
    messages: usize,
    /// Expect `Echo=><message> at <time>` replies, as the classic stamping
    /// servers send (fork_server, thread_server, class_server, select_echo
    /// --stamp); each message then goes without a newline and is answered
    /// per read, as the Python echo client's `send` and `recv(1024)`.
    #[arg(long)]
    stamped: bool,
    #[command(flatten)]
    server: common::Connect,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::run(|| {
        let addr = args.server.addr()?;
        let (messages, stamped) = (args.messages, args.stamped);
        let clients: Vec<_> = (1..=args.clients)
            .map(|n| thread::spawn(move || client(addr, n, messages, stamped)))
            .collect();
        let mut failed = 0;
        // Reported in client order, whatever order they finished in.
        for (n, client) in (1..).zip(clients) {
            match client.join().expect("a client thread does not panic") {
                Ok(()) => println!("client {n}: ok ({messages} messages)"),
                Err(e) => {
                    failed += 1;
                    println!("client {n}: FAILED: {e}");
                }
            }
        }
        if failed > 0 {
            let msg = format!("{failed} of {} clients failed", args.clients);
            return Err(io::Error::other(msg));
        }
        Ok(())
    })
}

/// Sends `messages` lines (or stamped messages) and checks each answer.
fn client(addr: SocketAddr, n: usize, messages: usize, stamped: bool) -> io::Result<()> {
    let timeout = Duration::from_secs(10);
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    for i in 1..=messages {
        if stamped {
            let message = format!("client {n} message {i}");
            writer.write_all(message.as_bytes())?;
            check_stamped(&message, &read_stamped(&mut reader, &message)?)?;
            continue;
        }
        let line = format!("client {n} message {i}\n");
        writer.write_all(line.as_bytes())?;
        // The echo may arrive in pieces: read up to the newline.
        let mut echo = String::new();
        reader.read_line(&mut echo)?;
        if echo != line {
            return Err(io::Error::other(format!(
                "sent {line:?}, got back {echo:?}"
            )));
        }
    }
    Ok(())
}

/// `Echo=>` + message + ` at ` + a 24-character ctime: the stamp has no
/// end marker, but its length is known, so a reply that arrives in pieces
/// is read whole, and the next message is sent only after it. A reply that
/// starts otherwise (a plain echo) is returned as soon as it differs, not
/// waited on for bytes that will never come.
fn read_stamped(reader: &mut impl Read, message: &str) -> io::Result<String> {
    let head = format!("Echo=>{message} at ");
    let mut reply = vec![0; head.len() + CTIME_LEN];
    let mut got = 0;
    while got < reply.len() {
        let n = reader.read(&mut reply[got..]).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("no whole stamped reply to {message:?}: {e}"),
            )
        })?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the server closed the connection before answering {message:?}"),
            ));
        }
        got += n;
        let same = got.min(head.len());
        if reply[..same] != head.as_bytes()[..same] {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply[..got]).into_owned())
}

/// `Mon Nov 23 16:58:22 2026`.
const CTIME_LEN: usize = 24;

/// Checks `Echo=><message> at <ctime>`: the message unchanged, and a time
/// laid out as `time.ctime()` lays it out.
fn check_stamped(message: &str, reply: &str) -> io::Result<()> {
    let bad = |why: &str| io::Error::other(format!("sent {message:?}, got back {reply:?}: {why}"));
    let stamp = reply
        .strip_prefix("Echo=>")
        .and_then(|rest| rest.strip_prefix(message))
        .and_then(|rest| rest.strip_prefix(" at "))
        .ok_or_else(|| bad("not Echo=><message> at <time>"))?;
    // `%a %b %e %H:%M:%S %Y`: the fields by position (the day is space-padded).
    let b = stamp.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| b[range].iter().all(|c| c.is_ascii_digit() || *c == b' ');
    let layout = b.len() == CTIME_LEN
        && b[..3].iter().all(u8::is_ascii_alphabetic)
        && b[4..7].iter().all(u8::is_ascii_alphabetic)
        && [b[3], b[7], b[10], b[19]] == [b' '; 4]
        && [b[13], b[16]] == [b':'; 2]
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && digits(17..19)
        && digits(20..24);
    if !layout {
        return Err(bad("the time is not laid out as time.ctime()"));
    }
    Ok(())
}
