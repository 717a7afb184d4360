//! The PROXY protocol on a listener (`ListenOptions::proxy_protocol`) and on
//! a socketserver stream server: v1 and v2 headers (TCP4, TCP6, UNIX,
//! LOCAL, UNKNOWN), what the factory, `peer_addr`, `proxy_addr` and the
//! allow-list see, and the connections that must be closed: no header, a
//! malformed, oversized, truncated or slow one, while others go on.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{any_port, temp_path, Server, LIMIT};
use sockloop::server::{Family, Request, RequestHandler, ServerBuilder};
use sockloop::{Addr, AllowList, Context, ListenOptions, Protocol, Reactor};

/// Says who it thinks its peer is, then echoes.
struct Who {
    factory_peer: Addr,
}

impl Protocol for Who {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let peer = cx.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let proxy = cx.proxy_addr().map(|a| a.to_string()).unwrap_or("-".into());
        let local = cx
            .proxy_header()
            .map(|h| format!("v{} local={}", h.version, h.local))
            .unwrap_or("-".into());
        let line = format!(
            "factory={} peer={peer} proxy={proxy} {local}\n",
            self.factory_peer
        );
        cx.write(line.as_bytes());
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        cx.write_buf(data);
    }
}

fn proxy_opts(timeout: Duration) -> ListenOptions {
    let mut opts = ListenOptions::default();
    opts.proxy_protocol = true;
    opts.proxy_timeout = timeout;
    opts
}

/// A reactor with one proxy-protocol listener at `addr`; the stats come
/// back on `stats` when asked through the handle.
fn server(addr: Addr, opts: ListenOptions) -> Server {
    Server::start(move |r: &mut Reactor| {
        let id = r
            .listen_with(&addr, &opts, |peer: &Addr| Who {
                factory_peer: peer.clone(),
            })
            .unwrap();
        vec![r.listener_addr(id).unwrap()]
    })
}

fn refused(server: &Server) -> u64 {
    let (tx, rx) = mpsc::channel();
    server
        .handle
        .post(move |r| tx.send(r.stats().proxy_refused).unwrap())
        .unwrap();
    rx.recv_timeout(LIMIT).unwrap()
}

fn first_line(stream: impl Read) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

fn tcp(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.inet(0)).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&7u16.to_be_bytes());
    v2(1, 0x11, &body)
}

/// The connection was closed by the server without a word (EOF or reset).
fn assert_closed(mut stream: impl Read, what: &str) {
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the server to close, got {other:?}"),
    }
}

#[test]
fn v1_and_v2_headers_name_the_client() {
    let server = server(any_port(), proxy_opts(Duration::from_secs(5)));
    let me = server.inet(0);
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            b"PROXY TCP4 192.0.2.1 127.0.0.1 5678 7\r\n".to_vec(),
            "factory=192.0.2.1:5678 peer=192.0.2.1:5678".into(),
        ),
        (
            b"PROXY TCP6 2001:db8::5 ::1 443 7\r\n".to_vec(),
            "factory=[2001:db8::5]:443 peer=[2001:db8::5]:443".into(),
        ),
        (
            v2_tcp4([198, 51, 100, 7], 40000),
            "peer=198.51.100.7:40000".into(),
        ),
        (
            {
                let mut body = "2001:db8::9".parse::<Ipv6Addr>().unwrap().octets().to_vec();
                body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                body.extend_from_slice(&[0, 80, 0, 7]);
                v2(1, 0x21, &body)
            },
            "peer=[2001:db8::9]:80".into(),
        ),
    ];
    for (header, expect) in cases {
        let mut s = tcp(&server);
        s.write_all(&header).unwrap();
        let line = first_line(&s);
        assert!(line.contains(&expect), "{line:?} lacks {expect:?}");
        let proxy = format!("proxy={}", s.local_addr().unwrap());
        assert!(
            line.contains(&proxy),
            "{line:?}: the proxy's address is kept"
        );
    }
    // LOCAL (a health check) and UNKNOWN: the connection's own endpoints.
    for header in [v2(0, 0x11, &[1; 12]), b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut s = tcp(&server);
        s.write_all(&header).unwrap();
        let line = first_line(&s);
        let real = s.local_addr().unwrap().to_string();
        assert!(
            line.contains(&format!("factory={real} peer={real}")),
            "{line}"
        );
    }
    assert_eq!(refused(&server), 0);
    let _ = me;
}

#[test]
fn unix_listener_with_v2_unix_addresses() {
    let path = temp_path("proxy-unix");
    let server = server(
        Addr::unix(&path).unwrap(),
        proxy_opts(Duration::from_secs(5)),
    );
    let mut body = vec![0u8; 216];
    body[..12].copy_from_slice(b"/run/app.skt");
    body[108..118].copy_from_slice(b"/run/h.skt");
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(&v2(1, 0x31, &body)).unwrap();
    let line = first_line(&s);
    assert!(line.contains("peer=unix:/run/app.skt"), "{line}");
    drop(server);
}

