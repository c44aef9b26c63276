//! Sigil's resource and data source types, one file each, plus the helpers
//! they share for mapping broker objects to Terraform state.
//!
//! Broker objects have no nulls: an unset list is empty and an unset number 0.
//! Terraform does, and a value must come back exactly as configured, so each
//! mapping takes a *hint* (the planned or prior value) and keeps null where the
//! hint was null and the broker reports "unset".

mod bot;
mod join_token;
mod lock;
mod oidc_issuer;
mod role;
mod role_access;
mod ssh_ca_public_keys;
mod bot_instances;
mod trust_bundle;
mod workload_identity;

use crate::api::ApiError;
use crate::cty::Value;
use crate::diag::{AttrPath, Diagnostics};
use crate::provider::{DataSource, Resource};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use bot::Bot;
pub use join_token::JoinToken;
pub use lock::Lock;
pub use oidc_issuer::OidcIssuer;
pub use role::Role;
pub use ssh_ca_public_keys::SshCaPublicKeys;
pub use bot_instances::BotInstances;
pub use trust_bundle::TrustBundle;
pub use workload_identity::WorkloadIdentity;

/// Every resource type the provider serves.
pub fn all_resources() -> Vec<Arc<dyn Resource>> {
    vec![Arc::new(Role), Arc::new(Bot), Arc::new(JoinToken::default()), Arc::new(WorkloadIdentity), Arc::new(Lock::default())]
}

/// Every data source type the provider serves.
pub fn all_data_sources() -> Vec<Arc<dyn DataSource>> {
    vec![Arc::new(TrustBundle), Arc::new(OidcIssuer), Arc::new(BotInstances), Arc::new(SshCaPublicKeys)]
}

/// A string attribute, empty when null or unknown.
fn string(v: &Value, name: &str) -> String {
    v.attr(name).as_str().unwrap_or_default().to_string()
}

/// A number attribute, 0 when null or unknown.
fn int(v: &Value, name: &str) -> i64 {
    v.attr(name).as_i64().unwrap_or_default()
}

/// A list-of-strings attribute, empty when null or unknown.
fn strings(v: &Value, name: &str) -> Vec<String> {
    v.attr(name).as_string_vec().unwrap_or_default()
}

/// Whether the hint says "not set".
fn unset(hint: &Value) -> bool {
    hint.is_null()
}

fn opt_str(s: &str, hint: &Value) -> Value {
    if s.is_empty() && unset(hint) {
        Value::Null
    } else {
        Value::string(s)
    }
}

fn opt_int(i: i64, hint: &Value) -> Value {
    if i == 0 && unset(hint) {
        Value::Null
    } else {
        Value::int(i)
    }
}

fn opt_list(items: &[String], hint: &Value) -> Value {
    if items.is_empty() && unset(hint) {
        Value::Null
    } else {
        Value::string_list(items.iter().map(String::as_str))
    }
}

fn opt_map(entries: BTreeMap<String, Value>, hint: &Value) -> Value {
    if entries.is_empty() && unset(hint) {
        Value::Null
    } else {
        Value::Map(entries)
    }
}

/// Maps a broker status for object `what`.
fn status(what: &str) -> impl FnOnce(tonic::Status) -> ApiError + '_ {
    move |s| ApiError::from_status(what, s)
}

/// Deletion of something already gone is success.
fn gone_ok(r: Result<(), ApiError>) -> Result<(), ApiError> {
    match r {
        Err(ApiError::NotFound(_)) => Ok(()),
        other => other,
    }
}

/// Reads of something gone are `None`.
fn found<T>(r: Result<T, ApiError>) -> Result<Option<T>, ApiError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Object names, as the broker accepts them: 1-63 characters of a-z, 0-9,
/// '-', '_', '.', starting with a letter or digit.
fn check_name(config: &Value, attr: &str, diags: &mut Diagnostics) {
    let Some(name) = config.attr(attr).as_str() else { return };
    if !valid_name(name) {
        diags.error_at(
            AttrPath::attr(attr),
            "Invalid name",
            format!("{name:?} must be 1-63 characters of lowercase letters, digits, '-', '_' or '.', starting with a letter or digit."),
        );
    }
}

/// Whether `name` is a valid object name (see [`check_name`]).
fn valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    let starts_ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty() && name.len() <= 63 && name.chars().all(allowed) && starts_ok
}

/// Durations are whole seconds and never negative.
fn check_non_negative(config: &Value, attr: &str, diags: &mut Diagnostics) {
    if let Some(n) = config.attr(attr).as_i64() {
        if n < 0 {
            diags.error_at(AttrPath::attr(attr), "Invalid duration", format!("`{attr}` must be 0 (broker default) or a positive number of seconds, not {n}."));
        }
    } else if let Value::Number(n) = config.attr(attr) {
        diags.error_at(AttrPath::attr(attr), "Invalid duration", format!("`{attr}` must be a whole number of seconds, not {n}."));
    }
}

/// SPIFFE ID path patterns start with '/'.
fn check_paths(values: &Value, path: AttrPath, diags: &mut Diagnostics) {
    for (i, v) in values.elements().iter().enumerate() {
        if let Some(s) = v.as_str() {
            if !s.starts_with('/') {
                diags.error_at(
                    path.then_index(i),
                    "Invalid SPIFFE ID path",
                    format!("{s:?} must be a path starting with '/' (without the spiffe://trust-domain prefix)."),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_hint_keeps_broker_defaults_null() {
        assert_eq!(opt_list(&[], &Value::Null), Value::Null);
        assert_eq!(opt_list(&[], &Value::List(vec![])), Value::List(vec![]));
        assert_eq!(opt_int(0, &Value::Null), Value::Null);
        assert_eq!(opt_int(0, &Value::int(0)), Value::int(0));
        assert_eq!(opt_str("", &Value::Unknown), Value::string(""));
    }

    #[test]
    fn names_with_slashes_are_rejected_at_the_attribute() {
        let mut d = Diagnostics::default();
        check_name(&Value::object([("name", Value::string("a/b"))]), "name", &mut d);
        assert_eq!(d.0[0].path, Some(AttrPath::attr("name")));
        let mut ok = Diagnostics::default();
        check_name(&Value::object([("name", Value::string("web-1.prod"))]), "name", &mut ok);
        assert!(ok.0.is_empty());
    }

    #[test]
    fn unknown_values_are_not_validated() {
        let mut d = Diagnostics::default();
        check_name(&Value::object([("name", Value::Unknown)]), "name", &mut d);
        check_non_negative(&Value::object([("ttl", Value::Unknown)]), "ttl", &mut d);
        assert!(d.0.is_empty());
    }
}
