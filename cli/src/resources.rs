//! `sigil role|bot|token|workload-identity|apply|audit`.

use super::{Ctx, Output};
use sigil_core::domain::{Bot, JoinToken, Role, WorkloadIdentity};
use sigil_broker::server::convert;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use sigil_schemas::sigil::v1 as pb;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(crate) struct ResourceCmd {
    #[command(subcommand)]
    cmd: ResourceOp,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ResourceOp {
    /// Show one.
    Get { name: String },
    /// List all.
    List,
    /// Delete one.
    Delete {
        name: String,
        /// Only if still at this revision.
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Create or update from a YAML file.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TokenCmd {
    #[command(subcommand)]
    cmd: TokenOp,
}

#[derive(Debug, Subcommand)]
enum TokenOp {
    /// Create a join token and print its secret (shown only once).
    Create {
        /// Bot that joins with it.
        #[arg(long)]
        bot: String,
        /// Token name (default: random).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Number of joins allowed.
        #[arg(long, default_value_t = 1)]
        uses: i64,
    },
    /// Show one.
    Get { name: String },
    /// List all.
    List,
    /// Delete one.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// YAML file with one or more documents, each with `kind: role|bot|join_token|workload_identity`.
    #[arg(short, long)]
    file: PathBuf,
    /// Check every document (validation, permissions, references) and write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Events after this id.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many (fetched in pages of up to 1000 events / 1 MiB).
    #[arg(long, default_value_t = 100)]
    limit: i32,
}

impl From<ResourceOp> for ResourceCmd {
    fn from(cmd: ResourceOp) -> Self {
        Self { cmd }
    }
}

pub(crate) fn print<T: Serialize>(ctx: &Ctx, v: &T) -> Result<()> {
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Text => print!("{}", serde_norway::to_string(v)?),
    }
    Ok(())
}

fn print_names(ctx: &Ctx, names: Vec<(String, i64)>, json: serde_json::Value) -> Result<()> {
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&json)?),
        Output::Text => {
            for (n, r) in names {
                println!("{n}\trevision {r}");
            }
        }
    }
    Ok(())
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!(s)
}

fn one_doc<T: serde::de::DeserializeOwned>(path: &PathBuf, kind: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: serde_norway::Value = serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    if let Some(m) = v.as_mapping_mut() {
        if let Some(k) = m.remove("kind") {
            if k.as_str() != Some(kind) {
                bail!("{}: kind is {:?}, expected {kind}", path.display(), k.as_str().unwrap_or_default());
            }
        }
    }
    serde_norway::from_value(v).with_context(|| format!("{}: invalid {kind}", path.display()))
}

macro_rules! crud {
    ($fn:ident, $t:ty, $kind:literal, $create:ident, $get:ident, $list:ident, $update:ident, $delete:ident, $in:path, $out:path) => {
        pub(crate) async fn $fn(ctx: &Ctx, c: ResourceCmd) -> Result<()> {
            let mut cl = ctx.client().await?;
            match c.cmd {
                ResourceOp::Get { name } => {
                    let r = cl.$get(pb::GetRequest { name }).await.map_err(status)?.into_inner();
                    print(ctx, &$in(r).map_err(|e| anyhow!("{e}"))?)
                }
                ResourceOp::List => {
                    let items = cl.$list(pb::ListRequest::default()).await.map_err(status)?.into_inner().items;
                    let doms: Vec<$t> = items.into_iter().map($in).collect::<Result<_, _>>().map_err(|e| anyhow!("{e}"))?;
                    let names = doms.iter().map(|d| (d.name.to_string(), d.revision)).collect();
                    print_names(ctx, names, serde_json::to_value(&doms)?)
                }
                ResourceOp::Delete { name, revision } => {
                    cl.$delete(pb::DeleteRequest { name: name.clone(), revision }).await.map_err(status)?;
                    eprintln!("deleted {} {name}", $kind);
                    Ok(())
                }
                ResourceOp::Apply { file } => {
                    let d: $t = one_doc(&file, $kind)?;
                    apply_docs(ctx, &mut cl, &file, vec![(0, Doc::from(d))], false).await
                }
            }
        }
    };
}

crud!(run_role, Role, "role", create_role, get_role, list_roles, update_role, delete_role, convert::role_in, convert::role_out);
crud!(run_bot, Bot, "bot", create_bot, get_bot, list_bots, update_bot, delete_bot, convert::bot_in, convert::bot_out);
crud!(run_wi, WorkloadIdentity, "workload_identity", create_workload_identity, get_workload_identity, list_workload_identities, update_workload_identity, delete_workload_identity, convert::wi_in, convert::wi_out);

/// One document of an apply file.
enum Doc {
    Role(Role),
    Bot(Bot),
    Token(JoinToken),
    Wi(WorkloadIdentity),
}

