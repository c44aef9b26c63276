//! CA rotation carried out: read the keys, let the domain decide
//! (`sigil_core::domain::ca_rotation`), make one conditional store write,
//! reload. Every replica follows through [`watch`]: the store's change counter
//! moves on any replica's write; the keys are re-read and the authorities
//! replaced only when the keys' ids or states changed.
//!
//! Mistakes this module exists to prevent:
//! - two replicas taking one step twice (each step is a compare-and-set on the
//!   rows' states or a unique index: the second is `Changed`, a no-op);
//! - a failed reload leaving a replica without authorities (the old ones stay
//!   in use and the failure is logged; the next change retries);
//! - a key in an HSM left behind after it can never sign again (rollback and
//!   retire destroy the token object).

use super::{create_key, Authority, AuthorityCell, CaError, CaSettings};
use crate::store::{CaKeyChange, CaKeyRecord, Store, StoreError};
use sigil_core::domain::ca_rotation::{self as dom, Bounds, KeyState, KeyView, Phase, Plan, Purpose, PurposeKeys, Schedule, Step};
use sigil_core::keys::KeyAlg;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often [`watch`] compares the store's change counter (the store itself
/// polls PostgreSQL every 500 ms, `store::postgres::CHANGE_POLL`).
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Seconds a replica may go on signing with a deactivated key after another
/// replica activated its successor: one store change poll (0.5 s), one watch
/// tick (0.25 s) and a reload, with a wide margin for a loaded machine.
pub const REPLICA_LAG_SECS: i64 = 5;

/// A rotation step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// The step is not allowed now (wrong phase, too early, unknown name).
    #[error(transparent)]
    Refused(#[from] dom::RotationError),
    /// Another request (here or on another replica) changed the keys first.
    #[error("the {0} keys changed while this step ran (another replica or request rotated them); read the status again")]
    Concurrent(Purpose),
    /// Key generation, certificate, loading.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RotateError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// How long credentials of each purpose live at most, and how long verifiers
/// keep what they fetched: the inputs of `retire_safe_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Longest X.509-SVID the broker issues (hard ceiling).
    pub x509_svid_max_ttl: i64,
    /// Longest JWT-SVID the broker issues (hard ceiling).
    pub jwt_svid_max_ttl: i64,
    /// Longest bot identity (or admin identity) the internal CA signs.
    pub identity_max_ttl: i64,
    /// The bundle refresh hint agents follow.
    pub bundle_refresh_hint: i64,
    /// How long a JWT verifier may keep a JWKS it fetched.
    pub jwks_cache_allowance: i64,
    /// Longest SSH certificate (`ssh.max_ttl_seconds`).
    pub ssh_max_ttl: i64,
    /// Longest database / Kubernetes certificate (`tls_certificates.max_ttl_seconds`).
    pub tls_max_ttl: i64,
}

impl Lifetimes {
    /// The bounds of `purpose`.
    pub fn bounds(&self, purpose: Purpose) -> Bounds {
        let (ttl, allowance) = match purpose {
            Purpose::X509Svid => (self.x509_svid_max_ttl, self.bundle_refresh_hint),
            Purpose::JwtSvid => (self.jwt_svid_max_ttl, self.jwks_cache_allowance),
            // Clients of the broker fetch tls-ca.pem / ca_pem with each identity.
            Purpose::Internal => (self.identity_max_ttl, self.bundle_refresh_hint),
            // Agents re-read the SSH CA keys with every certificate they renew.
            Purpose::SshUser | Purpose::SshHost => (self.ssh_max_ttl, self.bundle_refresh_hint),
            // Agents re-read ca.pem with every certificate they renew.
            Purpose::Database | Purpose::Kubernetes => (self.tls_max_ttl, self.bundle_refresh_hint),
        };
        Bounds { max_credential_ttl: ttl, verifier_allowance: allowance, replica_lag: REPLICA_LAG_SECS }
    }
}

/// The automatic schedule (`ca_rotation` in the server config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoRotation {
    /// What is due when.
    pub schedule: Schedule,
    /// How often the schedule is checked.
    pub check_every: Duration,
}

