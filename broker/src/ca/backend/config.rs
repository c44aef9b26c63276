//! `keys:` of the server config, resolved into a [`KeyStore`]: the PIN is
//! read here (file, else `SIGIL_PKCS11_PIN`) and goes nowhere but the token.

use super::pkcs11::{Pkcs11Backend, Pkcs11Config, DEFAULT_SESSIONS};
use super::{BackendError, KeyStore};
use crate::ca::seal::SealKey;
use crate::config::{KeyBackendName, KeysConfig};

/// The environment variable holding the PIN when `pin_file` is absent.
pub const PIN_ENV: &str = "SIGIL_PKCS11_PIN";

/// Longest PIN file read.
const MAX_PIN_FILE: u64 = 4096;

/// A `keys:` setting is incomplete or its PIN unreadable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysConfigError {
    /// A field `backend: pkcs11` needs is missing.
    #[error("keys.{0} is required with keys.backend: pkcs11 (docs/hsm.md)")]
    Missing(&'static str),
    /// The PIN file cannot be read.
    #[error("keys.pin_file {0}: {1}")]
    PinFile(String, String),
    /// No PIN given at all.
    #[error("no PKCS#11 PIN: set keys.pin_file or {PIN_ENV}")]
    NoPin,
    /// The sealed fields are set with the sealed backend.
    #[error("keys.{0} only applies to keys.backend: pkcs11")]
    NotPkcs11(&'static str),
    /// Opening the token.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The key store `keys:` asks for; with `pkcs11` the token is opened and
/// logged in to now, so a wrong PIN or a missing token stops the start.
pub fn key_store(cfg: &KeysConfig, seal: SealKey) -> Result<KeyStore, KeysConfigError> {
    if cfg.backend == KeyBackendName::Sealed {
        for (set, name) in [(cfg.module.is_some(), "module"), (cfg.token_label.is_some(), "token_label"), (cfg.pin_file.is_some(), "pin_file"), (cfg.sessions.is_some(), "sessions")] {
            if set {
                return Err(KeysConfigError::NotPkcs11(name));
            }
        }
        return Ok(KeyStore::sealed(seal));
    }
    let module = cfg.module.clone().ok_or(KeysConfigError::Missing("module"))?;
    let token_label = cfg.token_label.clone().ok_or(KeysConfigError::Missing("token_label"))?;
    let pin = read_pin(cfg)?;
    let backend = Pkcs11Backend::connect(Pkcs11Config { module, token_label, pin: pin.into(), sessions: cfg.sessions.unwrap_or(DEFAULT_SESSIONS) })
        .map_err(BackendError::from)?;
    let (label, serial) = backend.token();
    tracing::info!(token = %label, serial = %serial, "CA keys: new keys are generated in the PKCS#11 token");
    Ok(KeyStore::with_pkcs11(seal, backend))
}

fn read_pin(cfg: &KeysConfig) -> Result<String, KeysConfigError> {
    let pin = match &cfg.pin_file {
        Some(path) => {
            use std::io::Read as _;
            let shown = path.display().to_string();
            let f = std::fs::File::open(path).map_err(|e| KeysConfigError::PinFile(shown.clone(), e.to_string()))?;
            let mut text = String::new();
            f.take(MAX_PIN_FILE)
                .read_to_string(&mut text)
                .map_err(|e| KeysConfigError::PinFile(shown.clone(), e.to_string()))?;
            text
        }
        None => std::env::var(PIN_ENV).map_err(|_| KeysConfigError::NoPin)?,
    };
    let pin = pin.trim_end_matches(['\r', '\n']).to_string();
    if pin.is_empty() {
        return Err(KeysConfigError::NoPin);
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> KeysConfig {
        serde_norway::from_str(text).unwrap()
    }

    fn seal() -> SealKey {
        SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap()
    }

    #[test]
    fn sealed_is_the_default_and_refuses_token_settings() {
        assert_eq!(parse("{}").backend, KeyBackendName::Sealed);
        assert_eq!(key_store(&parse("{}"), seal()).unwrap().generating_backend(), "sealed");
        let err = key_store(&parse("{module: /x.so}"), seal()).unwrap_err().to_string();
        assert!(err.contains("keys.module only applies to keys.backend: pkcs11"), "{err}");
        assert!(serde_norway::from_str::<KeysConfig>("{backend: hsm}").is_err());
        assert!(serde_norway::from_str::<KeysConfig>("{backend: pkcs11, pin: '1234'}").is_err(), "no PIN in the config itself");
    }

    #[test]
    fn pkcs11_needs_a_module_a_token_and_a_pin() {
        let err = key_store(&parse("{backend: pkcs11, token_label: t}"), seal()).unwrap_err().to_string();
        assert!(err.contains("keys.module is required"), "{err}");
        let err = key_store(&parse("{backend: pkcs11, module: /x.so}"), seal()).unwrap_err().to_string();
        assert!(err.contains("keys.token_label is required"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "\n").unwrap();
        let cfg = parse(&format!("{{backend: pkcs11, module: /x.so, token_label: t, pin_file: {}}}", pin.display()));
        assert!(matches!(key_store(&cfg, seal()), Err(KeysConfigError::NoPin)));
        let missing = dir.path().join("absent");
        let cfg = parse(&format!("{{backend: pkcs11, module: /x.so, token_label: t, pin_file: {}}}", missing.display()));
        assert!(matches!(key_store(&cfg, seal()), Err(KeysConfigError::PinFile(..))));
    }
}
