//! `sigil federation verify`: checks an issuer (discovery + JWKS) and a freshly
//! issued SVID against each cloud's documented acceptance rules, and says what
//! would be refused and how to fix it. The rules are plain functions over
//! gathered evidence; only [`gather_issuer`] touches the network.
//!
//! The token itself goes through the one verifier ([`sigil_core::jwt`], the rules of
//! joins and `ValidateJWTSVID`): `token.signature` is its header, key and
//! signature verdict, `token.exp`/`token.nbf` its time verdict. Each cloud's own
//! acceptance rules (`aws.*`, `azure.*`, `gcp.*`) are reported on top.

use super::http::{parse_target, HttpClient};
use super::{aws_web_identity, azure, gcp};
use sigil_core::jwt::{self, JwtError, Peeked};
use serde::Serialize;
use serde_json::Value;
use x509_parser::prelude::*;

/// Which cloud's rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// AWS STS AssumeRoleWithWebIdentity (IAM OIDC provider).
    Aws,
    /// Azure Entra ID federated credential.
    Azure,
    /// GCP Workload Identity Federation.
    Gcp,
    /// AWS IAM Roles Anywhere (X.509-SVID).
    AwsRolesAnywhere,
}

impl Cloud {
    /// The audience the cloud expects by default, if it has one.
    pub fn default_audience(self) -> Option<&'static str> {
        match self {
            Cloud::Aws => Some(aws_web_identity::DEFAULT_AUDIENCE),
            Cloud::Azure => Some(azure::AUDIENCE),
            _ => None,
        }
    }
}

/// Outcome of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Accepted.
    Pass,
    /// Accepted, but fragile or not recommended.
    Warn,
    /// The cloud would refuse this.
    Fail,
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `aws.issuer-no-port`.
    pub rule: &'static str,
    /// Outcome.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// How to fix it (for warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn pass(rule: &'static str, message: impl Into<String>) -> Finding {
    Finding { rule, level: Level::Pass, message: message.into(), fix: None }
}

fn fail(rule: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { rule, level: Level::Fail, message: message.into(), fix: Some(fix.into()) }
}

fn warn(rule: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { rule, level: Level::Warn, message: message.into(), fix: Some(fix.into()) }
}

fn check(rule: &'static str, ok: bool, good: impl Into<String>, bad: impl Into<String>, fix: impl Into<String>) -> Finding {
    if ok {
        pass(rule, good)
    } else {
        fail(rule, bad, fix)
    }
}

/// What was fetched from the issuer.
#[derive(Debug, Clone)]
pub struct IssuerEvidence {
    /// The issuer URL checked.
    pub issuer_url: String,
    /// The discovery document, or why it could not be had.
    pub discovery: Result<Value, String>,
    /// The JWKS, or why it could not be had.
    pub jwks: Result<Value, String>,
    /// Whether fetching needed a CA the caller supplied (not the web PKI).
    pub used_private_ca: bool,
}

/// Fetches `<issuer>/.well-known/openid-configuration` and its `jwks_uri`.
pub async fn gather_issuer(client: &HttpClient, issuer_url: &str, used_private_ca: bool) -> IssuerEvidence {
    let get_json = |url: String| async move {
        let r = client.get(&url).await.map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET {url} answered HTTP {}", r.status));
        }
        serde_json::from_slice::<Value>(&r.body).map_err(|_| format!("GET {url} did not answer JSON"))
    };
    let discovery = get_json(format!("{}/.well-known/openid-configuration", issuer_url.trim_end_matches('/'))).await;
    let jwks = match &discovery {
        Ok(d) => match d.get("jwks_uri").and_then(Value::as_str) {
            Some(u) => get_json(u.to_string()).await,
            None => Err("discovery has no jwks_uri".to_string()),
        },
        Err(e) => Err(format!("no discovery document: {e}")),
    };
    IssuerEvidence { issuer_url: issuer_url.to_string(), discovery, jwks, used_private_ca }
}

/// What the token must satisfy beyond the cloud's fixed rules.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Audience the cloud is configured for (default per cloud).
    pub audience: Option<String>,
    /// Now, Unix seconds.
    pub now: i64,
}