/// What rotation needs besides the store: where keys are made, how, and
/// the bounds.
#[derive(Debug)]
pub struct Rotation {
    /// Key backends (generate, open, destroy).
    pub key_store: super::backend::KeyStore,
    /// Trust domain (CA certificate names).
    pub trust_domain: sigil_core::domain::TrustDomain,
    /// Algorithms and CA lifetime.
    pub settings: CaSettings,
    /// Bounds of `retire_safe_at`.
    pub lifetimes: Lifetimes,
    /// The automatic schedule, if on.
    pub auto: Option<AutoRotation>,
}

/// One key as `GetCaStatus` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The stored row (its `sealed_key` is never shown).
    pub record: CaKeyRecord,
    /// Earliest safe retire time of a previous key (0: not applicable).
    pub retire_safe_at: i64,
    /// `sealed` or `pkcs11`.
    pub backend: &'static str,
    /// SHA-256 of the certificate (hex), or the JWK thumbprint.
    pub fingerprint: String,
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Every key, in creation order.
    pub keys: Vec<KeyStatus>,
    /// Phase per purpose.
    pub phases: BTreeMap<Purpose, Phase>,
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The plan carried out (`Prepare` with the new key's id).
    pub plan: Plan,
    /// The new key's id, for `prepare`.
    pub new_key: Option<String>,
}

fn view(r: &CaKeyRecord) -> Option<KeyView> {
    Some(KeyView {
        id: r.id.clone(),
        state: KeyState::parse(&r.state)?,
        created_at: r.created_at,
        not_after: r.not_after,
        deactivated_at: r.deactivated_at,
    })
}

/// The keys of `purpose` among `records`.
pub fn purpose_keys(records: &[CaKeyRecord], purpose: Purpose) -> PurposeKeys {
    PurposeKeys::of(records.iter().filter(|r| r.purpose == purpose.as_str()).filter_map(view))
}

fn fingerprint(r: &CaKeyRecord) -> String {
    use base64::Engine as _;
    if let (Some(Purpose::SshUser | Purpose::SshHost), Ok(sha)) = (Purpose::parse(&r.purpose).ok(), hex::decode(&r.id)) {
        // An SSH key's id is the SHA-256 of its blob: shown as ssh-keygen -l does.
        return format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha));
    }
    match &r.cert_der {
        Some(der) => hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)),
        // A JWT key's id is its RFC 7638 thumbprint.
        None => r.id.clone(),
    }
}

impl Rotation {
    fn alg(&self, purpose: Purpose) -> KeyAlg {
        match purpose {
            Purpose::X509Svid => self.settings.x509_alg,
            Purpose::JwtSvid => self.settings.jwt_alg,
            Purpose::Internal | Purpose::Database | Purpose::Kubernetes => KeyAlg::EcP256,
            Purpose::SshUser | Purpose::SshHost => self.settings.ssh_alg,
        }
    }

    /// The keys, their retire bounds and each purpose's phase.
    pub async fn status(&self, store: &Arc<dyn Store>) -> Result<Status, RotateError> {
        let records = store.list_ca_keys().await?;
        let mut phases = BTreeMap::new();
        for p in Purpose::ALL {
            phases.insert(p, purpose_keys(&records, p).phase());
        }
        let keys = records
            .into_iter()
            .map(|mut r| {
                let safe = match (Purpose::parse(&r.purpose), view(&r)) {
                    (Ok(p), Some(v)) if v.state == KeyState::Previous => dom::retire_safe_at(&v, &self.lifetimes.bounds(p)).unwrap_or(0),
                    _ => 0,
                };
                r.sealed_key = Vec::new();
                KeyStatus {
                    backend: if r.key_ref.is_empty() { "sealed" } else { "pkcs11" },
                    fingerprint: fingerprint(&r),
                    retire_safe_at: safe,
                    record: r,
                }
            })
            .collect();
        Ok(Status { keys, phases })
    }

