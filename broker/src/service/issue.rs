//! SVID issuance under RBAC: X.509-SVIDs from CSRs, JWT-SVIDs with audiences.

use super::{Broker, ServiceError};
use crate::ca::{jwt, lifetime, x509};
use sigil_core::domain::{Attributes, Caller, SpiffeId, WorkloadIdentity};
use crate::audit;
use crate::store::{AuditRecord, Kind};
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
    /// The certificate's serial number, lowercase hex (recorded in the audit
    /// event, so every issued certificate can be found there).
    pub serial: String,
    /// Id of the CA key that signed it (recorded in the audit event too).
    pub ca_key: String,
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
    /// The `jti` claim (recorded in the audit event).
    pub jti: String,
    /// exp.
    pub expires_at: i64,
}

/// Largest number of audiences in one JWT-SVID.
pub const MAX_AUDIENCES: usize = 16;

pub use sigil_core::api::MAX_BATCH;

/// One X.509-SVID request of a batch.
#[derive(Debug, Clone)]
pub struct X509Entry {
    /// PKCS#10 CSR (DER).
    pub csr: Vec<u8>,
    /// What to issue.
    pub target: SvidTarget,
}

/// One JWT-SVID request of a batch.
#[derive(Debug, Clone)]
pub struct JwtEntry {
    /// Audiences.
    pub audiences: Vec<String>,
    /// What to issue.
    pub target: SvidTarget,
}

