//! The `sigil` command line. The only place that prints for humans.

mod app;
mod aws;
mod bindings;
mod ca;
mod db;
mod federation;
mod generate;
mod identity_source;
mod instances;
mod join_cloud;
mod join_methods;
mod kube;
mod locks;
mod resources;
mod server;
mod ssh;
mod store;
mod svid;
mod when;

use anyhow::{Context, Result};
use sigil_agent::cli::{self as agent, execute, shutdown_signal};
use sigil_core::logging;
use clap::{Parser, Subcommand, ValueEnum};
use sigil_schemas::client::Timeouts;
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::ffi::OsString;
use std::process::ExitCode;
use tonic::transport::Channel;

/// Sigil: short-lived SPIFFE identities for machines and workloads.
#[derive(Debug, Parser)]
#[command(name = "sigil", version, about)]
pub struct Cli {
    /// Broker address (HOST:PORT), or several separated by commas (a:8443,b:8443):
    /// tried in order when a connection cannot be set up, never after a broker's answer.
    #[arg(long, global = true, env = "SIGIL_ADDR")]
    addr: Option<String>,
    /// Identity to authenticate with: the path of an identity file (certificate,
    /// key, CA), or its content. Never shown (help, errors).
    #[arg(long, global = true, env = "SIGIL_IDENTITY", hide_env_values = true, value_name = "FILE_OR_PEM")]
    identity: Option<OsString>,
    /// Output format of read commands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Time allowed per broker address for TCP connect, TLS and HTTP/2 set-up
    /// together (500ms, 5s, 2m); the next address is tried after it.
    #[arg(long, global = true, env = "SIGIL_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    connect_timeout: std::time::Duration,
    /// Time allowed for each call once connected, request to whole answer.
    #[arg(long, global = true, env = "SIGIL_CALL_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    call_timeout: std::time::Duration,
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable (YAML for single resources).
    Text,
    /// JSON.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Server(server::ServerArgs),
    /// Run the agent: join, renew, write outputs, serve the SPIFFE Workload API.
    Agent(agent::AgentArgs),
    /// Manage roles.
    Role(resources::ResourceCmd),
    /// Manage bots and list their instances.
    Bot(instances::BotCmd),
    /// Manage join tokens.
    Token(resources::TokenCmd),
    /// Lock a bot, a bot instance, a join token or a SPIFFE ID pattern (and unlock).
    Lock(locks::LockCmd),
    /// CA keys: status and rotation (prepare, activate, retire, rollback).
    #[command(subcommand)]
    Ca(ca::CaCmd),
    /// Manage workload identities.
    #[command(name = "workload-identity")]
    WorkloadIdentity(resources::ResourceCmd),
    /// Create or update every resource in a YAML file (documents with `kind:`).
    Apply(resources::ApplyArgs),
    /// Issue SVIDs by hand.
    #[command(subcommand)]
    Svid(svid::SvidCmd),
    /// Join with a token and write an identity file.
    Join(svid::JoinArgs),
    /// Print the trust bundle.
    Bundle(svid::BundleArgs),
    /// Show audit events.
    Audit(resources::AuditArgs),
    /// Show who the identity file authenticates as.
    Whoami,
    /// Back up, restore or check the embedded SQLite store; migrate it to PostgreSQL.
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Cloud federation: setup, verify, and the files/exchanges for AWS, Azure, GCP.
    #[command(subcommand)]
    Federation(federation::FederationCmd),
    /// AWS IAM Roles Anywhere with an X.509-SVID (credential_process).
    #[command(subcommand)]
    Aws(aws::AwsCmd),
    /// mTLS certificates for HTTP/TCP applications (the agent's `application` output, once).
    #[command(subcommand)]
    App(app::AppCmd),
    /// Database certificates: a client certificate with psql / mysql config files, a server certificate.
    #[command(subcommand)]
    Db(db::DbCmd),
    /// Kubernetes client certificates and kubeconfigs (the agent's `kubernetes`
    /// output once), and the kubeconfig's exec credential plugin.
    #[command(subcommand)]
    Kube(kube::KubeCmd),
    /// OpenSSH certificates: a user certificate with ssh_config / known_hosts, a host certificate with sshd lines.
    #[command(subcommand)]
    Ssh(ssh::SshCmd),
    /// Print a shell completion script (bash, zsh, fish) generated from this CLI.
    Completion(generate::CompletionArgs),
    /// Write man pages generated from this CLI (sigil.1, one per subcommand).
    Man(generate::ManArgs),
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    sigil_schemas::client::parse_timeout(text)
}

