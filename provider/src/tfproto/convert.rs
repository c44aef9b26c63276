//! Conversions between tfplugin6 messages and domain types.

use crate::cty::{self, Type, Value};
use crate::diag::{AttrPath, Diagnostic, Diagnostics, Severity, Step};
use crate::schema::{Attribute, Block, Mode, Nesting, Schema};
use sigil_schemas::tfplugin6 as pb;

/// Why a DynamicValue could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Bad msgpack.
    #[error("msgpack: {0}")]
    Msgpack(#[from] cty::MsgpackError),
    /// Bad JSON.
    #[error("json: {0}")]
    Json(#[from] cty::JsonError),
}

/// Decodes a DynamicValue of type `ty`; an absent or empty one is null.
pub fn decode_dynamic(v: Option<&pb::DynamicValue>, ty: &Type) -> Result<Value, DecodeError> {
    match v {
        Some(d) if !d.msgpack.is_empty() => Ok(cty::decode_msgpack(&d.msgpack, ty)?),
        Some(d) if !d.json.is_empty() => Ok(cty::decode_json(&d.json, ty)?),
        _ => Ok(Value::Null),
    }
}

/// Encodes a value as a msgpack DynamicValue.
pub fn encode_dynamic(v: &Value, ty: &Type) -> Result<pb::DynamicValue, cty::MsgpackError> {
    Ok(pb::DynamicValue { msgpack: cty::encode_msgpack(v, ty)?, json: vec![] })
}

/// Path to protobuf.
pub fn path_to_proto(path: &AttrPath) -> pb::AttributePath {
    use pb::attribute_path::step::Selector;
    let steps = path
        .0
        .iter()
        .map(|s| pb::attribute_path::Step {
            selector: Some(match s {
                Step::Attr(a) => Selector::AttributeName(a.clone()),
                Step::Key(k) => Selector::ElementKeyString(k.clone()),
                Step::Index(i) => Selector::ElementKeyInt(*i),
            }),
        })
        .collect();
    pb::AttributePath { steps }
}

/// Diagnostics to protobuf.
pub fn diags_to_proto(d: &Diagnostics) -> Vec<pb::Diagnostic> {
    d.0.iter().map(diag_to_proto).collect()
}

fn diag_to_proto(d: &Diagnostic) -> pb::Diagnostic {
    let severity = match d.severity {
        Severity::Error => pb::diagnostic::Severity::Error,
        Severity::Warning => pb::diagnostic::Severity::Warning,
    };
    pb::Diagnostic {
        severity: severity as i32,
        summary: d.summary.clone(),
        detail: d.detail.clone(),
        attribute: d.path.as_ref().map(path_to_proto),
    }
}

fn attribute_to_proto(a: &Attribute) -> pb::schema::Attribute {
    pb::schema::Attribute {
        name: a.name.to_string(),
        r#type: a.ty.to_json_bytes(),
        description: a.description.to_string(),
        required: a.mode == Mode::Required,
        optional: matches!(a.mode, Mode::Optional | Mode::OptionalComputed),
        computed: a.is_computed(),
        sensitive: a.sensitive,
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: false,
        nested_type: None,
    }
}

fn block_to_proto(b: &Block, version: i64) -> pb::schema::Block {
    use pb::schema::nested_block::NestingMode;
    pb::schema::Block {
        version,
        attributes: b.attributes.iter().map(attribute_to_proto).collect(),
        block_types: b
            .blocks
            .iter()
            .map(|nb| pb::schema::NestedBlock {
                type_name: nb.name.to_string(),
                block: Some(block_to_proto(&nb.block, 0)),
                nesting: match nb.nesting {
                    Nesting::List => NestingMode::List,
                    Nesting::Single => NestingMode::Single,
                } as i32,
                min_items: 0,
                max_items: 0,
            })
            .collect(),
        description: b.description.to_string(),
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: false,
    }
}

/// Schema to protobuf.
pub fn schema_to_proto(s: &Schema) -> pb::Schema {
    pb::Schema { version: s.version, block: Some(block_to_proto(&s.block, s.version)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dynamic_value_is_null() {
        assert_eq!(decode_dynamic(None, &Type::String).unwrap(), Value::Null);
        let empty = pb::DynamicValue::default();
        assert_eq!(decode_dynamic(Some(&empty), &Type::String).unwrap(), Value::Null);
    }

    #[test]
    fn json_dynamic_values_are_accepted() {
        let d = pb::DynamicValue { msgpack: vec![], json: br#"{"a":"x"}"#.to_vec() };
        let ty = Type::object([("a", Type::String)]);
        assert_eq!(decode_dynamic(Some(&d), &ty).unwrap().attr("a"), &Value::string("x"));
    }

    #[test]
    fn attribute_paths_keep_every_step() {
        let p = path_to_proto(&AttrPath::attr("rule").then_index(1).then_attr("verbs"));
        assert_eq!(p.steps.len(), 3);
    }

    #[test]
    fn optional_computed_attributes_are_both_optional_and_computed() {
        let a = Attribute::with_default("m", Type::Number, Value::int(1), "");
        let p = attribute_to_proto(&a);
        assert!(p.optional && p.computed && !p.required);
        assert_eq!(p.r#type, b"\"number\"");
    }
}
