//! Sockets and their options: binding listeners and datagram sockets
//! (`socket.rs`), the options a server sets (`options.rs`), addresses,
//! allow-lists, the crate's descriptor registry, socket activation, the
//! PROXY protocol and TLS configuration.

pub mod activation;
pub(crate) mod addr;
pub(crate) mod allow;
pub(crate) mod blocking;
mod options;
pub(crate) mod owned;
pub mod proxy;
mod socket;
#[cfg(feature = "tls")]
pub mod tls;

pub use options::{ConnOptions, LingeringClose, ListenOptions};
pub(crate) use socket::*;
