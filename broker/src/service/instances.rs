//! Bot instances: one per successful join. The agent of an instance reports
//! itself (`Heartbeat`), authenticated by that instance's own identity: the
//! instance id comes from the caller's certificate, never from the request, so
//! a bot cannot write another instance's record. Admins list and read them
//! (`bot_instance` kind, names = bot names, verbs `list` and `read`).
//!
//! Expiry is applied at read: an instance not seen (join, renewal, heartbeat)
//! for `instance_expire_after` seconds is not listed and reads as not found.
//! Its row stays while its agent may still hold a valid identity (the store
//! records the latest NotAfter issued to it): a renewal or heartbeat with that
//! identity marks it seen and it is listed again. Once that identity has
//! expired too, nothing can bring the instance back (every call needs a valid
//! identity, and a renewal or heartbeat never recreates a row), and the
//! periodic sweep ([`Broker::sweep_instances`]) deletes the row, at most
//! `instance_sweep_batch` per `instance_sweep_interval`. Deleting the bot
//! deletes its instances.
//!
//! Heartbeats are audited when they tell something new: an instance's first
//! heartbeat, and one whose host name, OS or agent version differs from the
//! previous one (a moved or upgraded agent, or a copied identity reporting from
//! elsewhere). Routine heartbeats are not: at most one audited heartbeat per
//! instance per `heartbeat_min_interval`, since only stored ones are audited.

use super::identity::Authenticated;
use super::{Broker, ServiceError};
use crate::store::{InstanceHeartbeat, InstanceRecord, StoreError};
use serde_json::json;
use sigil_core::domain::Caller;

/// Most bytes of a heartbeat's host name (a DNS name's limit).
pub const MAX_HOST_NAME: usize = 253;
/// Most bytes of a heartbeat's OS description.
pub const MAX_OS: usize = 128;
/// Most bytes of a heartbeat's agent version.
pub const MAX_AGENT_VERSION: usize = 64;
/// Most outputs a heartbeat lists.
pub const MAX_OUTPUTS: usize = 64;
/// Most bytes of one output name.
pub const MAX_OUTPUT_NAME: usize = 512;
/// Largest page a list returns.
pub const MAX_PAGE: usize = 1000;

/// The kind name in role rules.
pub const KIND: &str = "bot_instance";

fn check_text(field: &str, v: &str, max: usize) -> Result<(), ServiceError> {
    if v.len() > max {
        return Err(ServiceError::invalid(field, format!("{} bytes, at most {max}", v.len())));
    }
    if v.chars().any(char::is_control) {
        return Err(ServiceError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Refuses a heartbeat whose fields exceed their bounds or carry control
/// characters (they end up in terminals and logs).
pub fn check_heartbeat(hb: &InstanceHeartbeat) -> Result<(), ServiceError> {
    check_text("host_name", &hb.host_name, MAX_HOST_NAME)?;
    check_text("os", &hb.os, MAX_OS)?;
    check_text("agent_version", &hb.agent_version, MAX_AGENT_VERSION)?;
    if hb.outputs.len() > MAX_OUTPUTS {
        return Err(ServiceError::invalid("outputs", format!("{} outputs, at most {MAX_OUTPUTS}", hb.outputs.len())));
    }
    for (i, o) in hb.outputs.iter().enumerate() {
        check_text(&format!("outputs[{i}]"), o, MAX_OUTPUT_NAME)?;
    }
    if hb.last_renewal < 0 {
        return Err(ServiceError::invalid("last_renewal", "must not be negative"));
    }
    Ok(())
}

/// What an audit event says about heartbeat `hb` after `previous`: `None`
/// when it tells nothing new (same host, OS and version as before).
pub fn heartbeat_news(previous: Option<&InstanceHeartbeat>, hb: &InstanceHeartbeat) -> Option<serde_json::Value> {
    let now = json!({"host_name": hb.host_name, "os": hb.os, "agent_version": hb.agent_version});
    match previous {
        None => Some(json!({"first": true, "heartbeat": now})),
        Some(p) if (&p.host_name, &p.os, &p.agent_version) == (&hb.host_name, &hb.os, &hb.agent_version) => None,
        Some(p) => Some(json!({
            "first": false,
            "heartbeat": now,
            "previous": {"host_name": p.host_name, "os": p.os, "agent_version": p.agent_version},
        })),
    }
}

/// Runs [`Broker::sweep_instances`] every `instance_sweep_interval` seconds,
/// the first time right away, for as long as `broker` lives elsewhere.
pub fn spawn_sweeper(broker: &std::sync::Arc<Broker>) -> tokio::task::JoinHandle<()> {
    let weak = std::sync::Arc::downgrade(broker);
    let every = std::time::Duration::from_secs(broker.settings.instance_sweep_interval.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            match b.sweep_instances().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired bot instances deleted"),
                Err(e) => tracing::warn!(error = %e, "bot instance sweep failed; will retry"),
            }
        }
    })
}

