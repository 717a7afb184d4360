//! Unix signals as a reactor source.
//!
//! `signal-hook` turns a signal into a byte on a self-pipe that the reactor
//! polls like any socket, so the handler runs on the loop thread as ordinary
//! code (it may do anything, unlike a real signal handler).

use std::io;
use std::os::raw::c_int;

use mio::{Interest, Token};
use signal_hook_mio::v1_0::Signals;

use crate::reactor::Source;
use crate::Reactor;

type SignalHandler = Box<dyn FnMut(&mut Reactor, c_int)>;

pub(crate) struct SignalSource {
    signals: Signals,
    /// `None` only while it runs (it borrows the reactor).
    handler: Option<SignalHandler>,
}

impl Reactor {
    /// Calls `handler` on the loop thread whenever one of `signals` arrives
    /// (several arrivals between two turns may be reported once).
    pub fn on_signal(
        &mut self,
        signals: &[c_int],
        handler: impl FnMut(&mut Reactor, c_int) + 'static,
    ) -> io::Result<()> {
        let mut source = Signals::new(signals.iter().copied())?;
        let key = self.sources.vacant_entry().key();
        self.registry()
            .register(&mut source, Token(key), Interest::READABLE)?;
        self.sources.insert(Source::Signals(SignalSource {
            signals: source,
            handler: Some(Box::new(handler)),
        }));
        Ok(())
    }

    /// Makes [`run`](Reactor::run) return on SIGINT or SIGTERM, as a server
    /// program should: a Ctrl-C or `kill` then ends it cleanly (exit code 0
    /// when `main` returns normally).
    pub fn stop_on_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        self.on_signal(&[SIGINT, SIGTERM], |reactor, signal| {
            log::info!("signal {signal} received, stopping");
            reactor.stop();
        })
    }

    pub(crate) fn signal_event(&mut self, key: usize) {
        let Some(Source::Signals(s)) = self.sources.get_mut(key) else {
            return;
        };
        let arrived: Vec<c_int> = s.signals.pending().collect();
        let Some(mut handler) = s.handler.take() else {
            return;
        };
        for signal in arrived {
            handler(self, signal);
        }
        if let Some(Source::Signals(s)) = self.sources.get_mut(key) {
            s.handler = Some(handler);
        }
    }
}
