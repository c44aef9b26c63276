//! The broker's operations: authenticate, authorize, act, audit. Transport-free:
//! the gRPC layer decodes, calls in here, and encodes.

pub mod apply;
pub mod ca;
pub mod bindings;
pub mod caller_cache;
pub mod error;
pub mod identity;
pub mod instances;
pub mod issue;
pub mod locks;
pub mod resources;
pub mod revocation;
pub mod ssh;
pub mod tls_certs;

use crate::audit::Audit;
use sigil_core::clock::Clock;
use sigil_core::domain::TrustDomain;
use crate::store::Store;
pub use error::ServiceError;
use std::sync::Arc;

/// Broker settings that shape issuance.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Public issuer URL (`iss` of JWT-SVIDs), no trailing slash.
    pub public_url: String,
    /// Default X.509-SVID lifetime.
    pub x509_default_ttl: i64,
    /// Largest X.509-SVID lifetime when no role says otherwise.
    pub x509_max_ttl: i64,
    /// Default JWT-SVID lifetime.
    pub jwt_default_ttl: i64,
    /// Largest JWT-SVID lifetime when no role says otherwise.
    pub jwt_max_ttl: i64,
    /// Default bot identity lifetime.
    pub identity_default_ttl: i64,
    /// Largest bot identity lifetime when the bot does not say.
    pub identity_max_ttl: i64,
    /// Bundle refresh hint, seconds.
    pub refresh_hint: i64,
    /// The names an agent may dial this broker by: the DNS names and IP
    /// addresses of its serving certificate. A signed IAM join request must
    /// name one of them (see [`sigil_core::join_wire::sts::SERVER_NAME_HEADER`]).
    pub server_names: Vec<String>,
    /// A bot instance not seen (join, renewal, heartbeat) for this many
    /// seconds is no longer listed (expiry at read, see [`instances`]).
    pub instance_expire_after: i64,
    /// Fewest seconds between two stored heartbeats of one instance.
    pub heartbeat_min_interval: i64,
    /// Seconds between two sweeps deleting expired instances ([`instances`]).
    pub instance_sweep_interval: u64,
    /// Most instances one sweep deletes.
    pub instance_sweep_batch: usize,
    /// How long a served CRL is valid (nextUpdate - thisUpdate); it is
    /// rebuilt once half of it has passed.
    pub crl_validity: i64,
    /// Name the CA key's CRL in a CRL distribution point extension of every
    /// X.509-SVID.
    pub crl_distribution_points: bool,
    /// Longest SSH certificate (`ssh.max_ttl_seconds`), a ceiling no role raises.
    pub ssh_max_ttl: i64,
    /// Lifetime of a database / Kubernetes certificate whose request names none.
    pub tls_default_ttl: i64,
    /// Longest database / Kubernetes certificate, a ceiling no role raises.
    pub tls_max_ttl: i64,
    /// Clusters whose TokenReview API verifies `kubernetes` joins (`kubernetes_clusters`).
    pub kubernetes_clusters: Arc<crate::join::kubernetes_cluster::Clusters>,
}

impl Settings {
    /// Defaults for a trust domain and issuer (SPIRE-like: X.509 1h, JWT 5m).
    pub fn new(trust_domain: TrustDomain, public_url: String) -> Self {
        Self {
            trust_domain,
            public_url: public_url.trim_end_matches('/').to_string(),
            x509_default_ttl: 3600,
            x509_max_ttl: 24 * 3600,
            jwt_default_ttl: 300,
            jwt_max_ttl: 24 * 3600,
            identity_default_ttl: 3600,
            identity_max_ttl: 24 * 3600,
            refresh_hint: 300,
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            instance_expire_after: 7 * 24 * 3600,
            heartbeat_min_interval: 10,
            instance_sweep_interval: 300,
            instance_sweep_batch: 1000,
            crl_validity: 3600,
            crl_distribution_points: false,
            ssh_max_ttl: crate::config::SSH_DEFAULT_MAX_TTL,
            tls_default_ttl: crate::config::TLS_DEFAULT_TTL,
            tls_max_ttl: crate::config::TLS_DEFAULT_MAX_TTL,
            kubernetes_clusters: Default::default(),
        }
    }
}

/// The broker.
pub struct Broker {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// CAs.
    pub authority: Arc<crate::ca::AuthorityCell>,
    /// CA key backends, rotation bounds and schedule.
    pub rotation: Arc<crate::ca::rotation::Rotation>,
    /// Settings.
    pub settings: Settings,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Audit log.
    pub audit: Audit,
    /// Pending join challenges.
    pub challenges: crate::join::challenge::Challenges,
    /// Callers resolved per client certificate (see [`caller_cache`]).
    pub callers: caller_cache::CallerCache,
    /// This replica's lock set (see [`locks`]).
    pub locks: locks::LockCache,
    /// Request, join and store measurements (served on `metrics_listen`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Revoked certificates and the CRLs (see [`revocation`]).
    pub revocations: revocation::Revocations,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("settings", &self.settings).finish()
    }
}

impl Broker {
    /// Now, from the injected clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The SPIFFE ID URI of a bot's identity.
    pub fn bot_uri(&self, bot: &str) -> String {
        format!("{}{}{bot}", self.settings.trust_domain.id_string(), sigil_core::domain::BOT_IDENTITY_PREFIX)
    }
}
