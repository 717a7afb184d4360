//! Identifiers handed to user code: a slot index plus a generation.
//!
//! Slots are reused as connections come and go; the generation makes an old
//! id different from the new occupant's, so a late write or timer aimed at a
//! closed connection is dropped instead of reaching a stranger (the fd-reuse
//! bug of asyncore, bpo-30931).

use std::fmt;

macro_rules! generational_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            pub(crate) key: u32,
            pub(crate) gen: u32,
        }

        impl $name {
            pub(crate) fn new(key: usize, gen: u32) -> $name {
                $name { key: key as u32, gen }
            }

            pub(crate) fn key(self) -> usize {
                self.key as usize
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}.{}"), self.key, self.gen)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

generational_id!(
    /// Names one stream connection or datagram socket of a reactor.
    ConnId,
    "conn#"
);
generational_id!(
    /// Names one listener of a reactor.
    ListenerId,
    "listener#"
);
generational_id!(
    /// Names one pending timer; cancelling a fired or cancelled timer does nothing.
    TimerId,
    "timer#"
);
