//! proto <-> domain conversions for the sigil.v1 API, and error -> Status mapping.
//! The only module besides `grpc` that names prost types.

use crate::domain::{self, Condition, Name};
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
        method: if t.method.is_empty() { "token".into() } else { t.method },
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

/// Maps a service error to a gRPC status with a message that says what to fix.
pub fn status(e: ServiceError) -> Status {
    let code = match &e {
        ServiceError::Invalid { .. } => Code::InvalidArgument,
        ServiceError::Unauthenticated(_) => Code::Unauthenticated,
        ServiceError::Denied(_) => Code::PermissionDenied,
        ServiceError::Store(StoreError::NotFound { .. }) => Code::NotFound,
        ServiceError::Store(StoreError::AlreadyExists { .. }) => Code::AlreadyExists,
        ServiceError::Store(StoreError::Conflict { .. }) => Code::Aborted,
        ServiceError::Store(StoreError::TokenRejected(_)) => Code::PermissionDenied,
        ServiceError::Store(StoreError::IdentityRejected(_)) => Code::Unauthenticated,
        ServiceError::Store(StoreError::Backend(_)) | ServiceError::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
        return Status::internal("internal error; see broker logs");
    }
    Status::new(code, e.to_string())
}
