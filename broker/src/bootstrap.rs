//! Turns a config into a running broker: data directory, seal key, store, CAs,
//! first admin, serving certificate, files for clients.

use crate::audit::{Audit, Sink};
use sigil_core::clock::{Clock, SystemClock};
use sigil_core::keys::KeyAlg;
use crate::ca::seal::SealKey;
use crate::ca::{Authority, CaSettings};
use crate::config::ServerConfig;
use crate::data_dir::{self, DataDir, Mode};
use sigil_core::fsutil::write_private;
use sigil_core::domain::{Bot, Name, Role, RoleAllow, Rule, TrustDomain};
use crate::server::serving_cert::ServingNames;
use crate::service::{Broker, Settings};
use crate::config::StoreBackend;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Doc, Kind, Store, StoreError};
use anyhow::{anyhow, bail, Context, Result};
use sigil_schemas::identity::{to_pem, Identity};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// Name of the bootstrap admin bot and role.
pub const ADMIN: &str = "admin";
/// The seal key dev mode generates in the data directory.
const DEV_SEAL_KEY: &str = "seal.key";

/// A prepared broker, ready to serve.
pub struct Prepared {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Bound listener.
    pub listener: tokio::net::TcpListener,
    /// Actual listen address.
    pub addr: SocketAddr,
    /// TLS config.
    pub tls: rustls::ServerConfig,
}

/// The seal key: `seal_key_file`, else `SIGIL_SEAL_KEY`, else (dev mode only)
/// `DATA_DIR/seal.key`, generated at the first start. Production refuses a
/// `seal.key` that dev mode left in the data directory unless `seal_key_file`
/// names it: kept beside the data it seals, a copy of the directory would hold
/// every CA key.
fn seal_key(cfg: &ServerConfig, data: &DataDir, dev: bool) -> Result<SealKey> {
    if let Some(path) = &cfg.seal_key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read seal key file {}", path.display()))?;
        return Ok(SealKey::parse(&text)?);
    }
    if let Ok(text) = std::env::var("SIGIL_SEAL_KEY") {
        return SealKey::parse(&text).context("SIGIL_SEAL_KEY");
    }
    let path = cfg.data_dir.join(DEV_SEAL_KEY);
    if !dev {
        if path.exists() {
            bail!(
                "refusing {}: dev mode wrote this seal key beside the data it seals (a copy of the data directory would hold every CA key). \
                 Move it out of the data directory and set seal_key_file in the config to its new path, or set SIGIL_SEAL_KEY; \
                 to keep it where it is knowingly, set seal_key_file: {}",
                path.display(),
                path.display()
            );
        }
        bail!("no seal key: set seal_key_file in the config or SIGIL_SEAL_KEY (32 bytes, hex); `openssl rand -hex 32` makes one");
    }
    if let Some(text) = sigil_core::fsutil::read_private_text(&path, sigil_core::fsutil::MAX_PRIVATE_READ)? {
        return Ok(SealKey::parse(&text)?);
    }
    let hexkey = SealKey::generate_hex()?;
    data.dir.write(DEV_SEAL_KEY.as_ref(), hexkey.as_bytes(), 0o600)?;
    Ok(SealKey::parse(&hexkey)?)
}

