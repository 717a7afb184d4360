//! [`HttpRequests`]: HTTP/1.x requests, a head and a `Content-Length` body.

use bytes::{Buf, Bytes, BytesMut};

use super::Decoder;

/// One HTTP/1.x request: its head (the parts are positions in it, so a
/// request holds one reference to the input, not one per header), and its
/// body.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    head: Bytes,
    method: Span,
    target: Span,
    minor: u8,
    headers: Vec<(Span, Span)>,
    body: Bytes,
}

/// Where a part of the head lies in it.
#[derive(Debug, Clone, Copy)]
struct Span(u32, u32);

impl Span {
    /// `part`'s position in `head` (a subslice of it).
    fn of(head: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - head.as_ptr() as usize;
        Span(start as u32, (start + part.len()) as u32)
    }
}

impl HttpRequest {
    fn part(&self, span: Span) -> &[u8] {
        &self.head[span.0 as usize..span.1 as usize]
    }

    /// The method (`GET`...).
    pub fn method(&self) -> &[u8] {
        self.part(self.method)
    }

    /// The request target (`/index.html?q=1`).
    pub fn target(&self) -> &[u8] {
        self.part(self.target)
    }

    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor
    }

    /// The first header of this name (case-insensitive), its value trimmed.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The headers in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|&(n, v)| (self.part(n), self.part(v)))
    }

    /// The body (`Content-Length` bytes; empty without one).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The raw head, request line to the empty line.
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// Whether the client keeps the connection open after the response:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
                .flat_map(|(_, v)| v.split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        };
        if self.minor >= 1 {
            !has("close")
        } else {
            has("keep-alive")
        }
    }
}

/// Why a request could not be read; the connection cannot go on after it
/// (the decoder takes nothing more), so the handler answers and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// Not HTTP/1.x (answer 400 Bad Request).
    Malformed,
    /// The head is over `max_frame` bytes (answer 431).
    HeadTooLarge,
    /// The body is over [`HttpRequests::max_body`] bytes (answer 413).
    BodyTooLarge,
    /// A `Transfer-Encoding` (chunked bodies are not read; answer 501).
    Unsupported,
}

impl HttpError {
    /// The status line's code and reason for this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HttpError::Malformed => (400, "Bad Request"),
            HttpError::HeadTooLarge => (431, "Request Header Fields Too Large"),
            HttpError::BodyTooLarge => (413, "Content Too Large"),
            HttpError::Unsupported => (501, "Not Implemented"),
        }
    }
}

/// The status line's text: `400 Bad Request`.
impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (code, reason) = self.status();
        write!(f, "{code} {reason}")
    }
}

impl std::error::Error for HttpError {}

/// Cuts HTTP/1.0 and 1.1 requests: the head (bounded by the handler's
/// `max_frame`), then a body of `Content-Length` bytes (bounded by
/// [`max_body`](HttpRequests::max_body)). Pipelined requests come one
/// frame each. A request that cannot be read is a frame too, an
/// [`HttpError`] saying which status to answer; after it the decoder drops
/// all input. The head is scanned once however it trickles in.
///
/// ```
/// use bytes::BytesMut;
/// use sockloop::{Decoder, HttpRequests};
///
/// let mut buf = BytesMut::from(&b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET"[..]);
/// let mut http = HttpRequests::default();
/// let req = http.decode(&mut buf, 8192).unwrap().unwrap().unwrap();
/// assert_eq!((req.method(), req.target(), &req.body()[..]), (&b"POST"[..], &b"/x"[..], &b"hi"[..]));
/// assert!(http.decode(&mut buf, 8192).unwrap().is_none()); // "GET" waits
/// ```
#[derive(Debug)]
pub struct HttpRequests {
    /// The largest body accepted (default 1 MiB).
    pub max_body: usize,
    /// How far the head has been searched for its end.
    scanned: usize,
    /// A parsed head waiting for its body: (body length, request).
    waiting: Option<(usize, HttpRequest)>,
    /// An error was reported: input is dropped.
    failed: bool,
    /// Empty-line bytes dropped before the request line now coming.
    blank: usize,
}

