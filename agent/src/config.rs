//! The agent config file (`sigil agent --config agent.yaml`).
//!
//! Parsed with serde, then checked by [`AgentConfig::validate`] so that every
//! mistake is reported with the field path before anything runs. The JSON Schema
//! in `schemas/agent-config.schema.json` describes the same shape for editors.

pub use super::config_cloud::{AwsRolesAnywhereOutput, AwsWebIdentityOutput, AzureFederatedOutput, GcpExternalAccountOutput};
pub use super::config_database::{DatabaseOutput, DbProtocol};
pub use super::config_kubernetes::KubernetesOutput;
pub use super::config_ssh::{SshHostOutput, SshKeyType, SshOutput};
use sigil_core::domain::Method;
use secrecy::SecretString;
use sigil_core::safe_fs::{users, Access};
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The YAML does not parse or has unknown / mistyped fields.
    #[error("invalid agent config: {0}")]
    Parse(String),
    /// A field has a value the agent cannot use; `field` is its path.
    #[error("invalid agent config: {field}: {message}")]
    Invalid {
        /// Field path, e.g. `outputs[1].audiences`.
        field: String,
        /// What to fix.
        message: String,
    },
}

/// `broker:` as one string or a list of strings, held comma-separated.
fn one_or_many_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => Ok(s),
        OneOrMany::Many(v) if v.is_empty() => Err(serde::de::Error::custom("the broker list is empty; expected HOST:PORT entries")),
        OneOrMany::Many(v) if v.iter().any(|a| a.contains(',')) => Err(serde::de::Error::custom("a broker list entry contains a comma; give one HOST:PORT per entry")),
        OneOrMany::Many(v) => Ok(v.join(",")),
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// A duration written as `90s`, `10m`, `1h` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Dur(Duration::from_secs(s))),
            Raw::Text(t) => humantime::parse_duration(&t)
                .map(Dur)
                .map_err(|e| serde::de::Error::custom(format!("{t:?} is not a duration like 30s, 10m, 1h: {e}"))),
        }
    }
}

impl Dur {
    /// Whole seconds (0 when absent means "broker default").
    pub fn secs(d: Option<Dur>) -> i64 {
        d.map(|d| d.0.as_secs() as i64).unwrap_or(0)
    }
}

/// File permission bits written in octal with a leading 0 (`0640` or `"0640"`, which
/// the YAML parser hands over as text). A plain number (`640`, `0o640`) is refused:
/// whether its author meant octal cannot be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Num(n) => return Err(serde::de::Error::custom(format!("mode {n}: write it as an octal string with a leading 0, e.g. mode: \"0640\""))),
            Raw::Text(t) => t,
        };
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        let bits = u32::from_str_radix(digits, 8).map_err(|_| serde::de::Error::custom(format!("mode {text:?} is not an octal mode like \"0640\"")))?;
        // Readers may read; only the agent writes, and nothing is executable or setuid.
        if bits & !0o644 != 0 {
            return Err(serde::de::Error::custom(format!(
                "mode {text:?}: only read bits for group and others are allowed (at most \"0644\"); outputs are written by the agent alone"
            )));
        }
        if bits & 0o600 != 0o600 {
            return Err(serde::de::Error::custom(format!("mode {text:?}: the owner must be able to read and write (0600 at least)")));
        }
        Ok(FileMode(bits))
    }
}

/// Owner, group and mode of an output's files, resolved (names looked up in
/// `/etc/passwd` and `/etc/group` when the agent starts; `--check` does not, as
/// it may run on another machine). Mode defaults to 0600, or 0640 with a group.
pub fn resolve_access(field: &str, owner: &Option<String>, group: &Option<String>, mode: Option<FileMode>) -> Result<Access, ConfigError> {
    let uid = owner.as_deref().map(users::uid).transpose().map_err(|e| invalid(format!("{field}.owner"), e.to_string()))?;
    let gid = group.as_deref().map(users::gid).transpose().map_err(|e| invalid(format!("{field}.group"), e.to_string()))?;
    let mode = mode.map(|m| m.0).unwrap_or(if gid.is_some() { 0o640 } else { 0o600 });
    Ok(Access { mode, uid, gid })
}

