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
    /// Talk TLS, verifying the server's certificate against --ca.
    #[cfg(feature = "tls")]
    #[arg(long, requires = "ca")]
    tls: bool,
    /// PEM file of the certificate authorities to trust (with --tls); for a
    /// self-signed server, its own certificate.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH")]
    ca: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (default: --host).
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "HOST")]
    server_name: Option<String>,
    /// Messages to send, one per word.
    #[arg(default_values_t = ["Hello".to_string(), "network".into(), "world".into()])]
    words: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::run(|| {
        let addr = args.server.addr()?;
        let tcp = TcpStream::connect(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
        // A server that accepts but never answers must not hang us forever.
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut stream: Box<dyn ReadWrite> = Box::new(tcp);
        #[cfg(feature = "tls")]
        if args.tls {
            let ca = args.ca.as_ref().expect("clap requires --ca with --tls");
            let config = sockloop::tls::client_config(ca)?;
            let name = args.server_name.as_deref().unwrap_or(&args.server.host);
            let name = sockloop::tls::rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
            let session = sockloop::tls::rustls::ClientConnection::new(config, name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            stream = Box::new(sockloop::tls::rustls::StreamOwned::new(session, stream));
        }
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

/// A plain or TLS stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
