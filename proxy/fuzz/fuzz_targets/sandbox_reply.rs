//! `cargo +nightly fuzz run sandbox_reply` (from `proxy/`): see `media_edge::fuzzing::sandbox_reply`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = media_edge::fuzzing::sandbox_reply(data) {
        panic!("{e}");
    }
});
