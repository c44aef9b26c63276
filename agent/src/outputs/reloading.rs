//! An output with `reload`: after each write (a renewal, a CA file or a KRL
//! rewritten) the program reading the files is told ([`crate::reload`]). A
//! failed reload is logged; the files stay written and the output's own
//! result is unchanged, so it is not issued again for it.

use super::{Output, OutputError};
use crate::bundle::{AccessPurpose, SshKrl};
use crate::reload::Reload;
use crate::schedule::Lifetime;
use crate::session::Session;
use async_trait::async_trait;

/// `inner`, then `reload` after it wrote.
pub struct Reloading {
    inner: Box<dyn Output>,
    reload: Reload,
}

impl Reloading {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Output>, reload: Reload) -> Self {
        Self { inner, reload }
    }

    async fn after_write(&self) {
        let name = self.inner.name();
        match self.reload.run(&name).await {
            Ok(()) => tracing::info!(output = %name, reload = %self.reload.describe(), "reload done after the files changed"),
            Err(e) => tracing::warn!(output = %name, error = %e, "reload failed; the new files are written, the next write tries again"),
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

    async fn rewrite_krl(&self, krl: &SshKrl) -> Result<bool, OutputError> {
        let done = self.inner.rewrite_krl(krl).await?;
        if done {
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
