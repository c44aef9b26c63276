//! cty's MessagePack encoding, the form Terraform uses on the wire.
//!
//! Null is `nil`; an unknown is the extension `d4 00 00` (and any extension
//! reads back as unknown, so refined unknowns from newer Terraform decode too);
//! numbers are integers when exact, else float64, else decimal strings; objects
//! and maps are maps with sorted keys; a `dynamic` position holds
//! `[type JSON, value]`.

use super::{Number, Type, Value, MAX_DEPTH};
use std::collections::BTreeMap;

/// Why a MessagePack value could not be decoded or encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsgpackError {
    /// Input ended in the middle of a value.
    #[error("msgpack input ends early")]
    Truncated,
    /// Bytes after the value.
    #[error("{0} trailing bytes after the msgpack value")]
    Trailing(usize),
    /// A format byte that does not fit the expected type.
    #[error("expected {expected}, found msgpack format byte {found:#04x}")]
    Unexpected {
        /// What the type called for.
        expected: &'static str,
        /// The byte found.
        found: u8,
    },
    /// A string that is not UTF-8.
    #[error("msgpack string is not UTF-8")]
    Utf8,
    /// A number that cty cannot represent.
    #[error("invalid number {0:?}")]
    Number(String),
    /// An object key the type does not have.
    #[error("unsupported attribute {0:?}")]
    UnknownAttribute(String),
    /// A tuple with the wrong number of elements.
    #[error("tuple needs {expected} elements, found {found}")]
    TupleLength {
        /// Elements in the type.
        expected: usize,
        /// Elements found.
        found: usize,
    },
    /// A dynamic value's type description is invalid.
    #[error("dynamic value type: {0}")]
    DynamicType(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("value nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The value does not have the shape its type calls for (encoding only).
    #[error("value does not conform to type {0}")]
    Mismatch(String),
}

type Result<T> = std::result::Result<T, MsgpackError>;

/// Decodes `bytes` as a value of type `ty`.
pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let v = r.value(ty, 0)?;
    match bytes.len() - r.pos {
        0 => Ok(v),
        n => Err(MsgpackError::Trailing(n)),
    }
}

