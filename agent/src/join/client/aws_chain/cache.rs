//! Credentials kept between joins: the cached ones are returned until
//! [`REFRESH_BEFORE`] seconds before their `Expiration`, then the provider is
//! asked again (the SDKs refresh in the same window). Long-term keys (no
//! `Expiration`) are fetched once. The clock is injected.

use super::{ChainError, Env, Fetched, Provide};
use sigil_core::clock::{Clock, SystemClock};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Seconds before `Expiration` at which credentials are fetched again.
pub const REFRESH_BEFORE: i64 = 300;

/// A provider with a cache in front.
pub struct CachedCredentials {
    provider: Box<dyn Provide>,
    clock: Arc<dyn Clock>,
    slot: Mutex<Option<Fetched>>,
}

impl std::fmt::Debug for CachedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedCredentials")
    }
}

impl CachedCredentials {
    /// Caches `provider`'s answers by `clock`.
    pub fn new(provider: Box<dyn Provide>, clock: Arc<dyn Clock>) -> Self {
        Self { provider, clock, slot: Mutex::new(None) }
    }

    /// The standard chain over this process's environment and the system clock.
    pub fn standard() -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self::new(Box::new(super::Chain::standard(Env::process(), clock.clone())), clock)
    }

    /// Credentials valid for at least [`REFRESH_BEFORE`] more seconds (or
    /// without expiry), fetched only when the cached ones are not.
    pub async fn get(&self) -> Result<Fetched, ChainError> {
        let mut slot = self.slot.lock().await;
        if let Some(f) = slot.as_ref() {
            if fresh(f, self.clock.now()) {
                return Ok(f.clone());
            }
            tracing::info!(access_key_id = %f.credentials.access_key_id(), "AWS credentials expire within 5 minutes: fetching new ones");
        }
        let f = self.provider.provide().await?;
        *slot = Some(f.clone());
        Ok(f)
    }
}

/// Whether `f` may still be used at `now`.
fn fresh(f: &Fetched, now: i64) -> bool {
    f.expires_at.is_none_or(|e| now < e - REFRESH_BEFORE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::join::client::aws_iam::AwsCredentials;
    use async_trait::async_trait;
    use sigil_core::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out `KEY<n>` valid for `lifetime` seconds (`None`: no expiry), counting calls.
    struct Fake {
        calls: Arc<AtomicUsize>,
        clock: ManualClock,
        lifetime: Option<i64>,
    }

    #[async_trait]
    impl Provide for Fake {
        async fn provide(&self) -> Result<Fetched, ChainError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Fetched { credentials: AwsCredentials::new(format!("KEY{n}"), "s".into(), None), expires_at: self.lifetime.map(|l| self.clock.now() + l) })
        }
    }

    fn cache(lifetime: Option<i64>) -> (CachedCredentials, ManualClock, Arc<AtomicUsize>) {
        let clock = ManualClock::new(1_700_000_000);
        let calls = Arc::new(AtomicUsize::new(0));
        let fake = Fake { calls: calls.clone(), clock: clock.clone(), lifetime };
        (CachedCredentials::new(Box::new(fake), Arc::new(clock.clone())), clock, calls)
    }

    #[tokio::test]
    async fn fresh_credentials_are_not_fetched_again() {
        let (c, clock, calls) = cache(Some(3600));
        assert_eq!(c.get().await.unwrap().credentials.access_key_id(), "KEY1");
        clock.advance(3600 - REFRESH_BEFORE - 1);
        assert_eq!(c.get().await.unwrap().credentials.access_key_id(), "KEY1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn credentials_inside_the_refresh_window_are_fetched_again() {
        let (c, clock, calls) = cache(Some(3600));
        c.get().await.unwrap();
        clock.advance(3600 - REFRESH_BEFORE);
        assert_eq!(c.get().await.unwrap().credentials.access_key_id(), "KEY2");
        assert_eq!(c.get().await.unwrap().credentials.access_key_id(), "KEY2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn credentials_without_expiration_are_fetched_once() {
        let (c, clock, calls) = cache(None);
        c.get().await.unwrap();
        clock.advance(10 * 365 * 86_400);
        assert_eq!(c.get().await.unwrap().credentials.access_key_id(), "KEY1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_refresh_is_an_error_not_stale_credentials() {
        struct Fails;
        #[async_trait]
        impl Provide for Fails {
            async fn provide(&self) -> Result<Fetched, ChainError> {
                Err(ChainError::failed("fake", "down"))
            }
        }
        let c = CachedCredentials::new(Box::new(Fails), Arc::new(ManualClock::new(0)));
        assert!(c.get().await.unwrap_err().to_string().contains("down"));
    }
}
