//! Putting it together: the long-running agent (identity, bundle and output
//! loops, Workload API sockets, health, SIGUSR1) and the one-shot mode.

use secrecy::SecretString;
use super::backoff::{random_jitter, Backoff};
use super::bundle::{AccessCa, AccessChange, AccessPurpose, Bundle, BundleChange};
use super::config::{AgentConfig, ConfigError, Dur, OutputConfig, ServiceConfig};
use super::metrics::{Metrics, IDENTITY};
use super::outputs::{self, KrlRewrite, Output, OutputError};
use super::renewal::{until_due, until_due_or_follow, Follows, Renewal};
use super::schedule::wait;
use super::session::{Session, SessionConfig, SessionError};
use super::state::{StateDir, StateError};
use super::{health, workload};
use sigil_core::clock::Clock;
use sigil_schemas::sigil::v1 as pb;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest a heartbeat may hold up the identity loop.
const HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker CA file cannot be read.
    #[error("cannot read ca_file {path}: {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// No identity could be obtained.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Some outputs failed (one-shot mode).
    #[error("{} output(s) failed: {}", .0.len(), .0.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; "))]
    Outputs(Vec<(String, OutputError)>),
    /// A Workload API socket cannot be served.
    #[error(transparent)]
    Workload(#[from] workload::WorkloadError),
    /// The health endpoint cannot be served.
    #[error(transparent)]
    Health(#[from] health::HealthError),
}

/// A configured agent.
pub struct Agent {
    cfg: AgentConfig,
    session: Arc<Session>,
    outputs: Vec<Arc<dyn Output>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    rotate: watch::Sender<Renewal>,
    bundle: watch::Sender<Option<Arc<Bundle>>>,
}

impl Agent {
    /// Prepares an agent: reads the CA, opens the state directory, builds outputs.
    /// `env_token` is the `SIGIL_TOKEN` fallback of the token join method.
    pub fn new(cfg: AgentConfig, env_token: Option<SecretString>, clock: Arc<dyn Clock>) -> Result<Self, AgentError> {
        cfg.validate()?;
        let ca_pem = sigil_core::pem::read_file(&cfg.ca_file).map_err(|source| AgentError::ReadCa { path: cfg.ca_file.clone(), source })?;
        let state = StateDir::open(&cfg.state_dir)?;
        let session = Arc::new(Session::new(SessionConfig {
            addr: cfg.broker.clone(),
            ca_pem,
            join: super::join::from_config(&cfg.join, env_token, &cfg.state_dir, &cfg.broker),
            ttl_seconds: Dur::secs(cfg.identity_ttl),
            state,
            clock: clock.clone(),
            timeouts: cfg.broker_timeouts.resolve(),
        }));
        let outputs: Vec<Arc<dyn Output>> = outputs::from_config(&cfg.outputs)?.into_iter().map(Arc::from).collect();
        let metrics = Arc::new(Metrics::default());
        metrics.register(IDENTITY);
        for o in &outputs {
            metrics.register(&o.name());
        }
        Ok(Self { cfg, session, outputs, metrics, clock, rotate: watch::Sender::new(Renewal::default()), bundle: watch::Sender::new(None) })
    }

    /// The session (for tests and embedding).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Renews everything now (what SIGUSR1 does).
    pub fn renew_all(&self) {
        self.rotate.send_modify(|r| r.all += 1);
    }

    /// Reports host, OS, version and outputs to the broker (best effort: a
    /// refusal or timeout is logged; the broker rate limits per instance).
    async fn send_heartbeat(&self) {
        let Some(held) = self.session.held().await else { return };
        let req = super::heartbeat::report(&super::heartbeat::host_name(), self.outputs.iter().map(|o| o.name()), held.life.received_at);
        let sent = async {
            let mut c = self.session.client().await.map_err(|e| e.to_string())?;
            c.heartbeat(req).await.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        };
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, sent).await {
            Ok(Ok(_)) => tracing::debug!("heartbeat sent"),
            Ok(Err(e)) => tracing::info!(error = %e, "heartbeat not recorded"),
            Err(_) => tracing::info!("heartbeat timed out"),
        }
    }

    async fn note_identity(&self) {
        if let Some(h) = self.session.held().await {
            self.metrics.observed(IDENTITY, h.life.expires_at);
        }
    }

    /// One-shot: a valid stored identity (renewed if past half-life) or a join,
    /// then every output once. Any failure is an error naming its cause.
    pub async fn oneshot(&self) -> Result<(), AgentError> {
        if !self.cfg.services.is_empty() {
            tracing::info!("one-shot mode: services are not started");
        }
        if self.session.load().await? {
            let stale = self.session.held().await.is_some_and(|h| self.clock.now() >= h.life.renew_at());
            if stale {
                self.session.refresh().await?;
            }
        } else {
            self.session.join().await?;
        }
        self.note_identity().await;
        self.send_heartbeat().await;
        let mut failed = Vec::new();
        for o in &self.outputs {
            match o.refresh(&self.session).await {
                Ok(life) => {
                    self.metrics.renewed(&o.name(), life.expires_at);
                    tracing::info!(output = %o.name(), expires_at = life.expires_at, "output written");
                }
                Err(e) => failed.push((o.name(), e)),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(AgentError::Outputs(failed))
        }
    }

    /// Long-running mode until `shutdown` resolves. Sockets and the health port are
    /// bound first, so a misconfiguration fails at start, not later.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        let mut servers = Vec::new();
        // Connections of local users must not take the descriptors outputs and
        // health need: the soft limit goes up to the hard one and the Workload API
        // keeps a reserve below it.
        let nofile = if self.cfg.services.is_empty() { None } else { sigil_core::listen::limits::raise_fd_limit() };
        for s in &self.cfg.services {
            match s {
                ServiceConfig::WorkloadApi(w) => {
                    let listener = workload::bind(&w.socket)?;
                    let svc = workload::api::Service::new(self.session.clone(), w.clone(), self.bundle.subscribe(), self.rotate.subscribe());
                    let limits = w.limits.resolve();
                    tracing::info!(socket = %w.socket.display(), max_connections = limits.effective_max_connections(nofile),
                        max_connections_per_uid = limits.max_connections_per_uid, open_file_limit = ?nofile, "serving the SPIFFE Workload API");
                    servers.push((listener, svc, limits));
                }
            }
        }
        let health = match &self.cfg.health {
            Some(h) => Some(health::bind(&h.listen).await?),
            None => None,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, svc, limits) in servers {
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                if let Err(e) = workload::serve(listener, svc, limits, nofile, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                {
                    tracing::error!(error = %e, "workload API stopped");
                }
            });
        }
        if let Some(l) = health {
            let details = self.cfg.health.as_ref().is_some_and(|h| h.details);
            tasks.spawn(health::serve(l, health::router(self.metrics.clone(), self.clock.clone(), details)));
        }
        tasks.spawn(self.clone().identity_loop());
        tasks.spawn(self.clone().bundle_loop());
        for o in self.outputs.clone() {
            tasks.spawn(self.clone().output_loop(o));
        }
        tasks.spawn(self.clone().signal_loop());
        shutdown.await;
        tracing::info!("agent shutting down");
        let _ = stop_tx.send(true);
        // Let the gRPC servers close their sockets, then stop everything.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tasks.abort_all();
        for s in &self.cfg.services {
            let ServiceConfig::WorkloadApi(w) = s;
            let _ = std::fs::remove_file(&w.socket);
        }
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.cfg.retry.initial.0, self.cfg.retry.max.0)
    }

    async fn identity_loop(self: Arc<Self>) {
        let mut backoff = self.backoff();
        let mut rotate = self.rotate.subscribe();
        match self.session.load().await {
            Ok(true) => tracing::info!("using the bot identity stored in the state directory"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring the stored identity; joining again"),
        }
        self.note_identity().await;
        let mut due = self.session.held().await.is_none();
        if !due {
            self.send_heartbeat().await;
        }
        loop {
            let now = self.clock.now();
            let seen = *rotate.borrow_and_update();
            let delay = if due {
                match self.session.refresh().await {
                    Ok(()) => {
                        backoff.reset();
                        if let Some(h) = self.session.held().await {
                            self.metrics.renewed(IDENTITY, h.life.expires_at);
                        }
                        self.send_heartbeat().await;
                        None
                    }
                    Err(e) => {
                        self.metrics.failed(IDENTITY, &e.to_string());
                        let d = backoff.next_delay(random_jitter());
                        let valid_until = self.session.held().await.map(|h| h.life.expires_at);
                        tracing::warn!(error = %e, retry_in = ?d, attempt = backoff.attempts(), valid_until = ?valid_until,
                            "cannot obtain a fresh bot identity; still using the current one until it expires");
                        Some(d)
                    }
                }
            } else {
                None
            };
            let delay = match delay {
                Some(d) => d,
                None => {
                    let at = self.session.held().await.map(|h| h.life.renew_at()).unwrap_or(now);
                    wait(self.clock.now(), at)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = until_due(&mut rotate, seen, false) => tracing::info!("renewing the bot identity now (signal or CA change)"),
            }
            due = true;
        }
    }

    async fn fetch_bundle(&self) -> Result<Bundle, String> {
        let mut c = self.session.client().await.map_err(|e| e.to_string())?;
        let b = c.get_trust_bundle(pb::GetTrustBundleRequest {}).await.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        let b = Bundle::from_pb_following(b.into_inner(), &self.access_followed()).map_err(|e| e.to_string())?;
        if !self.cfg.outputs.iter().any(|o| matches!(o.output, OutputConfig::Ssh(_) | OutputConfig::SshHost(_))) {
            return Ok(b);
        }
        // SSH CA keys change with their own rotations, which the X.509 / JWT
        // bundle does not show; a broker without SSH CAs has none to follow.
        // The KRL is sent only when it differs from the one held.
        let include_krl = self.outputs.iter().any(|o| o.follows_krl());
        let (held, known_krl_sha256) = match self.bundle.borrow().as_ref() {
            Some(b) => (b.ssh_krl.clone(), b.krl_sha256()),
            None => (None, Vec::new()),
        };
        match c.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest { include_krl, known_krl_sha256 }).await {
            Ok(k) => {
                let k = k.into_inner();
                let b = if include_krl {
                    let (b, problem) = b.with_krl(&k, held.as_ref());
                    if let Some(e) = problem {
                        tracing::warn!(error = %e, "keeping the SSH KRL held; the trust bundle is followed as usual");
                    }
                    b
                } else {
                    b
                };
                Ok(b.with_ssh(k))
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(b),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }

    /// The database / kubernetes CAs an output writes the bundle of.
    fn access_followed(&self) -> Vec<AccessPurpose> {
        self.outputs.iter().filter_map(|o| o.access_ca()).collect()
    }

    async fn bundle_loop(self: Arc<Self>) {
        let mut ids = self.session.subscribe();
        loop {
            match self.fetch_bundle().await {
                Ok(b) => {
                    let old = self.bundle.borrow().clone();
                    match old.map(|o| (b.change_from(&o), b.access_changed(&o), b.krl_changed(&o))) {
                        Some((BundleChange::Same, false, false)) => {}
                        Some((change, access, krl)) => self.bundle_changed(b, change, access, krl),
                        None => {
                            let krl = b.ssh_krl.is_some();
                            self.bundle.send_replace(Some(Arc::new(b)));
                            // An ssh-host output may have written an older KRL
                            // before this first poll: it compares and rewrites.
                            if krl {
                                self.rotate.send_modify(|r| r.krl += 1);
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot fetch the trust bundle"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.bundle_refresh()) => {}
                _ = ids.changed(), if self.bundle.borrow().is_none() => {}
            }
        }
    }

    /// A CA rotation step seen in the bundle: the renewal counters move first,
    /// then the bundle, so every waiter that wakes on the new bundle already
    /// finds its cached credentials stale; then the access counter, whose
    /// outputs compare the new bundle with what they wrote.
    fn bundle_changed(&self, b: Bundle, change: BundleChange, access: bool, krl: bool) {
        let krl_bytes = b.ssh_krl.as_ref().map(|k| k.bytes.len()).unwrap_or(0);
        let all = change == BundleChange::Renew;
        if change != BundleChange::Same {
            tracing::info!(
                x509_authorities = b.x509_der.len(),
                x509_signing = %b.signing.x509_sha256,
                jwt_signing = %b.signing.jwt_kid,
                renew = if all { "every credential (another key signs, or a key was unpublished)" } else { "what carries the bundle (a key was published)" },
                "trust bundle changed (CA rotation)"
            );
        }
        if access {
            tracing::info!(
                database_cas = b.database_ca.der.len(),
                database_signing = %b.database_ca.signing_sha256,
                kubernetes_cas = b.kubernetes_ca.der.len(),
                kubernetes_signing = %b.kubernetes_ca.signing_sha256,
                "database or kubernetes CA changed (CA rotation)"
            );
        }
        self.rotate.send_modify(|r| {
            if change != BundleChange::Same {
                r.bundle += 1;
            }
            if all {
                r.all += 1;
            }
        });
        self.bundle.send_replace(Some(Arc::new(b)));
        // The access outputs read the new CA from the bundle when woken, so
        // they are woken after it is in place.
        if access {
            self.rotate.send_modify(|r| r.access += 1);
        }
        if krl {
            tracing::info!(bytes = krl_bytes, "SSH KRL changed (a certificate was revoked or a CA key changed)");
            self.rotate.send_modify(|r| r.krl += 1);
        }
    }

    async fn output_loop(self: Arc<Self>, o: Arc<dyn Output>) {
        let name = o.name();
        let mut backoff = self.backoff();
        let mut rotate = self.rotate.subscribe();
        let mut ids = self.session.subscribe();
        let mut valid_until: Option<i64> = None;
        loop {
            if self.session.held().await.is_none() {
                let _ = ids.changed().await;
                continue;
            }
            let now = self.clock.now();
            let mut seen = *rotate.borrow_and_update();
            // The access CA as known before issuing: a change during the
            // call is then seen at the next comparison, never lost.
            let mut written = self.access_ca_now(o.as_ref());
            let next = match o.refresh(&self.session).await {
                Ok(life) => {
                    backoff.reset();
                    self.metrics.renewed(&name, life.expires_at);
                    valid_until = Some(life.expires_at);
                    tracing::debug!(output = %name, expires_at = life.expires_at, "output renewed");
                    if o.follows_identity() {
                        None
                    } else {
                        Some(wait(now, life.renew_at()))
                    }
                }
                Err(e) => {
                    if e.is_transport() {
                        self.session.reset_connection().await;
                    }
                    self.metrics.failed(&name, &e.to_string());
                    let d = backoff.next_delay(random_jitter());
                    tracing::warn!(output = %name, error = %e, retry_in = ?d, attempt = backoff.attempts(), valid_until = ?valid_until,
                        "cannot renew output; the files on disk stay as they are");
                    Some(d)
                }
            };
            let follows_identity = o.follows_identity();
            let follows = Follows { access: o.access_ca().is_some(), krl: o.follows_krl() };
            let until = tokio::time::Instant::now() + next.unwrap_or(Duration::from_secs(86_400));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = until_due_or_follow(&mut rotate, seen, o.carries_bundle(), follows) => {
                        let r = *rotate.borrow();
                        if !r.due(seen, o.carries_bundle()) {
                            // Only an access CA or the KRL changed: maybe only that file.
                            let (access, krl) = (r.access != seen.access, r.krl != seen.krl);
                            seen = r;
                            if (!access || self.follow_access_ca(o.as_ref(), &mut written).await)
                                && (!krl || self.follow_krl(o.as_ref()).await)
                            {
                                continue;
                            }
                        }
                    }
                    _ = ids.changed(), if follows_identity => {}
                }
                break;
            }
        }
    }

    /// The access CA of `o` in the bundle held now (`None`: not followed, or
    /// no bundle yet).
    fn access_ca_now(&self, o: &dyn Output) -> Option<AccessCa> {
        let p = o.access_ca()?;
        self.bundle.borrow().as_ref().map(|b| b.access_ca(p).clone())
    }

    /// Brings `o`'s files to the access CA held now: nothing, only the CA file
    /// (a certificate published), or `false` when the certificate must be
    /// issued anew (another signs, one was unpublished, or the CA file could
    /// not be rewritten). `written` is what the files hold.
    async fn follow_access_ca(&self, o: &dyn Output, written: &mut Option<AccessCa>) -> bool {
        let Some(now) = self.access_ca_now(o) else { return true };
        let change = match written.as_ref() {
            Some(w) => now.change_from(w),
            // Issued before the first bundle: the CA file is rewritten
            // (idempotent); a retire or activation after this is then seen.
            None if now.der.is_empty() => AccessChange::Same,
            None => AccessChange::RewriteCa,
        };
        match change {
            AccessChange::Same => true,
            AccessChange::Reissue => {
                tracing::info!(output = %o.name(), "CA rotation: issuing a certificate from the key that signs now");
                false
            }
            AccessChange::RewriteCa => match o.rewrite_ca(&now.bundle_pem).await {
                Ok(true) => {
                    tracing::info!(output = %o.name(), cas = now.der.len(), "CA rotation: CA file rewritten, certificate kept");
                    *written = Some(now);
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(output = %o.name(), error = %e, "cannot rewrite the CA file; issuing the whole output again");
                    false
                }
            },
        }
    }

    /// Brings `o`'s KRL file to the KRL held now; `false` when the whole
    /// output must be written again (nothing written yet, or the file could
    /// not be rewritten).
    async fn follow_krl(&self, o: &dyn Output) -> bool {
        let Some(krl) = self.bundle.borrow().as_ref().and_then(|b| b.ssh_krl.clone()) else { return true };
        match o.rewrite_krl(&krl).await {
            Ok(KrlRewrite::Written | KrlRewrite::Unchanged) => true,
            Ok(KrlRewrite::Refresh) => false,
            Err(e) => {
                tracing::warn!(output = %o.name(), error = %e, "cannot rewrite the SSH KRL file; writing the whole output again");
                false
            }
        }
    }

    async fn signal_loop(self: Arc<Self>) {
        let Ok(mut usr1) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
            tracing::warn!("cannot listen for SIGUSR1");
            return;
        };
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: renewing every credential now");
            self.renew_all();
        }
    }
}
