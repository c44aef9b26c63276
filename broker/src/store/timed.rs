//! The one place store calls are timed: a [`Store`] that forwards every call
//! to the backend and records its latency (and backend failures) per
//! operation in [`Metrics`]. Backend-neutral: it wraps SQLite or any other.

use super::*;
use crate::metrics::{Metrics, StoreOp};
use std::sync::Arc;
use std::time::Instant;

/// A backend with its calls measured.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    /// Wraps `inner`; measurements go to `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

/// Times one forwarded call.
macro_rules! timed {
    ($self:ident, $op:expr, $call:expr) => {{
        let start = Instant::now();
        let r = $call.await;
        $self.metrics.store($op, start.elapsed(), matches!(r, Err(StoreError::Backend(_) | StoreError::Corrupt { .. })));
        r
    }};
}

#[async_trait]
impl Store for TimedStore {
    async fn create(&self, kind: Kind, doc: &Doc, token: Option<(&TokenState, Option<&str>)>) -> Result<i64, StoreError> {
        timed!(self, StoreOp::Create, self.inner.create(kind, doc, token))
    }
    async fn update(&self, kind: Kind, doc: &Doc, token: Option<&TokenUpdate>) -> Result<i64, StoreError> {
        timed!(self, StoreOp::Update, self.inner.update(kind, doc, token))
    }
    async fn write_batch(&self, writes: &[BatchWrite]) -> Result<Vec<i64>, StoreError> {
        timed!(self, StoreOp::WriteBatch, self.inner.write_batch(writes))
    }
    async fn get(&self, kind: Kind, name: &str) -> Result<Doc, StoreError> {
        timed!(self, StoreOp::Get, self.inner.get(kind, name))
    }
    async fn list(&self, kind: Kind, after: &str, limit: usize) -> Result<Vec<Doc>, StoreError> {
        timed!(self, StoreOp::List, self.inner.list(kind, after, limit))
    }
    async fn delete(&self, kind: Kind, name: &str, revision: i64) -> Result<(), StoreError> {
        timed!(self, StoreOp::Delete, self.inner.delete(kind, name, revision))
    }
    async fn token_state(&self, name: &str) -> Result<TokenState, StoreError> {
        timed!(self, StoreOp::TokenState, self.inner.token_state(name))
    }
    async fn consume_token(&self, secret_hash: &str, now: i64) -> Result<TokenState, StoreError> {
        timed!(self, StoreOp::ConsumeToken, self.inner.consume_token(secret_hash, now))
    }
    async fn use_token(&self, name: &str, now: i64) -> Result<TokenState, StoreError> {
        timed!(self, StoreOp::UseToken, self.inner.use_token(name, now))
    }
    async fn create_instance(&self, instance: &BotInstance) -> Result<(), StoreError> {
        timed!(self, StoreOp::CreateInstance, self.inner.create_instance(instance))
    }
    async fn instance(&self, id: &str) -> Result<BotInstance, StoreError> {
        timed!(self, StoreOp::Instance, self.inner.instance(id))
    }
    async fn caller_records(&self, id: &str, bot: &str) -> Result<CallerRecords, StoreError> {
        timed!(self, StoreOp::CallerRecords, self.inner.caller_records(id, bot))
    }
    async fn advance_generation(&self, id: &str, presented: i64, presented_key: &str, new_key: &str) -> Result<i64, StoreError> {
        timed!(self, StoreOp::AdvanceGeneration, self.inner.advance_generation(id, presented, presented_key, new_key))
    }
    async fn touch_instance(&self, id: &str, now: i64, identity_expires_at: i64) -> Result<(), StoreError> {
        timed!(self, StoreOp::TouchInstance, self.inner.touch_instance(id, now, identity_expires_at))
    }
    async fn record_heartbeat(&self, id: &str, heartbeat: &InstanceHeartbeat, now: i64, min_interval: i64) -> Result<bool, StoreError> {
        timed!(self, StoreOp::RecordHeartbeat, self.inner.record_heartbeat(id, heartbeat, now, min_interval))
    }
    async fn list_instances(&self, bot: &str, seen_since: i64, after: &str, limit: usize) -> Result<Vec<InstanceRecord>, StoreError> {
        timed!(self, StoreOp::ListInstances, self.inner.list_instances(bot, seen_since, after, limit))
    }
    async fn instance_record(&self, id: &str) -> Result<InstanceRecord, StoreError> {
        timed!(self, StoreOp::InstanceRecord, self.inner.instance_record(id))
    }
    async fn delete_expired_instances(&self, seen_before: i64, now: i64, limit: usize) -> Result<usize, StoreError> {
        timed!(self, StoreOp::DeleteExpiredInstances, self.inner.delete_expired_instances(seen_before, now, limit))
    }
    async fn issuance_events(&self, key: IssuanceKey<'_>, expires_after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        timed!(self, StoreOp::IssuanceEvents, self.inner.issuance_events(key, expires_after, limit))
    }
    async fn insert_revocations(&self, revocations: &[Revocation], now: i64) -> Result<usize, StoreError> {
        timed!(self, StoreOp::InsertRevocations, self.inner.insert_revocations(revocations, now))
    }
    async fn list_revocations(&self, after_seq: i64, not_after_after: i64, limit: usize) -> Result<Vec<Revocation>, StoreError> {
        timed!(self, StoreOp::ListRevocations, self.inner.list_revocations(after_seq, not_after_after, limit))
    }
    async fn list_ca_keys(&self) -> Result<Vec<CaKeyRecord>, StoreError> {
        timed!(self, StoreOp::ListCaKeys, self.inner.list_ca_keys())
    }
    async fn insert_ca_key(&self, key: &CaKeyRecord) -> Result<(), StoreError> {
        timed!(self, StoreOp::InsertCaKey, self.inner.insert_ca_key(key))
    }
    async fn change_ca_key(&self, change: &CaKeyChange, now: i64) -> Result<(), StoreError> {
        timed!(self, StoreOp::ChangeCaKey, self.inner.change_ca_key(change, now))
    }
    async fn create_bound_instance(&self, instance: &BotInstance, key: &str, rebind: bool) -> Result<(), StoreError> {
        timed!(self, StoreOp::CreateInstance, self.inner.create_bound_instance(instance, key, rebind))
    }
    async fn instance_binding(&self, key: &str) -> Result<Option<InstanceBinding>, StoreError> {
        self.inner.instance_binding(key).await
    }
    async fn list_instance_bindings(&self, bot: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<InstanceBinding>, StoreError> {
        self.inner.list_instance_bindings(bot, prefix, after, limit).await
    }
    async fn delete_instance_binding(&self, key: &str) -> Result<InstanceBinding, StoreError> {
        self.inner.delete_instance_binding(key).await
    }
    async fn keypair_binding(&self, token: &str) -> Result<Option<KeypairBinding>, StoreError> {
        timed!(self, StoreOp::KeypairBinding, self.inner.keypair_binding(token))
    }
    async fn bind_keypair(&self, token: &str, public_key: &str, registration_secret_hash: Option<&str>, now: i64) -> Result<(), StoreError> {
        timed!(self, StoreOp::BindKeypair, self.inner.bind_keypair(token, public_key, registration_secret_hash, now))
    }
    async fn advance_keypair(&self, token: &str, public_key: &str, presented: i64, attempt: &str, now: i64) -> Result<i64, StoreError> {
        timed!(self, StoreOp::AdvanceKeypair, self.inner.advance_keypair(token, public_key, presented, attempt, now))
    }
    fn change_counter(&self) -> u64 {
        self.inner.change_counter()
    }

    // The read and conditional-write primitives the operations above are
    // made of (`store::decisions`): each operation is timed as a whole, with
    // its retries, under its own name; these are forwarded as they are.
    async fn token_record(&self, key: TokenKey<'_>) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token_record(key).await
    }
    async fn count_token_use(&self, expected: &TokenRecord) -> Result<i64, StoreError> {
        self.inner.count_token_use(expected).await
    }
    async fn generation_state(&self, id: &str) -> Result<Option<GenerationState>, StoreError> {
        self.inner.generation_state(id).await
    }
    async fn swap_generation(&self, expected: &GenerationState, next: &GenerationState) -> Result<(), StoreError> {
        self.inner.swap_generation(expected, next).await
    }
    async fn insert_keypair_binding(&self, binding: &KeypairBinding, spend_secret: Option<(&str, &str)>, now: i64) -> Result<(), StoreError> {
        self.inner.insert_keypair_binding(binding, spend_secret, now).await
    }
    async fn swap_keypair(&self, expected: &KeypairBinding, next: &KeypairBinding, count_use: Option<&TokenRecord>, now: i64) -> Result<(), StoreError> {
        self.inner.swap_keypair(expected, next, count_use, now).await
    }
    async fn insert_challenge(&self, challenge: &ChallengeRecord, limits: &ChallengeLimits, now: i64) -> Result<(), StoreError> {
        timed!(self, StoreOp::InsertChallenge, self.inner.insert_challenge(challenge, limits, now))
    }
    async fn take_challenge(&self, id: &str, now: i64) -> Result<Option<ChallengeRecord>, StoreError> {
        timed!(self, StoreOp::TakeChallenge, self.inner.take_challenge(id, now))
    }
    async fn append_audit_batch(&self, events: &[AuditRecord]) -> Result<Vec<i64>, StoreError> {
        timed!(self, StoreOp::AppendAudit, self.inner.append_audit_batch(events))
    }
    async fn append_audit(&self, event: &AuditRecord) -> Result<i64, StoreError> {
        timed!(self, StoreOp::AppendAudit, self.inner.append_audit(event))
    }
    async fn list_audit(&self, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        timed!(self, StoreOp::ListAudit, self.inner.list_audit(after_id, limit))
    }
    async fn prune_audit(&self, keep: u64, older_than: i64) -> Result<u64, StoreError> {
        timed!(self, StoreOp::PruneAudit, self.inner.prune_audit(keep, older_than))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        timed!(self, StoreOp::Ping, self.inner.ping())
    }
}
