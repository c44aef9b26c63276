//! AWS STS `GetCallerIdentity` as a join proof: which endpoints the broker may
//! call, how the agent's signed request is checked and rebuilt, and how the
//! response is read. Pure: no I/O (sending lives in `sts_http.rs`).
//!
//! Vault CVE-2020-16250/16251 taught that validating a client-built request is
//! not enough: an attacker pointed Vault at another AWS API (other action, other
//! `Host`) whose response reflected attacker text, and a lenient XML parser found
//! a fake `GetCallerIdentityResult` inside. Here the broker *rebuilds* the request
//! (fixed method, path, body and host, chosen from an allow-list) and copies only
//! the signature headers, which must cover every forwarded header; and the
//! response must be exactly a `GetCallerIdentityResponse` document.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The only body the broker forwards.
pub const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// The only content type the broker forwards.
pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// Header binding the signed request to one broker challenge (must be signed).
pub const CHALLENGE_HEADER: &str = "x-sigil-challenge";
/// Header binding the signed request to the broker the agent meant to join
/// (must be signed): the host name or IP the agent dialed and verified with
/// TLS. Without it, a broker an agent joins could relay another broker's
/// challenge, have the agent sign it, and join that broker as the agent's
/// AWS identity (as Vault's `X-Vault-AWS-IAM-Server-ID` prevents).
pub const SERVER_NAME_HEADER: &str = "x-sigil-server-name";
/// XML namespace of STS responses.
pub const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// Largest payload (JSON of the signed request) accepted from an agent.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// How far `x-amz-date` may be from the broker's clock (STS allows 15 minutes).
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Headers the agent may send; every one but `authorization` must be signed.
const ALLOWED_HEADERS: &[&str] = &["authorization", "content-type", "host", "x-amz-date", "x-amz-security-token", CHALLENGE_HEADER, SERVER_NAME_HEADER];
/// Headers that must be present.
const REQUIRED_HEADERS: &[&str] = &["authorization", "content-type", "host", "x-amz-date", CHALLENGE_HEADER, SERVER_NAME_HEADER];

/// Why a signed STS request or an STS response was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StsError {
    /// The payload is not the JSON form of a signed request.
    #[error("payload is not a signed GetCallerIdentity request: {0}")]
    Payload(String),
    /// The request targets an endpoint that is not allow-listed.
    #[error("STS endpoint {0:?} is not allowed (AWS STS hosts and the join token's sts_endpoints only)")]
    EndpointNotAllowed(String),
    /// The request is not exactly a signed `GetCallerIdentity`.
    #[error("signed request refused: {0}")]
    Request(String),
    /// An `sts_endpoints` entry in the token config is malformed.
    #[error("join token config sts_endpoints: {0}")]
    Config(String),
    /// STS answered with something other than a caller identity.
    #[error("STS response refused: {0}")]
    Response(String),
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: only for configured endpoints (tests on loopback).
    Http,
    /// HTTPS.
    Https,
}

/// An STS endpoint the broker may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or IP literal, lower case.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether the URL named the port (then `Host` must name it too).
    explicit_port: bool,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/]`; anything else (path, query, user info) is refused.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(format!("{url:?}: scheme must be https (or http for a configured test endpoint)")),
        };
        let auth = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?;
        if auth.as_str().contains('@') {
            return Err(format!("{url:?}: user info is not allowed"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("{url:?}: path must be \"/\" and there must be no query"));
        }
        let host = auth.host().to_ascii_lowercase();
        let default_port = if scheme == Scheme::Https { 443 } else { 80 };
        Ok(Self { scheme, host, port: auth.port_u16().unwrap_or(default_port), explicit_port: auth.port().is_some() })
    }

    /// `host` or `host:port`, as the `Host` header must say.
    pub fn authority(&self) -> String {
        if self.explicit_port {
            format!("{}:{}", self.host, self.port)
        } else {
            self.host.clone()
        }
    }

    /// The URL the broker posts to.
    pub fn url(&self) -> String {
        let s = if self.scheme == Scheme::Https { "https" } else { "http" };
        format!("{s}://{}/", self.authority())
    }

    fn same_target(&self, other: &Endpoint) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

/// True for AWS's own STS hosts: `sts.amazonaws.com`, `sts.<region>.amazonaws.com`,
/// `sts-fips.<region>.amazonaws.com` and the China partition `.amazonaws.com.cn`.
pub fn is_aws_sts_host(host: &str) -> bool {
    if host == "sts.amazonaws.com" {
        return true;
    }
    let rest = host.strip_prefix("sts.").or_else(|| host.strip_prefix("sts-fips."));
    let Some(rest) = rest else { return false };
    let region = rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(is_region)
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1` ...
fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && r.len() <= 32
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// The endpoints a join token allows: AWS STS hosts over HTTPS plus the
/// token's `sts_endpoints` (comma-separated URLs, e.g. a local STS for tests).
#[derive(Debug, Clone, Default)]
pub struct AllowedEndpoints {
    extra: Vec<Endpoint>,
}

