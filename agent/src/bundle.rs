//! The trust bundle as the agent holds it: X.509 authorities and the JWKS of the
//! broker's trust domain, and which keys sign now.
//!
//! A CA rotation reaches the agent as bundle changes ([`Bundle::change_from`]):
//! `prepare` publishes a key, `activate` changes what signs while the published
//! set stays the same, `retire` (or `rollback`) unpublishes one. A key added is
//! pushed to everything that carries the bundle; another signer renews every
//! credential, so workloads get SVIDs of the new key long before the old one is
//! retired; a key removed renews everything too, because a forced retire (a
//! compromised key) may remove the key that signed credentials still held.
//!
//! The database and kubernetes CA bundles ride along ([`AccessCa`]) for the
//! outputs that write them, but never count as a change of the SVID bundle:
//! those outputs compare them with what they wrote ([`AccessCa::change_from`]).
//! So does the OpenSSH KRL ([`SshKrl`]) for the `ssh-host` outputs.

use sigil_core::ssh::krl;
use sigil_schemas::sigil::v1 as pb;
use std::sync::Arc;

/// Why a bundle from the broker is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The X.509 authorities are not PEM certificates.
    #[error(transparent)]
    Pem(#[from] sigil_core::pem::PemError),
    /// The bundle is empty.
    #[error("trust bundle has no X.509 authorities")]
    Empty,
    /// The SSH KRL in the broker's answer is unusable (kept as it was).
    #[error("the broker's SSH KRL is unusable: {0}")]
    Krl(&'static str),
}

/// The trust bundle of one trust domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    /// Trust domain name (no scheme).
    pub trust_domain: String,
    /// X.509 authorities, PEM.
    pub x509_pem: String,
    /// X.509 authorities, DER each.
    pub x509_der: Vec<Vec<u8>>,
    /// JWKS (keys with `kid`, `alg`, `use: sig`).
    pub jwks_json: String,
    /// What signs now (empty from a broker that does not say).
    pub signing: Signing,
    /// Published SSH CA keys (`user KEY` / `host KEY` lines, sorted), fetched
    /// only when an SSH output needs them; empty otherwise. A change is a
    /// [`BundleChange::Published`]: the SSH outputs rewrite `known_hosts` and
    /// `user_ca.pub` at once instead of at their half-life.
    pub ssh_ca_keys: Vec<String>,
    /// The database CA bundle, kept only when a `database` output writes it.
    pub database_ca: AccessCa,
    /// The kubernetes CA bundle, kept only when a `kubernetes` output writes it.
    pub kubernetes_ca: AccessCa,
    /// The OpenSSH KRL, kept only when an `ssh-host` output writes it (`None`:
    /// not followed, or a broker that serves none). Its changes are not bundle
    /// changes ([`Bundle::krl_changed`]).
    pub ssh_krl: Option<SshKrl>,
}

/// The broker's OpenSSH KRL (sshd `RevokedKeys`), checked: its SHA-256 is the
/// one the broker sent and it reads back as a KRL of the form the broker
/// writes ([`krl::Krl::decode`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SshKrl {
    /// The binary KRL.
    pub bytes: Arc<Vec<u8>>,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its `krl_version`: the store sequence of the newest revocation listed.
    pub version: u64,
}

impl std::fmt::Debug for SshKrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshKrl(version {}, {} bytes, sha256 {})", self.version, self.bytes.len(), hex::encode(self.sha256))
    }
}

impl SshKrl {
    /// Checks `bytes` against `sha256` and the KRL header.
    pub fn new(bytes: Vec<u8>, sha256: &[u8]) -> Result<Self, BundleError> {
        let sha256: [u8; 32] = sha256.try_into().map_err(|_| BundleError::Krl("its SHA-256 is not 32 bytes"))?;
        if krl::digest(&bytes) != sha256 {
            return Err(BundleError::Krl("its bytes do not match its SHA-256"));
        }
        let version = krl::Krl::decode(&bytes).map_err(|_| BundleError::Krl("it is not an OpenSSH KRL of the form the broker writes"))?.version;
        Ok(Self { bytes: Arc::new(bytes), sha256, version })
    }

