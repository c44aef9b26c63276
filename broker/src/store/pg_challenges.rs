//! Pending join challenges in PostgreSQL (table `join_challenges`), shared by
//! the replicas, so `BeginJoin` and `Join` may reach different ones.
//!
//! - An insert runs the flood policy of `sigil_core::domain::challenge` in one
//!   transaction holding an advisory lock ([`CHALLENGE_LOCK`]): inserts from
//!   all replicas run one at a time, so the counts each reads are exact and
//!   the limits hold across replicas, not per replica.
//! - A take is one `DELETE ... RETURNING`: of two replicas answering the same
//!   challenge id at once, the second finds the row gone.
//! - Neither touches `store_version`: challenges are in no cache, and a
//!   `BeginJoin` flood must not retire every replica's caches.
//! - The table is `UNLOGGED`: pending challenges live 60 s and are worth
//!   nothing after a crash (PostgreSQL empties an unlogged table on crash
//!   recovery; agents then call `BeginJoin` again). It also keeps them out of
//!   the WAL, hence out of WAL archives and streaming standbys.

use super::pg_pool::Conn;
use super::{ChallengeLimits, ChallengeRecord, StoreError};
use sigil_core::domain::challenge::{next_step, victim, Counts, PeerLoad, Step, MAX_EVICTIONS_FROM_LARGEST};
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

/// The table (a migration of its own; see `postgres::MIGRATIONS`).
pub(super) const MIGRATION: &str = "
    CREATE UNLOGGED TABLE join_challenges (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL UNIQUE, method TEXT NOT NULL,
        token TEXT NOT NULL, peer TEXT NOT NULL, state BYTEA NOT NULL, expires_at BIGINT NOT NULL);
    CREATE INDEX join_challenges_peer ON join_challenges (peer, seq);
    CREATE INDEX join_challenges_token ON join_challenges (token, seq);
    CREATE INDEX join_challenges_expiry ON join_challenges (expires_at);";

/// Advisory lock key (`pg_advisory_xact_lock`) held by a challenge insert.
const CHALLENGE_LOCK: i64 = 0x5349_4749_4c00_0003;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// [`super::Store::insert_challenge`].
pub(super) async fn insert(c: &mut Conn<'_>, r: &ChallengeRecord, limits: &ChallengeLimits, now: i64) -> Result<(), StoreError> {
    // Round trips are what an insert costs under a flood (every insert waits
    // for the lock): the integers go inline in one simple query, the other
    // statements are typed (no separate prepare).
    let tx = c.transaction().await.map_err(backend)?;
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({CHALLENGE_LOCK}); DELETE FROM join_challenges WHERE expires_at <= {now}"))
        .await
        .map_err(backend)?;
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 6] = [
        (&r.id, Type::TEXT),
        (&r.method, Type::TEXT),
        (&r.token, Type::TEXT),
        (&r.peer, Type::TEXT),
        (&r.state, Type::BYTEA),
        (&r.expires_at, Type::INT8),
    ];
    // The counts in the same statement: its subqueries see the table as it
    // was before the insert (one snapshot), hence the + 1 for the new row.
    let row = one(
        tx.query_typed(
            "WITH new AS (INSERT INTO join_challenges (id, method, token, peer, state, expires_at)
                          VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq)
             SELECT new.seq, (SELECT count(*) FROM join_challenges WHERE peer = $4) + 1,
                    (SELECT count(*) FROM join_challenges WHERE token = $3) + 1, (SELECT count(*) FROM join_challenges) + 1
             FROM new",
            &params,
        )
        .await
        .map_err(backend)?,
    )?;
    let seq: i64 = row.get(0);
    let first = Counts { peer: count(row.get(1)), token: count(row.get(2)), total: count(row.get(3)) };
    evict(&tx, r, seq, first, limits).await?;
    tx.commit().await.map_err(backend)
}

/// Evicts until [`next_step`] is done. Each step deletes at least one row or
/// stops, so the loop ends.
async fn evict(tx: &Transaction<'_>, r: &ChallengeRecord, seq: i64, first: Counts, limits: &ChallengeLimits) -> Result<(), StoreError> {
    let (mut from_largest, mut now) = (0, first);
    loop {
        let deleted = match next_step(limits, now) {
            Step::Done => return Ok(()),
            Step::PeerOldest(n) => delete_oldest(tx, "peer", &r.peer, seq, n).await?,
            Step::TokenOldest(n) => delete_oldest(tx, "token", &r.token, seq, n).await?,
            Step::FromLargestPeer if from_largest < MAX_EVICTIONS_FROM_LARGEST => {
                from_largest += 1;
                match victim(own_load(tx, r, seq).await?, largest_load(tx, seq).await?) {
                    Some(peer) => delete_oldest(tx, "peer", &peer, seq, 1).await?,
                    None => 0,
                }
            }
            Step::FromLargestPeer => 0,
        };
        if deleted == 0 {
            return Ok(());
        }
        now = counts(tx, r).await?;
    }
}

