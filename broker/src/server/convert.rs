//! proto <-> domain conversions for the sigil.v1 API, and error -> Status mapping.
//! The only module besides `grpc` that names prost types.

use sigil_core::domain::{self, Condition, Name};
use crate::service::ServiceError;
use crate::store::StoreError;
use sigil_schemas::sigil::v1 as pb;
use tonic::{Code, Status};

fn name(field: &str, s: &str) -> Result<Name, ServiceError> {
    Name::parse(s).map_err(|e| ServiceError::invalid(field, e.to_string()))
}

fn names(field: &str, v: &[String]) -> Result<Vec<Name>, ServiceError> {
    v.iter().enumerate().map(|(i, s)| name(&format!("{field}[{i}]"), s)).collect()
}

/// Role from the wire.
pub fn role_in(r: pb::Role) -> Result<domain::Role, ServiceError> {
    let a = r.allow.unwrap_or_default();
    Ok(domain::Role {
        name: name("name", &r.name)?,
        description: r.description,
        allow: domain::RoleAllow {
            spiffe_ids: a.spiffe_ids,
            audiences: a.audiences,
            workload_identities: a.workload_identities,
            max_x509_ttl_seconds: a.max_x509_ttl_seconds,
            max_jwt_ttl_seconds: a.max_jwt_ttl_seconds,
            rules: a.rules.into_iter().map(|r| domain::Rule { resources: r.resources, verbs: r.verbs, names: r.names }).collect(),
            ssh: a.ssh.map(|s| domain::role::SshRules {
                principals: s.principals,
                host_names: s.host_names,
                extensions: s.extensions,
                critical_options: s.critical_options.into_iter().collect(),
                max_ttl_seconds: s.max_ttl_seconds,
            }).unwrap_or_default(),
            database: a.database.map(|d| domain::role::DatabaseRules { users: d.users, server_names: d.server_names, max_ttl_seconds: d.max_ttl_seconds }).unwrap_or_default(),
            kubernetes: a.kubernetes.map(|k| domain::role::KubernetesRules { users: k.users, groups: k.groups, max_ttl_seconds: k.max_ttl_seconds }).unwrap_or_default(),
        },
        revision: r.revision,
    })
}

/// Role to the wire.
pub fn role_out(r: domain::Role) -> pb::Role {
    let a = r.allow;
    pb::Role {
        name: r.name.into(),
        description: r.description,
        allow: Some(pb::RoleAllow {
            spiffe_ids: a.spiffe_ids,
            audiences: a.audiences,
            workload_identities: a.workload_identities,
            max_x509_ttl_seconds: a.max_x509_ttl_seconds,
            max_jwt_ttl_seconds: a.max_jwt_ttl_seconds,
            rules: a.rules.into_iter().map(|r| pb::Rule { resources: r.resources, verbs: r.verbs, names: r.names }).collect(),
            ssh: (!a.ssh.is_empty()).then(|| pb::SshRules {
                principals: a.ssh.principals,
                host_names: a.ssh.host_names,
                extensions: a.ssh.extensions,
                critical_options: a.ssh.critical_options.into_iter().collect(),
                max_ttl_seconds: a.ssh.max_ttl_seconds,
            }),
            database: (!a.database.is_empty()).then(|| pb::DatabaseRules { users: a.database.users, server_names: a.database.server_names, max_ttl_seconds: a.database.max_ttl_seconds }),
            kubernetes: (!a.kubernetes.is_empty()).then(|| pb::KubernetesRules { users: a.kubernetes.users, groups: a.kubernetes.groups, max_ttl_seconds: a.kubernetes.max_ttl_seconds }),
        }),
        revision: r.revision,
    }
}

/// Bot from the wire.
pub fn bot_in(b: pb::Bot) -> Result<domain::Bot, ServiceError> {
    Ok(domain::Bot {
        name: name("name", &b.name)?,
        roles: names("roles", &b.roles)?,
        traits: b.traits.into_iter().map(|(k, v)| (k, v.values)).collect(),
        max_session_ttl_seconds: b.max_session_ttl_seconds,
        revision: b.revision,
        generation: 0,
        locked: false,
    })
}