impl From<Role> for Doc {
    fn from(r: Role) -> Self {
        Doc::Role(r)
    }
}
impl From<Bot> for Doc {
    fn from(b: Bot) -> Self {
        Doc::Bot(b)
    }
}
impl From<WorkloadIdentity> for Doc {
    fn from(w: WorkloadIdentity) -> Self {
        Doc::Wi(w)
    }
}

impl Doc {
    fn kind(&self) -> &'static str {
        match self {
            Doc::Role(_) => "role",
            Doc::Bot(_) => "bot",
            Doc::Token(_) => "join_token",
            Doc::Wi(_) => "workload_identity",
        }
    }

    fn name(&self) -> String {
        match self {
            Doc::Role(r) => r.name.to_string(),
            Doc::Bot(b) => b.name.to_string(),
            Doc::Token(t) => t.name.to_string(),
            Doc::Wi(w) => w.name.to_string(),
        }
    }

    fn into_wire(self) -> pb::ApplyDocument {
        use pb::apply_document::Kind as K;
        let kind = match self {
            Doc::Role(r) => K::Role(convert::role_out(r)),
            Doc::Bot(b) => K::Bot(convert::bot_out(b)),
            Doc::Token(t) => K::JoinToken(convert::token_out(t, None)),
            Doc::Wi(w) => K::WorkloadIdentity(convert::wi_out(w)),
        };
        pb::ApplyDocument { kind: Some(kind) }
    }
}

type Client = sigil_schemas::sigil::v1::sigil_client::SigilClient<tonic::transport::Channel>;

/// Sends every document in one `Apply` (all or nothing) and reports each
/// result on stderr; the secret of a join token it created goes to stdout.
/// `docs` carry their index in the file, for errors.
async fn apply_docs(ctx: &Ctx, cl: &mut Client, file: &std::path::Path, docs: Vec<(usize, Doc)>, dry_run: bool) -> Result<()> {
    let described: Vec<(usize, &'static str, String)> = docs.iter().map(|(i, d)| (*i, d.kind(), d.name())).collect();
    let req = pb::ApplyRequest { documents: docs.into_iter().map(|(_, d)| d.into_wire()).collect(), dry_run };
    let results = match cl.apply(req).await {
        Ok(r) => r.into_inner().results,
        Err(s) => {
            // `documents[k]` is the k-th document sent: name it as the file does.
            let which = s
                .message()
                .split_once("documents[")
                .and_then(|(_, rest)| rest.split_once(']'))
                .and_then(|(k, _)| k.parse::<usize>().ok())
                .and_then(|k| described.get(k));
            let max = sigil_broker::server::grpc::MAX_REQUEST_BYTES;
            let what = match which {
                Some((i, kind, name)) => format!("{}: document {i} ({kind} {name:?}) refused; nothing was applied", file.display()),
                None if s.code() == tonic::Code::OutOfRange => {
                    format!("{}: larger than the broker takes in one apply ({max} bytes encoded): split the file; nothing was applied", file.display())
                }
                None => format!("{}: nothing was applied", file.display()),
            };
            // Not a wrapped Status: the CLI would print the status alone.
            return Err(anyhow!("{what}: {:?}: {}", s.code(), s.message()));
        }
    };
    let outcome = |o: i32| match pb::ApplyOutcome::try_from(o) {
        Ok(pb::ApplyOutcome::Created) => "created",
        Ok(pb::ApplyOutcome::Updated) => "updated",
        Ok(pb::ApplyOutcome::Unchanged) => "unchanged",
        _ => "applied",
    };
    if let Output::Json = ctx.output {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({"kind": r.kind, "name": r.name, "outcome": outcome(r.outcome), "revision": r.revision});
                if !r.secret.is_empty() {
                    v["secret"] = r.secret.clone().into();
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let would = if dry_run { " (dry run: would be)" } else { "" };
    for r in &results {
        let o = outcome(r.outcome);
        if r.kind == "join_token" && r.outcome == pb::ApplyOutcome::Created as i32 && !dry_run {
            // Only `token` (and a bound-keypair token without a key) has a secret.
            if r.secret.is_empty() {
                eprintln!("join_token {} created (method {}: no secret)", r.name, r.method);
            } else {
                eprintln!("join_token {} created; secret:", r.name);
                println!("{}", r.secret);
            }
        } else if r.kind == "join_token" && r.outcome == pb::ApplyOutcome::Updated as i32 && !dry_run {
            eprintln!("join_token {} updated (its secret is unchanged)", r.name);
        } else {
            eprintln!("{} {}{would} {o}", r.kind, r.name);
        }
    }
    Ok(())
}

pub(crate) async fn apply(ctx: &Ctx, a: ApplyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    // Parse everything first: a bad document changes nothing.
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let mut v = serde_norway::Value::deserialize(de).with_context(|| format!("document {i}: not YAML"))?;
        if v.is_null() {
            continue;
        }
        let kind = v
            .as_mapping_mut()
            .and_then(|m| m.remove("kind"))
            .and_then(|k| k.as_str().map(str::to_string))
            .ok_or_else(|| anyhow!("document {i}: missing `kind:` (role, bot, join_token, workload_identity)"))?;
        let ctx_err = || format!("document {i} ({kind})");
        docs.push((i, match kind.as_str() {
            "role" => Doc::Role(serde_norway::from_value(v).with_context(ctx_err)?),
            "bot" => Doc::Bot(serde_norway::from_value(v).with_context(ctx_err)?),
            "join_token" => Doc::Token(serde_norway::from_value(v).with_context(ctx_err)?),
            "workload_identity" => Doc::Wi(serde_norway::from_value(v).with_context(ctx_err)?),
            other => bail!("document {i}: unknown kind {other:?} (role, bot, join_token, workload_identity)"),
        }));
    }
    if docs.is_empty() {
        bail!("{}: no documents", a.file.display());
    }
    let mut cl = ctx.client().await?;
    apply_docs(ctx, &mut cl, &a.file, docs, a.dry_run).await
}

use serde::Deserialize as _;

pub(crate) async fn run_token(ctx: &Ctx, c: TokenCmd) -> Result<()> {
    let mut cl = ctx.client().await?;
    match c.cmd {
        TokenOp::Create { bot, name, ttl, uses } => {
            let name = match name {
                Some(n) => n,
                None => format!("tok-{}", &sigil_broker::ca::random_id()?[..12]),
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
            let t = pb::JoinToken {
                name,
                bot,
                method: "token".into(),
                expires_at: now + ttl.as_secs() as i64,
                max_uses: uses,
                ..Default::default()
            };
            let created = cl.create_join_token(t).await.map_err(status)?.into_inner();
            match ctx.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"name": created.name, "secret": created.secret, "bot": created.bot, "expires_at": created.expires_at})
                ),
                Output::Text => {
                    eprintln!("join token {} for bot {} (expires at {}); secret:", created.name, created.bot, super::when::rfc3339(created.expires_at));
                    println!("{}", created.secret);
                }
            }
            Ok(())
        }
        TokenOp::Get { name } => {
            let t = cl.get_join_token(pb::GetRequest { name }).await.map_err(status)?.into_inner();
            let mut d = convert::token_in(t.clone()).map_err(|e| anyhow!("{e}"))?;
            d.uses = t.uses;
            match ctx.output {
                Output::Json => print(ctx, &d),
                Output::Text => print_token_text(&d),
            }
        }
        TokenOp::List => {
            let items = cl.list_join_tokens(pb::ListRequest::default()).await.map_err(status)?.into_inner().items;
            let mut doms = Vec::new();
            for t in items {
                let mut d = convert::token_in(t.clone()).map_err(|e| anyhow!("{e}"))?;
                d.uses = t.uses;
                doms.push(d);
            }
            let names = doms.iter().map(|d| (d.name.to_string(), d.revision)).collect();
            print_names(ctx, names, serde_json::to_value(&doms)?)
        }
        TokenOp::Delete { name } => {
            cl.delete_join_token(pb::DeleteRequest { name: name.clone(), revision: 0 }).await.map_err(status)?;
            eprintln!("deleted join_token {name}");
            Ok(())
        }
    }
}