/// Encodes `value` as type `ty`.
pub fn encode(value: &Value, ty: &Type) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_value(&mut out, value, ty, 0)?;
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Result<u8> {
        self.buf.get(self.pos).copied().ok_or(MsgpackError::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(MsgpackError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(MsgpackError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn len(&mut self, n: usize) -> Result<usize> {
        usize::try_from(self.be(n)?).map_err(|_| MsgpackError::Truncated)
    }

    fn value(&mut self, ty: &Type, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        match self.peek()? {
            0xc0 => {
                self.pos += 1;
                return Ok(Value::Null);
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                self.skip_ext()?;
                return Ok(Value::Unknown);
            }
            _ => {}
        }
        match ty {
            Type::String => Ok(Value::String(self.string()?)),
            Type::Number => Ok(Value::Number(self.number()?)),
            Type::Bool => match self.byte()? {
                0xc2 => Ok(Value::Bool(false)),
                0xc3 => Ok(Value::Bool(true)),
                b => Err(MsgpackError::Unexpected { expected: "bool", found: b }),
            },
            Type::List(e) => Ok(Value::List(self.elements(e, depth)?)),
            Type::Set(e) => Ok(Value::Set(self.elements(e, depth)?)),
            Type::Tuple(tys) => {
                let n = self.array_len()?;
                if n != tys.len() {
                    return Err(MsgpackError::TupleLength { expected: tys.len(), found: n });
                }
                let vs = tys.iter().map(|t| self.value(t, depth + 1)).collect::<Result<_>>()?;
                Ok(Value::Tuple(vs))
            }
            Type::Map(e) => {
                let n = self.map_len()?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let k = self.string()?;
                    let v = self.value(e, depth + 1)?;
                    m.insert(k, v);
                }
                Ok(Value::Map(m))
            }
            Type::Object(attrs) => {
                let n = self.map_len()?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let k = self.string()?;
                    let aty = attrs.get(&k).ok_or_else(|| MsgpackError::UnknownAttribute(k.clone()))?;
                    let v = self.value(aty, depth + 1)?;
                    m.insert(k, v);
                }
                for name in attrs.keys() {
                    m.entry(name.clone()).or_insert(Value::Null);
                }
                Ok(Value::Object(m))
            }
            Type::Dynamic => {
                let n = self.array_len()?;
                if n != 2 {
                    return Err(MsgpackError::Unexpected { expected: "[type, value] pair", found: 0x90 });
                }
                let raw = self.bytes()?;
                let inner = Type::from_json_bytes(raw)
                    .map_err(|e| MsgpackError::DynamicType(e.to_string()))?;
                let v = self.value(&inner, depth + 1)?;
                Ok(match v {
                    Value::Null | Value::Unknown => v,
                    v => Value::Dynamic(inner, Box::new(v)),
                })
            }
        }
    }

    fn elements(&mut self, ty: &Type, depth: usize) -> Result<Vec<Value>> {
        let n = self.array_len()?;
        // Never trust a length for allocation: each element is at least a byte.
        let mut out = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            out.push(self.value(ty, depth + 1)?);
        }
        Ok(out)
    }

    fn skip_ext(&mut self) -> Result<()> {
        let len = match self.byte()? {
            0xd4 => 1,
            0xd5 => 2,
            0xd6 => 4,
            0xd7 => 8,
            0xd8 => 16,
            0xc7 => self.len(1)?,
            0xc8 => self.len(2)?,
            _ => self.len(4)?,
        };
        self.take(1 + len)?; // extension type byte, then payload
        Ok(())
    }

    fn array_len(&mut self) -> Result<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Ok(usize::from(b & 0x0f)),
            0xdc => self.len(2),
            0xdd => self.len(4),
            b => Err(MsgpackError::Unexpected { expected: "array", found: b }),
        }
    }

    fn map_len(&mut self) -> Result<usize> {
        match self.byte()? {
            b @ 0x80..=0x8f => Ok(usize::from(b & 0x0f)),
            0xde => self.len(2),
            0xdf => self.len(4),
            b => Err(MsgpackError::Unexpected { expected: "map", found: b }),
        }
    }

    fn str_len(&mut self, b: u8) -> Result<Option<usize>> {
        Ok(Some(match b {
            0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
            _ => return Ok(None),
        }))
    }

    fn string(&mut self) -> Result<String> {
        let b = self.byte()?;
        let n = self.str_len(b)?.ok_or(MsgpackError::Unexpected { expected: "string", found: b })?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| MsgpackError::Utf8)
    }

    /// A string or binary blob (cty writes a dynamic value's type as binary).
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let b = self.byte()?;
        let n = match b {
            0xc4 => self.len(1)?,
            0xc5 => self.len(2)?,
            0xc6 => self.len(4)?,
            _ => self.str_len(b)?.ok_or(MsgpackError::Unexpected { expected: "bytes", found: b })?,
        };
        self.take(n)
    }

    fn number(&mut self) -> Result<Number> {
        let b = self.peek()?;
        let n = match b {
            0x00..=0x7f => {
                self.pos += 1;
                Number::Int(i64::from(b))
            }
            0xe0..=0xff => {
                self.pos += 1;
                Number::Int(i64::from(b as i8))
            }
            0xcc..=0xcf => {
                self.pos += 1;
                let v = self.be(1 << (b - 0xcc))?;
                match i64::try_from(v) {
                    Ok(i) => Number::Int(i),
                    Err(_) => Number::Big(v.to_string()),
                }
            }
            0xd0..=0xd3 => {
                self.pos += 1;
                let width = 1usize << (b - 0xd0);
                let raw = self.be(width)?;
                let shift = 64 - 8 * width as u32;
                // Sign-extend from `width` bytes.
                Number::Int(((raw << shift) as i64) >> shift)
            }
            0xca => {
                self.pos += 1;
                let bits = self.be(4)? as u32;
                float_number(f64::from(f32::from_bits(bits)))?
            }
            0xcb => {
                self.pos += 1;
                float_number(f64::from_bits(self.be(8)?))?
            }
            _ => {
                let s = self.string()?;
                Number::parse(&s).ok_or(MsgpackError::Number(s))?
            }
        };
        Ok(n)
    }
}

fn float_number(f: f64) -> Result<Number> {
    if f.is_nan() {
        return Err(MsgpackError::Number("NaN".into()));
    }
    Ok(Number::from_f64(f))
}

fn mismatch(ty: &Type) -> MsgpackError {
    MsgpackError::Mismatch(ty.to_json().to_string())
}