    /// A list that revokes nothing, written when the broker sends none so that
    /// the file sshd's `RevokedKeys` names always exists (sshd refuses every
    /// key while it is missing).
    pub fn empty() -> Self {
        let bytes = krl::Krl::new(0, 0, "Sigil SSH certificate revocations (none received yet)").encode();
        Self { sha256: krl::digest(&bytes), bytes: Arc::new(bytes), version: 0 }
    }

    /// The list to hold after the broker's answer `k` (asked with
    /// `include_krl`): its list, unless it is older than `held` or unusable
    /// (then `held`, and the problem to log); `held` when the answer names it
    /// (no bytes) or has none (a broker without a KRL, or one that could not
    /// build it). The one rule of the bundle poll and an `ssh-host` renewal.
    pub fn choose(k: &pb::SshCaPublicKeys, held: Option<&SshKrl>) -> (Option<SshKrl>, Option<BundleError>) {
        match (k.krl_sha256.is_empty(), k.revoked_keys_krl.is_empty()) {
            (true, _) => (held.cloned(), None),
            (false, false) => match SshKrl::new(k.revoked_keys_krl.clone(), &k.krl_sha256) {
                Ok(new) => match held {
                    Some(h) if !new.replaces(h) => (Some(h.clone()), None),
                    _ => (Some(new), None),
                },
                Err(e) => (held.cloned(), Some(e)),
            },
            (false, true) => match held.filter(|h| h.sha256.as_slice() == k.krl_sha256.as_slice()) {
                Some(h) => (Some(h.clone()), None),
                None => (held.cloned(), Some(BundleError::Krl("the broker sent no list and the SHA-256 of one the agent does not hold"))),
            },
        }
    }

    /// Whether this list may replace `held`: another list, not older (a
    /// replica that has not seen the newest revocation yet answers a lower
    /// version; its list would bring revoked certificates back).
    pub fn replaces(&self, held: &SshKrl) -> bool {
        self.sha256 != held.sha256 && self.version >= held.version
    }
}

/// The CAs of the access outputs whose bundle the agent follows at each poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessPurpose {
    /// The database CA (`ca.pem` of a `database` output).
    Database,
    /// The kubernetes CA (`kubernetes-ca.pem` of a `kubernetes` output).
    Kubernetes,
}

/// A database or kubernetes CA as the bundle poll sees it. Its changes never
/// concern the SVID holders ([`Bundle::change_from`] ignores them); the output
/// that writes the bundle reacts alone ([`AccessCa::change_from`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessCa {
    /// Every published CA certificate, PEM (empty: not followed, or a broker
    /// without the CA).
    pub bundle_pem: String,
    /// The same, DER each.
    pub der: Vec<Vec<u8>>,
    /// Hex SHA-256 of the certificate that signs now.
    pub signing_sha256: String,
}

/// What an access output does when its CA changed since it wrote its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessChange {
    /// Nothing.
    Same,
    /// Certificates were only added (`prepare`): rewrite the CA file; the
    /// certificate and key stay.
    RewriteCa,
    /// Another certificate signs (`activate`, or `rollback` of an activation)
    /// or one was unpublished (`retire`, `rollback`): issue a new certificate,
    /// which also writes the new CA file. After `activate` the new
    /// certificate comes from the new key, which the peer trusts since
    /// `prepare`; after a retire the old one may be signed by a key nobody
    /// trusts any more.
    Reissue,
}

impl AccessCa {
    /// From the broker's fields; empty PEM gives the empty value.
    pub fn from_pem(bundle_pem: String, signing_sha256: String) -> Result<Self, BundleError> {
        if bundle_pem.trim().is_empty() {
            return Ok(Self::default());
        }
        let der = pem_certs(&bundle_pem)?;
        Ok(Self { bundle_pem, der, signing_sha256 })
    }

    /// How `self` (just fetched) differs from `written` (what the output's
    /// files hold). An empty `self` (the broker stopped sending it) changes
    /// nothing: a CA file is never emptied.
    pub fn change_from(&self, written: &AccessCa) -> AccessChange {
        if self.der.is_empty() || self == written {
            return AccessChange::Same;
        }
        let removed = written.der.iter().any(|c| !self.der.contains(c));
        if removed || self.signing_sha256 != written.signing_sha256 {
            AccessChange::Reissue
        } else {
            AccessChange::RewriteCa
        }
    }
}

