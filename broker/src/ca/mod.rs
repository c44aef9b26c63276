//! The certificate authorities: X.509-SVID CA, internal CA (bot identities and the
//! serving certificate), the JWT signing key, and the database and Kubernetes
//! CAs, with issuance.
//!
//! Keys are generated at first start, by the configured key backend (see
//! [`backend`]: sealed in the store by default, or inside a PKCS#11 token);
//! later starts load the same keys, so JWKS `kid`s and trust bundles survive
//! restarts.

pub mod backend;
pub use sigil_core::clock;
pub mod jwt;
pub use sigil_core::keys;
pub mod lifetime;
pub mod rotation;
pub mod seal;
pub mod x509;

use crate::store::{CaKeyRecord, Store, StoreError};
use backend::{BackendError, KeySigner, KeyStore};
use keys::KeyAlg;
use sigil_core::domain::ca_rotation::KeyState;
use lifetime::Validity;
use serde_json::{json, Value};
use std::sync::Arc;
use x509::{CaCert, LeafKind};

/// CA set-up or issuance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Key handling.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// Sealing.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// Certificate building.
    #[error(transparent)]
    X509(#[from] x509::X509Error),
    /// Lifetime.
    #[error(transparent)]
    Lifetime(#[from] lifetime::LifetimeError),
    /// Store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An SSH CA key.
    #[error(transparent)]
    Ssh(#[from] sigil_core::ssh::SshError),
    /// A stored key is unusable.
    #[error("stored CA key {0} is unusable: {1}")]
    Corrupt(String, String),
}

/// Settings for the CAs.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// Algorithm of the X.509-SVID CA.
    pub x509_alg: KeyAlg,
    /// Algorithm of the JWT key.
    pub jwt_alg: KeyAlg,
    /// Algorithm of new SSH CA keys (user and host).
    pub ssh_alg: KeyAlg,
    /// CA certificate lifetime, seconds.
    pub ca_ttl: i64,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self { x509_alg: KeyAlg::EcP256, jwt_alg: KeyAlg::Rsa2048, ssh_alg: KeyAlg::Ed25519, ca_ttl: 365 * 24 * 3600 }
    }
}

/// Key purposes in the store.
pub const PURPOSE_X509: &str = "x509-svid";
/// Internal CA (bot identities, serving certificate).
pub const PURPOSE_INTERNAL: &str = "internal";
/// JWT signing key.
pub const PURPOSE_JWT: &str = "jwt-svid";
/// SSH user certificate CA.
pub const PURPOSE_SSH_USER: &str = "ssh-user";
/// SSH host certificate CA.
pub const PURPOSE_SSH_HOST: &str = "ssh-host";

/// An SSH CA: the active key signs certificates; every published key
/// (prepared, active, previous) is what sshd and ssh clients trust.
#[derive(Debug)]
pub struct SshCa {
    /// Id of the active key (hex SHA-256 of its public key blob).
    pub key_id: String,
    /// Signs with the active key.
    pub signer: Arc<dyn KeySigner>,
    /// The active key in OpenSSH form.
    pub public: sigil_core::ssh::PublicKey,
    /// Every published key, in creation order.
    pub published: Vec<sigil_core::ssh::PublicKey>,
    /// The ids of `published`, in the same order (revocations name the key by id).
    pub published_ids: Vec<String>,
    /// The active key's planned end (`ca.lifetime_seconds` after its
    /// creation): no certificate outlives it, so `retire_safe_at` holds.
    pub not_after: i64,
}

impl SshCa {
    /// The published keys as authorized_keys lines (`TrustedUserCAKeys`,
    /// `@cert-authority` in known_hosts), each commented with its purpose.
    pub fn lines(&self, purpose: &str) -> Vec<String> {
        self.published.iter().map(|k| k.to_line(&format!("sigil-{purpose}-ca"))).collect()
    }
}

/// Database CA (database client and server certificates).
pub const PURPOSE_DATABASE: &str = "database";
/// Kubernetes CA (Kubernetes client certificates).
pub const PURPOSE_KUBERNETES: &str = "kubernetes";

