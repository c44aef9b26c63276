//! The shared verifier of the OIDC join family (GitHub, GitLab, CircleCI, ...,
//! generic OIDC, Kubernetes): finds the issuer's keys (static JWKS in the join
//! token, or OIDC discovery + JWKS fetched over bounded HTTPS and cached),
//! verifies the ID token with [`sigil_core::jwt`] (the one verifier; issuer and
//! audience are checked here on top), and matches claims against the
//! token's allow rules.
//!
//! Each method file only says which issuer and audience to expect and which
//! claims become attributes; everything security-relevant happens here once.
//!
//! Join token `config` keys understood by every OIDC method (the settings
//! structs of `domain::join_method::config` list them):
//! - `audience`: required; `aud` must contain it.
//! - `issuer`: the exact `iss` (methods with a platform default allow overriding it).
//! - `jwks`: a static JWKS document (JSON); no network fetch at all.
//! - `jwks_uri`: explicit JWKS URL (else taken from discovery, same host as the issuer).
//! - `ca_pem`: CA certificates trusted for the issuer's TLS (replace the public roots).
//! - `allow_private_network`: `"true"` allows issuers on loopback/private addresses.

use super::fetch::{self, FetchError, Policy};
use sigil_core::jwt::{self, JwtError, KeySet};
use super::{JoinError, JoinInput};
use sigil_core::domain::join_token::match_rules;
use sigil_core::domain::{Attributes, JoinToken};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Largest discovery document fetched, bytes.
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// Largest JWKS fetched, bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Deadline of one discovery or JWKS fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys are re-fetched after this long, seconds.
pub const FRESH_SECS: i64 = 600;
/// An unknown `kid` (or a failed fetch) triggers at most one fetch per issuer in this window, seconds.
pub const MIN_REFRESH_SECS: i64 = 10;
/// Keys keep serving while the issuer is unreachable for this long, seconds.
pub const STALE_SECS: i64 = 24 * 3600;
/// Most issuers cached at once.
pub const MAX_ISSUERS: usize = 1024;
/// Longest claim value turned into an attribute.
pub const MAX_CLAIM_CHARS: usize = 1024;

/// Why keys could not be found or a token not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// A join token `config` entry is missing or unusable.
    #[error("config.{key}: {message}")]
    Config {
        /// Config key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Fetching discovery or the JWKS failed.
    #[error("cannot fetch the issuer's keys: {0}")]
    Fetch(#[from] FetchError),
    /// The discovery document is unusable.
    #[error("bad discovery document from {issuer}: {message}")]
    Discovery {
        /// Issuer.
        issuer: String,
        /// What is wrong.
        message: String,
    },
    /// The token or JWKS failed verification.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

impl OidcError {
    fn config(key: &str, message: impl Into<String>) -> Self {
        Self::Config { key: key.into(), message: message.into() }
    }

    /// As a join error, prefixed with the method.
    pub fn into_join(self, method: &str) -> JoinError {
        match self {
            OidcError::Config { key, message } => JoinError::invalid(format!("config.{key}"), message),
            OidcError::Jwt(e) => JoinError::Rejected(format!("{method} ID token refused: {e}")),
            other => JoinError::Rejected(format!("{method}: {other}")),
        }
    }
}

/// A config value, or an error naming the key.
pub fn required<'a>(t: &'a JoinToken, key: &str) -> Result<&'a str, JoinError> {
    match t.config.get(key).map(|s| s.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(JoinError::invalid(format!("config.{key}"), format!("join method {:?} requires config.{key}", t.method))),
    }
}

/// Where an issuer's keys come from and how they are fetched.
#[derive(Debug, Clone)]
struct Source {
    issuer: String,
    jwks_uri: Option<String>,
    policy: Policy,
    cache_key: String,
}

