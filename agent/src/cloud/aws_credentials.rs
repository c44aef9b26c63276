//! Temporary AWS credentials and the two forms SDKs read them in: a shared
//! credentials file profile and the `credential_process` JSON document.

use secrecy::{ExposeSecret, SecretString};
use super::files;
use serde_json::json;
use std::path::Path;

/// Temporary AWS credentials (STS or Roles Anywhere).
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    /// Access key id (not secret on its own).
    pub access_key_id: String,
    /// SecretString access key.
    pub secret_access_key: SecretString,
    /// Session token.
    pub session_token: SecretString,
    /// Expiry, RFC 3339 (`2024-01-01T01:00:00Z`).
    pub expiration: String,
}

/// Why credentials could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsFileError {
    /// Reading or writing the file failed.
    #[error("cannot write {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

impl AwsCredentials {
    /// The `credential_process` document (Version 1), one line of JSON.
    pub fn credential_process_json(&self) -> String {
        json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key.expose_secret(),
            "SessionToken": self.session_token.expose_secret(),
            "Expiration": self.expiration,
        })
        .to_string()
    }

    /// The key/value lines of a shared credentials file profile.
    pub fn credentials_profile(&self) -> Vec<(String, String)> {
        vec![
            ("aws_access_key_id".into(), self.access_key_id.clone()),
            ("aws_secret_access_key".into(), self.secret_access_key.expose_secret().to_string()),
            ("aws_session_token".into(), self.session_token.expose_secret().to_string()),
            // Not read by the SDKs, but tells a human (and `sigil`) when to refresh.
            ("x_sigil_expiration".into(), self.expiration.clone()),
        ]
    }

    /// Writes (or replaces) `[profile]` in the shared credentials file at `path` (mode 0600).
    pub fn write_credentials_file(&self, path: &Path, profile: &str) -> Result<(), CredentialsFileError> {
        let io = |error| CredentialsFileError::Io { path: path.display().to_string(), error };
        let existing = files::read_back(path).map_err(io)?;
        let text = files::upsert_ini_section(&existing, profile, &self.credentials_profile());
        files::write_atomic(path, text.as_bytes(), 0o600).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::from("s3cr3t"),
            session_token: SecretString::from("tok"),
            expiration: "2024-01-01T01:00:00Z".into(),
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let d = format!("{:?}", creds());
        assert!(!d.contains("s3cr3t") && !d.contains("\"tok\"") && d.contains("ASIAEXAMPLE"));
    }

    #[test]
    fn credential_process_json_has_version_1_fields() {
        let v: serde_json::Value = serde_json::from_str(&creds().credential_process_json()).unwrap();
        assert_eq!(v["Version"], 1);
        assert_eq!(v["SecretAccessKey"], "s3cr3t");
        assert_eq!(v["Expiration"], "2024-01-01T01:00:00Z");
    }

    #[test]
    fn credentials_file_keeps_other_profiles() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("credentials");
        std::fs::write(&p, "[default]\naws_access_key_id = KEEP\n").unwrap();
        creds().write_credentials_file(&p, "sigil").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("aws_access_key_id = KEEP") && text.contains("[sigil]\naws_access_key_id = ASIAEXAMPLE"));
    }
}
