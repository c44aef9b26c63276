//! Protocol-agnostic schema model: what each resource, data source and the
//! provider block accept, and how planning treats each attribute.

use crate::cty::{Type, Value};

/// Whether the practitioner sets an attribute, the provider does, or either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Must be set in configuration.
    Required,
    /// May be set in configuration.
    Optional,
    /// Set by the provider only.
    Computed,
    /// May be set; the provider fills it in when not.
    OptionalComputed,
}

/// One attribute of a block.
#[derive(Clone, Debug)]
pub struct Attribute {
    /// Attribute name.
    pub name: &'static str,
    /// Its cty type.
    pub ty: Type,
    /// One-line description (also used for docs).
    pub description: &'static str,
    /// Who sets it.
    pub mode: Mode,
    /// Hidden in plan output and marked sensitive in state.
    pub sensitive: bool,
    /// A change forces replacement of the resource.
    pub force_new: bool,
    /// Computed and changed by every update (so unknown in an update plan).
    pub volatile: bool,
    /// Value planned when configuration leaves it null (OptionalComputed only).
    pub default: Option<Value>,
}

impl Attribute {
    fn new(name: &'static str, ty: Type, mode: Mode, description: &'static str) -> Self {
        Self { name, ty, description, mode, sensitive: false, force_new: false, volatile: false, default: None }
    }

    /// A required attribute.
    pub fn required(name: &'static str, ty: Type, description: &'static str) -> Self {
        Self::new(name, ty, Mode::Required, description)
    }

    /// An optional attribute.
    pub fn optional(name: &'static str, ty: Type, description: &'static str) -> Self {
        Self::new(name, ty, Mode::Optional, description)
    }

    /// A computed attribute.
    pub fn computed(name: &'static str, ty: Type, description: &'static str) -> Self {
        Self::new(name, ty, Mode::Computed, description)
    }

    /// An optional attribute with a default the provider plans.
    pub fn with_default(name: &'static str, ty: Type, default: Value, description: &'static str) -> Self {
        Self { default: Some(default), ..Self::new(name, ty, Mode::OptionalComputed, description) }
    }

    /// Marks the attribute sensitive.
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// Marks the attribute as forcing replacement when it changes.
    pub fn force_new(mut self) -> Self {
        self.force_new = true;
        self
    }

    /// Marks a computed attribute as changed by every update.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Whether configuration may set it.
    pub fn is_configurable(&self) -> bool {
        self.mode != Mode::Computed
    }

    /// Whether the provider may set it.
    pub fn is_computed(&self) -> bool {
        matches!(self.mode, Mode::Computed | Mode::OptionalComputed)
    }
}

/// How a nested block repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    /// Zero or more, ordered.
    List,
    /// Zero or one.
    Single,
}

/// A nested block type (`rule { ... }`).
#[derive(Clone, Debug)]
pub struct NestedBlock {
    /// Block type name.
    pub name: &'static str,
    /// How it repeats.
    pub nesting: Nesting,
    /// Its contents.
    pub block: Block,
    /// A change forces replacement.
    pub force_new: bool,
}

/// A block: attributes and nested blocks.
#[derive(Clone, Debug, Default)]
pub struct Block {
    /// Description (docs, and Terraform's schema output).
    pub description: &'static str,
    /// Attributes in display order.
    pub attributes: Vec<Attribute>,
    /// Nested block types.
    pub blocks: Vec<NestedBlock>,
}

impl Block {
    /// The object type a value of this block has.
    pub fn implied_type(&self) -> Type {
        let attrs = self.attributes.iter().map(|a| (a.name, a.ty.clone()));
        let blocks = self.blocks.iter().map(|b| {
            let inner = b.block.implied_type();
            let ty = match b.nesting {
                Nesting::List => Type::list(inner),
                Nesting::Single => inner,
            };
            (b.name, ty)
        });
        Type::object(attrs.chain(blocks))
    }

    /// The attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// A versioned schema of a resource, data source or the provider.
#[derive(Clone, Debug)]
pub struct Schema {
    /// State schema version (for UpgradeResourceState).
    pub version: i64,
    /// The top-level block.
    pub block: Block,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implied_type_includes_nested_blocks() {
        let block = Block {
            description: "",
            attributes: vec![Attribute::required("name", Type::String, "")],
            blocks: vec![NestedBlock {
                name: "rule",
                nesting: Nesting::List,
                force_new: false,
                block: Block {
                    description: "",
                    attributes: vec![Attribute::optional("verbs", Type::list(Type::String), "")],
                    blocks: vec![],
                },
            }],
        };
        assert_eq!(
            block.implied_type(),
            Type::object([
                ("name", Type::String),
                ("rule", Type::list(Type::object([("verbs", Type::list(Type::String))]))),
            ])
        );
    }
}
