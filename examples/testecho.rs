//! Many echo clients at once, each on its own thread, checking every echo:
//! a quick way to see one single-threaded server keep several conversations
//! apart. Works against `select_echo` and `line_echo`.
//!
//! ```text
//! cargo run --example testecho -- --clients 20 --port 50007
//! ```

use std::io::{self, BufRead, BufReader, Write};
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
    #[command(flatten)]
    server: common::Connect,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::run(|| {
        let addr = args.server.addr()?;
        let messages = args.messages;
        let clients: Vec<_> = (1..=args.clients)
            .map(|n| thread::spawn(move || client(addr, n, messages)))
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

/// Sends `messages` lines and checks that each comes back unchanged.
fn client(addr: SocketAddr, n: usize, messages: usize) -> io::Result<()> {
    let timeout = Duration::from_secs(10);
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    for i in 1..=messages {
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
