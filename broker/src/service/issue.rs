//! SVID issuance under RBAC: X.509-SVIDs from CSRs, JWT-SVIDs with audiences.

use super::{Broker, ServiceError};
use crate::ca::{jwt, lifetime, x509};
use crate::domain::{Attributes, Caller, SpiffeId, WorkloadIdentity};
use crate::store::Kind;
use serde_json::json;
use std::collections::BTreeMap;

/// What an SVID request names: a SPIFFE ID, or a workload identity.
#[derive(Debug, Clone)]
pub struct SvidTarget {
    /// Explicit SPIFFE ID.
    pub spiffe_id: String,
    /// Workload identity name.
    pub workload_identity: String,
    /// Workload attributes attested by the agent (workload.* only).
    pub workload_attributes: BTreeMap<String, String>,
    /// Requested lifetime (0 = default).
    pub ttl: i64,
}

/// A signed X.509-SVID.
#[derive(Debug, Clone)]
pub struct IssuedX509 {
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Leaf DER.
    pub cert_der: Vec<u8>,
    /// NotAfter.
    pub expires_at: i64,
}

/// A signed JWT-SVID.
#[derive(Debug, Clone)]
pub struct IssuedJwt {
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Compact JWS.
    pub token: String,
    /// exp.
    pub expires_at: i64,
}

/// Largest number of audiences in one JWT-SVID.
pub const MAX_AUDIENCES: usize = 16;

struct Resolved {
    id: SpiffeId,
    cap: i64,
    dns_sans: Vec<String>,
    extra_claims: BTreeMap<String, String>,
}

impl Broker {
    async fn resolve_target(&self, caller: &Caller, t: &SvidTarget, x509: bool) -> Result<Resolved, ServiceError> {
        let mut attrs: Attributes = caller.attributes();
        for (k, v) in &t.workload_attributes {
            if !k.starts_with("workload.") {
                return Err(ServiceError::invalid(format!("workload_attributes.{k}"), "only workload.* attributes may be supplied"));
            }
            attrs.insert(k.clone(), v.clone());
        }
        let default_max = if x509 { self.settings.x509_max_ttl } else { self.settings.jwt_max_ttl };
        match (t.spiffe_id.is_empty(), t.workload_identity.is_empty()) {
            (false, true) => {
                let id: SpiffeId = t.spiffe_id.parse().map_err(|e: crate::domain::SpiffeIdError| ServiceError::invalid("spiffe_id", e.to_string()))?;
                let cap = caller.check_spiffe_id(&self.settings.trust_domain, &id, &attrs, x509, default_max)?;
                Ok(Resolved { id, cap, dns_sans: vec![], extra_claims: BTreeMap::new() })
            }
            (true, false) => {
                let doc = self.store.get(Kind::WorkloadIdentity, &t.workload_identity).await?;
                let wi: WorkloadIdentity = serde_json::from_value(doc.spec).map_err(|e| ServiceError::Internal(e.to_string()))?;
                let path = caller.check_workload_identity(&wi, &attrs)?;
                let id = SpiffeId::new(&self.settings.trust_domain, &path)
                    .map_err(|e| ServiceError::invalid("workload_identity", format!("rendered SPIFFE ID is invalid: {e}")))?;
                let wi_cap = if x509 { wi.max_x509_ttl_seconds } else { wi.max_jwt_ttl_seconds };
                let cap = if wi_cap > 0 { wi_cap.min(default_max) } else { default_max };
                // The role grants the workload identity by name; its conditions and
                // template decide the ID, so role spiffe_ids need not list it.
                Ok(Resolved { id, cap, dns_sans: wi.dns_sans.clone(), extra_claims: wi.jwt_extra_claims.clone() })
            }
            (true, true) => Err(ServiceError::invalid("spiffe_id", "either spiffe_id or workload_identity is required")),
            (false, false) => Err(ServiceError::invalid("spiffe_id", "give spiffe_id or workload_identity, not both")),
        }
    }

