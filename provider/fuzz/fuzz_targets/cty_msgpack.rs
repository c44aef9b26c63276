//! Decoding arbitrary bytes as msgpack must never panic, and whatever decodes
//! must encode and decode back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_provider::cty::{decode_msgpack, encode_msgpack, Type};

fuzz_target!(|data: &[u8]| {
    // First byte picks the type so the fuzzer explores several shapes.
    let Some((&sel, rest)) = data.split_first() else { return };
    let ty = match sel % 4 {
        0 => Type::Dynamic,
        1 => Type::object([("a", Type::list(Type::String)), ("b", Type::Number), ("c", Type::map(Type::Bool))]),
        2 => Type::set(Type::object([("x", Type::Dynamic)])),
        _ => Type::Tuple(vec![Type::Number, Type::String]),
    };
    if let Ok(v) = decode_msgpack(rest, &ty) {
        let bytes = encode_msgpack(&v, &ty).expect("decoded values re-encode");
        let back = decode_msgpack(&bytes, &ty).expect("encoded values decode");
        assert_eq!(back, v);
    }
});
