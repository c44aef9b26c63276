//! `{{attribute}}` templates for SPIFFE ID paths and path patterns, evaluated
//! against request attributes.
//!
//! A substituted value is a literal: it must be usable as (part of) one SPIFFE
//! ID path segment, i.e. letters, digits, `.`, `-`, `_`, not empty, not `.` or
//! `..`. So a value can neither add segments (`a/b`) nor act as a wildcard once
//! the rendered text is read as a pattern (`*`, `**`). Refusing instead of
//! escaping loses nothing: a character outside that set can never appear in a
//! valid SPIFFE ID, so a pattern holding it literally could match nothing.

use std::collections::BTreeMap;

/// Attributes of a request: `bot.name`, `bot.traits.KEY`, `join.KEY`, `workload.unix.uid`...
pub type Attributes = BTreeMap<String, String>;

/// Prefix of the attributes the calling bot asserts itself in an SVID request
/// (the agent's attestation of a local process). Everything else is set by the
/// broker: `bot.*` from the stored bot, `join.*` from the verified join.
pub const WORKLOAD_PREFIX: &str = "workload.";

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
    /// A substituted value is not a literal SPIFFE ID path segment.
    #[error("attribute {name:?} value {value:?} cannot be used in a SPIFFE ID path segment (letters, digits, '.', '-', '_' only)")]
    UnsafeValue {
        /// Attribute name.
        name: String,
        /// Offending value.
        value: String,
    },
}

/// Whether `v` can be substituted literally into a SPIFFE ID path segment.
pub fn is_literal_segment_value(v: &str) -> bool {
    !v.is_empty()
        && v != "."
        && v != ".."
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Renders `template`, replacing each `{{ name }}` by its attribute value.
/// Every value must pass [`is_literal_segment_value`].
pub fn render(template: &str, attrs: &Attributes) -> Result<String, TemplateError> {
    substitute(template, |name| {
        let value = attrs.get(name).ok_or_else(|| TemplateError::MissingAttribute(name.to_string()))?;
        literal(name, value)
    })
}

/// The pattern a template stands for whoever it is rendered for: each
/// placeholder becomes `*`. A value is non-empty and never holds `/`, so the
/// result matches every rendering (and more).
pub fn as_pattern(template: &str) -> Result<String, TemplateError> {
    substitute(template, |_| Ok("*".to_string()))
}

/// The pattern a template grants its holder: `bot.*` and `join.*` are filled
/// from `attrs` (fixed by the broker), `workload.*` becomes `*` (the holder
/// asserts those values itself, so it can obtain any of them).
pub fn as_holder_pattern(template: &str, attrs: &Attributes) -> Result<String, TemplateError> {
    substitute(template, |name| {
        if name.starts_with(WORKLOAD_PREFIX) {
            return Ok("*".to_string());
        }
        let value = attrs.get(name).ok_or_else(|| TemplateError::MissingAttribute(name.to_string()))?;
        literal(name, value)
    })
}

/// Renders `template` like [`render`], with `allowed` deciding which values
/// may be substituted (e.g. an IP address into an SSH `source-address`).
pub fn render_checked(template: &str, attrs: &Attributes, allowed: impl Fn(&str) -> bool) -> Result<String, TemplateError> {
    substitute(template, |name| {
        let value = attrs.get(name).ok_or_else(|| TemplateError::MissingAttribute(name.to_string()))?;
        if allowed(value) {
            Ok(value.clone())
        } else {
            Err(TemplateError::UnsafeValue { name: name.into(), value: value.into() })
        }
    })
}

fn literal(name: &str, value: &str) -> Result<String, TemplateError> {
    if is_literal_segment_value(value) {
        Ok(value.to_string())
    } else {
        Err(TemplateError::UnsafeValue { name: name.into(), value: value.into() })
    }
}

fn substitute(template: &str, mut value: impl FnMut(&str) -> Result<String, TemplateError>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Unterminated(template.to_string()))?;
        out.push_str(&value(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::glob;

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

    #[test]
    fn glob_characters_in_a_value_cannot_widen_a_pattern() {
        for v in ["**", "*", "a*", "?", "[a-z]", "\\*", ".", "..", "", "a b", "é"] {
            let mut a = attrs();
            a.insert("workload.unix.uid".into(), v.into());
            a.insert("join.sub".into(), v.into());
            assert!(matches!(render("/svc/{{workload.unix.uid}}", &a), Err(TemplateError::UnsafeValue { .. })), "{v:?}");
            assert!(matches!(render("/svc/{{join.sub}}", &a), Err(TemplateError::UnsafeValue { .. })), "{v:?}");
        }
        // The attack: "**" rendered into a pattern would have matched any depth.
        assert!(glob::matches_path("/svc/**", "/svc/a/b/c"));
    }

    #[test]
    fn a_template_as_a_pattern_covers_every_rendering() {
        assert_eq!(as_pattern("/svc/{{bot.name}}/uid-{{workload.unix.uid}}").unwrap(), "/svc/*/uid-*");
        assert!(glob::matches_path(&as_pattern("/svc/{{bot.name}}").unwrap(), &render("/svc/{{bot.name}}", &attrs()).unwrap()));
    }

    #[test]
    fn a_holder_pattern_fixes_bot_and_join_values_and_frees_workload_ones() {
        assert_eq!(as_holder_pattern("/bot/{{bot.name}}/{{workload.unix.uid}}", &attrs()).unwrap(), "/bot/ci/*");
        assert!(as_holder_pattern("/x/{{join.sub}}", &attrs()).is_err());
    }
}
