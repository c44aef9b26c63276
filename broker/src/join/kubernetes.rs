//! Kubernetes join: a projected service-account token (`serviceAccountToken`
//! volume with an `audience`), verified in one of two modes (`config.mode`):
//!
//! - `jwks` (default): by the cluster issuer's OIDC discovery
//!   (`--service-account-issuer`) or a static JWKS (`kubectl get --raw
//!   /openid/v1/jwks`). Legacy secret-based tokens have no `exp` and are refused.
//! - `tokenreview`: the broker sends the token to the cluster's TokenReview API
//!   with its own credentials (`kubernetes_clusters` in the broker config,
//!   [`super::kubernetes_cluster`]; the exchange is
//!   [`super::kubernetes_review`]). For clusters whose issuer is not reachable
//!   or not published. The API server's answer (authenticated, audiences,
//!   `user.extra` pod name/uid, node) gives the attributes.
//!
//! A join credential must not outlive the pod it speaks for: the token must be
//! bound to a pod (the `kubernetes.io.pod` claim, or the pod-name/pod-uid extras
//! of a review, as kubelet's projected tokens are) and live at most
//! `max_token_lifetime` (`exp - iat`, default 1 h, kubelet's default). A
//! `kubectl create token --duration 8760h` token is neither, and would
//! otherwise be a year-long replayable join secret.
//!
//! Legacy secret-based tokens (issuer `kubernetes/serviceaccount`, a
//! `kubernetes.io/serviceaccount/secret.name` claim, or no `exp`) never expire
//! and are bound to no pod: in `tokenreview` mode they are refused before any
//! network call unless `allow_legacy_tokens = "true"`.
//!
//! Config: `audience` (required), `mode`, `issuer` (required in `jwks` mode),
//! `cluster` (required in `tokenreview` mode: a `kubernetes_clusters` name),
//! `max_token_lifetime` (seconds, default 3600), `allow_unbound_tokens`,
//! `allow_legacy_tokens` (`tokenreview` mode), plus the common OIDC keys
//! (`jwks` mode; in-cluster issuers usually need `ca_pem` and `allow_private_network`).
//! Allow rules: `service_account` (`NAMESPACE:NAME`, glob), `namespace`, `sub`, `pod_name`, ...

use super::kubernetes_cluster::Clusters;
use super::kubernetes_review as review;
use super::{oidc, JoinEnv, JoinError, JoinInput};
use serde_json::{Map, Value};
use sigil_core::domain::join_method::config::KubernetesMode;
use sigil_core::domain::{Attributes, JoinToken};

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
    /// Whether a legacy secret-based token is accepted (`tokenreview` mode).
    pub allow_legacy: bool,
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
        let flag = |key: &str| match t.config.get(key).map(|v| v.trim()) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(JoinError::invalid(format!("config.{key}"), "must be \"true\" or \"false\"")),
        };
        Ok(Self { max_lifetime, allow_unbound: flag("allow_unbound_tokens")?, allow_legacy: flag("allow_legacy_tokens")? })
    }

    /// Refuses a verified token that is not pod-bound (unless allowed) or lives too long.
    pub fn check(&self, claims: &Map<String, Value>) -> Result<(), String> {
        let bound = nested(claims, &["pod", "name"]).is_some_and(|n| !n.is_empty()) && nested(claims, &["pod", "uid"]).is_some_and(|u| !u.is_empty());
        if !bound && !self.allow_unbound {
            return Err("the token is not bound to a pod (a projected service-account token is; `kubectl create token` without \
                        --bound-object-kind Pod is not); set config.allow_unbound_tokens = \"true\" to accept it"
                .into());
        }
        self.check_lifetime(claims)
    }

    /// Refuses a token whose `exp - iat` is unknown or above `max_lifetime`.
    pub fn check_lifetime(&self, claims: &Map<String, Value>) -> Result<(), String> {
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

/// The join token's verification mode.
pub fn mode(t: &JoinToken) -> KubernetesMode {
    match t.config.get("mode").map(|m| m.trim()) {
        Some("tokenreview") => KubernetesMode::TokenReview,
        _ => KubernetesMode::Jwks,
    }
}

/// What the join token must say, whatever the credential (the registry has
/// already checked the keys each mode requires).
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::required(t, "audience")?;
    match mode(t) {
        KubernetesMode::Jwks => oidc::required(t, "issuer")?,
        KubernetesMode::TokenReview => oidc::required(t, "cluster")?,
    };
    Limits::from_config(t).map(|_| ())
}