/// A database or Kubernetes CA: the active key signs; every published
/// certificate (prepared, active, previous) is what verifiers trust. Each
/// purpose has its own key: a database certificate is never a Kubernetes
/// login, and neither is an SVID.
#[derive(Debug)]
pub struct AccessCa {
    /// The active CA.
    pub active: CaCert,
    /// Every published CA certificate, DER.
    pub roots: Vec<Vec<u8>>,
    /// `roots` as PEM (every certificate response carries it).
    pub bundle_pem: String,
}

/// A JWT key: signer plus its public JWK.
#[derive(Debug)]
pub struct JwtKey {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// Algorithm.
    pub alg: KeyAlg,
    /// Signer.
    pub signer: Arc<dyn KeySigner>,
}

/// The loaded authorities.
#[derive(Debug)]
pub struct Authority {
    /// Active X.509-SVID CA.
    pub x509: CaCert,
    /// Internal CA.
    pub internal: CaCert,
    /// Active JWT key.
    pub jwt: JwtKey,
    /// Every X.509-SVID CA certificate still trusted (bundle), DER.
    pub x509_roots: Vec<Vec<u8>>,
    /// Every internal CA certificate still trusted (bot identities, the
    /// serving certificate's issuer), DER: what clients must trust for the
    /// broker's TLS and what the broker accepts client certificates from.
    pub internal_roots: Vec<Vec<u8>>,
    /// Every JWT public key still trusted.
    pub jwt_public: Vec<(String, KeyAlg, Value)>,
    /// SSH user certificate CA.
    pub ssh_user: SshCa,
    /// SSH host certificate CA.
    pub ssh_host: SshCa,
    /// Database CA.
    pub database: AccessCa,
    /// Kubernetes CA.
    pub kubernetes: AccessCa,
    /// `x509_roots` as PEM, encoded once at load (every X.509-SVID response
    /// carries it).
    x509_bundle_pem: String,
    /// Id and state of every row it was loaded from.
    loaded_from: Vec<(String, String)>,
    /// `spiffe_sequence` of the bundle (grows with every rotation step).
    sequence: i64,
    /// The other published X.509 CAs (prepared, previous) with their keys:
    /// they sign nothing new but CRLs, so what they signed stays revocable.
    other_crl_issuers: Vec<(&'static str, CaCert)>,
}

/// What decides an [`Authority`]: each row's id and state (rows never change
/// otherwise, except for the timestamps a state change sets).
fn shape(records: &[CaKeyRecord]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = records.iter().map(|r| (r.id.clone(), r.state.clone())).collect();
    v.sort();
    v
}

impl Authority {
    /// Loads the CAs from the store, creating any that do not exist yet.
    pub async fn load_or_create(
        store: &Arc<dyn Store>,
        key_store: &KeyStore,
        trust_domain: &sigil_core::domain::TrustDomain,
        settings: &CaSettings,
        now: i64,
    ) -> Result<Self, CaError> {
        let mut records = store.list_ca_keys().await?;
        let purposes = [
            (PURPOSE_X509, settings.x509_alg),
            (PURPOSE_INTERNAL, KeyAlg::EcP256),
            (PURPOSE_JWT, settings.jwt_alg),
            (PURPOSE_SSH_USER, settings.ssh_alg),
            (PURPOSE_SSH_HOST, settings.ssh_alg),
            (PURPOSE_DATABASE, KeyAlg::EcP256),
            (PURPOSE_KUBERNETES, KeyAlg::EcP256),
        ];
        for (purpose, alg) in purposes {
            if !records.iter().any(|r| r.purpose == purpose && r.state == "active") {
                let (rec, new) = create_key(key_store, trust_domain, purpose, alg, settings.ca_ttl, now, KeyState::Active)?;
                match store.insert_ca_key(&rec).await {
                    Ok(()) => records.push(rec),
                    // Another broker on the same store created this purpose's key first: use it.
                    Err(StoreError::AlreadyExists { .. }) => {
                        key_store.discard(&new);
                        records = store.list_ca_keys().await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Self::from_records(&records, key_store)
    }

    /// The authorities `records` describe: the active key of each purpose
    /// signs; prepared, active and previous keys are published; retired keys
    /// (and rows in an unknown state) are neither.
    pub fn from_records(records: &[CaKeyRecord], key_store: &KeyStore) -> Result<Self, CaError> {
        let active = |p: &str| {
            records
                .iter()
                .filter(|r| r.purpose == p && r.state == KeyState::Active.as_str())
                .max_by_key(|r| r.created_at)
                .ok_or_else(|| CaError::Corrupt(p.into(), "no active key".into()))
        };
        let open = |r: &CaKeyRecord| -> Result<Arc<dyn KeySigner>, CaError> { Ok(key_store.open(r)?) };
        let load_ca = |r: &CaKeyRecord| -> Result<CaCert, CaError> {
            let cert = r.cert_der.clone().ok_or_else(|| CaError::Corrupt(r.id.clone(), "no certificate".into()))?;
            Ok(CaCert::load(&r.id, &open(r)?, cert)?)
        };
        let x509 = load_ca(active(PURPOSE_X509)?)?;
        let internal = load_ca(active(PURPOSE_INTERNAL)?)?;
        let jr = active(PURPOSE_JWT)?;
        let jkey = open(jr)?;
        let jwt = JwtKey { kid: jr.id.clone(), alg: jkey.alg(), signer: jkey };
        let published = |p: &'static str| {
            records.iter().filter(move |r| r.purpose == p && KeyState::parse(&r.state).is_some_and(KeyState::published))
        };
        let x509_roots: Vec<Vec<u8>> = published(PURPOSE_X509).filter_map(|r| r.cert_der.clone()).collect();
        let internal_roots: Vec<Vec<u8>> = published(PURPOSE_INTERNAL).filter_map(|r| r.cert_der.clone()).collect();
        let mut jwt_public = Vec::new();
        for r in published(PURPOSE_JWT) {
            let k = if r.id == jwt.kid { jwt.signer.clone() } else { open(r)? };
            jwt_public.push((r.id.clone(), k.alg(), k.public_key().jwk.clone()));
        }
        let ssh_ca = |p: &'static str| -> Result<SshCa, CaError> {
            let r = active(p)?;
            let signer = open(r)?;
            let public = signer.public_key().ssh()?;
            let (mut keys, mut ids) = (Vec::new(), Vec::new());
            for k in published(p) {
                keys.push(if k.id == r.id { public.clone() } else { open(k)?.public_key().ssh()? });
                ids.push(k.id.clone());
            }
            Ok(SshCa { key_id: r.id.clone(), signer, public, published: keys, published_ids: ids, not_after: r.not_after })
        };
        let (ssh_user, ssh_host) = (ssh_ca(PURPOSE_SSH_USER)?, ssh_ca(PURPOSE_SSH_HOST)?);
        let access_ca = |p: &'static str| -> Result<AccessCa, CaError> {
            let roots: Vec<Vec<u8>> = published(p).filter_map(|r| r.cert_der.clone()).collect();
            Ok(AccessCa { active: load_ca(active(p)?)?, bundle_pem: bundle_pem(&roots), roots })
        };
        let (database, kubernetes) = (access_ca(PURPOSE_DATABASE)?, access_ca(PURPOSE_KUBERNETES)?);
        let x509_bundle_pem = bundle_pem(&x509_roots);
        let mut other_crl_issuers = Vec::new();
        let signing = [&x509.key_id, &internal.key_id, &database.active.key_id, &kubernetes.active.key_id];
        for p in [PURPOSE_X509, PURPOSE_INTERNAL, PURPOSE_DATABASE, PURPOSE_KUBERNETES] {
            for r in published(p).filter(|r| !signing.contains(&&r.id)) {
                other_crl_issuers.push((p, load_ca(r)?));
            }
        }
        let sequence = sigil_core::domain::ca_rotation::bundle_sequence(records.iter().filter_map(|r| KeyState::parse(&r.state)));
        Ok(Self {
            sequence,
            x509,
            internal,
            jwt,
            x509_roots,
            internal_roots,
            jwt_public,
            ssh_user,
            ssh_host,
            database,
            kubernetes,
            x509_bundle_pem,
            loaded_from: shape(records),
            other_crl_issuers,
        })
    }

    /// The bundle's `spiffe_sequence`: grows with every rotation step, the
    /// same on every replica.
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// Whether `records` describe other keys or states than this was loaded
    /// from (a rotation step here or on another replica).
    pub fn differs_from(&self, records: &[CaKeyRecord]) -> bool {
        self.loaded_from != shape(records)
    }

    /// Signs an X.509-SVID; `crl_base` (the public URL) names this CA key's
    /// CRL in a CRL distribution point extension.
    pub fn sign_svid(&self, spki: &[u8], spiffe_id: &str, dns_sans: &[String], v: Validity, crl_base: Option<&str>) -> Result<Vec<u8>, CaError> {
        let crl_url = crl_base.map(|base| crl_url(base, &self.x509.key_id));
        Ok(self.x509.sign_leaf(spki, &LeafKind::Svid { spiffe_id: spiffe_id.into(), dns_sans: dns_sans.to_vec(), crl_url }, v)?)
    }

    /// The database or Kubernetes CA.
    pub fn access_ca(&self, purpose: sigil_core::domain::ca_rotation::Purpose) -> Option<&AccessCa> {
        use sigil_core::domain::ca_rotation::Purpose;
        match purpose {
            Purpose::Database => Some(&self.database),
            Purpose::Kubernetes => Some(&self.kubernetes),
            _ => None,
        }
    }

    /// The CAs whose CRLs are served, with their purpose: every published
    /// X.509 CA (X.509-SVID, internal, database, Kubernetes; prepared, active,
    /// previous), so what a previous key signed stays revocable until that
    /// key is retired.
    pub fn crl_issuers(&self) -> Vec<(&'static str, &CaCert)> {
        let mut v = vec![
            (PURPOSE_X509, &self.x509),
            (PURPOSE_INTERNAL, &self.internal),
            (PURPOSE_DATABASE, &self.database.active),
            (PURPOSE_KUBERNETES, &self.kubernetes.active),
        ];
        v.extend(self.other_crl_issuers.iter().map(|(p, c)| (*p, c)));
        v
    }

    /// OIDC JWKS document (`use: sig`).
    pub fn oidc_jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .jwt_public
            .iter()
            .map(|(kid, alg, jwk)| {
                let mut k = jwk.clone();
                k["kid"] = json!(kid);
                k["alg"] = json!(alg.jws_alg());
                k["use"] = json!("sig");
                k
            })
            .collect();
        json!({ "keys": keys })
    }

