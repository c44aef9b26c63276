//! Azure join (`azure`): a VM proves where it runs with two documents from its
//! Instance Metadata Service (IMDS):
//! - the **attested document**: PKCS#7 signed by Azure (`metadata.azure.com`),
//!   whose signed JSON carries the VM id, the subscription and the nonce the
//!   broker issued in `BeginJoin` (so a captured document cannot be replayed);
//! - a **managed identity access token** (Entra ID JWT) whose `xms_mirid`
//!   names the subscription, resource group and VM or identity.
//!
//! The VM id and subscription are taken only from the signed content, after
//! the signature is checked with the certificate that made it and that
//! certificate is chain-validated against `attested_ca` (`azure_pkcs7.rs`).
//! The token is verified by the shared OIDC verifier; its subscription must be
//! the attested one.
//!
//! The access token is a bearer credential and nothing in it names the
//! attested VM: its `xms_mirid` is the VM's resource id for a system-assigned
//! identity, but the *identity's* for a user-assigned one (attachable to any
//! VM), and a token taken from one VM works beside another VM's attested
//! document of the same subscription. So `resource_group`, `vm_name` and
//! `managed_identity` are not attested: rules may not use them, and they are
//! not attributes, unless the token sets `allow_unattested_fields: "true"`
//! (checking them would need an Azure Resource Manager lookup of the VM by id).
//!
//! Allow-rule fields: `subscription`, `vm_id`, `tenant_id` (attested); with the
//! opt-in also `resource_group`, `vm_name`, `managed_identity` (the full `xms_mirid`).
//! Config: `tenant_id` (required), `attested_ca` (required, PEM anchors for the
//! IMDS signing certificate), `audience` (default `https://management.azure.com/`),
//! `signer_names` (default `metadata.azure.com,*.metadata.azure.com`),
//! `allow_unattested_fields` (default `"false"`), and the common OIDC keys
//! (`jwks`, `jwks_uri`, `ca_pem`, `allow_private_network`, `issuer`).

pub use sigil_core::join_wire::azure::{JoinPayload, DEFAULT_AUDIENCE};
use super::azure_pkcs7::{self, Trust};
use super::challenge::{Issued, Pending, TTL_SECS};
use super::{nonce, oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

/// Method name.
pub const METHOD: &str = sigil_core::domain::Method::Azure.name();
/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::AZURE as FIELDS;
/// The fields read from the bearer access token only, not from the attested document.
pub const UNATTESTED_FIELDS: &[&str] = &["resource_group", "vm_name", "managed_identity"];
/// The opt-in that accepts [`UNATTESTED_FIELDS`] in rules and attributes.
pub const OPT_IN: &str = "allow_unattested_fields";
/// Default names of the IMDS signing certificate.
pub const DEFAULT_SIGNERS: &str = "metadata.azure.com,*.metadata.azure.com";

fn unattested_allowed(t: &JoinToken) -> Result<bool, JoinError> {
    match t.config.get(OPT_IN).map(|v| v.trim()) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(JoinError::invalid(format!("config.{OPT_IN}"), "must be \"true\" or \"false\"")),
    }
}

/// What the join token must say, whatever the credential: known settings and
/// fields, the tenant, and no rule on an unattested field without the opt-in.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    tenant(t)?;
    oidc::required(t, "attested_ca")?;
    if unattested_allowed(t)? {
        return Ok(());
    }
    for (i, rule) in t.allow.iter().enumerate() {
        if let Some(k) = rule.keys().find(|k| UNATTESTED_FIELDS.contains(&k.as_str())) {
            return Err(JoinError::invalid(
                format!("allow[{i}].{k}"),
                format!(
                    "{k} comes from the managed identity access token, a bearer token tied to the attested VM only by its \
                     subscription (another VM of the subscription can present it); rule on subscription and vm_id, or set \
                     config.{OPT_IN} = \"true\" to trust the token's resource id"
                ),
            ));
        }
    }
    Ok(())
}

/// The signed content of an attested document (fields Sigil reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attested {
    nonce: String,
    vm_id: String,
    subscription_id: String,
}

/// `BeginJoin`: a 10-digit nonce (IMDS accepts at most 10 digits) for the attested document.
pub async fn begin(env: &JoinEnv<'_>, token: &JoinToken) -> Result<Issued, JoinError> {
    let digits: String = nonce::random_bytes(10)?.iter().map(|b| char::from(b'0' + b % 10)).collect();
    let id = nonce::random_b64(18)?;
    let expires_at = env.now + TTL_SECS;
    let pending = Pending { method: METHOD.into(), token_name: token.name.to_string(), state: digits.clone().into_bytes(), expires_at };
    env.store_challenge(&id, pending).await?;
    Ok(Issued { id, payload: digits.into_bytes(), expires_at })
}