fn one(rows: Vec<tokio_postgres::Row>) -> Result<tokio_postgres::Row, StoreError> {
    rows.into_iter().next().ok_or_else(|| StoreError::Backend("a count returned no row".into()))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

async fn counts(tx: &Transaction<'_>, r: &ChallengeRecord) -> Result<Counts, StoreError> {
    let row = one(
        tx.query_typed(
            "SELECT (SELECT count(*) FROM join_challenges WHERE peer = $1), (SELECT count(*) FROM join_challenges WHERE token = $2),
                    (SELECT count(*) FROM join_challenges)",
            &[(&r.peer, Type::TEXT), (&r.token, Type::TEXT)],
        )
        .await
        .map_err(backend)?,
    )?;
    Ok(Counts { peer: count(row.get(0)), token: count(row.get(1)), total: count(row.get(2)) })
}

/// Deletes the `n` oldest challenges whose `column` (`peer` or `token`) is
/// `value`, never the new one (`seq`); returns how many went.
async fn delete_oldest(tx: &Transaction<'_>, column: &str, value: &str, seq: i64, n: u64) -> Result<u64, StoreError> {
    let sql = format!(
        "DELETE FROM join_challenges WHERE seq IN
            (SELECT seq FROM join_challenges WHERE {column} = $1 AND seq <> $2 ORDER BY seq LIMIT $3)"
    );
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let rows = tx.query_typed(&format!("{sql} RETURNING 1"), &[(&value, Type::TEXT), (&seq, Type::INT8), (&n, Type::INT8)]).await.map_err(backend)?;
    Ok(rows.len() as u64)
}

async fn own_load(tx: &Transaction<'_>, r: &ChallengeRecord, seq: i64) -> Result<PeerLoad<String>, StoreError> {
    let row = one(
        tx.query_typed("SELECT count(*) FROM join_challenges WHERE peer = $1 AND seq <> $2", &[(&r.peer, Type::TEXT), (&seq, Type::INT8)])
            .await
            .map_err(backend)?,
    )?;
    Ok(PeerLoad { peer: r.peer.clone(), count: count(row.get(0)) })
}

/// The peer holding the most challenges (the new one not counted); ties: the
/// one with the oldest challenge.
async fn largest_load(tx: &Transaction<'_>, seq: i64) -> Result<Option<PeerLoad<String>>, StoreError> {
    let rows = tx
        .query_typed(
            "SELECT peer, count(*) AS n FROM join_challenges WHERE seq <> $1 GROUP BY peer ORDER BY n DESC, min(seq) LIMIT 1",
            &[(&seq, Type::INT8)],
        )
        .await
        .map_err(backend)?;
    Ok(rows.first().map(|r| PeerLoad { peer: r.get(0), count: count(r.get(1)) }))
}

/// [`super::Store::take_challenge`]: one `DELETE ... RETURNING`.
pub(super) async fn take(c: &Conn<'_>, id: &str, now: i64) -> Result<Option<ChallengeRecord>, StoreError> {
    let rows = c
        .query_typed("DELETE FROM join_challenges WHERE id = $1 RETURNING id, method, token, peer, state, expires_at", &[(&id, Type::TEXT)])
        .await
        .map_err(backend)?;
    let r = rows.first().map(|r| ChallengeRecord {
        id: r.get(0),
        method: r.get(1),
        token: r.get(2),
        peer: r.get(3),
        state: r.get(4),
        expires_at: r.get(5),
    });
    Ok(r.filter(|r| r.expires_at > now))
}

#[cfg(any(test, feature = "test-support"))]
impl super::postgres::PgStore {
    /// Pending challenges per peer, largest first (tests check the bounds).
    pub async fn pending_challenges_per_peer(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .conn()
            .await?
            .query("SELECT peer, count(*) AS n FROM join_challenges GROUP BY peer ORDER BY n DESC, peer", &[])
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
