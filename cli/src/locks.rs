//! `sigil lock create|list|get|delete`: stop a bot, one bot instance, a join
//! token or a SPIFFE ID pattern at once (docs/locks.md).

use super::{resources, Ctx, Output};
use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;
use sigil_schemas::sigil::v1 as pb;

#[derive(Debug, Args)]
pub(crate) struct LockCmd {
    #[command(subcommand)]
    cmd: LockOp,
}

#[derive(Debug, Subcommand)]
enum LockOp {
    /// Lock one target: its joins, renewals, issuance and every other request
    /// are refused on every broker replica from the next request on.
    Create(CreateArgs),
    /// List the locks (expired ones too, marked).
    List {
        /// Print JSON (same as --output json).
        #[arg(long)]
        json: bool,
    },
    /// Show one lock.
    Get { name: String },
    /// Delete a lock (unlock): what it stopped works again from the next request.
    Delete { name: String },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["bot", "instance", "token", "spiffe_id"])))]
#[command(group(ArgGroup::new("expiry").args(["expires_in", "expires_at"])))]
pub(crate) struct CreateArgs {
    /// Lock every instance of this bot, and joins as it.
    #[arg(long)]
    bot: Option<String>,
    /// Lock one bot instance (id from `sigil bot instance list`).
    #[arg(long)]
    instance: Option<String>,
    /// Lock joins with this join token (by name).
    #[arg(long)]
    token: Option<String>,
    /// Lock issuance of SVIDs whose SPIFFE ID path matches this pattern
    /// (/svc/web, /svc/*, /ci/**).
    #[arg(long = "spiffe-id", value_name = "PATTERN")]
    spiffe_id: Option<String>,
    /// Why (for operators: audit log and `sigil lock list`; never told to the locked caller).
    #[arg(long, default_value = "")]
    reason: String,
    /// Lift the lock after this long, e.g. 30m, 12h (default: until deleted).
    #[arg(long)]
    expires_in: Option<humantime::Duration>,
    /// Lift the lock at this time: RFC 3339 (2026-12-31T18:00:00Z) or Unix seconds.
    #[arg(long)]
    expires_at: Option<String>,
    /// Lock name (default: random).
    #[arg(long)]
    name: Option<String>,
    /// With --instance: also revoke every unexpired X.509-SVID and bot
    /// identity issued to the instance (as `sigil svid revoke --instance`),
    /// so relying parties that check CRLs refuse them too.
    #[arg(long)]
    revoke: bool,
    /// RFC 5280 reason for --revoke (default unspecified), e.g. keyCompromise.
    #[arg(long, default_value = "")]
    revoke_reason: String,
}

/// A lock as printed.
#[derive(Debug, Serialize)]
struct Shown {
    name: String,
    target: std::collections::BTreeMap<&'static str, String>,
    reason: String,
    expires_at: i64,
    expired: bool,
    created_by: String,
    created_at: i64,
    revision: i64,
}

fn shown(l: pb::Lock, now: i64) -> Shown {
    let t = l.target.unwrap_or_default();
    let target = [("bot", t.bot), ("bot_instance", t.bot_instance), ("join_token", t.join_token), ("spiffe_id", t.spiffe_id)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    Shown {
        name: l.name,
        target,
        reason: l.reason,
        expired: l.expires_at != 0 && l.expires_at <= now,
        expires_at: l.expires_at,
        created_by: l.created_by,
        created_at: l.created_at,
        revision: l.revision,
    }
}

fn now() -> Result<i64> {
    Ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64)
}

/// `--expires-at`: Unix seconds or RFC 3339.
fn parse_time(s: &str) -> Result<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--expires-at {s:?}: give RFC 3339 (2026-12-31T18:00:00Z) or Unix seconds"))?;
    Ok(t.unix_timestamp())
}

