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
    /// Longest X.509-SVID (seconds, default 86400): the lifetime of a role
    /// without a cap, and a ceiling no role or workload identity can raise.
    #[serde(default)]
    pub x509_svid_max_ttl: Option<i64>,
    /// Longest JWT-SVID (seconds, default 86400), a ceiling like `x509_svid_max_ttl`.
    #[serde(default)]
    pub jwt_svid_max_ttl: Option<i64>,
    /// Longest bot identity (seconds, default 86400); a bot's
    /// `max_session_ttl_seconds` can only lower it.
    #[serde(default)]
    pub identity_max_ttl: Option<i64>,
    /// `spiffe_refresh_hint` of the trust bundle (seconds, default 300).
    #[serde(default)]
    pub bundle_refresh_hint: Option<i64>,
    /// CA lifetime and rotation (docs/ca-rotation.md).
    #[serde(default)]
    pub ca: CaConfig,
    /// Plain-HTTP operator listener for `/metrics`, `/readyz` and `/healthz`
    /// (e.g. `127.0.0.1:9464`); absent: none. Not TLS, not authenticated:
    /// bind it to loopback or a monitoring network (docs/security.md).
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Resource limits against callers without credentials (connections,
    /// join challenges, audit volume); every field has a default.
    #[serde(default)]
    pub limits: Limits,
    /// Where the broker keeps its records: `sqlite` (default, `<data_dir>/sigil.db`),
    /// `postgres://...`, or `{postgres: postgres://...}`.
    #[serde(default)]
    pub store: StoreSetting,
    /// Where CA and JWT private keys are generated: sealed in the store
    /// (default) or in a PKCS#11 token (docs/hsm.md).
    #[serde(default)]
    pub keys: KeysConfig,
    /// Bot instance activity: expiry and heartbeat rate (docs/reference/server.md).
    #[serde(default)]
    pub bot_instances: BotInstancesConfig,
    /// CRLs and the CRL distribution point of X.509-SVIDs (docs/revocation.md).
    #[serde(default)]
    pub revocation: RevocationConfig,
    /// SSH certificate CAs (docs/reference/server.md, docs/access/ssh.md).
    #[serde(default)]
    pub ssh: SshConfig,
    /// Database and Kubernetes certificates (docs/reference/server.md).
    #[serde(default)]
    pub tls_certificates: TlsCertificatesConfig,
    /// Kubernetes clusters whose TokenReview API verifies `kubernetes` joins
    /// in `tokenreview` mode, with the broker's credentials for each
    /// (docs/join-methods/kubernetes.md).
    #[serde(default)]
    pub kubernetes_clusters: Vec<KubernetesClusterConfig>,
}

/// One entry of `kubernetes_clusters:`: a name (what a join token's
/// `config.cluster` says) and exactly one way to reach the API server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesClusterConfig {
    /// The name join tokens use.
    pub name: String,
    /// The broker runs in this cluster: `KUBERNETES_SERVICE_HOST`/`_PORT`
    /// and the pod's service-account token and CA.
    #[serde(default)]
    pub in_cluster: bool,
    /// A kubeconfig file (its `current-context`, or `context`).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its `current-context`).
    #[serde(default)]
    pub context: Option<String>,
    /// The API server URL (`https://HOST:PORT`), with `ca_file` and either
    /// `token_file` or `client_cert_file` + `client_key_file`.
    #[serde(default)]
    pub api_server: Option<String>,
    /// The cluster CA (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The broker's bearer token, re-read at each review.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The broker's client certificate chain (PEM), re-read at each review.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file` (PEM: PKCS#8, SEC1 or PKCS#1), re-read at
    /// each review; read as a private file (this user's or root's, never
    /// through a symlink, narrowed to 0600 if others could read it).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// How an `api_server` entry authenticates the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubernetesClusterAuth {
    /// `token_file`.
    TokenFile(PathBuf),
    /// `client_cert_file` + `client_key_file`.
    ClientCert {
        /// Certificate chain file.
        cert_file: PathBuf,
        /// Key file.
        key_file: PathBuf,
    },
}

