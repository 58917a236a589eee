//! The commands behind the `exo` and `exocom` binaries.

pub mod bench;
pub mod exocom;
pub mod send;
