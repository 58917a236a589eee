//! An ExoCom-compatible bus.
