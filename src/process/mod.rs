//! Processes: the fork server that forks every child of the crate from a clean
//! single-threaded process, and what a fresh child resets.

pub(crate) mod child;
pub(crate) mod forkserver;
mod serve;
pub(crate) mod wire;
