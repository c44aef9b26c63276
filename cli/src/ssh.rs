//! `sigil ssh user-cert|host-cert|ca-keys`: the agent's `ssh` and `ssh-host`
//! outputs once (same files, same checks), and the published CA keys.

use super::{Ctx, Output};
use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use sigil_agent::config_ssh::{SshHostOutput, SshKeyType, SshOutput};
use sigil_agent::outputs::ssh::{self, HostCertRequest, UserCertRequest};
use sigil_schemas::sigil::v1 as pb;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum SshCmd {
    /// Issue a user certificate for a new key and write id_<type>,
    /// id_<type>-cert.pub, known_hosts and ssh_config into --dir (`ssh -F DIR/ssh_config`).
    #[command(name = "user-cert")]
    UserCert(UserCertArgs),
    /// Issue a host certificate for a new key and write ssh_host_<type>_key,
    /// its -cert.pub, user_ca.pub and sshd_config.snippet into --dir.
    #[command(name = "host-cert")]
    HostCert(HostCertArgs),
    /// Print the published SSH CA public keys (authorized_keys lines).
    #[command(name = "ca-keys")]
    CaKeys {
        /// `user` (for TrustedUserCAKeys), `host` (for @cert-authority) or `all`.
        #[arg(long = "type", default_value = "all")]
        kind: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct UserCertArgs {
    /// Login name the certificate carries (repeatable; each allowed by a role).
    #[arg(long = "principal", required = true)]
    principals: Vec<String>,
    /// Host pattern of ssh_config and known_hosts (repeatable; default `*`).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Extension to ask for (repeatable; default every extension the roles allow).
    #[arg(long = "extension")]
    extensions: Vec<String>,
    /// Key type: ed25519, ecdsa or rsa.
    #[arg(long, default_value = "ed25519")]
    key_type: String,
    /// Lifetime, e.g. 10m (default: the role / broker maximum).
    #[arg(long)]
    ttl: Option<humantime::Duration>,
    /// Directory for the files (created 0700).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    files: super::db::FileArgs,
}

#[derive(Debug, Args)]
pub(crate) struct HostCertArgs {
    /// Host name or address the certificate carries (repeatable; each allowed by a role).
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// Key type: ed25519, ecdsa or rsa.
    #[arg(long, default_value = "ed25519")]
    key_type: String,
    /// Lifetime (default: the role / broker maximum).
    #[arg(long)]
    ttl: Option<humantime::Duration>,
    /// `LOGIN=PRINCIPAL[,PRINCIPAL...]`: write principals/LOGIN and name it in
    /// AuthorizedPrincipalsFile (repeatable).
    #[arg(long = "authorized-principals")]
    authorized_principals: Vec<String>,
    /// Directory for the files.
    #[arg(long)]
    dir: PathBuf,
    /// --mode is the host key's; the public files are 0644 (sshd reads
    /// principals/LOGIN as that user).
    #[command(flatten)]
    files: super::db::FileArgs,
}

fn key_type(s: &str) -> Result<SshKeyType> {
    SshKeyType::parse(s).ok_or_else(|| anyhow!("--key-type {s:?}: use ed25519, ecdsa or rsa"))
}

fn ttl_secs(t: Option<humantime::Duration>) -> i64 {
    t.map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn absolute(dir: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&dir).with_context(|| format!("cannot make {} absolute", dir.display()))
}

fn parse_principals(items: &[String]) -> Result<Option<BTreeMap<String, Vec<String>>>> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for item in items {
        let (login, list) = item.split_once('=').ok_or_else(|| anyhow!("--authorized-principals {item:?}: want LOGIN=PRINCIPAL[,PRINCIPAL...]"))?;
        map.insert(login.to_string(), list.split(',').map(str::to_string).collect());
    }
    Ok(Some(map))
}

pub(crate) async fn run(ctx: &Ctx, c: SshCmd) -> Result<()> {
    match c {
        SshCmd::UserCert(a) => user_cert(ctx, a).await,
        SshCmd::HostCert(a) => host_cert(ctx, a).await,
        SshCmd::CaKeys { kind } => ca_keys(ctx, &kind).await,
    }
}

async fn user_cert(ctx: &Ctx, a: UserCertArgs) -> Result<()> {
    let cfg = SshOutput {
        dir: absolute(a.dir)?,
        principals: a.principals,
        hosts: if a.hosts.is_empty() { vec!["*".into()] } else { a.hosts },
        key_type: key_type(&a.key_type)?,
        extensions: a.extensions,
        ttl: None,
        owner: None,
        group: None,
        mode: None,
    };
    cfg.validate("ssh user-cert")?;
    let r = UserCertRequest { principals: cfg.principals.clone(), extensions: cfg.extensions.clone(), key_type: cfg.key_type, ttl_seconds: ttl_secs(a.ttl) };
    let access = a.files.access()?;
    let issued = ssh::issue_user(&mut ctx.client().await?, &r).await?;
    ssh::write_user(&cfg.dir, &cfg.hosts, cfg.key_type, &issued, access).await?;
    eprintln!(
        "SSH user certificate {} for {} (serial {}, valid until {}) written to {}; use: ssh -F {}",
        issued.cert.key_id,
        cfg.principals.join(","),
        issued.cert.serial,
        super::when::rfc3339(issued.cert.valid_before),
        cfg.dir.display(),
        cfg.dir.join("ssh_config").display()
    );
    Ok(())
}

async fn host_cert(ctx: &Ctx, a: HostCertArgs) -> Result<()> {
    let cfg = SshHostOutput {
        dir: absolute(a.dir)?,
        names: a.names,
        key_type: key_type(&a.key_type)?,
        ttl: None,
        authorized_principals: parse_principals(&a.authorized_principals)?,
        owner: None,
        group: None,
        mode: None,
    };
    cfg.validate("ssh host-cert")?;
    let r = HostCertRequest { names: cfg.names.clone(), key_type: cfg.key_type, ttl_seconds: ttl_secs(a.ttl) };
    let access = a.files.access()?;
    let mut client = ctx.client().await?;
    let issued = ssh::issue_host(&mut client, &r).await?;
    let krl = ssh::current_krl(&mut client, None, "ssh host-cert").await;
    ssh::write_host(&cfg.dir, cfg.key_type, &issued, cfg.authorized_principals.as_ref(), &krl, access).await?;
    eprintln!(
        "SSH host certificate for {} (serial {}, valid until {}) written to {}; add to sshd_config: Include {}",
        cfg.names.join(","),
        issued.cert.serial,
        super::when::rfc3339(issued.cert.valid_before),
        cfg.dir.display(),
        cfg.dir.join("sshd_config.snippet").display()
    );
    Ok(())
}

async fn ca_keys(ctx: &Ctx, kind: &str) -> Result<()> {
    let k = ctx.client().await?.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.map_err(|s| anyhow!(s))?.into_inner();
    let (user, host) = match kind {
        "user" => (k.user_ca_public_keys, vec![]),
        "host" => (vec![], k.host_ca_public_keys),
        "all" => (k.user_ca_public_keys, k.host_ca_public_keys),
        other => return Err(anyhow!("--type {other:?}: use user, host or all")),
    };
    match ctx.output {
        Output::Json => println!("{}", serde_json::json!({"user_ca_public_keys": user, "host_ca_public_keys": host})),
        Output::Text => {
            for l in user.iter().chain(host.iter()) {
                println!("{}", l.trim());
            }
        }
    }
    Ok(())
}
