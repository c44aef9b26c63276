//! Database and Kubernetes certificates (`IssueTlsCertificate`): X.509
//! client and server certificates signed by the `database` and `kubernetes`
//! CAs under the caller's role rules (`sigil_core::domain::tls_policy`).
//!
//! Mistakes this module exists to prevent:
//! - one CA for everything: each kind is signed by its own CA key (database
//!   or Kubernetes), never by the X.509-SVID CA, so a database certificate
//!   with CN=admin is not a Kubernetes login and no such certificate is an
//!   SVID (see [`sigil_core::domain::tls_policy`] for the subject rules);
//! - trusting the CSR: only its public key is used (checked like an SVID
//!   CSR's), every field of the certificate is decided here;
//! - an unrevocable certificate: every issuance is audited like an
//!   X.509-SVID's (kind `tls.certificate`, with serial, CA key, instance and
//!   expiry: `store::ISSUANCE_KINDS`), so `sigil svid revoke --serial` and
//!   `--instance` find it and the CA key's CRL lists it; bot and instance
//!   locks refuse the call at authentication like every other.

use super::{Broker, ServiceError};
use crate::audit;
use crate::ca::{crl_url, lifetime, x509};
use serde_json::json;
use sigil_core::domain::tls_policy::{self, TlsKind, TlsRequest};
use sigil_core::domain::Caller;

/// The audit event kind of an issued database / Kubernetes certificate.
pub const AUDIT_KIND: &str = "tls.certificate";

/// What a caller asks for (the wire request, decoded).
#[derive(Debug, Clone, Default)]
pub struct TlsCertRequest {
    /// `database-client`, `database-server` or `kubernetes-client`.
    pub kind: String,
    /// PKCS#10 CSR (DER); only its public key is used.
    pub csr: Vec<u8>,
    /// User (CN) of client kinds.
    pub user: String,
    /// Kubernetes groups (O).
    pub groups: Vec<String>,
    /// Database server names (SANs).
    pub server_names: Vec<String>,
    /// Requested lifetime (0 = `tls_certificates.default_ttl_seconds`).
    pub ttl: i64,
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct IssuedTls {
    /// Leaf DER.
    pub cert_der: Vec<u8>,
    /// Every published CA certificate of the signing purpose, PEM (from the
    /// same load of the authorities as the signing key).
    pub bundle_pem: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Id of the CA key that signed it.
    pub ca_key: String,
    /// NotAfter.
    pub expires_at: i64,
}

impl Broker {
    /// Issues a database or Kubernetes certificate; audited either way.
    pub async fn issue_tls(&self, caller: &Caller, r: &TlsCertRequest) -> Result<IssuedTls, ServiceError> {
        let result = self.issue_tls_inner(caller, r);
        let actor = caller.bot.name.as_str();
        // What the audit log keeps of the request is bounded (the refused ones too).
        let kind: String = r.kind.chars().take(32).collect();
        let resource = format!("{kind}:{}", if r.user.is_empty() { r.server_names.join(",") } else { r.user.clone() });
        let resource: String = resource.chars().take(256).collect();
        let event = match &result {
            Ok(s) => audit::event(
                self.now(),
                AUDIT_KIND,
                actor,
                &resource,
                "ok",
                json!({
                    "serial": s.serial, "ca_key": s.ca_key, "instance": caller.instance, "expires_at": s.expires_at,
                    "kind": r.kind, "user": r.user, "groups": r.groups, "server_names": r.server_names,
                }),
            ),
            Err(e) => audit::event(self.now(), AUDIT_KIND, actor, &resource, "denied", json!({"kind": kind, "reason": e.audit_reason()})),
        };
        self.audit.record_all(vec![event]).await;
        result
    }

    fn issue_tls_inner(&self, caller: &Caller, r: &TlsCertRequest) -> Result<IssuedTls, ServiceError> {
        let kinds = TlsKind::ALL.map(TlsKind::as_str).join(", ");
        let shown: String = r.kind.chars().take(32).collect();
        let kind = TlsKind::parse(&r.kind).ok_or_else(|| ServiceError::invalid("kind", format!("unknown kind {shown:?}: use {kinds}")))?;
        let req = TlsRequest { kind, user: &r.user, groups: &r.groups, server_names: &r.server_names };
        tls_policy::check_request(&req).map_err(|(field, m)| ServiceError::invalid(field, m))?;
        let spki = x509::csr_public_key(&r.csr).map_err(|e| ServiceError::invalid("csr", e.to_string()))?;
        let grant = caller.check_tls(&req, &caller.attributes(), self.settings.tls_max_ttl)?;
        let authority = self.authority.current();
        let ca = authority.access_ca(kind.purpose()).ok_or_else(|| ServiceError::Internal(format!("no CA for {}", kind.as_str())))?;
        let v = lifetime::validity(self.now(), r.ttl, self.settings.tls_default_ttl, grant.max_ttl, ca.active.not_after)
            .map_err(|e| ServiceError::invalid("ttl_seconds", e.to_string()))?;
        let crl = self.settings.crl_distribution_points.then(|| crl_url(&self.settings.public_url, &ca.active.key_id));
        let leaf = x509::LeafKind::Access {
            common_name: grant.common_name,
            organizations: grant.organizations,
            dns: grant.dns_names,
            ips: grant.ip_addresses,
            server: kind == TlsKind::DatabaseServer,
            crl_url: crl,
        };
        let cert_der = ca.active.sign_leaf(&spki, &leaf, v).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let serial = x509::serial_hex(&cert_der).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(IssuedTls { cert_der, bundle_pem: ca.bundle_pem.clone(), serial, ca_key: ca.active.key_id.clone(), expires_at: v.not_after })
    }
}
