//! Bounding what goes into an audit event. Names, reasons and claims in an
//! event often come from an unauthenticated caller (a join token name, a
//! refused credential's claims); stored as sent, 1000 refused joins with a
//! 60 KB name added 346 MB and made `sigil audit` pages exceed the gRPC
//! message limit. Every string is cut to a byte budget (on a character
//! boundary, saying how much was cut) and control characters are escaped, so a
//! value can neither grow the log without bound nor forge lines in a text view.

use serde_json::{Map, Value};

/// Most bytes of a field of an event (kind, actor, resource, outcome).
pub const MAX_FIELD_BYTES: usize = 256;
/// Most bytes of one string inside the detail.
pub const MAX_DETAIL_STRING_BYTES: usize = 1024;
/// Most bytes of the whole detail as JSON; a larger detail is replaced by a
/// note of its size.
pub const MAX_DETAIL_BYTES: usize = 4096;
/// Most entries of one object or array inside the detail.
const MAX_DETAIL_ENTRIES: usize = 64;

/// `s` with control characters escaped (as [`sigil_core::logsafe::Escaped`] does
/// for logs), cut to `max` bytes.
pub fn text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut buf = [0; 4];
    for (i, c) in s.char_indices() {
        let piece = sigil_core::logsafe::Escaped(c.encode_utf8(&mut buf)).to_string();
        if out.len() + piece.len() > max {
            out.push_str(&format!("...(+{} bytes)", s.len() - i));
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// A field of an event.
pub fn field(s: &str) -> String {
    text(s, MAX_FIELD_BYTES)
}

/// The detail of an event, bounded as the module doc says.
pub fn detail(v: Value) -> Value {
    let v = bound(v, 0);
    let len = v.to_string().len();
    if len > MAX_DETAIL_BYTES {
        serde_json::json!({ "truncated": true, "bytes": len })
    } else {
        v
    }
}

fn bound(v: Value, depth: usize) -> Value {
    if depth > 8 {
        return Value::String("...(nested too deep)".into());
    }
    match v {
        Value::String(s) => Value::String(text(&s, MAX_DETAIL_STRING_BYTES)),
        Value::Array(a) => Value::Array(a.into_iter().take(MAX_DETAIL_ENTRIES).map(|x| bound(x, depth + 1)).collect()),
        Value::Object(o) => {
            let m: Map<String, Value> =
                o.into_iter().take(MAX_DETAIL_ENTRIES).map(|(k, x)| (field(&k), bound(x, depth + 1))).collect();
            Value::Object(m)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_names_are_cut_with_a_note_of_what_was_cut() {
        let s = text(&"a".repeat(60_000), MAX_FIELD_BYTES);
        assert!(s.len() <= MAX_FIELD_BYTES + 24, "{}", s.len());
        assert!(s.ends_with("...(+59744 bytes)"), "{s}");
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let s = text(&"é".repeat(10), 5);
        assert!(s.starts_with("éé...("), "{s}");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(field("tok\n2026 INFO forged\x1b[0m"), "tok\\n2026 INFO forged\\u{1b}[0m");
    }

    #[test]
    fn a_detail_is_bounded_in_every_string_and_in_total() {
        let d = detail(json!({"reason": "x".repeat(50_000), "method": "iam"}));
        assert!(d.to_string().len() <= MAX_DETAIL_BYTES);
        assert_eq!(d["method"], "iam");
        let many: Vec<String> = (0..1000).map(|i| format!("{i}{}", "y".repeat(900))).collect();
        let d = detail(json!({ "audiences": many }));
        assert_eq!(d["truncated"], true);
    }
}
