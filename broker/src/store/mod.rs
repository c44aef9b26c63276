//! Persistence: the `Store` trait and its backends.
//!
//! The trait speaks in typed records, never SQL, so a PostgreSQL backend can sit
//! beside SQLite without changing callers. Every mutation is atomic; revisions
//! give optimistic concurrency.
//!
//! Backends hold no policy. Whether a token may be used, a renewal is a copy,
//! or a bound key's join sequence is stale is decided by pure functions in
//! `sigil_core::domain::{token_uses, generation, keypair_sequence}`; a backend
//! reads records and performs the conditional write a decision asks for
//! (compare-and-set), reporting [`StoreError::Changed`] when the record moved
//! in between. [`decisions`] drives read, decide, write and retry once for
//! every backend (docs/reference/store.md).

pub mod postgres;
pub(crate) mod ca_keys_sql;
mod pg_challenges;
mod pg_pool;
pub mod pg_tls;
pub mod pg_url;
pub mod migrate;
pub mod sqlite;
mod sqlite_challenges;
pub mod sqlite_backup;
#[cfg(any(test, feature = "test-support"))]
pub mod pg_harness;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod decisions;
pub mod timed;

pub use sigil_core::domain::generation::GenerationState;
pub use sigil_core::domain::keypair_sequence::KeypairBinding;
pub use sigil_core::domain::token_uses::{TokenRecord, TokenState};

use async_trait::async_trait;
pub use sigil_core::domain::challenge::Limits as ChallengeLimits;

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
    /// Lock (see `sigil_core::domain::lock`).
    Lock,
}

