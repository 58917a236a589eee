//! The commands behind the `exo` and `exocom` binaries.

#![warn(missing_docs)]

pub mod bench;
pub mod bench_langs;
pub mod check;
pub mod dead_letters;
pub mod exocom;
pub mod run;
pub mod send;
pub mod status;
pub mod status_nats;
