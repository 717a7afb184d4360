//! Sources: what the loop serves. Each kind (a stream connection, a
//! listener, a datagram socket, the signal pipe, a connection waiting for
//! its PROXY header) implements [`EventSource`], and the loop
//! (`mod.rs`) knows only that trait: it hands a readiness event, or a turn
//! on the ready list, to whatever occupies the event's slot.
//!
//! calloop's `EventSource` is the model, with one difference: its methods
//! take the reactor and the slot's key, not `&mut self`. A source stays in
//! its slot while it runs, because the user code it calls reaches its own
//! source, and every other one, through the reactor by id (a callback
//! writes to its connection, a handler closes its listener).
//!
//! The slots hold a [`Source`] enum, whose arms each call one kind's impl,
//! rather than `Box<dyn ...>`: the reactor's operations by id need the
//! concrete kind (a write looks up a `Conn` on every call), which a trait
//! object would give only through a downcast on the hot path, and the
//! enum spares a pointer chase and an allocation per connection. Adding a
//! kind is one arm per method here and one impl next to the kind.

use mio::event::Event;

use crate::reactor::conn::Conn;
use crate::reactor::datagram::DatagramSocket;
use crate::reactor::listener::ListenerState;
use crate::reactor::proxy_wait::ProxyWait;
use crate::reactor::signals::SignalSource;
use crate::Reactor;

/// One kind of source on the loop.
pub(crate) trait EventSource {
    /// The generation of the id that names this source (`None`: no id names
    /// it), so that a stale event, ready-list entry or id is told apart
    /// from a new occupant of the slot.
    fn gen(&self) -> Option<u32>;

    /// The source in slot `key` is ready (`event`: what the kernel said).
    fn ready(reactor: &mut Reactor, key: usize, event: &Event)
    where
        Self: Sized;

    /// The source in slot `key` is on the ready list: it had more to do
    /// when its budget ran out, or something let it go on (a resume, a
    /// freed connection slot), with no new event to say so.
    fn resume(reactor: &mut Reactor, key: usize)
    where
        Self: Sized,
    {
        let _ = (reactor, key);
    }
}

/// What a slot of the reactor holds.
pub(crate) enum Source {
    Listener(ListenerState),
    Conn(Conn),
    Datagram(DatagramSocket),
    Signals(SignalSource),
    /// An accepted connection waiting for its PROXY header.
    ProxyWait(ProxyWait),
    /// A closed source whose slot stays reserved until the end of the turn, so
    /// that an event already fetched for it cannot reach a new occupant.
    Closed,
}

/// The kind of the source in a slot, to call its impl once the borrow of
/// the slot has ended.
#[derive(Clone, Copy)]
enum Kind {
    Listener,
    Conn,
    Datagram,
    Signals,
    ProxyWait,
}

impl Source {
    fn kind(&self) -> Option<Kind> {
        Some(match self {
            Source::Listener(_) => Kind::Listener,
            Source::Conn(_) => Kind::Conn,
            Source::Datagram(_) => Kind::Datagram,
            Source::Signals(_) => Kind::Signals,
            Source::ProxyWait(_) => Kind::ProxyWait,
            Source::Closed => return None,
        })
    }

    /// See [`EventSource::gen`]; a closed slot has none.
    pub(crate) fn gen(&self) -> Option<u32> {
        match self {
            Source::Listener(s) => s.gen(),
            Source::Conn(s) => s.gen(),
            Source::Datagram(s) => s.gen(),
            Source::Signals(s) => s.gen(),
            Source::ProxyWait(s) => s.gen(),
            Source::Closed => None,
        }
    }

    /// Hands an event to the source in slot `key`, whatever its kind.
    #[inline]
    pub(crate) fn ready(reactor: &mut Reactor, key: usize, event: &Event) {
        match reactor.sources.get(key).and_then(Source::kind) {
            Some(Kind::Conn) => Conn::ready(reactor, key, event),
            Some(Kind::Listener) => ListenerState::ready(reactor, key, event),
            Some(Kind::Datagram) => DatagramSocket::ready(reactor, key, event),
            Some(Kind::Signals) => SignalSource::ready(reactor, key, event),
            Some(Kind::ProxyWait) => ProxyWait::ready(reactor, key, event),
            None => {}
        }
    }

    /// Gives the source in slot `key` its turn from the ready list.
    pub(crate) fn resume(reactor: &mut Reactor, key: usize) {
        match reactor.sources.get(key).and_then(Source::kind) {
            Some(Kind::Conn) => Conn::resume(reactor, key),
            Some(Kind::Listener) => ListenerState::resume(reactor, key),
            Some(Kind::Datagram) => DatagramSocket::resume(reactor, key),
            Some(Kind::Signals) => SignalSource::resume(reactor, key),
            Some(Kind::ProxyWait) => ProxyWait::resume(reactor, key),
            None => {}
        }
    }
}
