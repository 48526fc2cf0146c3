//! `cargo +nightly fuzz run origin_request` (from `proxy/`): see `media_edge::fuzzing::origin_request`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = media_edge::fuzzing::origin_request(data) {
        panic!("{e}");
    }
});
