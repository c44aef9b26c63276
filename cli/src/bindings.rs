//! `sigil bot binding list|release`: outside identities (EC2 instances) bound
//! to the bot instance that joined with them. Releasing one lets that machine
//! join again (an agent whose state was wiped or whose identity expired)
//! without allowing rejoins for every machine of the join token.

use super::{resources, Ctx, Output};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use serde::Serialize;
use sigil_schemas::sigil::v1 as pb;

#[derive(Debug, Subcommand)]
pub(crate) enum BindingOp {
    /// List bindings (of one bot with --bot, of one join method with --method).
    List {
        /// Only this bot's bindings.
        #[arg(long, default_value = "")]
        bot: String,
        /// Only this join method's bindings (e.g. ec2).
        #[arg(long, default_value = "")]
        method: String,
    },
    /// Release one binding: the bound machine may join again. The bot
    /// instance it was bound to is left as it is (lock it or revoke its
    /// certificates if the machine may be compromised).
    Release {
        /// Join method of the binding (e.g. ec2).
        #[arg(long)]
        method: String,
        /// What is bound, as `list` prints it (ec2: ACCOUNT:INSTANCE_ID).
        #[arg(long)]
        subject: String,
    },
}

/// A binding as printed.
#[derive(Debug, Serialize)]
struct Shown {
    method: String,
    subject: String,
    bot: String,
    bot_instance: String,
    bound_at: i64,
}

fn shown(b: pb::InstanceBinding) -> Shown {
    Shown { method: b.method, subject: b.subject, bot: b.bot, bot_instance: b.bot_instance, bound_at: b.bound_at }
}

/// Runs `sigil bot binding ...`.
pub(crate) async fn run(ctx: &Ctx, op: BindingOp) -> Result<()> {
    let mut cl = ctx.client().await?;
    match op {
        BindingOp::List { bot, method } => {
            let mut all = Vec::new();
            let mut after = String::new();
            loop {
                let req = pb::ListInstanceBindingsRequest { limit: 0, after: after.clone(), bot: bot.clone(), method: method.clone() };
                let page = cl.list_instance_bindings(req).await.map_err(|s| anyhow!(s))?.into_inner().items;
                let Some(last) = page.last() else { break };
                after = format!("{}:{}", last.method, last.subject);
                all.extend(page.into_iter().map(shown));
            }
            match ctx.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Output::Text => {
                    for b in &all {
                        println!("{}\t{}\tbot {}\tbot instance {}\tbound at {}", b.method, b.subject, b.bot, b.bot_instance, b.bound_at);
                    }
                }
            }
            Ok(())
        }
        BindingOp::Release { method, subject } => {
            let req = pb::ReleaseInstanceBindingRequest { method, subject };
            let r = cl.release_instance_binding(req).await.map_err(|s| anyhow!(s))?.into_inner();
            let b = r.released.ok_or_else(|| anyhow!("the broker answered without the released binding"))?;
            resources::print(ctx, &shown(b))
        }
    }
}
