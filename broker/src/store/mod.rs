//! Persistence: the `Store` trait and its backends.
//!
//! The trait speaks in typed records, never SQL, so a PostgreSQL backend can sit
//! beside SQLite without changing callers. Every mutation is atomic; revisions
//! give optimistic concurrency; single-use join tokens are consumed by one
//! conditional statement that must change exactly one row.

pub mod postgres;
mod pg_pool;
pub mod pg_tls;
pub mod pg_url;
pub mod migrate;
pub mod sqlite;
pub mod sqlite_backup;
#[cfg(any(test, feature = "test-support"))]
pub mod pg_harness;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod timed;

use async_trait::async_trait;

/// Resource kinds stored as documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Role.
    Role,
    /// Bot.
    Bot,
    /// Join token.
    JoinToken,
    /// Workload identity.
    WorkloadIdentity,
}

impl Kind {
    /// Store/audit name of the kind (also the RBAC resource name).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Role => "role",
            Kind::Bot => "bot",
            Kind::JoinToken => "join_token",
            Kind::WorkloadIdentity => "workload_identity",
        }
    }
}

/// Store failures. Messages are safe to show to callers (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such resource.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// Create of an existing name.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// The caller's revision is stale.
    #[error("{kind} {name:?} was changed concurrently: expected revision {expected}, current is {current}; re-read and retry")]
    Conflict {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Revision the caller sent.
        expected: i64,
        /// Revision in the store.
        current: i64,
    },
    /// A join token cannot be redeemed.
    #[error("join token rejected: {0}")]
    TokenRejected(TokenRejection),
    /// A bot identity failed its generation check.
    #[error("bot identity rejected: {0}")]
    IdentityRejected(String),
    /// The backend failed.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Why a join token (its secret, or a join by name) was refused. The broker
/// audits these; callers of `Join` only ever see one generic denial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// No token has this secret (or name).
    #[error("unknown token")]
    Unknown,
    /// The token expired.
    #[error("token expired")]
    Expired,
    /// All uses are spent.
    #[error("token already used")]
    UsedUp,
    /// The secret belongs to a token of another join method: only `token`
    /// secrets are redeemed as such; a bound-keypair secret only registers a key.
    #[error("the secret is of join token {name:?}, whose method is {method:?}, not \"token\"")]
    WrongMethod {
        /// Token name.
        name: String,
        /// The token's method.
        method: String,
    },
    /// A bound-keypair registration secret was already spent (or is not this token's).
    #[error("registration secret refused (unknown, or already used to bind a key)")]
    RegistrationSpent,
}

/// A stored document with its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Name.
    pub name: String,
    /// Revision (starts at 1).
    pub revision: i64,
    /// JSON document.
    pub spec: serde_json::Value,
}

/// A join token's redeemable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// Token name.
    pub name: String,
    /// Bot it joins as.
    pub bot: String,
    /// Method.
    pub method: String,
    /// Uses so far.
    pub uses: i64,
    /// Uses allowed.
    pub max_uses: i64,
    /// Expiry.
    pub expires_at: i64,
}

/// An update of a join token's redeemable state, applied in the document's
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUpdate {
    /// New expiry and use limit (name, bot and method do not change).
    pub state: TokenState,
    /// Drop the bound-keypair binding (its pre-registered key changed): the
    /// next join binds the new key at sequence 0, the old key is refused.
    pub unbind_keypair: bool,
}

/// One joined agent of a bot: its generation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotInstance {
    /// Random id.
    pub id: String,
    /// Bot name.
    pub bot: String,
    /// Committed generation.
    pub generation: i64,
    /// Issued but not yet presented generation (== generation when none pending).
    pub pending: i64,
    /// Locked after a stale generation was presented.
    pub locked: bool,
    /// Join method and attributes (JSON object of strings).
    pub join_attributes: serde_json::Value,
    /// Created.
    pub created_at: i64,
}

