//! GCP join (`gcp`): a Compute Engine VM's instance identity token, a JWT
//! signed by Google (`iss` `https://accounts.google.com`) that the VM gets from
//! its metadata server with `format=full`, so it names the project, zone,
//! instance and service account.
//!
//! Verification is the shared OIDC verifier (`oidc.rs`: pinned algorithms,
//! `exp` and audience required, keys cached and refreshed on unknown `kid`);
//! Google's keys come from `https://www.googleapis.com/oauth2/v3/certs` unless
//! the token config names `jwks` (static, e.g. tests) or another `jwks_uri`.
//!
//! Allow-rule fields: `project_id`, `project_number`, `zone`, `region`,
//! `instance_id`, `instance_name`, `service_account` (e-mail),
//! `service_account_id` (`sub`). Config: `audience` (required) plus the
//! common OIDC keys.

use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};
use serde_json::{Map, Value};

/// Method name.
pub const METHOD: &str = sigil_core::domain::Method::Gcp.name();
/// Google's ID token issuer.
pub const ISSUER: &str = "https://accounts.google.com";
/// Google's signing keys (JWKS).
pub const JWKS_URI: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::GCP as FIELDS;

/// Verifies a GCE instance identity token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    let audience = oidc::required(t, "audience")?.to_string();
    let mut with_keys = t.clone();
    if !t.config.contains_key("jwks") && !t.config.contains_key("jwks_uri") {
        // Google publishes its keys on another host than the issuer's.
        with_keys.config.insert("jwks_uri".into(), JWKS_URI.into());
    }
    let issuer = oidc::issuer_or(t, ISSUER.into());
    let claims = oidc::verify_bearer(&with_keys, input, env.now, &issuer, &audience).await?;
    let attrs = attributes(&claims)?;
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}

/// The join attributes of a verified token; refuses tokens without the
/// Compute Engine claims (`format=full`) or with an unverified e-mail.
pub fn attributes(claims: &Map<String, Value>) -> Result<Attributes, JoinError> {
    let gce = claims
        .get("google")
        .and_then(|g| g.get("compute_engine"))
        .and_then(Value::as_object)
        .ok_or_else(|| JoinError::Rejected("gcp token has no google.compute_engine claims: request it with format=full from the VM's metadata server".into()))?;
    if claims.get("email_verified").and_then(Value::as_bool) != Some(true) {
        return Err(JoinError::Rejected("gcp token's service account e-mail is not verified".into()));
    }
    let mut a = oidc::pick(gce, &[("project_id", "project_id"), ("project_number", "project_number"), ("zone", "zone"), ("instance_id", "instance_id"), ("instance_name", "instance_name")]);
    a.extend(oidc::pick(claims, &[("service_account", "email"), ("service_account_id", "sub")]));
    for required in ["project_id", "zone", "instance_id", "service_account"] {
        if !a.contains_key(required) {
            return Err(JoinError::Rejected(format!("gcp token lacks {required}")));
        }
    }
    if let Some(region) = a.get("zone").and_then(|z| z.rsplit_once('-')).map(|(r, _)| r.to_string()) {
        a.insert("region".into(), region);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn compute_engine_claims_become_attributes_with_region() {
        let c = claims(serde_json::json!({
            "email": "app@proj.iam.gserviceaccount.com", "email_verified": true, "sub": "1077",
            "google": {"compute_engine": {"project_id": "proj", "project_number": 42, "zone": "europe-west1-b", "instance_id": "515", "instance_name": "vm"}}
        }));
        let a = attributes(&c).unwrap();
        assert_eq!(a["region"], "europe-west1");
        assert_eq!(a["project_number"], "42");
        assert_eq!(a["service_account"], "app@proj.iam.gserviceaccount.com");
    }

    #[test]
    fn tokens_without_compute_engine_claims_or_verified_email_are_refused() {
        let bare = claims(serde_json::json!({"email": "a@b", "email_verified": true}));
        assert!(attributes(&bare).unwrap_err().to_string().contains("format=full"));
        let unverified = claims(serde_json::json!({"email": "a@b", "email_verified": false,
            "google": {"compute_engine": {"project_id": "p", "zone": "z-a", "instance_id": "1"}}}));
        assert!(attributes(&unverified).unwrap_err().to_string().contains("not verified"));
    }
}
