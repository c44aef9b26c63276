//! The Kubernetes TokenReview API (`authentication.k8s.io/v1`): the broker
//! asks the cluster's API server, with its own credentials, whether a pod's
//! service-account token is valid for the join token's audience, and maps the
//! answer to join attributes.
//!
//! Wire types stay here; [`review`] does the one POST (TLS against the
//! cluster CA, presenting the broker's client certificate when it has one
//! instead of a bearer token; bounded body, deadline, private addresses
//! allowed: API servers usually live on them), [`identity`] is the plain
//! mapping of an answer. The pod's token and the broker's token or key are
//! secrets: never logged, never in an error.

use super::kubernetes_cluster::{Cluster, ClusterError};
use serde::{Deserialize, Serialize};
use sigil_core::domain::Attributes;
use sigil_core::net::http::{Client, Request};
use sigil_core::net::policy::{Network, Policy, Redirects, Schemes};
use std::collections::BTreeMap;
use std::time::Duration;

/// Path of the TokenReview collection.
pub const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// Largest TokenReview answer read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Deadline of one review.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// `user.extra` keys kubelet-projected (pod-bound) tokens carry.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// The bound pod's uid.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// The node the bound pod runs on (Kubernetes 1.30+).
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// The token's `jti` (Kubernetes 1.30+), for the audit.
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
const PREFIX: &str = "system:serviceaccount:";

/// Why a review did not give an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// The broker's credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] ClusterError),
    /// The request failed (connection, TLS, deadline, size).
    #[error("TokenReview at cluster {cluster:?}: {message}")]
    Network {
        /// Cluster name.
        cluster: String,
        /// What failed (names the URL, no body).
        message: String,
    },
    /// The API server refused the broker (401/403: its token or its RBAC).
    #[error("cluster {cluster:?} refused the broker's TokenReview (HTTP {status}): check the broker's credential (token or client certificate) and that its account may create tokenreviews (ClusterRole system:auth-delegator)")]
    Forbidden {
        /// Cluster name.
        cluster: String,
        /// 401 or 403.
        status: u16,
    },
    /// Any other answer that is not a TokenReview.
    #[error("cluster {cluster:?} answered the TokenReview with HTTP {status}{detail}")]
    Answer {
        /// Cluster name.
        cluster: String,
        /// Status.
        status: u16,
        /// Parse error, if the status was a success.
        detail: String,
    },
}

// Wire types.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenReviewRequest<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Spec<'a> {
    token: &'a str,
    audiences: [&'a str; 1],
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenReviewResponse {
    kind: Option<String>,
    #[serde(default)]
    status: Status,
}

/// `status` of a TokenReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// Whether the token is valid.
    #[serde(default)]
    pub authenticated: bool,
    /// The audiences the token is valid for, of those asked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Why not (authenticated false): for the audit.
    #[serde(default)]
    pub error: String,
    /// Who the token speaks for.
    #[serde(default)]
    pub user: UserInfo,
}

/// `status.user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    /// `system:serviceaccount:NS:NAME` for service accounts.
    #[serde(default)]
    pub username: String,
    /// The service account's uid.
    #[serde(default)]
    pub uid: String,
    /// Groups (unused).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra: pod name/uid, node name, credential id.
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Asks `cluster` whether `token` is valid for `audience`.
pub async fn review(cluster: &Cluster, token: &str, audience: &str) -> Result<Status, ReviewError> {
    let conn = cluster.connection()?;
    let body = serde_json::to_vec(&TokenReviewRequest {
        api_version: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: Spec { token, audiences: [audience] },
    })
    .map_err(|e| ReviewError::Network { cluster: cluster.name.clone(), message: e.to_string() })?;
    let policy = Policy {
        schemes: Schemes::Https,
        network: Network::PrivateAllowed,
        redirects: Redirects::Returned,
        max_body_bytes: MAX_RESPONSE_BYTES,
        timeout: TIMEOUT,
        trust: conn.trust,
    };
    let mut req = Request::post(format!("{}{PATH}", cluster.api_server), body);
    if let Some(bearer) = &conn.bearer {
        req = req.header("Authorization", format!("Bearer {}", bearer.expose()));
    }
    let req = req
        .header("Content-Type", "application/json")
        .header("Accept", "application/json");
    let resp = Client::new(policy).send(req).await.map_err(|e| ReviewError::Network { cluster: cluster.name.clone(), message: e.to_string() })?;
    parse_answer(&cluster.name, resp.status, &resp.body)
}