/// A CA key as persisted (private key sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaKeyRecord {
    /// Key id (JWT kid for JWT keys).
    pub id: String,
    /// Purpose: x509-svid, internal, jwt-svid.
    pub purpose: String,
    /// Algorithm name.
    pub alg: String,
    /// Sealed PKCS#8; empty for a key in a PKCS#11 token.
    pub sealed_key: Vec<u8>,
    /// Where a token key lives (JSON `ca::backend::KeyRef`, never key
    /// material); empty for a sealed key.
    pub key_ref: String,
    /// CA certificate, for X.509 CAs.
    pub cert_der: Option<Vec<u8>>,
    /// Created.
    pub created_at: i64,
    /// Expiry.
    pub not_after: i64,
    /// active, next, retired.
    pub state: String,
}

/// A public key bound to a `bound_keypair` join token and its join sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeypairBinding {
    /// Join token name.
    pub token: String,
    /// Bound public key (base64 SPKI DER).
    pub public_key: String,
    /// Joins done with the key; the agent presents the value it last saw.
    pub sequence: i64,
    /// Locked after a stale sequence was presented (a copied key).
    pub locked: bool,
    /// Attempt id of the join that set `sequence` (empty: none or an old
    /// agent). The same attempt presenting `sequence - 1` again is a retry of
    /// a join whose answer was lost, not a copy.
    pub last_attempt: String,
}

/// An audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Sequence id (set by the store).
    pub id: i64,
    /// Unix seconds.
    pub time: i64,
    /// e.g. `role.create`, `join`, `svid.x509`, `denied`.
    pub kind: String,
    /// Who: bot name or `anonymous`.
    pub actor: String,
    /// What it concerned.
    pub resource: String,
    /// `ok`, `denied`, `error`.
    pub outcome: String,
    /// Structured details (never secrets).
    pub detail: serde_json::Value,
}

/// A document as stored: its spec is the JSON text, for callers that
/// deserialize it straight into their own type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDoc {
    /// Name.
    pub name: String,
    /// Revision.
    pub revision: i64,
    /// Spec, JSON text.
    pub spec: String,
}

/// What authenticating a bot-identity caller reads, in one snapshot.
#[derive(Debug, Clone)]
pub struct CallerRecords {
    /// The bot instance of the certificate.
    pub instance: BotInstance,
    /// The bot document; `None` if the bot no longer exists.
    pub bot: Option<RawDoc>,
    /// The role documents the bot's `roles` name that exist, in the bot's order.
    pub roles: Vec<RawDoc>,
}

