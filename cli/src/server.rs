//! `sigil server`.

use sigil_broker::config::ServerConfig;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Dev mode: embedded store in --data-dir, generated seal key, self-signed TLS,
    /// admin identity written to DATA_DIR/admin.identity.
    #[arg(long)]
    dev: bool,
    /// Config file (YAML); see docs/reference/server-config.md.
    #[arg(long, conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Data directory (dev mode).
    #[arg(long, default_value = ".data/sigil")]
    data_dir: PathBuf,
    /// Listen address (dev mode).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// Issuer URL (dev mode); defaults to https://LISTEN.
    #[arg(long)]
    public_url: Option<String>,
    /// Trust domain (dev mode).
    #[arg(long, default_value = "sigil.local")]
    trust_domain: String,
}

pub(crate) async fn run(a: ServerArgs) -> Result<()> {
    let (cfg, dev) = match (&a.config, a.dev) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let cfg: ServerConfig = serde_norway::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
            (cfg, false)
        }
        (None, true) => (ServerConfig::dev(a.data_dir.clone(), a.listen.clone(), a.public_url.clone(), a.trust_domain.clone()), true),
        (None, false) => bail!("pass --config FILE, or --dev for a local development broker"),
    };
    // Before anything opens files: as many descriptors as the hard limit allows.
    let fd_limit = sigil_core::listen::limits::raise_fd_limit();
    // Bound before the broker port, so a client that finds the broker up finds this too.
    let ops = match &cfg.metrics_listen {
        Some(addr) => Some(sigil_broker::server::ops::bind(addr).await?),
        None => None,
    };
    let p = sigil_broker::bootstrap::prepare(&cfg, dev).await?;
    let s = &p.broker.settings;
    let dir = cfg.data_dir.display();
    eprintln!("sigil broker listening on {} (trust domain {})", p.addr, s.trust_domain);
    eprintln!("  issuer URL:      {}", s.public_url);
    eprintln!("  OIDC discovery:  {}/.well-known/openid-configuration", s.public_url);
    eprintln!("  SPIFFE bundle:   {}{}", s.public_url, sigil_broker::server::http::BUNDLE_PATH);
    eprintln!("  admin identity:  {dir}/admin.identity   TLS CA: {dir}/tls-ca.pem");
    eprintln!("next steps:");
    eprintln!("  export SIGIL_ADDR={} SIGIL_IDENTITY={dir}/admin.identity", p.addr);
    eprintln!("  sigil svid jwt --spiffe-id spiffe://{}/demo --audience demo", s.trust_domain);
    eprintln!("  sigil svid x509 --spiffe-id spiffe://{}/demo --out ./svid", s.trust_domain);
    if let Some(listener) = ops {
        eprintln!("  metrics:         http://{}/metrics (and /readyz, /healthz)", listener.local_addr()?);
        sigil_broker::server::ops::spawn(listener, &p.broker);
    }
    let shutdown = async {
        super::shutdown_signal().await;
        eprintln!("shutting down");
    };
    sigil_broker::server::serve_with(p.listener, p.broker, p.tls, cfg.limits.connections, fd_limit, shutdown).await?;
    Ok(())
}
