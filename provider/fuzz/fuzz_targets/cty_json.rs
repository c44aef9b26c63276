//! JSON state decoding must never panic; decoded values round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_provider::cty::{decode_json, encode_json, Type};

fuzz_target!(|data: &[u8]| {
    let ty = Type::object([
        ("s", Type::String),
        ("n", Type::Number),
        ("l", Type::list(Type::map(Type::String))),
        ("d", Type::Dynamic),
    ]);
    if let Ok(v) = decode_json(data, &ty) {
        let bytes = encode_json(&v, &ty).expect("decoded values re-encode");
        assert_eq!(decode_json(&bytes, &ty).expect("encoded values decode"), v);
    }
});
