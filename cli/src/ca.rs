//! `sigil ca status|rotate`: the CA keys, their phases, and rotation steps
//! (docs/ca-rotation.md).

use super::{when, Ctx, Output};
use anyhow::{anyhow, Result};
use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use sigil_schemas::sigil::v1 as pb;
use std::collections::BTreeMap;

#[derive(Debug, Subcommand)]
pub(crate) enum CaCmd {
    /// Show every CA key (state, lifetime, retire_safe_at) and each purpose's phase.
    Status {
        /// Print the status as JSON (same as --output json).
        #[arg(long)]
        json: bool,
    },
    /// Take one rotation step for one purpose.
    Rotate {
        /// Which key (every purpose of `sigil ca status`).
        #[arg(long, value_parser = purpose_names())]
        purpose: String,
        /// prepare: publish a new key; activate: sign with it; retire:
        /// unpublish the previous key; rollback: drop the prepared key.
        #[arg(long, value_enum)]
        phase: Phase,
        /// Retire before retire_safe_at (breaks credentials the old key signed).
        #[arg(long)]
        force: bool,
        /// Print the resulting status as JSON (same as --output json).
        #[arg(long)]
        json: bool,
    },
}

/// The purpose names the broker knows (`Purpose::ALL`), so a purpose added
/// there is accepted here too.
fn purpose_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(sigil_core::domain::ca_rotation::Purpose::ALL.map(|p| p.as_str()))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Phase {
    Prepare,
    Activate,
    Retire,
    Rollback,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Activate => "activate",
            Phase::Retire => "retire",
            Phase::Rollback => "rollback",
        }
    }
}

/// `CaStatus` as JSON (field names of the API message).
#[derive(Debug, Serialize)]
struct Shown {
    keys: Vec<Key>,
    phases: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Key {
    id: String,
    purpose: String,
    alg: String,
    state: String,
    created_at: i64,
    not_after: i64,
    activated_at: i64,
    deactivated_at: i64,
    retire_safe_at: i64,
    backend: String,
    fingerprint: String,
}

fn shown(s: pb::CaStatus) -> Shown {
    Shown {
        keys: s
            .keys
            .into_iter()
            .map(|k| Key {
                id: k.id,
                purpose: k.purpose,
                alg: k.alg,
                state: k.state,
                created_at: k.created_at,
                not_after: k.not_after,
                activated_at: k.activated_at,
                deactivated_at: k.deactivated_at,
                retire_safe_at: k.retire_safe_at,
                backend: k.backend,
                fingerprint: k.fingerprint,
            })
            .collect(),
        phases: s.phases.into_iter().collect(),
    }
}

fn print(s: pb::CaStatus, json: bool) -> Result<()> {
    let s = shown(s);
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    for (purpose, phase) in &s.phases {
        println!("{purpose}: {phase}");
        for k in s.keys.iter().filter(|k| &k.purpose == purpose && k.state != "retired") {
            let mut line = format!("  {:<9} {}  {} ({}), expires {}", k.state, k.id, k.alg, k.backend, when::rfc3339(k.not_after));
            if k.retire_safe_at > 0 {
                line += &format!(", safe to retire from {}", when::rfc3339(k.retire_safe_at));
            }
            println!("{line}");
        }
    }
    let retired = s.keys.iter().filter(|k| k.state == "retired").count();
    if retired > 0 {
        println!("({retired} retired keys not shown; --json lists them)");
    }
    Ok(())
}

/// Runs `sigil ca ...`.
pub(crate) async fn run(ctx: &Ctx, c: CaCmd) -> Result<()> {
    let mut cl = ctx.client().await?;
    match c {
        CaCmd::Status { json } => {
            let s = cl.get_ca_status(pb::GetCaStatusRequest {}).await.map_err(|s| anyhow!(s))?.into_inner();
            print(s, json || ctx.output == Output::Json)
        }
        CaCmd::Rotate { purpose, phase, force, json } => {
            let req = pb::RotateCaRequest { purpose, phase: phase.name().into(), force };
            let s = cl.rotate_ca(req).await.map_err(|s| anyhow!(s))?.into_inner();
            print(s, json || ctx.output == Output::Json)
        }
    }
}