/// How a `kubernetes_clusters` entry reaches its API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubernetesClusterSource {
    /// `in_cluster: true`.
    InCluster,
    /// `kubeconfig` (+ `context`).
    Kubeconfig {
        /// The file.
        file: PathBuf,
        /// The context, if named.
        context: Option<String>,
    },
    /// `api_server` + `ca_file` + (`token_file` | `client_cert_file` + `client_key_file`).
    Explicit {
        /// URL.
        api_server: String,
        /// CA file.
        ca_file: PathBuf,
        /// The broker's credential.
        auth: KubernetesClusterAuth,
    },
}

impl KubernetesClusterConfig {
    /// Which form the entry has, or what is wrong with it, naming the field
    /// (`kubernetes_clusters[i]`).
    pub fn source(&self, i: usize) -> Result<KubernetesClusterSource, String> {
        let at = |field: &str, msg: &str| format!("kubernetes_clusters[{i}].{field}: {msg}");
        if self.name.trim().is_empty() {
            return Err(at("name", "required"));
        }
        let forms = [self.in_cluster, self.kubeconfig.is_some(), self.api_server.is_some()];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(at("", "set exactly one of in_cluster: true, kubeconfig: PATH, or api_server: URL (with ca_file, and token_file or client_cert_file + client_key_file)")
                .replace("].: ", "]: "));
        }
        if self.context.is_some() && self.kubeconfig.is_none() {
            return Err(at("context", "only with kubeconfig"));
        }
        if self.api_server.is_none() {
            let explicit_only = [
                ("ca_file", self.ca_file.is_some()),
                ("token_file", self.token_file.is_some()),
                ("client_cert_file", self.client_cert_file.is_some()),
                ("client_key_file", self.client_key_file.is_some()),
            ];
            for (field, set) in explicit_only {
                if set {
                    return Err(at(field, "only with api_server (in_cluster and kubeconfig say where the CA and credentials are)"));
                }
            }
        }
        Ok(match (&self.kubeconfig, &self.api_server) {
            (Some(file), _) => KubernetesClusterSource::Kubeconfig { file: file.clone(), context: self.context.clone() },
            (None, Some(url)) => {
                if !url.starts_with("https://") {
                    return Err(at("api_server", "must be an https:// URL (pod tokens are sent to it)"));
                }
                let ca_file = self.ca_file.clone().ok_or_else(|| at("ca_file", "required with api_server"))?;
                let auth = match (&self.token_file, &self.client_cert_file, &self.client_key_file) {
                    (Some(t), None, None) => KubernetesClusterAuth::TokenFile(t.clone()),
                    (None, Some(c), Some(k)) => KubernetesClusterAuth::ClientCert { cert_file: c.clone(), key_file: k.clone() },
                    (None, None, None) => {
                        return Err(at("token_file", "required with api_server (or client_cert_file and client_key_file for a client certificate)"))
                    }
                    (Some(_), _, _) => return Err(at("token_file", "set token_file or client_cert_file + client_key_file, not both")),
                    (None, Some(_), None) => return Err(at("client_key_file", "required with client_cert_file")),
                    (None, None, Some(_)) => return Err(at("client_cert_file", "required with client_key_file")),
                };
                KubernetesClusterSource::Explicit { api_server: url.trim_end_matches('/').to_string(), ca_file, auth }
            }
            (None, None) => KubernetesClusterSource::InCluster,
        })
    }
}

/// Default `ssh.max_ttl_seconds`: 8 hours (a working day).
pub const SSH_DEFAULT_MAX_TTL: i64 = 8 * 3600;
/// Largest `ssh.max_ttl_seconds`: 30 days.
pub const SSH_MAX_MAX_TTL: i64 = 30 * 24 * 3600;

