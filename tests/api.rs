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
