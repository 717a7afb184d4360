//! `cargo fuzz run connection`: a line-echo server on a reactor serves one
//! end of a Unix socketpair; the input picks the peer's schedule (write
//! sizes, reactor turns, read sizes: a run of zero reads is a slow reader;
//! steps where the server does not read),
//! when and how it closes (shutdown(Write) or drop), the server's frame
//! limit, small socket buffers and high-water mark (backpressure), and the
//! lines. Properties: src/connection.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockloop_fuzz::connection::{check, CloseKind, ConnCase, Step, Tight};

/// The most the peer sends in one case.
const MAX_STREAM: usize = 256 * 1024;

/// Reads the input front to back; past its end every byte is 0.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
}

/// 0..63 bytes, 64-byte steps to 4 KiB, 1 KiB steps to 64 KiB, or 64 KiB.
fn size(b: u8) -> usize {
    let low = usize::from(b & 63);
    match b >> 6 {
        0 => low,
        1 => low * 64,
        2 => low * 1024,
        _ => 64 * 1024,
    }
}

fn decode(data: &[u8]) -> ConnCase {
    let mut c = Cursor(data);
    let flags = c.byte();
    let close = if flags & 1 == 0 {
        CloseKind::ShutdownWrite
    } else {
        CloseKind::Drop
    };
    let max_frame = if flags & 2 == 0 {
        64 * 1024
    } else {
        usize::from(c.byte() % 64)
    };
    let tight = (flags & 4 != 0).then(|| {
        let sndbuf = 1 + usize::from(c.byte()) * 64;
        let high_water = 1 + usize::from(c.u16() % 8192);
        let low_water = high_water * usize::from(c.byte()) / 255;
        Tight {
            sndbuf,
            high_water,
            low_water,
        }
    });
    let repeat = 1 + usize::from(c.byte() % 64);
    let close_pick = c.u16();
    let n_steps = usize::from(c.byte());
    let steps = (0..n_steps)
        .map(|_| {
            let write = size(c.byte());
            let turns = c.byte();
            Step {
                write,
                turns: turns % 4,
                read: size(c.byte()),
                // One step in four, the server does not read.
                pause: turns & 0x0c == 0x0c,
            }
        })
        .collect();
    let mut stream = c.0.repeat(repeat);
    stream.truncate(MAX_STREAM);
    // Half the values close after the whole stream, the other half anywhere.
    let close_at = if close_pick >= 0x8000 {
        stream.len()
    } else {
        stream.len() * usize::from(close_pick) / 0x7fff
    };
    ConnCase {
        stream,
        close_at,
        close,
        steps,
        max_frame,
        tight,
    }
}

fuzz_target!(|data: &[u8]| {
    check(&decode(data));
});
