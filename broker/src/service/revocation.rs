//! Revocation of X.509 certificates (X.509-SVIDs and bot identities) and the
//! CRLs that publish it.
//!
//! Mistakes this module is built to prevent:
//! - **A revocation one replica never learns**: every replica reads the
//!   `revocations` table by sequence whenever the store's change counter
//!   moved (another replica's write reaches it within one change poll); the
//!   store draws sequences in commit order, so reading "after the last
//!   sequence seen" misses nothing.
//! - **A revoked bot identity that still authenticates**: the slow path of
//!   `authenticate` checks the certificate's serial against the snapshot read
//!   at (or after) the change counter its caller-cache entry is tagged with,
//!   and every revocation moves that counter, retiring every cached caller.
//! - **A CRL that outlives its data**: a served CRL is rebuilt when the
//!   snapshot changed and once half its validity has passed, so it is never
//!   served with less than half its validity left.
//! - **Unbounded work for an outsider**: the CRL endpoint is public; it
//!   answers from a per-replica cache, rebuilds at most once per change, and a
//!   CRL holds at most [`MAX_UNEXPIRED`] entries (refused at revocation).
//! - **Revoking the wrong certificate**: a serial is revoked only when this
//!   broker's audit log shows it issued that serial, which also tells the CA
//!   key whose CRL lists it and its expiry (entries drop off after it).
//! - **An SSH certificate that cannot be revoked**: SSH certificates
//!   (`ssh.issue`, decimal u64 serials) are revocation rows too, stored as
//!   `ssh:<decimal>` under their CA key (never equal to a hex X.509 serial),
//!   and published as one OpenSSH KRL for every published SSH CA key
//!   ([`Broker::ssh_krl`], `GET /ssh/revoked_keys.krl`), rebuilt only when the
//!   rows it lists change.

use super::{Broker, ServiceError};
use crate::ca::x509::RevokedEntry;
use crate::store::{AuditRecord, IssuanceKey, Revocation, Store, StoreError, SSH_ISSUANCE_KIND};
use serde_json::json;
use sigil_core::domain::Caller;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use sigil_core::ssh::krl::Krl;

/// The kind name in role rules (verb `create`).
pub const KIND: &str = "revocation";
/// Most serials one request names.
pub const MAX_SERIALS: usize = 1000;
/// Most certificates one `bot_instance` revocation covers.
pub const MAX_PER_INSTANCE: usize = 10_000;
/// Most unexpired revocations (all CRLs together): about 40 bytes each on a CRL.
pub const MAX_UNEXPIRED: usize = 100_000;
/// Longest serial accepted: 20 octets (RFC 5280 4.1.2.2).
const MAX_SERIAL_HEX: usize = 40;
/// How an SSH certificate's serial is written in a revocation row and in
/// answers: `ssh:` and the decimal serial (as `ssh-keygen -L` shows it).
pub const SSH_SERIAL_PREFIX: &str = "ssh:";
/// Issuance events read per serial looked up (X.509 and SSH events may share
/// the text of a serial; the kind tells them apart).
const EVENTS_PER_SERIAL: usize = 8;
/// Rows read per store call when catching up.
const PAGE: usize = 5000;

/// RFC 5280 reason names accepted, with their codes. `certificateHold` and
/// `removeFromCRL` are not: a revocation is permanent.
const REASONS: &[(&str, rcgen::RevocationReason)] = &[
    ("unspecified", rcgen::RevocationReason::Unspecified),
    ("keyCompromise", rcgen::RevocationReason::KeyCompromise),
    ("cACompromise", rcgen::RevocationReason::CaCompromise),
    ("affiliationChanged", rcgen::RevocationReason::AffiliationChanged),
    ("superseded", rcgen::RevocationReason::Superseded),
    ("cessationOfOperation", rcgen::RevocationReason::CessationOfOperation),
    ("privilegeWithdrawn", rcgen::RevocationReason::PrivilegeWithdrawn),
];

/// The canonical reason name for `r` (case, `-` and `_` ignored; empty:
/// `unspecified`), or `None` if it is not one of [`REASONS`].
pub fn parse_reason(r: &str) -> Option<&'static str> {
    if r.is_empty() {
        return Some("unspecified");
    }
    let norm = |s: &str| s.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_lowercase();
    let want = norm(r);
    REASONS.iter().find(|(n, _)| norm(n) == want).map(|(n, _)| *n)
}

