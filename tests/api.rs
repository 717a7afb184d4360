//! The public API's shape, checked at compile time where it can be: every
//! public type is `Debug` (lib.rs also warns on a missing impl, and clippy
//! runs with `-D warnings`), and the `Debug` output shows useful state.

use std::fmt::Debug;

use sockloop::server::{Family, Mode, Request, RunningServer, Server, ServerBuilder, ServerHandle};
use sockloop::*;

fn assert_debug<T: Debug + ?Sized>() {}

/// A handler that is not `Debug`: `Framed` is `Debug` anyway.
struct NotDebug;

impl FrameHandler for NotDebug {
    fn on_frame(&mut self, _: &mut Context<'_>, _: bytes::Bytes) {}
}

#[test]
fn every_public_type_is_debug() {
    assert_debug::<Addr>();
    assert_debug::<AllowList>();
    assert_debug::<BlockingDatagram>();
    assert_debug::<BlockingStream>();
    assert_debug::<CloseReason>();
    assert_debug::<ConnId>();
    assert_debug::<ConnOptions>();
    assert_debug::<Context<'static>>();
    assert_debug::<DatagramContext<'static>>();
    assert_debug::<FrameDecoder>();
    assert_debug::<FrameError>();
    assert_debug::<HttpError>();
    assert_debug::<HttpRequest>();
    assert_debug::<HttpRequests>();
    assert_debug::<Netstrings>();
    assert_debug::<QueueFull>();
    assert_debug::<Resp>();
    assert_debug::<Framed<NotDebug>>();
    assert_debug::<Handle>();
    assert_debug::<ListenOptions>();
    assert_debug::<ListenerId>();
    assert_debug::<OffloadOptions>();
    assert_debug::<Oversized>();
    assert_debug::<ProcessPool>();
    assert_debug::<Reactor>();
    assert_debug::<Reactors>();
    assert_debug::<ReactorsHandle>();
    assert_debug::<Stats>();
    assert_debug::<Terminator<'static>>();
    assert_debug::<TimerId>();
    assert_debug::<Family>();
    assert_debug::<Mode>();
    assert_debug::<Request>();
    assert_debug::<RunningServer>();
    assert_debug::<Server>();
    assert_debug::<ServerBuilder>();
    assert_debug::<ServerHandle>();
    assert_debug::<sockloop::context::Stream>();
    assert_debug::<sockloop::context::Datagram>();
    assert_debug::<sockloop::activation::SocketKind>();
    assert_debug::<sockloop::activation::InheritedSocket>();
    assert_debug::<sockloop::proxy::ProxyHeader>();
    assert_debug::<sockloop::proxy::Parsed>();
    assert_debug::<sockloop::proxy::Peeked>();
    assert_debug::<sockloop::restart::RestartOptions>();
}

#[test]
fn debug_shows_state_not_buffers() -> std::io::Result<()> {
    let mut reactor = Reactor::new()?;
    let any: Addr = "127.0.0.1:0".parse()?;
    reactor.listen(&any, |_| Framed::new(NotDebug))?;
    let shown = format!("{reactor:?}");
    assert!(shown.contains("sources: 1"), "{shown}");
    assert!(shown.contains("stats: Stats"), "{shown}");
    assert!(
        format!("{:?}", Framed::new(NotDebug)).contains("NotDebug"),
        "the handler's type is named"
    );

    let builder = ServerBuilder::new(Family::Tcp).bind(any);
    let shown = format!("{builder:?}");
    assert!(
        shown.contains("127.0.0.1:0") && shown.contains("Sync"),
        "{shown}"
    );
    let server = builder.spawn(|| |_: &mut Request| Ok(()))?;
    let port = server.server_address()[0].to_string();
    assert!(format!("{server:?}").contains(&port), "{server:?}");
    assert!(format!("{:?}", server.handle()).contains(&port));
    server.shutdown()
}

/// Getters take `&self`: they are callable through shared references (this
/// does not compile where one takes `&mut self`).
fn describe(cx: &Context<'_>) -> String {
    format!(
        "{} {} closing={} reading={} queued={} backed_up={}",
        cx.peer_addr().unwrap(),
        cx.local_addr().unwrap(),
        cx.is_closing(),
        cx.is_reading(),
        cx.queued(),
        cx.is_backed_up(cx.id()),
    )
}

fn describe_reactor(r: &Reactor, id: ConnId) -> String {
    format!(
        "{} {} {} {} {} {} {}",
        r.peer_addr(id).unwrap(),
        r.local_addr(id).unwrap(),
        r.is_closing(id),
        r.is_reading(id),
        r.queued(id),
        r.queued_memory(id),
        r.is_backed_up(id),
    )
}

fn describe_datagram(cx: &DatagramContext<'_>) -> String {
    cx.local_addr().unwrap().to_string()
}

struct Describe;

impl Protocol for Describe {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut bytes::BytesMut) {
        data.clear();
        let mut line = describe(cx);
        let id = cx.id();
        line += &format!(" | {}\n", describe_reactor(cx.reactor(), id));
        cx.write(line.as_bytes());
        cx.close();
    }
}