impl Broker {
    /// Stores the caller's own instance's heartbeat (rate limited per
    /// instance); audits the first one and changes of host, OS or version.
    pub async fn heartbeat(&self, auth: &Authenticated, hb: &InstanceHeartbeat) -> Result<(), ServiceError> {
        check_heartbeat(hb)?;
        let id = &auth.claims.instance;
        let previous = match self.store.instance_record(id).await {
            Ok(r) => r.heartbeat,
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let stored = self.store.record_heartbeat(id, hb, self.now(), self.settings.heartbeat_min_interval).await?;
        if !stored {
            return Err(ServiceError::RateLimited(format!(
                "instance {id} sent a heartbeat less than {} s ago",
                self.settings.heartbeat_min_interval
            )));
        }
        if let Some(detail) = heartbeat_news(previous.as_ref(), hb) {
            self.audit.record(self.now(), &format!("{KIND}.heartbeat"), auth.caller.bot.name.as_str(), id, "ok", detail).await;
        }
        Ok(())
    }

    /// Deletes instances expired for good (not seen for `instance_expire_after`
    /// and no identity still valid), at most `instance_sweep_batch`; audits
    /// how many when any. Returns how many it deleted.
    pub async fn sweep_instances(&self) -> Result<usize, ServiceError> {
        let now = self.now();
        let n = self.store.delete_expired_instances(self.seen_since(), now, self.settings.instance_sweep_batch).await?;
        if n > 0 {
            let detail = json!({"deleted": n, "expire_after_seconds": self.settings.instance_expire_after});
            self.audit.record(now, &format!("{KIND}.sweep"), "broker", "", "ok", detail).await;
        }
        Ok(n)
    }

    /// Marks the caller's instance seen after a renewal that issued an
    /// identity valid until `identity_expires_at`. A failure is logged, never
    /// returned: the renewal itself succeeded.
    pub(crate) async fn instance_seen(&self, id: &str, identity_expires_at: i64) {
        if let Err(e) = self.store.touch_instance(id, self.now(), identity_expires_at).await {
            tracing::warn!(instance = id, error = %e, "cannot record the instance as seen");
        }
    }

    fn seen_since(&self) -> i64 {
        self.now().saturating_sub(self.settings.instance_expire_after)
    }

    async fn deny_instances(&self, caller: &Caller, verb: &str, name: &str, why: sigil_core::domain::Denied) -> ServiceError {
        self.audit
            .record(self.now(), &format!("{KIND}.{verb}"), caller.bot.name.as_str(), name, "denied", json!({"reason": why.0}))
            .await;
        why.into()
    }

    /// Unexpired instances, of `bot` (empty: every bot, which needs `list` on
    /// every name), by id after `after`.
    pub async fn list_instances(&self, caller: &Caller, bot: &str, after: &str, limit: usize) -> Result<Vec<InstanceRecord>, ServiceError> {
        let check = if bot.is_empty() { caller.check_verb(KIND, "list") } else { caller.check_verb_on(KIND, "list", bot) };
        if let Err(why) = check {
            return Err(self.deny_instances(caller, "list", bot, why).await);
        }
        let limit = if limit == 0 { MAX_PAGE } else { limit.min(MAX_PAGE) };
        Ok(self.store.list_instances(bot, self.seen_since(), after, limit).await?)
    }

    /// One unexpired instance; `read` on its bot's name.
    pub async fn get_instance(&self, caller: &Caller, id: &str) -> Result<InstanceRecord, ServiceError> {
        let not_found = || ServiceError::Store(StoreError::NotFound { kind: KIND, name: id.to_string() });
        let rec = match self.store.instance_record(id).await {
            Ok(r) => Some(r),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        // Whether an id exists is told only to a caller who may read some instances.
        let bot = rec.as_ref().map(|r| r.instance.bot.clone());
        let check = match &bot {
            Some(b) => caller.check_verb_on(KIND, "read", b),
            None => caller.names_granted(KIND, "read").map(|_| ()),
        };
        if let Err(why) = check {
            return Err(self.deny_instances(caller, "read", id, why).await);
        }
        match rec {
            Some(r) if r.last_seen >= self.seen_since() => Ok(r),
            _ => Err(not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb() -> InstanceHeartbeat {
        InstanceHeartbeat {
            host_name: "h".into(),
            os: "linux/x86_64".into(),
            agent_version: "0.1.0".into(),
            outputs: vec!["x509-svid:/o".into()],
            last_renewal: 1,
        }
    }

    #[test]
    fn only_a_first_heartbeat_or_a_new_host_os_or_version_is_news() {
        let first = heartbeat_news(None, &hb()).unwrap();
        assert_eq!(first["first"], true);
        assert_eq!(first["heartbeat"]["host_name"], "h");
        // Same host, OS, version: routine, whatever else changed.
        assert_eq!(heartbeat_news(Some(&hb()), &InstanceHeartbeat { last_renewal: 99, outputs: vec![], ..hb() }), None);
        for changed in [
            InstanceHeartbeat { host_name: "h2".into(), ..hb() },
            InstanceHeartbeat { os: "linux/aarch64".into(), ..hb() },
            InstanceHeartbeat { agent_version: "0.2.0".into(), ..hb() },
        ] {
            let news = heartbeat_news(Some(&hb()), &changed).unwrap();
            assert_eq!(news["first"], false);
            assert_eq!(news["previous"]["host_name"], "h");
        }
    }

    #[test]
    fn oversize_or_control_heartbeat_fields_are_refused() {
        assert!(check_heartbeat(&hb()).is_ok());
        let field = |h: InstanceHeartbeat| match check_heartbeat(&h) {
            Err(ServiceError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(InstanceHeartbeat { host_name: "a".repeat(MAX_HOST_NAME + 1), ..hb() }), "host_name");
        assert_eq!(field(InstanceHeartbeat { os: "x\u{1b}[2J".into(), ..hb() }), "os");
        assert_eq!(field(InstanceHeartbeat { agent_version: "v".repeat(65), ..hb() }), "agent_version");
        assert_eq!(field(InstanceHeartbeat { outputs: vec!["o".into(); MAX_OUTPUTS + 1], ..hb() }), "outputs");
        assert_eq!(field(InstanceHeartbeat { outputs: vec!["o".repeat(MAX_OUTPUT_NAME + 1)], ..hb() }), "outputs[0]");
        assert_eq!(field(InstanceHeartbeat { last_renewal: -1, ..hb() }), "last_renewal");
        assert!(check_heartbeat(&InstanceHeartbeat { host_name: "a".repeat(MAX_HOST_NAME), ..hb() }).is_ok());
    }
}
