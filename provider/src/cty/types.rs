//! cty types and their JSON form (`"string"`, `["list","string"]`, ...).

use std::collections::BTreeMap;

/// Why a JSON type description was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypeError {
    /// Not valid JSON at all.
    #[error("type is not valid JSON: {0}")]
    Json(String),
    /// Valid JSON that names no cty type.
    #[error("unsupported type description {0}")]
    Unsupported(String),
    /// Nested deeper than [`super::MAX_DEPTH`].
    #[error("type nests deeper than {} levels", super::MAX_DEPTH)]
    TooDeep,
}

/// A cty type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// UTF-8 string.
    String,
    /// Arbitrary-precision number.
    Number,
    /// Boolean.
    Bool,
    /// Any type, decided per value (`"dynamic"`).
    Dynamic,
    /// Ordered list of one element type.
    List(Box<Type>),
    /// Unordered set of one element type.
    Set(Box<Type>),
    /// String-keyed map of one element type.
    Map(Box<Type>),
    /// Fixed-length sequence of element types.
    Tuple(Vec<Type>),
    /// Named attributes, each with its own type.
    Object(BTreeMap<String, Type>),
}

impl Type {
    /// Shorthand for `list(elem)`.
    pub fn list(elem: Type) -> Self {
        Type::List(Box::new(elem))
    }

    /// Shorthand for `set(elem)`.
    pub fn set(elem: Type) -> Self {
        Type::Set(Box::new(elem))
    }

    /// Shorthand for `map(elem)`.
    pub fn map(elem: Type) -> Self {
        Type::Map(Box::new(elem))
    }

    /// Builds an object type from `(name, type)` pairs.
    pub fn object<I, S>(attrs: I) -> Self
    where
        I: IntoIterator<Item = (S, Type)>,
        S: Into<String>,
    {
        Type::Object(attrs.into_iter().map(|(k, t)| (k.into(), t)).collect())
    }

    /// The JSON description Terraform uses in schemas and dynamic values.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Type::String => J::from("string"),
            Type::Number => J::from("number"),
            Type::Bool => J::from("bool"),
            Type::Dynamic => J::from("dynamic"),
            Type::List(e) => J::Array(vec![J::from("list"), e.to_json()]),
            Type::Set(e) => J::Array(vec![J::from("set"), e.to_json()]),
            Type::Map(e) => J::Array(vec![J::from("map"), e.to_json()]),
            Type::Tuple(es) => {
                J::Array(vec![J::from("tuple"), J::Array(es.iter().map(Type::to_json).collect())])
            }
            Type::Object(attrs) => {
                let obj = attrs.iter().map(|(k, t)| (k.clone(), t.to_json())).collect();
                J::Array(vec![J::from("object"), J::Object(obj)])
            }
        }
    }

    /// [`Type::to_json`] as bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        self.to_json().to_string().into_bytes()
    }

    /// Parses a JSON type description.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, TypeError> {
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| TypeError::Json(e.to_string()))?;
        Self::from_json(&json)
    }

    /// Parses a JSON type description already read as JSON.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, TypeError> {
        Self::from_json_at(json, 0)
    }

    fn from_json_at(json: &serde_json::Value, depth: usize) -> Result<Self, TypeError> {
        use serde_json::Value as J;
        if depth > super::MAX_DEPTH {
            return Err(TypeError::TooDeep);
        }
        let unsupported = || TypeError::Unsupported(json.to_string());
        match json {
            J::String(s) => match s.as_str() {
                "string" => Ok(Type::String),
                "number" => Ok(Type::Number),
                "bool" => Ok(Type::Bool),
                "dynamic" => Ok(Type::Dynamic),
                _ => Err(unsupported()),
            },
            // Objects may carry a third element listing optional attributes;
            // it only matters for type conversion, which we do not do.
            J::Array(parts) if parts.len() == 2 || parts.len() == 3 => {
                let kind = parts[0].as_str().ok_or_else(unsupported)?;
                let arg = &parts[1];
                match (kind, parts.len()) {
                    ("list", 2) => Ok(Type::list(Self::from_json_at(arg, depth + 1)?)),
                    ("set", 2) => Ok(Type::set(Self::from_json_at(arg, depth + 1)?)),
                    ("map", 2) => Ok(Type::map(Self::from_json_at(arg, depth + 1)?)),
                    ("tuple", 2) => {
                        let elems = arg.as_array().ok_or_else(unsupported)?;
                        let tys = elems
                            .iter()
                            .map(|e| Self::from_json_at(e, depth + 1))
                            .collect::<Result<_, _>>()?;
                        Ok(Type::Tuple(tys))
                    }
                    ("object", _) => {
                        let attrs = arg.as_object().ok_or_else(unsupported)?;
                        let mut out = BTreeMap::new();
                        for (k, t) in attrs {
                            out.insert(k.clone(), Self::from_json_at(t, depth + 1)?);
                        }
                        Ok(Type::Object(out))
                    }
                    _ => Err(unsupported()),
                }
            }
            _ => Err(unsupported()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_types_round_trip_through_json() {
        let ty = Type::object([
            ("a", Type::list(Type::String)),
            ("b", Type::map(Type::set(Type::Number))),
            ("c", Type::Tuple(vec![Type::Bool, Type::Dynamic])),
        ]);
        let bytes = ty.to_json_bytes();
        assert_eq!(Type::from_json_bytes(&bytes).unwrap(), ty);
    }

    #[test]
    fn object_with_optional_attribute_marker_is_accepted() {
        let ty = Type::from_json_bytes(br#"["object",{"a":"string"},["a"]]"#).unwrap();
        assert_eq!(ty, Type::object([("a", Type::String)]));
    }

    #[test]
    fn unknown_type_name_is_refused() {
        assert!(matches!(Type::from_json_bytes(br#""float""#), Err(TypeError::Unsupported(_))));
        assert!(matches!(Type::from_json_bytes(br#"["list"]"#), Err(TypeError::Unsupported(_))));
    }
}