/// The whole agent config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Broker address, `HOST:PORT`, or several (a YAML list, or one string with
    /// commas) tried in order on connection failure. Held comma-separated.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub broker: String,
    /// CA certificate (PEM) that signs the broker's TLS certificate (the broker's
    /// `tls-ca.pem`); trusted for the first join. Later the identity carries it.
    pub ca_file: PathBuf,
    /// Directory for the agent's own identity (created 0700).
    pub state_dir: PathBuf,
    /// How the agent proves who it is the first time (and when its identity is lost).
    pub join: JoinConfig,
    /// Requested bot identity lifetime (default: broker default).
    #[serde(default)]
    pub identity_ttl: Option<Dur>,
    /// How often the trust bundle is polled for CA changes (default 30s).
    #[serde(default)]
    pub bundle_refresh: Option<Dur>,
    /// Retry policy when the broker is unreachable.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Time bounds of every broker call (connect per address, then each call).
    #[serde(default)]
    pub broker_timeouts: BrokerTimeouts,
    /// Files to keep fresh.
    #[serde(default)]
    pub outputs: Vec<OutputEntry>,
    /// Services to run (long-running mode only).
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Health and metrics endpoint.
    #[serde(default)]
    pub health: Option<HealthConfig>,
}

/// The join method and its credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum JoinConfig {
    /// A join token secret, inline or read from a file at each join.
    Token(TokenJoin),
    /// GitHub Actions (or GHES) ID token.
    Github(OidcJoinConfig),
    /// GitLab CI ID token.
    Gitlab(OidcJoinConfig),
    /// CircleCI OIDC token.
    Circleci(OidcJoinConfig),
    /// Bitbucket Pipelines OIDC token.
    Bitbucket(OidcJoinConfig),
    /// Azure DevOps OIDC token.
    AzureDevops(OidcJoinConfig),
    /// Terraform Cloud workload identity token.
    TerraformCloud(OidcJoinConfig),
    /// Spacelift OIDC token.
    Spacelift(OidcJoinConfig),
    /// Any OIDC issuer (Jenkins, Buildkite ...).
    Oidc(OidcJoinConfig),
    /// Kubernetes projected service-account token.
    Kubernetes(KubernetesJoinConfig),
    /// The agent's own key, bound to the join token.
    BoundKeypair(BoundKeypairJoinConfig),
    /// AWS IAM identity (signed `sts:GetCallerIdentity`).
    Iam(IamJoinConfig),
    /// GCE instance identity token.
    Gcp(GcpJoinConfig),
    /// TPM endorsement + credential activation.
    Tpm(TpmJoinConfig),
    /// EC2 instance identity document (IMDSv2).
    Ec2(Ec2JoinConfig),
}

impl JoinConfig {
    /// The method of the registry this configuration joins with (its
    /// `method:` tag is the method's name).
    pub fn method(&self) -> Method {
        match self {
            JoinConfig::Token(_) => Method::Token,
            JoinConfig::Github(_) => Method::Github,
            JoinConfig::Gitlab(_) => Method::Gitlab,
            JoinConfig::Circleci(_) => Method::Circleci,
            JoinConfig::Bitbucket(_) => Method::Bitbucket,
            JoinConfig::AzureDevops(_) => Method::AzureDevops,
            JoinConfig::TerraformCloud(_) => Method::TerraformCloud,
            JoinConfig::Spacelift(_) => Method::Spacelift,
            JoinConfig::Oidc(_) => Method::Oidc,
            JoinConfig::Kubernetes(_) => Method::Kubernetes,
            JoinConfig::BoundKeypair(_) => Method::BoundKeypair,
            JoinConfig::Iam(_) => Method::Iam,
            JoinConfig::Gcp(_) => Method::Gcp,
            JoinConfig::Tpm(_) => Method::Tpm,
            JoinConfig::Ec2(_) => Method::Ec2,
        }
    }

    /// The join token name of methods that need one.
    fn token_name(&self) -> Option<&str> {
        match self {
            JoinConfig::Token(_) => None,
            JoinConfig::Github(o)
            | JoinConfig::Gitlab(o)
            | JoinConfig::Circleci(o)
            | JoinConfig::Bitbucket(o)
            | JoinConfig::AzureDevops(o)
            | JoinConfig::TerraformCloud(o)
            | JoinConfig::Spacelift(o)
            | JoinConfig::Oidc(o) => Some(&o.token_name),
            JoinConfig::Kubernetes(k) => Some(&k.token_name),
            JoinConfig::BoundKeypair(b) => Some(&b.token_name),
            JoinConfig::Iam(i) => Some(&i.token_name),
            JoinConfig::Gcp(g) => Some(&g.token_name),
            JoinConfig::Tpm(t) => Some(&t.token_name),
            JoinConfig::Ec2(e) => Some(&e.token_name),
        }
    }
}

