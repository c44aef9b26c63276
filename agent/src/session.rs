//! The agent's session with the broker: its bot identity (joined, loaded from the
//! state directory, renewed) and an mTLS client authenticated by it.
//!
//! Renewal order matters (generation check): the new identity is written to the
//! state directory *before* it is used. If that write fails the old identity is
//! kept; the broker accepts it once more, so a disk error cannot lock the bot out.
//!
//! Trust in the broker's TLS certificate follows the broker: every identity
//! response carries all published internal CAs, and connections made with an
//! identity trust its CAs. A join (first, or again after the identity expired
//! or was refused) trusts the configured `ca_file` *and* the CAs of the last
//! identity seen, so an agent whose `ca_file` predates an internal CA rotation
//! still joins.

use super::join::{transient_code, JoinError, JoinMethod};
use super::schedule::Lifetime;
use super::state::{StateDir, StateError};
use sigil_core::clock::Clock;
use sigil_schemas::client::ClientError;
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::sync::Arc;
use tokio::sync::{watch, Mutex, RwLock};
use tonic::transport::Channel;

/// Why the session has no usable identity or client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Not joined yet (or the identity expired) and joining failed or has not run.
    #[error("no bot identity yet: {0}")]
    NoIdentity(String),
    /// Joining failed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The broker refused or failed a renewal.
    #[error("identity renewal failed ({code:?}): {message}")]
    Renew {
        /// gRPC code.
        code: tonic::Code,
        /// The broker's reason.
        message: String,
    },
    /// The broker cannot be reached.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// The state directory failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Key generation failed.
    #[error("cannot generate a key: {0}")]
    Key(String),
    /// The broker returned an identity that does not parse.
    #[error("broker returned an unusable identity: {0}")]
    BadIdentity(String),
}

impl SessionError {
    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        match self {
            SessionError::Join(j) => j.is_transient(),
            SessionError::Renew { code, .. } => transient_code(*code),
            SessionError::Connect(_) | SessionError::NoIdentity(_) => true,
            _ => false,
        }
    }
}

/// The current identity and its client.
pub struct Held {
    /// The identity.
    pub identity: Identity,
    /// Its lifetime.
    pub life: Lifetime,
    client: Mutex<Option<SigilClient<Channel>>>,
}

/// Session settings.
pub struct SessionConfig {
    /// Broker address.
    pub addr: String,
    /// CA PEM for joining (`ca_file`); the last identity's CAs are trusted too.
    pub ca_pem: String,
    /// Join method.
    pub join: Box<dyn JoinMethod>,
    /// Requested identity lifetime (0 = broker default).
    pub ttl_seconds: i64,
    /// State directory.
    pub state: StateDir,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Time bounds of every broker call.
    pub timeouts: sigil_schemas::client::Timeouts,
}

/// The agent's session.
pub struct Session {
    cfg: SessionConfig,
    current: RwLock<Option<Arc<Held>>>,
    // The CA section of the last identity seen (held, or expired in the state directory).
    learned_ca: std::sync::Mutex<String>,
    changed: watch::Sender<u64>,
}

/// The CAs a join trusts: the configured ones, then those the broker sent
/// with the last identity (skipped when the same).
pub fn join_trust(configured: &str, learned: &str) -> String {
    if learned.trim().is_empty() || learned.trim() == configured.trim() {
        return configured.to_string();
    }
    let mut t = configured.trim_end().to_string();
    t.push('\n');
    t.push_str(learned);
    t
}

fn key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), SessionError> {
    sigil_core::csr::key_and_csr().map_err(|e| SessionError::Key(e.to_string()))
}

impl Session {
    /// A session with no identity yet.
    pub fn new(cfg: SessionConfig) -> Self {
        Self { cfg, current: RwLock::new(None), learned_ca: Default::default(), changed: watch::Sender::new(0) }
    }

    /// Now, from the injected clock.
    pub fn now(&self) -> i64 {
        self.cfg.clock.now()
    }

    /// Ticks each time a new identity is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The current identity, if any and unexpired.
    pub async fn held(&self) -> Option<Arc<Held>> {
        let now = self.now();
        self.current.read().await.clone().filter(|h| h.life.valid_at(now))
    }

