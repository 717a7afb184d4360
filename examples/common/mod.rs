//! Plumbing shared by the example programs, so that each example shows only
//! its protocol. Included with `mod common;`; cargo does not build a
//! directory's `mod.rs` as an example of its own.

// Each example uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, Write};
use std::process::ExitCode;

use sockloop::Addr;

/// The program's name, for error messages. This file is compiled into each
/// example, so the crate name is the example's own.
pub const PROGRAM: &str = env!("CARGO_CRATE_NAME");

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init_logger() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// Runs a program's body and turns its result into the exit status: an
/// error is one line on stderr and exit code 1, never a panic and backtrace
/// (which is what returning `Err` from `main` would print in debug form).
pub fn run(body: impl FnOnce() -> io::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves `--host` with each `--port`. The error names the host.
pub fn addrs(host: &str, ports: &[u16]) -> io::Result<Vec<Addr>> {
    ports
        .iter()
        .map(|&port| Addr::resolve(host, port))
        .collect()
}

/// Tells whoever started us (a person, a test, a supervisor) where we
/// accept connections: one `listening on ADDR` line per socket, with the real
/// port when 0 was asked. Call it once everything is bound, so that a failure
/// on the last address does not follow a promise made for the first. Flushed
/// at once: stdout is block-buffered when it is a pipe.
pub fn announce(addrs: &[String]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    for addr in addrs {
        writeln!(out, "listening on {addr}")?;
    }
    out.flush()
}