impl Source {
    fn from_config(t: &JoinToken, issuer: &str) -> Result<Self, OidcError> {
        let allow_private = match t.config.get("allow_private_network").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(OidcError::config("allow_private_network", "must be \"true\" or \"false\"")),
        };
        let ca = t.config.get("ca_pem").map(String::as_str).unwrap_or_default();
        let roots = if ca.is_empty() { fetch::public_roots() } else { fetch::roots_from_pem(ca).map_err(|e| OidcError::config("ca_pem", e.to_string()))? };
        let jwks_uri = t.config.get("jwks_uri").cloned().filter(|u| !u.is_empty());
        let ca_hash = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, ca.as_bytes()));
        let cache_key = format!("{issuer}\n{}\n{ca_hash}\n{allow_private}", jwks_uri.as_deref().unwrap_or_default());
        let policy = Policy { roots, allow_private, max_bytes: MAX_JWKS_BYTES, timeout: FETCH_TIMEOUT };
        Ok(Self { issuer: issuer.to_string(), jwks_uri, policy, cache_key })
    }

    /// Discovery (unless `jwks_uri` is configured), then the JWKS.
    async fn fetch_keys(&self) -> Result<KeySet, OidcError> {
        let jwks_uri = match &self.jwks_uri {
            Some(u) => u.clone(),
            None => self.discover().await?,
        };
        let body = fetch::get(&jwks_uri, &self.policy).await?;
        Ok(KeySet::from_json(&body)?)
    }

    async fn discover(&self) -> Result<String, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let policy = Policy { max_bytes: MAX_DISCOVERY_BYTES, ..self.policy.clone() };
        let body = fetch::get(&url, &policy).await?;
        let bad = |m: &str| OidcError::Discovery { issuer: self.issuer.clone(), message: m.into() };
        let doc: Value = serde_json::from_slice(&body).map_err(|_| bad("not JSON"))?;
        // OpenID Connect Discovery 1.0 §4.3: the issuer must be identical.
        if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(bad("its \"issuer\" is not the configured issuer"));
        }
        let uri = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| bad("no jwks_uri"))?;
        if host_of(uri).is_none() || host_of(uri) != host_of(&self.issuer) {
            return Err(bad("jwks_uri is not on the issuer's https host; set config.jwks_uri to trust another host"));
        }
        Ok(uri.to_string())
    }
}

fn host_of(url: &str) -> Option<String> {
    let u: http::Uri = url.parse().ok()?;
    (u.scheme_str() == Some("https")).then(|| u.authority().map(|a| a.as_str().to_ascii_lowercase()))?
}

#[derive(Debug, Default)]
struct Entry {
    keys: Option<Arc<KeySet>>,
    fetched_at: i64,
    attempted_at: Option<i64>,
    last_error: Option<OidcError>,
}

/// JWKS cache: per issuer, refreshed when stale or on an unknown `kid` (at
/// most once per [`MIN_REFRESH_SECS`], so a flood of random `kid`s cannot make
/// the broker hammer the issuer), serving known keys through issuer outages
/// for up to [`STALE_SECS`]. One fetch per issuer at a time; bounded in size.
#[derive(Debug, Default)]
pub struct JwksCache {
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

impl JwksCache {
    /// The process-wide cache. Issuer keys are public and the same for every
    /// broker in the process, so one cache serves all.
    pub fn shared() -> &'static JwksCache {
        static CACHE: OnceLock<JwksCache> = OnceLock::new();
        CACHE.get_or_init(JwksCache::default)
    }

