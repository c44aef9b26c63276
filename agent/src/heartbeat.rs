//! What the agent reports about itself to the broker after each join and
//! renewal (`Heartbeat`): host name, OS, version, outputs, last renewal. The
//! broker bounds every field; the agent cuts them to those bounds first so a
//! long output path never costs the whole report.

use sigil_schemas::sigil::v1 as pb;

/// Bounds the broker enforces (broker `service::instances`).
const MAX_HOST_NAME: usize = 253;
const MAX_OS: usize = 128;
const MAX_OUTPUTS: usize = 64;
const MAX_OUTPUT_NAME: usize = 512;

/// `s` without control characters, cut to at most `max` bytes on a character boundary.
fn bounded(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The machine's host name (Linux: the kernel's), empty when unknown.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The report: `outputs` are the outputs' names, `last_renewal` when the
/// current identity was obtained.
pub fn report(host: &str, outputs: impl IntoIterator<Item = String>, last_renewal: i64) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        host_name: bounded(host, MAX_HOST_NAME),
        os: bounded(&format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH), MAX_OS),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        outputs: outputs.into_iter().take(MAX_OUTPUTS).map(|o| bounded(&o, MAX_OUTPUT_NAME)).collect(),
        last_renewal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_to_the_brokers_bounds() {
        let r = report(&"é".repeat(200), (0..100).map(|i| format!("x509-svid:/{}{i}", "p".repeat(600))), 5);
        assert!(r.host_name.len() <= MAX_HOST_NAME && r.host_name.chars().all(|c| c == 'é'));
        assert_eq!(r.outputs.len(), MAX_OUTPUTS);
        assert!(r.outputs.iter().all(|o| o.len() <= MAX_OUTPUT_NAME));
        assert_eq!(bounded("a\nb\u{1b}c", 10), "abc");
        assert_eq!(r.last_renewal, 5);
        assert!(!r.agent_version.is_empty());
    }
}