/// Bot to the wire.
pub fn bot_out(b: domain::Bot) -> pb::Bot {
    pb::Bot {
        name: b.name.into(),
        roles: b.roles.into_iter().map(String::from).collect(),
        traits: b.traits.into_iter().map(|(k, v)| (k, pb::StringList { values: v })).collect(),
        max_session_ttl_seconds: b.max_session_ttl_seconds,
        revision: b.revision,
        generation: b.generation,
        locked: b.locked,
    }
}

/// Join token from the wire (secret and uses are output only and ignored).
pub fn token_in(t: pb::JoinToken) -> Result<domain::JoinToken, ServiceError> {
    Ok(domain::JoinToken {
        name: name("name", &t.name)?,
        bot: name("bot", &t.bot)?,
        method: if t.method.is_empty() { domain::Method::Token.name().into() } else { t.method },
        expires_at: t.expires_at,
        max_uses: if t.max_uses == 0 { 1 } else { t.max_uses },
        uses: 0,
        revision: t.revision,
        allow: t.allow.into_iter().map(|r| r.claims.into_iter().collect()).collect(),
        config: t.config.into_iter().collect(),
    })
}

/// Join token to the wire.
pub fn token_out(t: domain::JoinToken, secret: Option<&domain::TokenSecret>) -> pb::JoinToken {
    pb::JoinToken {
        name: t.name.into(),
        bot: t.bot.into(),
        method: t.method,
        expires_at: t.expires_at,
        max_uses: t.max_uses,
        uses: t.uses,
        revision: t.revision,
        secret: secret.map(|s| s.expose().to_string()).unwrap_or_default(),
        allow: t.allow.into_iter().map(|r| pb::AllowRule { claims: r.into_iter().collect() }).collect(),
        config: t.config.into_iter().collect(),
    }
}

/// Workload identity from the wire.
pub fn wi_in(w: pb::WorkloadIdentity) -> Result<domain::WorkloadIdentity, ServiceError> {
    Ok(domain::WorkloadIdentity {
        name: name("name", &w.name)?,
        spiffe_id: w.spiffe_id,
        dns_sans: w.dns_sans,
        jwt_extra_claims: w.jwt_extra_claims.into_iter().collect(),
        max_x509_ttl_seconds: w.max_x509_ttl_seconds,
        max_jwt_ttl_seconds: w.max_jwt_ttl_seconds,
        allow: w.allow.into_iter().map(|c| Condition { attribute: c.attribute, values: c.values }).collect(),
        revision: w.revision,
    })
}

/// Workload identity to the wire.
pub fn wi_out(w: domain::WorkloadIdentity) -> pb::WorkloadIdentity {
    pb::WorkloadIdentity {
        name: w.name.into(),
        spiffe_id: w.spiffe_id,
        dns_sans: w.dns_sans,
        jwt_extra_claims: w.jwt_extra_claims.into_iter().collect(),
        max_x509_ttl_seconds: w.max_x509_ttl_seconds,
        max_jwt_ttl_seconds: w.max_jwt_ttl_seconds,
        allow: w.allow.into_iter().map(|c| pb::Condition { attribute: c.attribute, values: c.values }).collect(),
        revision: w.revision,
    }
}

/// Lock from the wire: exactly one target field must be set.
pub fn lock_in(l: pb::Lock) -> Result<domain::Lock, ServiceError> {
    let t = l.target.unwrap_or_default();
    Ok(domain::Lock {
        name: name("name", &l.name)?,
        target: domain::LockTarget::from_fields(&t.bot, &t.bot_instance, &t.join_token, &t.spiffe_id)?,
        reason: l.reason,
        expires_at: l.expires_at,
        revision: l.revision,
        created_by: l.created_by,
        created_at: l.created_at,
    })
}

