//! From the field the broker blames (a `google.rpc.BadRequest` field
//! violation such as `config.audience` or `allow[0].repository`) to the
//! Terraform attribute path it came from (`config["audience"]`,
//! `allow[0].claims["repository"]`), so Terraform points at the line.
//!
//! The broker's field path is carried as data in the status details; nothing
//! here reads an error's text. Each resource may first rewrite the broker's
//! names into its schema's ([`crate::provider::Resource::schema_field`]);
//! then the path is walked along the schema and kept as far as the schema
//! has it (an attribute that is not set in the configuration still leads
//! Terraform to the nearest enclosing one).

use crate::cty::Type;
use crate::diag::AttrPath;
use crate::schema::{Block, Nesting};

/// Most segments read from a broker field path (real ones have under ten).
pub const MAX_SEGMENTS: usize = 32;

/// One segment of a broker field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `name` (after `.` or at the start).
    Name(String),
    /// `[n]`.
    Index(usize),
}

/// Splits `a.b[0].c` into segments; `None` when it is not such a path.
pub fn parse(field: &str) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if (name.is_empty() && out.is_empty()) || name.contains(|c: char| c.is_whitespace() || c == ']') {
            return None;
        }
        if !name.is_empty() {
            out.push(Segment::Name(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let (n, after) = r.split_once(']')?;
            out.push(Segment::Index(n.parse().ok()?));
            rest = after;
        }
        if !rest.is_empty() || out.len() > MAX_SEGMENTS {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

enum At<'a> {
    Block(&'a Block),
    ListBlock(&'a Block),
    Value(&'a Type),
}

/// The attribute path of `segments` in `block`, as far as the schema goes;
/// `None` when not even the first segment is in the schema.
pub fn to_attr_path(block: &Block, segments: &[Segment]) -> Option<AttrPath> {
    let mut path = AttrPath::default();
    let mut at = At::Block(block);
    for seg in segments {
        at = match (at, seg) {
            (At::Block(b), Segment::Name(n)) => {
                if let Some(a) = b.attribute(n) {
                    path = path.then_attr(n);
                    At::Value(&a.ty)
                } else if let Some(nb) = b.blocks.iter().find(|nb| nb.name == n) {
                    path = path.then_attr(n);
                    match nb.nesting {
                        Nesting::List => At::ListBlock(&nb.block),
                        Nesting::Single => At::Block(&nb.block),
                    }
                } else {
                    break;
                }
            }
            (At::ListBlock(b), Segment::Index(i)) => {
                path = path.then_index(*i);
                At::Block(b)
            }
            (At::Value(Type::List(elem)), Segment::Index(i)) => {
                path = path.then_index(*i);
                At::Value(elem)
            }
            (At::Value(Type::Map(elem)), Segment::Name(k)) => {
                path = path.then_key(k);
                At::Value(elem)
            }
            _ => break,
        };
    }
    (!path.0.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::schema::{Attribute, NestedBlock};

    fn block() -> Block {
        let allow = Block { description: "", attributes: vec![Attribute::required("claims", Type::map(Type::String), "")], blocks: vec![] };
        Block {
            description: "",
            attributes: vec![
                Attribute::required("expires_at", Type::Number, ""),
                Attribute::optional("config", Type::map(Type::String), ""),
                Attribute::optional("dns_sans", Type::list(Type::String), ""),
            ],
            blocks: vec![NestedBlock { name: "allow", nesting: Nesting::List, block: allow, force_new: false }],
        }
    }

    #[test]
    fn broker_paths_parse_into_names_and_indexes() {
        let p = parse("allow[0].claims.repository").unwrap();
        assert_eq!(p, [Segment::Name("allow".into()), Segment::Index(0), Segment::Name("claims".into()), Segment::Name("repository".into())]);
        assert_eq!(parse("a[1][2]").unwrap().len(), 3);
        for bad in ["", ".a", "a[x]", "a[1", "a[1]b", "invalid expires_at: must be"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn map_entries_become_keys_and_list_items_indexes() {
        let at = |f: &str| to_attr_path(&block(), &parse(f).unwrap()).map(|p| p.to_string());
        assert_eq!(at("config.audience").as_deref(), Some("config[\"audience\"]"));
        assert_eq!(at("allow[0].claims.repository").as_deref(), Some("allow[0].claims[\"repository\"]"));
        assert_eq!(at("dns_sans[2]").as_deref(), Some("dns_sans[2]"));
        assert_eq!(at("expires_at").as_deref(), Some("expires_at"));
        // Kept as far as the schema goes.
        assert_eq!(at("allow[0].nothing").as_deref(), Some("allow[0]"));
        assert_eq!(at("unknown.x"), None);
    }
}