#[test]
fn bytes_after_the_header_reach_the_protocol_whole() {
    let server = server(any_port(), proxy_opts(Duration::from_secs(5)));
    // Header and request in one segment, then the header a byte at a time.
    let mut s = tcp(&server);
    let mut msg = v2_tcp4([192, 0, 2, 2], 1000);
    msg.extend_from_slice(b"ping\n");
    s.write_all(&msg).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("peer=192.0.2.2:1000"), "{line}");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");

    let mut s = tcp(&server);
    s.set_nodelay(true).unwrap();
    for b in b"PROXY TCP4 192.0.2.3 127.0.0.1 9 7\r\n" {
        s.write_all(&[*b]).unwrap();
    }
    s.write_all(b"pong\n").unwrap();
    let mut r = BufReader::new(s);
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("peer=192.0.2.3:9"), "{line}");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "pong\n");
}

#[test]
fn bad_headers_close_only_their_connection() {
    let server = server(any_port(), proxy_opts(Duration::from_millis(300)));
    // One good client stays connected throughout.
    let mut good = tcp(&server);
    good.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 7\r\n")
        .unwrap();
    let mut good = BufReader::new(good);
    let mut line = String::new();
    good.read_line(&mut line).unwrap();

    let mut oversized = v2(1, 0x11, &[0; 12]);
    oversized[14..16].copy_from_slice(&5000u16.to_be_bytes());
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("missing", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        (
            "malformed v1",
            b"PROXY TCP4 1.2.3 127.0.0.1 1 7\r\n".to_vec(),
        ),
        ("v1 without CRLF in 107 bytes", {
            let mut line = b"PROXY UNKNOWN ".to_vec();
            line.resize(200, b'x');
            line
        }),
        ("malformed v2", v2(1, 0x51, &[0; 12])),
        ("oversized v2", oversized),
    ];
    let n = bad.len() as u64;
    for (what, bytes) in bad {
        let mut s = tcp(&server);
        s.write_all(&bytes).unwrap();
        assert_closed(&s, what);
    }
    // Truncated: part of a header, then the client's FIN.
    let mut s = tcp(&server);
    s.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed(&s, "truncated");
    // Slow: part of a header, then nothing; closed at the header timeout.
    let started = Instant::now();
    let mut s = tcp(&server);
    s.write_all(&v2_tcp4([192, 0, 2, 1], 1)[..10]).unwrap();
    assert_closed(&s, "slow");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "closed after {took:?}, before the timeout"
    );
    // Silent: connects and sends nothing.
    let s = tcp(&server);
    assert_closed(&s, "silent");

    assert_eq!(refused(&server), n + 3);
    // The good one was never disturbed.
    good.get_mut().write_all(b"still here\n").unwrap();
    line.clear();
    good.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n");
}

#[test]
fn allow_list_judges_the_client_from_the_header() {
    let allow = AllowList::default()
        .allow("192.0.2.0".parse().unwrap(), 24)
        .unwrap();
    let mut opts = proxy_opts(Duration::from_secs(5));
    opts.allow = Some(allow);
    let server = server(any_port(), opts);
    // The proxy (127.0.0.1) is not in the list; the client decides.
    let mut s = tcp(&server);
    s.write_all(b"PROXY TCP4 192.0.2.50 127.0.0.1 1 7\r\n")
        .unwrap();
    assert!(first_line(&s).contains("peer=192.0.2.50:1"));
    let mut s = tcp(&server);
    s.write_all(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 7\r\n")
        .unwrap();
    assert_closed(&s, "client outside the allow-list");
}

#[test]
fn graceful_shutdown_ends_connections_still_waiting_for_a_header() {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut r = Reactor::new().unwrap();
        let id = r
            .listen_with(
                &any_port(),
                &proxy_opts(Duration::from_secs(60)),
                |peer: &Addr| Who {
                    factory_peer: peer.clone(),
                },
            )
            .unwrap();
        tx.send((r.handle(), r.listener_addr(id).unwrap())).unwrap();
        r.run().unwrap();
    });
    let (handle, addr) = rx.recv_timeout(LIMIT).unwrap();
    let mut s = TcpStream::connect(addr.as_inet().unwrap()).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"PROXY TCP4").unwrap();
    // The server has it (a round trip on another connection proves the turn passed).
    let mut other = TcpStream::connect(addr.as_inet().unwrap()).unwrap();
    other.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    other.set_read_timeout(Some(LIMIT)).unwrap();
    first_line(&other);
    drop(other);
    let started = Instant::now();
    handle
        .shutdown_graceful(Duration::from_millis(200))
        .unwrap();
    assert_closed(&s, "waiting at shutdown");
    thread.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

struct ClientAddress;

impl RequestHandler for ClientAddress {
    fn handle(&mut self, request: &mut Request) -> std::io::Result<()> {
        let line = format!("client={}\n", request.client_address());
        request.wfile().write_all(line.as_bytes())
    }
}

