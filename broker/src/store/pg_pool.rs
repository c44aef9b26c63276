//! A small bounded pool of PostgreSQL connections: at most `size` open, a
//! caller waits at most `acquire_timeout` for one, a closed connection is
//! dropped instead of reused.

use super::StoreError;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls};

/// Bounded connection pool.
pub(crate) struct Pool {
    config: Config,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    acquire_timeout: Duration,
}

/// A connection taken from the pool; goes back on drop unless closed.
pub(crate) struct Conn<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // A transaction dropped unfinished has already queued its ROLLBACK
            // on this connection (tokio-postgres), so the next user starts clean.
            if !c.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    idle.push(c);
                }
            }
        }
    }
}

impl Pool {
    pub(crate) fn new(config: Config, size: usize, acquire_timeout: Duration) -> Self {
        Self { config, idle: Mutex::new(Vec::new()), permits: Semaphore::new(size), acquire_timeout }
    }

    /// A connection: an idle one, or a new one while fewer than `size` are open.
    pub(crate) async fn get(&self) -> Result<Conn<'_>, StoreError> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                StoreError::Backend(format!(
                    "no PostgreSQL connection free within {} s (pool exhausted)",
                    self.acquire_timeout.as_secs()
                ))
            })?
            .map_err(|_| StoreError::Backend("store pool closed".into()))?;
        let reuse = {
            let mut idle = self.idle.lock().map_err(|_| StoreError::Backend("store pool lock poisoned".into()))?;
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let client = match reuse {
            Some(c) => c,
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(|e| {
                    // tokio-postgres's connect errors name no password; the
                    // cause (refused, timed out, auth failed) is in the source.
                    let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                    StoreError::Backend(format!("cannot connect to PostgreSQL: {e}{cause}"))
                })?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }
        };
        Ok(Conn { client: Some(client), pool: self, _permit: permit })
    }
}
