//! The classic echo client: sends each word as one message and prints each
//! reply. A client talks to one server in order, so plain blocking sockets
//! are the simple and right tool here; the reactor is for serving many.
//!
//! ```text
//! cargo run --example echo_client -- --port 50007 spam eggs
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod common;

/// Sends words to an echo server and prints the replies.
#[derive(Parser)]
#[command(name = "echo_client", version)]
struct Args {
    #[command(flatten)]
    server: common::Connect,
    /// Messages to send, one per word.
    #[arg(default_values_t = ["Hello".to_string(), "network".into(), "world".into()])]
    words: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::run(|| {
        let addr = args.server.addr()?;
        let mut stream = TcpStream::connect(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
        // A server that accepts but never answers must not hang us forever.
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reply = [0; 1024];
        for word in &args.words {
            stream.write_all(word.as_bytes())?;
            // One read per message, as the Python client's `recv(1024)`: a
            // short message comes back in one piece on a local network.
            let n = stream.read(&mut reply).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    io::Error::new(io::ErrorKind::TimedOut, "no reply within 10 seconds")
                }
                _ => e,
            })?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            println!("Client received: {}", String::from_utf8_lossy(&reply[..n]));
        }
        Ok(())
    })
}
