//! The properties the fuzz targets check, in modules of their own so that
//! tests/properties.rs (in the main crate) runs the very same checks with
//! proptest: it includes these files with `#[path]`.

pub mod connection;
pub mod framing;
