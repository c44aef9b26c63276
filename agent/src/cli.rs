//! `sigil agent --config agent.yaml [--oneshot]`.

use crate::config::AgentConfig;
use secrecy::SecretString;
use crate::Agent;
use sigil_core::clock::SystemClock;
use anyhow::{Context, Result};
use clap::{Args, Parser, ValueEnum};
use sigil_core::logging;
use std::process::ExitCode;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct AgentArgs {
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

pub async fn run(a: AgentArgs) -> Result<()> {
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
    Arc::new(agent).run(shutdown_signal()).await?;
    Ok(())
}

/// Formats a gRPC status for humans: the broker's message says what to fix.
pub fn describe_status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Resolves on Ctrl-C or SIGTERM: the graceful-shutdown trigger of long-running commands.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// `sigil-agent`: the same agent as `sigil agent`, same arguments, in a binary
/// that links only the agent (the broker server, store and CLI commands stay out).
#[derive(Debug, Parser)]
#[command(name = "sigil-agent", version, about = "Sigil agent: join, renew, write outputs, serve the SPIFFE Workload API.")]
struct AgentCli {
    #[command(flatten)]
    args: AgentArgs,
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(flatten)]
    _client: AgentIgnoredArgs,
}

/// The global options of `sigil`, which `sigil agent` accepts and ignores (its
/// config file names the broker): accepted here too, so any `sigil agent ARGS`
/// runs unchanged as `sigil-agent ARGS`. Hidden from the help.
#[derive(Debug, clap::Args)]
#[allow(dead_code)]
struct AgentIgnoredArgs {
    #[arg(long, hide = true)]
    addr: Option<String>,
    #[arg(long, hide = true)]
    identity: Option<PathBuf>,
    #[arg(long, hide = true, value_enum)]
    output: Option<IgnoredOutput>,
    /// The agent's own are `broker_timeouts` in its config.
    #[arg(long, hide = true, value_parser = sigil_schemas::client::parse_timeout)]
    connect_timeout: Option<std::time::Duration>,
    #[arg(long, hide = true, value_parser = sigil_schemas::client::parse_timeout)]
    call_timeout: Option<std::time::Duration>,
}

/// The `sigil-agent` binary's clap definition, for `sigil completion --program
/// sigil-agent` and `sigil man --program sigil-agent` (generated outside this binary).
pub fn command() -> clap::Command {
    <AgentCli as clap::CommandFactory>::command()
}

/// Entry point of the `sigil-agent` binary: `sigil-agent ARGS` runs `sigil agent ARGS`.
pub fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = AgentCli::parse();
    execute(cli.log.log_format, run(cli.args))
}

/// `--output` values of `sigil`, accepted and ignored by `sigil-agent`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum IgnoredOutput {
    Text,
    Json,
}

/// Starts tracing and a runtime, runs `cmd`, prints its error for humans.
pub fn execute(log_format: logging::LogFormat, cmd: impl std::future::Future<Output = Result<()>>) -> ExitCode {
    logging::init(log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(s) = e.downcast_ref::<tonic::Status>() {
                eprintln!("error: {}", describe_status(s));
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

