//! A small bounded pool of PostgreSQL connections: at most `size` open, a
//! caller waits at most `acquire_timeout` for one, a closed connection is
//! dropped instead of reused.
//!
//! [`Pool::open`] is the one place a store URL becomes connections: the
//! broker and `sigil store migrate` both come through it, so both get the
//! same TLS (`pg_url` decides, `pg_tls` speaks it).

use super::pg_tls::PgTls;
use super::pg_url::{self, Endpoint, SslMode, Verify};
use super::postgres::redact_url;
use super::StoreError;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// Bounded connection pool.
pub(crate) struct Pool {
    config: Config,
    /// `None`: plaintext only (`sslmode=disable`, Unix sockets).
    tls: Option<PgTls>,
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
    /// A pool for the store at `url` (libpq's URL, TLS parameters included:
    /// docs/reference/server.md). Reads the TLS files now; opens no connection.
    /// Errors never contain the password.
    pub(crate) async fn open(url: &str, size: usize, timeout: Duration) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let split = pg_url::split(url).map_err(|e| StoreError::Backend(format!("store {shown}: {e}")))?;
        let mut config: Config = split
            .rest
            .parse()
            .map_err(|e| StoreError::Backend(format!("store URL {shown} does not parse: {e}")))?;
        let mut endpoints: Vec<Endpoint> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => Endpoint::Tcp(name.clone()),
                Host::Unix(_) => Endpoint::Unix,
            })
            .collect();
        endpoints.extend(config.get_hostaddrs().iter().map(|a| Endpoint::Tcp(a.to_string())));
        let policy = pg_url::policy(&split, &endpoints).map_err(|e| StoreError::Backend(format!("store {shown}: {e}")))?;
        if policy.mode == SslMode::Require && policy.verify == Verify::Nothing {
            tracing::warn!(
                store = %shown,
                "sslmode=require encrypts but does not authenticate the database server (libpq's meaning): \
                 use sslmode=verify-full with sslrootcert, or at least channel_binding=require with a SCRAM password"
            );
        }
        config.ssl_mode(match policy.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        let tls = match policy.mode {
            SslMode::Disable => None,
            _ => {
                // Reads files: off the async workers.
                let built = tokio::task::spawn_blocking(move || PgTls::new(&policy))
                    .await
                    .map_err(|e| StoreError::Backend(format!("store TLS setup: {e}")))?;
                Some(built.map_err(|e| StoreError::Backend(format!("store {shown}: {e}")))?)
            }
        };
        config.connect_timeout(timeout);
        if config.get_application_name().is_none() {
            config.application_name("sigil-broker");
        }
        Ok(Self { config, tls, idle: Mutex::new(Vec::new()), permits: Semaphore::new(size), acquire_timeout: timeout })
    }

    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(error = %e, "PostgreSQL connection ended");
                    }
                });
                Ok(client)
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(error = %e, "PostgreSQL connection ended");
                    }
                });
                Ok(client)
            }
        }
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
            None => self.connect().await.map_err(|e| {
                // tokio-postgres's connect errors name no password; the
                // cause (refused, timed out, auth failed, TLS) is in the source.
                let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                let hint = if self.tls.is_none() && cause.contains("no encryption") {
                    " (the server accepts only TLS connections here: drop sslmode=disable, use sslmode=verify-full with sslrootcert)"
                } else {
                    ""
                };
                StoreError::Backend(format!("cannot connect to PostgreSQL: {e}{cause}{hint}"))
            })?,
        };
        Ok(Conn { client: Some(client), pool: self, _permit: permit })
    }
}
