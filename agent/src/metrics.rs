//! Agent health: renewal counters, failures and expiry per credential, rendered
//! in the Prometheus text format, and the readiness decision.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Name of the agent's own identity in metrics.
pub const IDENTITY: &str = "identity";

/// A metric family: name, type, help, and how to read a value from a stat.
type Family = (&'static str, &'static str, &'static str, fn(&Stat, i64) -> Option<i64>);

#[derive(Debug, Clone, Default)]
struct Stat {
    renewals: u64,
    failures: u64,
    expires_at: Option<i64>,
    last_error: Option<String>,
}

/// Counters of every credential the agent keeps fresh.
#[derive(Debug, Default)]
pub struct Metrics {
    stats: Mutex<BTreeMap<String, Stat>>,
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    fn with<R>(&self, name: &str, f: impl FnOnce(&mut Stat) -> R) -> R {
        let mut m = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(name.to_string()).or_default())
    }

    /// Declares a credential that readiness must wait for.
    pub fn register(&self, name: &str) {
        self.with(name, |_| ());
    }

    /// A successful issuance or renewal.
    pub fn renewed(&self, name: &str, expires_at: i64) {
        self.with(name, |s| {
            s.renewals += 1;
            s.expires_at = Some(expires_at);
            s.last_error = None;
        });
    }

    /// A credential found already valid (e.g. loaded from the state directory).
    pub fn observed(&self, name: &str, expires_at: i64) {
        self.with(name, |s| s.expires_at = Some(expires_at));
    }

    /// A failed attempt; `error` must carry no secret.
    pub fn failed(&self, name: &str, error: &str) {
        self.with(name, |s| {
            s.failures += 1;
            s.last_error = Some(error.to_string());
        });
    }

    /// Ready when every registered credential is unexpired; otherwise the reasons.
    pub fn readiness(&self, now: i64) -> Result<(), Vec<String>> {
        let m = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let problems: Vec<String> = m
            .iter()
            .filter_map(|(name, s)| match s.expires_at {
                Some(e) if e > now => None,
                Some(_) => Some(format!("{name}: expired ({})", s.last_error.as_deref().unwrap_or("not renewed"))),
                None => Some(format!("{name}: not issued yet ({})", s.last_error.as_deref().unwrap_or("pending"))),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, now: i64) -> String {
        let m = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::new();
        let families: [Family; 3] = [
            ("sigil_agent_renewals_total", "counter", "Successful issuances and renewals per credential.", |s, _| Some(s.renewals as i64)),
            ("sigil_agent_renewal_failures_total", "counter", "Failed issuance or renewal attempts per credential.", |s, _| Some(s.failures as i64)),
            ("sigil_agent_seconds_until_expiry", "gauge", "Seconds until the current credential expires (negative: expired).", |s, now| s.expires_at.map(|e| e - now)),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (cred, s) in &m {
                if let Some(v) = value(s, now) {
                    let _ = writeln!(out, "{name}{{credential=\"{}\"}} {v}", escape(cred));
                }
            }
        }
        let ready = i64::from(self.readiness_inner(&m, now));
        let _ = writeln!(out, "# HELP sigil_agent_ready 1 when every credential is issued and unexpired.\n# TYPE sigil_agent_ready gauge\nsigil_agent_ready {ready}");
        out
    }

    fn readiness_inner(&self, m: &BTreeMap<String, Stat>, now: i64) -> bool {
        m.values().all(|s| s.expires_at.is_some_and(|e| e > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_every_registered_credential_is_issued() {
        let m = Metrics::default();
        m.register(IDENTITY);
        m.register("x509-svid:/tmp/a");
        m.renewed(IDENTITY, 100);
        let why = m.readiness(50).unwrap_err();
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("x509-svid:/tmp/a"));
        m.renewed("x509-svid:/tmp/a", 100);
        assert!(m.readiness(50).is_ok());
        assert!(m.readiness(100).is_err(), "expired at 100");
    }

    #[test]
    fn render_has_counters_and_seconds_until_expiry() {
        let m = Metrics::default();
        m.renewed(IDENTITY, 1060);
        m.failed(IDENTITY, "broker unavailable");
        let text = m.render(1000);
        assert!(text.contains("sigil_agent_renewals_total{credential=\"identity\"} 1"), "{text}");
        assert!(text.contains("sigil_agent_renewal_failures_total{credential=\"identity\"} 1"));
        assert!(text.contains("sigil_agent_seconds_until_expiry{credential=\"identity\"} 60"));
        assert!(text.contains("sigil_agent_ready 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.renewed("jwt-svid:/tmp/a\"b", 10);
        assert!(m.render(0).contains("credential=\"jwt-svid:/tmp/a\\\"b\""));
    }
}