    /// SPIFFE bundle document (JWKS with x509-svid and jwt-svid keys).
    pub fn spiffe_bundle(&self, sequence: i64, refresh_hint: i64) -> Value {
        use base64::Engine as _;
        let mut keys = Vec::new();
        for der in &self.x509_roots {
            if let Some(mut jwk) = spki_jwk(der) {
                jwk["use"] = json!("x509-svid");
                jwk["x5c"] = json!([base64::engine::general_purpose::STANDARD.encode(der)]);
                keys.push(jwk);
            }
        }
        for (kid, _alg, jwk) in &self.jwt_public {
            let mut k = jwk.clone();
            k["kid"] = json!(kid);
            k["use"] = json!("jwt-svid");
            keys.push(k);
        }
        json!({ "keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": refresh_hint })
    }

    /// X.509 authorities as PEM (encoded once, at load).
    pub fn x509_bundle_pem(&self) -> String {
        self.x509_bundle_pem.clone()
    }

    /// Every published internal CA certificate ([`Authority::internal_roots`])
    /// as PEM: what a client trusts for the broker's TLS certificate.
    pub fn internal_ca_pem(&self) -> String {
        bundle_pem(&self.internal_roots)
    }
}

/// The authorities in use, replaced as a whole when the CA keys change
/// (rotation; another replica's rotation seen through the store). Readers take
/// a snapshot with [`AuthorityCell::current`] and use it for one operation, so a
/// credential and the bundle sent with it always come from one load.
#[derive(Debug)]
pub struct AuthorityCell(std::sync::RwLock<Arc<Authority>>);

impl AuthorityCell {
    /// A cell holding `a`.
    pub fn new(a: Authority) -> Self {
        Self(std::sync::RwLock::new(Arc::new(a)))
    }