async fn ensure_admin(store: &Arc<dyn Store>) -> Result<bool> {
    let role = Role {
        name: Name::parse(ADMIN)?,
        description: "Full access (created at bootstrap)".into(),
        allow: RoleAllow {
            spiffe_ids: vec!["/**".into()],
            audiences: vec!["*".into()],
            workload_identities: vec!["*".into()],
            rules: vec![Rule { resources: vec!["*".into()], verbs: vec!["*".into()], names: vec![] }],
            ..Default::default()
        },
        revision: 0,
    };
    let bot = Bot {
        name: Name::parse(ADMIN)?,
        roles: vec![Name::parse(ADMIN)?],
        traits: Default::default(),
        max_session_ttl_seconds: 0,
        revision: 0,
        generation: 0,
        locked: false,
    };
    let mut created = false;
    for (kind, value) in [(Kind::Role, serde_json::to_value(&role)?), (Kind::Bot, serde_json::to_value(&bot)?)] {
        let mut spec = value;
        if let Some(o) = spec.as_object_mut() {
            for k in ["revision", "generation", "locked"] {
                o.remove(k);
            }
        }
        match store.create(kind, &Doc { name: ADMIN.into(), revision: 0, spec }, None).await {
            Ok(_) => created = true,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created)
}

/// A broker for issuing an admin identity of `ttl` seconds: `broker`'s store,
/// authorities and settings, unaudited, with the identity lifetime cap raised
/// to `ttl`.
pub fn admin_issuer(broker: &Broker, ttl: i64) -> Broker {
    let mut b = Broker {
        audit: Audit::new(broker.store.clone(), Sink::None),
        store: broker.store.clone(),
        authority: broker.authority.clone(),
        rotation: broker.rotation.clone(),
        settings: broker.settings.clone(),
        clock: broker.clock.clone(),
        challenges: Default::default(),
        callers: Default::default(),
        locks: Default::default(),
        metrics: Default::default(),
        revocations: Default::default(),
    };
    b.settings.identity_max_ttl = b.settings.identity_max_ttl.max(ttl);
    b
}

/// Issues an admin identity (a new instance of the admin bot) and writes it.
pub async fn write_admin_identity(broker: &Broker, path: &Path, ttl: i64) -> Result<()> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let mut attrs = sigil_core::domain::Attributes::new();
    attrs.insert("join.method".into(), "bootstrap".into());
    let issued = broker.start_instance(ADMIN, &attrs, &spki, ttl).await.map_err(|e| anyhow!("{e}"))?;
    let id = Identity::new(to_pem("CERTIFICATE", &issued.cert_der), kp.serialize_pem(), broker.authority.current().internal_ca_pem());
    Ok(write_private(path, id.to_pem().as_bytes())?)
}

/// Whether `path` holds an admin identity valid for more than an hour. Read
/// never through a symlink: a link (or anything unreadable) is not fresh, so
/// the identity is reissued and the rename replaces the link.
fn admin_identity_fresh(path: &Path, now: i64) -> bool {
    let Ok(Some(text)) = sigil_core::fsutil::read_private_text(path, sigil_core::fsutil::MAX_PRIVATE_READ) else { return false };
    Identity::from_pem(&text).ok().and_then(|i| i.subject().ok()).is_some_and(|(_, na)| na - now > 3600)
}

/// Rotation bounds and schedule from the config, checked.
fn rotation_settings(
    cfg: &ServerConfig,
    settings: &Settings,
    admin_ttl: i64,
    key_store: crate::ca::backend::KeyStore,
    trust_domain: TrustDomain,
    ca: CaSettings,
) -> Result<crate::ca::rotation::Rotation> {
    use crate::ca::rotation::{AutoRotation, Lifetimes, Rotation};
    let r = &cfg.ca.rotation;
    if cfg.ca.jwks_cache_allowance_seconds < 0 {
        bail!("ca.jwks_cache_allowance_seconds must not be negative");
    }
    let auto = if r.automatic {
        if !(r.prepare_at_fraction > 0.0 && r.prepare_at_fraction < 1.0) {
            bail!("ca.rotation.prepare_at_fraction must be between 0 and 1 (exclusive), not {}", r.prepare_at_fraction);
        }
        if r.activate_after_seconds < 2 * settings.refresh_hint {
            bail!(
                "ca.rotation.activate_after_seconds ({}) must be at least twice bundle_refresh_hint ({}): agents must have fetched a key before it signs",
                r.activate_after_seconds,
                settings.refresh_hint
            );
        }
        if r.check_interval_seconds < 1 {
            bail!("ca.rotation.check_interval_seconds must be at least 1");
        }
        Some(AutoRotation {
            schedule: sigil_core::domain::ca_rotation::Schedule {
                prepare_at_fraction: r.prepare_at_fraction,
                activate_after: r.activate_after_seconds,
            },
            check_every: std::time::Duration::from_secs(r.check_interval_seconds),
        })
    } else {
        None
    };
    let lifetimes = Lifetimes {
        x509_svid_max_ttl: settings.x509_max_ttl,
        jwt_svid_max_ttl: settings.jwt_max_ttl,
        // The admin identity the bootstrap writes may outlive a bot identity.
        identity_max_ttl: settings.identity_max_ttl.max(admin_ttl),
        bundle_refresh_hint: settings.refresh_hint,
        jwks_cache_allowance: cfg.ca.jwks_cache_allowance_seconds,
        ssh_max_ttl: settings.ssh_max_ttl,
        tls_max_ttl: settings.tls_max_ttl,
    };
    Ok(Rotation { key_store, trust_domain, settings: ca, lifetimes, auto })
}

