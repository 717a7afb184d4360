//! Instructions per echoed message, counted by valgrind's callgrind: a
//! figure free of the noise of timings on a shared machine.
//!
//! The server runs under `valgrind --tool=callgrind` twice, each time with the
//! pingpong load for a different length of time; the instructions it executed
//! in user space (callgrind's `Ir` total) and the messages echoed are counted
//! for each run, and the difference of the two runs, divided, cancels what
//! both have in common (start-up, accepting the connections, exit).

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::loadgen::{LoadGen, Spec};
use crate::servers::{Env, Running, Scenario, Server};

/// The servers measured this way (those of the instructions-per-message figure).
pub const SERVERS: [&str; 3] = ["select_echo", "tokio_ct", "mio_raw"];
/// The two load lengths whose difference is taken.
const SHORT: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(3);

/// Why callgrind cannot be used here, if it cannot.
pub fn unavailable() -> Option<String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`valgrind --version` failed ({})", out.status)),
        Err(e) => Some(format!("valgrind is not installed ({e})")),
    }
}

/// User-space instructions per echoed message of `server` under `sc`'s load
/// (pingpong): (I_long − I_short) / (M_long − M_short).
pub fn per_message(server: &Server, sc: &Scenario, env: &Env) -> io::Result<f64> {
    let short = one_run(server, sc, env, SHORT)?;
    let long = one_run(server, sc, env, LONG)?;
    if long.1 <= short.1 {
        return Err(io::Error::other(format!(
            "callgrind: the longer run echoed no more messages ({} vs {})",
            long.1, short.1
        )));
    }
    Ok((long.0 as f64 - short.0 as f64) / (long.1 - short.1) as f64)
}

/// One run under callgrind for `length` of load: (instructions, messages).
fn one_run(server: &Server, sc: &Scenario, env: &Env, length: Duration) -> io::Result<(u64, u64)> {
    let out = env.logs.join(format!(
        "callgrind-{}-{}ms.out",
        server.key,
        length.as_millis()
    ));
    let _ = std::fs::remove_file(&out);
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let mut running = Running::start_wrapped(server, sc, env, &wrapper)?;
    let spec = Spec {
        addrs: running.addrs.clone(),
        conns: sc.conns,
        msg: sc.msg,
        depth: sc.depth,
        rate: None,
        window: 512,
        stall: Duration::from_secs(60),
    };
    let mut lg = LoadGen::connect(spec)?;
    let phase = lg.run_for(length)?;
    drop(lg);
    running.check(server.key)?;
    // Callgrind writes its counts when the program exits: SIGTERM, then time
    // for the slow exit under valgrind.
    running.stop_within(Duration::from_secs(60));
    let total = read_total(&out)?;
    Ok((total, phase.messages))
}

/// The `summary:` (or `totals:`) line of a callgrind output file: `Ir`.
fn read_total(path: &Path) -> io::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                let value = line
                    .strip_prefix("summary:")
                    .or_else(|| line.strip_prefix("totals:"));
                if let Some(n) = value.and_then(|v| v.split_whitespace().next()) {
                    return n.parse().map_err(|e| {
                        io::Error::other(format!("{}: bad total {n:?}: {e}", path.display()))
                    });
                }
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{}: no callgrind totals (did the server exit cleanly?)",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