fn write_value(out: &mut Vec<u8>, value: &Value, ty: &Type, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(MsgpackError::TooDeep);
    }
    match (value, ty) {
        (Value::Null, _) => out.push(0xc0),
        (Value::Unknown, _) => out.extend_from_slice(&[0xd4, 0, 0]),
        (Value::Dynamic(inner_ty, v), Type::Dynamic) => {
            out.push(0x92);
            write_bin(out, &inner_ty.to_json_bytes());
            write_value(out, v, inner_ty, depth + 1)?;
        }
        (v, Type::Dynamic) => {
            let inferred = match v {
                Value::String(_) => Type::String,
                Value::Number(_) => Type::Number,
                Value::Bool(_) => Type::Bool,
                _ => return Err(mismatch(ty)),
            };
            out.push(0x92);
            write_bin(out, &inferred.to_json_bytes());
            write_value(out, v, &inferred, depth + 1)?;
        }
        (Value::Dynamic(inner_ty, v), t) if inner_ty == t => write_value(out, v, t, depth + 1)?,
        (Value::String(s), Type::String) => write_str(out, s),
        (Value::Bool(b), Type::Bool) => out.push(if *b { 0xc3 } else { 0xc2 }),
        (Value::Number(n), Type::Number) => write_number(out, n),
        (Value::List(vs), Type::List(e)) | (Value::Set(vs), Type::Set(e)) => {
            write_header(out, vs.len(), [0x90, 0xdc, 0xdd]);
            for v in vs {
                write_value(out, v, e, depth + 1)?;
            }
        }
        (Value::Tuple(vs), Type::Tuple(tys)) if vs.len() == tys.len() => {
            write_header(out, vs.len(), [0x90, 0xdc, 0xdd]);
            for (v, t) in vs.iter().zip(tys) {
                write_value(out, v, t, depth + 1)?;
            }
        }
        (Value::Map(m), Type::Map(e)) => {
            write_header(out, m.len(), [0x80, 0xde, 0xdf]);
            for (k, v) in m {
                write_str(out, k);
                write_value(out, v, e, depth + 1)?;
            }
        }
        (Value::Object(m), Type::Object(attrs)) => {
            if let Some(extra) = m.keys().find(|k| !attrs.contains_key(*k)) {
                return Err(MsgpackError::UnknownAttribute(extra.clone()));
            }
            write_header(out, attrs.len(), [0x80, 0xde, 0xdf]);
            for (k, t) in attrs {
                write_str(out, k);
                write_value(out, m.get(k).unwrap_or(&Value::Null), t, depth + 1)?;
            }
        }
        _ => return Err(mismatch(ty)),
    }
    Ok(())
}

