//! A write after `close()` is not lost silently: a warning says how many
//! bytes were dropped (issue 16: a buffer flushed after close lost its data
//! with only a debug line).

mod common;

use std::io::Write;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use common::*;
use sockloop::{Context, Protocol};

/// Collects the warnings of this test binary.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

/// Answers, closes, then writes more (a coalescing buffer flushed too late).
struct Late;

impl Protocol for Late {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &mut BytesMut) {
        data.clear();
        cx.write(b"bye\n");
        cx.close();
        cx.write(b"12345");
        cx.write_bytes(Bytes::from_static(b"1234567"));
    }
}

#[test]
fn writes_after_close_are_reported_with_their_size() {
    log::set_logger(&LOGS).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let server = Server::start(|r| {
        let id = r.listen(&any_port(), |_| Late).unwrap();
        vec![r.listener_addr(id).unwrap()]
    });
    let mut c = connect(server.inet(0));
    c.write_all(b"hi").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"bye\n");
    server.stop();
    let logs = LOGS.0.lock().unwrap();
    assert!(
        logs.iter().any(|l| l.contains("write of 5 bytes dropped")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("write of 7 bytes dropped")),
        "{logs:?}"
    );
}
