//! A serde deserializer over a join token's `config` map (key -> string) that
//! reports what is wrong as data: the unknown key, the missing key, the key
//! whose value failed. serde's own errors carry these only in their text, and
//! recovering a field name from an error's text is what this replaces.
//!
//! Every value is a string (the stored format); typed fields parse strings.

use super::config::ConfigError;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use std::collections::btree_map;
use std::collections::BTreeMap;
use std::fmt::Display;

/// The deserializer's error: a [`ConfigError`] under construction, or the
/// field list captured by [`fields_of`].
#[derive(Debug)]
pub(super) enum DeError {
    Config(ConfigError),
    Fields(&'static [&'static str]),
}

impl Display for DeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeError::Config(e) => e.fmt(f),
            DeError::Fields(_) => f.write_str("field list"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: Display>(msg: T) -> Self {
        DeError::Config(ConfigError::Other(msg.to_string()))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::Config(ConfigError::Unknown { key: field.to_string(), known: expected })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::Config(ConfigError::Missing { key: field })
    }
}

impl DeError {
    /// Names `key` as the culprit of a value error.
    fn at(self, key: &str) -> Self {
        match self {
            DeError::Config(ConfigError::Other(message)) => DeError::Config(ConfigError::Invalid { key: key.to_string(), message }),
            other => other,
        }
    }
}

/// Deserializes `T` from `map`.
pub(super) fn from_map<T: de::DeserializeOwned>(map: &BTreeMap<String, String>) -> Result<T, ConfigError> {
    T::deserialize(MapDe(map)).map_err(|e| match e {
        DeError::Config(c) => c,
        DeError::Fields(_) => ConfigError::Other("unexpected field list".into()),
    })
}

/// The keys `T` (a struct) accepts, as serde knows them: the list is the struct.
pub(super) fn fields_of<T: de::DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldsDe) {
        Err(DeError::Fields(f)) => f,
        _ => &[],
    }
}

struct MapDe<'a>(&'a BTreeMap<String, String>);

impl<'de> Deserializer<'de> for MapDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Entries { iter: self.0.iter(), value: None })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries<'a> {
    iter: btree_map::Iter<'a, String, String>,
    value: Option<(&'a str, &'a str)>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.iter.next() else { return Ok(None) };
        self.value = Some((k, v));
        seed.deserialize(k.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (k, v) = self.value.take().ok_or_else(|| de::Error::custom("a value without its key"))?;
        seed.deserialize(ValueDe(v)).map_err(|e| e.at(k))
    }
}

/// One value: a string, and present (so `Option` fields are `Some`).
struct ValueDe<'a>(&'a str);

impl<'de> Deserializer<'de> for ValueDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// Captures the field list serde passes to `deserialize_struct`.
struct FieldsDe;

impl<'de> Deserializer<'de> for FieldsDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::Fields(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _name: &'static str, fields: &'static [&'static str], _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
