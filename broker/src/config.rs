//! Broker configuration file (`sigil server --config FILE`).

use serde::Deserialize;
use std::path::PathBuf;

/// The broker config file. Every field is documented in docs/reference/server-config.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Trust domain, e.g. `example.org`.
    pub trust_domain: String,
    /// Address to listen on (gRPC and HTTPS share it).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Issuer URL (`iss`); defaults to `https://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Directory for the database, seal key (when generated) and admin identity.
    pub data_dir: PathBuf,
    /// Seal key file; if absent, `SIGIL_SEAL_KEY` must be set, or (dev mode) a key
    /// is generated in the data directory.
    #[serde(default)]
    pub seal_key_file: Option<PathBuf>,
    /// X.509-SVID CA key algorithm: `ec-p256` (default) or `rsa-2048`.
    #[serde(default = "default_x509_alg")]
    pub x509_ca_alg: String,
    /// JWT signing algorithm: `rsa-2048` (RS256, default) or `ec-p256` (ES256).
    #[serde(default = "default_jwt_alg")]
    pub jwt_alg: String,
    /// Extra DNS names / IPs for the serving certificate.
    #[serde(default)]
    pub tls_names: Vec<String>,
    /// Audit JSON lines: a file path, `stderr`, or `none`. Default: `<data_dir>/audit.jsonl`.
    #[serde(default)]
    pub audit_log: Option<String>,
    /// Default / maximum lifetimes in seconds.
    #[serde(default)]
    pub x509_svid_ttl: Option<i64>,
    /// Default JWT-SVID lifetime.
    #[serde(default)]
    pub jwt_svid_ttl: Option<i64>,
    /// Lifetime of the bootstrap admin identity.
    #[serde(default)]
    pub admin_identity_ttl: Option<i64>,
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}

fn default_x509_alg() -> String {
    "ec-p256".into()
}

fn default_jwt_alg() -> String {
    "rsa-2048".into()
}

impl ServerConfig {
    /// A dev-mode config.
    pub fn dev(data_dir: PathBuf, listen: String, public_url: Option<String>, trust_domain: String) -> Self {
        Self {
            trust_domain,
            listen,
            public_url,
            data_dir,
            seal_key_file: None,
            x509_ca_alg: default_x509_alg(),
            jwt_alg: default_jwt_alg(),
            tls_names: vec![],
            audit_log: None,
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            admin_identity_ttl: None,
        }
    }
}