impl AllowedEndpoints {
    /// Reads `sts_endpoints` from a join token's config.
    pub fn from_config(config: &BTreeMap<String, String>) -> Result<Self, StsError> {
        let mut extra = Vec::new();
        for item in config.get("sts_endpoints").map(String::as_str).unwrap_or("").split(',') {
            let item = item.trim();
            if !item.is_empty() {
                extra.push(Endpoint::parse(item).map_err(StsError::Config)?);
            }
        }
        Ok(Self { extra })
    }

    /// Whether the broker may send to `e`.
    pub fn allows(&self, e: &Endpoint) -> bool {
        (e.scheme == Scheme::Https && e.port == 443 && is_aws_sts_host(&e.host)) || self.extra.iter().any(|x| x.same_target(e))
    }
}

/// The agent's signed request, as sent in `JoinRequest.payload` (JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequestWire {
    /// HTTP method (must be POST).
    pub method: String,
    /// Target URL.
    pub url: String,
    /// Header name/value pairs, as signed.
    pub headers: Vec<(String, String)>,
    /// Body (must be [`BODY`]).
    pub body: String,
}

/// A request the broker rebuilt and may send: fixed method, path and body.
#[derive(Clone, PartialEq, Eq)]
pub struct StsRequest {
    /// Where it goes (allow-listed).
    pub endpoint: Endpoint,
    /// Lower-case header names and values, all covered by the signature.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for StsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values include a signature and maybe a session token: names only.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StsRequest").field("endpoint", &self.endpoint.url()).field("headers", &names).finish()
    }
}

/// The value of [`SERVER_NAME_HEADER`] for a broker address (`HOST:PORT`,
/// `https://HOST:PORT`, `[V6]:PORT`): the host, lower case, without brackets.
pub fn server_name(broker_addr: &str) -> Result<String, String> {
    let a = broker_addr.trim();
    let a = a.strip_prefix("https://").unwrap_or(a).trim_end_matches('/');
    let auth: http::uri::Authority = a.parse().map_err(|_| format!("broker address {broker_addr:?} is not HOST:PORT"))?;
    let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host.is_empty() || a.contains('@') {
        return Err(format!("broker address {broker_addr:?} is not HOST:PORT"));
    }
    Ok(host)
}

/// Whether `given` (the signed [`SERVER_NAME_HEADER`]) is one of this broker's names.
fn names_this_broker(given: &str, names: &[String]) -> bool {
    let ip = given.parse::<std::net::IpAddr>().ok();
    names.iter().any(|n| n.eq_ignore_ascii_case(given) || (ip.is_some() && n.parse::<std::net::IpAddr>().ok() == ip))
}

