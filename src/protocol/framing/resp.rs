//! [`Resp`]: Redis's request format (RESP2), multi-bulk and inline.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{Decoder, FrameError};

/// One command: its arguments, the name first (zero-copy slices of the input).
pub type RespCommand = Vec<Bytes>;

/// Cuts RESP2 requests as a Redis server reads them: multi-bulk
/// (`*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n`, what clients send) and inline
/// (`PING\r\n`, what a person types into `telnet`), into the command's
/// arguments. A command over `max_frame` bytes, a bulk string longer
/// than that, or input that is not RESP is refused (Redis answers
/// `-ERR Protocol error` and closes, as the handler's `on_oversized` may).
/// Each byte is looked at once, however the command is split across reads.
///
/// ```
/// use bytes::BytesMut;
/// use sockloop::{Decoder, Resp};
///
/// let mut buf = BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n"[..]);
/// let mut resp = Resp::default();
/// assert_eq!(resp.decode(&mut buf, 1024).unwrap().unwrap(), ["ECHO", "hi"]);
/// assert_eq!(resp.decode(&mut buf, 1024).unwrap().unwrap(), ["PING"]);
/// assert_eq!(resp.decode(&mut buf, 1024).unwrap(), None);
/// ```
#[derive(Debug, Default)]
pub struct Resp {
    /// How far the command at the front has been parsed.
    pos: usize,
    /// Arguments still expected (`None`: the `*` header not read yet).
    left: Option<usize>,
    /// Where the arguments parsed so far lie.
    args: Vec<Range<usize>>,
}

/// The most arguments one command may have (Redis's own limit).
const MAX_ARGS: usize = 1024 * 1024;

/// The end of the `\r\n`-terminated line starting at `from`: (content end, next line).
fn line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let at = memchr::memchr(b'\n', &buf[from..])? + from;
    let end = if at > from && buf[at - 1] == b'\r' {
        at - 1
    } else {
        at
    };
    Some((end, at + 1))
}

/// A decimal count in a header line (`*3`, `$5`), after its type byte.
fn number(digits: &[u8]) -> Result<i64, FrameError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            FrameError::Malformed(format!(
                "Protocol error: invalid length {:?}",
                String::from_utf8_lossy(digits)
            ))
        })
}

/// A command over the limit, its length not known yet.
fn too_long(max: usize) -> FrameError {
    FrameError::TooLong {
        limit: max,
        length: None,
    }
}

impl Resp {
    fn reset(&mut self) {
        self.pos = 0;
        self.left = None;
        self.args.clear();
    }

    fn inline(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<RespCommand>, FrameError> {
        let Some((end, next)) = line(buf, 0) else {
            if buf.len() > max {
                return Err(too_long(max));
            }
            return Ok(None);
        };
        if end > max {
            return Err(too_long(max));
        }
        let text = buf.split_to(next).freeze();
        let args: Vec<Bytes> = text[..end]
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| text.slice_ref(w))
            .collect();
        Ok(Some(args))
    }