/// An OIDC-family method: the platform's ID token from a file or a variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcJoinConfig {
    /// Join token whose rules apply.
    pub token_name: String,
    /// File holding the ID token (read at each join).
    #[serde(default)]
    pub id_token_file: Option<PathBuf>,
    /// Or an environment variable holding it.
    #[serde(default)]
    pub id_token_env: Option<String>,
}

/// Default path of the projected service-account token.
pub const DEFAULT_KUBERNETES_TOKEN: &str = "/var/run/secrets/tokens/sigil";

/// The `kubernetes` method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesJoinConfig {
    /// Join token whose rules apply.
    pub token_name: String,
    /// Projected token file (`serviceAccountToken` volume with the join token's audience).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl KubernetesJoinConfig {
    /// The token file, or [`DEFAULT_KUBERNETES_TOKEN`].
    pub fn token_file(&self) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_KUBERNETES_TOKEN))
    }
}

/// The `bound_keypair` method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundKeypairJoinConfig {
    /// Join token whose binding applies.
    pub token_name: String,
    /// Private key file (default `STATE_DIR/bound_keypair.key`, created on first use).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The join token's secret, for a first join without a pre-registered key (or env `SIGIL_TOKEN`).
    #[serde(default)]
    pub registration_secret: Option<SecretString>,
    /// Or a file holding it.
    #[serde(default)]
    pub registration_secret_file: Option<PathBuf>,
}

/// The `iam` method (credentials found as the AWS SDKs find them: environment, shared profile,
/// web identity, container, EC2 instance role; see `join::client::aws_chain`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamJoinConfig {
    /// Join token whose rules apply.
    pub token_name: String,
    /// Signing region (default `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then us-east-1).
    #[serde(default)]
    pub region: Option<String>,
    /// STS endpoint (default regional); the broker only calls endpoints it allows.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
}

/// The `ec2` method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2JoinConfig {
    /// Join token whose rules apply.
    pub token_name: String,
    /// IMDS base URL (default `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else http://169.254.169.254).
    #[serde(default)]
    pub metadata_url: Option<String>,
}

/// The `gcp` method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpJoinConfig {
    /// Join token whose rules apply.
    pub token_name: String,
    /// Audience of the instance identity token (the join token's `config.audience`).
    pub audience: String,
    /// Metadata server base URL (default `GCE_METADATA_HOST` or the GCE metadata server).
    #[serde(default)]
    pub metadata_url: Option<String>,
}

/// The `tpm` method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmJoinConfig {
    /// Join token whose rules apply.
    pub token_name: String,
    /// TCTI, e.g. `device:/dev/tpmrm0` (default `TPM2TOOLS_TCTI` / `TCTI`, then that).
    #[serde(default)]
    pub tcti: Option<String>,
}

/// Settings of the `token` join method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenJoin {
    /// The secret itself (prefer `token_file` or env `SIGIL_TOKEN`).
    #[serde(default)]
    pub token: Option<SecretString>,
    /// A file holding the secret.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `broker_timeouts:` the client's time bounds (see `sigil_schemas::client::Timeouts`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTimeouts {
    /// Per broker address: TCP connect, TLS and HTTP/2 set-up together
    /// (default 5s); the next address is tried after it.
    #[serde(default)]
    pub connect: Option<Dur>,
    /// Per call once connected, request to whole answer (default 30s).
    #[serde(default)]
    pub call: Option<Dur>,
}

impl BrokerTimeouts {
    /// The client's bounds, defaults filled in.
    pub fn resolve(&self) -> sigil_schemas::client::Timeouts {
        let d = sigil_schemas::client::Timeouts::default();
        sigil_schemas::client::Timeouts { connect: self.connect.map_or(d.connect, |t| t.0), call: self.call.map_or(d.call, |t| t.0) }
    }
}

/// Exponential backoff with jitter, bounded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay (default 1s).
    #[serde(default = "default_initial")]
    pub initial: Dur,
    /// Largest delay (default 60s).
    #[serde(default = "default_max")]
    pub max: Dur,
}

fn default_initial() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_max() -> Dur {
    Dur(Duration::from_secs(60))
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { initial: default_initial(), max: default_max() }
    }
}

