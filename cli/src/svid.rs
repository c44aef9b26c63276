//! `sigil svid x509|jwt`, `sigil join`, `sigil bundle`, `sigil whoami`.

use super::join_methods::Client;
use super::{Ctx, Output};
use sigil_core::domain::Method;
use sigil_core::fsutil::{write_private, TrustedDir};
use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use sigil_agent::backoff::{random_jitter, Backoff};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub(crate) enum SvidCmd {
    /// Issue an X.509-SVID; the key is generated here and never sent.
    X509 {
        /// SPIFFE ID to request.
        #[arg(long, required_unless_present = "workload_identity")]
        spiffe_id: Option<String>,
        /// Or a workload identity name.
        #[arg(long, conflicts_with = "spiffe_id")]
        workload_identity: Option<String>,
        /// Directory for svid.pem, svid.key, bundle.pem.
        #[arg(long)]
        out: PathBuf,
        /// Lifetime, e.g. 10m (default: broker default).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Issue a JWT-SVID and print it.
    Jwt {
        /// SPIFFE ID to request.
        #[arg(long, required_unless_present = "workload_identity")]
        spiffe_id: Option<String>,
        /// Or a workload identity name.
        #[arg(long, conflicts_with = "spiffe_id")]
        workload_identity: Option<String>,
        /// Audience (repeatable, at least one).
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// Lifetime (default: broker default).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Revoke X.509 and SSH certificates: X.509 ones appear on their CA key's
    /// CRL (`<public_url>/crl/<key id>.crl`), SSH ones in the OpenSSH KRL
    /// (`<public_url>/ssh/revoked_keys.krl`), until they expire. JWT-SVIDs
    /// cannot be revoked: keep their lifetimes short.
    Revoke {
        /// Serial number (repeatable): X.509 in hex (as `openssl x509 -serial`
        /// prints it); SSH certificates in decimal as `ssh-keygen -L` prints it
        /// (or `ssh:<decimal>`), published in `<public_url>/ssh/revoked_keys.krl`.
        #[arg(long = "serial", required_unless_present = "instance")]
        serials: Vec<String>,
        /// Or every unexpired certificate issued to this bot instance (X.509-SVIDs,
        /// bot identity, TLS access and SSH certificates).
        #[arg(long, conflicts_with = "serials")]
        instance: Option<String>,
        /// RFC 5280 reason: unspecified (default), keyCompromise, cACompromise,
        /// affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    /// Join token secret (or env SIGIL_TOKEN). With --method bound_keypair: the
    /// registration secret of a first join.
    #[arg(long, env = "SIGIL_TOKEN", hide_env_values = true, allow_hyphen_values = true)]
    token: Option<String>,
    /// A file holding the join token secret (preferred: a secret on the command
    /// line is visible to every local user in `ps`). Wins over --token and SIGIL_TOKEN.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Join method: token, github, gitlab, circleci, bitbucket, azure_devops,
    /// terraform_cloud, spacelift, oidc, kubernetes, bound_keypair, ...
    #[arg(long, default_value = "token")]
    method: String,
    /// Name of the join token whose rules apply (every method but `token`).
    #[arg(long)]
    token_name: Option<String>,
    /// OIDC methods: file holding the platform's ID token (e.g. the Kubernetes
    /// projected service-account token).
    #[arg(long, conflicts_with = "id_token_env")]
    id_token_file: Option<PathBuf>,
    /// OIDC methods: environment variable holding the ID token (e.g.
    /// CIRCLE_OIDC_TOKEN_V2, BITBUCKET_STEP_OIDC_TOKEN, SPACELIFT_OIDC_TOKEN).
    #[arg(long)]
    id_token_env: Option<String>,
    /// bound_keypair: the agent's private key (created if absent). The join
    /// sequence is kept beside it in KEY_FILE.sequence.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// bound_keypair: print the public key of --key-file (for config.public_key) and exit.
    #[arg(long, requires = "key_file")]
    print_public_key: bool,
    /// iam: AWS signing region (default AWS_REGION, AWS_DEFAULT_REGION, the AWS profile's region, else us-east-1).
    #[arg(long)]
    aws_region: Option<String>,
    /// iam: STS endpoint URL (default https://sts.REGION.amazonaws.com/).
    #[arg(long)]
    sts_endpoint: Option<String>,
    /// tpm: TCTI of the TPM (default TPM2TOOLS_TCTI, TCTI, else device:/dev/tpmrm0).
    #[arg(long)]
    tcti: Option<String>,
    /// gcp: audience of the instance identity token (the join token's config.audience);
    /// azure: resource of the managed identity token.
    #[arg(long)]
    audience: Option<String>,
    /// gcp/azure: metadata server base URL (gcp default GCE_METADATA_HOST, else
    /// http://metadata.google.internal; azure default http://169.254.169.254).
    #[arg(long)]
    metadata_url: Option<String>,
    /// CA certificate that signs the broker's TLS certificate (tls-ca.pem).
    #[arg(long)]
    ca_file: PathBuf,
    /// Where to write the identity file.
    #[arg(long)]
    out: PathBuf,
    /// Identity lifetime.
    #[arg(long)]
    ttl: Option<humantime::Duration>,
    /// Tries in all when no broker can be connected to, or the connection breaks
    /// before the broker answers (backoff 250 ms doubling to 8 s, with jitter;
    /// at most 20). A broker's refusal is never retried.
    #[arg(long, default_value_t = 5)]
    attempts: u32,
}

#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    /// `pem` (X.509 authorities), `spiffe` (SPIFFE bundle JSON) or `jwks`.
    #[arg(long, default_value = "pem")]
    format: String,
}

fn ttl_secs(t: Option<humantime::Duration>) -> i64 {
    t.map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>)> {
    Ok(sigil_core::csr::key_and_csr()?)
}

pub(crate) async fn run(ctx: &Ctx, c: SvidCmd) -> Result<()> {
    let mut cl = ctx.client().await?;
    match c {
        SvidCmd::X509 { spiffe_id, workload_identity, out, ttl } => {
            let (kp, csr) = key_and_csr()?;
            let s = cl
                .issue_x509_svid(pb::IssueX509SvidRequest {
                    csr,
                    spiffe_id: spiffe_id.unwrap_or_default(),
                    workload_identity: workload_identity.unwrap_or_default(),
                    ttl_seconds: ttl_secs(ttl),
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow!(s))?
                .into_inner();
            // Created 0700 if missing; refused if another user owns it (see fsutil).
            let dir = TrustedDir::create(&out)?;
            dir.write("svid.key".as_ref(), kp.serialize_pem().as_bytes(), 0o600)?;
            dir.write("svid.pem".as_ref(), s.certificate_pem.as_bytes(), 0o600)?;
            dir.write("bundle.pem".as_ref(), s.bundle_pem.as_bytes(), 0o600)?;
            eprintln!("X.509-SVID for {} (expires at {}) written to {}", s.spiffe_id, super::when::rfc3339(s.expires_at), out.display());
            Ok(())
        }
        SvidCmd::Jwt { spiffe_id, workload_identity, audiences, ttl } => {
            let s = cl
                .issue_jwt_svid(pb::IssueJwtSvidRequest {
                    spiffe_id: spiffe_id.unwrap_or_default(),
                    workload_identity: workload_identity.unwrap_or_default(),
                    audiences,
                    ttl_seconds: ttl_secs(ttl),
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow!(s))?
                .into_inner();
            println!("{}", s.token);
            Ok(())
        }
        SvidCmd::Revoke { serials, instance, reason } => {
            let r = cl
                .revoke_svids(pb::RevokeSvidsRequest { serials, bot_instance: instance.unwrap_or_default(), reason })
                .await
                .map_err(|s| anyhow!(s))?
                .into_inner();
            match ctx.output {
                Output::Json => println!("{}", serde_json::json!({"revoked": r.serials})),
                Output::Text => {
                    for s in &r.serials {
                        println!("revoked {s}");
                    }
                }
            }
            Ok(())
        }
    }
}

/// The secret in `path` (surrounding whitespace trimmed; at most 64 KiB). The
/// error names the file, never its content.
fn read_token_file(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
        .with_context(|| format!("cannot read --token-file {}", path.display()))?;
    let t = text.trim();
    anyhow::ensure!(!t.is_empty(), "--token-file {} is empty", path.display());
    Ok(t.to_string())
}

pub(crate) async fn join(ctx: &Ctx, a: JoinArgs) -> Result<()> {
    if a.print_public_key {
        return super::join_methods::print_public_key(a.key_file.as_deref().context("--key-file is required")?);
    }
    let ca = sigil_core::pem::read_file(&a.ca_file).with_context(|| format!("cannot read {}", a.ca_file.display()))?;
    let addr = ctx.addr()?;
    let (kp, csr) = key_and_csr()?;
    let token = match &a.token_file {
        Some(f) => Some(read_token_file(f)?),
        None => a.token.clone(),
    };
    let method = Method::parse(&a.method)?;
    let kind = super::join_methods::client(method);
    let attempts = a.attempts.clamp(1, MAX_JOIN_ATTEMPTS);
    let mut backoff = Backoff::new(JOIN_RETRY_INITIAL, JOIN_RETRY_MAX);
    let mut attempt = 1;
    let r = loop {
        match join_once(ctx, &a, addr, &ca, method, token.as_deref(), csr.clone()).await {
            Ok(r) => break r,
            Err(e) if attempt < attempts && retryable_join_failure(&e, kind) => {
                let delay = backoff.next_delay(random_jitter());
                eprintln!("join attempt {attempt}/{attempts} failed, retrying in {} ms: {e:#}", delay.as_millis());
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let id = Identity::new(r.certificate_pem, kp.serialize_pem(), r.ca_pem);
    write_private(&a.out, id.to_pem().as_bytes())?;
    eprintln!("joined as bot {} (generation {}, expires at {}); identity written to {}", r.bot, r.generation, super::when::rfc3339(r.expires_at), a.out.display());
    Ok(())
}

/// Most `sigil join --attempts`.
const MAX_JOIN_ATTEMPTS: u32 = 20;
/// First retry delay of `sigil join` (doubles, equal jitter).
const JOIN_RETRY_INITIAL: Duration = Duration::from_millis(250);
/// Longest retry delay of `sigil join`.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(8);

/// Whether a failed join may be tried again: no broker could be connected to
/// (nothing was sent), or, except for bound_keypair (whose sequence a repeated
/// join could trip), the call failed in the transport without a broker's answer.
/// A broker's refusal is never retried.
fn retryable_join_failure(e: &anyhow::Error, kind: Client) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sigil_schemas::client::ClientError>()
            .is_some_and(|ce| matches!(ce, sigil_schemas::client::ClientError::Unreachable(_) | sigil_schemas::client::ClientError::Connect { .. }))
            || (kind != Client::BoundKey && c.downcast_ref::<tonic::Status>().is_some_and(sigil_schemas::client::is_transport_failure))
    })
}

async fn join_once(ctx: &Ctx, a: &JoinArgs, addr: &str, ca: &str, method: Method, token: Option<&str>, csr: Vec<u8>) -> Result<pb::IdentityResponse> {
    let mut cl = ctx.anonymous_client(addr, ca).await?;
    Ok(match super::join_methods::client(method) {
        Client::BoundKey => {
            let key_file = a.key_file.as_deref().context("--key-file is required for --method bound_keypair")?;
            super::join_methods::bound_keypair(&mut cl, a.token_name.as_deref(), key_file, token, csr, ttl_secs(a.ttl)).await?
        }
        Client::Secret => cl
            .join(pb::JoinRequest { method: method.name().into(), token: token.context("--token-file, SIGIL_TOKEN or --token is required")?.to_string(), csr, ttl_seconds: ttl_secs(a.ttl), ..Default::default() })
            .await
            .map_err(|s| anyhow!(s))?
            .into_inner(),
        Client::Platform => {
            let o = super::join_cloud::CloudOpts {
                broker_addr: addr.to_string(),
                aws_region: a.aws_region.clone(),
                sts_endpoint: a.sts_endpoint.clone(),
                tcti: a.tcti.clone(),
                audience: a.audience.clone(),
                metadata_url: a.metadata_url.clone(),
            };
            super::join_cloud::join(&mut cl, method, a.token_name.as_deref(), &o, csr, ttl_secs(a.ttl)).await?
        }
        Client::IdToken => {
            let id_token = super::join_methods::id_token(a.id_token_file.as_deref(), a.id_token_env.as_deref())?;
            super::join_methods::bearer(&mut cl, method.name(), a.token_name.as_deref(), id_token, csr, ttl_secs(a.ttl)).await?
        }
    })
}

pub(crate) async fn bundle(ctx: &Ctx, a: BundleArgs) -> Result<()> {
    let mut cl = ctx.client().await?;
    let b = cl.get_trust_bundle(pb::GetTrustBundleRequest {}).await.map_err(|s| anyhow!(s))?.into_inner();
    match a.format.as_str() {
        "pem" => print!("{}", b.x509_authorities_pem),
        "spiffe" => println!("{}", b.spiffe_bundle_json),
        "jwks" => println!("{}", b.jwks_json),
        other => return Err(anyhow!("unknown format {other:?}: use pem, spiffe or jwks")),
    }
    Ok(())
}

pub(crate) async fn whoami(ctx: &Ctx) -> Result<()> {
    let mut cl = ctx.client().await?;
    let w = cl.who_am_i(pb::WhoAmIRequest {}).await.map_err(|s| anyhow!(s))?.into_inner();
    match ctx.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"bot": w.bot, "roles": w.roles, "generation": w.generation, "expires_at": w.expires_at, "trust_domain": w.trust_domain})
        ),
        Output::Text => println!("bot {} roles [{}] generation {} expires at {}", w.bot, w.roles.join(", "), w.generation, super::when::rfc3339(w.expires_at)),
    }
    Ok(())
}

