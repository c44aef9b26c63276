//! Azure (Entra ID) workload identity federation: the JWT-SVID file the Azure SDKs
//! read through `AZURE_FEDERATED_TOKEN_FILE`, and the client-assertion exchange
//! (`client_credentials` grant with a `jwt-bearer` assertion) done by Sigil itself.

use secrecy::{ExposeSecret, SecretString};
use super::files;
use super::http::{form_encode, HttpClient, HttpError};
use super::oauth::{parse_token_response, AccessToken, OAuthError};
use std::path::Path;

/// Audience Entra ID requires in the assertion (`aud`), exactly.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";
/// The public cloud authority host.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Assertion type of the client-assertion grant.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why the Azure exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
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
    /// Entra ID refused the assertion.
    #[error("{error}{hint}")]
    Refused {
        /// The OAuth error.
        error: OAuthError,
        /// What usually fixes it.
        hint: &'static str,
    },
    /// Writing the token file failed.
    #[error("cannot write {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// One client-assertion exchange.
#[derive(Debug, Clone)]
pub struct AssertionExchange {
    /// Authority host, e.g. [`DEFAULT_AUTHORITY_HOST`] (or a sovereign cloud's).
    pub authority_host: String,
    /// Tenant id (GUID) or domain.
    pub tenant_id: String,
    /// Application (client) id of the app registration or managed identity.
    pub client_id: String,
    /// Scope, e.g. `https://management.azure.com/.default`.
    pub scope: String,
    /// The JWT-SVID (audience [`AUDIENCE`]).
    pub assertion: SecretString,
}

impl AssertionExchange {
    /// The token endpoint URL.
    pub fn token_url(&self) -> Result<String, AzureError> {
        let t = &self.tenant_id;
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(AzureError::Invalid { field: "tenant_id", why: format!("{t:?} is not a tenant GUID or domain") });
        }
        Ok(format!("{}/{t}/oauth2/v2.0/token", self.authority_host.trim_end_matches('/')))
    }

    /// The form body.
    pub fn form_body(&self) -> String {
        form_encode(&[
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", self.assertion.expose_secret()),
        ])
    }
}

/// Exchanges the JWT-SVID for an Entra ID access token.
pub async fn exchange(client: &HttpClient, x: &AssertionExchange) -> Result<AccessToken, AzureError> {
    let url = x.token_url()?;
    let headers = vec![("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string())];
    let r = client.post(&url, &headers, x.form_body().into_bytes()).await?;
    parse_token_response(r.status, &r.body).map_err(|error| {
        let text = error.to_string();
        // AADSTS700211/700212 first: "AADSTS70021" is a prefix of both.
        let hint = if text.contains("AADSTS700211") || text.contains("AADSTS700212") {
            " (issuer or audience mismatch: the federated credential's issuer must equal the token's iss, audience must be api://AzureADTokenExchange)"
        } else if text.contains("AADSTS70021") {
            " (no federated credential matches this token's issuer/subject/audience exactly; new credentials take a minute to propagate, retry)"
        } else if text.contains("AADSTS50027") || text.contains("AADSTS5002738") {
            " (Entra could not validate the token's signature: run `sigil federation verify azure`; RS256 and `use: sig` keys are required)"
        } else {
            ""
        };
        AzureError::Refused { error, hint }
    })
}

/// Writes the JWT-SVID to `path` for `AZURE_FEDERATED_TOKEN_FILE` (atomically, 0600).
pub fn write_token_file(path: &Path, token: &SecretString) -> Result<(), AzureError> {
    files::write_atomic(path, token.expose_secret().as_bytes(), 0o600).map_err(|error| AzureError::Io { path: path.display().to_string(), error })
}

/// The environment the Azure SDKs (`WorkloadIdentityCredential`, `DefaultAzureCredential`) read.
pub fn sdk_environment(token_file: &Path, client_id: &str, tenant_id: &str, authority_host: Option<&str>) -> Vec<(String, String)> {
    let mut v = vec![
        ("AZURE_FEDERATED_TOKEN_FILE".to_string(), token_file.display().to_string()),
        ("AZURE_CLIENT_ID".to_string(), client_id.to_string()),
        ("AZURE_TENANT_ID".to_string(), tenant_id.to_string()),
    ];
    if let Some(a) = authority_host {
        v.push(("AZURE_AUTHORITY_HOST".to_string(), a.to_string()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x() -> AssertionExchange {
        AssertionExchange {
            authority_host: "https://login.microsoftonline.com/".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "c1".into(),
            scope: "https://management.azure.com/.default".into(),
            assertion: SecretString::from("eyJ.x.y"),
        }
    }

    #[test]
    fn token_url_is_per_tenant_v2() {
        assert_eq!(x().token_url().unwrap(), "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token");
    }

    #[test]
    fn tenant_cannot_inject_a_path() {
        let mut e = x();
        e.tenant_id = "../evil?".into();
        assert!(e.token_url().is_err());
    }

    #[test]
    fn form_carries_the_jwt_bearer_assertion() {
        let b = x().form_body();
        assert!(b.contains("grant_type=client_credentials"));
        assert!(b.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"));
        assert!(b.ends_with("client_assertion=eyJ.x.y"));
    }
}