/// What an X.509 directory output (`x509-svid`, `application`) asks for: a
/// SPIFFE ID, or a workload identity name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509Output {
    /// Directory receiving the files (`svid.pem`, `svid.key`, `bundle.pem`;
    /// `application`: `tls.crt`, `tls.key`, `tls-chain.pem`, `ca.pem`), created 0700.
    pub dir: PathBuf,
    /// SPIFFE ID to request.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Or a workload identity name.
    #[serde(default)]
    pub workload_identity: Option<String>,
    /// Requested lifetime.
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

/// A JWT-SVID token file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtOutput {
    /// Token file path (its directory is created 0700).
    pub path: PathBuf,
    /// Audiences (at least one).
    pub audiences: Vec<String>,
    /// SPIFFE ID to request.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Or a workload identity name.
    #[serde(default)]
    pub workload_identity: Option<String>,
    /// Requested lifetime.
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

/// A copy of the bot identity for admin tools.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityOutput {
    /// Identity file path.
    pub path: PathBuf,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

/// One output.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum OutputConfig {
    /// `type: x509-svid`.
    #[serde(rename = "x509-svid")]
    X509Svid(X509Output),
    /// `type: jwt-svid`.
    #[serde(rename = "jwt-svid")]
    JwtSvid(JwtOutput),
    /// `type: identity`.
    #[serde(rename = "identity")]
    Identity(IdentityOutput),
    /// `type: aws-web-identity`.
    #[serde(rename = "aws-web-identity")]
    AwsWebIdentity(AwsWebIdentityOutput),
    /// `type: aws-roles-anywhere`.
    #[serde(rename = "aws-roles-anywhere")]
    AwsRolesAnywhere(AwsRolesAnywhereOutput),
    /// `type: azure-federated`.
    #[serde(rename = "azure-federated")]
    AzureFederated(AzureFederatedOutput),
    /// `type: gcp-external-account`.
    #[serde(rename = "gcp-external-account")]
    GcpExternalAccount(GcpExternalAccountOutput),
    /// `type: application`: an X.509-SVID under the names TLS servers and
    /// clients (nginx, curl, Go, Java) read.
    #[serde(rename = "application")]
    Application(X509Output),
    /// `type: database`.
    #[serde(rename = "database")]
    Database(DatabaseOutput),
    /// `type: kubernetes`: a Kubernetes client certificate and a kubeconfig.
    #[serde(rename = "kubernetes")]
    Kubernetes(KubernetesOutput),
    /// `type: ssh`.
    #[serde(rename = "ssh")]
    Ssh(SshOutput),
    /// `type: ssh-host`.
    #[serde(rename = "ssh-host")]
    SshHost(SshHostOutput),
}

/// One `outputs[]` item: the output and what to tell its reader after a write.
#[derive(Debug, Clone, Deserialize)]
pub struct OutputEntry {
    /// The output (`type` and its fields).
    #[serde(flatten)]
    pub output: OutputConfig,
    /// Reload the program that reads the files after each write ([`crate::reload`]).
    #[serde(default)]
    pub reload: Option<crate::reload::ReloadConfig>,
}

impl std::ops::Deref for OutputEntry {
    type Target = OutputConfig;
    fn deref(&self) -> &OutputConfig {
        &self.output
    }
}

impl OutputConfig {
    /// Owner, group and mode of the output's files; `field` names it in errors.
    pub fn access(&self, field: &str) -> Result<Access, ConfigError> {
        macro_rules! of {
            ($o:expr) => {
                resolve_access(field, &$o.owner, &$o.group, $o.mode)
            };
        }
        match self {
            OutputConfig::X509Svid(o) => of!(o),
            OutputConfig::JwtSvid(o) => of!(o),
            OutputConfig::Identity(o) => of!(o),
            OutputConfig::AwsWebIdentity(o) => of!(o),
            OutputConfig::AwsRolesAnywhere(o) => of!(o),
            OutputConfig::AzureFederated(o) => of!(o),
            OutputConfig::GcpExternalAccount(o) => of!(o),
            OutputConfig::Application(o) => of!(o),
            OutputConfig::Database(o) => of!(o),
            OutputConfig::Kubernetes(o) => of!(o),
            OutputConfig::Ssh(o) => of!(o),
            OutputConfig::SshHost(o) => of!(o),
        }
    }
}

/// The SPIFFE Workload API service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiConfig {
    /// Unix socket path. Its directory is created 0755 and the socket is
    /// connectable by every local user: attestation decides who gets what.
    pub socket: PathBuf,
    /// Workload identities to try for each caller, in order.
    pub workload_identities: Vec<String>,
    /// X.509-SVID lifetime (default: broker default).
    #[serde(default)]
    pub x509_ttl: Option<Dur>,
    /// JWT-SVID lifetime (default: broker default).
    #[serde(default)]
    pub jwt_ttl: Option<Dur>,
    /// Connection and stream limits.
    #[serde(default)]
    pub limits: WorkloadLimitsConfig,
}