/// Lock to the wire.
pub fn lock_out(l: domain::Lock) -> pb::Lock {
    let mut target = pb::LockTarget::default();
    match l.target {
        domain::LockTarget::Bot(b) => target.bot = b.into(),
        domain::LockTarget::BotInstance(i) => target.bot_instance = i,
        domain::LockTarget::JoinToken(t) => target.join_token = t.into(),
        domain::LockTarget::SpiffeId(p) => target.spiffe_id = p,
    }
    pb::Lock {
        name: l.name.into(),
        target: Some(target),
        reason: l.reason,
        expires_at: l.expires_at,
        revision: l.revision,
        created_by: l.created_by,
        created_at: l.created_at,
    }
}

/// The documents of an `Apply` request; a conversion error names the
/// document (`documents[i].field`).
pub fn apply_in(r: pb::ApplyRequest) -> Result<Vec<crate::service::apply::ApplyDoc>, ServiceError> {
    use crate::service::apply::{check_document_count, ApplyDoc};
    use pb::apply_document::Kind as K;
    check_document_count(r.documents.len())?;
    let at = |i: usize| {
        move |e: ServiceError| match e {
            ServiceError::Invalid { field, message } => ServiceError::invalid(format!("documents[{i}].{field}"), message),
            other => other,
        }
    };
    r.documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d.kind {
            Some(K::Role(x)) => role_in(x).map(ApplyDoc::Role).map_err(at(i)),
            Some(K::Bot(x)) => bot_in(x).map(ApplyDoc::Bot).map_err(at(i)),
            Some(K::WorkloadIdentity(x)) => wi_in(x).map(ApplyDoc::WorkloadIdentity).map_err(at(i)),
            Some(K::JoinToken(x)) => token_in(x).map(ApplyDoc::JoinToken).map_err(at(i)),
            None => Err(ServiceError::invalid(format!("documents[{i}]"), "empty: set one of role, bot, workload_identity, join_token")),
        })
        .collect()
}

/// The results of an `Apply` (a created join token's secret, once).
pub fn apply_out(results: Vec<crate::service::apply::Applied>) -> pb::ApplyResponse {
    use crate::service::apply::Outcome;
    let results = results
        .into_iter()
        .map(|a| pb::ApplyResult {
            kind: a.kind.as_str().to_string(),
            name: a.name,
            outcome: match a.outcome {
                Outcome::Created => pb::ApplyOutcome::Created,
                Outcome::Updated => pb::ApplyOutcome::Updated,
                Outcome::Unchanged => pb::ApplyOutcome::Unchanged,
            } as i32,
            revision: a.revision,
            secret: a.secret.map(|s| s.expose().to_string()).unwrap_or_default(),
            method: a.method,
        })
        .collect();
    pb::ApplyResponse { results }
}

/// Maps a service error to a gRPC status with a message that says what to fix.
pub fn status(e: ServiceError) -> Status {
    let code = match &e {
        ServiceError::Invalid { .. } => Code::InvalidArgument,
        ServiceError::Unauthenticated(_) => Code::Unauthenticated,
        ServiceError::Denied(_) | ServiceError::JoinRefused(_) | ServiceError::Locked { .. } => Code::PermissionDenied,
        ServiceError::Store(StoreError::NotFound { .. }) => Code::NotFound,
        ServiceError::Store(StoreError::AlreadyExists { .. }) => Code::AlreadyExists,
        ServiceError::Store(StoreError::Conflict { .. } | StoreError::Changed { .. }) => Code::Aborted,
        ServiceError::Store(StoreError::TokenRejected(_)) => Code::PermissionDenied,
        ServiceError::Store(StoreError::IdentityRejected(_)) => Code::Unauthenticated,
        ServiceError::Store(StoreError::Backend(_) | StoreError::Corrupt { .. }) | ServiceError::Internal(_) => Code::Internal,
        ServiceError::RateLimited(_) => Code::ResourceExhausted,
        ServiceError::Precondition(_) => Code::FailedPrecondition,
    };
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
        return Status::internal("internal error; see broker logs");
    }
    if let ServiceError::Invalid { field, message } = &e {
        // The field as data (google.rpc.BadRequest), so a client points at it
        // (the Terraform provider: at the attribute) without reading the text.
        let details = tonic_types::ErrorDetails::with_bad_request_violation(field.clone(), message.clone());
        return <Status as tonic_types::StatusExt>::with_error_details(code, e.to_string(), details);
    }
    Status::new(code, e.to_string())
}