/// A batch's results, one per entry, in request order.
#[derive(Debug)]
pub struct Batch {
    /// X.509 entries.
    pub x509: Vec<Result<IssuedX509, ServiceError>>,
    /// JWT entries.
    pub jwt: Vec<Result<IssuedJwt, ServiceError>>,
}

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
            if !k.starts_with(sigil_core::domain::template::WORKLOAD_PREFIX) {
                return Err(ServiceError::invalid(format!("workload_attributes.{k}"), "only workload.* attributes may be supplied"));
            }
            attrs.insert(k.clone(), v.clone());
        }
        let default_max = if x509 { self.settings.x509_max_ttl } else { self.settings.jwt_max_ttl };
        match (t.spiffe_id.is_empty(), t.workload_identity.is_empty()) {
            (false, true) => {
                let id: SpiffeId = t.spiffe_id.parse().map_err(|e: sigil_core::domain::SpiffeIdError| ServiceError::invalid("spiffe_id", e.to_string()))?;
                let cap = caller.check_spiffe_id(&self.settings.trust_domain, &id, &attrs, x509, default_max)?;
                // The setting is a ceiling: a role may lower it, never raise it
                // (CA rotation's retire_safe_at counts on it).
                let cap = cap.min(default_max);
                Ok(Resolved { id, cap, dns_sans: vec![], extra_claims: BTreeMap::new() })
            }
            (true, false) => {
                let doc = self.store.get(Kind::WorkloadIdentity, &t.workload_identity).await?;
                let wi: WorkloadIdentity = serde_json::from_value(doc.spec).map_err(|e| ServiceError::Internal(e.to_string()))?;
                // The role grants the workload identity by name and caps its lifetime;
                // its conditions and template decide the ID, so role spiffe_ids need
                // not list it (creating it required them to: see domain::escalation).
                let (path, cap) = caller.check_workload_identity(&wi, &attrs, x509, default_max)?;
                let cap = cap.min(default_max);
                let id = SpiffeId::new(&self.settings.trust_domain, &path)
                    .map_err(|e| ServiceError::invalid("workload_identity", format!("rendered SPIFFE ID is invalid: {e}")))?;
                Ok(Resolved { id, cap, dns_sans: wi.dns_sans.clone(), extra_claims: wi.jwt_extra_claims.clone() })
            }
            (true, true) => Err(ServiceError::invalid("spiffe_id", "either spiffe_id or workload_identity is required")),
            (false, false) => Err(ServiceError::invalid("spiffe_id", "give spiffe_id or workload_identity, not both")),
        }
    }

    /// The audit event of one issuance attempt: `ok` with the SVID's facts,
    /// or `denied` with the reason.
    fn svid_event<T>(&self, caller: &Caller, kind: &str, target: &SvidTarget, result: &Result<T, ServiceError>, ok: impl FnOnce(&T) -> (String, serde_json::Value)) -> AuditRecord {
        let actor = caller.bot.name.as_str();
        match result {
            Ok(s) => {
                let (resource, detail) = ok(s);
                audit::event(self.now(), kind, actor, &resource, "ok", detail)
            }
            Err(e) => {
                let resource = if target.spiffe_id.is_empty() { &target.workload_identity } else { &target.spiffe_id };
                audit::event(self.now(), kind, actor, resource, "denied", json!({"reason": e.audit_reason()}))
            }
        }
    }

    fn x509_event(&self, caller: &Caller, t: &SvidTarget, r: &Result<IssuedX509, ServiceError>) -> AuditRecord {
        // Serial, CA key and instance: what revocation needs (`store::ISSUANCE_KINDS`).
        self.svid_event(caller, "svid.x509", t, r, |s| {
            (s.spiffe_id.clone(), json!({"serial": s.serial, "expires_at": s.expires_at, "ca_key": s.ca_key, "instance": caller.instance}))
        })
    }

    fn jwt_event(&self, caller: &Caller, audiences: &[String], t: &SvidTarget, r: &Result<IssuedJwt, ServiceError>) -> AuditRecord {
        self.svid_event(caller, "svid.jwt", t, r, |s| (s.spiffe_id.clone(), json!({"jti": s.jti, "audiences": audiences, "expires_at": s.expires_at})))
    }

    /// Issues an X.509-SVID for the CSR's key.
    pub async fn issue_x509(&self, caller: &Caller, csr: &[u8], t: &SvidTarget) -> Result<IssuedX509, ServiceError> {
        let result = self.issue_x509_inner(caller, csr, t).await;
        self.audit.record_all(vec![self.x509_event(caller, t, &result)]).await;
        result
    }

    /// Issues a batch: every entry is checked, issued and audited as if it had
    /// come alone, and fails alone; the audit events share one commit. Refused
    /// as a whole only when it is empty or larger than [`MAX_BATCH`].
    pub async fn issue_batch(&self, caller: &Caller, x509: &[X509Entry], jwt: &[JwtEntry]) -> Result<Batch, ServiceError> {
        let n = x509.len() + jwt.len();
        if n == 0 || n > MAX_BATCH {
            return Err(ServiceError::invalid("x509", format!("a batch holds 1 to {MAX_BATCH} SVID requests, X.509 and JWT together (got {n})")));
        }
        let mut events = Vec::with_capacity(n);
        let mut out = Batch { x509: Vec::with_capacity(x509.len()), jwt: Vec::with_capacity(jwt.len()) };
        for e in x509 {
            let r = self.issue_x509_inner(caller, &e.csr, &e.target).await;
            events.push(self.x509_event(caller, &e.target, &r));
            out.x509.push(r);
        }
        for e in jwt {
            let r = self.issue_jwt_inner(caller, &e.audiences, &e.target).await;
            events.push(self.jwt_event(caller, &e.audiences, &e.target, &r));
            out.jwt.push(r);
        }
        self.audit.record_all(events).await;
        Ok(out)
    }

    async fn issue_x509_inner(&self, caller: &Caller, csr: &[u8], t: &SvidTarget) -> Result<IssuedX509, ServiceError> {
        let spki = x509::csr_public_key(csr).map_err(|e| ServiceError::invalid("csr", e.to_string()))?;
        let r = self.resolve_target(caller, t, true).await?;
        self.check_svid_locks(r.id.path()).await?;
        let ca = self.authority.current();
        let v = lifetime::validity(self.now(), t.ttl, self.settings.x509_default_ttl, r.cap, ca.x509.not_after)
            .map_err(|e| ServiceError::invalid("ttl_seconds", e.to_string()))?;
        let crl_base = self.settings.crl_distribution_points.then_some(self.settings.public_url.as_str());
        let cert_der = ca.sign_svid(&spki, &r.id.to_string(), &r.dns_sans, v, crl_base)?;
        let serial = x509::serial_hex(&cert_der).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(IssuedX509 { spiffe_id: r.id.to_string(), cert_der, serial, ca_key: ca.x509.key_id.clone(), expires_at: v.not_after })
    }

    /// Issues a JWT-SVID for the given audiences.
    pub async fn issue_jwt(&self, caller: &Caller, audiences: &[String], t: &SvidTarget) -> Result<IssuedJwt, ServiceError> {
        let result = self.issue_jwt_inner(caller, audiences, t).await;
        self.audit.record_all(vec![self.jwt_event(caller, audiences, t, &result)]).await;
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
        self.check_svid_locks(r.id.path()).await?;
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
        let ca = self.authority.current();
        let a = &ca.jwt;
        let token = jwt::sign(a.signer.as_ref(), a.alg, &a.kid, &claims).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(IssuedJwt { spiffe_id: subject, token, jti, expires_at: v.not_after })
    }
}