    async fn deny_audit(&self, caller: &Caller, kind: &str, target: &SvidTarget, e: &ServiceError) {
        let resource = if target.spiffe_id.is_empty() { &target.workload_identity } else { &target.spiffe_id };
        self.audit
            .record(self.now(), kind, caller.bot.name.as_str(), resource, "denied", json!({"reason": e.to_string()}))
            .await;
    }

    /// Issues an X.509-SVID for the CSR's key.
    pub async fn issue_x509(&self, caller: &Caller, csr: &[u8], t: &SvidTarget) -> Result<IssuedX509, ServiceError> {
        let result = self.issue_x509_inner(caller, csr, t).await;
        match &result {
            Ok(s) => {
                self.audit
                    .record(self.now(), "svid.x509", caller.bot.name.as_str(), &s.spiffe_id, "ok", json!({"expires_at": s.expires_at}))
                    .await
            }
            Err(e) => self.deny_audit(caller, "svid.x509", t, e).await,
        }
        result
    }

    async fn issue_x509_inner(&self, caller: &Caller, csr: &[u8], t: &SvidTarget) -> Result<IssuedX509, ServiceError> {
        let spki = x509::csr_public_key(csr).map_err(|e| ServiceError::invalid("csr", e.to_string()))?;
        let r = self.resolve_target(caller, t, true).await?;
        let v = lifetime::validity(self.now(), t.ttl, self.settings.x509_default_ttl, r.cap, self.authority.x509.not_after)
            .map_err(|e| ServiceError::invalid("ttl_seconds", e.to_string()))?;
        let cert_der = self.authority.sign_svid(&spki, &r.id.to_string(), &r.dns_sans, v)?;
        Ok(IssuedX509 { spiffe_id: r.id.to_string(), cert_der, expires_at: v.not_after })
    }

    /// Issues a JWT-SVID for the given audiences.
    pub async fn issue_jwt(&self, caller: &Caller, audiences: &[String], t: &SvidTarget) -> Result<IssuedJwt, ServiceError> {
        let result = self.issue_jwt_inner(caller, audiences, t).await;
        match &result {
            Ok(s) => {
                self.audit
                    .record(self.now(), "svid.jwt", caller.bot.name.as_str(), &s.spiffe_id, "ok", json!({"audiences": audiences, "expires_at": s.expires_at}))
                    .await
            }
            Err(e) => self.deny_audit(caller, "svid.jwt", t, e).await,
        }
        result
    }

    async fn issue_jwt_inner(&self, caller: &Caller, audiences: &[String], t: &SvidTarget) -> Result<IssuedJwt, ServiceError> {
        if audiences.is_empty() {
            return Err(ServiceError::invalid("audiences", "at least one audience is required for a JWT-SVID"));
        }
        if audiences.len() > MAX_AUDIENCES {
            return Err(ServiceError::invalid("audiences", format!("at most {MAX_AUDIENCES} audiences")));
        }
        for (i, a) in audiences.iter().enumerate() {
            if a.is_empty() || a.len() > 512 {
                return Err(ServiceError::invalid(format!("audiences[{i}]"), "must be 1 to 512 characters"));
            }
        }
        let r = self.resolve_target(caller, t, false).await?;
        caller.check_audiences(audiences)?;
        let now = self.now();
        let v = lifetime::validity(now, t.ttl, self.settings.jwt_default_ttl, r.cap, i64::MAX)
            .map_err(|e| ServiceError::invalid("ttl_seconds", e.to_string()))?;
        let jti = crate::ca::random_id()?;
        let subject = r.id.to_string();
        let claims = jwt::JwtClaims {
            issuer: &self.settings.public_url,
            subject: &subject,
            audiences,
            issued_at: now,
            expires_at: v.not_after,
            jti: &jti,
            extra: &r.extra_claims,
        };
        let a = &self.authority.jwt;
        let token = jwt::sign(&a.signer, a.alg, &a.kid, &claims).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(IssuedJwt { spiffe_id: subject, token, expires_at: v.not_after })
    }
}
