//! [`Resp`]: Redis's request format (RESP2), multi-bulk and inline.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{Decoder, FrameError};

/// One command: its arguments, the name first (zero-copy slices of the input).
pub type RespCommand = Vec<Bytes>;

/// Cuts RESP2 requests as a Redis server reads them: multi-bulk
/// (`*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n`, what clients send) and inline
/// (`PING\r\n`, what a person types into `telnet`), into the command's
/// arguments. Inline commands are at most 64 KiB (Redis's bound) and
/// their arguments follow Redis's quoting (`SET k "a b\n"`, `'it\'s'`,
/// `"\x00"`); unbalanced quotes are refused with Redis's `Protocol error:
/// unbalanced quotes in request`, and an empty line is no command (skipped,
/// as Redis does). A command over `max_frame` bytes, a bulk string longer
/// than that, or input that is not RESP is refused (Redis answers
/// `-ERR Protocol error: ...` and closes, as the handler's `on_refused`
/// may: the [`FrameError`]'s text is Redis's reason).
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

/// The longest inline command (Redis's `PROTO_INLINE_MAX_SIZE`): a line of
/// one-byte arguments costs a slice per two bytes, so its length is kept
/// far below what multi-bulk commands may reach.
const MAX_INLINE: usize = 64 * 1024;

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
/// Parsed by hand: two of these per argument made `str::parse` (and its
/// UTF-8 check) a tenth of a pipelined GET's cost.
fn number(digits: &[u8]) -> Result<i64, FrameError> {
    let (negative, body) = match digits {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, digits),
    };
    // 18 digits cannot overflow an i64; longer counts are refused anyway.
    if body.is_empty() || body.len() > 18 || !body.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::Malformed(format!(
            "Protocol error: invalid length {:?}",
            String::from_utf8_lossy(digits)
        )));
    }
    let n = body.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Ok(if negative { -n } else { n })
}

/// The common header line, `<type byte><digits>\r\n` at `at`, read in one
/// pass: its count and where the next line starts. `None` for anything
/// else (not all there yet, a sign, a bare `\n`, junk): the general path
/// ([`line`], [`number`]) then decides, with its error messages.
#[inline]
fn simple_count(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let digits = buf.get(at + 1..)?;
    let mut n = 0usize;
    for (i, &b) in digits.iter().take(19).enumerate() {
        match b {
            // 18 digits at most: the count then fits any i64 (more are junk).
            b'0'..=b'9' if i < 18 => n = n * 10 + usize::from(b - b'0'),
            b'\r' if i > 0 && digits.get(i + 1) == Some(&b'\n') => return Some((n, at + i + 3)),
            _ => return None,
        }
    }
    None
}

/// A command over the limit, its length not known yet.
fn too_long(max: usize) -> FrameError {
    FrameError::TooLong {
        limit: max,
        length: None,
    }
}

/// What Redis's `isspace` skips between inline arguments.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn unbalanced() -> FrameError {
    FrameError::Malformed("Protocol error: unbalanced quotes in request".into())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline command into its arguments as Redis's `sdssplitargs`
/// does: blanks separate them; `"double quotes"` take `\n \r \t \b \a`,
/// `\xHH` and any other escaped byte as itself (`\"`, `\\`); `'single
/// quotes'` take only `\'`; a quote may start inside an argument (`a"b c"`
/// is `ab c`) and its closing quote must be followed by a blank or the end
/// of the line. Anything else is `unbalanced quotes`, as Redis answers.
/// Unquoted arguments are zero-copy slices of `line`. A NUL byte is an
/// ordinary byte here (Redis's C string handling stops at it).
fn split_inline(line: &Bytes) -> Result<Vec<Bytes>, FrameError> {
    let s = &line[..];
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < s.len() && is_blank(s[p]) {
            p += 1;
        }
        if p == s.len() {
            return Ok(args);
        }
        let start = p;
        // Only these end an unquoted argument (Redis's list: not `\v`, `\f`).
        while p < s.len() && !matches!(s[p], b' ' | b'\n' | b'\r' | b'\t' | b'"' | b'\'') {
            p += 1;
        }
        match s.get(p) {
            Some(&quote @ (b'"' | b'\'')) => {
                let mut arg = s[start..p].to_vec();
                p = unquote(s, p + 1, quote, &mut arg)?;
                if p < s.len() && !is_blank(s[p]) {
                    return Err(unbalanced());
                }
                args.push(Bytes::from(arg));
            }
            _ => args.push(line.slice(start..p)),
        }
    }
}