    fn slot(&self, key: &str, now: i64) -> Result<Arc<tokio::sync::Mutex<Entry>>, OidcError> {
        let mut map = self.entries.lock().map_err(|_| OidcError::config("jwks", "JWKS cache poisoned"))?;
        if !map.contains_key(key) && map.len() >= MAX_ISSUERS {
            // Drop an idle entry (not being fetched), preferring the oldest.
            let victim = map
                .iter()
                .filter_map(|(k, v)| v.try_lock().ok().map(|e| (e.attempted_at.unwrap_or(now), k.clone())))
                .min()
                .map(|(_, k)| k);
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        Ok(map.entry(key.to_string()).or_default().clone())
    }

    /// The keys for `key`, fetching with `fetch` when missing, stale, or
    /// lacking `kid` (rate limited).
    pub async fn keys<F, Fut>(&self, key: &str, kid: Option<&str>, now: i64, fetch: F) -> Result<Arc<KeySet>, OidcError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<KeySet, OidcError>>,
    {
        let slot = self.slot(key, now)?;
        let mut e = slot.lock().await;
        let fresh = e.keys.is_some() && now - e.fetched_at < FRESH_SECS;
        let has_kid = e.keys.as_ref().is_some_and(|k| kid.is_none_or(|kid| k.has_kid(kid)));
        let may_retry = e.attempted_at.is_none_or(|t| now - t >= MIN_REFRESH_SECS);
        if (fresh && has_kid) || !may_retry {
            return match (&e.keys, &e.last_error) {
                (Some(k), _) if now - e.fetched_at < STALE_SECS => Ok(k.clone()),
                (_, Some(err)) => Err(err.clone()),
                _ => Err(OidcError::Discovery { issuer: key.lines().next().unwrap_or_default().into(), message: "keys expired".into() }),
            };
        }
        e.attempted_at = Some(now);
        match fetch().await {
            Ok(k) => {
                let k = Arc::new(k);
                e.keys = Some(k.clone());
                e.fetched_at = now;
                e.last_error = None;
                Ok(k)
            }
            Err(err) => {
                e.last_error = Some(err.clone());
                match &e.keys {
                    Some(k) if now - e.fetched_at < STALE_SECS => Ok(k.clone()),
                    _ => Err(err),
                }
            }
        }
    }
}

/// Verifies the bearer ID token of `input` against `issuer` and `audience`
/// using the join token's key source. Returns the claims.
pub async fn verify_bearer(t: &JoinToken, input: &JoinInput, now: i64, issuer: &str, audience: &str) -> Result<Map<String, Value>, JoinError> {
    let method = t.method.as_str();
    if input.token.is_empty() {
        return Err(JoinError::invalid("token", format!("join method {method:?} needs the platform's OIDC ID token in `token`")));
    }
    verify_with(t, &input.token, now, issuer, audience).await.map_err(|e| e.into_join(method))
}

async fn verify_with(t: &JoinToken, bearer: &str, now: i64, issuer: &str, audience: &str) -> Result<Map<String, Value>, OidcError> {
    let parsed = jwt::parse(bearer)?;
    let keys = match t.config.get("jwks").filter(|d| !d.trim().is_empty()) {
        Some(doc) => Arc::new(KeySet::from_json(doc.as_bytes()).map_err(|e| OidcError::config("jwks", e.to_string()))?),
        None => {
            let source = Source::from_config(t, issuer)?;
            JwksCache::shared().keys(&source.cache_key, parsed.kid(), now, || source.fetch_keys()).await?
        }
    };
    let claims = parsed.verify_signature(&keys)?;
    jwt::check_issuer(&claims, issuer)?;
    jwt::check_audience(&claims, audience)?;
    jwt::check_times(&claims, now)?;
    Ok(claims)
}

/// A claim value as an attribute string: strings as-is, booleans and numbers
/// in JSON form; arrays, objects, null and over-long values are not attributes.
pub fn scalar(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (s.chars().count() <= MAX_CLAIM_CHARS).then_some(s)
}

/// Attributes from claims: `(attribute, claim)` pairs; absent claims are skipped.
pub fn pick(claims: &Map<String, Value>, map: &[(&str, &str)]) -> Attributes {
    map.iter().filter_map(|(attr, claim)| claims.get(*claim).and_then(scalar).map(|v| (attr.to_string(), v))).collect()
}

/// Checks the join token's allow rules against `attrs` (the rules name only
/// the method's fields: [`JoinToken::check_settings`], run before every join).
/// Errors say which claim failed.
pub fn allow(t: &JoinToken, attrs: &Attributes) -> Result<(), JoinError> {
    match_rules(&t.allow, attrs).map_err(|why| JoinError::Rejected(format!("{} claims match no allow rule of join token {:?}: {why}", t.method, t.name.as_str())))
}

/// Attributes named like the claims they come from.
pub fn pick_same(claims: &Map<String, Value>, fields: &[&str]) -> Attributes {
    fields.iter().filter_map(|f| claims.get(*f).and_then(scalar).map(|v| (f.to_string(), v))).collect()
}

/// Like [`allow`], for a claim with several values (CircleCI context ids): a
/// rule on `key` matches when any value matches. Without values, `key` is absent.
pub fn allow_any_of(t: &JoinToken, attrs: &Attributes, key: &str, values: &[String]) -> Result<(), JoinError> {
    let mut first_err = None;
    for v in values {
        let mut a = attrs.clone();
        a.insert(key.to_string(), v.clone());
        match allow(t, &a) {
            Ok(()) => return Ok(()),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => allow(t, attrs),
    }
}

/// A host name (optionally with `:port`) from config, for building issuer URLs.
pub fn host(t: &JoinToken, key: &str, default: Option<&str>) -> Result<String, JoinError> {
    let h = match (t.config.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()), default) {
        (Some(h), _) => h,
        (None, Some(d)) => d,
        (None, None) => return required(t, key).map(str::to_string),
    };
    let ok = !h.starts_with(['-', '.', ':']) && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !ok {
        return Err(JoinError::invalid(format!("config.{key}"), format!("{h:?} is not a host name (no scheme or path)")));
    }
    Ok(h.to_ascii_lowercase())
}

/// The `issuer` config override, else `default`.
pub fn issuer_or(t: &JoinToken, default: String) -> String {
    t.config.get("issuer").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn set(kid: &str) -> KeySet {
        let doc = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]});
        KeySet::from_json(doc.to_string().as_bytes()).unwrap()
    }

    async fn get(c: &JwksCache, kid: &str, now: i64, serve: &str, calls: &AtomicUsize) -> Result<Arc<KeySet>, OidcError> {
        c.keys("iss", Some(kid), now, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            if serve.is_empty() {
                Err(OidcError::config("x", "down"))
            } else {
                Ok(set(serve))
            }
        })
        .await
    }

    #[tokio::test]
    async fn keys_are_cached_and_a_rotated_kid_is_fetched_after_the_refresh_window() {
        let (c, calls) = (JwksCache::default(), AtomicUsize::new(0));
        assert!(get(&c, "a", 0, "a", &calls).await.unwrap().has_kid("a"));
        assert!(get(&c, "a", 5, "a", &calls).await.unwrap().has_kid("a"));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a known kid is served from the cache");
        // Rotation: a new kid inside the refresh window is not fetched (random-kid flood).
        assert!(!get(&c, "b", 6, "b", &calls).await.unwrap().has_kid("b"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(get(&c, "b", 10 + MIN_REFRESH_SECS, "b", &calls).await.unwrap().has_kid("b"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn known_keys_survive_an_issuer_outage_until_they_are_too_old() {
        let (c, calls) = (JwksCache::default(), AtomicUsize::new(0));
        get(&c, "a", 0, "a", &calls).await.unwrap();
        assert!(get(&c, "a", FRESH_SECS + 1, "", &calls).await.is_ok());
        assert!(get(&c, "a", STALE_SECS + 1, "", &calls).await.is_err());
        // Failures are not retried inside the refresh window either.
        let n = calls.load(Ordering::SeqCst);
        assert!(get(&c, "a", STALE_SECS + 2, "", &calls).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), n);
    }

    #[test]
    fn claims_become_string_attributes_and_structures_are_dropped() {
        let c: Map<String, Value> = serde_json::from_value(serde_json::json!({"a": "x", "b": true, "n": 7, "o": {"k": 1}, "l": ["x"]})).unwrap();
        let got = pick(&c, &[("a", "a"), ("b", "b"), ("n", "n"), ("o", "o"), ("l", "l"), ("m", "missing")]);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![("a".into(), "x".into()), ("b".into(), "true".into()), ("n".into(), "7".into())]);
    }
}