impl Kind {
    /// Store/audit name of the kind (also the RBAC resource name).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Role => "role",
            Kind::Bot => "bot",
            Kind::JoinToken => "join_token",
            Kind::WorkloadIdentity => "workload_identity",
            Kind::Lock => "lock",
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
    /// A conditional write (compare-and-set) found the record changed since
    /// it was read: another request wrote first. Read again and decide again.
    #[error("{kind} {name:?} changed since it was read; read it again and retry")]
    Changed {
        /// Kind of record.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// A stored record cannot be read back (its JSON does not parse).
    #[error("stored {kind} {name:?} is corrupt: {reason}")]
    Corrupt {
        /// Kind of record.
        kind: &'static str,
        /// Its name or id.
        name: String,
        /// What does not parse.
        reason: String,
    },
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

/// How a join token is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKey<'a> {
    /// By name.
    Name(&'a str),
    /// By the hash of its secret.
    SecretHash(&'a str),
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

/// One write of [`Store::write_batch`]: a create or an update, each with
/// the same meaning as [`Store::create`] and [`Store::update`].
#[derive(Debug, Clone, PartialEq)]
pub enum BatchWrite {
    /// Create `doc` (its revision is ignored); fails if it exists. For a
    /// join token, its redeemable state and secret hash (`None`: no secret).
    Create {
        /// Kind.
        kind: Kind,
        /// The document.
        doc: Doc,
        /// Join token state and secret hash.
        token: Option<(TokenState, Option<String>)>,
    },
    /// Replace `doc` if its stored revision is `doc.revision`.
    Update {
        /// Kind.
        kind: Kind,
        /// The document at the revision the caller read.
        doc: Doc,
        /// Join token state update.
        token: Option<TokenUpdate>,
    },
}

/// Most writes one [`Store::write_batch`] call takes (the service caps
/// requests lower; this bounds the transaction for any caller).
pub const MAX_BATCH_WRITES: usize = 1024;

/// Refuses a batch of more than [`MAX_BATCH_WRITES`] writes (every backend
/// checks it before opening its transaction).
pub(crate) fn check_batch_size(writes: &[BatchWrite]) -> Result<(), StoreError> {
    if writes.len() > MAX_BATCH_WRITES {
        return Err(StoreError::Backend(format!("{} writes in one batch; at most {MAX_BATCH_WRITES}", writes.len())));
    }
    Ok(())
}

/// An outside identity a join proved (e.g. an EC2 instance id, `join/ec2.rs`)
/// bound to the one bot instance that joined with it: a second join
/// presenting it is refused unless its join token allows a rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceBinding {
    /// What is bound, namespaced by method (`ec2:ACCOUNT:INSTANCE_ID`).
    pub key: String,
    /// The bot instance it is bound to.
    pub instance: String,
    /// That instance's bot.
    pub bot: String,
    /// When it was bound (or last rebound), Unix seconds.
    pub bound_at: i64,
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
    /// Latest NotAfter of the identities issued to it (join, renewals):
    /// until then a holder of one may still present it, so the expiry sweep
    /// keeps the row ([`Store::delete_expired_instances`]).
    pub identity_expires_at: i64,
}

/// What an agent last reported about itself (its `Heartbeat`), bounded by
/// the service before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct InstanceHeartbeat {
    /// Host name of the agent's machine.
    pub host_name: String,
    /// Operating system and architecture, e.g. `linux/x86_64`.
    pub os: String,
    /// The agent's version.
    pub agent_version: String,
    /// Names of the outputs the agent writes.
    pub outputs: Vec<String>,
    /// When the agent last obtained its identity (join or renewal), Unix seconds.
    pub last_renewal: i64,
}

/// A bot instance as listed: its record, when the broker last heard from it
/// (join, renewal or heartbeat) and its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The instance.
    pub instance: BotInstance,
    /// Last join, renewal or heartbeat, Unix seconds.
    pub last_seen: i64,
    /// When the last heartbeat was stored (0: none yet).
    pub heartbeat_at: i64,
    /// The last heartbeat, if any.
    pub heartbeat: Option<InstanceHeartbeat>,
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
    /// `prepared`, `active`, `previous` or `retired`
    /// (`sigil_core::domain::ca_rotation::KeyState`).
    pub state: String,
    /// When it became active (0: never).
    pub activated_at: i64,
    /// When it stopped signing (0: still active, or never was).
    pub deactivated_at: i64,
}

/// A CA key rotation step as the store carries it out: one conditional
/// write (compare-and-set on the rows' states), all or nothing, that bumps
/// the change version. A row not in the expected state is
/// [`StoreError::Changed`] and nothing changes. (`prepare` is an
/// [`Store::insert_ca_key`] of a `prepared` row: at most one per purpose.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaKeyChange {
    /// Prepared key `prepared` becomes active (`activated_at = now`) and
    /// active key `active` becomes previous (`deactivated_at = now`), in one
    /// transaction.
    Activate {
        /// The prepared key.
        prepared: String,
        /// The active key.
        active: String,
    },
    /// Previous key `id` becomes retired.
    Retire {
        /// The previous key.
        id: String,
    },
    /// Prepared key `id` becomes retired (`deactivated_at = now`) without
    /// ever having been active.
    Rollback {
        /// The prepared key.
        id: String,
    },
}

/// A pending join challenge as stored (`join::challenge` says what `state`
/// may hold: never a secret the caller could answer with as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// Random id the agent sends back.
    pub id: String,
    /// Join method.
    pub method: String,
    /// Join token name.
    pub token: String,
    /// Who asked (`PeerKey` text), for the per-peer limit.
    pub peer: String,
    /// Method-private state.
    pub state: Vec<u8>,
    /// Expiry (Unix seconds): taken at or after it, the challenge is gone.
    pub expires_at: i64,
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

/// A revoked certificate as stored: it belongs on the CRL of `ca_key` until
/// `not_after` (the certificate's own expiry) has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Store sequence (set by the store, ascending in commit order: a reader
    /// that has seen sequence `n` has seen every revocation before it).
    pub seq: i64,
    /// Certificate serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// Id of the CA key that signed it (`ca_keys.id`).
    pub ca_key: String,
    /// The certificate's NotAfter, Unix seconds.
    pub not_after: i64,
    /// When it was revoked, Unix seconds.
    pub revoked_at: i64,
    /// Why (RFC 5280 reason name, e.g. `keyCompromise`).
    pub reason: String,
    /// Who revoked it (bot name).
    pub actor: String,
}