struct DescribeDatagram;

impl DatagramProtocol for DescribeDatagram {
    fn on_datagram(&mut self, cx: &mut DatagramContext<'_>, _: &[u8], from: &Addr) {
        let line = describe_datagram(cx);
        cx.send_to(line.as_bytes(), from).unwrap();
    }
}

#[test]
fn getters_take_shared_references() -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut reactor = Reactor::new()?;
    let any: Addr = "127.0.0.1:0".parse()?;
    let listener = reactor.listen(&any, |_| Describe)?;
    let stream_addr = reactor.listener_addr(listener)?.as_inet().unwrap();
    let socket = reactor.bind_datagram(&any, DescribeDatagram)?;
    let datagram_addr = reactor.local_addr(socket)?.as_inet().unwrap();
    let handle = reactor.handle();
    let client = std::thread::spawn(move || -> std::io::Result<(String, String)> {
        let mut s = std::net::TcpStream::connect(stream_addr)?;
        s.write_all(b"?")?;
        let mut line = String::new();
        s.read_to_string(&mut line)?;
        let u = std::net::UdpSocket::bind("127.0.0.1:0")?;
        u.send_to(b"?", datagram_addr)?;
        let mut buf = [0; 128];
        let n = u.recv(&mut buf)?;
        handle.stop();
        Ok((line, String::from_utf8_lossy(&buf[..n]).into_owned()))
    });
    reactor.run()?;
    let (line, datagram) = client.join().unwrap()?;
    let client_side = format!("127.0.0.1:{}", stream_addr.port());
    assert!(line.contains(&client_side), "{line}");
    assert!(
        line.contains("closing=false reading=true queued=0"),
        "{line}"
    );
    assert_eq!(datagram, datagram_addr.to_string());
    Ok(())
}

fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn errors_are_typed() {
    assert_error::<CloseReason>();
    assert_error::<FrameError>();
    assert_error::<QueueFull>();
    assert_error::<HttpError>();
    assert_eq!(
        HttpError::HeadTooLarge.to_string(),
        "431 Request Header Fields Too Large"
    );
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let reason = CloseReason::ConnectFailed(reset);
    let source = std::error::Error::source(&reason).expect("the socket error");
    assert_eq!(source.to_string(), "connection refused");
    assert!(CloseReason::IdleTimeout.to_string().contains("idle"));
}

/// Writes more than `max_queued` to its own connection and reports what the
/// write and the close said.
struct Overfill(std::sync::mpsc::Sender<String>);

impl Protocol for Overfill {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut bytes::BytesMut) {
        data.clear();
        let id = cx.id();
        let err = cx.reactor().write(id, &[b'x'; 4096]).unwrap_err();
        let limit = err.get_ref().and_then(|e| e.downcast_ref::<QueueFull>());
        let _ = self
            .0
            .send(format!("{:?} {:?}", err.kind(), limit.map(|f| f.limit())));
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
        cx.stop();
    }
}

#[test]
fn a_full_write_queue_is_quota_exceeded_with_the_limit_inside() -> std::io::Result<()> {
    use std::io::Write;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reactor = Reactor::new()?;
    let mut opts = ListenOptions::default();
    opts.conn.max_queued = Some(1024);
    let any: Addr = "127.0.0.1:0".parse()?;
    let id = reactor.listen_with(&any, &opts, move |_| Overfill(tx.clone()))?;
    let addr = reactor.listener_addr(id)?.as_inet().unwrap();
    let mut client = std::net::TcpStream::connect(addr)?;
    client.write_all(b"go")?;
    reactor.run()?;
    assert_eq!(rx.recv().unwrap(), "QuotaExceeded Some(1024)");
    assert!(rx.recv().unwrap().contains("1024-byte limit"));
    Ok(())
}