/// A join token as YAML for a reader: `expires_at` as RFC 3339 (JSON keeps
/// the Unix seconds that apply files use).
fn print_token_text(t: &JoinToken) -> Result<()> {
    let mut v = serde_norway::to_value(t)?;
    if let Some(m) = v.as_mapping_mut() {
        m.insert("expires_at".into(), super::when::rfc3339(t.expires_at).into());
    }
    print!("{}", serde_norway::to_string(&v)?);
    Ok(())
}

pub(crate) async fn audit(ctx: &Ctx, a: AuditArgs) -> Result<()> {
    let mut cl = ctx.client().await?;
    // The broker answers at most 1000 events and 1 MiB per call: ask again
    // after the last id until `limit` events came or none are left.
    let wanted = usize::try_from(a.limit).unwrap_or(0);
    let mut items = Vec::new();
    let mut after = a.after;
    while items.len() < wanted {
        let ask = i32::try_from(wanted - items.len()).unwrap_or(i32::MAX);
        let page = cl
            .list_audit_events(pb::ListAuditEventsRequest { limit: ask, after_id: after })
            .await
            .map_err(status)?
            .into_inner()
            .items;
        let Some(last) = page.last() else { break };
        after = last.id;
        items.extend(page);
    }
    items.truncate(wanted);
    let rows: Vec<serde_json::Value> = items
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id, "time": e.time, "kind": e.kind, "actor": e.actor, "resource": e.resource,
                "outcome": e.outcome, "detail": serde_json::from_str::<serde_json::Value>(&e.detail_json).unwrap_or_default(),
            })
        })
        .collect();
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            for mut r in rows {
                if let Some(t) = r.get("time").and_then(serde_json::Value::as_i64) {
                    r["time"] = super::when::rfc3339(t).into();
                }
                println!("{r}");
            }
        }
    }
    Ok(())
}
