//! What `http_hello` answers, request by request: shared with the tokio
//! server of `benches/servers.rs` (included there by path), so that the
//! two servers of the benchmark do the same work per request and the
//! comparison measures the event loops.

use sockloop::{HttpError, HttpRequest};

/// The page `GET /` gets.
pub const BODY: &[u8] = b"Hello, world!\n";

/// Appends the answer to `request` to `out`; false when the connection
/// ends after it (`Connection: close`, HTTP/1.0 without keep-alive, or a
/// request that could not be read).
pub fn answer(out: &mut Vec<u8>, request: &Result<HttpRequest, HttpError>) -> bool {
    let req = match request {
        Ok(req) => req,
        // The request cannot be read to its end: answer and close.
        Err(e) => {
            let (code, reason) = e.status();
            let body = format!("{reason}\n");
            respond(
                out,
                (code, reason),
                "Connection: close\r\n",
                body.as_bytes(),
                false,
            );
            return false;
        }
    };
    let conn = connection(req);
    let head_only = req.method() == b"HEAD";
    match (req.method(), req.target()) {
        (b"GET" | b"HEAD", b"/") => respond(out, (200, "OK"), conn, BODY, head_only),
        (b"GET" | b"HEAD", _) => respond(out, (404, "Not Found"), conn, b"Not Found\n", head_only),
        _ => {
            let headers = ["Allow: GET, HEAD\r\n", conn].concat();
            let body = b"Method Not Allowed\n";
            respond(out, (405, "Method Not Allowed"), &headers, body, false)
        }
    }
    req.keep_alive()
}

/// Appends a response: the status line, `headers` (whole lines), a
/// `Content-Length` of `body`, and the body itself unless `head_only`
/// (the answer to HEAD: the length the body would have, no body).
/// Written piece by piece: a `format!` per response was a quarter of the
/// server's instructions per request.
pub fn respond(
    out: &mut Vec<u8>,
    status: (u16, &str),
    headers: &str,
    body: &[u8],
    head_only: bool,
) {
    let (code, reason) = status;
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, code.into());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    decimal(out, body.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// The `Connection` header a response owes: `close` when the connection
/// ends after it; `keep-alive` for an HTTP/1.0 client that asked to keep
/// it (1.0 closes by default, so it must be told); none for HTTP/1.1.
fn connection(req: &HttpRequest) -> &'static str {
    match (req.keep_alive(), req.minor_version()) {
        (false, _) => "Connection: close\r\n",
        (true, 0) => "Connection: keep-alive\r\n",
        (true, _) => "",
    }
}

/// `n` in decimal.
fn decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}