/// Checks an OIDC issuer and (optionally) a token for `cloud`.
pub fn check_oidc(cloud: Cloud, ev: &IssuerEvidence, token: Option<&str>, exp: &Expectations) -> Vec<Finding> {
    let mut out = issuer_findings(cloud, ev);
    let jwks = ev.jwks.as_ref().ok();
    if let Some(jwks) = jwks {
        out.extend(jwks_findings(cloud, jwks));
    }
    match token.map(|t| (t, jwt::peek(t))) {
        None => out.push(warn("token.present", "no token checked", "pass --token-file FILE or --spiffe-id ID to check a freshly issued JWT-SVID too")),
        Some((_, Err(e))) => out.push(fail("token.parse", format!("the token cannot be read: {e}"), "pass the compact JWT printed by `sigil svid jwt`")),
        Some((t, Ok(j))) => out.extend(token_findings(cloud, ev, jwks, t, &j, exp)),
    }
    out
}

fn issuer_findings(cloud: Cloud, ev: &IssuerEvidence) -> Vec<Finding> {
    let mut out = Vec::new();
    let url = &ev.issuer_url;
    let parsed = parse_target(url);
    let https = url.starts_with("https://") && parsed.is_ok();
    out.push(check(
        "issuer.https",
        https,
        format!("issuer {url} is HTTPS"),
        format!("issuer {url} is not an https:// URL"),
        "set `public_url: https://HOST` in the broker config and serve discovery over HTTPS",
    ));
    if cloud == Cloud::Aws {
        let has_port = url.trim_start_matches("https://").split('/').next().map(|h| h.contains(':')).unwrap_or(false);
        out.push(check(
            "aws.issuer-no-port",
            !has_port,
            "issuer URL has no port",
            format!("issuer {url} has a port: AWS IAM OIDC providers only accept https://HOST[/PATH] on 443"),
            "publish discovery on port 443 (a load balancer or reverse proxy in front of the broker) and set `public_url` without a port",
        ));
    }
    if ev.used_private_ca {
        out.push(warn(
            "issuer.public-tls",
            "the issuer's TLS certificate was only trusted through --ca-file",
            "clouds fetch discovery and JWKS with the public web PKI: serve them with a publicly trusted certificate (or upload the JWKS where the cloud allows it: GCP)",
        ));
    }
    match &ev.discovery {
        Err(e) => out.push(fail("issuer.discovery", format!("discovery not available: {e}"), "serve /.well-known/openid-configuration at the issuer URL")),
        Ok(d) => {
            let iss = d.get("issuer").and_then(Value::as_str).unwrap_or_default();
            out.push(check(
                "issuer.match",
                iss == url,
                "discovery `issuer` equals the issuer URL",
                format!("discovery says issuer {iss:?}, but it was fetched for {url:?} (must be identical, trailing slash included)"),
                "set the broker's `public_url` to exactly the URL the cloud is configured with",
            ));
            let jwks_uri = d.get("jwks_uri").and_then(Value::as_str).unwrap_or_default();
            out.push(check(
                "issuer.jwks-uri-https",
                jwks_uri.starts_with("https://"),
                "jwks_uri is HTTPS",
                format!("jwks_uri {jwks_uri:?} is not HTTPS"),
                "serve the JWKS over HTTPS under the issuer URL",
            ));
            let has = |k: &str, v: &str| d.get(k).and_then(Value::as_array).map(|a| a.iter().any(|x| x.as_str() == Some(v))).unwrap_or(false);
            out.push(check(
                "issuer.discovery-fields",
                has("response_types_supported", "id_token") && has("subject_types_supported", "public") && d.get("id_token_signing_alg_values_supported").is_some(),
                "discovery lists response_types_supported, subject_types_supported and id_token_signing_alg_values_supported",
                "discovery lacks response_types_supported [id_token], subject_types_supported [public] or id_token_signing_alg_values_supported",
                "upgrade the broker, or fix the proxy that rewrites the discovery document",
            ));
        }
    }
    if let Err(e) = &ev.jwks {
        out.push(fail("jwks.fetch", format!("JWKS not available: {e}"), "serve the JWKS at the discovery document's jwks_uri"));
    }
    out
}

