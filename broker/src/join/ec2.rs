//! EC2 join (`ec2`): the instance identity document, signed by AWS, as the
//! instance reads it from IMDS with its `rsa2048` signature (PKCS#7
//! SignedData, SHA-256 with RSA-2048; AWS streams it as BER with indefinite
//! lengths, embeds the document and omits its certificate). Teleport's `ec2`
//! join and SPIRE's `aws_iid` attestor do the same.
//!
//! Verification: bounded payload; the document's `region` picks the one
//! shipped AWS certificate of that region (`ec2_certs.rs`), or the join
//! token's `config.signing_certificates` replace the shipped set; the
//! signature must be that certificate's (a certificate of another region
//! does not verify); an embedded document must be the document sent. Only
//! then is the document read: `pendingTime` against `config.max_instance_age`,
//! then the allow rules on [`FIELDS`].
//!
//! The document never changes for the instance's life, so a copy of it
//! would join forever: the instance (`ec2:ACCOUNT:INSTANCE_ID`) is bound to
//! the bot instance its first join creates, atomically in the store
//! ([`crate::store::Store::create_bound_instance`]), and a second join is
//! refused unless `config.allow_rejoin = "true"` (then the binding moves to
//! the new bot instance). The check here refuses early without using up a
//! token use; the store's unique key is what decides under concurrency.
//!
//! Config: `signing_certificates` (PEM, replaces the shipped AWS set),
//! `allow_rejoin` (flag), `max_instance_age` (seconds since `pendingTime`).
//! Every allow rule must name `aws_account` exactly (no wildcard): the
//! shipped certificates sign every AWS customer's instances.

use super::azure_pkcs7::{self, Pkcs7Error};
use super::{ber, ec2_certs, oidc, Binding, JoinEnv, JoinError, JoinInput};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use sigil_core::domain::join_method::config::{Ec2Settings, Settings};
use sigil_core::domain::{Attributes, JoinToken};

/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::EC2 as FIELDS;

/// Largest `Join` payload (JSON of document and signature; AWS's are ~3 KiB).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Largest identity document (AWS's are ~500 bytes).
pub const MAX_DOCUMENT: usize = 4 * 1024;
/// How far in the future `pendingTime` may be (clock skew).
pub const MAX_SKEW_SECS: i64 = 60;

/// The `Join` payload, as the agent sends it (`agent/src/join/client/ec2.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Proof {
    document: String,
    rsa2048: String,
}

/// The document fields Sigil reads (AWS's names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// AWS account id.
    pub account_id: String,
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Instance id, e.g. `i-0123456789abcdef0`.
    pub instance_id: String,
    /// Availability zone.
    #[serde(default)]
    pub availability_zone: String,
    /// Instance type.
    #[serde(default)]
    pub instance_type: String,
    /// AMI id.
    #[serde(default)]
    pub image_id: String,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// When the instance was launched (RFC 3339).
    pub pending_time: String,
}

impl Document {
    /// The allow-rule fields and `join.*` attributes.
    pub fn attributes(&self) -> Attributes {
        [
            ("aws_account", &self.account_id),
            ("aws_region", &self.region),
            ("instance_id", &self.instance_id),
            ("availability_zone", &self.availability_zone),
            ("instance_type", &self.instance_type),
            ("image_id", &self.image_id),
            ("architecture", &self.architecture),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }

    /// What the store binds to one bot instance.
    pub fn binding_key(&self) -> String {
        format!("ec2:{}:{}", self.account_id, self.instance_id)
    }
}

fn settings(t: &JoinToken) -> Result<Ec2Settings, JoinError> {
    match t.check_settings().map_err(|e| JoinError::invalid(e.field(), e.message()))? {
        (_, Settings::Ec2(s)) => Ok(s),
        (m, _) => Err(JoinError::Internal(format!("join token of method {m} checked as ec2"))),
    }
}

/// The certificates of `config.signing_certificates`, DER, checked to parse.
fn configured(pem: &str) -> Result<Vec<Vec<u8>>, JoinError> {
    let field = "config.signing_certificates";
    let ders = sigil_core::pem::certificate_ders(pem, field).map_err(|e| JoinError::invalid(field, e.to_string()))?;
    if ders.is_empty() {
        return Err(JoinError::invalid(field, "holds no PEM CERTIFICATE block"));
    }
    for (i, der) in ders.iter().enumerate() {
        x509_parser::parse_x509_certificate(der).map_err(|e| JoinError::invalid(field, format!("certificate {}: {e}", i + 1)))?;
    }
    Ok(ders)
}

fn max_age(s: &Ec2Settings) -> Result<Option<i64>, JoinError> {
    let Some(v) = s.max_instance_age.as_deref().map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    match v.parse::<i64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(JoinError::invalid("config.max_instance_age", format!("{v:?} is not a positive number of seconds"))),
    }
}

