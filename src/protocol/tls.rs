//! TLS for protocols (feature `tls`): listening and connecting with a
//! `Protocol`; the transport itself is the reactor's (`reactor/tls.rs`).

use std::io;
use std::sync::Arc;

use crate::{Addr, ConnId, ConnOptions, ListenOptions, ListenerId, Protocol, Reactor};

impl Reactor {
    /// Listens for TLS connections on `addr`: each accepted connection does
    /// its handshake with `config` on the loop, then is served by a protocol
    /// from `factory` exactly as [`listen`](Reactor::listen) serves plain
    /// ones (`on_open` once the handshake is done). Shorthand for
    /// [`listen_with`](Reactor::listen_with) with [`ListenOptions::tls`] set.
    pub fn listen_tls<P, F>(
        &mut self,
        addr: &Addr,
        config: Arc<rustls::ServerConfig>,
        factory: F,
    ) -> io::Result<ListenerId>
    where
        P: Protocol,
        F: FnMut(&Addr) -> P + 'static,
    {
        let opts = ListenOptions {
            tls: Some(config),
            ..ListenOptions::default()
        };
        self.listen_with(addr, &opts, factory)
    }

    /// Opens an outgoing TLS connection: connects (bounded by the default
    /// [`ConnOptions::connect_timeout`]), does the handshake verifying the
    /// server's certificate for `server_name` (a DNS name or an IP address)
    /// with `config`, then calls `on_open`. A failed connect ends in
    /// `on_close` with [`CloseReason::ConnectFailed`], a failed handshake
    /// with [`CloseReason::Tls`].
    ///
    /// [`CloseReason::ConnectFailed`]: crate::CloseReason::ConnectFailed
    /// [`CloseReason::Tls`]: crate::CloseReason::Tls
    pub fn connect_tls(
        &mut self,
        addr: &Addr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        proto: impl Protocol,
    ) -> io::Result<ConnId> {
        self.connect_tls_with(addr, server_name, config, &ConnOptions::default(), proto)
    }

    /// [`connect_tls`](Reactor::connect_tls) with explicit connection options.
    pub fn connect_tls_with(
        &mut self,
        addr: &Addr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        opts: &ConnOptions,
        proto: impl Protocol,
    ) -> io::Result<ConnId> {
        self.connect_tls_handler(addr, server_name, config, opts, Box::new(proto))
    }
}
