//! CA key rotation: which step each phase allows, when an old key may be
//! unpublished, and what the automatic schedule does next. Pure: the store
//! carries out a step as one compare-and-set, the broker reloads.
//!
//! Each purpose (X.509-SVID CA, internal CA, JWT key) rotates on its own, in
//! one cycle:
//!
//! ```text
//!   standby ──prepare──▶ prepared ──activate──▶ activated ──retire──▶ standby
//!     (A)                 (A, P)                 (A', V)               (A')
//!                 ◀──rollback──
//! ```
//! A = active (signs), P = prepared (published, signs nothing yet),
//! V = previous (published, signs nothing any more). Retired keys are kept
//! in the store for the record and are never published again.
//!
//! Mistakes this module exists to prevent:
//! - signing with a key verifiers have not had time to fetch (activate is the
//!   operator's or the schedule's decision, taken only after `prepare` published
//!   the key; the schedule waits [`Schedule::activate_after`]);
//! - unpublishing a key while a credential it signed is still valid or a
//!   verifier's JWKS cache may still need it ([`retire_safe_at`]; `retire`
//!   earlier is refused unless forced);
//! - two rotations of one purpose interleaving (one phase at a time; a step
//!   from the wrong phase is refused, never reinterpreted).

use std::fmt;

/// What a rotation step failed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// Not a purpose name.
    #[error("unknown CA purpose {0:?}: use x509-svid, jwt-svid, internal, ssh-user, ssh-host, database or kubernetes")]
    UnknownPurpose(String),
    /// Not a step name.
    #[error("unknown rotation phase {0:?}: use prepare, activate, retire or rollback")]
    UnknownStep(String),
    /// The step does not follow from the purpose's phase.
    #[error("cannot {step} the {purpose} key in phase {phase}: {hint}")]
    WrongPhase {
        /// Purpose.
        purpose: Purpose,
        /// Requested step.
        step: Step,
        /// Current phase.
        phase: Phase,
        /// What would be allowed.
        hint: &'static str,
    },
    /// Retiring now would break credentials the old key signed.
    #[error(
        "retiring {purpose} key {id} now would break credentials it signed or cached JWKS: safe at {safe_at} (in {remaining} s); wait, or pass --force"
    )]
    TooEarly {
        /// Purpose.
        purpose: Purpose,
        /// The previous key.
        id: String,
        /// retire_safe_at.
        safe_at: i64,
        /// Seconds left.
        remaining: i64,
    },
}

