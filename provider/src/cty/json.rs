//! cty's JSON encoding, used for stored state (`RawState.json`) and as the
//! alternative `DynamicValue` encoding. JSON has no unknowns.

use super::{Number, Type, Value, MAX_DEPTH};
use serde_json::Value as J;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a JSON value could not be decoded or encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonError {
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// JSON whose shape does not fit the type.
    #[error("expected {expected} at {path}")]
    Unexpected {
        /// What the type called for.
        expected: String,
        /// Where, as a dotted path.
        path: String,
    },
    /// An object key the type does not have.
    #[error("unsupported attribute {0:?}")]
    UnknownAttribute(String),
    /// JSON cannot hold unknown values.
    #[error("unknown values cannot be encoded as JSON")]
    Unknown,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("value nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

type Result<T> = std::result::Result<T, JsonError>;

/// Decodes JSON bytes as a value of type `ty`; unknown attributes are errors.
pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value> {
    let json: J = serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax(e.to_string()))?;
    Decoder { lenient: false }.value(&json, ty, &mut String::new(), 0)
}

/// Like [`decode`], but drops object attributes the type does not have: what
/// state written by an older schema needs.
pub fn decode_lenient(bytes: &[u8], ty: &Type) -> Result<Value> {
    let json: J = serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax(e.to_string()))?;
    Decoder { lenient: true }.value(&json, ty, &mut String::new(), 0)
}

/// Encodes a wholly known value of type `ty` as JSON.
pub fn encode(value: &Value, ty: &Type) -> Result<Vec<u8>> {
    let mut out = String::new();
    write(&mut out, value, ty, 0)?;
    Ok(out.into_bytes())
}

struct Decoder {
    lenient: bool,
}

impl Decoder {
    fn value(&self, json: &J, ty: &Type, path: &mut String, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        let unexpected = |path: &str| JsonError::Unexpected {
            expected: ty.to_json().to_string(),
            path: if path.is_empty() { ".".into() } else { path.to_string() },
        };
        if json.is_null() {
            return Ok(Value::Null);
        }
        match ty {
            Type::String => match json {
                J::String(s) => Ok(Value::String(s.clone())),
                // cty converts primitives to strings on decode.
                J::Number(n) => Ok(Value::String(n.to_string())),
                J::Bool(b) => Ok(Value::String(b.to_string())),
                _ => Err(unexpected(path)),
            },
            Type::Number => match json {
                J::Number(n) => json_number(n).ok_or_else(|| unexpected(path)),
                J::String(s) => Number::parse(s).map(Value::Number).ok_or_else(|| unexpected(path)),
                _ => Err(unexpected(path)),
            },
            Type::Bool => match json {
                J::Bool(b) => Ok(Value::Bool(*b)),
                J::String(s) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
                _ => Err(unexpected(path)),
            },
            Type::List(e) | Type::Set(e) => {
                let items = json.as_array().ok_or_else(|| unexpected(path))?;
                let vs = self.items(items.iter().map(|j| (j, e.as_ref())), path, depth)?;
                Ok(if matches!(ty, Type::Set(_)) { Value::Set(vs) } else { Value::List(vs) })
            }
            Type::Tuple(tys) => {
                let items = json.as_array().filter(|a| a.len() == tys.len()).ok_or_else(|| unexpected(path))?;
                Ok(Value::Tuple(self.items(items.iter().zip(tys), path, depth)?))
            }
            Type::Map(e) => {
                let obj = json.as_object().ok_or_else(|| unexpected(path))?;
                let mut m = BTreeMap::new();
                for (k, j) in obj {
                    m.insert(k.clone(), self.child(j, e, path, k, depth)?);
                }
                Ok(Value::Map(m))
            }
            Type::Object(attrs) => {
                let obj = json.as_object().ok_or_else(|| unexpected(path))?;
                let mut m = BTreeMap::new();
                for (k, j) in obj {
                    match attrs.get(k) {
                        Some(t) => {
                            m.insert(k.clone(), self.child(j, t, path, k, depth)?);
                        }
                        None if self.lenient => {}
                        None => return Err(JsonError::UnknownAttribute(k.clone())),
                    }
                }
                for name in attrs.keys() {
                    m.entry(name.clone()).or_insert(Value::Null);
                }
                Ok(Value::Object(m))
            }
            Type::Dynamic => {
                let obj = json.as_object().ok_or_else(|| unexpected(path))?;
                let (Some(tj), Some(vj)) = (obj.get("type"), obj.get("value")) else {
                    return Err(unexpected(path));
                };
                let inner = Type::from_json(tj).map_err(|_| unexpected(path))?;
                match self.value(vj, &inner, path, depth + 1)? {
                    Value::Null => Ok(Value::Null),
                    v => Ok(Value::Dynamic(inner, Box::new(v))),
                }
            }
        }
    }

    fn items<'j, I>(&self, items: I, path: &mut String, depth: usize) -> Result<Vec<Value>>
    where
        I: Iterator<Item = (&'j J, &'j Type)>,
    {
        items
            .enumerate()
            .map(|(i, (j, t))| self.child(j, t, path, &i.to_string(), depth))
            .collect()
    }

    fn child(&self, json: &J, ty: &Type, path: &mut String, step: &str, depth: usize) -> Result<Value> {
        let len = path.len();
        path.push('.');
        path.push_str(step);
        let v = self.value(json, ty, path, depth + 1);
        path.truncate(len);
        v
    }
}