/// Prepares a broker from config. In dev mode a seal key is generated if missing.
pub async fn prepare(cfg: &ServerConfig, dev: bool) -> Result<Prepared> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let data = data_dir::prepare(&cfg.data_dir).with_context(|| format!("data dir {}", cfg.data_dir.display()))?;
    for name in &data.narrowed {
        tracing::warn!(file = %cfg.data_dir.join(name).display(), "narrowed the mode of a private file that other users could read");
    }
    let mode = if dev { Mode::Dev } else { Mode::Production };
    let td: TrustDomain = cfg.trust_domain.parse().context("trust_domain")?;
    let seal = seal_key(cfg, &data, dev)?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let backend: Arc<dyn Store> = match cfg.store.backend().map_err(|e| anyhow!(e))? {
        StoreBackend::Sqlite => {
            data.create_database()?;
            Arc::new(SqliteStore::open(&cfg.data_dir.join(data_dir::DATABASE))?)
        }
        StoreBackend::Postgres(url) => {
            let shown = crate::store::postgres::redact_url(&url);
            let store = PgStore::connect(&url).await.with_context(|| format!("store {shown}"))?;
            tracing::info!(store = %shown, "using the PostgreSQL store");
            Arc::new(store)
        }
    };
    let store: Arc<dyn Store> = Arc::new(crate::store::timed::TimedStore::new(backend, metrics.clone()));
    let not_ed = |a: KeyAlg| (a != KeyAlg::Ed25519).then_some(a);
    let settings_ca = CaSettings {
        x509_alg: KeyAlg::parse(&cfg.x509_ca_alg).and_then(not_ed).ok_or_else(|| anyhow!("x509_ca_alg: use ec-p256 or rsa-2048"))?,
        jwt_alg: KeyAlg::parse(&cfg.jwt_alg).and_then(not_ed).ok_or_else(|| anyhow!("jwt_alg: use rsa-2048 (RS256) or ec-p256 (ES256)"))?,
        ssh_alg: cfg.ssh.key_alg(&cfg.keys).map_err(|e| anyhow!(e))?,
        ca_ttl: cfg.ca.lifetime_seconds,
    };
    if cfg.ca.lifetime_seconds < 60 {
        bail!("ca.lifetime_seconds must be at least 60");
    }
    let key_store = crate::ca::backend::config::key_store(&cfg.keys, seal)?;
    tracing::info!(backend = key_store.generating_backend(), "CA keys");
    let authority = Arc::new(crate::ca::AuthorityCell::new(Authority::load_or_create(&store, &key_store, &td, &settings_ca, clock.now()).await?));
    let td_for_ca = td.clone();

    let listener = sigil_core::listen::bind(&cfg.listen, cfg.limits.connections.listen_backlog).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let public_url = cfg.public_url.clone().unwrap_or_else(|| format!("https://{addr}"));
    let mut settings = Settings::new(td, public_url.clone());
    if let Some(t) = cfg.x509_svid_ttl {
        settings.x509_default_ttl = t;
    }
    if let Some(t) = cfg.jwt_svid_ttl {
        settings.jwt_default_ttl = t;
    }
    for (value, field, name) in [
        (cfg.x509_svid_max_ttl, &mut settings.x509_max_ttl, "x509_svid_max_ttl"),
        (cfg.jwt_svid_max_ttl, &mut settings.jwt_max_ttl, "jwt_svid_max_ttl"),
        (cfg.identity_max_ttl, &mut settings.identity_max_ttl, "identity_max_ttl"),
        (cfg.bundle_refresh_hint, &mut settings.refresh_hint, "bundle_refresh_hint"),
    ] {
        match value {
            Some(v) if v < 1 => bail!("{name} must be at least 1 second"),
            Some(v) => *field = v,
            None => {}
        }
    }
    settings.ssh_max_ttl = cfg.ssh.max_ttl().map_err(|e| anyhow!(e))?;
    (settings.tls_default_ttl, settings.tls_max_ttl) = cfg.tls_certificates.lifetimes().map_err(|e| anyhow!(e))?;
    let admin_ttl = cfg.admin_identity_ttl.unwrap_or(if dev { 7 * 24 * 3600 } else { 3600 });
    let rotation = Arc::new(rotation_settings(cfg, &settings, admin_ttl, key_store, td_for_ca, settings_ca)?);
    if cfg.bot_instances.expire_after_seconds < 1 || cfg.bot_instances.heartbeat_min_interval_seconds < 0 {
        anyhow::bail!("bot_instances: expire_after_seconds must be at least 1 and heartbeat_min_interval_seconds at least 0");
    }
    settings.instance_expire_after = cfg.bot_instances.expire_after_seconds;
    settings.heartbeat_min_interval = cfg.bot_instances.heartbeat_min_interval_seconds;
    let sweep = &cfg.bot_instances;
    if !(1..=86_400).contains(&sweep.sweep_interval_seconds) || !(1..=10_000).contains(&sweep.sweep_batch) {
        anyhow::bail!("bot_instances: sweep_interval_seconds must be 1..=86400 and sweep_batch 1..=10000 (a batch holds the SQLite store for its duration)");
    }
    settings.instance_sweep_interval = sweep.sweep_interval_seconds;
    settings.instance_sweep_batch = sweep.sweep_batch;
    if !(60..=7 * 24 * 3600).contains(&cfg.revocation.crl_validity_seconds) {
        anyhow::bail!("revocation.crl_validity_seconds must be between 60 and 604800");
    }
    settings.crl_validity = cfg.revocation.crl_validity_seconds;
    settings.crl_distribution_points = cfg.revocation.crl_distribution_points;
    settings.kubernetes_clusters = Arc::new(crate::join::kubernetes_cluster::Clusters::from_config(&cfg.kubernetes_clusters)?);
    let sink = match cfg.audit_log.as_deref() {
        Some("none") => Sink::None,
        Some("stderr") => Sink::Stderr,
        other => {
            let path = other.map(std::path::PathBuf::from).unwrap_or_else(|| cfg.data_dir.join(data_dir::AUDIT_LOG));
            // 0600 when created; an existing log is narrowed to at most 0640 (a log shipper's group may read it).
            let f = sigil_core::fsutil::open_append(&path, 0o640).with_context(|| format!("cannot open audit log {}", path.display()))?;
            Sink::rotating(path, f, cfg.limits.audit.max_log_file_mib.saturating_mul(1 << 20))
        }
    };
    // Serving certificate names: loopback, the listen address, the public URL host, extras.
    let mut dns = vec!["localhost".to_string()];
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), "::1".parse()?];
    if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
        ips.push(addr.ip());
    }
    let host = public_url.trim_start_matches("https://").split(['/', ':']).next().unwrap_or_default().to_string();
    for name in std::iter::once(host).chain(cfg.tls_names.iter().cloned()) {
        match name.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !name.is_empty() && !dns.contains(&name) => dns.push(name),
            Err(_) => {}
        }
    }
    settings.server_names = dns.iter().cloned().chain(ips.iter().map(IpAddr::to_string)).collect();
    let limits = &cfg.limits;
    let audit = Audit::with_limits(store.clone(), sink, clock.clone(), limits.audit_refusals.into(), limits.audit);
    let broker = Arc::new(Broker {
        audit,
        store: store.clone(),
        authority,
        rotation,
        settings,
        clock: clock.clone(),
        challenges: crate::join::challenge::Challenges::new(limits.join_challenges.into()),
        callers: Default::default(),
        locks: Default::default(),
        metrics,
        revocations: Default::default(),
    });

    let (tls, serving) = crate::server::tls::server_config(&broker.authority, ServingNames { dns, ips }, clock.clone())?;
    crate::server::serving_cert::follow(&serving, clock.clone());

    write_private(&cfg.data_dir.join("tls-ca.pem"), broker.authority.current().internal_ca_pem().as_bytes())?;
    write_private(&cfg.data_dir.join("bundle.pem"), broker.authority.current().x509_bundle_pem().as_bytes())?;
    let moving = data.moves_to_production(mode);
    if moving {
        // Every identity of the admin bot issued before (the dev one lasts a week and its key sits in a
        // file beside the data) stops working: deleting the bot deletes its instances.
        tracing::warn!("data directory prepared by dev mode (or an older version): reissuing the admin identity; earlier admin identities are refused from now on");
        match store.delete(Kind::Bot, ADMIN, 0).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ensure_admin(&store).await?;
    let admin_path = cfg.data_dir.join(data_dir::ADMIN_IDENTITY);
    if moving || !admin_identity_fresh(&admin_path, clock.now()) {
        let ttl = admin_ttl;
        write_admin_identity(&admin_issuer(&broker, ttl), &admin_path, ttl).await?;
    }
    data.record_mode(mode)?;
    crate::client_files::follow(crate::client_files::ClientFiles::new(&cfg.data_dir), &broker);
    Ok(Prepared { broker, listener, addr, tls })
}