fn reason_code(name: &str) -> Option<rcgen::RevocationReason> {
    // RFC 5280 5.3.1: the reason code SHOULD be absent rather than `unspecified`.
    REASONS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).filter(|c| *c != rcgen::RevocationReason::Unspecified)
}

/// A serial as the CA writes it (lowercase hex, whole octets), from what an
/// operator pastes (`openssl x509 -serial` output, colons, upper case).
pub fn normalize_serial(s: &str) -> Result<String, String> {
    let s = s.trim();
    let s = s.strip_prefix("serial=").unwrap_or(s);
    let mut hex: String = s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a hexadecimal serial number"));
    }
    if hex.len() % 2 == 1 {
        hex.insert(0, '0');
    }
    if hex.len() > MAX_SERIAL_HEX {
        return Err(format!("serial numbers are at most 20 octets ({MAX_SERIAL_HEX} hex digits)"));
    }
    Ok(hex)
}

/// The forms a serial given to `revoke` may name: an X.509 serial (hex) and,
/// when it is a plain decimal number or `ssh:<decimal>`, an SSH serial.
#[derive(Debug, PartialEq, Eq)]
struct WantedSerial {
    x509: Option<String>,
    ssh: Option<String>,
}

fn parse_serial(s: &str) -> Result<WantedSerial, String> {
    let t = s.trim();
    let ssh_serial = |d: &str| d.parse::<u64>().ok().filter(|n| *n > 0).map(|n| n.to_string());
    if let Some(d) = t.strip_prefix(SSH_SERIAL_PREFIX) {
        let ssh = ssh_serial(d).ok_or_else(|| format!("{t:?}: an SSH serial is a decimal number from 1 to {}", u64::MAX))?;
        return Ok(WantedSerial { x509: None, ssh: Some(ssh) });
    }
    let ssh = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) { ssh_serial(t) } else { None };
    match normalize_serial(t) {
        Ok(hex) => Ok(WantedSerial { x509: Some(hex), ssh }),
        Err(_) if ssh.is_some() => Ok(WantedSerial { x509: None, ssh }),
        Err(e) => Err(e),
    }
}

/// What a replica knows of the revocations: read at one change counter.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The store's change counter read before the rows were.
    counter: u64,
    /// Highest sequence read.
    last_seq: i64,
    /// Unexpired revocations, by sequence.
    entries: Arc<Vec<Revocation>>,
    /// Their serials.
    serials: Arc<HashSet<String>>,
    /// Earliest expiry among `entries` (then the snapshot must be re-read).
    min_not_after: i64,
    loaded: bool,
}

impl Snapshot {
    /// Whether a certificate with this serial is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.serials.contains(serial)
    }

    /// Unexpired revocations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No unexpired revocations.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entries_for(&self, key_id: &str) -> Vec<RevokedEntry> {
        self.entries
            .iter()
            .filter(|r| r.ca_key == key_id)
            .map(|r| RevokedEntry { serial: r.serial.clone(), revoked_at: r.revoked_at, reason: reason_code(&r.reason) })
            .collect()
    }
}

/// A signed CRL as served.
#[derive(Debug)]
pub struct Crl {
    /// DER.
    pub der: Vec<u8>,
    /// thisUpdate.
    pub this_update: i64,
    /// nextUpdate.
    pub next_update: i64,
    entries: Vec<RevokedEntry>,
    /// The issuing certificate (a rotation may reload the authorities).
    issuer_der: Vec<u8>,
    /// The snapshot rows it was last checked against: while they are the
    /// same allocation, nothing is recomputed for a request.
    checked_against: Arc<Vec<Revocation>>,
}

