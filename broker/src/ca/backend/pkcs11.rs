//! The PKCS#11 backend: CA and JWT keys generated inside a token and used
//! through `C_Sign` only.
//!
//! Threat model, and what this file prevents:
//! - *Key material leaving the token*: keys are generated in the token with
//!   `CKA_TOKEN=true, CKA_PRIVATE=true, CKA_SENSITIVE=true,
//!   CKA_EXTRACTABLE=false`; nothing here reads a private attribute, and the
//!   store row keeps only a [`KeyRef`]. A token key found extractable at open
//!   is refused.
//! - *A different key under the same id* (token re-initialised, object
//!   replaced): the public key in the row must equal the token's at open.
//! - *The PIN in logs or errors*: it is held in a `SecretString`, read from a
//!   file or the environment, and no error formats it.
//! - *Unbounded concurrency on the token*: at most `sessions` signatures run at
//!   once (one per pooled session); further callers wait for a session, on a
//!   worker that first hands its other tasks away (`block_in_place`), so a slow
//!   token delays issuance only.
//! - *A lost session or a removed token*: the failing session is dropped and
//!   reopened once; if that fails too, the request fails with an error naming
//!   the token, and the next request tries again.
//!
//! Several replicas may share one token (or copies of it): every replica opens
//! the keys named in the shared store by `CKA_ID`.

use super::{der, KeyRef, KeySigner, PublicKey};
use crate::ca::keys::{KeyAlg, KeyError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// DER OID of prime256v1 (`CKA_EC_PARAMS`).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Default number of sessions (concurrent signatures) per broker.
pub const DEFAULT_SESSIONS: usize = 4;

/// The PKCS#11 backend failed. No variant carries the PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {path}: {reason}")]
    Module {
        /// Module path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No slot holds a token with this label.
    #[error("PKCS#11 token {label:?} not found (tokens present: {present}); check keys.token_label and that the token is initialised")]
    TokenNotFound {
        /// Configured label.
        label: String,
        /// Labels seen.
        present: String,
    },
    /// Login refused (wrong PIN, locked PIN ...).
    #[error("PKCS#11 login to token {label:?} failed: {reason}; check keys.pin_file or SIGIL_PKCS11_PIN")]
    Login {
        /// Token label.
        label: String,
        /// The return value (never the PIN).
        reason: String,
    },
    /// A token operation failed.
    #[error("PKCS#11 token {label:?}: {op} failed: {reason}")]
    Token {
        /// Token label.
        label: String,
        /// Operation.
        op: &'static str,
        /// The return value.
        reason: String,
    },
    /// An algorithm the PKCS#11 backend does not generate or open.
    #[error("{alg} keys are not supported with keys.backend pkcs11 (PKCS#11 2.40 tokens have no common Ed25519 mechanism): set ssh.key_alg: ecdsa (or rsa), or use the sealed backend")]
    Unsupported {
        /// The algorithm.
        alg: &'static str,
    },
    /// The key named by a store row is not in the token.
    #[error("PKCS#11 token {label:?} has no key with CKA_ID {id} (label {key_label}); every replica needs the same token keys (docs/hsm.md)")]
    KeyNotFound {
        /// Token label.
        label: String,
        /// Key id, hex.
        id: String,
        /// Key label.
        key_label: String,
    },
    /// The token's key is not the one the row names, or not protected.
    #[error("PKCS#11 key {id} refused: {reason}")]
    KeyRefused {
        /// Key id, hex.
        id: String,
        /// Why.
        reason: String,
    },
}

/// `keys:` with `backend: pkcs11`, resolved (PIN read).
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// User PIN.
    pub pin: AuthPin,
    /// Pooled sessions = maximum concurrent signatures.
    pub sessions: usize,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Config({}, token {:?}, pin <redacted>, {} sessions)", self.module.display(), self.token_label, self.sessions)
    }
}

/// An open token.
#[derive(Debug, Clone)]
pub struct Pkcs11Backend {
    inner: Arc<Token>,
}

struct Token {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    serial: String,
    pin: AuthPin,
    pool: Vec<Mutex<Option<Session>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?}, serial {})", self.label, self.serial)
    }
}

fn rv(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, func) => format!("{func}: CKR_{rv:?}"),
        other => other.to_string(),
    }
}

