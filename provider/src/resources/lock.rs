//! `sigil_lock`: refuses joins, renewals and issuance for one target (a bot,
//! one bot instance, a join token, or a SPIFFE ID pattern) until it is
//! deleted or expires.
//!
//! The broker has no update for locks, so every argument forces replacement:
//! a changed lock is deleted and created again. Mistakes this file prevents:
//! - a lock that expired (or was deleted out of band) staying in state as if
//!   it still refused anything: a read treats an expired lock as gone, so the
//!   next plan shows it must be created again;
//! - a target block with none or several targets reaching the broker: checked
//!   at validation, pointing at the block;
//! - a lock holds no secret, so nothing here is sensitive; `reason` is shown
//!   in plans by design (it is what an operator reads in the audit log).

use super::{found, gone_ok, int, opt_int, opt_str, status, string};
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::diag::{AttrPath, Diagnostics};
use crate::provider::Resource;
use crate::schema::{Attribute, Block, NestedBlock, Nesting, Schema};
use sigil_schemas::sigil::v1 as api;

/// The `target` block's attributes, in schema order.
const TARGETS: [&str; 4] = ["bot", "bot_instance", "join_token", "spiffe_id"];

/// The `sigil_lock` resource type. Its clock decides whether a lock has expired.
pub struct Lock {
    now: fn() -> i64,
}

impl Default for Lock {
    fn default() -> Self {
        Self { now: crate::clock::now_unix }
    }
}

fn schema() -> Schema {
    let target = Block {
        description: "What the lock stops (required, exactly one attribute set). Changing it replaces the lock.",
        attributes: vec![
            Attribute::optional("bot", Type::String, "Every instance of this bot (by name)."),
            Attribute::optional("bot_instance", Type::String, "One bot instance (its id, see the `sigil_bot_instances` data source)."),
            Attribute::optional("join_token", Type::String, "Joins with this join token (by name)."),
            Attribute::optional("spiffe_id", Type::String, "SVIDs whose SPIFFE ID path matches this pattern, e.g. `/svc/web`, `/svc/*`, `/ci/**` (no templates)."),
        ],
        blocks: vec![],
    };
    Schema {
        version: 0,
        block: Block {
            description: "A lock refuses joins, renewals and issuance for its target on every broker replica from the next request on, until it is deleted or expires. Locks cannot be changed in place: every argument forces replacement. A lock that expired or was deleted outside Terraform is removed from state when refreshed, so the next plan creates it again (remove it from the configuration, or set a later `expires_at`). Needs verbs `create`, `read`, `delete` on `lock`.",
            attributes: vec![
                Attribute::computed("id", Type::String, "Same as `name`."),
                Attribute::required("name", Type::String, "Lock name. Changing it replaces the lock.").force_new(),
                Attribute::optional("reason", Type::String, "Why the target is locked: recorded in the audit events of the refusals, never shown to the locked caller. Not secret (shown in plans).").force_new(),
                Attribute::optional("expires_at", Type::Number, "Expiry, in Unix seconds (UTC); unset: until deleted.").force_new(),
                Attribute::computed("revision", Type::Number, "Broker revision."),
                Attribute::computed("created_by", Type::String, "The bot whose identity created the lock."),
                Attribute::computed("created_at", Type::Number, "When the lock was created, Unix seconds."),
            ],
            blocks: vec![NestedBlock { name: "target", nesting: Nesting::Single, block: target, force_new: true }],
        },
    }
}

fn to_api(v: &Value) -> api::Lock {
    let t = v.attr("target");
    api::Lock {
        name: string(v, "name"),
        target: Some(api::LockTarget {
            bot: string(t, "bot"),
            bot_instance: string(t, "bot_instance"),
            join_token: string(t, "join_token"),
            spiffe_id: string(t, "spiffe_id"),
        }),
        reason: string(v, "reason"),
        expires_at: int(v, "expires_at"),
        ..Default::default()
    }
}

/// The broker reports unset targets as empty strings; in state they are null,
/// as in a configuration that sets exactly one.
fn target_value(t: &api::LockTarget) -> Value {
    let field = |s: &str| if s.is_empty() { Value::Null } else { Value::string(s) };
    Value::object([
        ("bot", field(&t.bot)),
        ("bot_instance", field(&t.bot_instance)),
        ("join_token", field(&t.join_token)),
        ("spiffe_id", field(&t.spiffe_id)),
    ])
}

fn to_state(l: &api::Lock, hint: &Value) -> Value {
    Value::object([
        ("id", Value::string(&l.name)),
        ("name", Value::string(&l.name)),
        ("target", target_value(&l.target.clone().unwrap_or_default())),
        ("reason", opt_str(&l.reason, hint.attr("reason"))),
        ("expires_at", opt_int(l.expires_at, hint.attr("expires_at"))),
        ("revision", Value::int(l.revision)),
        ("created_by", Value::string(&l.created_by)),
        ("created_at", Value::int(l.created_at)),
    ])
}

/// Whether a lock with this expiry no longer refuses anything at `now`.
pub fn expired(expires_at: i64, now: i64) -> bool {
    expires_at != 0 && expires_at <= now
}