/// `Join`: verifies the attested document and the access token, cross-checks them, matches the rules.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let pending = env.take_challenge(&input.challenge_id, METHOD, t.name.as_str()).await?;
    let attested = attested(t, input, &pending.state, env.now)?;

    let tenant = tenant(t)?;
    let audience = t.config.get("audience").map(String::as_str).filter(|a| !a.is_empty()).unwrap_or(DEFAULT_AUDIENCE);
    let mut with_keys = t.clone();
    if !t.config.contains_key("jwks") && !t.config.contains_key("jwks_uri") {
        with_keys.config.insert("jwks_uri".into(), format!("https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys"));
    }
    let issuer = oidc::issuer_or(t, format!("https://sts.windows.net/{tenant}/"));
    let claims = oidc::verify_bearer(&with_keys, input, env.now, &issuer, audience).await?;
    if claims.get("tid").and_then(|v| v.as_str()) != Some(tenant) {
        return Err(JoinError::Rejected("azure access token is for another tenant".into()));
    }
    let mirid = claims.get("xms_mirid").and_then(|v| v.as_str()).ok_or_else(|| JoinError::Rejected("azure access token has no xms_mirid (not a managed identity token)".into()))?;
    let mut attrs = resource_attributes(mirid)?;
    if !attrs.get("subscription").is_some_and(|s| s.eq_ignore_ascii_case(&attested.subscription_id)) {
        return Err(JoinError::Rejected("azure access token's subscription is not the attested document's".into()));
    }
    attrs.insert("subscription".into(), attested.subscription_id.to_ascii_lowercase());
    attrs.insert("vm_id".into(), attested.vm_id.to_ascii_lowercase());
    attrs.insert("tenant_id".into(), tenant.to_string());
    if !unattested_allowed(t)? {
        attrs.retain(|k, _| !UNATTESTED_FIELDS.contains(&k.as_str()));
    }
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}

fn tenant(t: &JoinToken) -> Result<&str, JoinError> {
    let tenant = oidc::required(t, "tenant_id")?;
    if !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(JoinError::invalid("config.tenant_id", "must be the tenant GUID"));
    }
    Ok(tenant)
}

/// Verifies the PKCS#7 document and reads VM id and subscription from its signed content.
fn attested(t: &JoinToken, input: &JoinInput, challenge: &[u8], now: i64) -> Result<Attested, JoinError> {
    let p: JoinPayload = serde_json::from_slice(&input.payload).map_err(|e| JoinError::invalid("payload", e.to_string()))?;
    let der = B64.decode(p.attested_document.trim()).map_err(|_| JoinError::invalid("payload", "attested_document is not base64"))?;
    let anchors = oidc::required(t, "attested_ca")?;
    let names: Vec<String> = t.config.get("signer_names").map(String::as_str).unwrap_or(DEFAULT_SIGNERS).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let content = azure_pkcs7::verify(&der, &Trust { anchors_pem: anchors, signer_names: &names, now })
        .map_err(|e| JoinError::Rejected(format!("azure attested document: {e}")))?;
    let doc: Attested = serde_json::from_slice(&content).map_err(|e| JoinError::Rejected(format!("azure attested document content: {e}")))?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(doc.nonce.as_bytes(), challenge).is_err() {
        return Err(JoinError::Rejected("azure attested document does not carry this join's nonce".into()));
    }
    Ok(doc)
}

/// `/subscriptions/S/resourcegroups/G/providers/P/T/N` to attributes.
pub fn resource_attributes(mirid: &str) -> Result<Attributes, JoinError> {
    let parts: Vec<&str> = mirid.trim_start_matches('/').split('/').collect();
    let bad = || JoinError::Rejected(format!("azure xms_mirid {mirid:?} is not a resource id"));
    if parts.len() < 8 || !parts[0].eq_ignore_ascii_case("subscriptions") || !parts[2].eq_ignore_ascii_case("resourcegroups") || !parts[4].eq_ignore_ascii_case("providers") {
        return Err(bad());
    }
    let mut a = Attributes::new();
    a.insert("subscription".into(), parts[1].to_ascii_lowercase());
    a.insert("resource_group".into(), parts[3].to_string());
    a.insert("managed_identity".into(), mirid.to_string());
    if parts[5].eq_ignore_ascii_case("Microsoft.Compute") && parts[6].eq_ignore_ascii_case("virtualMachines") {
        a.insert("vm_name".into(), parts[7].to_string());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_resource_ids_give_group_and_name() {
        let a = resource_attributes("/subscriptions/AAAA-1/resourcegroups/web-rg/providers/Microsoft.Compute/virtualMachines/vm-1").unwrap();
        assert_eq!((a["subscription"].as_str(), a["resource_group"].as_str(), a["vm_name"].as_str()), ("aaaa-1", "web-rg", "vm-1"));
        let ua = resource_attributes("/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1").unwrap();
        assert!(!ua.contains_key("vm_name"));
        assert!(resource_attributes("/tenants/x").is_err());
    }
}
