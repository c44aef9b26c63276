//! Pending join challenges in SQLite (table `join_challenges`): the flood
//! policy of `sigil_core::domain::challenge` carried out in one `IMMEDIATE`
//! transaction (one writer at a time, whatever process holds the file).

use super::{ChallengeLimits, ChallengeRecord, StoreError};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sigil_core::domain::challenge::{next_step, victim, Counts, PeerLoad, Step, MAX_EVICTIONS_FROM_LARGEST};

/// The table (a migration of its own; see `sqlite::MIGRATIONS`).
pub(super) const MIGRATION: &str = "
    CREATE TABLE join_challenges (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, method TEXT NOT NULL,
        token TEXT NOT NULL, peer TEXT NOT NULL, state BLOB NOT NULL, expires_at INTEGER NOT NULL);
    CREATE INDEX join_challenges_peer ON join_challenges (peer, seq);
    CREATE INDEX join_challenges_token ON join_challenges (token, seq);
    CREATE INDEX join_challenges_expiry ON join_challenges (expires_at);";

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// [`super::Store::insert_challenge`].
pub(super) fn insert(c: &mut Connection, r: &ChallengeRecord, limits: &ChallengeLimits, now: i64) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
    tx.execute("DELETE FROM join_challenges WHERE expires_at <= ?1", params![now]).map_err(backend)?;
    tx.execute(
        "INSERT INTO join_challenges (id, method, token, peer, state, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![r.id, r.method, r.token, r.peer, r.state, r.expires_at],
    )
    .map_err(backend)?;
    let seq = tx.last_insert_rowid();
    evict(&tx, r, seq, limits)?;
    tx.commit().map_err(backend)
}

/// Evicts until [`next_step`] is done. Each step deletes at least one row or
/// stops, so the loop ends.
fn evict(tx: &Connection, r: &ChallengeRecord, seq: i64, limits: &ChallengeLimits) -> Result<(), StoreError> {
    let mut from_largest = 0;
    loop {
        let deleted = match next_step(limits, counts(tx, r)?) {
            Step::Done => return Ok(()),
            Step::PeerOldest(n) => delete_oldest(tx, "peer", &r.peer, seq, n)?,
            Step::TokenOldest(n) => delete_oldest(tx, "token", &r.token, seq, n)?,
            Step::FromLargestPeer if from_largest < MAX_EVICTIONS_FROM_LARGEST => {
                from_largest += 1;
                match victim(own_load(tx, r, seq)?, largest_load(tx, seq)?) {
                    Some(peer) => delete_oldest(tx, "peer", &peer, seq, 1)?,
                    None => 0,
                }
            }
            Step::FromLargestPeer => 0,
        };
        if deleted == 0 {
            return Ok(());
        }
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn counts(tx: &Connection, r: &ChallengeRecord) -> Result<Counts, StoreError> {
    tx.query_row(
        "SELECT (SELECT count(*) FROM join_challenges WHERE peer = ?1), (SELECT count(*) FROM join_challenges WHERE token = ?2),
                (SELECT count(*) FROM join_challenges)",
        params![r.peer, r.token],
        |row| Ok(Counts { peer: count(row.get(0)?), token: count(row.get(1)?), total: count(row.get(2)?) }),
    )
    .map_err(backend)
}

/// Deletes the `n` oldest challenges whose `column` (`peer` or `token`) is
/// `value`, never the new one (`seq`); returns how many went.
fn delete_oldest(tx: &Connection, column: &str, value: &str, seq: i64, n: u64) -> Result<usize, StoreError> {
    let sql = format!(
        "DELETE FROM join_challenges WHERE seq IN
            (SELECT seq FROM join_challenges WHERE {column} = ?1 AND seq <> ?2 ORDER BY seq LIMIT ?3)"
    );
    tx.execute(&sql, params![value, seq, i64::try_from(n).unwrap_or(i64::MAX)]).map_err(backend)
}

fn own_load(tx: &Connection, r: &ChallengeRecord, seq: i64) -> Result<PeerLoad<String>, StoreError> {
    let n = tx
        .query_row("SELECT count(*) FROM join_challenges WHERE peer = ?1 AND seq <> ?2", params![r.peer, seq], |row| row.get(0))
        .map_err(backend)?;
    Ok(PeerLoad { peer: r.peer.clone(), count: count(n) })
}

/// The peer holding the most challenges (the new one not counted); ties: the
/// one with the oldest challenge.
fn largest_load(tx: &Connection, seq: i64) -> Result<Option<PeerLoad<String>>, StoreError> {
    tx.query_row(
        "SELECT peer, count(*) AS n FROM join_challenges WHERE seq <> ?1 GROUP BY peer ORDER BY n DESC, min(seq) LIMIT 1",
        params![seq],
        |row| Ok(PeerLoad { peer: row.get(0)?, count: count(row.get(1)?) }),
    )
    .optional()
    .map_err(backend)
}

/// [`super::Store::take_challenge`]: one `DELETE ... RETURNING`.
pub(super) fn take(c: &Connection, id: &str, now: i64) -> Result<Option<ChallengeRecord>, StoreError> {
    let r = c
        .query_row(
            "DELETE FROM join_challenges WHERE id = ?1 RETURNING id, method, token, peer, state, expires_at",
            params![id],
            |row| {
                Ok(ChallengeRecord {
                    id: row.get(0)?,
                    method: row.get(1)?,
                    token: row.get(2)?,
                    peer: row.get(3)?,
                    state: row.get(4)?,
                    expires_at: row.get(5)?,
                })
            },
        )
        .optional()
        .map_err(backend)?;
    Ok(r.filter(|r| r.expires_at > now))
}