/// The status of an API server's answer.
pub fn parse_answer(cluster: &str, status: u16, body: &[u8]) -> Result<Status, ReviewError> {
    match status {
        200 | 201 => {}
        401 | 403 => return Err(ReviewError::Forbidden { cluster: cluster.into(), status }),
        _ => return Err(ReviewError::Answer { cluster: cluster.into(), status, detail: String::new() }),
    }
    let bad = |detail: String| ReviewError::Answer { cluster: cluster.into(), status, detail };
    let r: TokenReviewResponse = serde_json::from_slice(body).map_err(|e| bad(format!(", not a TokenReview: {e}")))?;
    if r.kind.as_deref() != Some("TokenReview") {
        return Err(bad(format!(", kind {:?} instead of TokenReview", r.kind.unwrap_or_default())));
    }
    Ok(r.status)
}

/// What a positive review says about the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// Join attributes (`fields::KUBERNETES`).
    pub attributes: Attributes,
    /// Whether the token is bound to a pod (pod name and uid in `user.extra`).
    pub pod_bound: bool,
    /// `credential-id` (the token's `jti`), for the audit.
    pub credential_id: Option<String>,
}

/// Maps a review's status to the token's identity: refused unless
/// authenticated, valid for `audience`, and for a service account.
pub fn identity(status: &Status, audience: &str) -> Result<Reviewed, String> {
    if !status.authenticated {
        let why = if status.error.is_empty() { "no reason given".into() } else { clip(&status.error) };
        return Err(format!("the cluster did not authenticate the token ({why})"));
    }
    if !status.audiences.iter().any(|a| a == audience) {
        return Err(format!(
            "the cluster authenticated the token for audiences {:?}, not {audience:?} (an API server that ignores the requested audiences is not trusted)",
            status.audiences.iter().map(|a| clip(a)).collect::<Vec<_>>()
        ));
    }
    let user = &status.user;
    let (ns, name) = user
        .username
        .strip_prefix(PREFIX)
        .and_then(|r| r.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
        .ok_or_else(|| format!("the token is for {:?}, not a service account ({PREFIX}NAMESPACE:NAME)", clip(&user.username)))?;
    let one = |key: &str| -> Result<Option<String>, String> {
        match user.extra.get(key).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) if v.is_empty() => Ok(None),
            Some([v]) => Ok(Some(clip(v))),
            Some(_) => Err(format!("user.extra[{key:?}] has several values")),
        }
    };
    let mut a = Attributes::new();
    a.insert("sub".into(), user.username.clone());
    a.insert("service_account".into(), format!("{ns}:{name}"));
    a.insert("namespace".into(), ns.into());
    a.insert("service_account_name".into(), name.into());
    if !user.uid.is_empty() {
        a.insert("service_account_uid".into(), clip(&user.uid));
    }
    for (attr, key) in [("pod_name", EXTRA_POD_NAME), ("pod_uid", EXTRA_POD_UID), ("node_name", EXTRA_NODE_NAME)] {
        if let Some(v) = one(key)? {
            a.insert(attr.into(), v);
        }
    }
    let pod_bound = a.contains_key("pod_name") && a.contains_key("pod_uid");
    Ok(Reviewed { attributes: a, pod_bound, credential_id: one(EXTRA_CREDENTIAL_ID)? })
}