/// The OpenSSH KRL as served: every published SSH CA key with the serials
/// revoked under it.
#[derive(Debug)]
pub struct SshKrl {
    /// The binary KRL (`RevokedKeys`, `ssh-keygen -Q -f`).
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes` (the agent sends it back to be answered only on a change).
    pub sha256: [u8; 32],
    /// Revoked serials it lists.
    pub serials: usize,
    krl: Krl,
    /// The CA key ids it covers.
    keys: Vec<String>,
    /// The snapshot rows it was last checked against.
    checked_against: Arc<Vec<Revocation>>,
}

/// A replica's revocation state: the snapshot and the CRLs built from it.
#[derive(Debug, Default)]
pub struct Revocations {
    current: RwLock<Arc<Snapshot>>,
    refresh: tokio::sync::Mutex<()>,
    crls: tokio::sync::Mutex<HashMap<String, Arc<Crl>>>,
    krl: tokio::sync::Mutex<Option<Arc<SshKrl>>>,
    last_crl_number: AtomicU64,
}

impl Revocations {
    fn current(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The revocations as of now: re-read (only rows after the last sequence
    /// seen) when the store's change counter moved or an entry expired. One
    /// reader at a time; the others wait for its result.
    pub async fn snapshot(&self, store: &dyn Store, now: i64) -> Result<Arc<Snapshot>, StoreError> {
        let fresh = |s: &Snapshot, counter: u64| s.loaded && s.counter >= counter && (s.entries.is_empty() || s.min_not_after > now);
        let counter = store.change_counter();
        let cur = self.current();
        if fresh(&cur, counter) {
            return Ok(cur);
        }
        let _one = self.refresh.lock().await;
        let cur = self.current();
        if fresh(&cur, counter) {
            return Ok(cur);
        }
        // Read the counter before the rows (a later change moves it again).
        let counter = store.change_counter();
        let mut new_rows = Vec::new();
        let mut last_seq = cur.last_seq;
        loop {
            let page = store.list_revocations(last_seq, now, PAGE).await?;
            let n = page.len();
            if let Some(r) = page.last() {
                last_seq = r.seq;
            }
            new_rows.extend(page);
            if n < PAGE {
                break;
            }
        }
        let expired = cur.entries.iter().any(|r| r.not_after <= now);
        let (entries, serials) = if new_rows.is_empty() && !expired {
            (cur.entries.clone(), cur.serials.clone())
        } else {
            let entries: Vec<Revocation> = cur.entries.iter().filter(|r| r.not_after > now).cloned().chain(new_rows).collect();
            let serials = entries.iter().map(|r| r.serial.clone()).collect();
            (Arc::new(entries), Arc::new(serials))
        };
        let min_not_after = entries.iter().map(|r| r.not_after).min().unwrap_or(i64::MAX);
        let next = Arc::new(Snapshot { counter, last_seq, entries, serials, min_not_after, loaded: true });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        Ok(next)
    }

    /// A CRL number greater than every one this replica issued before:
    /// milliseconds since the epoch, so replicas with synchronized clocks
    /// also agree on the order.
    fn next_crl_number(&self, now: i64) -> u64 {
        let ms = (now.max(0) as u64).saturating_mul(1000);
        let mut out = ms;
        // Same second as the last one issued: count on from it.
        let _ = self.last_crl_number.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |prev| {
            out = if prev >= ms { prev + 1 } else { ms };
            Some(out)
        });
        out
    }
}

impl Broker {
    /// The current CRL of CA key `key_id`, or `None` when no served CA has
    /// that key. Built from this replica's revocation snapshot and kept until
    /// the snapshot changes what it lists or half its validity has passed.
    pub async fn crl(&self, key_id: &str) -> Result<Option<Arc<Crl>>, ServiceError> {
        let authority = self.authority.current();
        let Some((_, ca)) = authority.crl_issuers().into_iter().find(|(_, c)| c.key_id == key_id) else {
            return Ok(None);
        };
        let now = self.now();
        let snap = self.revocations.snapshot(self.store.as_ref(), now).await?;
        let mut crls = self.revocations.crls.lock().await;
        let validity = self.settings.crl_validity;
        // Public endpoint: an unchanged snapshot costs a pointer comparison,
        // a changed one a scan, and only a changed list a signature.
        let entries = match crls.get(key_id) {
            Some(c) if now < c.this_update + validity / 2 && c.issuer_der == ca.cert_der => {
                if Arc::ptr_eq(&c.checked_against, &snap.entries) {
                    return Ok(Some(c.clone()));
                }
                let entries = snap.entries_for(key_id);
                if c.entries == entries {
                    let same = Arc::new(Crl { der: c.der.clone(), entries, issuer_der: c.issuer_der.clone(), checked_against: snap.entries.clone(), ..**c });
                    crls.insert(key_id.to_string(), same.clone());
                    return Ok(Some(same));
                }
                entries
            }
            _ => snap.entries_for(key_id),
        };
        let this_update = now - crate::ca::lifetime::BACKDATE_SECS;
        let next_update = now + validity;
        let number = self.revocations.next_crl_number(now);
        let der = ca.sign_crl(&entries, this_update, next_update, number).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let crl = Arc::new(Crl { der, this_update, next_update, entries, issuer_der: ca.cert_der.clone(), checked_against: snap.entries.clone() });
        crls.insert(key_id.to_string(), crl.clone());
        Ok(Some(crl))
    }

    /// The OpenSSH KRL of every published SSH CA key (user and host). Built
    /// from this replica's revocation snapshot; kept while the snapshot and
    /// the published keys are unchanged, and while a changed snapshot lists
    /// the same SSH serials (then no new version is made).
    pub async fn ssh_krl(&self) -> Result<Arc<SshKrl>, ServiceError> {
        let authority = self.authority.current();
        let keys: Vec<(&String, &sigil_core::ssh::PublicKey)> = [&authority.ssh_user, &authority.ssh_host]
            .into_iter()
            .flat_map(|ca| ca.published_ids.iter().zip(ca.published.iter()))
            .collect();
        let ids: Vec<String> = keys.iter().map(|(id, _)| (*id).clone()).collect();
        let now = self.now();
        let snap = self.revocations.snapshot(self.store.as_ref(), now).await?;
        let mut cache = self.revocations.krl.lock().await;
        if let Some(k) = cache.as_ref() {
            if k.keys == ids && Arc::ptr_eq(&k.checked_against, &snap.entries) {
                return Ok(k.clone());
            }
        }
        let by_id: HashMap<&str, &sigil_core::ssh::PublicKey> = keys.iter().map(|(id, k)| (id.as_str(), *k)).collect();
        let mut krl = Krl::new(0, 0, "Sigil SSH certificate revocations");
        for (_, k) in &keys {
            krl.add_ca(k);
        }
        for r in snap.entries.iter() {
            let serial = r.serial.strip_prefix(SSH_SERIAL_PREFIX).and_then(|d| d.parse::<u64>().ok());
            if let (Some(serial), Some(key)) = (serial, by_id.get(r.ca_key.as_str())) {
                krl.revoke(key, serial);
                // Version and date from the newest revocation listed (its store
                // sequence grows in commit order): every replica builds the same
                // bytes from the same entries, and a replica that has not seen a
                // revocation yet answers a lower version, which agents refuse.
                let seq = u64::try_from(r.seq).unwrap_or(0);
                if seq > krl.version {
                    krl.version = seq;
                    krl.generated = u64::try_from(r.revoked_at).unwrap_or(0);
                }
            }
        }
        if let Some(k) = cache.as_ref().filter(|k| k.keys == ids && k.krl.same_entries(&krl)) {
            let same = Arc::new(SshKrl { bytes: k.bytes.clone(), sha256: k.sha256, serials: k.serials, krl: k.krl.clone(), keys: ids, checked_against: snap.entries.clone() });
            *cache = Some(same.clone());
            return Ok(same);
        }
        let bytes = krl.encode();
        let sha256 = sigil_core::ssh::krl::digest(&bytes);
        let out = Arc::new(SshKrl { bytes, sha256, serials: krl.len(), krl, keys: ids, checked_against: snap.entries.clone() });
        *cache = Some(out.clone());
        Ok(out)
    }

    /// Whether the bot identity with this serial is revoked (the snapshot is
    /// re-read first if the store changed since).
    pub(crate) async fn identity_revoked(&self, serial: &str) -> Result<bool, ServiceError> {
        Ok(self.revocations.snapshot(self.store.as_ref(), self.now()).await?.is_revoked(serial))
    }

    /// `RevokeSvids`: revokes the named serials, or every unexpired X.509
    /// certificate (X.509-SVIDs and bot identities) issued to `instance`.
    /// Returns the serials now on a CRL, including ones revoked before.
    pub async fn revoke(&self, caller: &Caller, serials: &[String], instance: &str, reason: &str) -> Result<Vec<String>, ServiceError> {
        let target = if instance.is_empty() { format!("{} serials", serials.len()) } else { format!("instance {instance}") };
        if let Err(why) = caller.check_verb(KIND, "create") {
            self.audit.record(self.now(), "revocation.create", caller.bot.name.as_str(), &target, "denied", json!({"reason": why.0})).await;
            return Err(why.into());
        }
        let result = self.revoke_inner(caller, serials, instance, reason).await;
        let (outcome, detail) = match &result {
            Ok(s) => ("ok", json!({"serials": s, "instance": instance, "reason": reason})),
            Err(e) => ("error", json!({"reason": e.to_string(), "instance": instance})),
        };
        self.audit.record(self.now(), "revocation.create", caller.bot.name.as_str(), &target, outcome, detail).await;
        result
    }

    async fn revoke_inner(&self, caller: &Caller, serials: &[String], instance: &str, reason: &str) -> Result<Vec<String>, ServiceError> {
        let reason = parse_reason(reason).ok_or_else(|| {
            let names: Vec<&str> = REASONS.iter().map(|(n, _)| *n).collect();
            ServiceError::invalid("reason", format!("use one of {}", names.join(", ")))
        })?;
        let now = self.now();
        let snap = self.revocations.snapshot(self.store.as_ref(), now).await?;
        let mut found: Vec<AuditRecord> = Vec::new();
        let mut already: Vec<String> = Vec::new();
        match (serials.is_empty(), instance.is_empty()) {
            (true, true) => return Err(ServiceError::invalid("serials", "name serials or a bot_instance")),
            (false, false) => return Err(ServiceError::invalid("bot_instance", "name serials or a bot_instance, not both")),
            (false, true) => {
                if serials.len() > MAX_SERIALS {
                    return Err(ServiceError::invalid("serials", format!("at most {MAX_SERIALS} per request (got {})", serials.len())));
                }
                for (i, s) in serials.iter().enumerate() {
                    let wanted = parse_serial(s).map_err(|m| ServiceError::invalid(format!("serials[{i}]"), m))?;
                    let mut hit = None;
                    if let Some(hex) = &wanted.x509 {
                        hit = self.issued(hex, false, now).await?;
                    }
                    if let (None, Some(dec)) = (&hit, &wanted.ssh) {
                        hit = self.issued(dec, true, now).await?;
                    }
                    let revoked_before = wanted.x509.iter().cloned().chain(wanted.ssh.iter().map(|d| format!("{SSH_SERIAL_PREFIX}{d}"))).find(|r| snap.is_revoked(r));
                    match (hit, revoked_before) {
                        (Some(e), _) => found.push(e),
                        (None, Some(r)) => already.push(r),
                        (None, None) => {
                            return Err(ServiceError::Store(StoreError::NotFound {
                                kind: "unexpired X.509 or SSH certificate issued by this broker (unknown, expired, or its audit event pruned) with serial",
                                name: s.trim().to_string(),
                            }))
                        }
                    }
                }
            }
            (true, false) => {
                if instance.len() > 64 || !instance.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(ServiceError::invalid("bot_instance", "not a bot instance id"));
                }
                found = self.store.issuance_events(IssuanceKey::Instance(instance), now, MAX_PER_INSTANCE + 1).await?;
                if found.len() > MAX_PER_INSTANCE {
                    return Err(ServiceError::invalid("bot_instance", format!("more than {MAX_PER_INSTANCE} unexpired certificates; revoke them by serial")));
                }
                if found.is_empty() {
                    return Err(ServiceError::Store(StoreError::NotFound { kind: "unexpired certificate issued to bot instance", name: instance.to_string() }));
                }
            }
        }
        let rows = self.revocation_rows(caller, &found, reason, now)?;
        if snap.len() + rows.len() > MAX_UNEXPIRED {
            return Err(ServiceError::invalid("serials", format!("the CRLs would list more than {MAX_UNEXPIRED} unexpired revocations")));
        }
        self.store.insert_revocations(&rows, now).await?;
        // This replica's CRLs and identity check follow at once; others within one change poll.
        self.revocations.snapshot(self.store.as_ref(), now).await?;
        let mut out: Vec<String> = rows.into_iter().map(|r| r.serial).chain(already).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The unexpired issuance event of `serial`: an SSH certificate's
    /// (decimal serial) when `ssh`, else an X.509 certificate's (hex).
    async fn issued(&self, serial: &str, ssh: bool, now: i64) -> Result<Option<AuditRecord>, ServiceError> {
        let events = self.store.issuance_events(IssuanceKey::Serial(serial), now, EVENTS_PER_SERIAL).await?;
        Ok(events.into_iter().find(|e| (e.kind == SSH_ISSUANCE_KIND) == ssh))
    }

    /// The revocation rows for issuance events: the CA key each names (an
    /// event from before keys were recorded names none: then every served
    /// CA of its kind lists it; serials are random, 128 bits).
    fn revocation_rows(&self, caller: &Caller, events: &[AuditRecord], reason: &str, now: i64) -> Result<Vec<Revocation>, ServiceError> {
        let authority = self.authority.current();
        let mut rows = Vec::new();
        for e in events {
            let serial = match e.detail["serial"].as_str().unwrap_or_default() {
                s if e.kind == SSH_ISSUANCE_KIND => format!("{SSH_SERIAL_PREFIX}{s}"),
                s => s.to_string(),
            };
            let not_after = e.detail["expires_at"].as_i64().unwrap_or_default();
            let keys: Vec<String> = match e.detail["ca_key"].as_str() {
                Some(k) if !k.is_empty() => vec![k.to_string()],
                _ if e.kind == "svid.x509" => vec![authority.x509.key_id.clone()],
                _ => vec![authority.internal.key_id.clone()],
            };
            for ca_key in keys {
                rows.push(Revocation {
                    seq: 0,
                    serial: serial.clone(),
                    ca_key,
                    not_after,
                    revoked_at: now,
                    reason: reason.to_string(),
                    actor: caller.bot.name.to_string(),
                });
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalized_as_the_ca_writes_them() {
        assert_eq!(normalize_serial("3A:0B:ff").unwrap(), "3a0bff");
        assert_eq!(normalize_serial("serial=ABC").unwrap(), "0abc");
        assert!(normalize_serial("").is_err());
        assert!(normalize_serial("xyz").is_err());
        assert!(normalize_serial("'; DROP TABLE").is_err());
        assert!(normalize_serial(&"a".repeat(42)).is_err());
        assert_eq!(normalize_serial(&"a".repeat(40)).unwrap().len(), 40);
    }

    #[test]
    fn a_decimal_serial_may_name_an_ssh_certificate_and_never_zero() {
        let w = |x: Option<&str>, s: Option<&str>| WantedSerial { x509: x.map(String::from), ssh: s.map(String::from) };
        assert_eq!(parse_serial("12345").unwrap(), w(Some("012345"), Some("12345")));
        assert_eq!(parse_serial("ssh:0012345").unwrap(), w(None, Some("12345")));
        assert_eq!(parse_serial("18446744073709551615").unwrap(), w(Some("18446744073709551615"), Some("18446744073709551615")));
        assert_eq!(parse_serial("3a:0b").unwrap(), w(Some("3a0b"), None));
        assert!(parse_serial("ssh:0").is_err());
        assert!(parse_serial("ssh:18446744073709551616").is_err());
        assert!(parse_serial("ssh:abc").is_err());
        assert_eq!(parse_serial("0").unwrap(), w(Some("00"), None));
    }

    #[test]
    fn reasons_are_the_rfc_5280_names_without_hold() {
        assert_eq!(parse_reason(""), Some("unspecified"));
        assert_eq!(parse_reason("key-compromise"), Some("keyCompromise"));
        assert_eq!(parse_reason("KEYCOMPROMISE"), Some("keyCompromise"));
        assert_eq!(parse_reason("certificateHold"), None);
        assert_eq!(parse_reason("removeFromCRL"), None);
        assert_eq!(reason_code("unspecified"), None);
        assert_eq!(reason_code("superseded"), Some(rcgen::RevocationReason::Superseded));
    }

    #[test]
    fn crl_numbers_only_grow_even_within_one_second() {
        let r = Revocations::default();
        let a = r.next_crl_number(1_800_000_000);
        let b = r.next_crl_number(1_800_000_000);
        let c = r.next_crl_number(1_799_999_999);
        let d = r.next_crl_number(1_800_000_001);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
    }
}
