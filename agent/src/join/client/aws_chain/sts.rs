//! The two STS calls the chain makes: `AssumeRoleWithWebIdentity` (unsigned:
//! the web identity token is the proof) and `AssumeRole` (SigV4-signed with
//! the source profile's credentials). Both are form POSTs; the XML answer is
//! read by structure with [`sigil_core::xml`].
//!
//! The endpoint, as the SDKs choose it: `AWS_ENDPOINT_URL_STS`, else
//! `AWS_ENDPOINT_URL`, else `https://sts.<region>.amazonaws.com`
//! (`AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` skips the two variables).
//! Plain http is accepted only to a loopback host (local emulators).

use super::{http, parse_expiration, AwsCredentials, Env, Fetched};
use secrecy::ExposeSecret;
use sigil_core::net::http::Request;
use sigil_core::net::policy::Schemes;
use sigil_core::{sigv4, xml};
use std::time::Duration;

/// Deadline of one STS call.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// STS's XML namespace.
const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The STS endpoint URL for `region`. The region becomes part of a host
/// name, so it must be one DNS label, as the SDKs require (botocore's
/// `InvalidRegionError`): `evil.example/x?` would otherwise send the web
/// identity token, or the source profile's session token, to `sts.evil.example`.
pub fn endpoint(env: &Env, region: &str) -> Result<String, String> {
    let configured = if env.is_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") { None } else { env.get("AWS_ENDPOINT_URL_STS").or_else(|| env.get("AWS_ENDPOINT_URL")) };
    match configured {
        Some(url) => Ok(url),
        None if is_region_name(region) => Ok(format!("https://sts.{region}.amazonaws.com/")),
        None => Err(format!(
            "region {:?} (AWS_REGION, AWS_DEFAULT_REGION or the profile's region) is not a region name: letters, digits and '-'",
            region.chars().take(64).collect::<String>()
        )),
    }
}

/// One DNS label: 1 to 63 letters, digits or `-`, not starting or ending with `-`.
pub fn is_region_name(r: &str) -> bool {
    (1..=63).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !r.starts_with('-') && !r.ends_with('-')
}

/// A role session name when none is configured: `sigil-<unix seconds>`.
pub fn default_session_name(now: i64) -> String {
    format!("sigil-{now}")
}

/// `AssumeRoleWithWebIdentity` at `url`.
pub async fn assume_role_with_web_identity(url: &str, role_arn: &str, session_name: &str, token: &str) -> Result<Fetched, String> {
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token),
    ]);
    let req = Request::post(url, body.into_bytes()).header("content-type", "application/x-www-form-urlencoded; charset=utf-8");
    call(req, "AssumeRoleWithWebIdentity").await
}

/// `AssumeRole` at `url`, signed for `region` with `source`; `now` is Unix seconds.
pub async fn assume_role(url: &str, region: &str, source: &AwsCredentials, role_arn: &str, session_name: &str, external_id: Option<&str>, now: i64) -> Result<Fetched, String> {
    let mut params = vec![("Action", "AssumeRole"), ("Version", "2011-06-15"), ("RoleArn", role_arn), ("RoleSessionName", session_name)];
    if let Some(x) = external_id {
        params.push(("ExternalId", x));
    }
    let body = form(&params);
    let headers = sign(url, region, source, body.as_bytes(), now)?;
    let req = Request::post(url, body.into_bytes()).headers(&headers);
    call(req, "AssumeRole").await
}

/// The headers of a SigV4-signed STS POST of `body`.
fn sign(url: &str, region: &str, creds: &AwsCredentials, body: &[u8], now: i64) -> Result<Vec<(String, String)>, String> {
    let endpoint = sigil_core::join_wire::sts::Endpoint::parse(url)?;
    let e = |e: sigv4::SigV4Error| e.to_string();
    let amz_date = sigv4::format_amz_date(now).map_err(e)?;
    let mut headers = vec![
        ("content-type".to_string(), "application/x-www-form-urlencoded; charset=utf-8".to_string()),
        ("host".to_string(), endpoint.authority()),
        ("x-amz-date".to_string(), amz_date.clone()),
    ];
    if let Some(t) = creds.session_token() {
        headers.push(("x-amz-security-token".into(), t.expose_secret().to_string()));
    }
    headers.sort();
    let canonical = sigv4::canonical_request("POST", "/", "", &headers, body);
    let scope = sigv4::credential_scope(&amz_date, region, "sts").map_err(e)?;
    let to_sign = sigv4::string_to_sign(sigv4::HMAC_ALGORITHM, &amz_date, &scope, &canonical.request);
    let key = sigv4::hmac_signing_key(creds.secret_access_key().expose_secret(), sigv4::day_of(&amz_date).map_err(e)?, region, "sts");
    let signature = sigv4::hmac_signature_hex(&key, &to_sign);
    headers.push(("authorization".into(), sigv4::authorization(sigv4::HMAC_ALGORITHM, creds.access_key_id(), &scope, &canonical.signed_headers, &signature)));
    Ok(headers)
}