/// At most 256 characters of an outside string, for messages and attributes.
fn clip(s: &str) -> String {
    s.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(v: serde_json::Value) -> Status {
        let body = serde_json::to_vec(&serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": v})).unwrap();
        parse_answer("prod", 201, &body).unwrap()
    }

    fn pod_token_status() -> serde_json::Value {
        serde_json::json!({
            "authenticated": true,
            "audiences": ["sigil"],
            "user": {
                "username": "system:serviceaccount:ci:builder", "uid": "sa-uid-1",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": ["builder-7f9c"],
                    "authentication.kubernetes.io/pod-uid": ["pod-uid-2"],
                    "authentication.kubernetes.io/node-name": ["node-a"],
                    "authentication.kubernetes.io/credential-id": ["JTI=abc"]
                }
            }
        })
    }

    #[test]
    fn a_pod_token_review_maps_to_the_kubernetes_join_attributes() {
        let r = identity(&status(pod_token_status()), "sigil").unwrap();
        let want: Attributes = [
            ("sub", "system:serviceaccount:ci:builder"), ("service_account", "ci:builder"), ("namespace", "ci"),
            ("service_account_name", "builder"), ("service_account_uid", "sa-uid-1"), ("pod_name", "builder-7f9c"),
            ("pod_uid", "pod-uid-2"), ("node_name", "node-a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(r.attributes, want);
        assert!(r.pod_bound);
        assert_eq!(r.credential_id.as_deref(), Some("JTI=abc"));
        for k in r.attributes.keys() {
            assert!(sigil_core::domain::join_method::fields::KUBERNETES.contains(&k.as_str()), "{k} is a rule field");
        }
    }

    #[test]
    fn unauthenticated_tokens_are_refused_with_the_servers_reason() {
        let e = identity(&status(serde_json::json!({"authenticated": false, "error": "[invalid bearer token, token has expired]"})), "sigil").unwrap_err();
        assert!(e.contains("did not authenticate") && e.contains("token has expired"), "{e}");
        assert!(identity(&status(serde_json::json!({})), "sigil").is_err(), "no status is no authentication");
    }

    #[test]
    fn a_review_without_our_audience_is_refused() {
        let mut s = pod_token_status();
        s["audiences"] = serde_json::json!(["https://kubernetes.default.svc.cluster.local"]);
        assert!(identity(&status(s.clone()), "sigil").unwrap_err().contains("not \"sigil\""));
        s.as_object_mut().unwrap().remove("audiences");
        assert!(identity(&status(s), "sigil").is_err(), "an API server that ignores audiences returns none");
    }

    #[test]
    fn users_that_are_not_service_accounts_are_refused() {
        for name in ["kubernetes-admin", "system:serviceaccount:ci", "system:serviceaccount::b", "system:serviceaccount:ci:b:c", "system:node:n1"] {
            let mut s = pod_token_status();
            s["user"]["username"] = name.into();
            assert!(identity(&status(s), "sigil").is_err(), "{name}");
        }
    }

    #[test]
    fn a_token_without_pod_extras_is_not_pod_bound() {
        let mut s = pod_token_status();
        s["user"]["extra"] = serde_json::json!({"authentication.kubernetes.io/pod-name": ["p"]});
        let r = identity(&status(s.clone()), "sigil").unwrap();
        assert!(!r.pod_bound && !r.attributes.contains_key("pod_uid"));
        s["user"]["extra"] = serde_json::json!({"authentication.kubernetes.io/pod-uid": ["u1", "u2"]});
        assert!(identity(&status(s), "sigil").unwrap_err().contains("several values"));
    }

    #[test]
    fn answers_that_are_not_token_reviews_are_errors_naming_the_cluster() {
        let forbidden = parse_answer("prod", 403, br#"{"kind":"Status","message":"forbidden"}"#).unwrap_err();
        assert!(matches!(forbidden, ReviewError::Forbidden { status: 403, .. }) && forbidden.to_string().contains("system:auth-delegator"));
        assert!(matches!(parse_answer("prod", 401, b"").unwrap_err(), ReviewError::Forbidden { status: 401, .. }));
        assert!(parse_answer("prod", 500, b"").unwrap_err().to_string().contains("HTTP 500"));
        assert!(parse_answer("prod", 200, br#"{"kind":"Status"}"#).unwrap_err().to_string().contains("kind \"Status\""));
        assert!(parse_answer("prod", 201, b"<html>").unwrap_err().to_string().contains("not a TokenReview"));
    }

    #[test]
    fn the_request_is_the_v1_token_review_with_our_audience() {
        let body = serde_json::to_value(TokenReviewRequest { api_version: "authentication.k8s.io/v1", kind: "TokenReview", spec: Spec { token: "t", audiences: ["sigil"] } }).unwrap();
        assert_eq!(body, serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "t", "audiences": ["sigil"]}}));
    }
}