/// The keys that sign now, as the broker names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signing {
    /// Hex SHA-256 of the X.509-SVID CA certificate.
    pub x509_sha256: String,
    /// `kid` of the JWT key.
    pub jwt_kid: String,
    /// Hex SHA-256 of the internal CA certificate (bot identities).
    pub internal_sha256: String,
}

/// How a newly fetched bundle differs from the one held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleChange {
    /// Nothing changed.
    Same,
    /// Keys were only added (`prepare`): push the bundle to every holder;
    /// credentials stay valid.
    Published,
    /// Another key signs now (`activate`) or a key was unpublished (`retire`,
    /// `rollback`): renew every credential.
    Renew,
}

/// The `kid`s of a JWKS (none if it does not parse: every held key then
/// counts as removed, which renews; never less safe).
fn kids(jwks_json: &str) -> std::collections::BTreeSet<String> {
    let doc: serde_json::Value = serde_json::from_str(jwks_json).unwrap_or_default();
    let keys = doc.get("keys").and_then(|k| k.as_array()).cloned().unwrap_or_default();
    keys.iter().filter_map(|k| k.get("kid").and_then(|v| v.as_str()).map(str::to_string)).collect()
}

/// Parses every certificate of a PEM string.
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, BundleError> {
    let certs = sigil_core::pem::certificate_ders(pem, "the trust bundle's X.509 authorities")?;
    if certs.is_empty() {
        return Err(BundleError::Empty);
    }
    Ok(certs)
}

impl Bundle {
    /// From the broker's `GetTrustBundle` answer.
    pub fn from_pb(b: pb::TrustBundle) -> Result<Self, BundleError> {
        let x509_der = pem_certs(&b.x509_authorities_pem)?;
        let signing = Signing { x509_sha256: b.x509_signing_sha256, jwt_kid: b.jwt_signing_kid, internal_sha256: b.internal_signing_sha256 };
        Ok(Self {
            trust_domain: b.trust_domain,
            x509_pem: b.x509_authorities_pem,
            x509_der,
            jwks_json: b.jwks_json,
            signing,
            ssh_ca_keys: Vec::new(),
            ssh_krl: None,
            database_ca: AccessCa::default(),
            kubernetes_ca: AccessCa::default(),
        })
    }

    /// From the broker's `GetTrustBundle` answer, keeping the database and
    /// kubernetes CA bundles named in `follow` (the access outputs' CAs).
    pub fn from_pb_following(b: pb::TrustBundle, follow: &[AccessPurpose]) -> Result<Self, BundleError> {
        let database = (b.database_ca_bundle_pem.clone(), b.database_signing_sha256.clone());
        let kubernetes = (b.kubernetes_ca_bundle_pem.clone(), b.kubernetes_signing_sha256.clone());
        let mut out = Self::from_pb(b)?;
        if follow.contains(&AccessPurpose::Database) {
            out.database_ca = AccessCa::from_pem(database.0, database.1)?;
        }
        if follow.contains(&AccessPurpose::Kubernetes) {
            out.kubernetes_ca = AccessCa::from_pem(kubernetes.0, kubernetes.1)?;
        }
        Ok(out)
    }

    /// The access CA of `p` as held.
    pub fn access_ca(&self, p: AccessPurpose) -> &AccessCa {
        match p {
            AccessPurpose::Database => &self.database_ca,
            AccessPurpose::Kubernetes => &self.kubernetes_ca,
        }
    }

    /// Whether a database or kubernetes CA changed (any way).
    pub fn access_changed(&self, old: &Bundle) -> bool {
        self.database_ca != old.database_ca || self.kubernetes_ca != old.kubernetes_ca
    }

    /// Adds the broker's `GetSshCaPublicKeys` answer.
    pub fn with_ssh(mut self, k: pb::SshCaPublicKeys) -> Self {
        let mut lines: Vec<String> = k.user_ca_public_keys.iter().map(|l| format!("user {}", l.trim())).collect();
        lines.extend(k.host_ca_public_keys.iter().map(|l| format!("host {}", l.trim())));
        lines.sort();
        self.ssh_ca_keys = lines;
        self
    }