/// Checks the agent's payload and rebuilds the request the broker will send.
/// `server_names` are this broker's names (its serving certificate's); the
/// signed [`SERVER_NAME_HEADER`] must be one of them.
/// Nothing here touches the network: a refused request never leaves the broker.
pub fn check_request(payload: &[u8], allowed: &AllowedEndpoints, challenge: &str, server_names: &[String], now: i64) -> Result<StsRequest, StsError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(StsError::Payload(format!("larger than {MAX_PAYLOAD_BYTES} bytes")));
    }
    let wire: SignedRequestWire = serde_json::from_slice(payload).map_err(|e| StsError::Payload(e.to_string()))?;
    let endpoint = Endpoint::parse(&wire.url).map_err(StsError::Request)?;
    if !allowed.allows(&endpoint) {
        return Err(StsError::EndpointNotAllowed(endpoint.url()));
    }
    if wire.method != "POST" {
        return Err(StsError::Request(format!("method must be POST, not {:?}", wire.method)));
    }
    if wire.body != BODY {
        return Err(StsError::Request(format!("body must be exactly {BODY:?} (GetCallerIdentity only)")));
    }
    let headers = check_headers(&wire.headers, &endpoint, challenge, server_names, now)?;
    Ok(StsRequest { endpoint, headers })
}

fn check_headers(raw: &[(String, String)], endpoint: &Endpoint, challenge: &str, server_names: &[String], now: i64) -> Result<Vec<(String, String)>, StsError> {
    let bad = |m: String| StsError::Request(m);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in raw {
        let name = k.trim().to_ascii_lowercase();
        if !ALLOWED_HEADERS.contains(&name.as_str()) {
            return Err(bad(format!("header {name:?} is not allowed (allowed: {})", ALLOWED_HEADERS.join(", "))));
        }
        if v.bytes().any(|b| b.is_ascii_control()) {
            return Err(bad(format!("header {name:?} has control characters")));
        }
        if headers.insert(name.clone(), v.trim().to_string()).is_some() {
            return Err(bad(format!("header {name:?} appears twice")));
        }
    }
    for r in REQUIRED_HEADERS {
        if !headers.contains_key(*r) {
            return Err(bad(format!("header {r:?} is required")));
        }
    }
    let get = |n: &str| headers.get(n).map(String::as_str).unwrap_or_default();
    if get("host") != endpoint.authority() {
        return Err(bad(format!("Host header {:?} does not match the STS endpoint {:?}", get("host"), endpoint.authority())));
    }
    if get("content-type") != CONTENT_TYPE {
        return Err(bad(format!("content-type must be {CONTENT_TYPE:?}")));
    }
    if aws_lc_rs::constant_time::verify_slices_are_equal(get(CHALLENGE_HEADER).as_bytes(), challenge.as_bytes()).is_err() {
        return Err(bad(format!("{CHALLENGE_HEADER} does not carry this join's challenge")));
    }
    if !names_this_broker(get(SERVER_NAME_HEADER), server_names) {
        return Err(bad(format!(
            "{SERVER_NAME_HEADER} {:?} is not a name of this broker: the request was signed for another broker",
            get(SERVER_NAME_HEADER)
        )));
    }
    check_date(get("x-amz-date"), now)?;
    let auth = Authorization::parse(get("authorization")).map_err(bad)?;
    let mut expected: Vec<&str> = headers.keys().map(String::as_str).filter(|k| *k != "authorization").collect();
    expected.sort_unstable();
    if auth.signed_headers != expected {
        return Err(bad(format!("SignedHeaders must be exactly {:?} (every forwarded header signed)", expected.join(";"))));
    }
    Ok(headers.into_iter().collect())
}

fn check_date(v: &str, now: i64) -> Result<(), StsError> {
    let t = crate::sigv4::parse_amz_date(v).ok_or_else(|| StsError::Request(format!("x-amz-date {v:?} is not YYYYMMDDTHHMMSSZ")))?;
    if (t - now).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(StsError::Request(format!("x-amz-date {v:?} is more than 15 minutes from the broker's clock")));
    }
    Ok(())
}

/// The parts of a SigV4 `Authorization` header the broker checks.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    service: &'a str,
    signed_headers: Vec<&'a str>,
}

