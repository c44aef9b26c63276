//! The CA key rotation statements, shared by SQLite and PostgreSQL (both
//! accept the same text; SQLite's parameters are written `?N` instead of
//! `$N`). Every statement is a compare-and-set on the row's state: it must
//! change exactly one row, or the step is `Changed` and rolled back.

use super::CaKeyChange;

/// Schema for rotation (SQLite migration 9, PostgreSQL migration 7).
/// A legacy `retired` row (an older active key set aside by the one-active
/// migration) stays retired, counted as deactivated when created: it is never
/// published again. A row in any other unknown state (`next` was named in a
/// comment, never written) is retired too.
pub(crate) const MIGRATION: &str = "
    ALTER TABLE ca_keys ADD COLUMN activated_at BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE ca_keys ADD COLUMN deactivated_at BIGINT NOT NULL DEFAULT 0;
    UPDATE ca_keys SET state = 'retired' WHERE state NOT IN ('active', 'retired');
    UPDATE ca_keys SET activated_at = created_at;
    UPDATE ca_keys SET deactivated_at = created_at WHERE state = 'retired';
    CREATE UNIQUE INDEX ca_keys_one_prepared ON ca_keys (purpose) WHERE state = 'prepared';
    CREATE UNIQUE INDEX ca_keys_one_previous ON ca_keys (purpose) WHERE state = 'previous';";

/// One statement of a step: `$1` is `id`, `$2` (when `with_now`) the time.
pub(super) struct Stmt<'a> {
    pub sql: &'static str,
    pub id: &'a str,
    pub with_now: bool,
}

/// The statements of `change`, in order. Activation demotes the active key
/// first (a previous key already there violates the one-previous index:
/// `Changed`), then promotes the prepared one.
pub(super) fn steps(change: &CaKeyChange) -> Vec<Stmt<'_>> {
    match change {
        CaKeyChange::Activate { prepared, active } => vec![
            Stmt {
                sql: "UPDATE ca_keys SET state = 'previous', deactivated_at = $2 WHERE id = $1 AND state = 'active'",
                id: active,
                with_now: true,
            },
            Stmt {
                sql: "UPDATE ca_keys SET state = 'active', activated_at = $2 WHERE id = $1 AND state = 'prepared'",
                id: prepared,
                with_now: true,
            },
        ],
        CaKeyChange::Retire { id } => {
            vec![Stmt { sql: "UPDATE ca_keys SET state = 'retired' WHERE id = $1 AND state = 'previous'", id, with_now: false }]
        }
        // Kept as retired, not deleted: rows only ever move to a later state,
        // which the bundle sequence counts on (`ca_rotation::bundle_sequence`).
        CaKeyChange::Rollback { id } => vec![Stmt {
            sql: "UPDATE ca_keys SET state = 'retired', deactivated_at = $2 WHERE id = $1 AND state = 'prepared'",
            id,
            with_now: true,
        }],
    }
}