    /// Adds the KRL of the broker's `GetSshCaPublicKeys` answer (asked with
    /// `include_krl`), or keeps `held`: when the answer names it (no bytes),
    /// has none (a broker without a KRL, or one that could not build it), is
    /// older than it, or is unusable. The last is returned to be logged; a KRL
    /// problem never stops the bundle poll.
    pub fn with_krl(mut self, k: &pb::SshCaPublicKeys, held: Option<&SshKrl>) -> (Self, Option<BundleError>) {
        let (chosen, problem) = SshKrl::choose(k, held);
        self.ssh_krl = chosen;
        (self, problem)
    }

    /// Whether the SSH KRL changed (the `ssh-host` outputs rewrite it alone).
    pub fn krl_changed(&self, old: &Bundle) -> bool {
        self.ssh_krl.as_ref().map(|k| k.sha256) != old.ssh_krl.as_ref().map(|k| k.sha256)
    }

    /// The SHA-256 of the KRL held, to send as `known_krl_sha256`.
    pub fn krl_sha256(&self) -> Vec<u8> {
        self.ssh_krl.as_ref().map(|k| k.sha256.to_vec()).unwrap_or_default()
    }

    /// How `self` (just fetched) differs from `old` (held).
    pub fn change_from(&self, old: &Bundle) -> BundleChange {
        let same = self.trust_domain == old.trust_domain
            && self.x509_der == old.x509_der
            && self.jwks_json == old.jwks_json
            && self.signing == old.signing
            && self.ssh_ca_keys == old.ssh_ca_keys;
        if same {
            return BundleChange::Same;
        }
        let x509_removed = old.x509_der.iter().any(|c| !self.x509_der.contains(c));
        let jwt_removed = !kids(&old.jwks_json).is_subset(&kids(&self.jwks_json));
        if self.signing != old.signing || x509_removed || jwt_removed || self.trust_domain != old.trust_domain {
            BundleChange::Renew
        } else {
            BundleChange::Published
        }
    }

