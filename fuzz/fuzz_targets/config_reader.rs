//! The configuration readers from text: service.yml, SERVICE_DATA routes,
//! application.yml (first byte picks one).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| exoservice::bus::fuzz::read_config(data));