/// Refuses a `tokenreview` join token naming a cluster the broker does not
/// know (at creation and update, where the broker config is at hand).
pub fn check_cluster(t: &JoinToken, clusters: &Clusters) -> Result<(), JoinError> {
    if t.method != "kubernetes" || mode(t) != KubernetesMode::TokenReview {
        return Ok(());
    }
    let name = oidc::required(t, "cluster")?;
    if clusters.get(name).is_none() {
        let known = clusters.names();
        let known = if known.is_empty() { "none are configured".to_string() } else { format!("configured: {}", known.join(", ")) };
        return Err(JoinError::invalid("config.cluster", format!("{name:?} is not in the broker's kubernetes_clusters ({known})")));
    }
    Ok(())
}

/// Verifies a projected service-account token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let limits = Limits::from_config(t)?;
    let attrs = match mode(t) {
        KubernetesMode::Jwks => {
            let claims = oidc::verify_bearer(t, input, env.now, oidc::required(t, "issuer")?, oidc::required(t, "audience")?).await?;
            limits.check(&claims).map_err(refused)?;
            attributes(&claims).map_err(refused)?
        }
        KubernetesMode::TokenReview => verify_by_review(t, input, env.kubernetes_clusters, limits).await?,
    };
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}

fn refused(e: String) -> JoinError {
    JoinError::Rejected(format!("kubernetes token refused: {e}"))
}

/// What the unverified payload says of a token's kind: why it is a legacy
/// secret-based token, if it is one. Never a trust decision (the API server
/// decides whether the token is valid); it keeps legacy tokens, and anything
/// that is not a JWT, from being sent to the cluster at all.
pub fn legacy_reason(claims: &Map<String, Value>) -> Option<&'static str> {
    if claims.get("iss").and_then(Value::as_str) == Some("kubernetes/serviceaccount") {
        return Some("its issuer is \"kubernetes/serviceaccount\" (a legacy secret-based token)");
    }
    if claims.contains_key("kubernetes.io/serviceaccount/secret.name") {
        return Some("it names a Secret (kubernetes.io/serviceaccount/secret.name: a legacy secret-based token)");
    }
    if !claims.contains_key("exp") {
        return Some("it has no exp (it never expires, as legacy secret-based tokens)");
    }
    None
}

/// The unverified claims of a bearer token, or why it is not a service-account JWT.
fn peek_claims(token: &str) -> Result<Map<String, Value>, String> {
    if token.len() > sigil_core::jwt::MAX_TOKEN_BYTES {
        return Err(format!("the token has {} bytes, more than the {} accepted", token.len(), sigil_core::jwt::MAX_TOKEN_BYTES));
    }
    sigil_core::jwt::peek(token).map(|p| p.claims).map_err(|_| "the token is not a JWT (a service-account token is)".to_string())
}