/// Appends the quoted text starting at `p` (after the opening `quote`) to
/// `out`, unescaped; returns where the closing quote ends.
fn unquote(s: &[u8], mut p: usize, quote: u8, out: &mut Vec<u8>) -> Result<usize, FrameError> {
    loop {
        let Some(&b) = s.get(p) else {
            return Err(unbalanced());
        };
        if b == quote {
            return Ok(p + 1);
        }
        match (b, quote, s.get(p + 1)) {
            (b'\\', b'\'', Some(b'\'')) => {
                out.push(b'\'');
                p += 2;
            }
            (b'\\', b'"', Some(&next)) => {
                let pair = s
                    .get(p + 2)
                    .copied()
                    .and_then(hex)
                    .zip(s.get(p + 3).copied().and_then(hex));
                match (next, pair) {
                    (b'x', Some((hi, lo))) => {
                        out.push(hi << 4 | lo);
                        p += 4;
                    }
                    _ => {
                        out.push(match next {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        p += 2;
                    }
                }
            }
            _ => {
                out.push(b);
                p += 1;
            }
        }
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
        let limit = max.min(MAX_INLINE);
        // `pos`: how far this line has been searched for its end already.
        let Some(at) = memchr::memchr(b'\n', &buf[self.pos..]) else {
            self.pos = buf.len();
            // A `\r` at the end may be the line's terminator, not content.
            if buf.len() - usize::from(buf.ends_with(b"\r")) > limit {
                return Err(too_long(limit));
            }
            return Ok(None);
        };
        let nl = self.pos + at;
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let next = nl + 1;
        self.pos = 0;
        if end > limit {
            return Err(too_long(limit));
        }
        let text = buf.split_to(next).freeze();
        split_inline(&text.slice(..end)).map(Some).inspect_err(|_| {
            // Refused: the line goes back to the front, for `on_refused`'s
            // view of the frame (the connection closes; the copy is rare).
            let mut back = BytesMut::from(&text[..]);
            back.extend_from_slice(buf);
            *buf = back;
        })
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
                    let (n, next) = match simple_count(buf, 0) {
                        Some((n, next)) => (n as i64, next),
                        None => {
                            let Some((end, next)) = line(buf, 0) else {
                                return self.incomplete(buf, max);
                            };
                            (number(&buf[1..end])?, next)
                        }
                    };
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
                let frame = buf.split_to(self.pos).freeze();
                // `args` keeps its storage for the next command.
                let mut command = Vec::with_capacity(self.args.len());
                command.extend(self.args.drain(..).map(|r| frame.slice(r)));
                self.reset();
                return Ok(Some(command));
            }
            let (n, next) = match simple_count(buf, self.pos) {
                Some((n, next)) if buf[self.pos] == b'$' => (n as i64, next),
                _ => {
                    let Some((end, next)) = line(buf, self.pos) else {
                        return self.incomplete(buf, max);
                    };
                    if buf[self.pos] != b'$' {
                        let got = buf[self.pos] as char;
                        return Err(FrameError::Malformed(format!(
                            "Protocol error: expected '$', got '{got}'"
                        )));
                    }
                    (number(&buf[self.pos + 1..end])?, next)
                }
            };
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

    /// The arguments of one inline line, or the error's text.
    fn inline(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut input = line.to_vec();
        input.extend_from_slice(b"\r\n");
        // Split at every byte: the quoting is read only once the line is complete.
        let (got, errs) = feed(&mut Resp::default(), &input, 1, 1024);
        if let Some(e) = errs.first() {
            return Err(e.to_string());
        }
        assert!(got.len() <= 1, "{got:?}");
        Ok(got
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.to_vec())
            .collect())
    }

    fn args(list: &[&[u8]]) -> Result<Vec<Vec<u8>>, String> {
        Ok(list.iter().map(|a| a.to_vec()).collect())
    }

    #[test]
    fn inline_double_quotes_and_their_escapes() {
        assert_eq!(inline(br#"ECHO "a b""#), args(&[b"ECHO", b"a b"]));
        assert_eq!(
            inline(br#"SET k "x\ny\r\t\b\a\\\"z""#),
            args(&[b"SET", b"k", b"x\ny\r\t\x08\x07\\\"z"])
        );
        // \xHH needs two hex digits; otherwise the x is itself.
        assert_eq!(
            inline(br#"ECHO "\x41\x7a\x00\xZZ\x4""#),
            args(&[b"ECHO", b"Az\0xZZx4"])
        );
        // Any other escaped byte is itself.
        assert_eq!(inline(br#"ECHO "\q\'""#), args(&[b"ECHO", b"q'"]));
        assert_eq!(inline(br#"ECHO """#), args(&[b"ECHO", b""]));
        // A quote may begin inside an argument.
        assert_eq!(inline(br#"ECHO a"b c""#), args(&[b"ECHO", b"ab c"]));
    }

    #[test]
    fn inline_single_quotes_take_only_an_escaped_quote() {
        assert_eq!(inline(br"ECHO 'it\'s'"), args(&[b"ECHO", b"it's"]));
        assert_eq!(
            inline(br#"ECHO 'a\nb "c"'"#),
            args(&[b"ECHO", br#"a\nb "c""#])
        );
        assert_eq!(inline(b"ECHO ''"), args(&[b"ECHO", b""]));
    }

    #[test]
    fn inline_unbalanced_quotes_are_refused() {
        let refused = Err("Protocol error: unbalanced quotes in request".to_string());
        for line in [
            &br#"ECHO "hello"#[..],
            br"ECHO 'hello",
            br#"ECHO "a"b"#,
            br"ECHO 'a'b",
            br#"ECHO "a\""#,
            br"ECHO 'a\'",
            br#"ECHO "a" "b"c"#,
        ] {
            assert_eq!(inline(line), refused, "{}", String::from_utf8_lossy(line));
        }
        // A closing quote followed by any blank is fine (\v and \f too).
        assert_eq!(inline(b"ECHO \"a\"\x0bb"), args(&[b"ECHO", b"a", b"b"]));
    }

    #[test]
    fn inline_blanks_empty_lines_and_plain_bytes() {
        assert_eq!(inline(b"  GET\t k  "), args(&[b"GET", b"k"]));
        // \v and \f separate arguments only before one starts (Redis's rule).
        assert_eq!(inline(b"ECHO a\x0bb"), args(&[b"ECHO", b"a\x0bb"]));
        assert_eq!(inline(b"ECHO a\\nb\\"), args(&[b"ECHO", b"a\\nb\\"]));
        // Empty and blank lines are no command.
        assert_eq!(inline(b""), args(&[]));
        assert_eq!(inline(b" \t "), args(&[]));
        let (got, errs) = feed(&mut Resp::default(), b"\r\n\n  \r\nPING\r\n", 1, 64);
        assert!(errs.is_empty());
        assert_eq!(got, vec![vec!["PING"]]);
    }

    #[test]
    fn an_unbounded_decoder_does_not_allocate_what_a_header_announces() {
        // 10^18 bytes announced to `max_frame` usize::MAX: the decoder
        // waits for them without reserving them (a reserve of 10^18 aborted).
        let mut buf = BytesMut::from(&b"*1\r\n$999999999999999999\r\n"[..]);
        assert!(Resp::default()
            .decode(&mut buf, usize::MAX)
            .unwrap()
            .is_none());
        assert!(buf.capacity() < 2 << 20, "{}", buf.capacity());
    }

    #[test]
    fn an_inline_line_of_exactly_the_limit_may_get_its_cr_first() {
        let mut line = vec![b'a'; MAX_INLINE];
        let mut resp = Resp::default();
        let mut buf = BytesMut::from(&line[..]);
        assert!(resp.decode(&mut buf, usize::MAX).unwrap().is_none());
        buf.extend_from_slice(b"\r");
        assert!(resp.decode(&mut buf, usize::MAX).unwrap().is_none());
        buf.extend_from_slice(b"\n");
        let command = resp.decode(&mut buf, usize::MAX).unwrap().unwrap();
        assert_eq!(command[0].len(), MAX_INLINE);
        // One byte more is refused, with or without its CR yet.
        line.push(b'a');
        let mut buf = BytesMut::from(&line[..]);
        assert!(Resp::default().decode(&mut buf, usize::MAX).is_err());
    }

    #[test]
    fn header_counts_parse_in_one_pass_or_fall_back() {
        assert_eq!(simple_count(b"*2\r\n", 0), Some((2, 4)));
        assert_eq!(simple_count(b"x$16\r\nkey", 1), Some((16, 6)));
        // Not all there, a sign, a bare newline, no digits, junk: the general path.
        for other in [
            &b"*2\r"[..],
            b"*2",
            b"*-1\r\n",
            b"*2\n",
            b"*\r\n",
            b"*2x\r\n",
        ] {
            assert_eq!(simple_count(other, 0), None, "{other:?}");
        }
        // Too many digits to be a count: refused, never wrapped to a small one.
        let mut resp = Resp::default();
        let mut buf = BytesMut::from(&b"*9999999999999999999\r\n"[..]);
        assert!(resp.decode(&mut buf, 1024).is_err());
        let mut buf = BytesMut::from(&b"*1\r\n$99999999999999999999\r\n"[..]);
        assert!(Resp::default().decode(&mut buf, 1024).is_err());
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
        // Inline commands stop at 64 KiB, as Redis's, whatever max_frame is.
        let mut line = vec![b'a'; 64 * 1024];
        line.extend_from_slice(b"\r\n");
        let (got, errs) = feed(&mut Resp::default(), &line, 4096, 1 << 20);
        assert_eq!(got.len(), 1, "{errs:?}");
        line.insert(0, b'b');
        let (got, errs) = feed(&mut Resp::default(), &line, 4096, 1 << 20);
        assert!(got.is_empty() && errs.len() == 1, "{errs:?}");
        let mut bulk = b"*1\r\n$1000\r\n".to_vec();
        bulk.extend_from_slice(&[b'x'; 900]);
        let (got, errs) = feed(&mut Resp::default(), &bulk, 7, 1024);
        assert!(
            got.is_empty() && errs.is_empty(),
            "within the bound it waits"
        );
    }
}