    /// The authorities now in use.
    pub fn current(&self) -> Arc<Authority> {
        // A poisoned lock still holds a complete Arc (replace only swaps it).
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `a` in use for every later [`AuthorityCell::current`].
    pub fn replace(&self, a: Authority) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(a);
    }
}

/// Where the CRL of CA key `key_id` is served, under the public URL `base`.
pub fn crl_url(base: &str, key_id: &str) -> String {
    format!("{}/crl/{key_id}.crl", base.trim_end_matches('/'))
}

fn bundle_pem(roots: &[Vec<u8>]) -> String {
    roots.iter().map(|d| sigil_schemas::identity::to_pem("CERTIFICATE", d)).collect()
}

fn spki_jwk(cert_der: &[u8]) -> Option<Value> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use base64::Engine as _;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    match cert.public_key().parsed().ok()? {
        x509_parser::public_key::PublicKey::EC(p) => {
            let d = p.data();
            let n = (d.len() - 1) / 2;
            let crv = if n == 48 { "P-384" } else { "P-256" };
            Some(json!({"kty": "EC", "crv": crv, "x": B64URL.encode(&d[1..1 + n]), "y": B64URL.encode(&d[1 + n..])}))
        }
        x509_parser::public_key::PublicKey::RSA(r) => {
            let strip = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect::<Vec<u8>>();
            Some(json!({"kty": "RSA", "n": B64URL.encode(strip(r.modulus)), "e": B64URL.encode(strip(r.exponent))}))
        }
        _ => None,
    }
}

