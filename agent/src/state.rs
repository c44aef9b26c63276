//! The agent's state directory: its own bot identity, written atomically so a
//! crash leaves the previous identity or the new one, never neither.

use super::files::{self, FileError};
use sigil_schemas::identity::{Identity, IdentityError};
use std::path::{Path, PathBuf};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Directory or file I/O.
    #[error(transparent)]
    File(#[from] FileError),
    /// The stored identity does not parse.
    #[error("stored identity {path} is unusable: {source}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        source: IdentityError,
    },
}

/// File name of the stored identity.
pub const IDENTITY_FILE: &str = "identity";

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating with mode 0700) the directory and clears stale temp files.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let d = files::private_dir(dir)?;
        d.remove_stale_temps(None);
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Path of the identity file.
    pub fn identity_path(&self) -> PathBuf {
        self.dir.join(IDENTITY_FILE)
    }

    /// The stored identity and its NotAfter, if there is one. Read never
    /// through a symlink ([`sigil_core::fsutil::read_private`]).
    pub fn load(&self) -> Result<Option<(Identity, i64)>, StateError> {
        let path = self.identity_path();
        let Some(text) = sigil_core::fsutil::read_private_text(&path, sigil_core::fsutil::MAX_PRIVATE_READ)? else { return Ok(None) };
        let err = |source| StateError::Identity { path: path.clone(), source };
        let id = Identity::from_pem(&text).map_err(err)?;
        let (_, not_after) = id.subject().map_err(err)?;
        Ok(Some((id, not_after)))
    }

    /// Stores an identity atomically (0600).
    pub fn save(&self, id: &Identity) -> Result<(), StateError> {
        Ok(files::write_atomic(&self.identity_path(), id.to_pem().as_bytes())?)
    }
}
