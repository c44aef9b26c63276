//! cty values. Values carry no type of their own except where the schema says
//! `dynamic`: there a [`Value::Dynamic`] pairs the value with its concrete type.

use super::Type;
use std::collections::BTreeMap;
use std::fmt;

/// A cty number. Kept as an exact integer where possible, so equality between
/// what Terraform sent and what the broker returned is exact.
#[derive(Clone, Debug)]
pub enum Number {
    /// Integers that fit in 64 bits.
    Int(i64),
    /// Anything else representable as a double.
    Float(f64),
    /// Decimal text too large or too precise for the other two.
    Big(String),
}

impl Number {
    /// Normalizes a float: integral values within `i64` become [`Number::Int`].
    pub fn from_f64(f: f64) -> Self {
        // i64::MAX is not representable as f64; the bound below is exact.
        if f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
            Number::Int(f as i64)
        } else {
            Number::Float(f)
        }
    }

    /// Parses decimal text (what cty writes for numbers too large for msgpack).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        if let Ok(i) = t.parse::<i64>() {
            return Some(Number::Int(i));
        }
        let f = t.parse::<f64>().ok()?;
        if !f.is_finite() {
            return None;
        }
        // Keep the exact text when the double would lose digits.
        if format_f64(f) == t || Number::from_f64(f).to_string() == t {
            Some(Number::from_f64(f))
        } else if is_decimal_literal(t) {
            Some(Number::Big(t.to_string()))
        } else {
            Some(Number::from_f64(f))
        }
    }

    /// The value as `i64`, if it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(*i),
            Number::Float(_) | Number::Big(_) => None,
        }
    }
}

fn is_decimal_literal(t: &str) -> bool {
    let body = t.strip_prefix('-').unwrap_or(t);
    !body.is_empty()
        && body.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && body.starts_with(|c: char| c.is_ascii_digit())
}

fn format_f64(f: f64) -> String {
    // Rust's shortest round-trip formatting; exponent form for huge values.
    let s = format!("{f}");
    if s.len() > 24 {
        format!("{f:e}")
    } else {
        s
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Float(a), Number::Float(b)) => a == b,
            (Number::Big(a), Number::Big(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => f.write_str(&format_f64(*x)),
            Number::Big(s) => f.write_str(s),
        }
    }
}

/// A cty value.
#[derive(Clone, Debug)]
pub enum Value {
    /// Null of whatever type the position has.
    Null,
    /// Not known until apply.
    Unknown,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// A list.
    List(Vec<Value>),
    /// A set; order carries no meaning and equality ignores it.
    Set(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A map.
    Map(BTreeMap<String, Value>),
    /// An object.
    Object(BTreeMap<String, Value>),
    /// A known, non-null value at a `dynamic` position, with its concrete type.
    Dynamic(Type, Box<Value>),
}

static NULL: Value = Value::Null;

impl Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// An integer value.
    pub fn int(i: i64) -> Self {
        Value::Number(Number::Int(i))
    }

    /// A list of strings.
    pub fn string_list<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Value::List(items.into_iter().map(|s| Value::String(s.into())).collect())
    }

    /// Builds an object from `(name, value)` pairs.
    pub fn object<I, S>(attrs: I) -> Self
    where
        I: IntoIterator<Item = (S, Value)>,
        S: Into<String>,
    {
        Value::Object(attrs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether this value itself is unknown (not whether something inside is).
    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// Whether the value and everything inside it is known.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => vs.iter().all(Value::is_wholly_known),
            Value::Map(m) | Value::Object(m) => m.values().all(Value::is_wholly_known),
            Value::Dynamic(_, v) => v.is_wholly_known(),
            _ => true,
        }
    }

    /// An attribute of an object; null when absent or when `self` is no object.
    pub fn attr(&self, name: &str) -> &Value {
        match self {
            Value::Object(m) => m.get(name).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    /// Sets an attribute of an object (no-op on anything else).
    pub fn set_attr(&mut self, name: &str, value: Value) {
        if let Value::Object(m) = self {
            m.insert(name.to_string(), value);
        }
    }

    /// The string, if this is a known string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Dynamic(_, v) => v.as_str(),
            _ => None,
        }
    }

    /// The number as `i64`, if this is a known integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The boolean, if this is a known bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Elements of a list, set or tuple (empty for anything else).
    pub fn elements(&self) -> &[Value] {
        match self {
            Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => vs,
            _ => &[],
        }
    }

    /// Entries of a map or object (none for anything else).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Value)> {
        let map = match self {
            Value::Map(m) | Value::Object(m) => Some(m),
            _ => None,
        };
        map.into_iter().flat_map(|m| m.iter())
    }

    /// Known strings of a list or set; `None` if any element is not a known string.
    pub fn as_string_vec(&self) -> Option<Vec<String>> {
        self.elements().iter().map(|v| v.as_str().map(str::to_string)).collect()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) | (Unknown, Unknown) => true,
            (Bool(a), Bool(b)) => a == b,
            (Number(a), Number(b)) => a == b,
            (String(a), String(b)) => a == b,
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a == b,
            (Set(a), Set(b)) => set_eq(a, b),
            (Map(a), Map(b)) | (Object(a), Object(b)) => a == b,
            (Dynamic(ta, a), Dynamic(tb, b)) => ta == tb && a == b,
            _ => false,
        }
    }
}

fn set_eq(a: &[Value], b: &[Value]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let hit = b.iter().enumerate().find(|(i, y)| !used[*i] && *y == x).map(|(i, _)| i);
        match hit {
            Some(i) => {
                used[i] = true;
                true
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_compare_equal_to_ints() {
        assert_eq!(Number::from_f64(3.0), Number::Int(3));
        assert_ne!(Number::from_f64(3.5), Number::Int(3));
    }

    #[test]
    fn sets_compare_without_order() {
        let a = Value::Set(vec![Value::string("x"), Value::string("y")]);
        let b = Value::Set(vec![Value::string("y"), Value::string("x")]);
        assert_eq!(a, b);
        assert_ne!(a, Value::Set(vec![Value::string("x"), Value::string("x")]));
    }

    #[test]
    fn decimal_text_keeps_precision_it_cannot_fit_in_a_double() {
        assert_eq!(Number::parse("42"), Some(Number::Int(42)));
        assert_eq!(Number::parse("0.5"), Some(Number::Float(0.5)));
        let big = "123456789012345678901234567890";
        assert_eq!(Number::parse(big), Some(Number::Big(big.into())));
        assert_eq!(Number::parse("nope"), None);
    }

    #[test]
    fn wholly_known_looks_inside_collections() {
        let v = Value::object([("a", Value::List(vec![Value::Unknown]))]);
        assert!(!v.is_wholly_known());
        assert!(Value::object([("a", Value::Null)]).is_wholly_known());
    }
}