/// Client connection details shared by commands.
pub(crate) struct Ctx {
    addr: Option<String>,
    identity: Option<OsString>,
    output: Output,
    timeouts: Timeouts,
}

impl Ctx {
    fn addr(&self) -> Result<&str> {
        self.addr.as_deref().context("no broker address: pass --addr HOST:PORT or set SIGIL_ADDR")
    }

    pub(crate) fn load_identity(&self) -> Result<Identity> {
        let value = self.identity.as_ref().context("no identity: pass --identity FILE or set SIGIL_IDENTITY (a path or the identity's content)")?;
        Ok(identity_source::load(value)?)
    }

    pub(crate) async fn client(&self) -> Result<SigilClient<Channel>> {
        let id = self.load_identity()?;
        Ok(sigil_schemas::client::connect_with_identity_timeouts(self.addr()?, &id, self.timeouts).await?)
    }

    /// An unauthenticated client (joins), trusting `ca_pem`.
    pub(crate) async fn anonymous_client(&self, addr: &str, ca_pem: &str) -> Result<SigilClient<Channel>> {
        Ok(sigil_schemas::client::connect_with_timeouts(addr, ca_pem, None, self.timeouts).await?)
    }

    /// A call that got no answer within the call timeout says which broker
    /// and which setting (tonic itself says only "Timeout expired").
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let timed_out = e.chain().any(|c| {
            c.downcast_ref::<tonic::Status>().is_some_and(sigil_schemas::client::is_call_timeout) || c.to_string().ends_with("Timeout expired")
        });
        if !timed_out {
            return e;
        }
        let addr = self.addr.as_deref().unwrap_or("(no address)");
        let secs = self.timeouts.call.as_secs_f64();
        e.context(format!("the broker at {addr} did not answer within the call timeout ({secs}s; --call-timeout or SIGIL_CALL_TIMEOUT)"))
    }
}

/// Entry point.
pub fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    execute(cli.log.log_format, run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx {
        addr: cli.addr,
        identity: cli.identity,
        output: cli.output,
        timeouts: Timeouts { connect: cli.connect_timeout, call: cli.call_timeout },
    };
    let result = dispatch(&ctx, cli.command).await;
    result.map_err(|e| ctx.explain(e))
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Server(a) => server::run(a).await,
        Command::Agent(a) => agent::run(a).await,
        Command::Role(c) => resources::run_role(&ctx, c).await,
        Command::Bot(c) => instances::run_bot(&ctx, c).await,
        Command::Token(c) => resources::run_token(&ctx, c).await,
        Command::Ca(c) => ca::run(&ctx, c).await,
        Command::WorkloadIdentity(c) => resources::run_wi(&ctx, c).await,
        Command::Lock(c) => locks::run(&ctx, c).await,
        Command::Apply(a) => resources::apply(&ctx, a).await,
        Command::Svid(c) => svid::run(&ctx, c).await,
        Command::Join(a) => svid::join(&ctx, a).await,
        Command::Bundle(a) => svid::bundle(&ctx, a).await,
        Command::Audit(a) => resources::audit(&ctx, a).await,
        Command::Whoami => svid::whoami(&ctx).await,
        Command::Federation(c) => federation::run(&ctx, c).await,
        Command::Aws(c) => aws::run(c).await,
        Command::App(c) => app::run(&ctx, c).await,
        Command::Db(c) => db::run(&ctx, c).await,
        Command::Kube(c) => kube::run(&ctx, c).await,
        Command::Ssh(c) => ssh::run(&ctx, c).await,
        Command::Store(c) => store::run(c).await,
        Command::Completion(a) => generate::run_completion(a),
        Command::Man(a) => generate::run_man(a),
    }
}
