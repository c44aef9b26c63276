//! `sigil bot instance list|get`: the joined agents of bots and their heartbeats.

use super::{resources, Ctx, Output};
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use sigil_schemas::sigil::v1 as pb;

/// `sigil bot ...`: the resource commands plus `instance`.
#[derive(Debug, Args)]
pub(crate) struct BotCmd {
    #[command(subcommand)]
    cmd: BotOp,
}

#[derive(Debug, Subcommand)]
enum BotOp {
    #[command(flatten)]
    Resource(resources::ResourceOp),
    /// Bot instances: one per successful join.
    #[command(subcommand)]
    Instance(InstanceOp),
    /// Machines (EC2 instances) bound to the bot instance that joined from them.
    #[command(subcommand)]
    Binding(super::bindings::BindingOp),
}

#[derive(Debug, Subcommand)]
enum InstanceOp {
    /// List the instances not expired (of one bot with --bot).
    List {
        /// Only this bot's instances.
        #[arg(long, default_value = "")]
        bot: String,
    },
    /// Show one instance.
    Get { id: String },
}

/// An instance as printed.
#[derive(Debug, Serialize)]
struct Shown {
    id: String,
    bot: String,
    join_method: String,
    join_attributes: std::collections::BTreeMap<String, String>,
    first_seen: i64,
    last_seen: i64,
    expires_at: i64,
    generation: i64,
    locked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat: Option<Heartbeat>,
}

#[derive(Debug, Serialize)]
struct Heartbeat {
    received_at: i64,
    host_name: String,
    os: String,
    agent_version: String,
    outputs: Vec<String>,
    last_renewal: i64,
}

fn shown(i: pb::BotInstance) -> Shown {
    let join_attributes: std::collections::BTreeMap<String, String> = i.join_attributes.into_iter().collect();
    Shown {
        join_method: join_attributes.get("join.method").cloned().unwrap_or_default(),
        id: i.id,
        bot: i.bot,
        join_attributes,
        first_seen: i.first_seen,
        last_seen: i.last_seen,
        expires_at: i.expires_at,
        generation: i.generation,
        locked: i.locked,
        heartbeat: i.heartbeat.map(|h| Heartbeat {
            received_at: i.heartbeat_at,
            host_name: h.host_name,
            os: h.os,
            agent_version: h.agent_version,
            outputs: h.outputs,
            last_renewal: h.last_renewal,
        }),
    }
}

/// Runs `sigil bot ...`.
pub(crate) async fn run_bot(ctx: &Ctx, c: BotCmd) -> Result<()> {
    match c.cmd {
        BotOp::Resource(op) => resources::run_bot(ctx, resources::ResourceCmd::from(op)).await,
        BotOp::Instance(op) => run_instance(ctx, op).await,
        BotOp::Binding(op) => super::bindings::run(ctx, op).await,
    }
}

async fn run_instance(ctx: &Ctx, op: InstanceOp) -> Result<()> {
    let mut cl = ctx.client().await?;
    match op {
        InstanceOp::Get { id } => {
            let i = cl.get_bot_instance(pb::GetBotInstanceRequest { id }).await.map_err(|s| anyhow!(s))?.into_inner();
            resources::print(ctx, &shown(i))
        }
        InstanceOp::List { bot } => {
            let mut all = Vec::new();
            let mut after = String::new();
            loop {
                let req = pb::ListBotInstancesRequest { limit: 0, after: after.clone(), bot: bot.clone() };
                let page = cl.list_bot_instances(req).await.map_err(|s| anyhow!(s))?.into_inner().items;
                let Some(last) = page.last() else { break };
                after = last.id.clone();
                all.extend(page.into_iter().map(shown));
            }
            match ctx.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Output::Text => {
                    for i in &all {
                        let host = i.heartbeat.as_ref().map(|h| h.host_name.as_str()).unwrap_or("-");
                        println!("{}\tbot {}\tmethod {}\thost {host}\tlast seen {}", i.id, i.bot, i.join_method, i.last_seen);
                    }
                }
            }
            Ok(())
        }
    }
}
