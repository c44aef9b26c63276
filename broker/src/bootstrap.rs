//! Turns a config into a running broker: data directory, seal key, store, CAs,
//! first admin, serving certificate, files for clients.

use crate::audit::{Audit, Sink};
use crate::ca::clock::{Clock, SystemClock};
use crate::ca::keys::KeyAlg;
use crate::ca::seal::SealKey;
use crate::ca::{Authority, CaSettings};
use crate::config::ServerConfig;
use crate::fsutil::write_private;
use crate::domain::{Bot, Name, Role, RoleAllow, Rule, TrustDomain};
use crate::service::{Broker, Settings};
use crate::store::sqlite::SqliteStore;
use crate::store::{Doc, Kind, Store, StoreError};
use anyhow::{anyhow, bail, Context, Result};
use sigil_schemas::identity::{to_pem, Identity};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// Name of the bootstrap admin bot and role.
pub const ADMIN: &str = "admin";

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

fn seal_key(cfg: &ServerConfig, dev: bool) -> Result<SealKey> {
    if let Some(path) = &cfg.seal_key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read seal key file {}", path.display()))?;
        return Ok(SealKey::parse(&text)?);
    }
    if let Ok(text) = std::env::var("SIGIL_SEAL_KEY") {
        return SealKey::parse(&text).context("SIGIL_SEAL_KEY");
    }
    let path = cfg.data_dir.join("seal.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        return Ok(SealKey::parse(&text)?);
    }
    if !dev {
        bail!("no seal key: set seal_key_file in the config or SIGIL_SEAL_KEY (32 bytes, hex); `openssl rand -hex 32` makes one");
    }
    let hexkey = SealKey::generate_hex()?;
    write_private(&path, hexkey.as_bytes())?;
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
            rules: vec![Rule { resources: vec!["*".into()], verbs: vec!["*".into()] }],
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

/// Issues an admin identity (a new instance of the admin bot) and writes it.
pub async fn write_admin_identity(broker: &Broker, path: &Path, ttl: i64) -> Result<()> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let mut attrs = crate::domain::Attributes::new();
    attrs.insert("join.method".into(), "bootstrap".into());
    let issued = broker.start_instance(ADMIN, &attrs, &spki, ttl).await.map_err(|e| anyhow!("{e}"))?;
    let id = Identity::new(to_pem("CERTIFICATE", &issued.cert_der), kp.serialize_pem(), broker.authority.internal_ca_pem());
    Ok(write_private(path, id.to_pem().as_bytes())?)
}

fn admin_identity_fresh(path: &Path, now: i64) -> bool {
    Identity::load(path).ok().and_then(|i| i.subject().ok()).is_some_and(|(_, na)| na - now > 3600)
}

/// Prepares a broker from config. In dev mode a seal key is generated if missing.
pub async fn prepare(cfg: &ServerConfig, dev: bool) -> Result<Prepared> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let td: TrustDomain = cfg.trust_domain.parse().context("trust_domain")?;
    let seal = seal_key(cfg, dev)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&cfg.data_dir.join("sigil.db"))?);
    let settings_ca = CaSettings {
        x509_alg: KeyAlg::parse(&cfg.x509_ca_alg).ok_or_else(|| anyhow!("x509_ca_alg: use ec-p256 or rsa-2048"))?,
        jwt_alg: KeyAlg::parse(&cfg.jwt_alg).ok_or_else(|| anyhow!("jwt_alg: use rsa-2048 (RS256) or ec-p256 (ES256)"))?,
        ..Default::default()
    };
    let authority = Arc::new(Authority::load_or_create(&store, &seal, &td, &settings_ca, clock.now()).await?);

    let listener = tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let public_url = cfg.public_url.clone().unwrap_or_else(|| format!("https://{addr}"));
    let mut settings = Settings::new(td, public_url.clone());
    if let Some(t) = cfg.x509_svid_ttl {
        settings.x509_default_ttl = t;
    }
    if let Some(t) = cfg.jwt_svid_ttl {
        settings.jwt_default_ttl = t;
    }
    let sink = match cfg.audit_log.as_deref() {
        Some("none") => Sink::None,
        Some("stderr") => Sink::Stderr,
        other => {
            let path = other.map(std::path::PathBuf::from).unwrap_or_else(|| cfg.data_dir.join("audit.jsonl"));
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)
                .with_context(|| format!("cannot open audit log {}", path.display()))?;
            Sink::File(std::sync::Mutex::new(f))
        }
    };
    let broker = Arc::new(Broker {
        audit: Audit::new(store.clone(), sink),
        store: store.clone(),
        authority,
        settings,
        clock: clock.clone(),
        challenges: Default::default(),
        callers: Default::default(),
    });

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
    let tls = crate::server::tls::server_config(&broker.authority, &dns, &ips, clock.now())?;

    write_private(&cfg.data_dir.join("tls-ca.pem"), broker.authority.internal_ca_pem().as_bytes())?;
    write_private(&cfg.data_dir.join("bundle.pem"), broker.authority.x509_bundle_pem().as_bytes())?;
    ensure_admin(&store).await?;
    let admin_path = cfg.data_dir.join("admin.identity");
    if !admin_identity_fresh(&admin_path, clock.now()) {
        let ttl = cfg.admin_identity_ttl.unwrap_or(if dev { 7 * 24 * 3600 } else { 3600 });
        let mut b = Broker {
            audit: Audit::new(store.clone(), Sink::None),
            store: store.clone(),
            authority: broker.authority.clone(),
            settings: broker.settings.clone(),
            clock,
            challenges: Default::default(),
            callers: Default::default(),
        };
        b.settings.identity_max_ttl = b.settings.identity_max_ttl.max(ttl);
        write_admin_identity(&b, &admin_path, ttl).await?;
    }
    Ok(Prepared { broker, listener, addr, tls })
}
