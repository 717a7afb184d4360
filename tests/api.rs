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
