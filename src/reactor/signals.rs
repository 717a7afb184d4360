//! Unix signals as a reactor source.
//!
//! `signal-hook` turns a signal into a byte on a self-pipe that the reactor
//! polls like any socket, so the handler runs on the loop thread as ordinary
//! code (it may do anything, unlike a real signal handler).

use std::io;
use std::os::raw::c_int;

use mio::{Interest, Token};
use signal_hook_mio::v1_0::Signals;

use crate::reactor::source::EventSource;
use crate::reactor::Source;
use crate::Reactor;

type SignalHandler = Box<dyn FnMut(&mut Reactor, c_int)>;

pub(crate) struct SignalSource {
    signals: Signals,
    /// `None` only while it runs (it borrows the reactor).
    handler: Option<SignalHandler>,
}

impl EventSource for SignalSource {
    /// The signal pipe is named by no id.
    fn gen(&self) -> Option<u32> {
        None
    }

    fn ready(reactor: &mut Reactor, key: usize, _: &mio::event::Event) {
        reactor.signal_event(key);
    }
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

    /// Stops on SIGINT, SIGTERM or SIGHUP (the terminal went away) as a
    /// server program should: the first one starts a [graceful
    /// shutdown](Reactor::shutdown_graceful) with `grace` for open
    /// connections to finish, a second one stops at once
    /// ([`stop_now`](Reactor::stop_now): not even running offload jobs are
    /// waited for). Either way [`run`](Reactor::run) returns normally (exit
    /// code 0 when `main` does), and Unix socket files are removed. SIGQUIT
    /// keeps its default.
    pub fn stop_on_signals(&mut self, grace: std::time::Duration) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        self.on_signal(&[SIGINT, SIGTERM, SIGHUP], move |reactor, signal| {
            if reactor.draining {
                log::info!("signal {signal} received again, stopping now");
                reactor.stop_now();
            } else {
                log::info!("signal {signal} received, shutting down");
                reactor.shutdown_graceful(grace);
            }
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
            self.guarded("a signal handler", |r| handler(r, signal));
        }
        if let Some(Source::Signals(s)) = self.sources.get_mut(key) {
            s.handler = Some(handler);
        }
    }
}