async fn verify_by_review(t: &JoinToken, input: &JoinInput, clusters: &Clusters, limits: Limits) -> Result<Attributes, JoinError> {
    let audience = oidc::required(t, "audience")?;
    let name = oidc::required(t, "cluster")?;
    if input.token.is_empty() {
        return Err(JoinError::invalid("token", "join method \"kubernetes\" needs the pod's service-account token in `token`"));
    }
    let cluster = clusters.get(name).ok_or_else(|| JoinError::Rejected(format!("config.cluster {name:?} is not in the broker's kubernetes_clusters")))?;
    // Before any network call: only JWTs go to the cluster, and legacy tokens only when allowed.
    let claims = peek_claims(&input.token).map_err(refused)?;
    let legacy = legacy_reason(&claims);
    if let (Some(why), false) = (legacy, limits.allow_legacy) {
        return Err(refused(format!("{why}; set config.allow_legacy_tokens = \"true\" to accept such tokens")));
    }
    let status = review::review(cluster, &input.token, audience).await.map_err(|e| JoinError::Rejected(e.to_string()))?;
    let reviewed = review::identity(&status, audience).map_err(refused)?;
    // The cluster has authenticated this exact token: its claims are the cluster's.
    if legacy.is_none() {
        limits.check_lifetime(&claims).map_err(refused)?;
        if !reviewed.pod_bound && !limits.allow_unbound {
            return Err(refused(
                "the token is not bound to a pod (the review has no pod-name/pod-uid: a projected service-account token has them; \
                 `kubectl create token` without --bound-object-kind Pod has not); set config.allow_unbound_tokens = \"true\" to accept it"
                    .into(),
            ));
        }
    }
    Ok(reviewed.attributes)
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
        let strict = Limits { max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME, allow_unbound: false, allow_legacy: false };
        assert!(strict.check(&claims(true, 3600)).is_ok());
        assert!(strict.check(&claims(false, 3600)).unwrap_err().contains("not bound to a pod"));
        assert!(strict.check(&claims(true, 3601)).unwrap_err().contains("max_token_lifetime"));
        let mut no_iat = claims(true, 60);
        no_iat.remove("iat");
        assert!(strict.check(&no_iat).is_err());
        let lax = Limits { max_lifetime: 366 * 86400, allow_unbound: true, allow_legacy: false };
        assert!(lax.check(&claims(false, 365 * 86400)).is_ok());
    }

    fn obj(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn legacy_secret_based_tokens_are_recognised_by_issuer_secret_claim_or_missing_exp() {
        let bound = obj(serde_json::json!({"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:ci:b", "exp": 2, "iat": 1,
            "kubernetes.io": {"namespace": "ci", "pod": {"name": "p", "uid": "u"}}}));
        assert_eq!(legacy_reason(&bound), None);
        let legacy = obj(serde_json::json!({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:ci:b",
            "kubernetes.io/serviceaccount/namespace": "ci", "kubernetes.io/serviceaccount/secret.name": "b-token-x"}));
        assert!(legacy_reason(&legacy).unwrap().contains("kubernetes/serviceaccount"));
        let mut renamed = legacy.clone();
        renamed.insert("iss".into(), "https://issuer".into());
        assert!(legacy_reason(&renamed).unwrap().contains("secret.name"));
        let mut no_exp = bound.clone();
        no_exp.remove("exp");
        assert!(legacy_reason(&no_exp).unwrap().contains("no exp"));
        assert!(peek_claims("not-a-jwt").unwrap_err().contains("not a JWT"));
        assert!(peek_claims(&"a".repeat(sigil_core::jwt::MAX_TOKEN_BYTES + 1)).unwrap_err().contains("more than"));
    }

    fn token(config: &[(&str, &str)]) -> JoinToken {
        let mut t: JoinToken = serde_json::from_value(serde_json::json!({
            "name": "k", "bot": "b", "method": "kubernetes", "expires_at": 10, "allow": []
        }))
        .unwrap();
        t.config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        t
    }

    #[test]
    fn a_tokenreview_join_token_must_name_a_configured_cluster() {
        let none = Clusters::default();
        let t = token(&[("mode", "tokenreview"), ("cluster", "prod"), ("audience", "sigil")]);
        assert!(check_token(&t).is_ok());
        let e = check_cluster(&t, &none).unwrap_err().to_string();
        assert!(e.contains("config.cluster") && e.contains("none are configured"), "{e}");
        let jwks = token(&[("issuer", "https://k"), ("audience", "sigil")]);
        assert!(check_cluster(&jwks, &none).is_ok(), "jwks mode needs no cluster");
        assert!(check_token(&token(&[("mode", "tokenreview"), ("audience", "sigil")])).is_err());
        assert!(check_token(&token(&[("mode", "tokenreview"), ("cluster", "prod"), ("audience", "sigil"), ("allow_legacy_tokens", "yes")])).is_err());
    }
}
