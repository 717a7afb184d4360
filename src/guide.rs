//! Guides: the pages of the repository's `docs/` directory, here so they are
//! readable wherever the API docs are.
//!
//! - [`design`]: how the loop works: a turn, how a byte travels, backpressure,
//!   closing, callbacks that never nest, panics, accepting; the module map.
//! - [`asyncore`]: from Python's asyncore, asynchat and the select echo
//!   server to sockloop, part by part.
//! - [`socketserver`]: Python's socketserver in [`crate::server`].
//! - [`offload`]: long work: the reactor alone, offload to threads or
//!   processes, or a threading / forking server.
//! - `tls`: TLS servers and clients (feature `tls`).
//! - [`reliability`]: how sockloop is attacked and checked (fuzzing,
//!   properties, hostile peers, resource exhaustion).
//! - [`benchmarks`]: sockloop beside threaded servers and tokio, measured.
//! - [`deploy`]: systemd socket activation, HAProxy and the PROXY protocol,
//!   zero-downtime restart, one process or several, what to monitor.
//! - [`servers`]: writing real servers: the relay (`Reactor::link`),
//!   decoders (RESP, HTTP requests, netstrings, your own), an input bound for
//!   raw protocols, shared state, how writes leave; the `tcp_proxy`,
//!   `http_hello` and `resp_server` examples.
//!
//! The pages are documentation only: these modules hold no items.

#[doc = include_str!(concat!(env!("OUT_DIR"), "/design.md"))]
pub mod design {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/asyncore.md"))]
pub mod asyncore {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/socketserver.md"))]
pub mod socketserver {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/offload.md"))]
pub mod offload {}

#[cfg(feature = "tls")]
#[doc = include_str!(concat!(env!("OUT_DIR"), "/tls.md"))]
pub mod tls {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/reliability.md"))]
pub mod reliability {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/benchmarks.md"))]
pub mod benchmarks {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/deploy.md"))]
pub mod deploy {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/servers.md"))]
pub mod servers {}
