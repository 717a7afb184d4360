//! `cargo fuzz run framing`: the input picks the terminators (frame `i` uses
//! the `i % n`-th), the frame size limit and the chunking of the rest of the
//! input, which is the stream. Properties: src/framing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockloop_fuzz::framing::{check, FramingCase, Term};

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

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

fn decode(data: &[u8]) -> FramingCase {
    let mut c = Cursor(data);
    // Mostly one terminator; sometimes a handler that switches per frame.
    let n_terms = match c.byte() % 8 {
        0..=5 => 1,
        6 => 2,
        _ => 3,
    };
    let terms = (0..n_terms)
        .map(|_| {
            let t = c.byte();
            match t % 4 {
                0 => Term::Delimiter(c.bytes(1 + (t as usize >> 2) % 4)),
                1 => Term::Count(1 + c.byte() as usize % 64),
                2 => Term::LengthPrefixed,
                _ => Term::None,
            }
        })
        .collect();
    let max = c.byte() as usize;
    // Chunk sizes, cycled over the stream; none: the stream in one piece.
    let n_sizes = c.byte() as usize % 16;
    let sizes: Vec<usize> = (0..n_sizes).map(|_| c.byte() as usize).collect();
    let stream = c.0;
    let mut chunks = Vec::new();
    if sizes.is_empty() {
        chunks.push(stream.to_vec());
    } else {
        let mut rest = stream;
        // A zero size is an empty chunk (a read that brought nothing new); a
        // full cycle of zeros must not loop forever.
        let mut empties = 0;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() || empties > 64 {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            empties += usize::from(size == 0);
            chunks.push(chunk.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            chunks.push(rest.to_vec());
        }
    }
    FramingCase { terms, max, chunks }
}

fuzz_target!(|data: &[u8]| {
    check(&decode(data));
});
