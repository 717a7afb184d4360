//! Without the `tls` feature no connection has TLS state: `TlsConn` has no
//! value, so the calls below are never made.

use std::io;

use bytes::BytesMut;

use crate::net::Stream;
use crate::reactor::conn::Conn;
use crate::reactor::wqueue::{TailPool, WriteQueue};
use crate::{CloseReason, Reactor, TimerId};

pub(crate) enum TlsConn {}

impl TlsConn {
    pub(crate) fn encrypt(&mut self, _: &[u8], _: &mut WriteQueue, _: &mut TailPool) {
        match *self {}
    }

    pub(crate) fn queue_close_notify(&mut self, _: &mut WriteQueue, _: &mut TailPool) -> bool {
        match *self {}
    }

    pub(crate) fn notify_due(&self) -> bool {
        match *self {}
    }

    pub(crate) fn read(
        &mut self,
        _: &Stream,
        _: &mut WriteQueue,
        _: &mut TailPool,
        _: &mut BytesMut,
        _: &mut bool,
    ) -> io::Result<usize> {
        match *self {}
    }
}

impl Conn {
    pub(crate) fn tls_held(&self) -> usize {
        0
    }

    pub(crate) fn tls_finish(&mut self, _: &mut CloseReason) -> Option<TimerId> {
        None
    }
}

impl Reactor {
    pub(crate) fn tls_added(&mut self, _: crate::ConnId) {}

    pub(crate) fn tls_handshake_expired(&mut self, _: crate::ConnId) {}

    pub(crate) fn tls_events(&mut self, _: usize) -> bool {
        true
    }
}