fn jwks_findings(cloud: Cloud, jwks: &Value) -> Vec<Finding> {
    let keys: Vec<&Value> = jwks.get("keys").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let mut out = vec![check(
        "jwks.keys",
        !keys.is_empty(),
        format!("JWKS publishes {} key(s)", keys.len()),
        "JWKS has no keys",
        "check the broker's JWT signing key",
    )];
    let field = |k: &Value, f: &str| k.get(f).and_then(Value::as_str).map(str::to_string);
    match cloud {
        Cloud::Azure => {
            let bad_use: Vec<String> = keys.iter().filter(|k| field(k, "use").as_deref() != Some("sig")).map(|k| field(k, "kid").unwrap_or_default()).collect();
            out.push(check(
                "azure.jwks-use-sig",
                bad_use.is_empty(),
                "every JWKS key has `use: sig`",
                format!("JWKS keys without `use: sig`: {bad_use:?}; Entra ID skips them"),
                "publish `use: \"sig\"` on every key (the broker's /.well-known/jwks.json does)",
            ));
            let non_rsa: Vec<String> = keys.iter().filter(|k| field(k, "kty").as_deref() != Some("RSA")).map(|k| field(k, "alg").unwrap_or_default()).collect();
            out.push(check(
                "azure.jwks-rsa",
                non_rsa.is_empty(),
                "every JWKS key is RSA",
                format!("the issuer publishes non-RSA keys ({non_rsa:?}); Entra ID only supports RS256"),
                "set `jwt_alg: rsa-2048` in the broker config (RS256) for the issuer Azure trusts",
            ));
        }
        Cloud::Gcp => {
            let no_kid = keys.iter().filter(|k| field(k, "kid").is_none()).count();
            out.push(check(
                "gcp.jwks-kid",
                no_kid == 0,
                "every JWKS key has a kid",
                format!("{no_kid} JWKS key(s) have no kid; Google matches keys by kid"),
                "publish a `kid` on every key (the broker's JWKS does)",
            ));
        }
        _ => {}
    }
    out
}