/// Which detail field of an issuance audit event to match
/// ([`Store::issuance_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuanceKey<'a> {
    /// `detail.serial`: one certificate.
    Serial(&'a str),
    /// `detail.instance`: everything issued to one bot instance.
    Instance(&'a str),
}

/// Audit event kinds that record an issued certificate with its `serial`,
/// `ca_key`, `instance` and `expires_at` in the detail: X.509 (serial in
/// lowercase hex) and SSH ([`SSH_ISSUANCE_KIND`], serial in decimal).
pub const ISSUANCE_KINDS: [&str; 5] = ["svid.x509", "join", "identity.renew", "tls.certificate", SSH_ISSUANCE_KIND];
/// The issuance kind of SSH certificates (serial: a decimal u64).
pub const SSH_ISSUANCE_KIND: &str = "ssh.issue";

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

    /// Applies `writes` in order in ONE transaction: every write lands or
    /// none does. The first failing write's error is returned (as
    /// [`Store::create`] / [`Store::update`] would report it) and nothing
    /// is written. Returns the new revision of each write, in order. More
    /// than [`MAX_BATCH_WRITES`] writes are refused ([`StoreError::Backend`]).
    async fn write_batch(&self, writes: &[BatchWrite]) -> Result<Vec<i64>, StoreError>;

    /// Token state by name.
    async fn token_state(&self, name: &str) -> Result<TokenState, StoreError>;
    /// The token with this name or secret hash, with its stored secret hash.
    async fn token_record(&self, key: TokenKey<'_>) -> Result<Option<TokenRecord>, StoreError>;
    /// Counts one use of the token `expected` names, in one conditional
    /// write: only while the stored row still has `expected`'s secret hash,
    /// `max_uses` and `expires_at`, and fewer than `max_uses` uses. Returns
    /// the new count; [`StoreError::Changed`] when nothing was counted.
    async fn count_token_use(&self, expected: &TokenRecord) -> Result<i64, StoreError>;

    /// Redeems one use of the `token`-method token with this secret hash,
    /// atomically. The secret of a token of another method is refused
    /// ([`TokenRejection::WrongMethod`]) and nothing is used.
    /// Decided by the domain ([`decisions::consume_token`]): backends do not override it.
    async fn consume_token(&self, secret_hash: &str, now: i64) -> Result<TokenState, StoreError> {
        decisions::consume_token(self, secret_hash, now).await
    }
    /// Counts one join with the named token, atomically: refused once `uses`
    /// reached `max_uses` or the token expired.
    /// Decided by the domain ([`decisions::use_token`]): backends do not override it.
    async fn use_token(&self, name: &str, now: i64) -> Result<TokenState, StoreError> {
        decisions::use_token(self, name, now).await
    }

    /// Records a new bot instance at generation 1.
    async fn create_instance(&self, instance: &BotInstance) -> Result<(), StoreError>;
    /// Reads an instance.
    async fn instance(&self, id: &str) -> Result<BotInstance, StoreError>;
    /// Reads, in one snapshot, instance `id`, bot `bot` and the roles that bot
    /// names: every authenticated request needs all three. Fails like
    /// [`Store::instance`] when the instance does not exist.
    async fn caller_records(&self, id: &str, bot: &str) -> Result<CallerRecords, StoreError>;
    /// The generation state of instance `id`.
    async fn generation_state(&self, id: &str) -> Result<Option<GenerationState>, StoreError>;
    /// Stores `next` for instance `expected.id` only if its stored state still
    /// equals `expected` (every field): else [`StoreError::Changed`].
    async fn swap_generation(&self, expected: &GenerationState, next: &GenerationState) -> Result<(), StoreError>;
    /// Renewal. `presented`/`presented_key` are the generation and key hash of the
    /// caller's certificate, `new_key` the key hash of the certificate about to be
    /// issued. The committed generation, or the pending one with its key, is
    /// accepted; anything else locks the instance. Returns the generation to issue.
    /// Decided by the domain ([`decisions::advance_generation`]): backends do not override it.
    async fn advance_generation(&self, id: &str, presented: i64, presented_key: &str, new_key: &str) -> Result<i64, StoreError> {
        decisions::advance_generation(self, id, presented, presented_key, new_key).await
    }

    /// Marks instance `id` as seen at `now` (a renewal that issued an identity
    /// valid until `identity_expires_at`): `last_seen` and
    /// `identity_expires_at` only move forward. Not a change callers depend on
    /// (no change-counter bump needed). Fails like [`Store::instance`] when
    /// the instance does not exist: it never recreates a deleted one.
    async fn touch_instance(&self, id: &str, now: i64, identity_expires_at: i64) -> Result<(), StoreError>;
    /// Stores the heartbeat of instance `id` and marks it seen, unless its
    /// previous heartbeat is more recent than `now - min_interval`: then
    /// nothing changes and `Ok(false)` is returned (rate limit, enforced in
    /// the store so every replica shares it).
    async fn record_heartbeat(&self, id: &str, heartbeat: &InstanceHeartbeat, now: i64, min_interval: i64) -> Result<bool, StoreError>;
    /// Instances seen at or after `seen_since` (of bot `bot`, or of every bot
    /// when empty), by id, after `after`, at most `limit`.
    async fn list_instances(&self, bot: &str, seen_since: i64, after: &str, limit: usize) -> Result<Vec<InstanceRecord>, StoreError>;
    /// One instance with its activity; `NotFound` when it does not exist.
    async fn instance_record(&self, id: &str) -> Result<InstanceRecord, StoreError>;
    /// Deletes at most `limit` instances that are expired for good: not seen
    /// since before `seen_before` and holding no identity valid at `now`
    /// (`identity_expires_at <= now`). Returns how many it deleted; moves
    /// [`Store::change_counter`] only when it deleted some. Safe to run on
    /// every replica at once.
    async fn delete_expired_instances(&self, seen_before: i64, now: i64, limit: usize) -> Result<usize, StoreError>;

    /// All CA keys.
    async fn list_ca_keys(&self) -> Result<Vec<CaKeyRecord>, StoreError>;
    /// Adds a CA key. A second `active`, `prepared` or `previous` key of a
    /// purpose is refused ([`StoreError::AlreadyExists`]).
    async fn insert_ca_key(&self, key: &CaKeyRecord) -> Result<(), StoreError>;
    /// One rotation step on stored keys ([`CaKeyChange`]): of concurrent
    /// calls with one expectation, exactly one lands; the others get
    /// [`StoreError::Changed`].
    async fn change_ca_key(&self, change: &CaKeyChange, now: i64) -> Result<(), StoreError>;

    /// Records `instance` (as [`Store::create_instance`]) and binds `key` to
    /// it, in one transaction. A key already bound is refused with
    /// [`StoreError::AlreadyExists`] (kind `instance_binding`) and nothing is
    /// written, unless `rebind`: then the binding moves to the new instance
    /// (the old instance is left as it is). Of concurrent calls binding one
    /// key without `rebind`, exactly one lands. Deleting the bot deletes its
    /// bindings; an instance's expiry does not (the outside identity stays
    /// spent).
    async fn create_bound_instance(&self, instance: &BotInstance, key: &str, rebind: bool) -> Result<(), StoreError>;
    /// The binding of `key`, if any.
    async fn instance_binding(&self, key: &str) -> Result<Option<InstanceBinding>, StoreError>;
    /// Bindings of `bot` (empty: every bot) whose key starts with `prefix`
    /// (empty: every key; `ec2:` for one method), ordered by key, keys after
    /// `after` only, at most `limit`.
    async fn list_instance_bindings(&self, bot: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<InstanceBinding>, StoreError>;
    /// Deletes the binding of `key` (the bound outside identity may join
    /// again) and returns what it was; [`StoreError::NotFound`] (kind
    /// `instance_binding`) when there is none. Its bot instance is left as
    /// it is.
    async fn delete_instance_binding(&self, key: &str) -> Result<InstanceBinding, StoreError>;

    /// The bound-keypair join state of a join token, if a key is bound.
    async fn keypair_binding(&self, token: &str) -> Result<Option<KeypairBinding>, StoreError>;
    /// Inserts `binding` unless its token has one ([`StoreError::Changed`]).
    /// With `spend_secret = (expected, marker)`, the token's secret hash is
    /// replaced by `marker` in the same transaction, only if it still is
    /// `expected` (else nothing is written: [`StoreError::Changed`]).
    /// Deleting the join token deletes the binding.
    async fn insert_keypair_binding(&self, binding: &KeypairBinding, spend_secret: Option<(&str, &str)>, now: i64) -> Result<(), StoreError>;
    /// Stores `next` for binding `expected.token` only if the stored binding
    /// still equals `expected` (every field); with `count_use`, also counts a
    /// use of the token as [`Store::count_token_use`] does, in the same
    /// transaction (both or neither). Else [`StoreError::Changed`].
    async fn swap_keypair(&self, expected: &KeypairBinding, next: &KeypairBinding, count_use: Option<&TokenRecord>, now: i64) -> Result<(), StoreError>;
    /// Binds `public_key` to `token` at sequence 0 unless a key is already bound
    /// (then nothing changes). With `registration_secret_hash`, the token's
    /// registration secret is spent in the same transaction (one-time: refused
    /// with [`TokenRejection::RegistrationSpent`] if it does not match or was
    /// spent, and nothing is bound).
    /// Decided by the domain ([`decisions::bind_keypair`]): backends do not override it.
    async fn bind_keypair(&self, token: &str, public_key: &str, registration_secret_hash: Option<&str>, now: i64) -> Result<(), StoreError> {
        decisions::bind_keypair(self, token, public_key, registration_secret_hash, now).await
    }
    /// One bound-keypair join: if `public_key` is bound to `token`, the binding is
    /// unlocked and at sequence `presented`, counts a use of the token (refused
    /// when used up, nothing advanced), advances the sequence, records
    /// `attempt`, and returns the new sequence. `presented == sequence - 1`
    /// with the recorded non-empty `attempt` is a retry of the last join (its
    /// answer was lost): the same sequence is returned, nothing changes. Any
    /// other sequence means two agents hold the key: the binding is locked
    /// (committed) and the join refused.
    /// Decided by the domain ([`decisions::advance_keypair`]): backends do not override it.
    async fn advance_keypair(&self, token: &str, public_key: &str, presented: i64, attempt: &str, now: i64) -> Result<i64, StoreError> {
        decisions::advance_keypair(self, token, public_key, presented, attempt, now).await
    }

    /// Stores a pending join challenge: sweeps expired ones, inserts, then
    /// evicts as `sigil_core::domain::challenge` decides, in one transaction
    /// that replicas sharing the store run one at a time. Never refused for
    /// being full. Does not move [`Store::change_counter`]: no cache holds
    /// challenges.
    async fn insert_challenge(&self, challenge: &ChallengeRecord, limits: &ChallengeLimits, now: i64) -> Result<(), StoreError>;
    /// Takes challenge `id` out (deletes it and returns it, in one statement):
    /// of replicas answering the same id at once, exactly one gets it. `None`
    /// if unknown, already taken, or expired at `now`. Does not move
    /// [`Store::change_counter`].
    async fn take_challenge(&self, id: &str, now: i64) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Successful issuance audit events ([`ISSUANCE_KINDS`]) whose detail
    /// matches `key` and whose `expires_at` is after `expires_after`, newest
    /// first, at most `limit`. How a serial is traced to its CA key and
    /// instance: the event is written anyway, so issuance pays nothing extra.
    /// A scan of the audit table (no index on detail fields): for revocation,
    /// a rare administrative call.
    async fn issuance_events(&self, key: IssuanceKey<'_>, expires_after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// Records revocations not already recorded (same `ca_key` and `serial`),
    /// in one transaction that replicas run one at a time (so sequences are
    /// assigned in commit order), and deletes rows whose certificate expired
    /// before `now - 86400`. Moves [`Store::change_counter`] when anything
    /// was inserted. Returns how many were new.
    async fn insert_revocations(&self, revocations: &[Revocation], now: i64) -> Result<usize, StoreError>;
    /// Revocations with `seq > after_seq` whose certificate expires after
    /// `not_after_after`, by sequence, at most `limit`. A read: does not move
    /// [`Store::change_counter`].
    async fn list_revocations(&self, after_seq: i64, not_after_after: i64, limit: usize) -> Result<Vec<Revocation>, StoreError>;

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