/// `services[].limits` of the Workload API (every field optional; defaults in
/// `workload::conn::Limits`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadLimitsConfig {
    /// Connections in all.
    pub max_connections: Option<usize>,
    /// Connections of one uid.
    pub max_connections_per_uid: Option<usize>,
    /// Concurrent streams on one connection.
    pub max_streams_per_connection: Option<u32>,
    /// Time a connection may stay without an open stream.
    pub idle_timeout: Option<Dur>,
}

impl WorkloadLimitsConfig {
    /// The limits, defaults filled in.
    pub fn resolve(&self) -> crate::workload::conn::Limits {
        let d = crate::workload::conn::Limits::default();
        crate::workload::conn::Limits {
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_connections_per_uid: self.max_connections_per_uid.unwrap_or(d.max_connections_per_uid),
            max_streams_per_connection: self.max_streams_per_connection.unwrap_or(d.max_streams_per_connection),
            idle_timeout: self.idle_timeout.map(|t| t.0).unwrap_or(d.idle_timeout),
        }
    }
}

/// One service.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum ServiceConfig {
    /// `type: workload-api`.
    #[serde(rename = "workload-api")]
    WorkloadApi(WorkloadApiConfig),
}

/// `/readyz` and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Listen address, e.g. `127.0.0.1:9090`.
    pub listen: String,
    /// Show on `/readyz` why each credential is not ready (output paths and the
    /// broker's refusals, which can name the bot, its roles and their patterns).
    /// Default false: `/readyz` says only ready or not ready, as any local user can ask.
    #[serde(default)]
    pub details: bool,
}

fn check_target(field: &str, spiffe_id: &Option<String>, wi: &Option<String>) -> Result<(), ConfigError> {
    match (spiffe_id, wi) {
        (Some(id), None) if id.starts_with("spiffe://") => Ok(()),
        (Some(id), None) => Err(invalid(format!("{field}.spiffe_id"), format!("{id:?} is not a spiffe:// ID"))),
        (None, Some(w)) if !w.is_empty() => Ok(()),
        (Some(_), Some(_)) => Err(invalid(field, "give spiffe_id or workload_identity, not both")),
        _ => Err(invalid(field, "spiffe_id or workload_identity is required")),
    }
}