impl<'a> Authorization<'a> {
    fn parse(v: &'a str) -> Result<Self, String> {
        let rest = v
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or("Authorization must be AWS4-HMAC-SHA256 (SigV4)")?;
        let mut credential = None;
        let mut signed = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (k, val) = part.trim().split_once('=').ok_or("malformed Authorization header")?;
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return Err(format!("unexpected Authorization field {k:?}")),
            };
            if slot.replace(val).is_some() {
                return Err(format!("Authorization field {k:?} appears twice"));
            }
        }
        let (credential, signed, signature) = match (credential, signed, signature) {
            (Some(c), Some(s), Some(g)) => (c, s, g),
            _ => return Err("Authorization needs Credential, SignedHeaders and Signature".into()),
        };
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("Authorization Signature must be 64 hex digits".into());
        }
        // Credential=AKID/YYYYMMDD/REGION/SERVICE/aws4_request
        let scope: Vec<&str> = credential.split('/').collect();
        if scope.len() != 5 || scope[4] != "aws4_request" {
            return Err("Authorization Credential scope must be KEY/DATE/REGION/sts/aws4_request".into());
        }
        if scope[3] != "sts" {
            return Err(format!("request is signed for service {:?}, not sts", scope[3]));
        }
        Ok(Self { service: scope[3], signed_headers: signed.split(';').collect() })
    }
}

/// Who STS says signed the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// 12-digit account id.
    pub account: String,
    /// Caller ARN (`arn:aws:iam::ACCOUNT:user/NAME`, `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    pub arn: String,
    /// Unique id of the user or role (and session).
    pub user_id: String,
}

impl CallerIdentity {
    /// Join claims: `aws_account`, `aws_arn`, `aws_user_id`, and for assumed roles
    /// `aws_role` (role name) and `aws_role_arn` (`arn:PARTITION:iam::ACCOUNT:role/ROLE`).
    pub fn claims(&self) -> BTreeMap<String, String> {
        let mut c = BTreeMap::new();
        c.insert("aws_account".into(), self.account.clone());
        c.insert("aws_arn".into(), self.arn.clone());
        c.insert("aws_user_id".into(), self.user_id.clone());
        let parts: Vec<&str> = self.arn.splitn(6, ':').collect();
        if let [_, partition, "sts", _, account, resource] = parts.as_slice() {
            if let Some(role) = resource.strip_prefix("assumed-role/").and_then(|r| r.split('/').next()) {
                c.insert("aws_role".into(), role.to_string());
                c.insert("aws_role_arn".into(), format!("arn:{partition}:iam::{account}:role/{role}"));
            }
        }
        c
    }
}