/// Exactly one target, each well formed; unknown values are skipped.
fn check_target(config: &Value, diags: &mut Diagnostics) {
    let target = config.attr("target");
    let at = AttrPath::attr("target");
    if target.is_unknown() {
        return;
    }
    if target.is_null() {
        diags.error_at(at, "Missing target", "A lock needs a `target` block setting one of bot, bot_instance, join_token or spiffe_id.");
        return;
    }
    if TARGETS.iter().any(|n| target.attr(n).is_unknown()) {
        return;
    }
    let set: Vec<&str> = TARGETS.iter().copied().filter(|n| target.attr(n).as_str().is_some_and(|s| !s.is_empty())).collect();
    if set.len() != 1 {
        let got = if set.is_empty() { "none".to_string() } else { set.join(" and ") };
        // Point at the second target when there are several (Terraform shows
        // that line); at the block when there is none.
        let path = set.get(1).map_or(at.clone(), |n| at.then_attr(n));
        diags.error_at(path, "Invalid target", format!("Set exactly one of bot, bot_instance, join_token or spiffe_id (got {got})."));
        return;
    }
    let value = target.attr(set[0]).as_str().unwrap_or_default();
    let path = at.then_attr(set[0]);
    match set[0] {
        "spiffe_id" if !value.starts_with('/') || value.contains("{{") => diags.error_at(
            path,
            "Invalid SPIFFE ID pattern",
            format!("{value:?} must be a path starting with '/' (without the spiffe://trust-domain prefix), without templates."),
        ),
        "bot" | "join_token" if !super::valid_name(value) => diags.error_at(
            path,
            "Invalid name",
            format!("{value:?} must be 1-63 characters of lowercase letters, digits, '-', '_' or '.', starting with a letter or digit."),
        ),
        _ => {}
    }
}

