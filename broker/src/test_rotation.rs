//! Test support: the internal CA rotation phases as [`Authority`] snapshots,
//! built from CA rows the way a reload sees them (until tests can drive the
//! rotation service, and for unit tests that need no store of their own).
#![allow(clippy::unwrap_used)]

use crate::ca::backend::KeyStore;
use crate::ca::lifetime::Validity;
use crate::ca::seal::SealKey;
use crate::ca::x509::CaCert;
use crate::ca::{Authority, CaSettings, PURPOSE_INTERNAL};
use crate::store::sqlite::SqliteStore;
use crate::store::{CaKeyRecord, Store};
use sigil_core::keys::KeyAlg;
use std::sync::Arc;

/// The time the rows are made at.
pub const T0: i64 = 1_800_000_000;

/// The CA rows of one broker plus a second internal CA, and snapshots of the
/// rotation phases built from them (a fresh store each, as another replica's
/// reload would see the rows).
pub struct Rotation {
    /// Opens the rows.
    pub keys: KeyStore,
    /// x509-svid, jwt-svid and the first internal CA (A), all active.
    pub first: Vec<CaKeyRecord>,
    /// The second internal CA (B), state set per phase.
    pub next: CaKeyRecord,
}

impl Rotation {
    /// A fresh set of rows.
    pub async fn new() -> Self {
        let keys = KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let td = "example.org".parse().unwrap();
        Authority::load_or_create(&store, &keys, &td, &CaSettings::default(), T0).await.unwrap();
        let first = store.list_ca_keys().await.unwrap();
        let new = keys.generate(PURPOSE_INTERNAL, KeyAlg::EcP256).unwrap();
        let v = Validity { not_before: T0 - 10, not_after: T0 + 365 * 24 * 3600 };
        let cert = CaCert::create(&new.signer, "Sigil internal CA example.org", None, v).unwrap();
        let id = crate::ca::random_id().unwrap();
        let next = CaKeyRecord {
            sealed_key: keys.sealed_blob(&id, &new).unwrap(),
            key_ref: new.key_ref.clone(),
            id,
            purpose: PURPOSE_INTERNAL.into(),
            alg: "ec-p256".into(),
            cert_der: Some(cert),
            created_at: T0 + 1,
            not_after: v.not_after,
            state: "prepared".into(),
            activated_at: 0,
            deactivated_at: 0,
        };
        Self { keys, first, next }
    }

    /// The authorities with internal CA A in state `a` (None: gone) and B in
    /// state `b` (None: not made yet).
    pub async fn phase(&self, a: Option<&str>, b: Option<&str>) -> Authority {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        for r in &self.first {
            let mut r = r.clone();
            if r.purpose == PURPOSE_INTERNAL {
                match a {
                    Some(s) => r.state = s.into(),
                    None => continue,
                }
            }
            store.insert_ca_key(&r).await.unwrap();
        }
        if let Some(s) = b {
            let mut r = self.next.clone();
            r.state = s.into();
            store.insert_ca_key(&r).await.unwrap();
        }
        let td = "example.org".parse().unwrap();
        Authority::load_or_create(&store, &self.keys, &td, &CaSettings::default(), T0).await.unwrap()
    }

    /// A active, B prepared.
    pub async fn prepared(&self) -> Authority {
        self.phase(Some("active"), Some("prepared")).await
    }
    /// A previous, B active.
    pub async fn activated(&self) -> Authority {
        self.phase(Some("previous"), Some("active")).await
    }
    /// A gone (retired), B active.
    pub async fn retired(&self) -> Authority {
        self.phase(None, Some("active")).await
    }
}