/// Largest STS response read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Reads a `GetCallerIdentity` response. The whole document must be exactly
/// that response: root element and namespace, one result with one `Arn`,
/// `UserId` and `Account`, the ARN's account equal to `Account`. A caller
/// identity found anywhere else (reflected inside another API's answer) is refused.
pub fn parse_response(status: u16, body: &[u8]) -> Result<CallerIdentity, StsError> {
    let bad = |m: &str| StsError::Response(m.to_string());
    if status != 200 {
        return Err(StsError::Response(format!("STS answered HTTP {status}: {}", sts_error_message(body))));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let doc = crate::xml::parse(text).map_err(|e| StsError::Response(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "GetCallerIdentityResponse" || root.tag_name().namespace() != Some(STS_NAMESPACE) {
        return Err(bad("root element is not an STS GetCallerIdentityResponse"));
    }
    let mut result = None;
    for child in root.children().filter(|n| n.is_element()) {
        match child.tag_name().name() {
            "GetCallerIdentityResult" if result.is_none() => result = Some(child),
            "ResponseMetadata" => {}
            other => return Err(StsError::Response(format!("unexpected element {other:?} in the response"))),
        }
    }
    let result = result.ok_or_else(|| bad("no GetCallerIdentityResult"))?;
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    for child in result.children().filter(|n| n.is_element()) {
        let name = child.tag_name().name();
        if !matches!(name, "Arn" | "UserId" | "Account") || child.children().any(|n| n.is_element()) {
            return Err(StsError::Response(format!("unexpected element {name:?} in GetCallerIdentityResult")));
        }
        let value = crate::xml::leaf_text(child).map_err(|e| StsError::Response(e.to_string()))?;
        if fields.insert(name, value).is_some() {
            return Err(StsError::Response(format!("{name} appears twice")));
        }
    }
    let take = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned().ok_or_else(|| StsError::Response(format!("{k} missing")));
    let id = CallerIdentity { account: take("Account")?, arn: take("Arn")?, user_id: take("UserId")? };
    if id.account.len() != 12 || !id.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("Account is not a 12-digit AWS account id"));
    }
    let arn: Vec<&str> = id.arn.splitn(6, ':').collect();
    if arn.len() != 6 || arn[0] != "arn" || arn[4] != id.account {
        return Err(bad("Arn is not an ARN in the returned account"));
    }
    Ok(id)
}

/// The `<Message>` of an STS error document, bounded, for the operator.
fn sts_error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_string();
    roxmltree::Document::parse(&text)
        .ok()
        .and_then(|d| d.descendants().find(|n| n.has_tag_name("Message")).and_then(|n| n.text().map(str::to_string)))
        .unwrap_or_else(|| "no error message".into())
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z
    const DATE: &str = "20231114T221320Z";

    fn wire(url: &str, host: &str, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut headers = vec![
            ("host".to_string(), host.to_string()),
            ("content-type".into(), CONTENT_TYPE.into()),
            ("x-amz-date".into(), DATE.into()),
            (CHALLENGE_HEADER.into(), "c1".into()),
            (SERVER_NAME_HEADER.into(), "broker.example.org".into()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut names: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
        names.sort();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/sts/aws4_request, SignedHeaders={}, Signature={}",
            names.join(";"),
            "a".repeat(64)
        );
        headers.push(("authorization".into(), auth));
        serde_json::to_vec(&serde_json::json!({"method": "POST", "url": url, "headers": headers, "body": body})).unwrap()
    }

    fn aws() -> AllowedEndpoints {
        AllowedEndpoints::default()
    }

    fn names() -> Vec<String> {
        vec!["localhost".into(), "broker.example.org".into(), "127.0.0.1".into(), "::1".into()]
    }

    fn check_request(payload: &[u8], allowed: &AllowedEndpoints, challenge: &str, now: i64) -> Result<StsRequest, StsError> {
        super::check_request(payload, allowed, challenge, &names(), now)
    }

    /// Issue 11.19: a request the agent signed for another broker (which
    /// relayed this broker's challenge) is refused; so is one without the
    /// header, or with it unsigned.
    #[test]
    fn a_request_signed_for_another_broker_is_refused() {
        let url = "https://sts.amazonaws.com/";
        let mut v: serde_json::Value = serde_json::from_slice(&wire(url, "sts.amazonaws.com", BODY, &[])).unwrap();
        for h in v["headers"].as_array_mut().unwrap() {
            if h[0] == SERVER_NAME_HEADER {
                h[1] = "evil-broker.example.net".into();
            }
        }
        let e = check_request(&serde_json::to_vec(&v).unwrap(), &aws(), "c1", NOW).unwrap_err();
        assert!(e.to_string().contains("signed for another broker"), "{e}");
        // Without the header, with a signature not covering it.
        let mut v: serde_json::Value = serde_json::from_slice(&wire(url, "sts.amazonaws.com", BODY, &[])).unwrap();
        v["headers"].as_array_mut().unwrap().retain(|h| h[0] != SERVER_NAME_HEADER);
        assert!(check_request(&serde_json::to_vec(&v).unwrap(), &aws(), "c1", NOW).unwrap_err().to_string().contains(SERVER_NAME_HEADER));
        let headers = v["headers"].as_array_mut().unwrap();
        let auth = headers.iter().position(|h| h[0] == "authorization").unwrap();
        let a = headers[auth][1].as_str().unwrap().replace(";x-sigil-server-name", "");
        headers[auth][1] = a.into();
        headers.push(serde_json::json!([SERVER_NAME_HEADER, "broker.example.org"]));
        assert!(check_request(&serde_json::to_vec(&v).unwrap(), &aws(), "c1", NOW).unwrap_err().to_string().contains("every forwarded header signed"));
        // Any of the broker's names, case and IP spelling aside.
        assert!(names_this_broker("Broker.Example.ORG", &names()));
        assert!(names_this_broker("0:0:0:0:0:0:0:1", &names()));
        assert!(!names_this_broker("", &names()));
    }

    #[test]
    fn server_name_is_the_dialed_host() {
        assert_eq!(server_name("Broker.example.org:8443").unwrap(), "broker.example.org");
        assert_eq!(server_name("https://127.0.0.1:8443").unwrap(), "127.0.0.1");
        assert_eq!(server_name("[::1]:8443").unwrap(), "::1");
        assert!(server_name("user@host:1").is_err());
    }

    #[test]
    fn regional_and_global_sts_hosts_are_allowed_and_look_alikes_are_not() {
        for h in ["sts.amazonaws.com", "sts.us-east-1.amazonaws.com", "sts.us-gov-west-1.amazonaws.com", "sts-fips.us-east-2.amazonaws.com", "sts.cn-north-1.amazonaws.com.cn"] {
            assert!(is_aws_sts_host(h), "{h}");
        }
        for h in ["sts.amazonaws.com.evil.com", "evil.com", "sts.us-east-1.amazonaws.com.evil", "xsts.amazonaws.com", "sts.evil.amazonaws.com", "sqs.us-east-1.amazonaws.com", "sts..amazonaws.com"] {
            assert!(!is_aws_sts_host(h), "{h}");
        }
    }

    #[test]
    fn a_well_formed_signed_request_is_rebuilt() {
        let r = check_request(&wire("https://sts.us-east-1.amazonaws.com/", "sts.us-east-1.amazonaws.com", BODY, &[]), &aws(), "c1", NOW).unwrap();
        assert_eq!(r.endpoint.url(), "https://sts.us-east-1.amazonaws.com/");
        assert_eq!(r.headers.len(), 6);
    }

    #[test]
    fn plain_http_or_another_port_to_an_aws_host_is_refused() {
        for url in ["http://sts.amazonaws.com/", "https://sts.amazonaws.com:8443/"] {
            let e = check_request(&wire(url, "sts.amazonaws.com", BODY, &[]), &aws(), "c1", NOW).unwrap_err();
            assert!(matches!(e, StsError::EndpointNotAllowed(_)), "{url}: {e}");
        }
    }

    #[test]
    fn host_header_naming_another_host_is_refused() {
        // Vault CVE-2020-16250: the Host header steered the request to another AWS service.
        let e = check_request(&wire("https://sts.amazonaws.com/", "sqs.us-east-1.amazonaws.com", BODY, &[]), &aws(), "c1", NOW).unwrap_err();
        assert!(e.to_string().contains("Host header"), "{e}");
    }

    #[test]
    fn any_action_but_get_caller_identity_is_refused() {
        for body in ["Action=GetCallerIdentity&Version=2011-06-15&Action=AssumeRole", "Action=AssumeRole&Version=2011-06-15", ""] {
            let e = check_request(&wire("https://sts.amazonaws.com/", "sts.amazonaws.com", body, &[]), &aws(), "c1", NOW).unwrap_err();
            assert!(e.to_string().contains("GetCallerIdentity only"), "{e}");
        }
        let e = check_request(&wire("https://sts.amazonaws.com/?Action=AssumeRole", "sts.amazonaws.com", BODY, &[]), &aws(), "c1", NOW).unwrap_err();
        assert!(e.to_string().contains("no query"), "{e}");
    }

    #[test]
    fn unsigned_or_unknown_headers_are_refused() {
        let e = check_request(&wire("https://sts.amazonaws.com/", "sts.amazonaws.com", BODY, &[("x-forwarded-host", "evil")]), &aws(), "c1", NOW).unwrap_err();
        assert!(e.to_string().contains("not allowed"), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&wire("https://sts.amazonaws.com/", "sts.amazonaws.com", BODY, &[])).unwrap();
        v["headers"].as_array_mut().unwrap().push(serde_json::json!(["x-amz-security-token", "tok"]));
        let e = check_request(&serde_json::to_vec(&v).unwrap(), &aws(), "c1", NOW).unwrap_err();
        assert!(e.to_string().contains("every forwarded header signed"), "{e}");
    }

    #[test]
    fn wrong_challenge_or_stale_date_is_refused() {
        let p = wire("https://sts.amazonaws.com/", "sts.amazonaws.com", BODY, &[]);
        assert!(check_request(&p, &aws(), "c2", NOW).unwrap_err().to_string().contains("challenge"));
        assert!(check_request(&p, &aws(), "c1", NOW + 16 * 60).unwrap_err().to_string().contains("15 minutes"));
    }

    #[test]
    fn configured_test_endpoint_is_allowed_only_with_its_exact_port() {
        let cfg: BTreeMap<String, String> = [("sts_endpoints".to_string(), "http://127.0.0.1:5000".to_string())].into_iter().collect();
        let allowed = AllowedEndpoints::from_config(&cfg).unwrap();
        assert!(check_request(&wire("http://127.0.0.1:5000/", "127.0.0.1:5000", BODY, &[]), &allowed, "c1", NOW).is_ok());
        let e = check_request(&wire("http://127.0.0.1:5001/", "127.0.0.1:5001", BODY, &[]), &allowed, "c1", NOW).unwrap_err();
        assert!(matches!(e, StsError::EndpointNotAllowed(_)));
    }

    const GOOD: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/ci-runner/i-0abc</Arn>
    <UserId>AROAEXAMPLE:i-0abc</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;

    #[test]
    fn caller_identity_is_read_with_role_claims() {
        let id = parse_response(200, GOOD.as_bytes()).unwrap();
        let c = id.claims();
        assert_eq!(c["aws_account"], "123456789012");
        assert_eq!(c["aws_role"], "ci-runner");
        assert_eq!(c["aws_role_arn"], "arn:aws:iam::123456789012:role/ci-runner");
    }

    #[test]
    fn caller_identity_smuggled_inside_another_response_is_refused() {
        // Vault CVE-2020-16251-style: another API reflects attacker text that contains a result.
        let smuggled = format!("<ListQueuesResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\"><Text>{GOOD}</Text></ListQueuesResponse>");
        assert!(parse_response(200, smuggled.as_bytes()).is_err());
        let nested = GOOD.replace("<GetCallerIdentityResult>", "<Other><GetCallerIdentityResult>").replace("</GetCallerIdentityResult>", "</GetCallerIdentityResult></Other>");
        assert!(parse_response(200, nested.as_bytes()).is_err());
        let no_ns = GOOD.replace(" xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"", "");
        assert!(parse_response(200, no_ns.as_bytes()).is_err());
        let twice = GOOD.replace("<Account>123456789012</Account>", "<Account>123456789012</Account><Account>999999999999</Account>");
        assert!(parse_response(200, twice.as_bytes()).is_err());
        let other_acct = GOOD.replace("<Account>123456789012</Account>", "<Account>999999999999</Account>");
        assert!(parse_response(200, other_acct.as_bytes()).is_err());
        let trailing = format!("{GOOD}<GetCallerIdentityResponse/>");
        assert!(parse_response(200, trailing.as_bytes()).is_err());
    }

    #[test]
    fn sts_errors_are_reported_with_their_message() {
        let body = b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error></ErrorResponse>";
        let e = parse_response(403, body).unwrap_err();
        assert!(e.to_string().contains("HTTP 403") && e.to_string().contains("signature"), "{e}");
    }

    #[test]
    fn authorization_for_another_service_is_refused() {
        let a = "AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=".to_string() + &"0".repeat(64);
        assert!(Authorization::parse(&a).unwrap_err().contains("service"));
        let ok = a.replace("/iam/", "/sts/");
        assert_eq!(Authorization::parse(&ok).unwrap().service, "sts");
    }
}
