//! The commands behind the `exo` and `exocom` binaries.

#![warn(missing_docs)]

pub mod bench;
pub mod bench_langs;
pub mod check;
pub mod exocom;
pub mod run;
pub mod send;
pub mod status;
