//! Half-sync / half-async: the reactor keeps every socket, only the long work
//! moves, and its result comes back to the loop to be written without
//! blocking.
//!
//! - [`Context::offload`](crate::Context::offload) runs a closure on the
//!   reactor's bounded thread pool ([`OffloadOptions`]).
//! - [`ProcessPool`] runs a function in pre-forked worker processes, for
//!   work that must not share the server's process.
//!
//! Both hold back the connections that feed them when they are full (those
//! stop reading), so memory stays bounded and nothing is dropped. Work
//! follows its connection: a connection that closes loses its work not
//! started yet (it never runs) and the results of its running work; one
//! that closes after flush (`close()`, the default `on_eof`) waits for its
//! answers first.
//! `docs/offload.md` compares them with the reactor alone and with threading
//! and forking servers.

mod process;
pub(crate) mod thread_set;
mod threads;

pub use process::ProcessPool;
pub use threads::OffloadOptions;