#[test]
fn socketserver_stream_server_sees_the_client() {
    let (seen_tx, seen_rx) = mpsc::channel();
    let seen_tx = std::sync::Mutex::new(seen_tx);
    let server = ServerBuilder::new(Family::Tcp)
        .bind(any_port())
        .proxy_protocol(true)
        .verify_request(move |peer| {
            seen_tx.lock().unwrap().send(peer.to_string()).unwrap();
            true
        })
        .spawn(|| ClientAddress)
        .unwrap();
    let addr = server.server_address()[0].as_inet().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(&v2_tcp4([203, 0, 113, 4], 4444)).unwrap();
    assert_eq!(first_line(&s), "client=203.0.113.4:4444\n");
    assert_eq!(seen_rx.recv_timeout(LIMIT).unwrap(), "203.0.113.4:4444");
    // Without a header: closed before any worker sees it.
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    (&s).write_all(b"hello\n").unwrap();
    assert_closed(&s, "no header");
    assert!(
        seen_rx.try_recv().is_err(),
        "verify_request saw a connection without a header"
    );
    server.shutdown().unwrap();
}

#[test]
fn connections_waiting_for_a_header_count_against_the_caps() {
    // A flood of connections that never send their header must not take
    // more descriptors than the cap allows: at the cap, the next client
    // waits in the backlog until a silent one times out.
    for global in [false, true] {
        let timeout = Duration::from_millis(400);
        let mut opts = proxy_opts(timeout);
        if !global {
            opts.max_connections = Some(2);
        }
        let server = Server::start(move |r: &mut Reactor| {
            if global {
                r.set_max_connections(Some(2));
            }
            let id = r
                .listen_with(&any_port(), &opts, |peer: &Addr| Who {
                    factory_peer: peer.clone(),
                })
                .unwrap();
            vec![r.listener_addr(id).unwrap()]
        });
        let silent: Vec<TcpStream> = (0..2).map(|_| tcp(&server)).collect();
        // Both are accepted (and waiting) once a third, also silent, has no effect on them.
        let started = Instant::now();
        let mut s = tcp(&server);
        s.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 7\r\n")
            .unwrap();
        let line = first_line(&s);
        assert!(line.contains("peer=192.0.2.1:1"), "{line}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "global={global}: served after {waited:?}, beside 2 silent connections at a cap of 2"
        );
        for s in silent {
            assert_closed(&s, "silent");
        }
    }
}

#[test]
fn header_data_and_end_of_stream_in_one_go() {
    // The client sends everything and closes its side at once: the header
    // is taken, the data and the end of stream reach the protocol after it.
    let server = server(any_port(), proxy_opts(Duration::from_secs(5)));
    let mut s = tcp(&server);
    let mut msg = b"PROXY TCP4 192.0.2.8 127.0.0.1 8 7\r\n".to_vec();
    msg.extend_from_slice(b"last words\n");
    s.write_all(&msg).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("factory=192.0.2.8:8 "), "{all}");
    assert!(all.ends_with("last words\n"), "{all}");
}

// (the client is reset although the grace has 10 s left and its header is valid).
#[test]
fn a_header_that_comes_during_the_grace_is_served() {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut r = Reactor::new().unwrap();
        let id = r
            .listen_with(
                &any_port(),
                &proxy_opts(Duration::from_secs(60)),
                |peer: &Addr| Who {
                    factory_peer: peer.clone(),
                },
            )
            .unwrap();
        tx.send((r.handle(), r.listener_addr(id).unwrap())).unwrap();
        r.run().unwrap();
    });
    let (handle, addr) = rx.recv_timeout(LIMIT).unwrap();
    let mut s = TcpStream::connect(addr.as_inet().unwrap()).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"PROXY TCP4").unwrap();
    // The server has it waiting (a round trip on another connection proves the turn passed).
    let mut other = TcpStream::connect(addr.as_inet().unwrap()).unwrap();
    other.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    other.set_read_timeout(Some(LIMIT)).unwrap();
    first_line(&other);
    drop(other);
    handle.shutdown_graceful(Duration::from_secs(10)).unwrap();
    // A restart or SIGTERM has begun; the proxy's header arrives now, well within the grace.
    s.write_all(b" 192.0.2.1 192.0.2.2 1000 80\r\n").unwrap();
    let line = first_line(&s);
    assert!(
        line.contains("peer=192.0.2.1:1000"),
        "not served during the grace: {line:?}"
    );
    assert!(
        TcpStream::connect(addr.as_inet().unwrap()).is_err(),
        "the listener is closed: a new client is refused"
    );
    drop(s);
    thread.join().unwrap();
}

// Red team F5: fails on the old code (the Unix client was always allowed).
// The list names 192.0.2.0/24 only; the real peer (127.0.0.1) is not in it.
#[test]
fn a_unix_family_header_does_not_bypass_a_tcp_allow_list() {
    let allow = AllowList::default()
        .allow("192.0.2.0".parse().unwrap(), 24)
        .unwrap();
    let mut opts = proxy_opts(Duration::from_secs(5));
    opts.allow = Some(allow);
    let server = server(any_port(), opts);
    let mut path = [0u8; 108];
    path[..9].copy_from_slice(b"/tmp/evil");
    let body = [path, path].concat();
    let mut s = tcp(&server);
    s.write_all(&v2(1, 0x31, &body)).unwrap();
    assert_closed(
        &s,
        "UNIX-family client on a TCP listener with an IP allow-list",
    );
}
