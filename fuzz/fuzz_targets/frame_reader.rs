//! The frame reader: `Message::parse` and the bus's own reader on the same
//! bytes (they must agree), and the writers round-trip what they accept.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| exoservice::bus::fuzz::read_frame(data));
