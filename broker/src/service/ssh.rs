//! SSH certificates under RBAC: user certificates (login principals, signed
//! by the ssh-user CA) and host certificates (host names, signed by the
//! ssh-host CA), and the CAs' published public keys.
//!
//! What goes into a certificate is decided in one place
//! (`sigil_core::domain::ssh_policy`: principals, extensions, critical
//! options, lifetime cap); this module adds the clock (valid_after backdated
//! [`BACKDATE_SECS`] for clock skew), randomness (serial, nonce), the key id
//! `sigil:<bot>:<instance>`, signs through the CA key backend and audits
//! `ssh.issue` with serial, key id, principals, CA key and instance. Bot and
//! instance locks refuse the request at authentication, like every call.

use super::{Broker, ServiceError};
use crate::audit;
use sigil_core::domain::ssh_policy::SshCertType;
use sigil_core::domain::Caller;
use sigil_core::ssh::{self, CaSignature, CertKind, CertSpec, PublicKey};
use serde_json::json;

/// valid_after lies this far in the past (clients and servers with a slow clock).
pub const BACKDATE_SECS: i64 = 60;

/// Bytes of principal names an audit event lists; the rest are counted, so
/// the event stays under the audit detail bound and keeps its serial.
const AUDIT_PRINCIPAL_BYTES: usize = 2048;
/// Most principal names an audit event lists (the audit detail keeps 64 entries of a list).
const AUDIT_PRINCIPALS: usize = 48;

/// The principals an audit event names, and how many it leaves out.
fn audit_principals(all: &[String]) -> (Vec<&str>, usize) {
    let mut used = 0;
    let shown: Vec<&str> = all
        .iter()
        .take(AUDIT_PRINCIPALS)
        .take_while(|p| {
            used += p.len() + 3;
            used <= AUDIT_PRINCIPAL_BYTES
        })
        .map(String::as_str)
        .collect();
    let omitted = all.len() - shown.len();
    (shown, omitted)
}

/// An SSH certificate request.
#[derive(Debug, Clone, Default)]
pub struct SshRequest {
    /// `user` or `host`.
    pub cert_type: String,
    /// The key to certify, one OpenSSH public key line.
    pub public_key: String,
    /// Login names (user) or host names (host).
    pub principals: Vec<String>,
    /// Extensions wanted (user; empty: every one allowed).
    pub extensions: Vec<String>,
    /// Requested lifetime, seconds (0: the largest allowed).
    pub ttl: i64,
}

/// A signed SSH certificate.
#[derive(Debug, Clone)]
pub struct IssuedSsh {
    /// The certificate line.
    pub certificate: String,
    /// Serial.
    pub serial: u64,
    /// Key id.
    pub key_id: String,
    /// Unix seconds.
    pub valid_after: i64,
    /// Unix seconds.
    pub valid_before: i64,
    /// Id of the CA key that signed it.
    pub ca_key: String,
    /// Published user CA keys (authorized_keys lines).
    pub user_ca: Vec<String>,
    /// Published host CA keys.
    pub host_ca: Vec<String>,
}

fn random<const N: usize>() -> Result<[u8; N], ServiceError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; N];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).map_err(|_| ServiceError::Internal("random generation failed".into()))?;
    Ok(b)
}

impl Broker {
    /// The published SSH CA keys: (user, host) authorized_keys lines.
    pub fn ssh_ca_public_keys(&self) -> (Vec<String>, Vec<String>) {
        let ca = self.authority.current();
        (ca.ssh_user.lines(crate::ca::PURPOSE_SSH_USER), ca.ssh_host.lines(crate::ca::PURPOSE_SSH_HOST))
    }

    /// Issues an SSH certificate; audited as `ssh.issue` either way.
    pub async fn issue_ssh(&self, caller: &Caller, instance: &str, req: &SshRequest) -> Result<IssuedSsh, ServiceError> {
        let result = self.issue_ssh_inner(caller, instance, req);
        let actor = caller.bot.name.as_str();
        let resource = format!("{}:{}", req.cert_type, req.principals.join(","));
        let (principals, omitted) = audit_principals(&req.principals);
        let event = match &result {
            Ok(c) => audit::event(
                self.now(),
                crate::store::SSH_ISSUANCE_KIND,
                actor,
                &resource,
                "ok",
                json!({
                    "cert_type": req.cert_type, "serial": c.serial.to_string(), "key_id": c.key_id, "principals": principals,
                    "principals_omitted": omitted, "ca_key": c.ca_key, "instance": instance, "valid_before": c.valid_before,
                    // What revocation looks the certificate up by (`store::ISSUANCE_KINDS`).
                    "expires_at": c.valid_before,
                }),
            ),
            Err(e) => audit::event(self.now(), "ssh.issue", actor, &resource, "denied", json!({"reason": e.audit_reason(), "instance": instance})),
        };
        self.audit.record_all(vec![event]).await;
        result
    }