/// Errors after which the session is dropped and reopened.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::DeviceError,
            _
        )
    )
}

impl Pkcs11Backend {
    /// Loads the module, finds the token and logs in (so a wrong PIN or a
    /// missing token fails at startup).
    pub fn connect(cfg: Pkcs11Config) -> Result<Self, Pkcs11Error> {
        let module_err = |reason: String| Pkcs11Error::Module { path: cfg.module.display().to_string(), reason };
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| module_err(e.to_string()))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module_err(rv(&e))),
        }
        let mut present = Vec::new();
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(|e| module_err(rv(&e)))? {
            let Ok(info) = ctx.get_token_info(slot) else { continue };
            let label = info.label().trim_end().to_string();
            if label == cfg.token_label {
                found = Some((slot, info.serial_number().trim_end().to_string()));
                break;
            }
            present.push(format!("{label:?}"));
        }
        let (slot, serial) = found.ok_or_else(|| Pkcs11Error::TokenNotFound {
            label: cfg.token_label.clone(),
            present: if present.is_empty() { "none".into() } else { present.join(", ") },
        })?;
        let sessions = cfg.sessions.clamp(1, 64);
        let token = Token {
            ctx,
            slot,
            label: cfg.token_label,
            serial,
            pin: cfg.pin,
            pool: (0..sessions).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        // Open the first pooled session now: this is the login check.
        let first = token.open_session(false)?;
        *token.pool[0].lock().unwrap_or_else(|p| p.into_inner()) = Some(first);
        Ok(Self { inner: Arc::new(token) })
    }

    /// Token label and serial.
    pub fn token(&self) -> (&str, &str) {
        (&self.inner.label, &self.inner.serial)
    }

    /// Generates a key pair in the token for `purpose`.
    pub fn generate(&self, purpose: &str, alg: KeyAlg) -> Result<(Arc<dyn KeySigner>, KeyRef), Pkcs11Error> {
        if alg == KeyAlg::Ed25519 {
            return Err(Pkcs11Error::Unsupported { alg: alg.as_str() });
        }
        let t = &self.inner;
        let id = random_id().map_err(|reason| t.err("random id", reason))?;
        let label = format!("sigil-{purpose}-{}", &hex::encode(&id)[..12]);
        let common = |private: bool| {
            let mut a = vec![
                Attribute::Token(true),
                Attribute::Id(id.clone()),
                Attribute::Label(label.clone().into_bytes()),
                Attribute::Private(private),
            ];
            // Signing only: no decrypt, unwrap or derive use of a CA key.
            if private {
                a.extend([
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Decrypt(false),
                    Attribute::Unwrap(false),
                    Attribute::Derive(false),
                ]);
            } else {
                a.extend([Attribute::Verify(true), Attribute::Encrypt(false), Attribute::Wrap(false)]);
            }
            a
        };
        let (mech, mut public_tpl, private_tpl) = match alg {
            KeyAlg::EcP256 => (Mechanism::EccKeyPairGen, common(false), common(true)),
            KeyAlg::Rsa2048 | KeyAlg::Ed25519 => (Mechanism::RsaPkcsKeyPairGen, common(false), common(true)),
        };
        match alg {
            KeyAlg::EcP256 => public_tpl.push(Attribute::EcParams(P256_PARAMS.to_vec())),
            KeyAlg::Rsa2048 | KeyAlg::Ed25519 => public_tpl.extend([Attribute::ModulusBits(2048.into()), Attribute::PublicExponent(vec![1, 0, 1])]),
        }
        let session = t.open_session(true)?;
        let (public_h, _) = session
            .generate_key_pair(&mech, &public_tpl, &private_tpl)
            .map_err(|e| t.err("C_GenerateKeyPair", rv(&e)))?;
        let public = read_public(&session, public_h, alg).map_err(|reason| t.err("reading the new public key", reason))?;
        let key_ref = KeyRef {
            backend: "pkcs11".into(),
            token_label: t.label.clone(),
            token_serial: t.serial.clone(),
            id: hex::encode(&id),
            label,
            public_key: B64URL.encode(&public.raw),
        };
        tracing::info!(token = %t.label, key_id = %key_ref.id, key_label = %key_ref.label, alg = alg.as_str(), "generated a CA key in the PKCS#11 token");
        Ok((Arc::new(TokenKey { token: self.inner.clone(), id, alg, public }), key_ref))
    }

    /// Opens the token key a store row names.
    pub fn open(&self, alg: KeyAlg, r: &KeyRef) -> Result<Arc<dyn KeySigner>, Pkcs11Error> {
        if alg == KeyAlg::Ed25519 {
            return Err(Pkcs11Error::Unsupported { alg: alg.as_str() });
        }
        let t = &self.inner;
        let refused = |reason: String| Pkcs11Error::KeyRefused { id: r.id.clone(), reason };
        let id = hex::decode(&r.id).map_err(|_| refused("CKA_ID is not hex".into()))?;
        let public = t.with_session(|s| {
            let find = |class| s.find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())]);
            let private = find(ObjectClass::PRIVATE_KEY)?;
            let public = find(ObjectClass::PUBLIC_KEY)?;
            let flags = match private.first() {
                Some(h) => s.get_attributes(*h, &[AttributeType::Sensitive, AttributeType::Extractable])?,
                None => Vec::new(),
            };
            Ok((private.len(), public.first().copied(), flags))
        })?;
        let (count, public_h, flags) = public;
        if count == 0 {
            return Err(Pkcs11Error::KeyNotFound { label: t.label.clone(), id: r.id.clone(), key_label: r.label.clone() });
        }
        if count > 1 {
            return Err(refused(format!("{count} private keys share this CKA_ID")));
        }
        let protected = flags.contains(&Attribute::Sensitive(true)) && flags.contains(&Attribute::Extractable(false));
        if !protected {
            return Err(refused("the private key is not CKA_SENSITIVE=true, CKA_EXTRACTABLE=false".into()));
        }
        let public_h = public_h.ok_or_else(|| refused("no public key object with this CKA_ID".into()))?;
        let public = t
            .with_session(|s| Ok(read_public(s, public_h, alg)))?
            .map_err(|reason| t.err("reading the public key", reason))?;
        if B64URL.encode(&public.raw) != r.public_key {
            return Err(refused("the token's public key differs from the one in the store".into()));
        }
        Ok(Arc::new(TokenKey { token: self.inner.clone(), id, alg, public }))
    }

    /// Destroys a key this broker generated but did not store (another
    /// replica stored its own first).
    pub fn destroy(&self, r: &KeyRef) -> Result<(), Pkcs11Error> {
        let t = &self.inner;
        let id = hex::decode(&r.id).map_err(|_| t.err("destroy", "CKA_ID is not hex".into()))?;
        let session = t.open_session(true)?;
        let objects = session.find_objects(&[Attribute::Id(id)]).map_err(|e| t.err("C_FindObjects", rv(&e)))?;
        for h in objects {
            session.destroy_object(h).map_err(|e| t.err("C_DestroyObject", rv(&e)))?;
        }
        Ok(())
    }
}