    fn multibulk(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<RespCommand>, FrameError> {
        loop {
            let left = match self.left {
                Some(n) => n,
                None => {
                    let Some((end, next)) = line(buf, 0) else {
                        return self.incomplete(buf, max);
                    };
                    let n = number(&buf[1..end])?;
                    if n > MAX_ARGS as i64 || n.unsigned_abs() as usize > max / 4 + 1 {
                        return Err(FrameError::Malformed(format!(
                            "Protocol error: invalid multibulk length {n}"
                        )));
                    }
                    self.pos = next;
                    self.left = Some(n.max(0) as usize);
                    n.max(0) as usize
                }
            };
            if left == 0 {
                let pos = self.pos;
                let args = std::mem::take(&mut self.args);
                self.reset();
                let frame = buf.split_to(pos).freeze();
                return Ok(Some(args.into_iter().map(|r| frame.slice(r)).collect()));
            }
            let Some((end, next)) = line(buf, self.pos) else {
                return self.incomplete(buf, max);
            };
            if buf[self.pos] != b'$' {
                let got = buf[self.pos] as char;
                return Err(FrameError::Malformed(format!(
                    "Protocol error: expected '$', got '{got}'"
                )));
            }
            let n = number(&buf[self.pos + 1..end])?;
            if n < 0 {
                return Err(FrameError::Malformed(format!(
                    "Protocol error: invalid bulk length {n}"
                )));
            }
            if n as u64 > max as u64 {
                return Err(FrameError::TooLong {
                    limit: max,
                    length: Some(n as usize),
                });
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                if next + n + 2 > max.saturating_add(64) {
                    return Err(too_long(max));
                }
                buf.reserve(next + n + 2 - buf.len());
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(FrameError::Malformed(
                    "Protocol error: bulk string not followed by CRLF".into(),
                ));
            }
            self.args.push(next..next + n);
            self.pos = next + n + 2;
            self.left = Some(left - 1);
        }
    }

    /// No complete line yet: bounded like a frame.
    fn incomplete(&self, buf: &BytesMut, max: usize) -> Result<Option<RespCommand>, FrameError> {
        if buf.len() > max.saturating_add(64) {
            return Err(too_long(max));
        }
        Ok(None)
    }
}

impl Decoder for Resp {
    type Frame = RespCommand;

    fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<RespCommand>, FrameError> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let result = if first == b'*' {
                self.multibulk(buf, max)
            } else {
                self.inline(buf, max)
            };
            match result {
                // Empty lines and `*0` are no command (Redis skips them).
                Ok(Some(args)) if args.is_empty() => continue,
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::codecs::tests::feed;
    use super::*;

    #[test]
    fn multibulk_and_inline_split_anywhere() {
        let input = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n\r\nGET  k\r\n*0\r\nECHO x\n";
        for chunk in 1..=input.len() {
            let (got, errs) = feed(&mut Resp::default(), input, chunk, 1024);
            assert!(errs.is_empty(), "{errs:?}");
            let want: Vec<Vec<&str>> = vec![
                vec!["PING"],
                vec!["SET", "k", ""],
                vec!["GET", "k"],
                vec!["ECHO", "x"],
            ];
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[test]
    fn binary_bulk_strings_pass_intact() {
        let mut input = b"*2\r\n$4\r\nECHO\r\n$6\r\n".to_vec();
        input.extend_from_slice(b"a\r\n\0\n$");
        input.extend_from_slice(b"\r\n");
        let (got, errs) = feed(&mut Resp::default(), &input, 1, 1024);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(got[0][1], &b"a\r\n\0\n$"[..]);
    }

    #[test]
    fn bad_and_oversized_requests_are_refused() {
        for (bad, max) in [
            (&b"*1\r\n+PING\r\n"[..], 1024),
            (b"*x\r\n", 1024),
            (b"*1\r\n$-5\r\n", 1024),
            (b"*1\r\n$4\r\nPINGxx", 1024),
            (b"*1\r\n$2000\r\n", 1024),
            (b"*99999999\r\n", 1024),
        ] {
            let (got, errs) = feed(&mut Resp::default(), bad, 3, max);
            assert!(got.is_empty() && errs.len() == 1, "{bad:?}: {errs:?}");
        }
        // An endless inline line or bulk is refused once over the bound.
        let long = vec![b'a'; 5000];
        assert_eq!(feed(&mut Resp::default(), &long, 100, 1024).1.len(), 1);
        let mut bulk = b"*1\r\n$1000\r\n".to_vec();
        bulk.extend_from_slice(&[b'x'; 900]);
        let (got, errs) = feed(&mut Resp::default(), &bulk, 7, 1024);
        assert!(
            got.is_empty() && errs.is_empty(),
            "within the bound it waits"
        );
    }
}
