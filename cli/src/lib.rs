//! The commands behind the `exo` and `exocom` binaries.