fn token_findings(cloud: Cloud, ev: &IssuerEvidence, jwks: Option<&Value>, token: &str, j: &Peeked, exp: &Expectations) -> Vec<Finding> {
    let mut out = Vec::new();
    let alg = j.header_str("alg").unwrap_or_default().to_string();
    let iss = j.claim_str("iss").unwrap_or_default();
    let disc_iss = ev.discovery.as_ref().ok().and_then(|d| d.get("issuer")).and_then(Value::as_str).unwrap_or(&ev.issuer_url);
    out.push(check(
        "token.iss",
        iss == disc_iss,
        "token `iss` equals the discovery issuer",
        format!("token iss {iss:?} differs from the discovery issuer {disc_iss:?}"),
        "issue the token from the broker whose issuer the cloud trusts (public_url)",
    ));
    if let Some(jwks) = jwks {
        out.push(signature_finding(token, jwks));
    }
    out.push(time_finding(j, exp.now));
    let auds = jwt::audiences(&j.claims);
    let want = exp.audience.clone().or_else(|| cloud.default_audience().map(str::to_string));
    if let Some(want) = want {
        let ok = auds.iter().any(|a| a == &want || (cloud == Cloud::Gcp && a.strip_prefix("https:") == Some(want.as_str())));
        out.push(check(
            "token.aud",
            ok,
            format!("aud contains {want:?}"),
            format!("aud {auds:?} does not contain {want:?}"),
            format!("issue the SVID with `--audience {want}`"),
        ));
    }
    match cloud {
        Cloud::Aws => {
            let (lo, hi) = aws_web_identity::TOKEN_LENGTH_RANGE;
            out.push(check(
                "aws.token-length",
                (lo..=hi).contains(&j.length),
                format!("token is {} characters (AWS accepts {lo}..{hi})", j.length),
                format!("token is {} characters; AWS STS accepts {lo}..{hi}", j.length),
                "use fewer audiences and extra claims in the workload identity",
            ));
            out.push(check(
                "aws.alg",
                matches!(alg.as_str(), "RS256" | "RS384" | "RS512" | "ES256" | "ES384" | "ES512"),
                format!("{alg} is accepted by AWS"),
                format!("{alg:?} is not an RSA or ECDSA algorithm AWS accepts"),
                "sign with `jwt_alg: rsa-2048` or `ec-p256`",
            ));
            let host_path = disc_iss.trim_start_matches("https://");
            out.push(pass(
                "aws.condition-keys",
                format!("trust policy condition keys: {host_path}:aud = {:?}, {host_path}:sub = {:?}", auds.first().cloned().unwrap_or_default(), j.claim_str("sub").unwrap_or_default()),
            ));
        }
        Cloud::Azure => {
            out.push(check(
                "azure.alg",
                alg == "RS256",
                "token is RS256",
                format!("token is signed with {alg}; Entra ID federated credentials only accept RS256"),
                "set `jwt_alg: rsa-2048` in the broker config so the issuer signs RS256",
            ));
            if auds.len() > 1 {
                out.push(warn("azure.single-aud", format!("token has {} audiences", auds.len()), "issue a token with only `--audience api://AzureADTokenExchange`"));
            }
            out.push(pass("azure.subject", format!("federated credential must name issuer {disc_iss:?} and subject {:?} exactly", j.claim_str("sub").unwrap_or_default())));
        }
        Cloud::Gcp => {
            out.push(check(
                "gcp.kid",
                j.header_str("kid").is_some_and(|k| !k.is_empty()),
                "token header has a kid",
                "token header has no kid; Google STS refuses it",
                "sign JWT-SVIDs with a kid (the broker always does; check what minted this token)",
            ));
            out.push(check(
                "gcp.alg",
                alg == "RS256" || alg == "ES256",
                format!("{alg} is accepted by Google"),
                format!("{alg:?}: Google Workload Identity Federation accepts RS256 and ES256 only"),
                "set `jwt_alg: rsa-2048` (RS256) or `ec-p256` (ES256)",
            ));
            match (j.claim_i64("iat"), j.claim_i64("exp")) {
                (Some(i), Some(e)) if e - i >= gcp::MAX_TOKEN_LIFETIME_SECS => out.push(fail(
                    "gcp.lifetime",
                    format!("exp - iat is {}h; Google refuses tokens valid for 48h or more", (e - i) / 3600),
                    "issue JWT-SVIDs with a TTL under 6h (e.g. `--ttl 1h`)",
                )),
                (Some(i), Some(e)) if e - i > 6 * 3600 => out.push(warn("gcp.lifetime", format!("exp - iat is {}h", (e - i) / 3600), "Google recommends under 6h")),
                (Some(_), Some(_)) => out.push(pass("gcp.lifetime", "exp - iat is under 6h")),
                _ => out.push(fail("gcp.lifetime", "token lacks iat or exp", "JWT-SVIDs must carry iat and exp")),
            }
            let sub = j.claim_str("sub").unwrap_or_default();
            out.push(check(
                "gcp.subject-length",
                sub.len() <= gcp::MAX_SUBJECT_BYTES,
                format!("sub is {} bytes (google.subject <= 127)", sub.len()),
                format!("sub is {} bytes; mapped to google.subject (assertion.sub) Google refuses more than 127", sub.len()),
                "use a shorter SPIFFE ID path, or map google.subject to a shorter expression (e.g. assertion.sub.extract('/{path}'))",
            ));
        }
        Cloud::AwsRolesAnywhere => {}
    }
    out
}

/// The verifier's header, key and signature verdict on `token` with the issuer's keys.
fn signature_finding(token: &str, jwks: &Value) -> Finding {
    let verdict = jwt::KeySet::from_value(jwks).and_then(|keys| jwt::parse(token)?.verify_signature(&keys).map(|_| ()));
    match verdict {
        Ok(()) => pass("token.signature", "header, key choice and signature pass the verifier joins and ValidateJWTSVID use"),
        Err(e @ (JwtError::BadSignature | JwtError::UnknownKid(_) | JwtError::AmbiguousKey(_) | JwtError::AlgorithmMismatch { .. } | JwtError::BadJwks(_))) => fail(
            "token.signature",
            e.to_string(),
            "the token must be signed by a key the issuer publishes, named by its kid; re-fetch the JWKS after CA rotation",
        ),
        Err(e) => fail("token.signature", e.to_string(), "pass a compact JWT as `sigil svid jwt` prints it (asymmetric alg, no key or crit in the header)"),
    }
}

