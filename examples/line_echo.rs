//! An asynchat-style line server: the stream is cut into records at a
//! terminator, and the handler sees whole records however the bytes arrived.
//! Each record is echoed with its terminator; `QUIT` is answered `bye` and
//! the connection closes once that answer is sent.
//!
//! With the default `\n` terminator a line may end `\r\n`, as telnet sends
//! it: the `\r` is not part of the record (so `QUIT\r\n` quits), and the
//! echo ends the way the client's line did (`\r\n` for telnet, `\n` for nc).
//!
//! ```text
//! cargo run --example line_echo -- --terminator '\r\n'
//! telnet 127.0.0.1 50007
//! ```

use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use sockloop::{CloseReason, Context, FrameHandler, Framed, ListenOptions, Reactor, Terminator};

mod common;

/// Echoes each line (record) back, with its terminator.
#[derive(Parser)]
#[command(name = "line_echo", version)]
struct Args {
    #[command(flatten)]
    listen: common::ListenPorts,
    /// Record terminator; understands the escapes \r \n \t \\.
    #[arg(long, default_value = "\\n", value_parser = unescape)]
    terminator: Bytes,
    /// Longest record accepted, in bytes (at least 1); a client that sends
    /// more without a terminator is disconnected instead of buffered without end.
    #[arg(long, value_name = "N", default_value = "65536", value_parser = frame_size)]
    max_frame: usize,
    #[command(flatten)]
    shutdown: common::Shutdown,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logger();
    common::run(|| {
        let (terminator, max_frame) = (args.terminator.clone(), args.max_frame);
        common::serve_reactor(
            Reactor::new()?,
            &args.listen.addrs()?,
            &ListenOptions::default(),
            args.shutdown.grace,
            move |_peer| {
                Framed::new(LineEcho {
                    terminator: terminator.clone(),
                    max_frame,
                })
            },
        )
    })
}

struct LineEcho {
    /// `Bytes`: every connection and every echo shares one copy.
    terminator: Bytes,
    max_frame: usize,
}

impl LineEcho {
    /// The record without a telnet line's `\r` (in line mode, `\n`), and the
    /// ending to echo it with: the client's own.
    fn line_ending(&self, record: Bytes) -> (Bytes, Bytes) {
        if self.terminator == "\n" && record.ends_with(b"\r") {
            let text = record.slice(..record.len() - 1);
            (text, Bytes::from_static(b"\r\n"))
        } else {
            (record, self.terminator.clone())
        }
    }
}

impl FrameHandler for LineEcho {
    fn terminator(&self) -> Terminator<'_> {
        Terminator::Delimiter(&self.terminator)
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn on_open(&mut self, cx: &mut Context<'_>) {
        if let Ok(peer) = cx.peer_addr() {
            log::info!("{}: connection from {peer}", cx.id());
        }
    }

    /// A graceful stop closes between records (after the echoes queued).
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    fn on_frame(&mut self, cx: &mut Context<'_>, record: Bytes) {
        let (record, ending) = self.line_ending(record);
        if record == "QUIT" {
            cx.write(b"bye");
            cx.write_bytes(ending);
            // Closes after `bye` has been sent; records after QUIT are ignored.
            cx.close();
        } else {
            cx.write_bytes(record);
            cx.write_bytes(ending);
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        log::info!("{}: {reason}", cx.id());
    }
}

/// `--max-frame`: a size of 0 would refuse every record but the empty one,
/// which is a mistake on the command line, not a way to serve.
fn frame_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>().map_err(|e| e.to_string())? {
        0 => Err("must be at least 1 byte".into()),
        n => Ok(n),
    }
}

/// The terminator as typed on a command line: a shell passes `'\r\n'` as
/// four characters, not two bytes.
fn unescape(text: &str) -> Result<Bytes, String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => match chars.next() {
                Some('r') => '\r',
                Some('n') => '\n',
                Some('t') => '\t',
                Some('\\') => '\\',
                Some(other) => return Err(format!("unknown escape \\{other}")),
                None => return Err("a lone \\ at the end".into()),
            },
            c => c,
        };
        bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
    if bytes.is_empty() {
        return Err("the terminator cannot be empty".into());
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn unescapes_the_usual_terminators() {
        assert_eq!(unescape("\\r\\n").unwrap(), "\r\n");
        assert_eq!(unescape("\\t|\\\\").unwrap(), "\t|\\");
        assert_eq!(unescape("END").unwrap(), "END");
        assert!(unescape("\\x").is_err());
        assert!(unescape("").is_err());
    }
}
