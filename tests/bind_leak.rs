//! Alone in its test binary: it counts the process's open descriptors, which
//! tests running beside it would change.

use sockloop::{Addr, Reactor};

struct Nothing;
impl sockloop::Protocol for Nothing {
    fn on_data(&mut self, _: &mut sockloop::Context<'_>, _: &mut bytes::BytesMut) {}
}

#[test]
fn failed_binds_leak_no_descriptors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: Addr = taken.local_addr().unwrap().into();
    let mut reactor = Reactor::new().unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    for _ in 0..1024 {
        assert!(reactor.listen(&addr, |_| Nothing).is_err());
    }
    assert_eq!(fds(), before);
    // socketserver's test_tcpserver_bind_leak: a server whose second
    // address fails closes the first one too.
    struct Nop;
    impl sockloop::server::RequestHandler for Nop {
        fn handle(&mut self, _: &mut sockloop::server::Request) -> std::io::Result<()> {
            Ok(())
        }
    }
    let before = fds();
    for _ in 0..1024 {
        let built = sockloop::server::ServerBuilder::new(sockloop::server::Family::Tcp)
            .bind("127.0.0.1:0".parse().unwrap())
            .bind(addr.clone())
            .allow_reuse_address(false)
            .build(|| Nop);
        assert!(built.is_err());
    }
    assert_eq!(fds(), before);
}
