//! What the reactor calls when something happens to a connection or a
//! datagram socket: the low-level handler a source holds, with the events
//! as the loop sees them (the reactor and the source's id).
//!
//! The reactor knows nothing of the callback API built on top: the protocol
//! layer (`src/protocol/`) adapts a [`Protocol`](crate::Protocol) or a
//! [`DatagramProtocol`](crate::DatagramProtocol) into these traits with one
//! generic impl each, which builds its `Context` on the stack; the call
//! through the handler's vtable is the only indirection, as it was when
//! connections held their protocol.

use bytes::BytesMut;

use crate::{Addr, CloseReason, ConnId, Reactor, TimerId};

/// The events of one stream connection. Each is called with the protocol
/// taken out of its slot, so it may borrow the whole reactor; a panic is
/// caught by the reactor (see `Reactor::call`).
pub(crate) trait ConnHandler: 'static {
    /// The connection is established.
    fn on_open(&mut self, reactor: &mut Reactor, id: ConnId);
    /// Input arrived: consume what is used, leave an incomplete frame.
    fn on_data(&mut self, reactor: &mut Reactor, id: ConnId, data: &mut BytesMut);
    /// The write queue came down from high water to low water.
    fn on_drained(&mut self, reactor: &mut Reactor, id: ConnId);
    /// The peer will send no more.
    fn on_eof(&mut self, reactor: &mut Reactor, id: ConnId);
    /// A timer set on the connection expired.
    fn on_timer(&mut self, reactor: &mut Reactor, id: ConnId, timer: TimerId);
    /// The reactor is shutting down gracefully.
    fn on_shutdown(&mut self, reactor: &mut Reactor, id: ConnId);
    /// The connection is gone; called once, last.
    fn on_close(&mut self, reactor: &mut Reactor, id: ConnId, reason: &CloseReason);
}

/// The events of one datagram socket.
pub(crate) trait DatagramHandler: 'static {
    /// One datagram arrived from `from`.
    fn on_datagram(&mut self, reactor: &mut Reactor, id: ConnId, data: &[u8], from: &Addr);
    /// A timer set on the socket expired.
    fn on_timer(&mut self, reactor: &mut Reactor, id: ConnId, timer: TimerId);
    /// The socket is closed; called once, last.
    fn on_close(&mut self, reactor: &mut Reactor, id: ConnId, reason: &CloseReason);
}
