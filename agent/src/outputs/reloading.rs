//! An output with `reload`: after each write (a renewal, a CA file or a KRL
//! rewritten) the program reading the files is told ([`crate::reload`]). A
//! failed reload is retried in the background ([`RETRY_DELAYS`], not after a
//! timeout, and not once a newer write reloaded), then logged; the files stay
//! written and the output's own result is unchanged, so it is not issued
//! again for it.

use super::{KrlRewrite, Output, OutputError};
use crate::bundle::{AccessPurpose, SshKrl};
use crate::reload::{Reload, ReloadError, RETRY_DELAYS};
use crate::schedule::Lifetime;
use crate::session::Session;
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `inner`, then `reload` after it wrote.
pub struct Reloading {
    inner: Box<dyn Output>,
    reload: Arc<Reload>,
    /// Writes so far: a retry stops once a newer write made its own reload.
    writes: Arc<AtomicU64>,
}

impl Reloading {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Output>, reload: Reload) -> Self {
        Self { inner, reload: Arc::new(reload), writes: Arc::default() }
    }

    /// The first attempt is awaited (bounded by the command's timeout), so a
    /// one-shot run reloads before it exits; retries run in the background,
    /// never delaying the output's next renewal.
    async fn after_write(&self) {
        let name = self.inner.name();
        let write = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let first = self.reload.run(&name).await;
        if !worth_retrying(&name, &self.reload, first) {
            return;
        }
        let (reload, writes) = (self.reload.clone(), self.writes.clone());
        tokio::spawn(async move {
            for d in RETRY_DELAYS {
                tokio::time::sleep(d).await;
                if writes.load(Ordering::SeqCst) != write {
                    return; // a newer write reloaded (or is retrying) on its own
                }
                if !worth_retrying(&name, &reload, reload.run(&name).await) {
                    return;
                }
            }
            tracing::warn!(output = %name, "reload still failing; the new files are written, the next write tries again");
        });
    }
}

/// Logs an attempt's outcome; `true` when it failed in a way worth retrying
/// (a timed-out command is not retried).
fn worth_retrying(name: &str, reload: &Reload, r: Result<(), ReloadError>) -> bool {
    match r {
        Ok(()) => {
            tracing::info!(output = %name, reload = %reload.describe(), "reload done after the files changed");
            false
        }
        Err(e @ ReloadError::Timeout { .. }) => {
            tracing::warn!(output = %name, error = %e, "reload failed; the new files are written, the next write tries again");
            false
        }
        Err(e) => {
            tracing::warn!(output = %name, error = %e, "reload failed; trying again in the background");
            true
        }
    }
}

#[async_trait]
impl Output for Reloading {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn follows_identity(&self) -> bool {
        self.inner.follows_identity()
    }

    fn carries_bundle(&self) -> bool {
        self.inner.carries_bundle()
    }

    fn access_ca(&self) -> Option<AccessPurpose> {
        self.inner.access_ca()
    }

    async fn rewrite_ca(&self, bundle_pem: &str) -> Result<bool, OutputError> {
        let wrote = self.inner.rewrite_ca(bundle_pem).await?;
        if wrote {
            self.after_write().await;
        }
        Ok(wrote)
    }

    fn follows_krl(&self) -> bool {
        self.inner.follows_krl()
    }

    async fn rewrite_krl(&self, krl: &SshKrl) -> Result<KrlRewrite, OutputError> {
        let done = self.inner.rewrite_krl(krl).await?;
        if done == KrlRewrite::Written {
            self.after_write().await;
        }
        Ok(done)
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let life = self.inner.refresh(session).await?;
        self.after_write().await;
        Ok(life)
    }
}