    /// An mTLS client authenticated by the current identity (connected lazily).
    pub async fn client(&self) -> Result<SigilClient<Channel>, SessionError> {
        let held = self.held().await.ok_or_else(|| SessionError::NoIdentity("not joined, or the identity expired".into()))?;
        let mut slot = held.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = sigil_schemas::client::connect_with_identity_timeouts(&self.cfg.addr, &held.identity, self.cfg.timeouts).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops the cached connection after a transport failure so the next call redials.
    pub async fn reset_connection(&self) {
        if let Some(h) = self.current.read().await.clone() {
            *h.client.lock().await = None;
        }
    }

    /// Uses the identity in the state directory when it is still valid.
    pub async fn load(&self) -> Result<bool, SessionError> {
        match self.cfg.state.load()? {
            Some((id, not_after)) if not_after > self.now() => {
                self.swap(id, not_after).await;
                Ok(true)
            }
            Some((id, _)) => {
                self.learn_ca(&id);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    fn learn_ca(&self, id: &Identity) {
        *self.learned_ca.lock().unwrap_or_else(|e| e.into_inner()) = id.ca_pem.clone();
    }

    /// Joins with the configured method and installs the identity.
    pub async fn join(&self) -> Result<(), SessionError> {
        let (kp, csr) = key_and_csr()?;
        let trust = join_trust(&self.cfg.ca_pem, &self.learned_ca.lock().unwrap_or_else(|e| e.into_inner()));
        let mut anon = sigil_schemas::client::connect_with_timeouts(&self.cfg.addr, &trust, None, self.cfg.timeouts)
            .await
            .map_err(|e| JoinError::Unavailable { method: self.cfg.join.method(), code: tonic::Code::Unavailable, message: e.to_string() })?;
        let r = self.cfg.join.join(&mut anon, csr, self.cfg.ttl_seconds).await?;
        self.install(r, kp).await
    }

    /// Renews the identity (generation checked by the broker).
    pub async fn renew(&self) -> Result<(), SessionError> {
        let (kp, csr) = key_and_csr()?;
        let mut c = self.client().await?;
        let r = c
            .renew_identity(pb::RenewIdentityRequest { csr, ttl_seconds: self.cfg.ttl_seconds })
            .await
            .map_err(|s| self.renew_failed(&s))?
            .into_inner();
        self.install(r, kp).await
    }

    /// A renewal the broker refused, or one it never answered: tonic says
    /// only "Timeout expired", so name the broker and the setting.
    fn renew_failed(&self, s: &tonic::Status) -> SessionError {
        if sigil_schemas::client::is_call_timeout(s) {
            return SessionError::Renew {
                code: tonic::Code::DeadlineExceeded,
                message: format!(
                    "no answer from the broker at {} within the call timeout ({:?}, broker_timeouts.call)",
                    self.cfg.addr, self.cfg.timeouts.call
                ),
            };
        }
        SessionError::Renew { code: s.code(), message: s.message().to_string() }
    }

    /// Gets a fresh identity: renews a valid one, joins otherwise. A renewal the
    /// broker refuses (expired, locked, bot deleted) falls back to joining.
    pub async fn refresh(&self) -> Result<(), SessionError> {
        if self.held().await.is_none() {
            return self.join().await;
        }
        match self.renew().await {
            Err(SessionError::Renew { code: tonic::Code::Unauthenticated, message }) => {
                tracing::warn!(reason = %message, "broker refused to renew the bot identity; joining again");
                self.join().await
            }
            Err(e) => {
                if e.is_transient() {
                    self.reset_connection().await;
                }
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    async fn install(&self, r: pb::IdentityResponse, kp: rcgen::KeyPair) -> Result<(), SessionError> {
        let id = Identity::new(r.certificate_pem, kp.serialize_pem(), r.ca_pem);
        let (_, not_after) = id.subject().map_err(|e| SessionError::BadIdentity(e.to_string()))?;
        // Write before use: see the module comment.
        self.cfg.state.save(&id)?;
        tracing::info!(bot = %r.bot, generation = r.generation, expires_at = not_after, "bot identity installed");
        self.swap(id, not_after).await;
        Ok(())
    }

    async fn swap(&self, identity: Identity, not_after: i64) {
        self.learn_ca(&identity);
        let life = Lifetime { received_at: self.now(), expires_at: not_after };
        *self.current.write().await = Some(Arc::new(Held { identity, life, client: Mutex::new(None) }));
        self.changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_trusts_the_configured_cas_and_those_of_the_last_identity() {
        assert_eq!(join_trust("A\n", ""), "A\n");
        assert_eq!(join_trust("A\n", "A\n"), "A\n", "the same CAs are not repeated");
        assert_eq!(join_trust("A\n", "A\nB\n"), "A\nA\nB\n", "after a rotation the broker's new CA is trusted too");
    }
}