/// `ssh:` of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// Algorithm of new SSH CA keys: `ed25519` (default with sealed keys),
    /// `ecdsa` (P-256; default with `keys.backend: pkcs11`) or `rsa`
    /// (2048 bits, signs `rsa-sha2-256`).
    pub key_alg: Option<String>,
    /// Longest SSH certificate, seconds (default 28800, at most 2592000): the
    /// lifetime of a request without `ttl_seconds` whose roles set no cap,
    /// and a ceiling no role raises.
    #[serde(alias = "max_ttl")]
    pub max_ttl_seconds: Option<i64>,
}

impl SshConfig {
    /// The SSH CA algorithm for the key backend `keys`.
    pub fn key_alg(&self, keys: &KeysConfig) -> Result<sigil_core::keys::KeyAlg, String> {
        use sigil_core::keys::KeyAlg;
        let pkcs11 = keys.backend == KeyBackendName::Pkcs11;
        match self.key_alg.as_deref() {
            None if pkcs11 => Ok(KeyAlg::EcP256),
            None => Ok(KeyAlg::Ed25519),
            Some("ed25519") if !pkcs11 => Ok(KeyAlg::Ed25519),
            Some("ed25519") => Err("ssh.key_alg: ed25519 is not supported with keys.backend: pkcs11 (PKCS#11 tokens have no common Ed25519 mechanism); use ecdsa or rsa".into()),
            Some("ecdsa") => Ok(KeyAlg::EcP256),
            Some("rsa") => Ok(KeyAlg::Rsa2048),
            Some(other) => Err(format!("ssh.key_alg: {other:?} is not one of ed25519, ecdsa, rsa")),
        }
    }

    /// `max_ttl_seconds` with its default, checked.
    pub fn max_ttl(&self) -> Result<i64, String> {
        match self.max_ttl_seconds {
            None => Ok(SSH_DEFAULT_MAX_TTL),
            Some(v) if (60..=SSH_MAX_MAX_TTL).contains(&v) => Ok(v),
            Some(v) => Err(format!("ssh.max_ttl_seconds: {v} is not between 60 and {SSH_MAX_MAX_TTL} (30 days)")),
        }
    }
}

/// Default `tls_certificates.max_ttl_seconds`: 12 hours.
pub const TLS_DEFAULT_MAX_TTL: i64 = 12 * 3600;
/// Default `tls_certificates.default_ttl_seconds`: 1 hour.
pub const TLS_DEFAULT_TTL: i64 = 3600;
/// Largest `tls_certificates.max_ttl_seconds`: 30 days.
pub const TLS_MAX_MAX_TTL: i64 = 30 * 24 * 3600;

/// `tls_certificates:` of the config file: lifetimes of database and
/// Kubernetes certificates (`IssueTlsCertificate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsCertificatesConfig {
    /// Longest certificate, seconds (default 43200, 60..=2592000): a
    /// ceiling no role raises.
    #[serde(alias = "max_ttl")]
    pub max_ttl_seconds: Option<i64>,
    /// Lifetime of a request without `ttl_seconds` (default 3600), before
    /// the caps.
    #[serde(alias = "default_ttl")]
    pub default_ttl_seconds: Option<i64>,
}

impl TlsCertificatesConfig {
    /// (default, max) lifetimes, checked.
    pub fn lifetimes(&self) -> Result<(i64, i64), String> {
        let max = self.max_ttl_seconds.unwrap_or(TLS_DEFAULT_MAX_TTL);
        if !(60..=TLS_MAX_MAX_TTL).contains(&max) {
            return Err(format!("tls_certificates.max_ttl_seconds: {max} is not between 60 and {TLS_MAX_MAX_TTL} (30 days)"));
        }
        let default = self.default_ttl_seconds.unwrap_or(TLS_DEFAULT_TTL.min(max));
        if !(60..=max).contains(&default) {
            return Err(format!("tls_certificates.default_ttl_seconds: {default} is not between 60 and max_ttl_seconds ({max})"));
        }
        Ok((default, max))
    }
}

