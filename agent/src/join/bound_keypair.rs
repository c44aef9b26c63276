//! The `bound_keypair` join method: the agent's own Ed25519 key (created in the
//! state directory on first use) signs the broker's challenge
//! ([`crate::join::client::bound_keypair::join`]). The join sequence the broker last
//! gave is kept in the state directory: a copy of the key that joins with a
//! stale sequence is detected by the broker and the binding locked.

use secrecy::{ExposeSecret, SecretString};
use super::{JoinError, JoinMethod};
use crate::files;
use crate::join::client::bound_keypair::{self as bk, AgentKey, ClientError};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::PathBuf;
use tonic::transport::Channel;

const METHOD: &str = sigil_core::domain::Method::BoundKeypair.name();
/// Default key file name in the state directory.
pub const KEY_FILE: &str = "bound_keypair.key";
/// Join sequence file name in the state directory.
pub const SEQUENCE_FILE: &str = "bound_keypair.sequence";

/// Joins with a bound key.
#[derive(Debug, Clone)]
pub struct BoundKeypairJoin {
    token_name: String,
    key_file: PathBuf,
    sequence_file: PathBuf,
    registration_secret: Option<SecretString>,
    registration_secret_file: Option<PathBuf>,
}

fn client_err(e: ClientError) -> JoinError {
    match e {
        ClientError::Broker(s) => JoinError::from_status(METHOD, &s),
        other => JoinError::Platform { method: METHOD, message: other.to_string() },
    }
}

impl BoundKeypairJoin {
    /// A bound-keypair join; `state_dir` holds the sequence (and the key unless `key_file` is set).
    pub fn new(
        token_name: String,
        state_dir: &std::path::Path,
        key_file: Option<PathBuf>,
        registration_secret: Option<SecretString>,
        registration_secret_file: Option<PathBuf>,
    ) -> Self {
        Self {
            token_name,
            key_file: key_file.unwrap_or_else(|| state_dir.join(KEY_FILE)),
            sequence_file: state_dir.join(SEQUENCE_FILE),
            registration_secret,
            registration_secret_file,
        }
    }

    /// The key, created (0600) on first use. An existing key file is read
    /// never through a symlink and narrowed to 0600 ([`sigil_core::fsutil::read_private`]):
    /// a link planted there could hand the agent a key someone else holds.
    pub fn key(&self) -> Result<AgentKey, JoinError> {
        let path = self.key_file.display().to_string();
        let platform = |message: String| JoinError::Platform { method: METHOD, message };
        match sigil_core::fsutil::read_private_text(&self.key_file, sigil_core::fsutil::MAX_PRIVATE_READ).map_err(|e| platform(e.to_string()))? {
            Some(pem) => AgentKey::from_pem(&pem).map_err(|e| platform(format!("{path}: {e}"))),
            None => {
                let key = AgentKey::generate().map_err(client_err)?;
                super::super::outputs::ensure_parent(&self.key_file).map_err(|e| JoinError::Platform { method: METHOD, message: e.to_string() })?;
                // A new key starts at sequence 0 (the broker binds it afresh).
                match std::fs::remove_file(&self.sequence_file) {
                    Ok(()) => tracing::info!(sequence_file = %self.sequence_file.display(), "new bound key: removed the old key's join sequence"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(JoinError::ReadCredential { method: METHOD, path: self.sequence_file.display().to_string(), source }),
                }
                files::write_atomic(&self.key_file, key.to_pem().as_bytes()).map_err(|e| JoinError::Platform { method: METHOD, message: e.to_string() })?;
                tracing::info!(key_file = %path, public_key = %key.public_key_b64(), "created the bound key (pre-register this public key in the join token's config.public_key, or join once with its registration secret)");
                Ok(key)
            }
        }
    }

    /// The join state the broker last gave (sequence 0 before the first join),
    /// read as the key is.
    pub fn state(&self) -> Result<bk::JoinState, JoinError> {
        let platform = |message: String| JoinError::Platform { method: METHOD, message };
        match sigil_core::fsutil::read_private_text(&self.sequence_file, sigil_core::fsutil::MAX_PRIVATE_READ).map_err(|e| platform(e.to_string()))? {
            Some(s) => bk::JoinState::parse(&s).map_err(|e| platform(format!("{} {e}", self.sequence_file.display()))),
            None => Ok(bk::JoinState::default()),
        }
    }

    /// The sequence the broker last gave (0 before the first join).
    pub fn sequence(&self) -> Result<i64, JoinError> {
        Ok(self.state()?.sequence)
    }

    fn save(&self, state: &bk::JoinState) -> Result<(), files::FileError> {
        files::write_atomic(&self.sequence_file, state.render().as_bytes())
    }

    fn registration_secret(&self) -> Result<Option<SecretString>, JoinError> {
        if let Some(p) = &self.registration_secret_file {
            let s = std::fs::read_to_string(p).map_err(|source| JoinError::ReadCredential { method: METHOD, path: p.display().to_string(), source })?;
            return Ok(Some(SecretString::from(s.trim().to_string())).filter(|s| !s.expose_secret().is_empty()));
        }
        Ok(self.registration_secret.clone().filter(|s| !s.expose_secret().is_empty()))
    }
}

#[async_trait]
impl JoinMethod for BoundKeypairJoin {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        let key = self.key()?;
        // The attempt is saved before the join: if the answer is lost, the
        // retry presents it and the broker answers again instead of locking.
        let state = self.state()?.start().map_err(client_err)?;
        self.save(&state).map_err(|e| JoinError::Platform { method: METHOD, message: format!("cannot save the join attempt: {e}") })?;
        // The registration secret only matters before the key is bound.
        let secret = if state.sequence == 0 { self.registration_secret()? } else { None };
        let (r, next) = bk::join(client, &key, &self.token_name, &state, secret.as_ref().map(|s| s.expose_secret()), csr, ttl_seconds).await.map_err(client_err)?;
        // The broker has advanced: the next join must present `next`. The identity
        // is still good if this write fails, so keep it, but say loudly what to fix.
        if let Err(e) = self.save(&state.after_join()) {
            tracing::error!(error = %e, sequence = next, "joined, but cannot save the join sequence; the next join will be refused as a copy unless {} holds {next}", self.sequence_file.display());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_in_the_state_dir_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let j = BoundKeypairJoin::new("edge".into(), d.path(), None, None, None);
        let a = j.key().unwrap().public_key_b64();
        assert_eq!(j.key().unwrap().public_key_b64(), a);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(d.path().join(KEY_FILE)).unwrap().mode() & 0o777, 0o600);
        assert_eq!(j.sequence().unwrap(), 0);
    }

    #[test]
    fn corrupt_sequence_file_is_named_not_reset() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(SEQUENCE_FILE), "seven").unwrap();
        let j = BoundKeypairJoin::new("edge".into(), d.path(), None, None, None);
        assert!(j.sequence().unwrap_err().to_string().contains(SEQUENCE_FILE));
    }

    #[test]
    fn a_new_key_starts_over_at_sequence_zero() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(SEQUENCE_FILE), "7").unwrap();
        let j = BoundKeypairJoin::new("edge".into(), d.path(), None, None, None);
        j.key().unwrap();
        assert_eq!(j.sequence().unwrap(), 0);
    }

    #[test]
    fn registration_secret_never_shows_in_debug() {
        let d = tempfile::tempdir().unwrap();
        let j = BoundKeypairJoin::new("edge".into(), d.path(), None, Some(SecretString::from("reg-s3cret")), None);
        assert!(!format!("{j:?}").contains("reg-s3cret"));
    }
}
