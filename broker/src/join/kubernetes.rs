//! Kubernetes join: a projected service-account token (`serviceAccountToken`
//! volume with an `audience`), verified by the cluster issuer's OIDC discovery
//! (`--service-account-issuer`) or a static JWKS (`kubectl get --raw
//! /openid/v1/jwks`). Legacy secret-based tokens have no `exp` and are refused.
//!
//! Config: `issuer` and `audience` (both required), plus the common OIDC keys
//! (in-cluster issuers usually need `ca_pem` and `allow_private_network`).
//! Allow rules: `service_account` (`NAMESPACE:NAME`, glob), `namespace`, `sub`, `pod_name`.

use super::{oidc, JoinEnv, JoinError, JoinInput};
use crate::domain::{Attributes, JoinToken};
use serde_json::{Map, Value};

/// Allow-rule fields and `join.*` attributes.
pub const FIELDS: &[&str] = &["sub", "service_account", "namespace", "service_account_name", "service_account_uid", "pod_name", "pod_uid", "node_name"];
const PREFIX: &str = "system:serviceaccount:";

fn nested<'a>(claims: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let mut v = claims.get("kubernetes.io")?;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

/// The attributes of a verified service-account token; the subject and the
/// `kubernetes.io` claims must agree.
pub fn attributes(claims: &Map<String, Value>) -> Result<Attributes, String> {
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    let (ns, name) = sub.strip_prefix(PREFIX).and_then(|r| r.split_once(':')).ok_or_else(|| format!("subject {sub:?} is not {PREFIX}NAMESPACE:NAME"))?;
    if nested(claims, &["namespace"]).is_some_and(|n| n != ns) || nested(claims, &["serviceaccount", "name"]).is_some_and(|n| n != name) {
        return Err("the subject and the kubernetes.io claims name different service accounts".into());
    }
    let mut a = Attributes::new();
    a.insert("sub".into(), sub.into());
    a.insert("service_account".into(), format!("{ns}:{name}"));
    a.insert("namespace".into(), ns.into());
    a.insert("service_account_name".into(), name.into());
    for (attr, path) in [("service_account_uid", &["serviceaccount", "uid"][..]), ("pod_name", &["pod", "name"]), ("pod_uid", &["pod", "uid"]), ("node_name", &["node", "name"])] {
        if let Some(v) = nested(claims, path) {
            a.insert(attr.into(), v.into());
        }
    }
    Ok(a)
}

/// Verifies a projected service-account token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    oidc::check_config_keys(t, &[])?;
    oidc::check_rule_fields(t, Some(FIELDS))?;
    let claims = oidc::verify_bearer(t, input, env.now, oidc::required(t, "issuer")?, oidc::required(t, "audience")?).await?;
    let attrs = attributes(&claims).map_err(|e| JoinError::Rejected(format!("kubernetes token refused: {e}")))?;
    oidc::allow(t, Some(FIELDS), &attrs)?;
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn service_account_comes_from_the_subject_and_must_agree_with_the_nested_claims() {
        let c: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "sub": "system:serviceaccount:ci:builder",
            "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "builder", "uid": "u1"}, "pod": {"name": "p", "uid": "u2"}}
        })).unwrap();
        let a = attributes(&c).unwrap();
        assert_eq!(a["service_account"], "ci:builder");
        assert_eq!(a["pod_name"], "p");
        let mut bad = c.clone();
        bad["kubernetes.io"]["namespace"] = "prod".into();
        assert!(attributes(&bad).is_err());
        let mut user = c;
        user["sub"] = "admin".into();
        assert!(attributes(&user).is_err());
    }
}
