//! Diagnostics: what the practitioner sees, pointing at the attribute at fault.

use std::fmt;

/// One step into a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// An object attribute.
    Attr(String),
    /// A map key.
    Key(String),
    /// A list index.
    Index(i64),
}

/// Path from the root of a configuration to one value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrPath(pub Vec<Step>);

impl AttrPath {
    /// The path to a top-level attribute.
    pub fn attr(name: &str) -> Self {
        AttrPath(vec![Step::Attr(name.to_string())])
    }

    /// This path followed by an attribute.
    pub fn then_attr(&self, name: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Step::Attr(name.to_string()));
        p
    }

    /// This path followed by a list index.
    pub fn then_index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Step::Index(i64::try_from(i).unwrap_or(i64::MAX)));
        p
    }

    /// This path followed by a map key.
    pub fn then_key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Step::Key(k.to_string()));
        p
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Attr(a) if i == 0 => write!(f, "{a}")?,
                Step::Attr(a) => write!(f, ".{a}")?,
                Step::Key(k) => write!(f, "[{k:?}]")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Error or warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Stops the operation.
    Error,
    /// Shown, but the operation goes on.
    Warning,
}

/// One diagnostic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Short summary.
    pub summary: String,
    /// Longer explanation, with what to do about it.
    pub detail: String,
    /// The attribute at fault, if any.
    pub path: Option<AttrPath>,
}

/// Diagnostics gathered during one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds an error not tied to an attribute.
    pub fn error(&mut self, summary: impl Into<String>, detail: impl Into<String>) {
        self.push(Severity::Error, summary.into(), detail.into(), None);
    }

    /// Adds an error at `path`.
    pub fn error_at(&mut self, path: AttrPath, summary: impl Into<String>, detail: impl Into<String>) {
        self.push(Severity::Error, summary.into(), detail.into(), Some(path));
    }

    /// Adds a warning at `path`.
    pub fn warning_at(&mut self, path: AttrPath, summary: impl Into<String>, detail: impl Into<String>) {
        self.push(Severity::Warning, summary.into(), detail.into(), Some(path));
    }

    fn push(&mut self, severity: Severity, summary: String, detail: String, path: Option<AttrPath>) {
        self.0.push(Diagnostic { severity, summary, detail, path });
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Appends all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_terraform_addresses() {
        let p = AttrPath::attr("rule").then_index(0).then_attr("verbs").then_key("k");
        assert_eq!(p.to_string(), "rule[0].verbs[\"k\"]");
    }
}