    /// Takes `step` for `purpose` at `now` if the domain allows it, then
    /// reloads `cell` from the store.
    pub async fn step(
        &self,
        store: &Arc<dyn Store>,
        cell: &AuthorityCell,
        purpose: Purpose,
        step: Step,
        force: bool,
        now: i64,
    ) -> Result<Done, RotateError> {
        let records = store.list_ca_keys().await?;
        let keys = purpose_keys(&records, purpose);
        let plan = dom::plan(purpose, &keys, step, &self.lifetimes.bounds(purpose), now, force)?;
        let concurrent = |e: StoreError| match e {
            StoreError::Changed { .. } | StoreError::AlreadyExists { .. } => RotateError::Concurrent(purpose),
            other => RotateError::Store(other),
        };
        let mut new_key = None;
        match &plan {
            Plan::Prepare => {
                let (rec, key) = create_key(
                    &self.key_store,
                    &self.trust_domain,
                    purpose.as_str(),
                    self.alg(purpose),
                    self.settings.ca_ttl,
                    now,
                    KeyState::Prepared,
                )?;
                if let Err(e) = store.insert_ca_key(&rec).await {
                    self.key_store.discard(&key);
                    return Err(concurrent(e));
                }
                new_key = Some(rec.id);
            }
            Plan::Activate { prepared, active } => {
                let change = CaKeyChange::Activate { prepared: prepared.clone(), active: active.clone() };
                store.change_ca_key(&change, now).await.map_err(concurrent)?;
            }
            Plan::Retire { id } | Plan::Rollback { id } => {
                let change = match &plan {
                    Plan::Retire { .. } => CaKeyChange::Retire { id: id.clone() },
                    _ => CaKeyChange::Rollback { id: id.clone() },
                };
                store.change_ca_key(&change, now).await.map_err(concurrent)?;
                // Only the replica whose write landed destroys the token object.
                if let Some(r) = records.iter().find(|r| &r.id == id) {
                    self.key_store.destroy_stored(r);
                }
            }
        }
        if let Err(e) = reload(store, cell, &self.key_store).await {
            // The step is stored; the watcher retries the reload.
            tracing::error!(error = %e, "CA keys changed but the authorities could not be reloaded; the previous ones stay in use");
        }
        Ok(Done { plan, new_key })
    }

    /// The schedule's due steps at `now`, one per purpose at most.
    pub fn due(&self, records: &[CaKeyRecord], now: i64) -> Vec<(Purpose, Step)> {
        let Some(auto) = &self.auto else { return Vec::new() };
        Purpose::ALL
            .into_iter()
            .filter_map(|p| dom::scheduled_step(&purpose_keys(records, p), &auto.schedule, &self.lifetimes.bounds(p), now).map(|s| (p, s)))
            .collect()
    }
}

/// Re-reads the keys and replaces the authorities if the keys' ids or
/// states changed. Returns whether it replaced them.
pub async fn reload(store: &Arc<dyn Store>, cell: &AuthorityCell, key_store: &super::backend::KeyStore) -> Result<bool, CaError> {
    let records = store.list_ca_keys().await?;
    if !cell.current().differs_from(&records) {
        return Ok(false);
    }
    let a = Authority::from_records(&records, key_store)?;
    tracing::info!(
        x509_sha256 = %hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &a.x509.cert_der)),
        jwt_kid = %a.jwt.kid,
        published_x509 = a.x509_roots.len(),
        published_internal = a.internal_roots.len(),
        published_jwt = a.jwt_public.len(),
        published_database = a.database.roots.len(),
        published_kubernetes = a.kubernetes.roots.len(),
        "CA keys changed: authorities reloaded"
    );
    cell.replace(a);
    Ok(true)
}

/// Follows the store: whenever its change counter moves (a write here or,
/// within the store's poll, on another replica), reloads the authorities if
/// the CA keys changed. A failed reload keeps the authorities in use, logs,
/// and is retried at the next tick.
pub async fn watch(store: Arc<dyn Store>, cell: Arc<AuthorityCell>, rotation: Arc<Rotation>) {
    let mut seen = store.change_counter();
    // After a failed reload: when to try again without a new change.
    let mut retry_at: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        // Read before the keys: a change after this read moves it again.
        let counter = store.change_counter();
        let retry_due = retry_at.is_some_and(|t| std::time::Instant::now() >= t);
        if counter == seen && !retry_due {
            continue;
        }
        match reload(&store, &cell, &rotation.key_store).await {
            Ok(_) => {
                seen = counter;
                retry_at = None;
            }
            Err(e) => {
                if retry_at.is_none() {
                    tracing::error!(error = %e, "cannot reload the CA keys; the authorities in use stay until a reload succeeds");
                }
                // A key this replica cannot open (e.g. a token without it) is
                // not retried at every tick: every RETRY_FAILED_RELOAD.
                seen = counter;
                retry_at = Some(std::time::Instant::now() + RETRY_FAILED_RELOAD);
            }
        }
    }
}

/// How often a failed reload is retried when nothing else changes.
pub const RETRY_FAILED_RELOAD: Duration = Duration::from_secs(5);