/// `revocation:` of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    /// Name `<public_url>/crl/<key id>.crl` in a CRL distribution point
    /// extension of every X.509-SVID (default off).
    pub crl_distribution_points: bool,
    /// nextUpdate - thisUpdate of served CRLs, seconds (60..=604800); a CRL
    /// is rebuilt once half of it has passed.
    pub crl_validity_seconds: i64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self { crl_distribution_points: false, crl_validity_seconds: 3600 }
    }
}

/// `ca:` of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaConfig {
    /// Lifetime of a new CA certificate / JWT key, seconds.
    pub lifetime_seconds: i64,
    /// How long a JWT verifier may keep a JWKS it fetched, seconds: added
    /// to a previous JWT key's retire_safe_at.
    pub jwks_cache_allowance_seconds: i64,
    /// The automatic schedule.
    pub rotation: RotationConfig,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self { lifetime_seconds: 365 * 24 * 3600, jwks_cache_allowance_seconds: 3600, rotation: RotationConfig::default() }
    }
}

/// `ca.rotation:` of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationConfig {
    /// Whether the broker rotates its keys itself.
    pub automatic: bool,
    /// Prepare the next key when the active one has lived this fraction of its lifetime.
    pub prepare_at_fraction: f64,
    /// Activate a prepared key once it has been published this long, seconds
    /// (at least twice `bundle_refresh_hint`).
    pub activate_after_seconds: i64,
    /// How often the schedule is checked, seconds.
    pub check_interval_seconds: u64,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self { automatic: true, prepare_at_fraction: 0.5, activate_after_seconds: 24 * 3600, check_interval_seconds: 60 }
    }
}

/// `bot_instances:` of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotInstancesConfig {
    /// An instance not seen (join, renewal, heartbeat) for this many seconds
    /// is no longer listed.
    pub expire_after_seconds: i64,
    /// Fewest seconds between two stored heartbeats of one instance.
    pub heartbeat_min_interval_seconds: i64,
    /// Seconds between two sweeps deleting expired instances (1..=86400).
    pub sweep_interval_seconds: u64,
    /// Most instances one sweep deletes (1..=10000): a batch holds SQLite's one
    /// connection while it runs (about 5 ms per 1000 rows).
    pub sweep_batch: usize,
}

impl Default for BotInstancesConfig {
    fn default() -> Self {
        Self { expire_after_seconds: 7 * 24 * 3600, heartbeat_min_interval_seconds: 10, sweep_interval_seconds: 300, sweep_batch: 1000 }
    }
}

/// `keys:` of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// `sealed` (default) or `pkcs11`.
    #[serde(default)]
    pub backend: KeyBackendName,
    /// PKCS#11 module path, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// Label of the token holding the keys.
    #[serde(default)]
    pub token_label: Option<String>,
    /// File holding the user PIN (one line); else the `SIGIL_PKCS11_PIN`
    /// environment variable.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Pooled sessions, i.e. at most this many signatures at once (default 4, 1..=64).
    #[serde(default)]
    pub sessions: Option<usize>,
}

/// `keys.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyBackendName {
    /// Sealed with the seal key, in the store.
    #[default]
    Sealed,
    /// In a PKCS#11 token.
    Pkcs11,
}

/// `store:` of the config file, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StoreSetting {
    /// `sqlite` or a `postgres://` / `postgresql://` URL.
    Url(PostgresUrlOrName),
    /// `{postgres: URL}`.
    Table {
        /// The URL.
        postgres: PostgresUrlOrName,
    },
}

impl Default for StoreSetting {
    fn default() -> Self {
        Self::Url(PostgresUrlOrName("sqlite".into()))
    }
}

/// A store name or URL from the config file; its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PostgresUrlOrName(pub String);

impl std::fmt::Debug for PostgresUrlOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::store::postgres::redact_url(&self.0))
    }
}

