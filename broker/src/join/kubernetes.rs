//! Kubernetes join: a projected service-account token (`serviceAccountToken`
//! volume with an `audience`), verified by the cluster issuer's OIDC discovery
//! (`--service-account-issuer`) or a static JWKS (`kubectl get --raw
//! /openid/v1/jwks`). Legacy secret-based tokens have no `exp` and are refused.
//!
//! A join credential must not outlive the pod it speaks for: the token must be
//! bound to a pod (the `kubernetes.io.pod` claim, as kubelet's projected
//! tokens are) and live at most `max_token_lifetime` (`exp - iat`, default 1 h,
//! kubelet's default). A `kubectl create token --duration 8760h` token is
//! neither, and would otherwise be a year-long replayable join secret.
//!
//! Config: `issuer` and `audience` (both required), `max_token_lifetime`
//! (seconds, default 3600), `allow_unbound_tokens` (`"true"` accepts tokens
//! without a pod binding), plus the common OIDC keys (in-cluster issuers
//! usually need `ca_pem` and `allow_private_network`).
//! Allow rules: `service_account` (`NAMESPACE:NAME`, glob), `namespace`, `sub`, `pod_name`.

use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};
use serde_json::{Map, Value};

/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::KUBERNETES as FIELDS;
const PREFIX: &str = "system:serviceaccount:";
/// Default largest `exp - iat` accepted, seconds (kubelet's default `expirationSeconds`).
pub const DEFAULT_MAX_TOKEN_LIFETIME: i64 = 3600;

/// What the join token allows of a service-account token besides its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `exp - iat`, seconds.
    pub max_lifetime: i64,
    /// Whether a token without a pod binding is accepted.
    pub allow_unbound: bool,
}

impl Limits {
    /// From the join token's config.
    pub fn from_config(t: &JoinToken) -> Result<Self, JoinError> {
        let max_lifetime = match t.config.get("max_token_lifetime").map(|v| v.trim()) {
            None => DEFAULT_MAX_TOKEN_LIFETIME,
            Some(v) => v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                JoinError::invalid("config.max_token_lifetime", format!("{v:?} is not a positive number of seconds"))
            })?,
        };
        let allow_unbound = match t.config.get("allow_unbound_tokens").map(|v| v.trim()) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(JoinError::invalid("config.allow_unbound_tokens", "must be \"true\" or \"false\"")),
        };
        Ok(Self { max_lifetime, allow_unbound })
    }

    /// Refuses a verified token that is not pod-bound (unless allowed) or lives too long.
    pub fn check(&self, claims: &Map<String, Value>) -> Result<(), String> {
        let bound = nested(claims, &["pod", "name"]).is_some_and(|n| !n.is_empty()) && nested(claims, &["pod", "uid"]).is_some_and(|u| !u.is_empty());
        if !bound && !self.allow_unbound {
            return Err("the token is not bound to a pod (a projected service-account token is; `kubectl create token` without \
                        --bound-object-kind Pod is not); set config.allow_unbound_tokens = \"true\" to accept it"
                .into());
        }
        let time = |k: &str| claims.get(k).and_then(Value::as_f64);
        let (Some(iat), Some(exp)) = (time("iat"), time("exp")) else {
            return Err("the token has no iat/exp, so its lifetime is unknown".into());
        };
        let lifetime = exp - iat;
        if lifetime > self.max_lifetime as f64 {
            return Err(format!(
                "the token lives {lifetime:.0} s (exp - iat), more than config.max_token_lifetime = {} s",
                self.max_lifetime
            ));
        }
        Ok(())
    }
}

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

/// What the join token must say, whatever the credential.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::required(t, "issuer")?;
    oidc::required(t, "audience")?;
    Limits::from_config(t).map(|_| ())
}

/// Verifies a projected service-account token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let limits = Limits::from_config(t)?;
    let claims = oidc::verify_bearer(t, input, env.now, oidc::required(t, "issuer")?, oidc::required(t, "audience")?).await?;
    limits.check(&claims).map_err(|e| JoinError::Rejected(format!("kubernetes token refused: {e}")))?;
    let attrs = attributes(&claims).map_err(|e| JoinError::Rejected(format!("kubernetes token refused: {e}")))?;
    oidc::allow(t, &attrs)?;
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

    #[test]
    fn unbound_or_long_lived_tokens_are_refused_unless_allowed() {
        let claims = |pod: bool, life: i64| -> Map<String, Value> {
            let mut k = serde_json::json!({"namespace": "ci", "serviceaccount": {"name": "b", "uid": "u"}});
            if pod {
                k["pod"] = serde_json::json!({"name": "p", "uid": "u2"});
            }
            serde_json::from_value(serde_json::json!({"sub": "system:serviceaccount:ci:b", "iat": 1000, "exp": 1000 + life, "kubernetes.io": k})).unwrap()
        };
        let strict = Limits { max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME, allow_unbound: false };
        assert!(strict.check(&claims(true, 3600)).is_ok());
        assert!(strict.check(&claims(false, 3600)).unwrap_err().contains("not bound to a pod"));
        assert!(strict.check(&claims(true, 3601)).unwrap_err().contains("max_token_lifetime"));
        let mut no_iat = claims(true, 60);
        no_iat.remove("iat");
        assert!(strict.check(&no_iat).is_err());
        let lax = Limits { max_lifetime: 366 * 86400, allow_unbound: true };
        assert!(lax.check(&claims(false, 365 * 86400)).is_ok());
    }
}