/// Writes a container header: `[fix base, 16-bit marker, 32-bit marker]`.
fn write_header(out: &mut Vec<u8>, len: usize, markers: [u8; 3]) {
    if len < 16 {
        out.push(markers[0] | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(markers[1]);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(markers[2]);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(l) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, l]);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    if let Ok(l) = u8::try_from(b.len()) {
        out.extend_from_slice(&[0xc4, l]);
    } else if let Ok(l) = u16::try_from(b.len()) {
        out.push(0xc5);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    match n {
        Number::Int(i) => write_int(out, *i),
        Number::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Number::Big(s) => write_str(out, s),
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if (0..=0x7f).contains(&i) {
        out.push(i as u8);
    } else if (-32..0).contains(&i) {
        out.push(i as i8 as u8);
    } else if let Ok(v) = i8::try_from(i) {
        out.extend_from_slice(&[0xd0, v as u8]);
    } else if let Ok(v) = i16::try_from(i) {
        out.push(0xd1);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = i32::try_from(i) {
        out.push(0xd2);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value, ty: &Type) -> Value {
        decode(&encode(v, ty).unwrap(), ty).unwrap()
    }

    #[test]
    fn unknown_is_fixext1_type_zero() {
        assert_eq!(encode(&Value::Unknown, &Type::String).unwrap(), vec![0xd4, 0, 0]);
        assert_eq!(decode(&[0xd4, 0, 0], &Type::String).unwrap(), Value::Unknown);
    }

    #[test]
    fn any_extension_reads_as_unknown() {
        // ext8 of type 12 with a 3-byte payload: a refined unknown.
        let bytes = [0xc7, 3, 12, 1, 2, 3];
        assert_eq!(decode(&bytes, &Type::Number).unwrap(), Value::Unknown);
    }

    #[test]
    fn null_is_nil_at_any_type() {
        let ty = Type::object([("a", Type::String)]);
        assert_eq!(encode(&Value::Null, &ty).unwrap(), vec![0xc0]);
        assert_eq!(decode(&[0xc0], &ty).unwrap(), Value::Null);
    }

    #[test]
    fn object_attributes_are_written_sorted_and_missing_ones_read_as_null() {
        let ty = Type::object([("b", Type::String), ("a", Type::Bool)]);
        let v = Value::object([("b", Value::string("x")), ("a", Value::Bool(true))]);
        let bytes = encode(&v, &ty).unwrap();
        assert_eq!(bytes, vec![0x82, 0xa1, b'a', 0xc3, 0xa1, b'b', 0xa1, b'x']);
        let partial = [0x81, 0xa1, b'a', 0xc3];
        assert_eq!(decode(&partial, &ty).unwrap().attr("b"), &Value::Null);
    }

    #[test]
    fn integers_use_the_smallest_encoding_and_read_back() {
        for i in [0, 1, 127, 128, 255, 256, -1, -32, -33, -129, 65536, -70000, i64::MAX, i64::MIN] {
            let v = Value::int(i);
            assert_eq!(round_trip(&v, &Type::Number), v, "{i}");
        }
        assert_eq!(encode(&Value::int(5), &Type::Number).unwrap(), vec![5]);
        assert_eq!(encode(&Value::int(-1), &Type::Number).unwrap(), vec![0xff]);
    }

    #[test]
    fn floats_and_big_decimals_survive() {
        let f = Value::Number(Number::Float(0.25));
        assert_eq!(round_trip(&f, &Type::Number), f);
        let big = Value::Number(Number::Big("123456789012345678901234567890".into()));
        assert_eq!(round_trip(&big, &Type::Number), big);
        // u64 beyond i64 from another encoder.
        let mut bytes = vec![0xcf];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode(&bytes, &Type::Number).unwrap(),
            Value::Number(Number::Big(u64::MAX.to_string()))
        );
    }

    #[test]
    fn nested_collections_round_trip() {
        let ty = Type::object([
            ("list", Type::list(Type::object([("x", Type::Number)]))),
            ("set", Type::set(Type::String)),
            ("map", Type::map(Type::list(Type::String))),
            ("tuple", Type::Tuple(vec![Type::String, Type::Bool])),
        ]);
        let long: String = "s".repeat(300);
        let v = Value::object([
            ("list", Value::List((0..20).map(|i| Value::object([("x", Value::int(i))])).collect())),
            ("set", Value::Set(vec![Value::string("a"), Value::Unknown])),
            ("map", Value::Map([("k".to_string(), Value::string_list([long.as_str()]))].into())),
            ("tuple", Value::Tuple(vec![Value::Null, Value::Bool(false)])),
        ]);
        assert_eq!(round_trip(&v, &ty), v);
    }

    #[test]
    fn dynamic_values_carry_their_type() {
        let v = Value::Dynamic(Type::list(Type::String), Box::new(Value::string_list(["a"])));
        let bytes = encode(&v, &Type::Dynamic).unwrap();
        assert_eq!(bytes[0], 0x92);
        assert_eq!(decode(&bytes, &Type::Dynamic).unwrap(), v);
        // A dynamic type written as a msgpack string decodes too.
        let mut as_str = vec![0x92, 0xa8];
        as_str.extend_from_slice(b"\"string\"");
        as_str.extend_from_slice(&[0xa1, b'z']);
        assert_eq!(
            decode(&as_str, &Type::Dynamic).unwrap(),
            Value::Dynamic(Type::String, Box::new(Value::string("z")))
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let ty = Type::object([("a", Type::list(Type::String))]);
        for bad in [&[][..], &[0x81], &[0x81, 0xa1, b'z', 0xc0], &[0xdd, 0xff, 0xff, 0xff, 0xff], &[0xc0, 0]] {
            assert!(decode(bad, &ty).is_err(), "{bad:?}");
        }
        assert!(matches!(decode(&[0xa1, b'x'], &Type::Number), Err(MsgpackError::Number(_))));
    }

    #[test]
    fn deep_dynamic_nesting_is_bounded() {
        let mut bytes = Vec::new();
        for _ in 0..200 {
            bytes.extend_from_slice(&[0x92, 0xc4, 9]);
            bytes.extend_from_slice(b"\"dynamic\"");
        }
        bytes.push(0xc0);
        assert_eq!(decode(&bytes, &Type::Dynamic), Err(MsgpackError::TooDeep));
    }

    #[test]
    fn values_that_do_not_fit_the_type_are_refused_on_encode() {
        assert!(encode(&Value::string("x"), &Type::Number).is_err());
        let ty = Type::object([("a", Type::String)]);
        assert!(encode(&Value::object([("zz", Value::Null)]), &ty).is_err());
    }

    /// A stable-toolchain stand-in for the cargo-fuzz target: mutated valid
    /// encodings and random bytes never panic, and what decodes round-trips.
    #[test]
    fn mutated_inputs_never_panic_and_round_trip() {
        let ty = Type::object([
            ("a", Type::list(Type::String)),
            ("b", Type::Number),
            ("c", Type::map(Type::Dynamic)),
        ]);
        let seed = Value::object([
            ("a", Value::string_list(["x", "yy"])),
            ("b", Value::int(-300)),
            ("c", Value::Map([("k".to_string(), Value::Dynamic(Type::Bool, Box::new(Value::Bool(true))))].into())),
        ]);
        let base = encode(&seed, &ty).unwrap();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..20_000 {
            let mut input = if i % 2 == 0 { base.clone() } else { vec![0; (next() % 24) as usize] };
            for _ in 0..(1 + next() % 4) {
                if input.is_empty() {
                    break;
                }
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            if let Ok(v) = decode(&input, &ty) {
                let again = encode(&v, &ty).unwrap();
                assert_eq!(decode(&again, &ty).unwrap(), v, "input {input:02x?}");
            }
        }
    }
}
