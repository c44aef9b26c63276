//! GCP Workload Identity Federation: the `external_account` credential
//! configuration file that Google's client libraries read (subject token from a
//! file the agent keeps fresh, or from an executable: `sigil federation gcp
//! executable`), with optional service account impersonation, and the STS token
//! exchange done by Sigil itself.

use secrecy::{ExposeSecret, SecretString};
use super::files;
use super::http::{form_encode, HttpClient, HttpError};
use super::oauth::{parse_token_response, AccessToken, OAuthError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Token type of a JWT subject token.
pub const SUBJECT_TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Google's STS token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
/// The cloud-platform scope.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Largest `exp - iat` Google accepts (strictly less than this).
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 48 * 3600;
/// Largest `google.subject` value, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 127;

/// Why a GCP config or exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcpError {
    /// A parameter is malformed.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The parameter.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// HTTP failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Google STS refused the token.
    #[error(transparent)]
    Refused(#[from] OAuthError),
    /// Writing the config file failed.
    #[error("cannot write {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// The provider's full resource name, which is also the default JWT audience
/// (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`).
pub fn provider_audience(project_number: &str, pool: &str, provider: &str) -> String {
    format!("//iam.googleapis.com/projects/{project_number}/locations/global/workloadIdentityPools/{pool}/providers/{provider}")
}

/// The `generateAccessToken` URL that impersonates `service_account_email`.
pub fn impersonation_url(service_account_email: &str) -> String {
    format!("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{service_account_email}:generateAccessToken")
}

/// Where the client library gets the subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A file holding the JWT-SVID (the agent rewrites it before expiry).
    File(PathBuf),
    /// A command printing the executable-sourced response (needs
    /// `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1` in the SDK's environment).
    Executable {
        /// Full command line.
        command: String,
        /// Time limit, 5000..120000 ms.
        timeout_millis: u32,
        /// Optional cache file the library reads before running the command.
        output_file: Option<PathBuf>,
    },
}

/// An `external_account` credential configuration.
#[derive(Debug, Clone)]
pub struct ExternalAccountConfig {
    /// Audience: usually [`provider_audience`].
    pub audience: String,
    /// Token URL (default [`DEFAULT_TOKEN_URL`]).
    pub token_url: String,
    /// Subject token source.
    pub source: CredentialSource,
    /// Optional impersonation URL ([`impersonation_url`]).
    pub service_account_impersonation_url: Option<String>,
    /// Optional impersonated token lifetime (600..43200 s).
    pub token_lifetime_seconds: Option<u32>,
}

impl ExternalAccountConfig {
    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), GcpError> {
        let inv = |field, why: String| Err(GcpError::Invalid { field, why });
        if self.audience.is_empty() {
            return inv("audience", "empty: use //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X".into());
        }
        if let CredentialSource::Executable { timeout_millis, command, .. } = &self.source {
            if !(5_000..=120_000).contains(timeout_millis) {
                return inv("timeout_millis", format!("{timeout_millis}: Google's libraries accept 5000..120000"));
            }
            if command.trim().is_empty() || !command.trim_start().starts_with('/') {
                return inv("command", "must start with an absolute path (Google's libraries refuse relative commands)".into());
            }
        }
        if let Some(l) = self.token_lifetime_seconds {
            if self.service_account_impersonation_url.is_none() {
                return inv("token_lifetime_seconds", "only applies with service account impersonation".into());
            }
            if !(600..=43_200).contains(&l) {
                return inv("token_lifetime_seconds", format!("{l}: Google accepts 600..43200"));
            }
        }
        Ok(())
    }

    /// The JSON document.
    pub fn to_json(&self) -> Value {
        let source = match &self.source {
            CredentialSource::File(p) => json!({"file": p.display().to_string(), "format": {"type": "text"}}),
            CredentialSource::Executable { command, timeout_millis, output_file } => {
                let mut e = json!({"command": command, "timeout_millis": timeout_millis});
                if let (Some(f), Some(o)) = (output_file, e.as_object_mut()) {
                    o.insert("output_file".into(), json!(f.display().to_string()));
                }
                json!({"executable": e})
            }
        };
        let mut v = json!({
            "type": "external_account",
            "audience": self.audience,
            "subject_token_type": SUBJECT_TOKEN_TYPE_JWT,
            "token_url": self.token_url,
            "credential_source": source,
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(u) = &self.service_account_impersonation_url {
                o.insert("service_account_impersonation_url".into(), json!(u));
                if let Some(l) = self.token_lifetime_seconds {
                    o.insert("service_account_impersonation".into(), json!({"token_lifetime_seconds": l}));
                }
            }
        }
        v
    }

    /// Validates and writes the file (0644: it holds no secret, only where the secret is).
    pub fn write(&self, path: &Path) -> Result<(), GcpError> {
        self.validate()?;
        let text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default() + "\n";
        files::write_atomic(path, text.as_bytes(), 0o644).map_err(|error| GcpError::Io { path: path.display().to_string(), error })
    }
}

/// The executable-sourced credential response for a JWT valid until `expires_at`.
pub fn executable_response(token: &SecretString, expires_at: i64) -> String {
    json!({
        "version": 1,
        "success": true,
        "token_type": SUBJECT_TOKEN_TYPE_JWT,
        "id_token": token.expose_secret(),
        "expiration_time": expires_at,
    })
    .to_string()
}

/// The executable-sourced error response.
pub fn executable_error(code: &str, message: &str) -> String {
    json!({"version": 1, "success": false, "code": code, "message": message}).to_string()
}

/// Exchanges the JWT-SVID at Google STS for a federated access token.
pub async fn exchange(client: &HttpClient, token_url: &str, audience: &str, subject_token: &SecretString) -> Result<AccessToken, GcpError> {
    let body = form_encode(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("audience", audience),
        ("scope", CLOUD_PLATFORM_SCOPE),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("subject_token", subject_token.expose_secret()),
        ("subject_token_type", SUBJECT_TOKEN_TYPE_JWT),
    ]);
    let headers = vec![("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string())];
    let r = client.post(token_url, &headers, body.into_bytes()).await?;
    Ok(parse_token_response(r.status, &r.body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(source: CredentialSource) -> ExternalAccountConfig {
        ExternalAccountConfig {
            audience: provider_audience("123", "pool", "sigil"),
            token_url: DEFAULT_TOKEN_URL.into(),
            source,
            service_account_impersonation_url: None,
            token_lifetime_seconds: None,
        }
    }

    #[test]
    fn file_variant_matches_the_documented_shape() {
        let v = cfg(CredentialSource::File("/run/sigil/gcp.jwt".into())).to_json();
        assert_eq!(v["type"], "external_account");
        assert_eq!(v["audience"], "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/sigil");
        assert_eq!(v["subject_token_type"], SUBJECT_TOKEN_TYPE_JWT);
        assert_eq!(v["credential_source"]["file"], "/run/sigil/gcp.jwt");
        assert!(v.get("service_account_impersonation_url").is_none());
    }

    #[test]
    fn executable_variant_and_impersonation() {
        let mut c = cfg(CredentialSource::Executable { command: "/usr/bin/sigil federation gcp executable".into(), timeout_millis: 5000, output_file: None });
        c.service_account_impersonation_url = Some(impersonation_url("sa@p.iam.gserviceaccount.com"));
        c.token_lifetime_seconds = Some(3600);
        c.validate().unwrap();
        let v = c.to_json();
        assert_eq!(v["credential_source"]["executable"]["timeout_millis"], 5000);
        assert_eq!(
            v["service_account_impersonation_url"],
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken"
        );
        assert_eq!(v["service_account_impersonation"]["token_lifetime_seconds"], 3600);
    }

    #[test]
    fn relative_command_and_short_timeout_are_refused() {
        assert!(cfg(CredentialSource::Executable { command: "sigil x".into(), timeout_millis: 5000, output_file: None }).validate().is_err());
        assert!(cfg(CredentialSource::Executable { command: "/bin/sigil".into(), timeout_millis: 100, output_file: None }).validate().is_err());
    }

    #[test]
    fn executable_response_has_version_and_expiry() {
        let v: Value = serde_json::from_str(&executable_response(&SecretString::from("j"), 42)).unwrap();
        assert_eq!((v["version"].as_i64(), v["success"].as_bool(), v["expiration_time"].as_i64()), (Some(1), Some(true), Some(42)));
    }
}