impl Token {
    fn err(&self, op: &'static str, reason: String) -> Pkcs11Error {
        Pkcs11Error::Token { label: self.label.clone(), op, reason }
    }

    /// A logged-in session (the login is per application and token: a second
    /// session finds the user logged in already).
    fn open_session(&self, rw: bool) -> Result<Session, Pkcs11Error> {
        let s = if rw { self.ctx.open_rw_session(self.slot) } else { self.ctx.open_ro_session(self.slot) }
            .map_err(|e| self.err("C_OpenSession", rv(&e)))?;
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
            Err(e) => Err(Pkcs11Error::Login { label: self.label.clone(), reason: rv(&e) }),
        }
    }

    /// Runs `f` on a pooled session; a session lost mid-call is reopened
    /// and `f` retried once.
    fn with_session<T>(&self, f: impl Fn(&Session) -> Result<T, CkError>) -> Result<T, Pkcs11Error> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // A free session if there is one, else wait for ours: at most n callers run.
        let mut guard = (0..n)
            .find_map(|i| self.pool[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| self.pool[start].lock().unwrap_or_else(|p| p.into_inner()));
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.open_session(false)?);
            }
            let Some(session) = guard.as_ref() else { continue };
            match f(session) {
                Ok(v) => return Ok(v),
                Err(e) if session_lost(&e) && attempt == 0 => {
                    tracing::warn!(token = %self.label, error = %rv(&e), "PKCS#11 session lost; reopening");
                    *guard = None;
                }
                Err(e) => return Err(self.err("token operation", rv(&e))),
            }
        }
        Err(self.err("token operation", "session lost twice".into()))
    }
}