#[async_trait::async_trait]
impl Resource for Lock {
    fn type_name(&self) -> &'static str {
        "sigil_lock"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        super::check_name(config, "name", diags);
        check_target(config, diags);
        if let Some(t) = config.attr("expires_at").as_i64() {
            if t < 0 {
                diags.error_at(AttrPath::attr("expires_at"), "Invalid expiry", "`expires_at` is a Unix time in seconds, or unset for a lock until deleted.");
            } else if expired(t, (self.now)()) {
                // A warning, not an error: `terraform destroy` validates too.
                diags.warning_at(
                    AttrPath::attr("expires_at"),
                    "Lock expiry in the past",
                    "This lock has expired: the broker refuses to create it, and an expired lock is removed from state. Remove the resource or set a later `expires_at`.",
                );
            }
        }
    }

    async fn create(&self, api: &Api, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let l = api.client().create_lock(to_api(planned)).await.map_err(status(&name))?;
        Ok(to_state(l.get_ref(), planned))
    }

    async fn read(&self, api: &Api, state: &Value) -> Result<Option<Value>, ApiError> {
        let name = string(state, "name");
        let l = found(api.client().get_lock(api::GetRequest { name: name.clone() }).await.map_err(status(&name)))?;
        // An expired lock refuses nothing: gone, whether or not the broker still keeps it.
        Ok(l.filter(|l| !expired(l.get_ref().expires_at, (self.now)())).map(|l| to_state(l.get_ref(), state)))
    }

    async fn update(&self, _api: &Api, _prior: &Value, _planned: &Value) -> Result<Value, ApiError> {
        // Every argument forces replacement, so Terraform never plans an update.
        Err(ApiError::Unavailable("a lock cannot be changed in place (a provider bug planned it); run `terraform apply -replace` on it".into()))
    }

    async fn delete(&self, api: &Api, state: &Value) -> Result<(), ApiError> {
        let name = string(state, "name");
        let r = api.client().delete_lock(api::DeleteRequest { name: name.clone(), revision: 0 }).await;
        gone_ok(r.map(|_| ()).map_err(status(&name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::plan;

    fn config(target: Value) -> Value {
        Value::object([
            ("id", Value::Null),
            ("name", Value::string("quarantine")),
            ("target", target),
            ("reason", Value::string("incident 42")),
            ("expires_at", Value::Null),
            ("revision", Value::Null),
            ("created_by", Value::Null),
            ("created_at", Value::Null),
        ])
    }

    fn target(pairs: &[(&str, &str)]) -> Value {
        let mut t = Value::object(TARGETS.iter().map(|n| (*n, Value::Null)));
        for (k, v) in pairs {
            t.set_attr(k, Value::string(*v));
        }
        t
    }

    fn summaries(lock: &Lock, v: &Value) -> Vec<(String, Option<String>)> {
        let mut d = Diagnostics::default();
        lock.validate(v, &mut d);
        d.0.into_iter().map(|d| (d.summary, d.path.map(|p| p.to_string()))).collect()
    }

    #[test]
    fn state_round_trips_the_configuration_so_a_second_plan_is_empty() {
        let cfg = config(target(&[("bot", "ci")]));
        let broker = api::Lock { revision: 1, created_by: "admin".into(), created_at: 100, ..to_api(&cfg) };
        let state = to_state(&broker, &cfg);
        assert_eq!(state.attr("target"), cfg.attr("target"));
        assert_eq!(state.attr("expires_at"), &Value::Null);
        assert_eq!(state.attr("reason"), &Value::string("incident 42"));
        let p = plan(&schema(), &state, &state, &cfg);
        assert_eq!(p.planned, state);
        assert!(p.requires_replace.is_empty());
    }

    #[test]
    fn every_argument_change_replaces_the_lock() {
        let cfg = config(target(&[("bot", "ci")]));
        let state = to_state(&api::Lock { revision: 1, ..to_api(&cfg) }, &cfg);
        for (attr, new) in [
            ("name", Value::string("other")),
            ("reason", Value::string("another reason")),
            ("expires_at", Value::int(1_893_456_000)),
            ("target", target(&[("join_token", "t")])),
        ] {
            let mut proposed = state.clone();
            proposed.set_attr(attr, new);
            let p = plan(&schema(), &state, &proposed, &proposed);
            assert_eq!(p.requires_replace, vec![AttrPath::attr(attr)], "{attr}");
        }
    }

    #[test]
    fn an_expired_lock_is_gone_and_zero_never_expires() {
        assert!(expired(100, 100));
        assert!(expired(99, 100));
        assert!(!expired(101, 100));
        assert!(!expired(0, i64::MAX));
    }

    #[test]
    fn after_import_unset_targets_and_defaults_are_null() {
        let stub = Value::object([("id", Value::string("q")), ("name", Value::string("q"))]);
        let l = api::Lock { name: "q".into(), target: Some(api::LockTarget { spiffe_id: "/svc/*".into(), ..Default::default() }), ..Default::default() };
        let state = to_state(&l, &stub);
        assert_eq!(state.attr("target"), &target(&[("spiffe_id", "/svc/*")]));
        assert_eq!(state.attr("reason"), &Value::Null);
        assert_eq!(state.attr("expires_at"), &Value::Null);
    }

    #[test]
    fn a_target_block_must_name_exactly_one_well_formed_target() {
        let lock = Lock { now: || 1000 };
        let at = |s: &str| Some(s.to_string());
        assert!(summaries(&lock, &config(target(&[("bot", "ci")]))).is_empty());
        assert!(summaries(&lock, &config(target(&[("spiffe_id", "/ci/**")]))).is_empty());
        assert!(summaries(&lock, &config(target(&[("bot_instance", "0123abcd")]))).is_empty());
        assert_eq!(summaries(&lock, &config(Value::Null)), [("Missing target".into(), at("target"))]);
        assert_eq!(summaries(&lock, &config(target(&[]))), [("Invalid target".into(), at("target"))]);
        assert_eq!(summaries(&lock, &config(target(&[("bot", "ci"), ("join_token", "t")]))), [("Invalid target".into(), at("target.join_token"))]);
        assert_eq!(summaries(&lock, &config(target(&[("spiffe_id", "svc/web")]))), [("Invalid SPIFFE ID pattern".into(), at("target.spiffe_id"))]);
        assert_eq!(summaries(&lock, &config(target(&[("spiffe_id", "/ci/{{bot.name}}")]))), [("Invalid SPIFFE ID pattern".into(), at("target.spiffe_id"))]);
        assert_eq!(summaries(&lock, &config(target(&[("bot", "Not Valid")]))), [("Invalid name".into(), at("target.bot"))]);
        // Unknown until apply (e.g. from another resource): not judged yet.
        let mut unknown = target(&[]);
        unknown.set_attr("bot", Value::Unknown);
        assert!(summaries(&lock, &config(unknown)).is_empty());
    }

    #[test]
    fn a_past_expiry_is_a_warning_and_a_negative_one_an_error() {
        let lock = Lock { now: || 1000 };
        let mut cfg = config(target(&[("bot", "ci")]));
        cfg.set_attr("expires_at", Value::int(999));
        let mut d = Diagnostics::default();
        lock.validate(&cfg, &mut d);
        assert_eq!(d.0.len(), 1);
        assert!(!d.has_errors(), "{d:?}");
        cfg.set_attr("expires_at", Value::int(-1));
        assert_eq!(summaries(&lock, &cfg), [("Invalid expiry".into(), Some("expires_at".into()))]);
        cfg.set_attr("expires_at", Value::int(2000));
        assert!(summaries(&lock, &cfg).is_empty());
    }

    #[test]
    fn nothing_in_a_lock_is_sensitive_or_hidden() {
        // A lock carries no secret: nothing is masked, so plans show what changes.
        let s = schema();
        assert!(s.block.attributes.iter().all(|a| !a.sensitive));
        assert!(s.block.blocks[0].block.attributes.iter().all(|a| !a.sensitive));
    }

    #[test]
    fn a_blamed_target_field_points_at_its_attribute() {
        let segs = crate::broker_field::parse("target.spiffe_id").unwrap();
        let p = crate::broker_field::to_attr_path(&schema().block, &segs).unwrap();
        assert_eq!(p.to_string(), "target.spiffe_id");
    }
}
