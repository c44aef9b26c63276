//! `sigil agent --config agent.yaml [--oneshot]`.

use secrecy::SecretString;
use crate::agent::config::{AgentConfig};
use crate::agent::Agent;
use crate::ca::clock::SystemClock;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// Agent config file (YAML); see docs/agent.md.
    #[arg(long, short)]
    config: PathBuf,
    /// Join (or reuse the stored identity), write every output once, and exit:
    /// 0 on success, non-zero with the cause on any failure. For CI jobs.
    #[arg(long)]
    oneshot: bool,
    /// Only check the config file and exit.
    #[arg(long, conflicts_with = "oneshot")]
    check: bool,
}

pub(crate) async fn run(a: AgentArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.config).with_context(|| format!("cannot read agent config {}", a.config.display()))?;
    let cfg = AgentConfig::from_yaml(&text).with_context(|| a.config.display().to_string())?;
    if a.check {
        eprintln!("{}: valid agent config", a.config.display());
        return Ok(());
    }
    let env_token = std::env::var("SIGIL_TOKEN").ok().filter(|t| !t.is_empty()).map(SecretString::from);
    let agent = Agent::new(cfg, env_token, Arc::new(SystemClock))?;
    if a.oneshot {
        agent.oneshot().await?;
        eprintln!("agent: all outputs written");
        return Ok(());
    }
    Arc::new(agent).run(super::shutdown_signal()).await?;
    Ok(())
}