/// Runs a blocking token call. On a multi-threaded runtime the worker hands its
/// other tasks to another thread first, so a slow HSM or callers waiting for a
/// pooled session never stall requests that need no signature.
fn off_the_async_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn random_id() -> Result<Vec<u8>, String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = vec![0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).map_err(|_| "random generation failed".to_string())?;
    Ok(b)
}

fn read_public(s: &Session, h: ObjectHandle, alg: KeyAlg) -> Result<PublicKey, String> {
    let want: &[AttributeType] = match alg {
        KeyAlg::EcP256 => &[AttributeType::KeyType, AttributeType::EcParams, AttributeType::EcPoint],
        KeyAlg::Rsa2048 => &[AttributeType::KeyType, AttributeType::Modulus, AttributeType::PublicExponent],
        KeyAlg::Ed25519 => return Err("Ed25519 is not supported in PKCS#11 tokens".into()),
    };
    let attrs = s.get_attributes(h, want).map_err(|e| rv(&e))?;
    let (mut kind, mut params, mut point, mut n, mut e) = (None, None, None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(k) => kind = Some(k),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    match alg {
        KeyAlg::EcP256 => {
            if kind != Some(KeyType::EC) || params.as_deref() != Some(P256_PARAMS) {
                return Err("not an EC P-256 key".into());
            }
            Ok(PublicKey::ec(point.as_deref().and_then(der::ec_point).ok_or("unreadable CKA_EC_POINT")?))
        }
        KeyAlg::Rsa2048 => match (kind, n, e) {
            (Some(KeyType::RSA), Some(n), Some(e)) if n.iter().skip_while(|&&b| b == 0).count() == 256 => Ok(PublicKey::rsa(&n, &e)),
            _ => Err("not an RSA 2048 key".into()),
        },
        KeyAlg::Ed25519 => Err("Ed25519 is not supported in PKCS#11 tokens".into()),
    }
}

/// A key inside the token.
struct TokenKey {
    token: Arc<Token>,
    id: Vec<u8>,
    alg: KeyAlg,
    public: PublicKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({:?}, {}, {})", self.token.label, hex::encode(&self.id), self.alg.as_str())
    }
}

impl KeySigner for TokenKey {
    fn alg(&self) -> KeyAlg {
        self.alg
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        // CKM_ECDSA signs a digest (every token has it; CKM_ECDSA_SHA256 is optional).
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        let (mech, input) = match self.alg {
            KeyAlg::EcP256 => (Mechanism::Ecdsa, digest.as_ref()),
            KeyAlg::Rsa2048 => (Mechanism::Sha256RsaPkcs, msg),
            KeyAlg::Ed25519 => return Err(KeyError::Crypto("Ed25519 is not supported in PKCS#11 tokens".into())),
        };
        // Looked up by CKA_ID at every signature: object handles do not survive a
        // reopened session on every token, and a removed token shows as "no key".
        let t = &self.token;
        let sig = off_the_async_worker(|| t.with_session(|s| {
                let found = s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Id(self.id.clone())])?;
                found.first().map(|h| s.sign(&mech, *h, input)).transpose()
            }))
            .and_then(|sig| {
                sig.ok_or_else(|| Pkcs11Error::KeyNotFound {
                    label: t.label.clone(),
                    id: hex::encode(&self.id),
                    key_label: "(token removed or re-initialised?)".into(),
                })
            })
            .map_err(|e| {
                tracing::warn!(error = %e, "PKCS#11 signature failed");
                KeyError::Crypto(e.to_string())
            })?;
        let expected = match self.alg {
            KeyAlg::EcP256 => 64,
            KeyAlg::Rsa2048 => 256,
            KeyAlg::Ed25519 => 64,
        };
        if sig.len() != expected {
            return Err(KeyError::Crypto(format!("PKCS#11 signature of {} bytes, expected {expected}", sig.len())));
        }
        Ok(sig)
    }
}