/// The audit detail of a step: the phase, force, and the key ids it moved.
pub fn audit_detail(step: Step, force: bool, done: &Done) -> serde_json::Value {
    use serde_json::json;
    let keys = match &done.plan {
        Plan::Prepare => json!({"prepared": done.new_key}),
        Plan::Activate { prepared, active } => json!({"activated": prepared, "previous": active}),
        Plan::Retire { id } => json!({"retired": id}),
        Plan::Rollback { id } => json!({"rolled_back": id}),
    };
    json!({"phase": step.as_str(), "force": force, "keys": keys})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::backend::KeyStore;
    use crate::ca::seal::SealKey;
    use crate::store::sqlite::SqliteStore;

    fn keys() -> KeyStore {
        KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap())
    }

    fn rotation(key_store: KeyStore) -> Rotation {
        let lifetimes =
            Lifetimes { x509_svid_max_ttl: 60, jwt_svid_max_ttl: 60, identity_max_ttl: 60, bundle_refresh_hint: 10, jwks_cache_allowance: 10, ssh_max_ttl: 60, tls_max_ttl: 60 };
        Rotation { key_store, trust_domain: "example.org".parse().unwrap(), settings: CaSettings::default(), lifetimes, auto: None }
    }

    async fn setup() -> (Arc<dyn Store>, AuthorityCell, Rotation) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let r = rotation(keys());
        let a = Authority::load_or_create(&store, &r.key_store, &r.trust_domain, &r.settings, 1_000).await.unwrap();
        (store, AuthorityCell::new(a), r)
    }

    #[tokio::test]
    async fn published_keys_are_prepared_active_and_previous_never_retired() {
        let (store, cell, r) = setup().await;
        let first = cell.current().x509.cert_der.clone();
        r.step(&store, &cell, Purpose::X509Svid, Step::Prepare, false, 1_100).await.unwrap();
        let a = cell.current();
        assert_eq!(a.x509.cert_der, first, "the prepared key does not sign");
        assert_eq!(a.x509_roots.len(), 2);
        r.step(&store, &cell, Purpose::X509Svid, Step::Activate, false, 1_200).await.unwrap();
        let a = cell.current();
        assert_ne!(a.x509.cert_der, first, "the activated key signs");
        assert!(a.x509_roots.contains(&first), "the previous key stays published");
        let early = r.step(&store, &cell, Purpose::X509Svid, Step::Retire, false, 1_200 + 5 + 60 + 10 - 1).await;
        assert!(matches!(early, Err(RotateError::Refused(dom::RotationError::TooEarly { .. }))), "{early:?}");
        r.step(&store, &cell, Purpose::X509Svid, Step::Retire, false, 1_200 + 5 + 60 + 10).await.unwrap();
        assert_eq!(cell.current().x509_roots, vec![cell.current().x509.cert_der.clone()], "the retired key is unpublished");
        assert_eq!(cell.current().internal_roots.len(), 1, "other purposes did not move");
    }

    #[tokio::test]
    async fn a_reload_that_fails_keeps_the_authorities_in_use() {
        let (store, cell, r) = setup().await;
        // A prepared key this broker cannot open (sealed with another seal key).
        let other = rotation(keys());
        other.step(&store, &AuthorityCell::new(Authority::from_records(&store.list_ca_keys().await.unwrap(), &r.key_store).unwrap()), Purpose::JwtSvid, Step::Prepare, false, 1_100).await.unwrap_or_else(|e| panic!("{e}"));
        let before = cell.current();
        let err = reload(&store, &cell, &r.key_store).await.unwrap_err();
        assert!(err.to_string().contains("wrong seal key"), "{err}");
        assert!(Arc::ptr_eq(&before, &cell.current()), "the old authorities stay in use");
        assert_eq!(cell.current().jwt_public.len(), 1);
    }

    #[tokio::test]
    async fn a_reload_without_a_key_change_keeps_the_same_authorities() {
        let (store, cell, r) = setup().await;
        let before = cell.current();
        store.append_audit(&crate::store::AuditRecord { id: 0, time: 1, kind: "k".into(), actor: "a".into(), resource: "r".into(), outcome: "ok".into(), detail: serde_json::json!({}) }).await.unwrap();
        assert!(!reload(&store, &cell, &r.key_store).await.unwrap());
        assert!(Arc::ptr_eq(&before, &cell.current()));
    }
}