/// Persistence used by the broker.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a document; fails if it exists. Returns revision 1.
    /// For `Kind::JoinToken`, `token` carries the redeemable state and the
    /// secret's hash (`None`: the method has no secret).
    async fn create(&self, kind: Kind, doc: &Doc, token: Option<(&TokenState, Option<&str>)>) -> Result<i64, StoreError>;
    /// Replaces a document if `doc.revision` matches. Returns the new revision.
    async fn update(&self, kind: Kind, doc: &Doc, token: Option<&TokenUpdate>) -> Result<i64, StoreError>;
    /// Reads a document.
    async fn get(&self, kind: Kind, name: &str) -> Result<Doc, StoreError>;
    /// Lists documents by name, after `after`, at most `limit`.
    async fn list(&self, kind: Kind, after: &str, limit: usize) -> Result<Vec<Doc>, StoreError>;
    /// Deletes a document (revision 0 = any). Deleting a bot deletes its instances
    /// and join tokens.
    async fn delete(&self, kind: Kind, name: &str, revision: i64) -> Result<(), StoreError>;

    /// Token state by name.
    async fn token_state(&self, name: &str) -> Result<TokenState, StoreError>;
    /// Redeems one use of the `token`-method token with this secret hash,
    /// atomically. The secret of a token of another method is refused
    /// ([`TokenRejection::WrongMethod`]) and nothing is used.
    async fn consume_token(&self, secret_hash: &str, now: i64) -> Result<TokenState, StoreError>;
    /// Counts one join with the named token, atomically (one conditional
    /// statement): refused once `uses` reached `max_uses` or the token expired.
    async fn use_token(&self, name: &str, now: i64) -> Result<TokenState, StoreError>;

    /// Records a new bot instance at generation 1.
    async fn create_instance(&self, instance: &BotInstance) -> Result<(), StoreError>;
    /// Reads an instance.
    async fn instance(&self, id: &str) -> Result<BotInstance, StoreError>;
    /// Reads, in one snapshot, instance `id`, bot `bot` and the roles that bot
    /// names: every authenticated request needs all three. Fails like
    /// [`Store::instance`] when the instance does not exist.
    async fn caller_records(&self, id: &str, bot: &str) -> Result<CallerRecords, StoreError>;
    /// Renewal. `presented`/`presented_key` are the generation and key hash of the
    /// caller's certificate, `new_key` the key hash of the certificate about to be
    /// issued. The committed generation, or the pending one with its key, is
    /// accepted; anything else locks the instance. Returns the generation to issue.
    async fn advance_generation(&self, id: &str, presented: i64, presented_key: &str, new_key: &str) -> Result<i64, StoreError>;

    /// All CA keys.
    async fn list_ca_keys(&self) -> Result<Vec<CaKeyRecord>, StoreError>;
    /// Adds a CA key.
    async fn insert_ca_key(&self, key: &CaKeyRecord) -> Result<(), StoreError>;

    /// The bound-keypair join state of a join token, if a key is bound.
    async fn keypair_binding(&self, token: &str) -> Result<Option<KeypairBinding>, StoreError>;
    /// Binds `public_key` to `token` at sequence 0 unless a key is already bound
    /// (then nothing changes). With `registration_secret_hash`, the token's
    /// registration secret is spent in the same transaction (one-time: refused
    /// with [`TokenRejection::RegistrationSpent`] if it does not match or was
    /// spent, and nothing is bound). Deleting the join token deletes the binding.
    async fn bind_keypair(&self, token: &str, public_key: &str, registration_secret_hash: Option<&str>, now: i64) -> Result<(), StoreError>;
    /// One bound-keypair join: if `public_key` is bound to `token`, the binding is
    /// unlocked and at sequence `presented`, counts a use of the token (refused
    /// when used up, nothing advanced), advances the sequence, records
    /// `attempt`, and returns the new sequence. `presented == sequence - 1`
    /// with the recorded non-empty `attempt` is a retry of the last join (its
    /// answer was lost): the same sequence is returned, nothing changes. Any
    /// other sequence means two agents hold the key: the binding is locked
    /// (committed) and the join refused.
    async fn advance_keypair(&self, token: &str, public_key: &str, presented: i64, attempt: &str, now: i64) -> Result<i64, StoreError>;

    /// A number that grows after every committed change to resources, bot
    /// instances, tokens or keys (not audit events). Read it *before* reading
    /// records: if it is unchanged later, nothing read since has changed
    /// (`service::caller_cache` relies on this).
    fn change_counter(&self) -> u64;

    /// Appends audit events in one transaction (all or none); returns their
    /// ids, in order. The audit log groups the events of concurrent requests
    /// into one call (group commit, see `crate::audit`).
    async fn append_audit_batch(&self, events: &[AuditRecord]) -> Result<Vec<i64>, StoreError>;
    /// Appends one audit event; returns its id.
    async fn append_audit(&self, event: &AuditRecord) -> Result<i64, StoreError> {
        let ids = self.append_audit_batch(std::slice::from_ref(event)).await?;
        ids.first().copied().ok_or_else(|| StoreError::Backend("audit insert returned no id".into()))
    }
    /// Audit events with id > `after_id`, oldest first.
    async fn list_audit(&self, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// Retention: deletes audit events with `time < older_than`, then all but
    /// the newest `keep` (0: no count limit); returns how many were deleted.
    async fn prune_audit(&self, keep: u64, older_than: i64) -> Result<u64, StoreError>;

    /// A cheap round-trip proving the store serves requests (`/readyz`).
    /// The default reads the CA keys; a backend whose reads succeed while its
    /// writes cannot (SQLite under another process's write lock) overrides it.
    async fn ping(&self) -> Result<(), StoreError> {
        self.list_ca_keys().await.map(|_| ())
    }
}
