//! (path, query, headers) → resolve never panics, and every success is self-consistent.
#![no_main]

use filters::{resolve, FiltersConfig, RequestParts, ResolveOptions, TransformSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // Fields separated by newlines: path, query, then header values.
    let mut it = s.split('\n');
    let path = it.next().unwrap_or("");
    let query = it.next();
    let names = ["Sec-CH-Viewport-Width", "Sec-CH-DPR", "Width", "Viewport-Width", "CF-Device-Type", "DPR"];
    let headers: Vec<(&str, &str)> = names.iter().copied().zip(it).collect();
    let headers = headers.as_slice();
    let req = RequestParts { path, query, headers: &headers };
    for opts in [ResolveOptions::default(), ResolveOptions { akamai_snapping: false, derivative_matching: false, responsive: false }] {
        if let Ok(r) = resolve(&req, &FiltersConfig::default(), &opts) {
            let c = r.spec.to_canonical_query();
            let back = TransformSpec::from_canonical_query(&c).expect("canonical query parses");
            assert_eq!(back, r.spec);
            assert_eq!(filters::cache_key(&back, &r.source), r.cache_key);
        }
    }
});