impl AgentConfig {
    /// Parses YAML and validates.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = serde_norway::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.broker.trim().is_empty() {
            return Err(invalid("broker", "is empty; expected HOST:PORT"));
        }
        sigil_schemas::client::parse_addrs(&self.broker).map_err(|e| invalid("broker", e.to_string()))?;
        if self.join.token_name().is_some_and(|n| n.trim().is_empty()) {
            return Err(invalid("join.token_name", "is empty; name the join token whose rules apply"));
        }
        match &self.join {
            JoinConfig::Token(t) if t.token.is_some() && t.token_file.is_some() => {
                return Err(invalid("join", "give token or token_file, not both"));
            }
            JoinConfig::Github(o)
            | JoinConfig::Gitlab(o)
            | JoinConfig::Circleci(o)
            | JoinConfig::Bitbucket(o)
            | JoinConfig::AzureDevops(o)
            | JoinConfig::TerraformCloud(o)
            | JoinConfig::Spacelift(o)
            | JoinConfig::Oidc(o) => match (&o.id_token_file, &o.id_token_env) {
                (Some(_), Some(_)) => return Err(invalid("join", "give id_token_file or id_token_env, not both")),
                (None, None) => return Err(invalid("join", "id_token_file or id_token_env is required (where the platform's ID token is)")),
                _ => {}
            },
            JoinConfig::BoundKeypair(b) if b.registration_secret.is_some() && b.registration_secret_file.is_some() => {
                return Err(invalid("join", "give registration_secret or registration_secret_file, not both"));
            }
            JoinConfig::Gcp(g) if g.audience.is_empty() => return Err(invalid("join.audience", "is empty")),
            _ => {}
        }
        if self.retry.initial.0.is_zero() || self.retry.max.0 < self.retry.initial.0 {
            return Err(invalid("retry", "initial must be > 0 and max >= initial"));
        }
        for (name, t) in [("broker_timeouts.connect", self.broker_timeouts.connect), ("broker_timeouts.call", self.broker_timeouts.call)] {
            if let Some(Dur(d)) = t {
                if d.is_zero() || d > sigil_schemas::client::MAX_TIMEOUT {
                    return Err(invalid(name, format!("must be between 1ms and {}s", sigil_schemas::client::MAX_TIMEOUT.as_secs())));
                }
            }
        }
        let mut paths = std::collections::BTreeSet::new();
        for (i, entry) in self.outputs.iter().enumerate() {
            let field = format!("outputs[{i}]");
            if let Some(r) = &entry.reload {
                r.resolve().map_err(|e| invalid(format!("{field}.reload"), e.to_string()))?;
            }
            let owned: Vec<String> = match &entry.output {
                OutputConfig::X509Svid(x) | OutputConfig::Application(x) => {
                    check_target(&field, &x.spiffe_id, &x.workload_identity)?;
                    vec![x.dir.display().to_string()]
                }
                OutputConfig::JwtSvid(j) => {
                    check_target(&field, &j.spiffe_id, &j.workload_identity)?;
                    if j.audiences.is_empty() || j.audiences.iter().any(|a| a.is_empty()) {
                        return Err(invalid(format!("{field}.audiences"), "at least one non-empty audience is required"));
                    }
                    vec![j.path.display().to_string()]
                }
                OutputConfig::Identity(d) => vec![d.path.display().to_string()],
                OutputConfig::AwsWebIdentity(a) => {
                    check_target(&field, &a.spiffe_id, &a.workload_identity)?;
                    a.validate(&field)?
                }
                OutputConfig::AwsRolesAnywhere(a) => {
                    check_target(&field, &a.spiffe_id, &a.workload_identity)?;
                    a.validate(&field)?
                }
                OutputConfig::AzureFederated(a) => {
                    check_target(&field, &a.spiffe_id, &a.workload_identity)?;
                    a.validate(&field)?
                }
                OutputConfig::GcpExternalAccount(g) => {
                    check_target(&field, &g.spiffe_id, &g.workload_identity)?;
                    g.validate(&field)?
                }
                OutputConfig::Database(d) => d.validate(&field)?,
                OutputConfig::Kubernetes(k) => k.validate(&field)?,
                OutputConfig::Ssh(o) => o.validate(&field)?,
                OutputConfig::SshHost(o) => o.validate(&field)?,
            };
            for path in owned {
                // `FILE#[profile]`: INI files are shared, one section per output.
                if path.is_empty() || path.starts_with('#') {
                    return Err(invalid(field, "path/dir is empty"));
                }
                if !paths.insert(path.clone()) {
                    return Err(invalid(field, format!("{path} is already used by another output")));
                }
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            match s {
                ServiceConfig::WorkloadApi(w) if w.workload_identities.is_empty() => {
                    return Err(invalid(format!("services[{i}].workload_identities"), "list at least one workload identity"));
                }
                ServiceConfig::WorkloadApi(w) => {
                    let l = w.limits.resolve();
                    let field = |f: &str| format!("services[{i}].limits.{f}");
                    if l.max_connections == 0 {
                        return Err(invalid(field("max_connections"), "must be at least 1"));
                    }
                    if l.max_connections_per_uid == 0 {
                        return Err(invalid(field("max_connections_per_uid"), "must be at least 1"));
                    }
                    if l.max_streams_per_connection == 0 {
                        return Err(invalid(field("max_streams_per_connection"), "must be at least 1"));
                    }
                    if l.idle_timeout.is_zero() {
                        return Err(invalid(field("idle_timeout"), "must be longer than 0s"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Bundle polling interval.
    pub fn bundle_refresh(&self) -> Duration {
        self.bundle_refresh.map(|d| d.0).unwrap_or(Duration::from_secs(30)).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\n";

    #[test]
    fn full_config_parses_with_durations_in_both_forms() {
        let text = format!(
            "{BASE}identity_ttl: 1h\nbundle_refresh: 15\noutputs:\n  - type: x509-svid\n    dir: /tmp/svid\n    spiffe_id: spiffe://example.org/a\n    ttl: 10m\n  - type: jwt-svid\n    path: /tmp/jwt\n    audiences: [sts.amazonaws.com]\n    workload_identity: web\n  - type: identity\n    path: /tmp/id\nservices:\n  - type: workload-api\n    socket: /tmp/agent.sock\n    workload_identities: [web]\nhealth: {{listen: 127.0.0.1:9090}}\n"
        );
        let cfg = AgentConfig::from_yaml(&text).unwrap();
        assert_eq!(cfg.identity_ttl, Some(Dur(Duration::from_secs(3600))));
        assert_eq!(cfg.bundle_refresh(), Duration::from_secs(15));
        assert_eq!(cfg.outputs.len(), 3);
        assert!(matches!(&cfg.outputs[0].output, OutputConfig::X509Svid(x) if x.ttl == Some(Dur(Duration::from_secs(600)))));
    }

    #[test]
    fn an_output_takes_a_reload_and_a_bad_one_is_named_at_its_field() {
        let ok = format!("{BASE}outputs:\n  - type: application\n    dir: /tmp/app\n    workload_identity: web\n    reload: {{signal: HUP, pid_file: /run/nginx.pid}}\n");
        let cfg = AgentConfig::from_yaml(&ok).unwrap();
        assert_eq!(cfg.outputs[0].reload.as_ref().unwrap().resolve(), Ok(crate::reload::Reload::Signal { signal: "HUP", pid_file: "/run/nginx.pid".into() }));
        assert!(matches!(&cfg.outputs[0].output, OutputConfig::Application(_)));
        let bad = format!("{BASE}outputs:\n  - type: identity\n    path: /tmp/x\n    reload: {{command: [nginx, -s, reload]}}\n");
        let err = AgentConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(err.contains("outputs[0].reload") && err.contains("absolute"), "{err}");
        let typo = format!("{BASE}outputs:\n  - type: identity\n    path: /tmp/x\n    reload: {{comand: [/bin/true]}}\n");
        let err = AgentConfig::from_yaml(&typo).unwrap_err().to_string();
        assert!(err.contains("comand"), "{err}");
    }

    #[test]
    fn unknown_field_in_an_output_is_named() {
        let text = format!("{BASE}outputs:\n  - type: x509-svid\n    dir: /tmp/svid\n    spiffe_idz: spiffe://example.org/a\n");
        let err = AgentConfig::from_yaml(&text).unwrap_err().to_string();
        assert!(err.contains("spiffe_idz"), "{err}");
    }

    #[test]
    fn broker_accepts_one_address_a_list_or_a_comma_separated_string() {
        let rest = "ca_file: c\nstate_dir: s\njoin: {method: token, token_file: /tmp/t}\n";
        let one = AgentConfig::from_yaml(&format!("broker: a:1\n{rest}")).unwrap();
        assert_eq!(one.broker, "a:1");
        let list = AgentConfig::from_yaml(&format!("broker: [a:1, 'b:2']\n{rest}")).unwrap();
        assert_eq!(list.broker, "a:1,b:2");
        let commas = AgentConfig::from_yaml(&format!("broker: a:1,b:2\n{rest}")).unwrap();
        assert_eq!(commas.broker, "a:1,b:2");
    }

    #[test]
    fn an_empty_broker_list_or_a_plaintext_entry_is_rejected() {
        let rest = "ca_file: c\nstate_dir: s\njoin: {method: token, token_file: /tmp/t}\n";
        assert!(AgentConfig::from_yaml(&format!("broker: []\n{rest}")).is_err());
        let e = AgentConfig::from_yaml(&format!("broker: [a:1, 'http://b:2']\n{rest}")).unwrap_err().to_string();
        assert!(e.contains("broker"), "{e}");
    }

    #[test]
    fn unknown_join_method_is_rejected() {
        let text = "broker: a:1\nca_file: c\nstate_dir: s\njoin: {method: magic}\n";
        let err = AgentConfig::from_yaml(text).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn jwt_output_without_audience_is_rejected_with_its_path() {
        let text = format!("{BASE}outputs:\n  - type: jwt-svid\n    path: /tmp/jwt\n    audiences: []\n    spiffe_id: spiffe://example.org/a\n");
        let err = AgentConfig::from_yaml(&text).unwrap_err().to_string();
        assert!(err.contains("outputs[0].audiences"), "{err}");
    }

    #[test]
    fn output_needs_exactly_one_target() {
        let text = format!("{BASE}outputs:\n  - type: x509-svid\n    dir: /tmp/svid\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("spiffe_id or workload_identity"));
    }

    #[test]
    fn two_outputs_on_one_path_are_rejected() {
        let text = format!("{BASE}outputs:\n  - type: identity\n    path: /tmp/x\n  - type: identity\n    path: /tmp/x\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("already used"));
    }

    #[test]
    fn owner_group_and_mode_resolve_and_bad_modes_are_refused() {
        let text = format!("{BASE}outputs:\n  - type: identity\n    path: /tmp/x\n    owner: root\n    group: \"0\"\n");
        let cfg = AgentConfig::from_yaml(&text).unwrap();
        assert_eq!(cfg.outputs[0].access("o").unwrap(), Access { mode: 0o640, uid: Some(0), gid: Some(0) });
        for (mode, want) in [("0640", Ok(0o640)), ("\"0644\"", Ok(0o644)), ("640", Err("octal string")), ("\"0666\"", Err("at most")), ("\"4600\"", Err("at most")), ("\"0400\"", Err("0600 at least")), ("\"rw\"", Err("not an octal"))] {
            let text = format!("{BASE}outputs:\n  - type: identity\n    path: /tmp/x\n    mode: {mode}\n");
            match (AgentConfig::from_yaml(&text), want) {
                (Ok(cfg), Ok(bits)) => assert_eq!(cfg.outputs[0].access("o").unwrap().mode, bits, "{mode}"),
                (Err(e), Err(why)) => assert!(e.to_string().contains(why), "{mode}: {e}"),
                (got, _) => panic!("{mode}: {got:?}"),
            }
        }
        // Names are looked up when the agent starts, not by --check (which may run elsewhere).
        let text = format!("{BASE}outputs:\n  - type: identity\n    path: /tmp/x\n    owner: no-such-user-sigil\n");
        let err = AgentConfig::from_yaml(&text).unwrap().outputs[0].access("outputs[0]").unwrap_err().to_string();
        assert!(err.contains("outputs[0].owner") && err.contains("no user named"), "{err}");
    }

    #[test]
    fn application_output_parses_and_needs_a_target_and_its_own_dir() {
        let text = format!("{BASE}outputs:\n  - type: application\n    dir: /tmp/app\n    workload_identity: web\n    ttl: 1h\n    group: \"0\"\n");
        let cfg = AgentConfig::from_yaml(&text).unwrap();
        assert!(matches!(&cfg.outputs[0].output, OutputConfig::Application(x) if x.workload_identity.as_deref() == Some("web")));
        assert_eq!(cfg.outputs[0].access("o").unwrap().mode, 0o640);
        let text = format!("{BASE}outputs:\n  - type: application\n    dir: /tmp/app\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("outputs[0]: spiffe_id or workload_identity"));
        let text = format!("{BASE}outputs:\n  - type: application\n    dir: /tmp/app\n    spiffe_id: web\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("outputs[0].spiffe_id"));
        let text = format!("{BASE}outputs:\n  - type: x509-svid\n    dir: /tmp/app\n    spiffe_id: spiffe://a/b\n  - type: application\n    dir: /tmp/app\n    spiffe_id: spiffe://a/b\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("already used"));
        let text = format!("{BASE}outputs:\n  - type: application\n    dir: /tmp/app\n    spiffe_id: spiffe://a/b\n    dns_names: [x]\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("dns_names"));
    }

    #[test]
    fn kubernetes_output_parses_and_refuses_skipping_server_verification() {
        let text = format!("{BASE}outputs:\n  - type: kubernetes\n    dir: /tmp/kube\n    server: https://127.0.0.1:6443\n    cluster_ca_file: /etc/k/ca.crt\n    user: deployer\n    groups: [deployers, viewers]\n    exec: true\n    ttl: 1h\n");
        let cfg = AgentConfig::from_yaml(&text).unwrap();
        assert!(matches!(&cfg.outputs[0].output, OutputConfig::Kubernetes(k) if k.exec && k.groups.len() == 2 && k.context_name == "sigil"));
        let text = format!("{BASE}outputs:\n  - type: kubernetes\n    dir: /tmp/kube\n    server: https://h\n    user: u\n    insecure_skip_tls_verify: true\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("outputs[0].insecure_skip_tls_verify"));
        let text = format!("{BASE}outputs:\n  - type: kubernetes\n    dir: /tmp/kube\n    server: https://h\n");
        assert!(AgentConfig::from_yaml(&text).unwrap_err().to_string().contains("user"));
    }

    #[test]
    fn token_never_appears_in_debug_output() {
        let text = "broker: a:1\nca_file: c\nstate_dir: s\njoin: {method: token, token: s3cr3t-value}\n";
        let cfg = AgentConfig::from_yaml(text).unwrap();
        assert!(!format!("{cfg:?}").contains("s3cr3t-value"));
    }
}