/// The verifier's `exp`/`nbf`/`iat` verdict (with its leeway).
fn time_finding(j: &Peeked, now: i64) -> Finding {
    match jwt::check_times(&j.claims, now) {
        Ok(()) => pass("token.exp", format!("token is within its validity period ({} s leeway)", jwt::LEEWAY_SECS)),
        Err(JwtError::Expired { exp, now }) => fail("token.exp", format!("token expired {}s ago", now - exp), "issue a fresh JWT-SVID (the agent renews before expiry)"),
        Err(e @ JwtError::MissingClaim("exp")) => fail("token.exp", format!("token has no usable exp: {e}"), "every JWT-SVID must carry exp"),
        Err(e) => fail("token.nbf", e.to_string(), "check the clocks of the issuer and of this machine; nbf and iat must not lie in the future"),
    }
}

/// Checks an X.509-SVID leaf and the trust anchor bundle against Roles Anywhere's rules.
pub fn check_roles_anywhere(leaf_der: &[u8], bundle_der: &[Vec<u8>], now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let leaf = match parse_x509_certificate(leaf_der) {
        Ok((_, c)) => c,
        Err(e) => return vec![fail("ra.leaf-parse", format!("the leaf certificate cannot be parsed: {e}"), "pass the svid.pem written by `sigil svid x509`")],
    };
    out.push(check(
        "ra.leaf-v3",
        leaf.version() == X509Version::V3,
        "leaf is X.509 v3",
        "leaf is not X.509 v3",
        "issue the leaf from the broker (v3 with extensions)",
    ));
    let bc = leaf.basic_constraints().ok().flatten().map(|b| b.value.ca).unwrap_or(false);
    out.push(check("ra.leaf-not-ca", !bc, "leaf has CA:false", "leaf is a CA certificate (CA:true)", "present an end-entity X.509-SVID, not a CA"));
    let ku = leaf.key_usage().ok().flatten().map(|k| k.value.digital_signature());
    out.push(check(
        "ra.leaf-key-usage",
        ku == Some(true),
        "leaf key usage includes digitalSignature",
        "leaf key usage lacks digitalSignature (or the extension is missing)",
        "issue the leaf with keyUsage digitalSignature (X.509-SVIDs from the broker have it)",
    ));
    let sig_oid = leaf.signature_algorithm.algorithm.to_id_string();
    let strong = matches!(
        sig_oid.as_str(),
        "1.2.840.113549.1.1.11" | "1.2.840.113549.1.1.12" | "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.2" | "1.2.840.10045.4.3.3" | "1.2.840.10045.4.3.4" | "1.2.840.113549.1.1.10"
    );
    out.push(check(
        "ra.leaf-signature-alg",
        strong,
        "leaf is signed with SHA-256 or stronger",
        format!("leaf signature algorithm {sig_oid} is weaker than SHA-256"),
        "sign with SHA-256 or stronger (the broker's CA does)",
    ));
    let key_ok = match leaf.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => r.key_size() >= 2048,
        Ok(x509_parser::public_key::PublicKey::EC(p)) => p.key_size() == 256,
        _ => false,
    };
    out.push(check(
        "ra.leaf-key-type",
        key_ok,
        "leaf key is RSA >= 2048 or ECDSA P-256",
        "leaf key is neither RSA >= 2048 nor ECDSA P-256 (Roles Anywhere signs with RSA or ECDSA; Sigil signs P-256 and RSA)",
        "issue the SVID for an RSA or P-256 key",
    ));
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    out.push(check(
        "ra.leaf-validity",
        nb <= now && now < na,
        "leaf is within its validity period",
        format!("leaf is not valid now (notBefore {nb}, notAfter {na}, now {now})"),
        "issue a fresh X.509-SVID (the agent renews at half-life)",
    ));
    let cas: Vec<X509Certificate<'_>> = bundle_der.iter().filter_map(|d| parse_x509_certificate(d).ok().map(|(_, c)| c)).collect();
    out.push(check(
        "ra.trust-anchor-size",
        !cas.is_empty() && cas.len() <= 2,
        format!("trust anchor bundle has {} CA certificate(s) (at most 2)", cas.len()),
        format!("trust anchor bundle has {} certificates; a Roles Anywhere trust anchor holds 1..2 CAs", cas.len()),
        "upload only the active X.509 CA (and, during rotation, the next one): `sigil bundle --format pem`, and drop expired CAs",
    ));
    let not_ca: Vec<String> = cas
        .iter()
        .filter(|c| {
            let is_ca = c.basic_constraints().ok().flatten().map(|b| b.value.ca).unwrap_or(false);
            let signs = c.key_usage().ok().flatten().map(|k| k.value.key_cert_sign()).unwrap_or(true);
            !(is_ca && signs)
        })
        .map(|c| c.subject().to_string())
        .collect();
    out.push(check(
        "ra.trust-anchor-ca",
        not_ca.is_empty(),
        "every trust anchor certificate is a CA with keyCertSign",
        format!("trust anchor certificates that are not CAs: {not_ca:?}"),
        "put only CA certificates (CA:true, keyCertSign) in the trust anchor",
    ));
    let chained = cas.iter().any(|ca| ca.subject() == leaf.issuer() && leaf.verify_signature(Some(ca.public_key())).is_ok());
    out.push(check(
        "ra.chain",
        chained,
        "leaf is signed by a CA in the trust anchor bundle",
        "leaf is not signed by any CA in the trust anchor bundle",
        "upload the broker's current X.509 CA (`sigil bundle --format pem`) as the trust anchor, or send intermediates with --intermediates",
    ));
    out
}