/// Generates a key for `purpose` (with its CA certificate, valid `ca_ttl`
/// from `now`) and the row that stores it in `state`. The caller inserts the
/// row, or discards the key when the insert loses to another replica's.
pub fn create_key(
    key_store: &KeyStore,
    td: &sigil_core::domain::TrustDomain,
    purpose: &str,
    alg: KeyAlg,
    ca_ttl: i64,
    now: i64,
    state: KeyState,
) -> Result<(CaKeyRecord, backend::NewKey), CaError> {
    let new = key_store.generate(purpose, alg)?;
    let key = &new.signer;
    let validity = Validity { not_before: now - lifetime::BACKDATE_SECS, not_after: now + ca_ttl };
    let (id, cert_der) = match purpose {
        PURPOSE_JWT => (keys::thumbprint(&key.public_key().jwk), None),
        // Content-addressed like a JWT key: the id is the SHA-256 of the SSH
        // public key blob (hex), the fingerprint ssh-keygen -l shows.
        PURPOSE_SSH_USER | PURPOSE_SSH_HOST => {
            let blob = key.public_key().ssh()?;
            (hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, blob.blob())), None)
        }
        PURPOSE_X509 => {
            let der = CaCert::create(key, &format!("Sigil X.509-SVID CA {td}"), Some(&td.id_string()), validity)?;
            (random_id()?, Some(der))
        }
        PURPOSE_DATABASE | PURPOSE_KUBERNETES => {
            let der = CaCert::create(key, &format!("Sigil {purpose} CA {td}"), None, validity)?;
            (random_id()?, Some(der))
        }
        _ => {
            let der = CaCert::create(key, &format!("Sigil internal CA {td}"), None, validity)?;
            (random_id()?, Some(der))
        }
    };
    let rec = CaKeyRecord {
        sealed_key: key_store.sealed_blob(&id, &new)?,
        key_ref: new.key_ref.clone(),
        id,
        purpose: purpose.into(),
        alg: alg.as_str().into(),
        cert_der,
        created_at: now,
        not_after: validity.not_after,
        state: state.as_str().into(),
        activated_at: if state == KeyState::Active { now } else { 0 },
        deactivated_at: 0,
    };
    Ok((rec, new))
}

