//! `cargo +nightly fuzz run disk_format` (from `proxy/`): see `media_edge::fuzzing::disk_format`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = media_edge::fuzzing::disk_format(data) {
        panic!("{e}");
    }
});