impl Default for HttpRequests {
    fn default() -> HttpRequests {
        HttpRequests {
            max_body: 1 << 20,
            scanned: 0,
            waiting: None,
            failed: false,
            blank: 0,
        }
    }
}

/// The bytes of a token (RFC 9110 5.6.2: methods, header names), as a
/// table: a search of the punctuation list per byte was a tenth of a
/// request's parse.
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Parses a complete head (without the empty line ending it).
fn parse_head(head: Bytes) -> Result<HttpRequest, HttpError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request = lines.next().ok_or(HttpError::Malformed)?;
    let mut parts = request.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed);
    };
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(HttpError::Malformed),
    };
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) || target.is_empty() {
        return Err(HttpError::Malformed);
    }
    if target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::Malformed);
    }
    if head.len() > u32::MAX as usize {
        return Err(HttpError::HeadTooLarge);
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            // The end of the last header line.
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::Malformed)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(HttpError::Malformed);
        }
        let value = line[colon + 1..].trim_ascii();
        headers.push((Span::of(&head, name), Span::of(&head, value)));
    }
    Ok(HttpRequest {
        method: Span::of(&head, method),
        target: Span::of(&head, target),
        minor,
        headers,
        body: Bytes::new(),
        head,
    })
}

/// The body length the headers announce.
fn body_length(req: &HttpRequest) -> Result<usize, HttpError> {
    if req.header("transfer-encoding").is_some() {
        return Err(HttpError::Unsupported);
    }
    let mut length = None;
    for (name, value) in req.headers() {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(HttpError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed);
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

impl HttpRequests {
    /// The head at the front, once complete: (its length without the empty
    /// line, its length with it).
    fn head_end(&mut self, buf: &[u8]) -> Option<(usize, usize)> {
        let mut from = self.scanned;
        while let Some(at) = memchr::memchr(b'\n', &buf[from..]) {
            let nl = from + at;
            // An empty line: `\n` right after the previous `\n` (or `\r\n`).
            let prev = &buf[..nl];
            let empty = prev.ends_with(b"\n") || prev.ends_with(b"\n\r");
            if empty {
                let end = if prev.ends_with(b"\r") { nl - 1 } else { nl };
                self.scanned = 0;
                return Some((end, nl + 1));
            }
            from = nl + 1;
        }
        // Back up one: a `\r` at the end may start the empty line.
        self.scanned = buf.len().saturating_sub(1).max(self.scanned);
        None
    }

    fn fail(&mut self, buf: &mut BytesMut, e: HttpError) -> Result<HttpRequest, HttpError> {
        self.failed = true;
        self.waiting = None;
        buf.clear();
        Err(e)
    }
}

impl Decoder for HttpRequests {
    type Frame = Result<HttpRequest, HttpError>;

    fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Self::Frame>, super::FrameError> {
        if self.failed {
            buf.clear();
            return Ok(None);
        }
        if self.waiting.is_none() {
            // Empty lines before a request line are skipped (RFC 9112 2.2).
            let blank = buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                buf.advance(blank);
                self.scanned = 0;
                self.blank = self.blank.saturating_add(blank);
            }
            let Some((end, next)) = self.head_end(buf) else {
                if buf.len() > max {
                    return Ok(Some(self.fail(buf, HttpError::HeadTooLarge)));
                }
                return Ok(None);
            };
            if end > max {
                return Ok(Some(self.fail(buf, HttpError::HeadTooLarge)));
            }
            let head = buf.split_to(next).freeze();
            let req = parse_head(head.slice(..end)).and_then(|r| body_length(&r).map(|n| (r, n)));
            let (req, n) = match req {
                Ok(ok) => ok,
                Err(e) => return Ok(Some(self.fail(buf, e))),
            };
            if n > self.max_body {
                return Ok(Some(self.fail(buf, HttpError::BodyTooLarge)));
            }
            self.waiting = Some((n, req));
        }
        let n = self.waiting.as_ref().expect("set above").0;
        if buf.len() < n {
            return Ok(None);
        }
        let (_, mut req) = self.waiting.take().expect("set above");
        req.body = buf.split_to(n).freeze();
        self.blank = 0;
        Ok(Some(Ok(req)))
    }

    /// A head waiting for its body is a request under way, and so are
    /// empty lines beyond the one a client may send after a body (RFC 9112
    /// 2.2): a client sending nothing but empty lines does not escape the
    /// frame timeout.
    fn in_frame(&self) -> bool {
        !self.failed && (self.waiting.is_some() || self.blank > 2)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codecs::tests::feed;
    use super::*;

    fn requests(input: &[u8], chunk: usize, max: usize) -> Vec<Result<HttpRequest, HttpError>> {
        let (got, errs) = feed(&mut HttpRequests::default(), input, chunk, max);
        assert!(errs.is_empty(), "{errs:?}");
        got
    }

    #[test]
    fn pipelined_requests_split_anywhere() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc\r\nGET /x HTTP/1.1\nConnection: close\n\n";
        for chunk in 1..=input.len() {
            let got = requests(input, chunk, 1024);
            assert_eq!(got.len(), 3, "chunk {chunk}");
            let r: Vec<_> = got.into_iter().map(Result::unwrap).collect();
            assert_eq!(
                (r[0].target(), r[0].header("HOST")),
                (&b"/"[..], Some(&b"a"[..]))
            );
            assert!(r[0].keep_alive());
            assert_eq!(
                (r[1].method(), &r[1].body()[..]),
                (&b"POST"[..], &b"abc"[..])
            );
            assert!(r[1].keep_alive() && r[1].minor_version() == 0);
            assert!(!r[2].keep_alive());
        }
    }

    #[test]
    fn a_request_in_parts_is_one_frame_under_way() {
        let mut http = HttpRequests::default();
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert!(http.decode(&mut buf, 1024).unwrap().is_none());
        // One empty line (after a body) does not start a request...
        assert!(buf.is_empty() && !http.in_frame());
        // ...more of them do: the frame timeout runs.
        buf.extend_from_slice(b"\r\n");
        assert!(http.decode(&mut buf, 1024).unwrap().is_none());
        assert!(buf.is_empty() && http.in_frame());
        // A head taken off the buffer, its body not there yet: under way.
        buf.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n");
        assert!(http.decode(&mut buf, 1024).unwrap().is_none());
        assert!(buf.is_empty() && http.in_frame());
        buf.extend_from_slice(b"hi");
        assert!(http.decode(&mut buf, 1024).unwrap().unwrap().is_ok());
        assert!(!http.in_frame());
    }

    #[test]
    fn an_unbounded_body_is_not_allocated_up_front() {
        let mut http = HttpRequests {
            max_body: usize::MAX,
            ..HttpRequests::default()
        };
        let mut buf =
            BytesMut::from(&b"POST / HTTP/1.1\r\nContent-Length: 999999999999999\r\n\r\n"[..]);
        assert!(http.decode(&mut buf, 8192).unwrap().is_none());
        assert!(buf.capacity() < 2 << 20, "{}", buf.capacity());
    }

    #[test]
    fn errors_say_which_status() {
        let cases: [(&[u8], HttpError); 6] = [
            (b"GARBAGE\r\n\r\n", HttpError::Malformed),
            (b"GET / HTTP/2.0\r\n\r\n", HttpError::Malformed),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", HttpError::Malformed),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                HttpError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
                HttpError::BodyTooLarge,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::Unsupported,
            ),
        ];
        for (input, want) in cases {
            let got = requests(input, 5, 1024);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].as_ref().unwrap_err(), &want, "{input:?}");
        }
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b"X-A: b\r\n".iter().copied(), 500).flatten());
        let got = requests(&long, 64, 1024);
        assert_eq!(got[0].as_ref().unwrap_err(), &HttpError::HeadTooLarge);
    }
}
