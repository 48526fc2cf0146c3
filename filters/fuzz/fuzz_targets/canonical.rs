//! Any canonical query that parses is a fixed point of to/from canonical form.
#![no_main]

use filters::TransformSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|q: &str| {
    if let Ok(s) = TransformSpec::from_canonical_query(q) {
        let c = s.to_canonical_query();
        assert_eq!(TransformSpec::from_canonical_query(&c).expect("reparses"), s);
    }
});
