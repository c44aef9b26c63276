//! `{{attribute}}` templates for SPIFFE ID paths, evaluated against request attributes.

use std::collections::BTreeMap;

/// Attributes of a request: `bot.name`, `bot.traits.KEY`, `join.KEY`, `workload.unix.uid`...
pub type Attributes = BTreeMap<String, String>;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{{` without a closing `}}`.
    #[error("unterminated '{{{{' in template {0:?}")]
    Unterminated(String),
    /// The template names an attribute the request does not have.
    #[error("template needs attribute {0:?}, which this request does not have")]
    MissingAttribute(String),
    /// A substituted value would change the path structure.
    #[error("attribute {name:?} value {value:?} cannot be used in a SPIFFE ID path segment")]
    UnsafeValue {
        /// Attribute name.
        name: String,
        /// Offending value.
        value: String,
    },
}

/// Renders `template`, replacing each `{{ name }}` by its attribute value. Values may
/// not contain `/` (they could otherwise add path segments) or be empty.
pub fn render(template: &str, attrs: &Attributes) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unterminated(template.to_string()))?;
        let name = after[..end].trim();
        let value = attrs
            .get(name)
            .ok_or_else(|| TemplateError::MissingAttribute(name.to_string()))?;
        if value.is_empty() || value.contains('/') || value == "." || value == ".." {
            return Err(TemplateError::UnsafeValue { name: name.into(), value: value.clone() });
        }
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attributes {
        [("bot.name".to_string(), "ci".to_string()), ("workload.unix.uid".into(), "1000".into())]
            .into_iter()
            .collect()
    }

    #[test]
    fn attributes_are_substituted() {
        let got = render("/bot/{{bot.name}}/uid-{{ workload.unix.uid }}", &attrs()).unwrap();
        assert_eq!(got, "/bot/ci/uid-1000");
    }

    #[test]
    fn missing_attribute_is_named() {
        let err = render("/x/{{join.sub}}", &attrs()).unwrap_err();
        assert_eq!(err, TemplateError::MissingAttribute("join.sub".into()));
    }

    #[test]
    fn value_with_slash_cannot_add_segments() {
        let mut a = attrs();
        a.insert("join.sub".into(), "a/../b".into());
        assert!(matches!(render("/x/{{join.sub}}", &a), Err(TemplateError::UnsafeValue { .. })));
    }
}
