//! The bus's frame handling: scripts of frames from four fake connections
//! (registrations, messages, garbage, disconnects) through the routing
//! logic, without the network.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| exoservice::bus::fuzz::route_frames(data));