fn json_number(n: &serde_json::Number) -> Option<Value> {
    if let Some(i) = n.as_i64() {
        return Some(Value::int(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(Value::Number(Number::Big(u.to_string())));
    }
    n.as_f64().map(|f| Value::Number(Number::from_f64(f)))
}

fn write_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping is exactly JSON's; it cannot fail for &str.
    out.push_str(&J::String(s.to_string()).to_string());
}

fn write(out: &mut String, value: &Value, ty: &Type, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    let mismatch = || JsonError::Unexpected { expected: ty.to_json().to_string(), path: "(encode)".into() };
    match (value, ty) {
        (Value::Unknown, _) => return Err(JsonError::Unknown),
        (Value::Null, _) => out.push_str("null"),
        (Value::Dynamic(inner, v), Type::Dynamic) => {
            out.push_str("{\"value\":");
            write(out, v, inner, depth + 1)?;
            let _ = write!(out, ",\"type\":{}}}", inner.to_json());
        }
        (v @ (Value::String(_) | Value::Number(_) | Value::Bool(_)), Type::Dynamic) => {
            let inner = match v {
                Value::String(_) => Type::String,
                Value::Number(_) => Type::Number,
                _ => Type::Bool,
            };
            out.push_str("{\"value\":");
            write(out, v, &inner, depth + 1)?;
            let _ = write!(out, ",\"type\":{}}}", inner.to_json());
        }
        (Value::Dynamic(inner, v), t) if inner == t => write(out, v, t, depth + 1)?,
        (Value::String(s), Type::String) => write_json_str(out, s),
        (Value::Bool(b), Type::Bool) => out.push_str(if *b { "true" } else { "false" }),
        (Value::Number(n), Type::Number) => {
            let _ = write!(out, "{n}");
        }
        (Value::List(vs), Type::List(e)) | (Value::Set(vs), Type::Set(e)) => {
            out.push('[');
            for (i, v) in vs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, v, e, depth + 1)?;
            }
            out.push(']');
        }
        (Value::Tuple(vs), Type::Tuple(tys)) if vs.len() == tys.len() => {
            out.push('[');
            for (i, (v, t)) in vs.iter().zip(tys).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, v, t, depth + 1)?;
            }
            out.push(']');
        }
        (Value::Map(m), Type::Map(e)) => write_entries(out, m.iter().map(|(k, v)| (k, v, e.as_ref())), depth)?,
        (Value::Object(m), Type::Object(attrs)) => {
            if let Some(extra) = m.keys().find(|k| !attrs.contains_key(*k)) {
                return Err(JsonError::UnknownAttribute(extra.clone()));
            }
            let entries = attrs.iter().map(|(k, t)| (k, m.get(k).unwrap_or(&Value::Null), t));
            write_entries(out, entries, depth)?;
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn write_entries<'a, I>(out: &mut String, entries: I, depth: usize) -> Result<()>
where
    I: Iterator<Item = (&'a String, &'a Value, &'a Type)>,
{
    out.push('{');
    for (i, (k, v, t)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, k);
        out.push(':');
        write(out, v, t, depth + 1)?;
    }
    out.push('}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_type() -> Type {
        Type::object([
            ("name", Type::String),
            ("n", Type::Number),
            ("tags", Type::map(Type::list(Type::String))),
            ("rules", Type::list(Type::object([("verbs", Type::set(Type::String))]))),
            ("any", Type::Dynamic),
        ])
    }

    #[test]
    fn state_json_round_trips() {
        let v = Value::object([
            ("name", Value::string("we\"b")),
            ("n", Value::Number(Number::Float(1.5))),
            ("tags", Value::Map([("a".to_string(), Value::string_list(["x", "y"]))].into())),
            ("rules", Value::List(vec![Value::object([("verbs", Value::Set(vec![Value::string("read")]))])])),
            ("any", Value::Dynamic(Type::list(Type::Number), Box::new(Value::List(vec![Value::int(3)])))),
        ]);
        let bytes = encode(&v, &sample_type()).unwrap();
        assert_eq!(decode(&bytes, &sample_type()).unwrap(), v);
    }

    #[test]
    fn missing_attributes_are_null_and_extra_ones_depend_on_mode() {
        let ty = Type::object([("a", Type::String)]);
        assert_eq!(decode(b"{}", &ty).unwrap().attr("a"), &Value::Null);
        assert_eq!(decode(br#"{"old":1}"#, &ty), Err(JsonError::UnknownAttribute("old".into())));
        assert!(decode_lenient(br#"{"old":1,"a":"x"}"#, &ty).is_ok());
    }

    #[test]
    fn mismatches_name_the_path() {
        let err = decode(br#"{"rules":[{"verbs":7}]}"#, &sample_type()).unwrap_err();
        assert!(err.to_string().contains(".rules.0.verbs"), "{err}");
    }

    #[test]
    fn unknowns_cannot_be_written_as_json() {
        assert_eq!(encode(&Value::Unknown, &Type::String), Err(JsonError::Unknown));
    }

    #[test]
    fn large_numbers_are_written_as_raw_decimals() {
        let big = Value::Number(Number::Big("123456789012345678901234567890".into()));
        assert_eq!(encode(&big, &Type::Number).unwrap(), b"123456789012345678901234567890");
    }
}
