//! UDP and Unix datagram sockets on the reactor.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;
use sockloop::{Addr, DatagramContext, DatagramProtocol};

/// Sends every datagram back to its sender.
struct Echo;

impl DatagramProtocol for Echo {
    fn on_datagram(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Addr) {
        if let Err(e) = cx.send_to(data, from) {
            log::warn!("cannot answer {from}: {e}");
        }
    }
}

fn echo_at(addr: Addr) -> Server {
    Server::start(move |r| {
        let id = r.bind_datagram(&addr, Echo).unwrap();
        vec![r.local_addr(id).unwrap()]
    })
}

#[test]
fn udp_echo_including_an_empty_datagram() {
    let server = echo_at(any_port());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 2048];
    for msg in [&b"hello world\n"[..], b"", &[0xAB; 1400]] {
        client.send_to(msg, server.inet(0)).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg);
        assert_eq!(from, server.inet(0));
    }
}

#[test]
fn udp_echo_on_ipv6_loopback() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    }
    let server = echo_at("[::1]:0".parse().unwrap());
    let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client.send_to(b"six", server.inet(0)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"six");
}

#[test]
fn unix_datagram_echo_to_a_bound_client() {
    let path = temp_path("dgram-server");
    let server = echo_at(Addr::unix(&path).unwrap());
    // The client binds a path of its own, or the server could not answer.
    let client_path = temp_path("dgram-client");
    let client = UnixDatagram::bind(&client_path).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 64];
    for msg in [&b"hello world\n"[..], b""] {
        client.send_to(msg, &path).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg);
    }
    server.stop();
    assert!(!path.exists(), "socket file left behind");
    std::fs::remove_file(client_path).unwrap();
}

#[test]
fn an_unnamed_unix_client_cannot_be_answered_but_does_not_hurt() {
    let path = temp_path("dgram-unnamed");
    let _server = echo_at(Addr::unix(&path).unwrap());
    let anonymous = UnixDatagram::unbound().unwrap();
    anonymous.send_to(b"who am i", &path).unwrap();
    let named_path = temp_path("dgram-named");
    let named = UnixDatagram::bind(&named_path).unwrap();
    named.set_read_timeout(Some(LIMIT)).unwrap();
    named.send_to(b"still here", &path).unwrap();
    let mut buf = [0u8; 16];
    let n = named.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
    anonymous
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(anonymous.recv(&mut buf).is_err());
    std::fs::remove_file(named_path).unwrap();
}

#[test]
fn many_datagrams_in_a_burst_are_all_answered() {
    let server = echo_at(any_port());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    // Fewer than the socket buffers hold, so loopback drops none.
    for i in 0..200u32 {
        client.send_to(&i.to_be_bytes(), server.inet(0)).unwrap();
    }
    let mut seen = [false; 200];
    let mut buf = [0u8; 8];
    for _ in 0..200 {
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(n, 4);
        seen[u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
}
