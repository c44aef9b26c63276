//! Workload identities: a SPIFFE ID template plus rules on who may obtain it.

use super::{glob, template, Attributes, DomainError, Name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One condition: the attribute must match one of the glob values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Attribute name, e.g. `workload.unix.uid`.
    pub attribute: String,
    /// Accepted values (globs).
    pub values: Vec<String>,
}

/// A workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentity {
    /// Name.
    pub name: Name,
    /// SPIFFE ID path template.
    pub spiffe_id: String,
    /// DNS SANs for X.509-SVIDs.
    #[serde(default)]
    pub dns_sans: Vec<String>,
    /// Extra JWT claims (cannot override registered claims).
    #[serde(default)]
    pub jwt_extra_claims: BTreeMap<String, String>,
    /// X.509 lifetime cap (0 = none beyond roles).
    #[serde(default)]
    pub max_x509_ttl_seconds: i64,
    /// JWT lifetime cap.
    #[serde(default)]
    pub max_jwt_ttl_seconds: i64,
    /// All must hold.
    #[serde(default)]
    pub allow: Vec<Condition>,
    /// Store revision.
    #[serde(default)]
    pub revision: i64,
}

/// Claims a workload identity may not set.
pub const RESERVED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "iat", "nbf", "jti"];

impl WorkloadIdentity {
    /// Checks contents.
    pub fn validate(&self) -> Result<(), DomainError> {
        if !self.spiffe_id.starts_with('/') || self.spiffe_id.ends_with('/') {
            return Err(DomainError::invalid("spiffe_id", "must be a path template like /svc/{{bot.name}}"));
        }
        if self.spiffe_id.matches('/').count() > super::MAX_PATTERN_SEGMENTS {
            return Err(DomainError::invalid("spiffe_id", format!("at most {} segments", super::MAX_PATTERN_SEGMENTS)));
        }
        if self.spiffe_id.starts_with(super::BOT_IDENTITY_PREFIX) {
            return Err(DomainError::invalid(
                "spiffe_id",
                format!("{:?} is under {}, reserved for bot identities", self.spiffe_id, super::BOT_IDENTITY_PREFIX),
            ));
        }
        for (i, d) in self.dns_sans.iter().enumerate() {
            let ok = !d.is_empty() && d.len() <= 253 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b));
            if !ok {
                return Err(DomainError::invalid(format!("dns_sans[{i}]"), format!("{d:?} is not a DNS name")));
            }
        }
        for k in self.jwt_extra_claims.keys() {
            if RESERVED_CLAIMS.contains(&k.as_str()) {
                return Err(DomainError::invalid(format!("jwt_extra_claims.{k}"), "registered claims cannot be overridden"));
            }
        }
        for (f, v) in [("max_x509_ttl_seconds", self.max_x509_ttl_seconds), ("max_jwt_ttl_seconds", self.max_jwt_ttl_seconds)] {
            if v < 0 {
                return Err(DomainError::invalid(f, "must not be negative"));
            }
        }
        Ok(())
    }

    /// Evaluates the conditions; on failure names the first one that failed.
    pub fn check_conditions(&self, attrs: &Attributes) -> Result<(), String> {
        for (i, c) in self.allow.iter().enumerate() {
            match attrs.get(&c.attribute) {
                Some(v) if c.values.iter().any(|p| glob::matches(p, v)) => {}
                Some(v) => {
                    return Err(format!(
                        "workload identity {:?} allow[{i}]: {} = {v:?} is not one of {:?}",
                        self.name.as_str(), c.attribute, c.values
                    ))
                }
                None => {
                    return Err(format!(
                        "workload identity {:?} allow[{i}]: request has no attribute {}",
                        self.name.as_str(), c.attribute
                    ))
                }
            }
        }
        Ok(())
    }

    /// Renders the SPIFFE ID path.
    pub fn render_path(&self, attrs: &Attributes) -> Result<String, template::TemplateError> {
        template::render(&self.spiffe_id, attrs)
    }
}