/// The store backend the broker opens.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// SQLite in the data directory.
    Sqlite,
    /// PostgreSQL at this URL (may hold a password: never log it, see
    /// [`crate::store::postgres::redact_url`]).
    Postgres(String),
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("Sqlite"),
            Self::Postgres(u) => write!(f, "Postgres({})", crate::store::postgres::redact_url(u)),
        }
    }
}

impl StoreSetting {
    /// The backend named, or why the setting is not one.
    pub fn backend(&self) -> Result<StoreBackend, String> {
        let (value, table) = match self {
            Self::Url(u) => (u.0.as_str(), false),
            Self::Table { postgres } => (postgres.0.as_str(), true),
        };
        let is_pg = value.starts_with("postgres://") || value.starts_with("postgresql://");
        match (value, is_pg) {
            ("sqlite", _) if !table => Ok(StoreBackend::Sqlite),
            (_, true) => Ok(StoreBackend::Postgres(value.to_string())),
            _ => Err(format!(
                "store: use `sqlite` (the default), `postgres://USER:PASSWORD@HOST:PORT/DB` or `{{postgres: URL}}`, not {:?}",
                crate::store::postgres::redact_url(value)
            )),
        }
    }
}

/// `limits:` of the config file; see docs/reference/server.md ("Limits").
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections of the broker port.
    pub connections: sigil_core::listen::limits::ConnLimits,
    /// Pending join challenges.
    pub join_challenges: ChallengeLimits,
    /// Audit retention.
    pub audit: crate::audit::Retention,
    /// Audited refusals of unauthenticated callers.
    pub audit_refusals: RefusalLimits,
}

/// `limits.join_challenges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChallengeLimits {
    /// Most pending challenges.
    pub max_pending: usize,
    /// Most pending challenges per peer.
    pub per_peer: usize,
    /// Most pending challenges per join token.
    pub per_token: usize,
}

impl Default for ChallengeLimits {
    fn default() -> Self {
        let d = crate::join::challenge::Limits::default();
        Self { max_pending: d.max_pending, per_peer: d.per_peer, per_token: d.per_token }
    }
}

impl From<ChallengeLimits> for crate::join::challenge::Limits {
    fn from(c: ChallengeLimits) -> Self {
        Self { max_pending: c.max_pending, per_peer: c.per_peer, per_token: c.per_token }
    }
}

/// `limits.audit_refusals`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefusalLimits {
    /// Refusals recorded at once per peer.
    pub per_peer_burst: u32,
    /// Seconds for a peer to earn one more recorded refusal.
    pub per_peer_refill_secs: u32,
    /// Refusals recorded at once, all peers together.
    pub global_burst: u32,
    /// Refusals recorded per second, all peers together, sustained.
    pub global_per_sec: u32,
    /// Seconds between summary rows of a peer's unrecorded refusals.
    pub summary_secs: u32,
}

impl Default for RefusalLimits {
    fn default() -> Self {
        let d = crate::audit::throttle::Limits::default();
        Self {
            per_peer_burst: d.burst as u32,
            per_peer_refill_secs: d.refill_secs as u32,
            global_burst: d.global_burst as u32,
            global_per_sec: d.global_per_sec as u32,
            summary_secs: d.summary_secs as u32,
        }
    }
}

