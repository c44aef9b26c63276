//! `Apply`: create-or-update of roles, bots, workload identities and join
//! tokens, all or nothing (`sigil apply -f FILE`).
//!
//! Two phases. First every document is checked as its own Create/Update
//! call would check it (RBAC `create` or `update` on its kind and name,
//! domain validation, join method settings, references, escalation), against
//! the store as read now plus the other documents of the request (a bot may
//! name a role of the same file, a join token a bot of it); nothing is written
//! while any document fails, and the error names the document. Then every
//! write goes to the store in ONE transaction ([`crate::store::Store::write_batch`]):
//! each update at the revision read in the first phase, so a concurrent
//! change makes the whole request fail (`Conflict`) and nothing lands. Only
//! then are the writes audited, one event per written document.
//!
//! A join token that exists is updated (expiry, use limit, allow rules,
//! config) and keeps its secret: a secret is made, and returned once, only
//! for a token this call creates. A document identical to what is stored is
//! `unchanged`: not written, not audited.

use super::resources::{check_token_immutable, from_doc, to_doc, token_create_detail, token_state, token_update, token_update_detail, Resource, Staged};
use super::{Broker, ServiceError};
use crate::store::{BatchWrite, Doc, Kind, StoreError};
use serde_json::json;
use sigil_core::domain::{Bot, Caller, Denied, JoinToken, Name, Role, TokenSecret, WorkloadIdentity};
use std::collections::HashMap;

/// Most documents one `Apply` takes (the request is also bounded in bytes by
/// the API's decode limit).
pub const MAX_APPLY_DOCUMENTS: usize = 256;

/// Refuses more than [`MAX_APPLY_DOCUMENTS`] documents (checked before the
/// API converts them, and again here for any caller).
pub fn check_document_count(n: usize) -> Result<(), ServiceError> {
    if n > MAX_APPLY_DOCUMENTS {
        return Err(ServiceError::invalid("documents", format!("{n} documents; at most {MAX_APPLY_DOCUMENTS} per apply (split the file)")));
    }
    Ok(())
}

/// One document of an apply request.
#[derive(Debug, Clone)]
pub enum ApplyDoc {
    /// A role.
    Role(Role),
    /// A bot.
    Bot(Bot),
    /// A workload identity.
    WorkloadIdentity(WorkloadIdentity),
    /// A join token.
    JoinToken(JoinToken),
}

impl ApplyDoc {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            ApplyDoc::Role(_) => Kind::Role,
            ApplyDoc::Bot(_) => Kind::Bot,
            ApplyDoc::WorkloadIdentity(_) => Kind::WorkloadIdentity,
            ApplyDoc::JoinToken(_) => Kind::JoinToken,
        }
    }

    /// Its name.
    pub fn name(&self) -> &Name {
        match self {
            ApplyDoc::Role(r) => &r.name,
            ApplyDoc::Bot(b) => &b.name,
            ApplyDoc::WorkloadIdentity(w) => &w.name,
            ApplyDoc::JoinToken(t) => &t.name,
        }
    }
}

/// What applying a document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed and was replaced.
    Updated,
    /// It is identical to what is stored: nothing written.
    Unchanged,
}

/// The result of one document, in request order.
#[derive(Debug)]
pub struct Applied {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// Created, updated or unchanged.
    pub outcome: Outcome,
    /// The revision after the call (a dry run: the revision it would have).
    pub revision: i64,
    /// A join token's method (empty for other kinds).
    pub method: String,
    /// The secret of a join token this call created (never on a dry run).
    pub secret: Option<TokenSecret>,
}