/// Number of failures in `findings`.
pub fn failures(findings: &[Finding]) -> usize {
    findings.iter().filter(|f| f.level == Level::Fail).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(url: &str) -> IssuerEvidence {
        IssuerEvidence {
            issuer_url: url.into(),
            discovery: Ok(json!({"issuer": url, "jwks_uri": format!("{url}/.well-known/jwks.json"), "response_types_supported": ["id_token"], "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"]})),
            jwks: Ok(json!({"keys": [{"kid": "k", "kty": "RSA", "use": "sig", "alg": "RS256", "n": "AQAB", "e": "AQAB"}]})),
            used_private_ca: false,
        }
    }

    fn rule<'a>(f: &'a [Finding], r: &str) -> &'a Finding {
        f.iter().find(|x| x.rule == r).unwrap_or_else(|| panic!("no finding {r}: {f:?}"))
    }

    #[test]
    fn aws_refuses_an_issuer_with_a_port() {
        let f = check_oidc(Cloud::Aws, &ev("https://issuer.example:8443"), None, &Expectations::default());
        assert_eq!(rule(&f, "aws.issuer-no-port").level, Level::Fail);
        let f = check_oidc(Cloud::Aws, &ev("https://issuer.example"), None, &Expectations::default());
        assert_eq!(rule(&f, "aws.issuer-no-port").level, Level::Pass);
    }

    #[test]
    fn issuer_mismatch_is_flagged() {
        let mut e = ev("https://issuer.example");
        e.issuer_url = "https://issuer.example/".into();
        assert_eq!(rule(&check_oidc(Cloud::Gcp, &e, None, &Expectations::default()), "issuer.match").level, Level::Fail);
    }

    #[test]
    fn azure_needs_use_sig_and_rsa_keys() {
        let mut e = ev("https://i.example");
        e.jwks = Ok(json!({"keys": [{"kid": "k", "kty": "EC", "crv": "P-256", "alg": "ES256"}]}));
        let f = check_oidc(Cloud::Azure, &e, None, &Expectations::default());
        assert_eq!(rule(&f, "azure.jwks-use-sig").level, Level::Fail);
        assert_eq!(rule(&f, "azure.jwks-rsa").level, Level::Fail);
        assert!(rule(&f, "azure.jwks-rsa").fix.as_deref().unwrap_or_default().contains("rsa-2048"));
    }

    #[test]
    fn unparsable_leaf_is_reported_first() {
        let f = check_roles_anywhere(b"not der", &[], 0);
        assert_eq!(f[0].rule, "ra.leaf-parse");
    }
}