fn request(a: &CreateArgs, now: i64) -> Result<pb::Lock> {
    let expires_at = match (&a.expires_in, &a.expires_at) {
        (Some(d), _) => now + i64::try_from(d.as_secs()).context("--expires-in is too long")?,
        (None, Some(t)) => parse_time(t)?,
        (None, None) => 0,
    };
    let name = match &a.name {
        Some(n) => n.clone(),
        None => format!("lock-{}", &sigil_broker::ca::random_id()?[..12]),
    };
    let target = pb::LockTarget {
        bot: a.bot.clone().unwrap_or_default(),
        bot_instance: a.instance.clone().unwrap_or_default(),
        join_token: a.token.clone().unwrap_or_default(),
        spiffe_id: a.spiffe_id.clone().unwrap_or_default(),
    };
    if [&target.bot, &target.bot_instance, &target.join_token, &target.spiffe_id].iter().all(|v| v.is_empty()) {
        bail!("name what to lock: --bot, --instance, --token or --spiffe-id (not empty)");
    }
    Ok(pb::Lock { name, target: Some(target), reason: a.reason.clone(), expires_at, ..Default::default() })
}

/// Runs `sigil lock ...`.
pub(crate) async fn run(ctx: &Ctx, c: LockCmd) -> Result<()> {
    let mut cl = ctx.client().await?;
    let now = now()?;
    match c.cmd {
        LockOp::Create(a) => {
            if a.revoke && a.instance.is_none() {
                bail!("--revoke needs --instance: only what one bot instance holds is revoked");
            }
            let created = cl.create_lock(request(&a, now)?).await.map_err(|s| anyhow!(s))?.into_inner();
            let s = shown(created, now);
            // The lock stands whatever happens to the revocation: say so if it fails.
            let revoked = match (&a.instance, a.revoke) {
                (Some(instance), true) => {
                    let r = pb::RevokeSvidsRequest { bot_instance: instance.clone(), reason: a.revoke_reason.clone(), ..Default::default() };
                    let r = cl.revoke_svids(r).await.map_err(|e| anyhow!("lock {} created, but revoking what instance {instance} holds failed: {e}", s.name))?;
                    Some(r.into_inner().serials)
                }
                _ => None,
            };
            match ctx.output {
                Output::Json => {
                    let mut v = serde_json::to_value(&s)?;
                    if let Some(r) = &revoked {
                        v["revoked"] = serde_json::json!(r);
                    }
                    println!("{}", serde_json::to_string_pretty(&v)?)
                }
                Output::Text => {
                    eprintln!("lock {} created on {}", s.name, target_text(&s));
                    for serial in revoked.iter().flatten() {
                        eprintln!("revoked {serial}");
                    }
                }
            }
            Ok(())
        }
        LockOp::Get { name } => {
            let l = cl.get_lock(pb::GetRequest { name }).await.map_err(|s| anyhow!(s))?.into_inner();
            resources::print(ctx, &shown(l, now))
        }
        LockOp::List { json } => {
            let mut all = Vec::new();
            let mut after = String::new();
            loop {
                let page = cl.list_locks(pb::ListRequest { limit: 0, after: after.clone() }).await.map_err(|s| anyhow!(s))?.into_inner().items;
                let Some(last) = page.last() else { break };
                after = last.name.clone();
                all.extend(page.into_iter().map(|l| shown(l, now)));
            }
            if json || ctx.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            for l in &all {
                let until = match (l.expires_at, l.expired) {
                    (0, _) => "until deleted".to_string(),
                    (t, true) => format!("expired {}", super::when::rfc3339(t)),
                    (t, false) => format!("until {}", super::when::rfc3339(t)),
                };
                println!("{}\t{}\t{until}\tby {}\t{}", l.name, target_text(l), l.created_by, l.reason);
            }
            Ok(())
        }
        LockOp::Delete { name } => {
            cl.delete_lock(pb::DeleteRequest { name: name.clone(), revision: 0 }).await.map_err(|s| anyhow!(s))?;
            eprintln!("deleted lock {name}");
            Ok(())
        }
    }
}

fn target_text(l: &Shown) -> String {
    l.target.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_rfc3339_or_unix_seconds() {
        assert_eq!(parse_time("1796166971").unwrap(), 1_796_166_971);
        assert_eq!(parse_time("2026-12-01T23:16:11Z").unwrap(), 1_796_166_971);
        assert!(parse_time("tomorrow").unwrap_err().to_string().contains("RFC 3339"));
    }
}
