//! `cargo +nightly fuzz run front_door_head` (from `proxy/`): see `media_edge::fuzzing::front_door_head`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = media_edge::fuzzing::front_door_head(data) {
        panic!("{e}");
    }
});
