//! A model of Terraform's `cty` values and the two wire encodings of a
//! `DynamicValue`: MessagePack (what Terraform sends) and JSON (stored state).
//!
//! Pure code: no I/O, no protobuf. Every decoder is bounded and fuzzed
//! (`provider/fuzz`).

mod json;
mod msgpack;
mod types;
mod value;

pub use json::{decode as decode_json, decode_lenient as decode_json_lenient, encode as encode_json, JsonError};
pub use msgpack::{decode as decode_msgpack, encode as encode_msgpack, MsgpackError};
pub use types::{Type, TypeError};
pub use value::{Number, Value};

/// Deepest nesting any decoder follows before giving up; Terraform schemas are
/// nowhere near this, and it keeps hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 64;