#[test]
fn a_full_datagram_queue_is_quota_exceeded_and_the_socket_stays() -> std::io::Result<()> {
    struct Quiet;
    impl DatagramProtocol for Quiet {
        fn on_datagram(&mut self, _: &mut DatagramContext<'_>, _: &[u8], _: &Addr) {}
    }
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let ours = dir.join(format!("sockloop-api-{pid}-ours.sock"));
    let theirs = dir.join(format!("sockloop-api-{pid}-theirs.sock"));
    let _ = std::fs::remove_file(&theirs);
    // A peer that never reads: its receive queue fills, then ours does.
    let _peer = std::os::unix::net::UnixDatagram::bind(&theirs)?;
    let mut reactor = Reactor::new()?;
    let mut opts = ListenOptions::default();
    opts.conn.max_queued = Some(8192);
    let socket = reactor.bind_datagram_with(&Addr::unix(&ours)?, &opts, Quiet)?;
    let to = Addr::unix(&theirs)?;
    let mut error = None;
    for _ in 0..100_000 {
        if let Err(e) = reactor.send_to(socket, &[0; 1024], &to) {
            error = Some(e);
            break;
        }
    }
    let _ = std::fs::remove_file(&theirs);
    let error = error.expect("the queue filled");
    assert_eq!(error.kind(), std::io::ErrorKind::QuotaExceeded, "{error}");
    let full = error
        .get_ref()
        .unwrap()
        .downcast_ref::<QueueFull>()
        .unwrap();
    assert_eq!(full.limit(), 8192);
    assert!(reactor.local_addr(socket).is_ok(), "the socket stays open");
    Ok(())
}

fn assert_key<T: Eq + std::hash::Hash + std::str::FromStr + std::fmt::Display>() {}

#[test]
fn bound_addresses_print_and_parse_back() -> std::io::Result<()> {
    assert_key::<Addr>();
    struct Quiet;
    impl Protocol for Quiet {
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut bytes::BytesMut) {}
    }
    let path = std::env::temp_dir().join(format!("sockloop-api-{}-bound.sock", std::process::id()));
    let mut reactor = Reactor::new()?;
    let mut seen = std::collections::HashSet::new();
    for wanted in [
        "127.0.0.1:0",
        "[::1]:0",
        &format!("unix:{}", path.display()),
    ] {
        let id = reactor.listen(&wanted.parse()?, |_| Quiet)?;
        let bound = reactor.listener_addr(id)?;
        let text = bound.to_string();
        let again: Addr = text.parse()?;
        assert_eq!(again, bound, "{text}");
        assert!(seen.insert(again), "{text}");
        assert!(seen.contains(&bound));
    }
    Ok(())
}

/// Every page of docs/ is a module of `sockloop::guide`, so it is readable
/// where the crate is published (build.rs prepares them, src/guide.rs
/// includes them).
#[test]
fn every_docs_page_is_in_the_guide() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("src/guide.rs")).unwrap();
    let build = std::fs::read_to_string(root.join("build.rs")).unwrap();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let page = path.file_stem().unwrap().to_str().unwrap();
            assert!(
                guide.contains(&format!("/{page}.md\"))]\npub mod {page} {{}}")),
                "{page} is not in src/guide.rs"
            );
            assert!(
                build.contains(&format!("\"{page}\",")),
                "build.rs does not prepare {page}"
            );
        }
    }
}

/// Decoders refuse input with a typed `FrameError`, not a `String`.
#[test]
fn decoders_refuse_with_typed_errors() {
    use bytes::BytesMut;
    let mut buf = BytesMut::from(&b"99:"[..]);
    let err = Netstrings::default().decode(&mut buf, 8).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLong {
            limit: 8,
            length: Some(99)
        }
    );
    let mut buf = BytesMut::from(&b"x:abc,"[..]);
    let err = Netstrings::default().decode(&mut buf, 8).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
    let mut buf = BytesMut::from(&b"*1\r\n+x\r\n"[..]);
    match Resp::default().decode(&mut buf, 64).unwrap_err() {
        FrameError::Malformed(why) => assert!(why.contains("expected '$'"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Options that cannot be meant are refused when they are given, not met
/// by the first connection.
#[test]
fn impossible_options_are_refused_up_front() -> std::io::Result<()> {
    struct Quiet;
    impl Protocol for Quiet {
        fn on_data(&mut self, _: &mut Context<'_>, _: &mut bytes::BytesMut) {}
    }
    let mut reactor = Reactor::new()?;
    let any: Addr = "127.0.0.1:0".parse()?;
    let mut upside_down = ListenOptions::default();
    upside_down.conn.high_water = 1024; // below the default low_water (16 KiB)
    let err = reactor
        .listen_with(&any, &upside_down, |_| Quiet)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("low_water"), "{err}");
    let err = reactor
        .connect_with(&any, &upside_down.conn, Quiet)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    // Consistent settings pass.
    upside_down.conn.low_water = 512;
    reactor.listen_with(&any, &upside_down, |_| Quiet)?;
    // An offload pool without workers would run nothing, however it is set.
    let mut idle_pool = sockloop::OffloadOptions::default();
    idle_pool.workers = 0;
    let err = Reactor::with_offload(idle_pool.clone()).unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
    #[allow(deprecated)]
    let err = reactor.set_offload_options(idle_pool).unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
    Ok(())
}