async fn call(req: Request, action: &str) -> Result<Fetched, String> {
    let url = req.url.clone();
    let r = http::send(req, Schemes::HttpsOrLoopbackHttp, TIMEOUT).await?;
    let text = std::str::from_utf8(&r.body).map_err(|_| format!("STS {action} at {url}: the answer is not UTF-8"))?;
    if r.status != 200 {
        return Err(format!("STS {action} at {url}: HTTP {}: {}", r.status, error_text(text)));
    }
    parse(text, action).map_err(|e| format!("STS {action} at {url}: {e}"))
}

/// `Code: Message` of an STS `ErrorResponse` (the message cut at 200 characters).
fn error_text(text: &str) -> String {
    let read = || -> Option<String> {
        let doc = xml::parse(text).ok()?;
        let err = xml::only_child(doc.root_element(), "Error", NS).ok()?;
        let code = xml::child_text(err, "Code", NS).ok()?;
        let msg = xml::child_text(err, "Message", NS).unwrap_or_default();
        Some(format!("{code}: {}", msg.chars().take(200).collect::<String>()))
    };
    read().unwrap_or_else(|| "no STS error document".into())
}

/// The credentials of a `<action>Response`.
fn parse(text: &str, action: &str) -> Result<Fetched, String> {
    let doc = xml::parse(text).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if !xml::is_element(root, &format!("{action}Response"), NS) {
        return Err(format!("the answer is not an {action}Response"));
    }
    let result = xml::only_child(root, &format!("{action}Result"), NS).map_err(|e| e.to_string())?;
    let c = xml::only_child(result, "Credentials", NS).map_err(|e| e.to_string())?;
    let get = |k: &str| xml::child_text(c, k, NS).map_err(|e| e.to_string());
    let expires_at = parse_expiration(&get("Expiration")?)?;
    Ok(Fetched { credentials: AwsCredentials::new(get("AccessKeyId")?, get("SecretAccessKey")?, Some(get("SessionToken")?)), expires_at: Some(expires_at) })
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_endpoint_follows_the_sdk_variables() {
        assert_eq!(endpoint(&Env::from_pairs(&[]), "eu-west-1").unwrap(), "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(endpoint(&Env::from_pairs(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]), "r").unwrap(), "http://127.0.0.1:1");
        let both = [("AWS_ENDPOINT_URL", "http://a"), ("AWS_ENDPOINT_URL_STS", "http://b")];
        assert_eq!(endpoint(&Env::from_pairs(&both), "r").unwrap(), "http://b");
        let ignored = [("AWS_ENDPOINT_URL_STS", "http://b"), ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")];
        assert_eq!(endpoint(&Env::from_pairs(&ignored), "r").unwrap(), "https://sts.r.amazonaws.com/");
    }

    #[test]
    fn a_region_that_is_not_one_host_label_never_becomes_the_sts_host() {
        for bad in ["evil.example/x?", "evil.example#", "a.b", "us-east-1@evil.example", "", "-x", "x y"] {
            let e = endpoint(&Env::from_pairs(&[]), bad).unwrap_err();
            assert!(e.contains("AWS_REGION") && e.contains("not a region name"), "{bad}: {e}");
        }
        assert!(endpoint(&Env::from_pairs(&[]), "us-gov-west-1").is_ok() && endpoint(&Env::from_pairs(&[]), "cn-north-1").is_ok());
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(form(&[("RoleArn", "arn:aws:iam::1:role/a b+c"), ("T", "x.y~z")]), "RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b%2Bc&T=x.y~z");
    }

    #[test]
    fn credentials_are_read_by_structure() {
        let ok = format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="{NS}"><AssumeRoleWithWebIdentityResult><Credentials>
            <AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>sec</SecretAccessKey><SessionToken>tok</SessionToken>
            <Expiration>2023-11-14T22:13:20Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"#
        );
        let f = parse(&ok, "AssumeRoleWithWebIdentity").unwrap();
        assert_eq!((f.credentials.access_key_id(), f.expires_at), ("ASIA1", Some(1_700_000_000)));
        assert!(parse(&ok, "AssumeRole").unwrap_err().contains("not an AssumeRoleResponse"));
        let err = format!(r#"<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>"#);
        assert_eq!(error_text(&err), "AccessDenied: no");
    }

    #[test]
    fn assume_role_is_signed_with_the_source_credentials() {
        let creds = AwsCredentials::new("AKIDSRC".into(), "source-secret".into(), Some("source-token".into()));
        let h = sign("https://sts.eu-west-1.amazonaws.com/", "eu-west-1", &creds, b"Action=AssumeRole", 1_700_000_000).unwrap();
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDSRC/20231114/eu-west-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"), "{auth}");
        assert!(!auth.contains("source-secret"));
    }
}