/// A random 128-bit identifier, hex.
pub fn random_id() -> Result<String, CaError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CaError::Corrupt("rng".into(), "random generation failed".into()))?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use seal::SealKey;
    use crate::store::sqlite::SqliteStore;
    use base64::Engine as _;

    async fn authority(store: &Arc<dyn Store>, seal: &KeyStore, x509_alg: KeyAlg, jwt_alg: KeyAlg) -> Authority {
        let td = "example.org".parse().unwrap();
        let settings = CaSettings { x509_alg, jwt_alg, ca_ttl: 86_400, ..Default::default() };
        Authority::load_or_create(store, seal, &td, &settings, 1_800_000_000).await.unwrap()
    }

    fn verify_jwt(token: &str, jwks: &Value) -> Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).unwrap();
        let sig = b64.decode(parts[2]).unwrap();
        let msg = format!("{}.{}", parts[0], parts[1]);
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256};
        match header["alg"].as_str().unwrap() {
            "ES256" => {
                let mut point = vec![4u8];
                point.extend(b64.decode(key["x"].as_str().unwrap()).unwrap());
                point.extend(b64.decode(key["y"].as_str().unwrap()).unwrap());
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(msg.as_bytes(), &sig).unwrap();
            }
            "RS256" => {
                let n = b64.decode(key["n"].as_str().unwrap()).unwrap();
                let e = b64.decode(key["e"].as_str().unwrap()).unwrap();
                aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(&RSA_PKCS1_2048_8192_SHA256, msg.as_bytes(), &sig)
                    .unwrap();
            }
            other => panic!("unexpected alg {other}"),
        }
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn every_algorithm_combination_issues_verifiable_credentials() {
        let seal = KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        for (x509_alg, jwt_alg) in [(KeyAlg::EcP256, KeyAlg::Rsa2048), (KeyAlg::Rsa2048, KeyAlg::EcP256)] {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
            let a = authority(&store, &seal, x509_alg, jwt_alg).await;
            let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
            let spki = x509::csr_public_key(&csr).unwrap();
            let v = Validity { not_before: 1_800_000_000 - 10, not_after: 1_800_003_600 };
            let leaf = a.sign_svid(&spki, "spiffe://example.org/w", &[], v, None).unwrap();
            let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
            let (_, ca) = x509_parser::parse_x509_certificate(&a.x509.cert_der).unwrap();
            leaf.verify_signature(Some(ca.public_key())).unwrap();
            let aud = vec!["a".to_string()];
            let extra = Default::default();
            let claims = jwt::JwtClaims { issuer: "https://i", subject: "spiffe://example.org/w", audiences: &aud, issued_at: 1, expires_at: 2, jti: "j", extra: &extra };
            let token = jwt::sign(a.jwt.signer.as_ref(), a.jwt.alg, &a.jwt.kid, &claims).unwrap();
            let body = verify_jwt(&token, &a.oidc_jwks());
            assert_eq!(body["sub"], "spiffe://example.org/w");
            assert_eq!(body["aud"], "a");
        }
    }

    #[tokio::test]
    async fn brokers_starting_at_once_on_an_empty_store_agree_on_one_ca() {
        let seal = KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let (a, b) = tokio::join!(
            authority(&store, &seal, KeyAlg::EcP256, KeyAlg::Rsa2048),
            authority(&store, &seal, KeyAlg::EcP256, KeyAlg::Rsa2048)
        );
        assert_eq!(a.x509.cert_der, b.x509.cert_der, "both brokers sign with the same X.509 CA");
        assert_eq!(a.jwt.kid, b.jwt.kid, "both brokers sign JWTs with the same key");
        assert_eq!(a.ssh_user.public, b.ssh_user.public, "both brokers sign SSH user certificates with the same key");
        assert_eq!(store.list_ca_keys().await.unwrap().iter().filter(|k| k.state == "active").count(), 7);
    }

    #[tokio::test]
    async fn reloading_keeps_the_same_keys() {
        let seal = KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let a = authority(&store, &seal, KeyAlg::EcP256, KeyAlg::Rsa2048).await;
        let b = authority(&store, &seal, KeyAlg::EcP256, KeyAlg::Rsa2048).await;
        assert_eq!(a.jwt.kid, b.jwt.kid);
        assert_eq!(a.x509.cert_der, b.x509.cert_der);
        assert_eq!(a.oidc_jwks(), b.oidc_jwks());
        assert_eq!(b.internal_roots, vec![a.internal.cert_der.clone()], "the one internal CA is published");
        assert_eq!(a.ssh_host.public, b.ssh_host.public);
        assert_ne!(a.ssh_user.public, a.ssh_host.public, "user and host CAs are separate keys");
        assert_eq!(a.database.active.cert_der, b.database.active.cert_der);
        assert_ne!(a.database.active.cert_der, a.kubernetes.active.cert_der, "database and Kubernetes CAs are separate keys");
        assert_eq!(store.list_ca_keys().await.unwrap().len(), 7);
    }

    #[tokio::test]
    async fn an_upgraded_store_gets_its_ssh_database_and_kubernetes_cas_and_keeps_the_other_keys() {
        // A store written before the SSH, database and Kubernetes purposes existed: three active keys.
        let seal = KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let td: sigil_core::domain::TrustDomain = "example.org".parse().unwrap();
        for (p, alg) in [(PURPOSE_X509, KeyAlg::EcP256), (PURPOSE_INTERNAL, KeyAlg::EcP256), (PURPOSE_JWT, KeyAlg::Rsa2048)] {
            let (rec, _) = create_key(&seal, &td, p, alg, 86_400, 1_800_000_000, KeyState::Active).unwrap();
            store.insert_ca_key(&rec).await.unwrap();
        }
        let old = store.list_ca_keys().await.unwrap();
        let a = authority(&store, &seal, KeyAlg::EcP256, KeyAlg::Rsa2048).await;
        let now = store.list_ca_keys().await.unwrap();
        assert_eq!(now.len(), 7);
        assert!(old.iter().all(|o| now.iter().any(|n| n.id == o.id && n.state == "active")), "the old keys stay active");
        assert_eq!(a.ssh_user.public.key_type(), sigil_core::ssh::KeyType::Ed25519);
        assert_eq!(a.ssh_user.published.len(), 1);
        let ssh_row = now.iter().find(|r| r.purpose == PURPOSE_SSH_USER).unwrap();
        assert_eq!(ssh_row.alg, "ed25519");
        assert!(ssh_row.cert_der.is_none(), "an SSH CA is a raw key");
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a.ssh_user.public.blob());
        assert_eq!(ssh_row.id, hex::encode(sha), "content-addressed");
        for (p, ca) in [(PURPOSE_DATABASE, &a.database), (PURPOSE_KUBERNETES, &a.kubernetes)] {
            let row = now.iter().find(|r| r.purpose == p).unwrap();
            assert_eq!((row.alg.as_str(), row.state.as_str()), ("ec-p256", "active"), "{p}");
            assert_eq!(ca.roots, vec![row.cert_der.clone().unwrap()], "{p}: its one certificate is published");
        }
    }

    #[tokio::test]
    async fn wrong_seal_key_cannot_open_the_cas() {
        let seal = KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        authority(&store, &seal, KeyAlg::EcP256, KeyAlg::Rsa2048).await;
        let other = KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        let td = "example.org".parse().unwrap();
        let err = Authority::load_or_create(&store, &other, &td, &CaSettings::default(), 1_800_000_000).await.unwrap_err();
        assert!(err.to_string().contains("wrong seal key"), "{err}");
    }
}