/// What the join token must say, whatever the credential: settings that
/// parse, certificates to verify with, and an exact account in every rule.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    let s = settings(t)?;
    max_age(&s)?;
    match s.signing_certificates.as_deref() {
        Some(pem) => {
            configured(pem)?;
        }
        None if ec2_certs::SHIPPED.is_empty() => {
            return Err(JoinError::invalid(
                "config.signing_certificates",
                "required: this broker ships no AWS certificates; give the AWS RSA-2048 certificates of your regions (PEM)",
            ))
        }
        None => {}
    }
    for (i, rule) in t.allow.iter().enumerate() {
        match rule.get("aws_account") {
            None => return Err(JoinError::invalid(format!("allow[{i}]"), "every ec2 allow rule must name aws_account: AWS signs every customer's instances")),
            Some(a) if a.is_empty() || !a.chars().all(|c| c.is_ascii_digit()) => {
                return Err(JoinError::invalid(format!("allow[{i}].aws_account"), "must be a 12-digit AWS account id, no wildcard"))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Where the signing certificates come from.
pub enum Signers<'a> {
    /// The join token's own (any of them may sign).
    Configured(Vec<Vec<u8>>),
    /// One per region: (region, PEM).
    PerRegion(&'a [(&'a str, &'a str)]),
}

impl Signers<'_> {
    fn for_region(&self, region: &str) -> Result<Vec<Vec<u8>>, JoinError> {
        match self {
            Signers::Configured(ders) => Ok(ders.clone()),
            Signers::PerRegion(table) => {
                let pem = table.iter().find(|(r, _)| *r == region).map(|(_, p)| *p).ok_or_else(|| {
                    JoinError::Rejected(format!("ec2 identity document: no AWS certificate is shipped for region {region:?}; set config.signing_certificates"))
                })?;
                sigil_core::pem::certificate_ders(pem, "shipped AWS certificate").map_err(|e| JoinError::Internal(e.to_string()))
            }
        }
    }
}

/// Verifies a `Join` payload and returns the signed document. Pure.
pub fn verify_payload(payload: &[u8], signers: &Signers<'_>, now: i64) -> Result<Document, JoinError> {
    let bad = |m: String| JoinError::Rejected(format!("ec2 identity document: {m}"));
    if payload.len() > MAX_PAYLOAD {
        return Err(JoinError::invalid("payload", format!("larger than {MAX_PAYLOAD} bytes")));
    }
    let p: Proof = serde_json::from_slice(payload).map_err(|e| JoinError::invalid("payload", e.to_string()))?;
    if p.document.len() > MAX_DOCUMENT {
        return Err(JoinError::invalid("payload", format!("document larger than {MAX_DOCUMENT} bytes")));
    }
    // IMDS serves the base64 in lines; `openssl smime` users add PEM armour.
    let b64: String = p
        .rsa2048
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let ber_bytes = B64.decode(b64).map_err(|_| JoinError::invalid("payload", "rsa2048 is not base64"))?;
    if ber_bytes.len() > azure_pkcs7::MAX_BYTES {
        return Err(JoinError::invalid("payload", "rsa2048 too large"));
    }
    let der = ber::to_der(&ber_bytes).map_err(|e| bad(e.to_string()))?;
    // The region picks the certificate; the region is trusted only because
    // that certificate then verifies these very bytes.
    #[derive(Deserialize)]
    struct RegionOnly {
        region: String,
    }
    let region = serde_json::from_str::<RegionOnly>(&p.document).map_err(|e| bad(format!("document: {e}")))?.region;
    let certs = signers.for_region(&region)?;
    let content = azure_pkcs7::verify_with_signers(&der, Some(p.document.as_bytes()), &certs, now).map_err(|e: Pkcs7Error| bad(e.to_string()))?;
    if content != p.document.as_bytes() {
        return Err(bad("the signed document is not the document sent".into()));
    }
    let doc: Document = serde_json::from_slice(&content).map_err(|e| bad(format!("document: {e}")))?;
    if doc.account_id.is_empty() || doc.instance_id.is_empty() {
        return Err(bad("document names no accountId or instanceId".into()));
    }
    Ok(doc)
}

/// `pendingTime` not in the future (beyond skew) nor older than `max_age`.
pub fn check_age(doc: &Document, max_age: Option<i64>, now: i64) -> Result<(), JoinError> {
    let t = time::OffsetDateTime::parse(&doc.pending_time, &time::format_description::well_known::Rfc3339)
        .map_err(|_| JoinError::Rejected(format!("ec2 identity document: pendingTime {:?} is not RFC 3339", doc.pending_time)))?
        .unix_timestamp();
    if t > now + MAX_SKEW_SECS {
        return Err(JoinError::Rejected("ec2 identity document: pendingTime is in the future".into()));
    }
    if let Some(max) = max_age {
        if now - t > max {
            return Err(JoinError::Rejected(format!("ec2 instance launched {}s ago, more than config.max_instance_age ({max}s)", now - t)));
        }
    }
    Ok(())
}

/// Verifies an identity document against the join token: signature, age,
/// rules, and (early) the instance binding. Returns the attributes and the
/// binding the new bot instance takes.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<(Attributes, Binding), JoinError> {
    check_token(t)?;
    let s = settings(t)?;
    let signers = match s.signing_certificates.as_deref() {
        Some(pem) => Signers::Configured(configured(pem)?),
        None => Signers::PerRegion(ec2_certs::SHIPPED),
    };
    let doc = verify_payload(&input.payload, &signers, env.now)?;
    check_age(&doc, max_age(&s)?, env.now)?;
    let attrs = doc.attributes();
    oidc::allow(t, &attrs)?;
    let rebind = s.allow_rejoin.is_some_and(|f| f.0);
    let key = doc.binding_key();
    if !rebind {
        if let Some(b) = env.store.instance_binding(&key).await? {
            return Err(JoinError::Rejected(format!(
                "ec2 instance {} of account {} already joined (bot {:?}, bot instance {}); a second join needs config.allow_rejoin = \"true\" or deleting that bot",
                doc.instance_id, doc.account_id, b.bot, b.instance
            )));
        }
    }
    Ok((attrs, Binding { key, rebind }))
}

#[cfg(test)]
#[path = "ec2_tests.rs"]
mod tests;