/// What a CA key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// X.509-SVID CA.
    X509Svid,
    /// Internal CA (bot identities, serving certificate).
    Internal,
    /// JWT-SVID signing key.
    JwtSvid,
    /// SSH user certificate CA (a raw key, no certificate).
    SshUser,
    /// SSH host certificate CA (a raw key, no certificate).
    SshHost,
    /// Database CA (database client and server certificates).
    Database,
    /// Kubernetes CA (Kubernetes client certificates).
    Kubernetes,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 7] = [
        Purpose::X509Svid,
        Purpose::Internal,
        Purpose::JwtSvid,
        Purpose::SshUser,
        Purpose::SshHost,
        Purpose::Database,
        Purpose::Kubernetes,
    ];

    /// Store / API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::X509Svid => "x509-svid",
            Purpose::Internal => "internal",
            Purpose::JwtSvid => "jwt-svid",
            Purpose::SshUser => "ssh-user",
            Purpose::SshHost => "ssh-host",
            Purpose::Database => "database",
            Purpose::Kubernetes => "kubernetes",
        }
    }

    /// From the store / API name.
    pub fn parse(s: &str) -> Result<Self, RotationError> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| RotationError::UnknownPurpose(s.to_string()))
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's place in the cycle (the store's `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, signs nothing yet.
    Prepared,
    /// Signs; published.
    Active,
    /// Signed until `deactivated_at`; still published.
    Previous,
    /// Unpublished; kept for the record.
    Retired,
}

impl KeyState {
    /// Store / API name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Prepared => "prepared",
            KeyState::Active => "active",
            KeyState::Previous => "previous",
            KeyState::Retired => "retired",
        }
    }

    /// From the stored name; `None` for anything else (such a row is
    /// neither published nor used).
    pub fn parse(s: &str) -> Option<Self> {
        [KeyState::Prepared, KeyState::Active, KeyState::Previous, KeyState::Retired].into_iter().find(|k| k.as_str() == s)
    }

    /// Whether verifiers are given the key (bundles, JWKS).
    pub fn published(self) -> bool {
        !matches!(self, KeyState::Retired)
    }
}

/// Where one purpose's rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One active key.
    Standby,
    /// A prepared key is published beside the active one.
    Prepared,
    /// The new key signs; the previous one is still published.
    Activated,
}

impl Phase {
    /// API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Standby => "standby",
            Phase::Prepared => "prepared",
            Phase::Activated => "activated",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rotation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create and publish a new key.
    Prepare,
    /// Sign with the prepared key; the active one becomes previous.
    Activate,
    /// Unpublish the previous key.
    Retire,
    /// Drop the prepared key (it becomes retired without ever signing).
    Rollback,
}

impl Step {
    /// API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Prepare => "prepare",
            Step::Activate => "activate",
            Step::Retire => "retire",
            Step::Rollback => "rollback",
        }
    }

    /// From the API name.
    pub fn parse(s: &str) -> Result<Self, RotationError> {
        [Step::Prepare, Step::Activate, Step::Retire, Step::Rollback]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| RotationError::UnknownStep(s.to_string()))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a decision reads of one stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    /// Key id.
    pub id: String,
    /// State.
    pub state: KeyState,
    /// Created (for a prepared key: when it was first published).
    pub created_at: i64,
    /// Certificate (or planned) expiry.
    pub not_after: i64,
    /// When it stopped signing (0: still or never).
    pub deactivated_at: i64,
}

/// The keys of one purpose that take part in its rotation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurposeKeys {
    /// The signing key (the store keeps at most one).
    pub active: Option<KeyView>,
    /// The published, not yet signing key (at most one).
    pub prepared: Option<KeyView>,
    /// The published, no longer signing key (at most one).
    pub previous: Option<KeyView>,
}

impl PurposeKeys {
    /// Sorts `keys` of one purpose into their slots (retired and unknown
    /// states are left out; of two rows in one slot the newest wins, which
    /// the store's unique indexes rule out anyway).
    pub fn of(keys: impl IntoIterator<Item = KeyView>) -> Self {
        let mut out = Self::default();
        for k in keys {
            let slot = match k.state {
                KeyState::Active => &mut out.active,
                KeyState::Prepared => &mut out.prepared,
                KeyState::Previous => &mut out.previous,
                KeyState::Retired => continue,
            };
            if slot.as_ref().is_none_or(|s| s.created_at <= k.created_at) {
                *slot = Some(k);
            }
        }
        out
    }

    /// The phase these keys are in. A previous key makes it `Activated` (it
    /// must be retired before the next prepare).
    pub fn phase(&self) -> Phase {
        if self.previous.is_some() {
            Phase::Activated
        } else if self.prepared.is_some() {
            Phase::Prepared
        } else {
            Phase::Standby
        }
    }
}

/// The longest any credential of a purpose can outlive the moment its key
/// stopped signing, and how long verifiers may keep a key they fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest credential lifetime the broker can issue with this purpose's
    /// key (the hard ceiling; roles and bots can only lower it).
    pub max_credential_ttl: i64,
    /// Time for a verifier to stop needing the key after the last credential
    /// expired: the bundle refresh hint for X.509, the JWKS cache allowance
    /// for JWT.
    pub verifier_allowance: i64,
    /// Time for every replica to stop signing with the old key after the
    /// activation (the store change poll plus a reload, with margin).
    pub replica_lag: i64,
}

/// Earliest time a previous key may be unpublished: every credential it
/// signed has expired (a credential lives at most `max_credential_ttl` and
/// never past its CA's NotAfter) and verifiers have had `verifier_allowance`
/// to refresh. `None` when the key has not been deactivated.
pub fn retire_safe_at(key: &KeyView, b: &Bounds) -> Option<i64> {
    if key.deactivated_at <= 0 {
        return None;
    }
    let last_signed = key.deactivated_at.saturating_add(b.replica_lag);
    let last_expiry = last_signed.saturating_add(b.max_credential_ttl).min(key.not_after.max(key.deactivated_at));
    Some(last_expiry.saturating_add(b.verifier_allowance))
}

/// What a step acts on, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Create a new prepared key.
    Prepare,
    /// Prepared `prepared` becomes active, active `active` previous.
    Activate {
        /// The prepared key.
        prepared: String,
        /// The active key.
        active: String,
    },
    /// Previous `id` becomes retired.
    Retire {
        /// The previous key.
        id: String,
    },
    /// Prepared `id` is retired without ever having signed.
    Rollback {
        /// The prepared key.
        id: String,
    },
}

/// Decides whether `step` may be taken now on `keys`, and on which keys.
/// `retire` before [`retire_safe_at`] is refused unless `force`.
pub fn plan(purpose: Purpose, keys: &PurposeKeys, step: Step, bounds: &Bounds, now: i64, force: bool) -> Result<Plan, RotationError> {
    let phase = keys.phase();
    let wrong = |hint| RotationError::WrongPhase { purpose, step, phase, hint };
    match (step, phase) {
        (Step::Prepare, Phase::Standby) => Ok(Plan::Prepare),
        (Step::Prepare, Phase::Prepared) => Err(wrong("a key is already prepared: activate it or roll it back")),
        (Step::Prepare, Phase::Activated) => Err(wrong("retire the previous key first")),
        (Step::Activate, Phase::Prepared) => match (&keys.prepared, &keys.active) {
            (Some(p), Some(a)) => Ok(Plan::Activate { prepared: p.id.clone(), active: a.id.clone() }),
            _ => Err(wrong("no active key to replace")),
        },
        (Step::Activate, _) => Err(wrong("prepare a key first")),
        (Step::Rollback, Phase::Prepared) => Ok(Plan::Rollback { id: keys.prepared.as_ref().map(|k| k.id.clone()).unwrap_or_default() }),
        (Step::Rollback, _) => Err(wrong("only a prepared key can be rolled back")),
        (Step::Retire, Phase::Activated) => {
            let Some(v) = &keys.previous else { return Err(wrong("no previous key")) };
            let safe_at = retire_safe_at(v, bounds).unwrap_or(now);
            if now < safe_at && !force {
                return Err(RotationError::TooEarly { purpose, id: v.id.clone(), safe_at, remaining: safe_at - now });
            }
            Ok(Plan::Retire { id: v.id.clone() })
        }
        (Step::Retire, _) => Err(wrong("there is no previous key to retire")),
    }
}

/// The SPIFFE bundle's `spiffe_sequence` for keys in `states` (every key of
/// every purpose): the sum of each state's rank (prepared 1, active 2,
/// previous 3, retired 4). Every step moves some key to a higher rank and
/// none is ever deleted, so the sequence grows with every change of the
/// published keys, and every replica computes the same number.
pub fn bundle_sequence(states: impl IntoIterator<Item = KeyState>) -> i64 {
    states
        .into_iter()
        .map(|s| match s {
            KeyState::Prepared => 1,
            KeyState::Active => 2,
            KeyState::Previous => 3,
            KeyState::Retired => 4,
        })
        .sum()
}

/// The automatic schedule of one purpose (SPIRE-like).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Prepare when the active key has lived this fraction of its lifetime
    /// (0 < f < 1).
    pub prepare_at_fraction: f64,
    /// Activate once the prepared key has been published this long (seconds):
    /// agents and JWKS caches must have fetched it.
    pub activate_after: i64,
}

/// What the schedule does next for one purpose at `now`: `None` while
/// nothing is due. An active key that has expired (or has less than
/// `activate_after` left) lets a prepared key be activated at once: nothing
/// it could still sign would be valid longer than that anyway, and waiting
/// would let issuance fail.
pub fn scheduled_step(keys: &PurposeKeys, s: &Schedule, bounds: &Bounds, now: i64) -> Option<Step> {
    let active = keys.active.as_ref()?;
    match keys.phase() {
        Phase::Standby => {
            let life = (active.not_after - active.created_at).max(0) as f64;
            let due = active.created_at.saturating_add((life * s.prepare_at_fraction.clamp(0.0, 1.0)) as i64);
            (now >= due || active.not_after - now <= s.activate_after).then_some(Step::Prepare)
        }
        Phase::Prepared => {
            let p = keys.prepared.as_ref()?;
            let published_long_enough = now >= p.created_at.saturating_add(s.activate_after);
            let active_ending = active.not_after - now <= s.activate_after;
            (published_long_enough || active_ending).then_some(Step::Activate)
        }
        Phase::Activated => {
            let v = keys.previous.as_ref()?;
            (now >= retire_safe_at(v, bounds).unwrap_or(now)).then_some(Step::Retire)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, state: KeyState, created_at: i64, not_after: i64, deactivated_at: i64) -> KeyView {
        KeyView { id: id.into(), state, created_at, not_after, deactivated_at }
    }

    const B: Bounds = Bounds { max_credential_ttl: 3600, verifier_allowance: 300, replica_lag: 5 };

    fn standby() -> PurposeKeys {
        PurposeKeys::of([key("a", KeyState::Active, 0, 100_000, 0), key("old", KeyState::Retired, 0, 50, 10)])
    }

    fn prepared() -> PurposeKeys {
        PurposeKeys::of([key("a", KeyState::Active, 0, 100_000, 0), key("p", KeyState::Prepared, 1000, 101_000, 0)])
    }

    fn activated() -> PurposeKeys {
        PurposeKeys::of([key("p", KeyState::Active, 1000, 101_000, 0), key("a", KeyState::Previous, 0, 100_000, 2000)])
    }

    #[test]
    fn phases_follow_the_stored_states() {
        assert_eq!(standby().phase(), Phase::Standby);
        assert_eq!(prepared().phase(), Phase::Prepared);
        assert_eq!(activated().phase(), Phase::Activated);
    }

    #[test]
    fn each_phase_allows_only_its_step() {
        let allowed = |k: &PurposeKeys, s: Step| plan(Purpose::X509Svid, k, s, &B, 1_000_000, false).is_ok();
        for (keys, ok) in [
            (standby(), vec![Step::Prepare]),
            (prepared(), vec![Step::Activate, Step::Rollback]),
            (activated(), vec![Step::Retire]),
        ] {
            for s in [Step::Prepare, Step::Activate, Step::Retire, Step::Rollback] {
                assert_eq!(allowed(&keys, s), ok.contains(&s), "{:?} {s}", keys.phase());
            }
        }
        assert_eq!(
            plan(Purpose::JwtSvid, &prepared(), Step::Activate, &B, 0, false),
            Ok(Plan::Activate { prepared: "p".into(), active: "a".into() })
        );
        assert_eq!(plan(Purpose::JwtSvid, &prepared(), Step::Rollback, &B, 0, false), Ok(Plan::Rollback { id: "p".into() }));
    }

    #[test]
    fn a_second_prepare_is_refused_naming_what_to_do() {
        let e = plan(Purpose::Internal, &prepared(), Step::Prepare, &B, 0, false).unwrap_err().to_string();
        assert!(e.contains("already prepared"), "{e}");
        let e = plan(Purpose::Internal, &activated(), Step::Prepare, &B, 0, false).unwrap_err().to_string();
        assert!(e.contains("retire the previous key first"), "{e}");
    }

    #[test]
    fn retire_safe_at_is_deactivation_plus_lag_ttl_and_allowance() {
        let v = key("a", KeyState::Previous, 0, 100_000, 2000);
        assert_eq!(retire_safe_at(&v, &B), Some(2000 + 5 + 3600 + 300));
        // A credential never outlives its CA: a CA ending sooner ends the wait sooner.
        let ending = key("a", KeyState::Previous, 0, 2500, 2000);
        assert_eq!(retire_safe_at(&ending, &B), Some(2500 + 300));
        assert_eq!(retire_safe_at(&key("a", KeyState::Active, 0, 1, 0), &B), None);
    }

    #[test]
    fn retiring_before_the_bound_is_refused_unless_forced() {
        let safe = 2000 + 5 + 3600 + 300;
        let e = plan(Purpose::X509Svid, &activated(), Step::Retire, &B, safe - 1, false).unwrap_err();
        assert_eq!(e, RotationError::TooEarly { purpose: Purpose::X509Svid, id: "a".into(), safe_at: safe, remaining: 1 });
        assert_eq!(plan(Purpose::X509Svid, &activated(), Step::Retire, &B, safe - 1, true), Ok(Plan::Retire { id: "a".into() }));
        assert_eq!(plan(Purpose::X509Svid, &activated(), Step::Retire, &B, safe, false), Ok(Plan::Retire { id: "a".into() }));
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Ok(p));
        }
        for s in [Step::Prepare, Step::Activate, Step::Retire, Step::Rollback] {
            assert_eq!(Step::parse(s.as_str()), Ok(s));
        }
        assert!(Purpose::parse("x509").is_err());
        assert!(Step::parse("Activate").is_err());
        assert_eq!(KeyState::parse("next"), None);
        assert!(!KeyState::Retired.published() && KeyState::Previous.published() && KeyState::Prepared.published());
    }

    #[test]
    fn every_step_increases_the_bundle_sequence() {
        use KeyState::*;
        let standby = bundle_sequence([Active, Retired]);
        let prepared = bundle_sequence([Active, Retired, Prepared]);
        let activated = bundle_sequence([Previous, Retired, Active]);
        let retired = bundle_sequence([Retired, Retired, Active]);
        let rolled_back = bundle_sequence([Active, Retired, Retired]);
        assert!(standby < prepared && prepared < activated && activated < retired, "{standby} {prepared} {activated} {retired}");
        assert!(prepared < rolled_back, "a rollback (prepared -> retired) increases it too");
    }

    const S: Schedule = Schedule { prepare_at_fraction: 0.5, activate_after: 600 };

    #[test]
    fn the_schedule_prepares_at_the_fraction_of_the_active_keys_life() {
        assert_eq!(scheduled_step(&standby(), &S, &B, 49_999), None);
        assert_eq!(scheduled_step(&standby(), &S, &B, 50_000), Some(Step::Prepare));
    }

    #[test]
    fn the_schedule_activates_only_after_the_prepared_key_was_published_long_enough() {
        assert_eq!(scheduled_step(&prepared(), &S, &B, 1599), None);
        assert_eq!(scheduled_step(&prepared(), &S, &B, 1600), Some(Step::Activate));
    }

    #[test]
    fn the_schedule_retires_at_retire_safe_at_and_not_before() {
        let safe = 2000 + 5 + 3600 + 300;
        assert_eq!(scheduled_step(&activated(), &S, &B, safe - 1), None);
        assert_eq!(scheduled_step(&activated(), &S, &B, safe), Some(Step::Retire));
    }

    #[test]
    fn an_active_key_about_to_expire_is_replaced_without_waiting() {
        // Expired, or ending within activate_after: prepare even before the
        // fraction (a tiny fraction of a long life is not the case here), and
        // activate a fresh prepared key at once.
        let ending = PurposeKeys::of([key("a", KeyState::Active, 0, 1000, 0)]);
        let s = Schedule { prepare_at_fraction: 0.99, activate_after: 600 };
        assert_eq!(scheduled_step(&ending, &s, &B, 400), Some(Step::Prepare));
        let just_prepared = PurposeKeys::of([key("a", KeyState::Active, 0, 1000, 0), key("p", KeyState::Prepared, 900, 2000, 0)]);
        assert_eq!(scheduled_step(&just_prepared, &s, &B, 901), Some(Step::Activate));
    }
}