/// A document checked and ready to write.
struct Planned {
    applied: Applied,
    write: Option<BatchWrite>,
    /// Audit event kind suffix (`create`, `update`) and detail, for a write.
    audit: Option<(&'static str, serde_json::Value)>,
}

impl Broker {
    /// Creates or updates every document, all or nothing (see the module
    /// header). With `dry_run`, checks everything and writes nothing.
    pub async fn apply(&self, caller: &Caller, docs: Vec<ApplyDoc>, dry_run: bool) -> Result<Vec<Applied>, ServiceError> {
        if docs.is_empty() {
            return Err(ServiceError::invalid("documents", "no documents to apply"));
        }
        check_document_count(docs.len())?;
        let mut seen: HashMap<(&'static str, &str), usize> = HashMap::new();
        for (i, d) in docs.iter().enumerate() {
            if let Some(first) = seen.insert((d.kind().as_str(), d.name().as_str()), i) {
                return Err(ServiceError::invalid(
                    format!("documents[{i}]"),
                    format!("{} {:?} is also documents[{first}]: each resource may appear once", d.kind().as_str(), d.name().as_str()),
                ));
            }
        }
        let roles: Vec<Role> = docs.iter().filter_map(|d| if let ApplyDoc::Role(r) = d { Some(r.clone()) } else { None }).collect();
        let bots: Vec<Bot> = docs.iter().filter_map(|d| if let ApplyDoc::Bot(b) = d { Some(b.clone()) } else { None }).collect();
        let staged = Staged { roles: &roles, bots: &bots };

        let mut planned = Vec::with_capacity(docs.len());
        for (i, d) in docs.into_iter().enumerate() {
            let (kind, name) = (d.kind().as_str(), d.name().to_string());
            let p = match d {
                ApplyDoc::Role(r) => self.plan(caller, r, &staged).await,
                ApplyDoc::Bot(b) => self.plan(caller, b, &staged).await,
                ApplyDoc::WorkloadIdentity(w) => self.plan(caller, w, &staged).await,
                ApplyDoc::JoinToken(t) => self.plan_token(caller, t, &staged).await,
            };
            planned.push(p.map_err(|e| at(i, kind, &name, e))?);
        }
        if dry_run {
            return Ok(planned
                .into_iter()
                .map(|mut p| {
                    p.applied.secret = None;
                    p.applied
                })
                .collect());
        }

        let writes: Vec<BatchWrite> = planned.iter().filter_map(|p| p.write.clone()).collect();
        let revisions = if writes.is_empty() { Vec::new() } else { self.store.write_batch(&writes).await? };
        let mut revisions = revisions.into_iter();
        let mut out = Vec::with_capacity(planned.len());
        for p in planned {
            let mut applied = p.applied;
            if p.write.is_some() {
                applied.revision = revisions.next().ok_or_else(|| ServiceError::Internal("store returned fewer revisions than writes".into()))?;
            }
            if let Some((verb, mut detail)) = p.audit {
                detail["revision"] = json!(applied.revision);
                detail["via"] = json!("apply");
                let kind = format!("{}.{verb}", applied.kind.as_str());
                self.audit.record(self.now(), &kind, caller.bot.name.as_str(), &applied.name, "ok", detail).await;
            }
            out.push(applied);
        }
        Ok(out)
    }

    /// Checks a role, bot or workload identity and plans its write.
    async fn plan<T: Resource>(&self, caller: &Caller, r: T, staged: &Staged<'_>) -> Result<Planned, ServiceError> {
        let name = r.name().as_str();
        let current = self.current(T::KIND, name).await?;
        let verb = if current.is_some() { "update" } else { "create" };
        self.authorize(caller, T::KIND, verb, name).await?;
        let expected = expected_revision(T::KIND, name, r.revision(), current.as_ref())?;
        r.validate(self.now())?;
        self.check_references(&r, staged).await?;
        let mut doc = to_doc(&r)?;
        if let Some(cur) = current {
            if same_contents::<T>(&cur, &doc)? {
                return Ok(unchanged(T::KIND, name, cur.revision, String::new()));
            }
        }
        self.check_escalation(caller, verb, &r, staged.roles).await?;
        doc.revision = expected;
        let (write, outcome) = if expected == 0 {
            (BatchWrite::Create { kind: T::KIND, doc, token: None }, Outcome::Created)
        } else {
            (BatchWrite::Update { kind: T::KIND, doc, token: None }, Outcome::Updated)
        };
        Ok(Planned {
            applied: Applied { kind: T::KIND, name: name.to_string(), outcome, revision: expected + 1, method: String::new(), secret: None },
            write: Some(write),
            audit: Some((verb, json!({}))),
        })
    }

    /// Checks a join token (as `create_join_token` / `update_join_token`
    /// would) and plans its write; a created token with a secret gets one.
    async fn plan_token(&self, caller: &Caller, t: JoinToken, staged: &Staged<'_>) -> Result<Planned, ServiceError> {
        let name = t.name.as_str();
        let current = self.current(Kind::JoinToken, name).await?;
        let verb = if current.is_some() { "update" } else { "create" };
        self.authorize(caller, Kind::JoinToken, verb, name).await?;
        let expected = expected_revision(Kind::JoinToken, name, t.revision, current.as_ref())?;
        self.check_token_settings(&t)?;
        let bot = self.token_bot(&t, staged).await?;
        let stored: Option<JoinToken> = current.as_ref().map(|d| from_doc(d.clone())).transpose()?;
        let mut doc = to_doc(&t)?;
        if let Some(cur) = &stored {
            check_token_immutable(cur, &t)?;
            if to_doc(cur)?.spec == doc.spec {
                return Ok(unchanged(Kind::JoinToken, name, cur.revision, t.method.clone()));
            }
        }
        self.check_token_bindable(caller, verb, &t, &bot, staged).await?;
        doc.revision = expected;
        let applied = |outcome, secret| Applied {
            kind: Kind::JoinToken,
            name: name.to_string(),
            outcome,
            revision: expected + 1,
            method: t.method.clone(),
            secret,
        };
        match stored {
            None => {
                let secret = if t.has_secret() { Some(TokenSecret::new(super::resources::new_secret()?)) } else { None };
                let hash = secret.as_ref().map(TokenSecret::hash);
                Ok(Planned {
                    write: Some(BatchWrite::Create { kind: Kind::JoinToken, doc, token: Some((token_state(&t), hash)) }),
                    applied: applied(Outcome::Created, secret),
                    audit: Some(("create", token_create_detail(&t))),
                })
            }
            Some(cur) => {
                let update = token_update(&cur, &t);
                let detail = token_update_detail(&update, json!({"max_uses": t.max_uses, "expires_at": t.expires_at}));
                Ok(Planned {
                    write: Some(BatchWrite::Update { kind: Kind::JoinToken, doc, token: Some(update) }),
                    applied: applied(Outcome::Updated, None),
                    audit: Some(("update", detail)),
                })
            }
        }
    }

}

/// The revision to write at: 0 to create; the stored one to update. A
/// document that names a revision must still be at it.
fn expected_revision(kind: Kind, name: &str, wanted: i64, current: Option<&Doc>) -> Result<i64, ServiceError> {
    match current {
        Some(c) if wanted != 0 && wanted != c.revision => {
            Err(StoreError::Conflict { kind: kind.as_str(), name: name.to_string(), expected: wanted, current: c.revision }.into())
        }
        Some(c) => Ok(c.revision),
        None if wanted != 0 => Err(StoreError::NotFound { kind: kind.as_str(), name: name.to_string() }.into()),
        None => Ok(0),
    }
}

/// Whether `doc` holds what is stored in `stored`, compared as the type reads
/// both (fields a stored document lacks count at their defaults).
fn same_contents<T: Resource>(stored: &Doc, doc: &Doc) -> Result<bool, ServiceError> {
    let stored: T = from_doc(stored.clone())?;
    Ok(to_doc(&stored)?.spec == doc.spec)
}

fn unchanged(kind: Kind, name: &str, revision: i64, method: String) -> Planned {
    Planned {
        applied: Applied { kind, name: name.to_string(), outcome: Outcome::Unchanged, revision, method, secret: None },
        write: None,
        audit: None,
    }
}

/// Names the document an error is about: `documents[i]`, its kind and name.
fn at(i: usize, kind: &str, name: &str, e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Invalid { field, message } => {
            ServiceError::Invalid { field: format!("documents[{i}].{field}"), message: format!("{kind} {name:?}: {message}") }
        }
        ServiceError::Denied(Denied(m)) => ServiceError::Denied(Denied(format!("documents[{i}] ({kind} {name:?}): {m}"))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(revision: i64) -> Doc {
        Doc { name: "r".into(), revision, spec: json!({"name": "r"}) }
    }

    #[test]
    fn a_document_updates_at_the_revision_read_and_a_named_revision_must_still_be_current() {
        assert_eq!(expected_revision(Kind::Role, "r", 0, None).unwrap(), 0);
        assert_eq!(expected_revision(Kind::Role, "r", 0, Some(&stored(4))).unwrap(), 4);
        assert_eq!(expected_revision(Kind::Role, "r", 4, Some(&stored(4))).unwrap(), 4);
        let stale = expected_revision(Kind::Role, "r", 3, Some(&stored(4))).unwrap_err();
        assert!(matches!(stale, ServiceError::Store(StoreError::Conflict { expected: 3, current: 4, .. })), "{stale}");
        let gone = expected_revision(Kind::Role, "r", 2, None).unwrap_err();
        assert!(matches!(gone, ServiceError::Store(StoreError::NotFound { .. })), "{gone}");
    }

    #[test]
    fn errors_name_the_document_index_kind_name_and_field() {
        let e = at(2, "join_token", "deploy", ServiceError::invalid("method", "unknown join method \"githb\""));
        assert_eq!(e.to_string(), "invalid documents[2].method: join_token \"deploy\": unknown join method \"githb\"");
        let d = at(1, "role", "wide", ServiceError::Denied(Denied("needs escalate".into())));
        assert!(d.to_string().contains("documents[1] (role \"wide\"): needs escalate"), "{d}");
    }
}