    /// `spiffe://<trust domain>`, the key of Workload API bundle maps.
    pub fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }

    /// All authorities, concatenated DER (Workload API encoding).
    pub fn x509_concat(&self) -> Vec<u8> {
        self.x509_der.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_rejected() {
        assert!(matches!(pem_certs("hello"), Err(BundleError::Empty)));
    }

    #[test]
    fn certificates_are_decoded_in_order() {
        let pem = sigil_schemas::identity::to_pem("CERTIFICATE", b"one") + &sigil_schemas::identity::to_pem("CERTIFICATE", b"two");
        assert_eq!(pem_certs(&pem).unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
    }

    fn bundle(x509: &[&str], kids: &[&str], x509_signs: &str, jwt_signs: &str) -> Bundle {
        let x509_der: Vec<Vec<u8>> = x509.iter().map(|c| c.as_bytes().to_vec()).collect();
        let signing = Signing { x509_sha256: x509_signs.into(), jwt_kid: jwt_signs.into(), internal_sha256: "i".into() };
        let keys: Vec<serde_json::Value> = kids.iter().map(|k| serde_json::json!({"kid": k, "kty": "EC"})).collect();
        let jwks_json = serde_json::json!({ "keys": keys }).to_string();
        Bundle { trust_domain: "td".into(), x509_pem: x509.concat(), x509_der, jwks_json, signing, ..Default::default() }
    }

    fn access(certs: &[&str], signs: &str) -> AccessCa {
        AccessCa { bundle_pem: certs.concat(), der: certs.iter().map(|c| c.as_bytes().to_vec()).collect(), signing_sha256: signs.into() }
    }

    #[test]
    fn an_access_ca_rotation_rewrites_the_ca_file_at_prepare_and_reissues_at_activate_and_retire() {
        let standby = access(&["old"], "old");
        let prepared = access(&["old", "new"], "old");
        let activated = access(&["old", "new"], "new");
        let retired = access(&["new"], "new");
        assert_eq!(standby.change_from(&standby), AccessChange::Same);
        assert_eq!(prepared.change_from(&standby), AccessChange::RewriteCa);
        assert_eq!(activated.change_from(&prepared), AccessChange::Reissue, "the next certificate comes from the new key");
        assert_eq!(retired.change_from(&activated), AccessChange::Reissue, "the held certificate may be from the retired key");
        assert_eq!(standby.change_from(&prepared), AccessChange::Reissue, "rollback");
        assert_eq!(AccessCa::default().change_from(&prepared), AccessChange::Same, "a broker that stops sending it never empties the file");
    }

    #[test]
    fn an_access_ca_change_does_not_renew_the_svid_holders() {
        let a = bundle(&["ca"], &["k1"], "ca", "k1");
        let mut b = a.clone();
        b.database_ca = access(&["db1", "db2"], "db1");
        b.kubernetes_ca = access(&["k8s"], "k8s");
        assert_eq!(b.change_from(&a), BundleChange::Same);
        assert!(b.access_changed(&a) && !a.access_changed(&a));
    }

    #[test]
    fn the_access_bundles_are_kept_only_when_an_output_follows_them() {
        let ca = sigil_schemas::identity::to_pem("CERTIFICATE", b"x509");
        let db = sigil_schemas::identity::to_pem("CERTIFICATE", b"db");
        let pb = pb::TrustBundle { trust_domain: "td".into(), x509_authorities_pem: ca, database_ca_bundle_pem: db.clone(), database_signing_sha256: "s".into(), ..Default::default() };
        let none = Bundle::from_pb_following(pb.clone(), &[]).unwrap();
        assert_eq!(none.database_ca, AccessCa::default());
        let db_only = Bundle::from_pb_following(pb, &[AccessPurpose::Database, AccessPurpose::Kubernetes]).unwrap();
        assert_eq!(db_only.access_ca(AccessPurpose::Database).der, vec![b"db".to_vec()]);
        assert_eq!(db_only.access_ca(AccessPurpose::Kubernetes), &AccessCa::default(), "a broker without the CA sends nothing");
    }

    #[test]
    fn an_ssh_ca_key_published_or_unpublished_is_pushed_without_renewing_everything() {
        let a = bundle(&["ca"], &["k1"], "ca", "k1");
        let ssh = |host: &[&str]| pb::SshCaPublicKeys { user_ca_public_keys: vec!["ssh-ed25519 U".into()], host_ca_public_keys: host.iter().map(|h| h.to_string()).collect(), ..Default::default() };
        let one = a.clone().with_ssh(ssh(&["ssh-ed25519 H1"]));
        let two = a.clone().with_ssh(ssh(&["ssh-ed25519 H2 ", "ssh-ed25519 H1"]));
        assert_eq!(one.ssh_ca_keys, vec!["host ssh-ed25519 H1".to_string(), "user ssh-ed25519 U".to_string()]);
        assert_eq!(two.change_from(&one), BundleChange::Published);
        assert_eq!(one.change_from(&two), BundleChange::Published, "retired: the SSH outputs rewrite their files");
        assert_eq!(a.clone().with_ssh(ssh(&["ssh-ed25519 H1"])).change_from(&one), BundleChange::Same);
    }

    #[test]
    fn a_krl_is_taken_only_with_its_digest_kept_when_unchanged_or_older_and_never_a_bundle_change() {
        let a = bundle(&["ca"], &["k1"], "ca", "k1");
        let list = |v: u64| sigil_core::ssh::krl::Krl::new(v, 0, "t").encode();
        let answer = |bytes: Vec<u8>, sha: Vec<u8>| pb::SshCaPublicKeys { revoked_keys_krl: bytes, krl_sha256: sha, ..Default::default() };
        let ok = |(b, problem): (Bundle, Option<BundleError>)| {
            assert!(problem.is_none(), "{problem:?}");
            b
        };
        let refused = |(b, problem): (Bundle, Option<BundleError>)| {
            assert!(problem.is_some());
            b
        };
        let (one, two) = (list(5), list(6));
        let sha1 = krl::digest(&one).to_vec();
        let held = ok(a.clone().with_krl(&answer(one.clone(), sha1.clone()), None));
        assert_eq!(held.ssh_krl.as_ref().unwrap().bytes.as_slice(), one.as_slice());
        assert_eq!(held.ssh_krl.as_ref().unwrap().version, 5);
        assert_eq!(held.krl_sha256(), sha1);
        let h = held.ssh_krl.as_ref();
        let unchanged = ok(a.clone().with_krl(&answer(Vec::new(), sha1.clone()), h));
        assert_eq!(unchanged.ssh_krl, held.ssh_krl);
        assert!(!unchanged.krl_changed(&held));
        let next = ok(a.clone().with_krl(&answer(two.clone(), krl::digest(&two).to_vec()), h));
        assert!(next.krl_changed(&held));
        assert_eq!(next.change_from(&held), BundleChange::Same, "a KRL change renews nothing");
        let older = ok(next.clone().with_krl(&answer(one.clone(), sha1.clone()), next.ssh_krl.as_ref()));
        assert_eq!(older.ssh_krl, next.ssh_krl, "a lagging replica's older list is not taken");
        assert_eq!(ok(a.clone().with_krl(&answer(Vec::new(), Vec::new()), h)).ssh_krl, held.ssh_krl, "a broker without a KRL");
        assert_eq!(refused(a.clone().with_krl(&answer(Vec::new(), sha1.clone()), None)).ssh_krl, None, "an unchanged list the agent does not hold");
        for bad in [
            answer(two.clone(), sha1.clone()),
            answer(b"<html>".to_vec(), krl::digest(b"<html>").to_vec()),
            answer(one.clone(), vec![1; 31]),
        ] {
            assert_eq!(refused(a.clone().with_krl(&bad, None)).ssh_krl, None);
            assert_eq!(refused(a.clone().with_krl(&bad, h)).ssh_krl, held.ssh_krl, "the held list stays");
        }
        assert_eq!(ok(a.clone().with_krl(&answer(Vec::new(), sha1.clone()), h)).ssh_krl, held.ssh_krl);
        let empty = SshKrl::empty();
        assert!(sigil_core::ssh::krl::Krl::decode(&empty.bytes).unwrap().is_empty());
        assert!(!empty.replaces(held.ssh_krl.as_ref().unwrap()) && held.ssh_krl.as_ref().unwrap().replaces(&empty));
    }

    #[test]
    fn a_rotation_is_seen_as_publish_then_renew_then_renew() {
        let standby = bundle(&["old"], &["old"], "old", "old");
        let prepared = bundle(&["old", "new"], &["old", "new"], "old", "old");
        let activated = bundle(&["old", "new"], &["old", "new"], "new", "new");
        let retired = bundle(&["new"], &["new"], "new", "new");
        assert_eq!(standby.change_from(&standby), BundleChange::Same);
        assert_eq!(prepared.change_from(&standby), BundleChange::Published);
        assert_eq!(activated.change_from(&prepared), BundleChange::Renew);
        assert_eq!(retired.change_from(&activated), BundleChange::Renew);
        assert_eq!(standby.change_from(&prepared), BundleChange::Renew, "rollback");
    }

    #[test]
    fn a_forced_retire_of_either_kind_of_key_renews_everything() {
        let both = bundle(&["ca1", "ca2"], &["k1", "k2"], "ca2", "k2");
        assert_eq!(bundle(&["ca2"], &["k1", "k2"], "ca2", "k2").change_from(&both), BundleChange::Renew);
        assert_eq!(bundle(&["ca1", "ca2"], &["k2"], "ca2", "k2").change_from(&both), BundleChange::Renew);
        let mut unparsable = both.clone();
        unparsable.jwks_json = "{".into();
        assert_eq!(unparsable.change_from(&both), BundleChange::Renew);
    }

    #[test]
    fn a_key_added_is_published_and_any_signer_change_renews() {
        let a = bundle(&["ca"], &["k1"], "ca", "k1");
        assert_eq!(bundle(&["ca"], &["k1", "k2"], "ca", "k1").change_from(&a), BundleChange::Published);
        assert_eq!(bundle(&["ca", "ca2"], &["k1"], "ca", "k1").change_from(&a), BundleChange::Published);
        assert_eq!(bundle(&["ca"], &["k1", "k2"], "ca", "k2").change_from(&a), BundleChange::Renew);
        let mut internal = a.clone();
        internal.signing.internal_sha256 = "other".into();
        assert_eq!(internal.change_from(&a), BundleChange::Renew);
    }
}