/// Most bytes of a name field of an unauthenticated request (method, token
/// name, challenge id). Valid names are far shorter; the cap keeps oversized
/// ones out of refusals, logs and the audit log.
pub const MAX_JOIN_NAME_BYTES: usize = 256;
/// Most bytes of a join credential (a JWT, a join secret). The largest real
/// ones (cloud identity tokens) are a few KiB; AWS STS accepts up to 20,000.
pub const MAX_JOIN_TOKEN_BYTES: usize = 32 * 1024;

fn bounded(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.len() > max {
        return Err(ServiceError::invalid(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

/// A `Join` request from the wire, from `peer`, with its fields bounded.
pub fn join_in(j: pb::JoinRequest, peer: Option<std::net::IpAddr>) -> Result<crate::join::JoinInput, ServiceError> {
    bounded("method", &j.method, MAX_JOIN_NAME_BYTES)?;
    bounded("token_name", &j.token_name, MAX_JOIN_NAME_BYTES)?;
    bounded("challenge_id", &j.challenge_id, MAX_JOIN_NAME_BYTES)?;
    bounded("token", &j.token, MAX_JOIN_TOKEN_BYTES)?;
    Ok(crate::join::JoinInput {
        method: if j.method.is_empty() { domain::Method::Token.name().into() } else { j.method },
        token: j.token,
        token_name: j.token_name,
        payload: j.payload,
        challenge_id: j.challenge_id,
        peer,
    })
}

/// Checks the fields of a `BeginJoin` request.
pub fn begin_join_in(r: &pb::BeginJoinRequest) -> Result<(), ServiceError> {
    bounded("method", &r.method, MAX_JOIN_NAME_BYTES)?;
    bounded("token_name", &r.token_name, MAX_JOIN_NAME_BYTES)
}

/// Most bytes of audit events in one `ListAuditEvents` answer: well under the
/// clients' 4 MiB message limit, whatever the events hold.
pub const MAX_AUDIT_PAGE_BYTES: usize = 1024 * 1024;

/// Audit events to the wire, as many as fit in [`MAX_AUDIT_PAGE_BYTES`] (at
/// least one). Events stored before events were cut to size are cut here.
pub fn audit_page(items: Vec<crate::store::AuditRecord>) -> Vec<pb::AuditEvent> {
    use crate::audit::sanitize;
    use prost::Message;
    let mut out = Vec::with_capacity(items.len());
    let mut bytes = 0;
    for e in items {
        let ev = pb::AuditEvent {
            id: e.id,
            time: e.time,
            kind: sanitize::field(&e.kind),
            actor: sanitize::field(&e.actor),
            resource: sanitize::field(&e.resource),
            outcome: sanitize::field(&e.outcome),
            detail_json: sanitize::detail(e.detail).to_string(),
        };
        bytes += ev.encoded_len() + 8;
        if bytes > MAX_AUDIT_PAGE_BYTES && !out.is_empty() {
            break;
        }
        out.push(ev);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn an_audit_page_stays_under_the_byte_limit_whatever_the_events_hold() {
        let big = "x".repeat(1000);
        let items: Vec<_> =
            (0..1000).map(|i| crate::audit::event(i, "join", "anonymous", &big, "denied", serde_json::json!({"a": big, "b": big, "c": big}))).collect();
        let page = audit_page(items);
        let bytes: usize = page.iter().map(|e| e.encoded_len() + 8).sum();
        assert!(!page.is_empty() && page.len() < 1000, "{} events", page.len());
        assert!(bytes <= MAX_AUDIT_PAGE_BYTES, "{bytes}");
    }

    #[test]
    fn oversized_join_fields_are_refused_before_anything_else() {
        let j = pb::JoinRequest { method: "iam".into(), token_name: "n".repeat(60_000), ..Default::default() };
        let e = join_in(j, None).unwrap_err().to_string();
        assert_eq!(e, "invalid token_name: longer than 256 bytes");
        let r = pb::BeginJoinRequest { method: "m".repeat(300), ..Default::default() };
        assert!(begin_join_in(&r).is_err());
    }
}

/// A heartbeat from the wire (bounded by the service, not here).
pub fn heartbeat_in(r: pb::HeartbeatRequest) -> crate::store::InstanceHeartbeat {
    crate::store::InstanceHeartbeat {
        host_name: r.host_name,
        os: r.os,
        agent_version: r.agent_version,
        outputs: r.outputs,
        last_renewal: r.last_renewal,
    }
}

/// An instance binding to the wire.
pub fn binding_out(b: crate::service::bindings::BindingView) -> pb::InstanceBinding {
    pb::InstanceBinding { method: b.method, subject: b.subject, bot: b.binding.bot, bot_instance: b.binding.instance, bound_at: b.binding.bound_at }
}

/// A bot instance to the wire; `expire_after` dates its expiry.
pub fn instance_out(r: crate::store::InstanceRecord, expire_after: i64) -> pb::BotInstance {
    let join_attributes = match r.instance.join_attributes {
        serde_json::Value::Object(o) => o.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string()))).collect(),
        _ => Default::default(),
    };
    pb::BotInstance {
        id: r.instance.id,
        bot: r.instance.bot,
        join_attributes,
        first_seen: r.instance.created_at,
        generation: r.instance.generation,
        locked: r.instance.locked,
        last_seen: r.last_seen,
        expires_at: r.last_seen.saturating_add(expire_after),
        heartbeat: r.heartbeat.map(|h| pb::HeartbeatRequest {
            host_name: h.host_name,
            os: h.os,
            agent_version: h.agent_version,
            outputs: h.outputs,
            last_renewal: h.last_renewal,
        }),
        heartbeat_at: r.heartbeat_at,
    }
}

/// Instances to the wire, as many as fit in [`MAX_AUDIT_PAGE_BYTES`] (at
/// least one): the client pages on from the last id it got.
pub fn instance_page(items: Vec<crate::store::InstanceRecord>, expire_after: i64) -> Vec<pb::BotInstance> {
    use prost::Message;
    let mut out = Vec::with_capacity(items.len());
    let mut bytes = 0;
    for r in items {
        let i = instance_out(r, expire_after);
        bytes += i.encoded_len() + 8;
        if bytes > MAX_AUDIT_PAGE_BYTES && !out.is_empty() {
            break;
        }
        out.push(i);
    }
    out
}

/// CA status out.
pub fn ca_status_out(s: crate::ca::rotation::Status) -> pb::CaStatus {
    pb::CaStatus {
        keys: s
            .keys
            .into_iter()
            .map(|k| pb::CaKey {
                id: k.record.id,
                purpose: k.record.purpose,
                alg: k.record.alg,
                state: k.record.state,
                created_at: k.record.created_at,
                not_after: k.record.not_after,
                activated_at: k.record.activated_at,
                deactivated_at: k.record.deactivated_at,
                retire_safe_at: k.retire_safe_at,
                backend: k.backend.into(),
                fingerprint: k.fingerprint,
            })
            .collect(),
        phases: s.phases.into_iter().map(|(p, ph)| (p.as_str().to_string(), ph.as_str().to_string())).collect(),
    }
}