    fn issue_ssh_inner(&self, caller: &Caller, instance: &str, req: &SshRequest) -> Result<IssuedSsh, ServiceError> {
        let t = SshCertType::parse(&req.cert_type).ok_or_else(|| ServiceError::invalid("cert_type", "use \"user\" or \"host\""))?;
        let key = PublicKey::parse_line(&req.public_key).map_err(|e| ServiceError::invalid("public_key", e.to_string()))?;
        if req.principals.is_empty() || req.principals.len() > ssh::MAX_PRINCIPALS {
            return Err(ServiceError::invalid("principals", format!("1 to {} principals", ssh::MAX_PRINCIPALS)));
        }
        for (i, p) in req.principals.iter().enumerate() {
            ssh::cert::check_principal(p).map_err(|e| ServiceError::invalid(format!("principals[{i}]"), e))?;
        }
        if t == SshCertType::Host && !req.extensions.is_empty() {
            return Err(ServiceError::invalid("extensions", "host certificates carry no extensions"));
        }
        if req.extensions.len() > ssh::cert::KNOWN_EXTENSIONS.len() {
            return Err(ServiceError::invalid("extensions", "too many extensions"));
        }
        for (i, e) in req.extensions.iter().enumerate() {
            if !ssh::cert::KNOWN_EXTENSIONS.contains(&e.as_str()) {
                return Err(ServiceError::invalid(format!("extensions[{i}]"), format!("unknown extension {e:?} (known: {})", ssh::cert::KNOWN_EXTENSIONS.join(", "))));
            }
        }
        if req.ttl < 0 {
            return Err(ServiceError::invalid("ttl_seconds", "must not be negative"));
        }
        let grant = caller.check_ssh(t, &req.principals, &req.extensions, &caller.attributes(), self.settings.ssh_max_ttl)?;
        let now = self.now();
        let ttl = if req.ttl == 0 { grant.max_ttl } else { req.ttl.min(grant.max_ttl) };
        let authority = self.authority.current();
        let ca = if t == SshCertType::User { &authority.ssh_user } else { &authority.ssh_host };
        // Never past the CA key's planned end (retire_safe_at counts on it, as for X.509).
        let (valid_after, valid_before) = (now - BACKDATE_SECS, (now + ttl).min(ca.not_after));
        if valid_before <= now {
            return Err(ServiceError::Internal(format!("the {} CA key {} has expired; rotate it (sigil ca rotate)", req.cert_type, ca.key_id)));
        }
        let key_id = format!("sigil:{}:{}", caller.bot.name.as_str(), if instance.is_empty() { "-" } else { instance });
        // Never 0: a KRL cannot revoke serial 0 (OpenSSH refuses it).
        let serial = u64::from_be_bytes(random()?).max(1);
        let spec = CertSpec {
            kind: if t == SshCertType::User { CertKind::User } else { CertKind::Host },
            key,
            serial,
            key_id: key_id.clone(),
            principals: req.principals.clone(),
            valid_after: u64::try_from(valid_after).unwrap_or(0),
            valid_before: u64::try_from(valid_before).unwrap_or(0),
            critical_options: grant.critical_options,
            extensions: grant.extensions,
            nonce: random()?,
        };
        let sign = |m: &[u8]| ca.signer.sign(m).map_err(|e| e.to_string());
        let certificate = ssh::cert::sign(&spec, &CaSignature { ca: &ca.public, sign: &sign }).map_err(|e| match e {
            ssh::SshError::Sign(m) => ServiceError::Internal(format!("SSH CA signature: {m}")),
            ssh::SshError::Field { field, reason } => ServiceError::invalid(field, reason),
            other => ServiceError::invalid("public_key", other.to_string()),
        })?;
        Ok(IssuedSsh {
            certificate,
            serial,
            key_id,
            valid_after,
            valid_before,
            ca_key: ca.key_id.clone(),
            user_ca: authority.ssh_user.lines(crate::ca::PURPOSE_SSH_USER),
            host_ca: authority.ssh_host.lines(crate::ca::PURPOSE_SSH_HOST),
        })
    }
}