impl From<RefusalLimits> for crate::audit::throttle::Limits {
    fn from(r: RefusalLimits) -> Self {
        Self {
            burst: f64::from(r.per_peer_burst.max(1)),
            refill_secs: f64::from(r.per_peer_refill_secs.max(1)),
            global_burst: f64::from(r.global_burst.max(1)),
            global_per_sec: f64::from(r.global_per_sec.max(1)),
            summary_secs: i64::from(r.summary_secs.max(1)),
            ..Default::default()
        }
    }
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
            x509_svid_max_ttl: None,
            jwt_svid_max_ttl: None,
            identity_max_ttl: None,
            bundle_refresh_hint: None,
            ca: CaConfig::default(),
            metrics_listen: None,
            limits: Limits::default(),
            store: StoreSetting::default(),
            keys: KeysConfig::default(),
            bot_instances: BotInstancesConfig::default(),
            revocation: RevocationConfig::default(),
            ssh: SshConfig::default(),
            tls_certificates: TlsCertificatesConfig::default(),
            kubernetes_clusters: Vec::new(),
        }
    }
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    #[test]
    fn store_is_sqlite_by_default_and_takes_a_postgres_url_in_either_form() {
        let base = "trust_domain: example.org\ndata_dir: /tmp/x\n";
        let parse = |extra: &str| serde_norway::from_str::<ServerConfig>(&format!("{base}{extra}")).unwrap().store.backend();
        assert_eq!(parse(""), Ok(StoreBackend::Sqlite));
        assert_eq!(parse("store: sqlite\n"), Ok(StoreBackend::Sqlite));
        let url = "postgres://sigil:pw@db:5432/sigil";
        assert_eq!(parse(&format!("store: {url}\n")), Ok(StoreBackend::Postgres(url.into())));
        assert_eq!(parse(&format!("store: {{postgres: \"{url}\"}}\n")), Ok(StoreBackend::Postgres(url.into())));
        let err = parse("store: mysql://u:hunter2@db/x\n").unwrap_err();
        assert!(err.contains("postgres://") && !err.contains("hunter2"), "{err}");
        assert!(parse("store: {postgres: sqlite}\n").is_err());
    }

    #[test]
    fn the_store_password_is_not_in_the_configs_debug_form() {
        let cfg: ServerConfig =
            serde_norway::from_str("trust_domain: example.org\ndata_dir: /tmp/x\nstore: postgres://sigil:hunter2@db/sigil\n").unwrap();
        let shown = format!("{cfg:?} {:?}", cfg.store.backend());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://sigil@db/sigil"), "{shown}");
    }

    #[test]
    fn ca_rotation_defaults_are_safe_and_the_example_config_parses() {
        let cfg: ServerConfig = serde_norway::from_str("trust_domain: example.org\ndata_dir: /tmp/x\n").unwrap();
        assert_eq!(cfg.ca, CaConfig::default());
        assert!(cfg.ca.rotation.automatic, "rotation is on by default: a CA never silently expires");
        assert_eq!((cfg.ca.lifetime_seconds, cfg.ca.rotation.activate_after_seconds), (365 * 24 * 3600, 24 * 3600));
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/broker/server.yaml")).unwrap();
        let cfg: ServerConfig = serde_norway::from_str(&example).unwrap();
        assert_eq!(cfg.x509_svid_max_ttl, Some(86400));
        assert_eq!(cfg.ca.rotation.prepare_at_fraction, 0.5);
        let err = serde_norway::from_str::<ServerConfig>("trust_domain: e.org\ndata_dir: /x\nca: {rotation: {every: 1}}\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn kubernetes_clusters_take_exactly_one_form_and_errors_name_the_entry_and_field() {
        let base = "trust_domain: example.org\ndata_dir: /tmp/x\n";
        let parse = |extra: &str| serde_norway::from_str::<ServerConfig>(&format!("{base}kubernetes_clusters:\n{extra}"));
        let cfg = parse(
            "  - {name: here, in_cluster: true}\n  - {name: kc, kubeconfig: /etc/kc, context: prod}\n  - {name: ex, api_server: \"https://10.0.0.1:6443/\", ca_file: /ca, token_file: /t}\n",
        )
        .unwrap();
        let sources: Vec<_> = cfg.kubernetes_clusters.iter().enumerate().map(|(i, c)| c.source(i).unwrap()).collect();
        assert_eq!(sources[0], KubernetesClusterSource::InCluster);
        assert_eq!(sources[1], KubernetesClusterSource::Kubeconfig { file: "/etc/kc".into(), context: Some("prod".into()) });
        assert_eq!(
            sources[2],
            KubernetesClusterSource::Explicit {
                api_server: "https://10.0.0.1:6443".into(),
                ca_file: "/ca".into(),
                auth: KubernetesClusterAuth::TokenFile("/t".into())
            }
        );
        let err = |extra: &str| parse(extra).unwrap().kubernetes_clusters[0].source(0).unwrap_err();
        assert!(err("  - {name: a, in_cluster: true, kubeconfig: /kc}\n").contains("exactly one"));
        assert!(err("  - {name: a}\n").starts_with("kubernetes_clusters[0]: set exactly one"));
        assert!(err("  - {name: a, api_server: \"https://k\", ca_file: /ca}\n").starts_with("kubernetes_clusters[0].token_file: required with api_server"));
        assert!(err("  - {name: a, api_server: \"http://k\", ca_file: /ca, token_file: /t}\n").starts_with("kubernetes_clusters[0].api_server"));
        assert!(err("  - {name: a, in_cluster: true, context: x}\n").starts_with("kubernetes_clusters[0].context"));
        assert!(err("  - {name: a, in_cluster: true, token_file: /t}\n").starts_with("kubernetes_clusters[0].token_file"));
        assert!(err("  - {name: \" \", in_cluster: true}\n").starts_with("kubernetes_clusters[0].name"));
        assert!(parse("  - {name: a, in_cluster: true, token: x}\n").unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn an_api_server_entry_takes_a_client_certificate_and_key_instead_of_a_token_file() {
        let base = "trust_domain: example.org\ndata_dir: /tmp/x\nkubernetes_clusters:\n";
        let src = |extra: &str| {
            let cfg: ServerConfig = serde_norway::from_str(&format!("{base}  - {{name: a, api_server: \"https://k:6443\", ca_file: /ca{extra}}}\n")).unwrap();
            cfg.kubernetes_clusters[0].source(0)
        };
        assert_eq!(
            src(", client_cert_file: /c.crt, client_key_file: /c.key").unwrap(),
            KubernetesClusterSource::Explicit {
                api_server: "https://k:6443".into(),
                ca_file: "/ca".into(),
                auth: KubernetesClusterAuth::ClientCert { cert_file: "/c.crt".into(), key_file: "/c.key".into() }
            }
        );
        assert!(src(", client_cert_file: /c.crt").unwrap_err().starts_with("kubernetes_clusters[0].client_key_file: required"));
        assert!(src(", client_key_file: /c.key").unwrap_err().starts_with("kubernetes_clusters[0].client_cert_file: required"));
        assert!(src(", token_file: /t, client_cert_file: /c.crt, client_key_file: /c.key").unwrap_err().contains("not both"));
        let cfg: ServerConfig = serde_norway::from_str(&format!("{base}  - {{name: a, in_cluster: true, client_key_file: /k}}\n")).unwrap();
        assert!(cfg.kubernetes_clusters[0].source(0).unwrap_err().starts_with("kubernetes_clusters[0].client_key_file: only with api_server"));
    }

    #[test]
    fn limits_are_optional_and_each_key_overrides_only_itself() {
        let base = "trust_domain: example.org\ndata_dir: /tmp/x\n";
        let cfg: ServerConfig = serde_norway::from_str(base).unwrap();
        assert_eq!(cfg.limits, Limits::default());
        let cfg: ServerConfig = serde_norway::from_str(&format!(
            "{base}limits:\n  connections: {{max_connections_per_peer: 8}}\n  join_challenges: {{per_peer: 4}}\n  audit: {{max_events: 10}}\n"
        ))
        .unwrap();
        assert_eq!(cfg.limits.connections.max_connections_per_peer, 8);
        assert_eq!(cfg.limits.connections.idle_timeout_secs, 60, "other keys keep their defaults");
        assert_eq!(cfg.limits.join_challenges.per_peer, 4);
        assert_eq!((cfg.limits.audit.max_events, cfg.limits.audit.max_age_days), (10, 400));
        let err = serde_norway::from_str::<ServerConfig>(&format!("{base}limits: {{connections: {{max_conns: 1}}}}\n")).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
