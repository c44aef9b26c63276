//! `sigil federation`: what each cloud needs (`setup`), whether it would accept our
//! issuer and SVIDs (`verify`), and the files and exchanges each cloud's SDK uses
//! (`aws`, `azure`, `gcp`).

use secrecy::{ExposeSecret, SecretString};
use super::aws::http_client;
use super::{Ctx, Output};
use sigil_agent::cloud::verify::{self, Cloud, Expectations, Finding, Level};
use sigil_agent::cloud::{aws_web_identity, azure, gcp, setup};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use sigil_schemas::sigil::v1 as pb;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub(crate) enum FederationCmd {
    /// Print what a cloud needs configured to trust this broker, with Terraform.
    #[command(subcommand)]
    Setup(SetupCmd),
    /// Check the live issuer and an SVID against a cloud's acceptance rules.
    Verify(VerifyArgs),
    /// AWS OIDC: config profile writer and AssumeRoleWithWebIdentity.
    #[command(subcommand)]
    Aws(AwsFedCmd),
    /// Azure: token file and client-assertion exchange.
    #[command(subcommand)]
    Azure(AzureCmd),
    /// GCP: external_account config, executable source and STS exchange.
    #[command(subcommand)]
    Gcp(GcpCmd),
}

/// Where a JWT-SVID comes from: a file, or freshly issued by the broker.
#[derive(Debug, Args)]
pub(crate) struct TokenSource {
    /// Read the JWT-SVID from this file.
    #[arg(long, conflicts_with_all = ["spiffe_id", "workload_identity"])]
    token_file: Option<PathBuf>,
    /// Or issue a fresh JWT-SVID for this SPIFFE ID (uses --addr / --identity).
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Or for this workload identity.
    #[arg(long, conflicts_with = "spiffe_id")]
    workload_identity: Option<String>,
    /// Lifetime of a freshly issued JWT-SVID.
    #[arg(long)]
    ttl: Option<humantime::Duration>,
}

impl TokenSource {
    fn given(&self) -> bool {
        self.token_file.is_some() || self.spiffe_id.is_some() || self.workload_identity.is_some()
    }

    /// The token and its `exp` (0 when read from a file and unreadable).
    async fn obtain(&self, ctx: &Ctx, audience: &str) -> Result<(SecretString, i64)> {
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
            let t = t.trim().to_string();
            let exp = sigil_core::jwt::peek(&t).ok().and_then(|j| j.claim_i64("exp")).unwrap_or(0);
            return Ok((SecretString::from(t), exp));
        }
        if self.spiffe_id.is_none() && self.workload_identity.is_none() {
            bail!("no token: pass --token-file FILE, or --spiffe-id ID / --workload-identity NAME to issue one");
        }
        let mut cl = ctx.client().await?;
        let s = cl
            .issue_jwt_svid(pb::IssueJwtSvidRequest {
                spiffe_id: self.spiffe_id.clone().unwrap_or_default(),
                workload_identity: self.workload_identity.clone().unwrap_or_default(),
                audiences: vec![audience.to_string()],
                ttl_seconds: self.ttl.map(|d| d.as_secs() as i64).unwrap_or(0),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!(s))?
            .into_inner();
        Ok((SecretString::from(s.token), s.expires_at))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Instructions for humans.
    Text,
    /// Terraform.
    Terraform,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SetupCmd {
    /// IAM OIDC provider + role trust policy (AssumeRoleWithWebIdentity).
    Aws {
        /// Issuer URL (the broker's public_url).
        #[arg(long)]
        issuer: String,
        /// SPIFFE ID pattern allowed to assume the role (`*` wildcards).
        #[arg(long)]
        subject: String,
        /// Audience (client id).
        #[arg(long, default_value = aws_web_identity::DEFAULT_AUDIENCE)]
        audience: String,
        /// Role name.
        #[arg(long, default_value = "sigil-workload")]
        role_name: String,
        /// Fetch the issuer's TLS chain and compute the thumbprint.
        #[arg(long)]
        fetch_thumbprint: bool,
        /// Extra CA to trust when fetching (private issuers).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// IAM Roles Anywhere trust anchor + profile + role.
    #[command(name = "aws-roles-anywhere")]
    AwsRolesAnywhere {
        /// The broker's X.509 CA bundle (`sigil bundle --format pem`).
        #[arg(long)]
        bundle: PathBuf,
        /// SPIFFE ID pattern allowed (x509SAN/URI session tag).
        #[arg(long)]
        subject: String,
        /// Role name.
        #[arg(long, default_value = "sigil-workload")]
        role_name: String,
        /// Trust anchor and profile name.
        #[arg(long, default_value = "sigil")]
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Entra ID federated identity credential.
    Azure {
        /// Issuer URL.
        #[arg(long)]
        issuer: String,
        /// SPIFFE ID (exact).
        #[arg(long)]
        subject: String,
        /// Credential name.
        #[arg(long, default_value = "sigil")]
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Workload identity pool + OIDC provider.
    Gcp {
        /// Issuer URL.
        #[arg(long)]
        issuer: String,
        /// Project number.
        #[arg(long)]
        project_number: String,
        /// Pool id.
        #[arg(long, default_value = "sigil")]
        pool: String,
        /// Provider id.
        #[arg(long, default_value = "sigil")]
        provider: String,
        /// SPIFFE ID prefix allowed (attribute condition), e.g. spiffe://example.org/.
        #[arg(long)]
        subject_prefix: String,
        /// Service account the pool may impersonate.
        #[arg(long)]
        service_account: Option<String>,
        /// JWKS file to upload (issuer not reachable from Google).
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VerifyCloud {
    Aws,
    Azure,
    Gcp,
    AwsRolesAnywhere,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Which cloud's rules.
    #[arg(value_enum)]
    cloud: VerifyCloud,
    /// Issuer URL (default: the token's iss).
    #[arg(long)]
    issuer: Option<String>,
    /// Extra CA to trust when fetching discovery (flagged: clouds use the web PKI).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Audience the cloud is configured for (default: the cloud's default).
    #[arg(long)]
    audience: Option<String>,
    #[command(flatten)]
    token: TokenSource,
    /// Roles Anywhere: the X.509-SVID leaf (svid.pem).
    #[arg(long)]
    certificate: Option<PathBuf>,
    /// Roles Anywhere: the trust anchor bundle (PEM).
    #[arg(long)]
    bundle: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AwsFedCmd {
    /// Write an AWS config profile using web_identity_token_file + role_arn.
    Profile {
        /// AWS config file.
        #[arg(long, env = "AWS_CONFIG_FILE")]
        config_file: PathBuf,
        /// Profile name.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Role ARN.
        #[arg(long)]
        role_arn: String,
        /// JWT-SVID file the SDK reads.
        #[arg(long)]
        token_file: PathBuf,
        /// Region.
        #[arg(long)]
        region: Option<String>,
        /// Session name.
        #[arg(long)]
        role_session_name: Option<String>,
    },
    /// Call STS AssumeRoleWithWebIdentity and write or print the credentials.
    #[command(name = "assume-role")]
    AssumeRole {
        #[command(flatten)]
        token: TokenSource,
        /// Role ARN.
        #[arg(long)]
        role_arn: String,
        /// Audience of a freshly issued token.
        #[arg(long, default_value = aws_web_identity::DEFAULT_AUDIENCE)]
        audience: String,
        /// STS endpoint.
        #[arg(long, env = "AWS_ENDPOINT_URL_STS", default_value = aws_web_identity::DEFAULT_ENDPOINT)]
        endpoint: String,
        /// Session name (default derived from the token's sub).
        #[arg(long)]
        role_session_name: Option<String>,
        /// Session duration in seconds.
        #[arg(long)]
        duration_seconds: Option<u32>,
        /// Write to this shared credentials file instead of printing credential_process JSON.
        #[arg(long)]
        credentials_file: Option<PathBuf>,
        /// Profile in --credentials-file.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Extra CA for the endpoint.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AzureCmd {
    /// Exchange the JWT-SVID for an Entra ID access token (prints JSON).
    Token {
        #[command(flatten)]
        token: TokenSource,
        /// Tenant id.
        #[arg(long, env = "AZURE_TENANT_ID")]
        tenant_id: String,
        /// Client (application) id.
        #[arg(long, env = "AZURE_CLIENT_ID")]
        client_id: String,
        /// Scope.
        #[arg(long, default_value = "https://management.azure.com/.default")]
        scope: String,
        /// Authority host.
        #[arg(long, env = "AZURE_AUTHORITY_HOST", default_value = azure::DEFAULT_AUTHORITY_HOST)]
        authority_host: String,
        /// Extra CA for the authority.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Write a JWT-SVID (audience api://AzureADTokenExchange) for AZURE_FEDERATED_TOKEN_FILE.
    #[command(name = "token-file")]
    TokenFile {
        #[command(flatten)]
        token: TokenSource,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GcpCmd {
    /// Write an external_account credential configuration file.
    Config {
        /// Output file (GOOGLE_APPLICATION_CREDENTIALS).
        #[arg(long)]
        out: PathBuf,
        /// Audience (default from --project-number/--pool/--provider).
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        project_number: Option<String>,
        #[arg(long, default_value = "sigil")]
        pool: String,
        #[arg(long, default_value = "sigil")]
        provider: String,
        /// JWT-SVID file the library reads (file source).
        #[arg(long, conflicts_with = "executable")]
        token_file: Option<PathBuf>,
        /// Use the executable source: `sigil federation gcp executable` with these arguments.
        #[arg(long, allow_hyphen_values = true)]
        executable: Option<String>,
        /// Executable time limit in ms.
        #[arg(long, default_value_t = 30_000)]
        timeout_millis: u32,
        /// Service account to impersonate.
        #[arg(long)]
        service_account: Option<String>,
        /// Or a full impersonation URL.
        #[arg(long, conflicts_with = "service_account")]
        impersonation_url: Option<String>,
        /// Impersonated token lifetime.
        #[arg(long)]
        token_lifetime_seconds: Option<u32>,
        /// Token URL.
        #[arg(long, default_value = gcp::DEFAULT_TOKEN_URL)]
        token_url: String,
    },
    /// Print the executable-sourced credential response (run by Google's libraries).
    Executable {
        #[command(flatten)]
        token: TokenSource,
        /// Audience of a fresh token (default GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE).
        #[arg(long, env = "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE")]
        audience: Option<String>,
    },
    /// Exchange the JWT-SVID at Google STS (prints JSON).
    Exchange {
        #[command(flatten)]
        token: TokenSource,
        /// Provider audience.
        #[arg(long)]
        audience: String,
        #[arg(long, default_value = gcp::DEFAULT_TOKEN_URL)]
        token_url: String,
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

pub(crate) async fn run(ctx: &Ctx, c: FederationCmd) -> Result<()> {
    match c {
        FederationCmd::Setup(s) => run_setup(s).await,
        FederationCmd::Verify(v) => run_verify(ctx, v).await,
        FederationCmd::Aws(a) => run_aws(ctx, a).await,
        FederationCmd::Azure(a) => run_azure(ctx, a).await,
        FederationCmd::Gcp(g) => run_gcp(ctx, g).await,
    }
}

/// A PEM or JSON file named on the command line, at most `pem::MAX_PEM_BYTES`.
fn read(p: &Path) -> Result<String> {
    sigil_core::pem::read_file(p).with_context(|| format!("cannot read {}", p.display()))
}

fn emit(format: Format, text: String, terraform: String) {
    match format {
        Format::Text => print!("{text}"),
        Format::Terraform => print!("{terraform}"),
    }
}

async fn run_setup(s: SetupCmd) -> Result<()> {
    match s {
        SetupCmd::Aws { issuer, subject, audience, role_name, fetch_thumbprint, ca_file, format } => {
            let thumbprint = if fetch_thumbprint {
                let chain = http_client(ca_file.as_deref())?.peer_chain(&issuer).await?;
                setup::thumbprint(&chain)
            } else {
                None
            };
            let a = setup::AwsOidc { issuer, audience, subject, role_name, thumbprint };
            emit(format, a.text(), a.terraform());
        }
        SetupCmd::AwsRolesAnywhere { bundle, subject, role_name, name, format } => {
            let pem = read(&bundle)?;
            let ca_pems: Vec<String> = sigil_core::pem::certificates(&pem, &bundle.display().to_string())?
                .iter()
                .map(|der| sigil_schemas::identity::to_pem("CERTIFICATE", der))
                .collect();
            if ca_pems.is_empty() {
                bail!("{} holds no CERTIFICATE: pass the output of `sigil bundle --format pem`", bundle.display());
            }
            let r = setup::AwsRolesAnywhere { ca_pems, subject, role_name, name };
            emit(format, r.text(), r.terraform());
        }
        SetupCmd::Azure { issuer, subject, name, format } => {
            let a = setup::AzureFederated { issuer, subject, name };
            emit(format, a.text(), a.terraform());
        }
        SetupCmd::Gcp { issuer, project_number, pool, provider, subject_prefix, service_account, jwks_file, format } => {
            let jwks_json = jwks_file.as_deref().map(read).transpose()?;
            let g = setup::GcpWif { issuer, project_number, pool, provider, subject_prefix, service_account, jwks_json };
            emit(format, g.text(), g.terraform());
        }
    }
    Ok(())
}

async fn run_verify(ctx: &Ctx, v: VerifyArgs) -> Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (cloud, findings) = match v.cloud {
        VerifyCloud::AwsRolesAnywhere => {
            let cert = v.certificate.as_deref().context("pass --certificate svid.pem")?;
            let bundle = v.bundle.as_deref().context("pass --bundle (the trust anchor's CA certificates, PEM)")?;
            let leaf = sigil_core::pem::certificate_ders(&read(cert)?, &cert.display().to_string())?;
            let leaf = leaf.first().context("the certificate file holds no CERTIFICATE")?;
            let cas = sigil_core::pem::certificate_ders(&read(bundle)?, &bundle.display().to_string())?;
            ("aws-roles-anywhere", verify::check_roles_anywhere(leaf, &cas, now))
        }
        other => {
            let cloud = match other {
                VerifyCloud::Aws => Cloud::Aws,
                VerifyCloud::Azure => Cloud::Azure,
                _ => Cloud::Gcp,
            };
            let audience = v.audience.clone().or_else(|| cloud.default_audience().map(str::to_string));
            let token = if v.token.given() {
                let aud = audience.clone().context("pass --audience (GCP: the provider audience //iam.googleapis.com/...)")?;
                Some(v.token.obtain(ctx, &aud).await?.0)
            } else {
                None
            };
            let issuer = match (&v.issuer, &token) {
                (Some(i), _) => i.clone(),
                (None, Some(t)) => sigil_core::jwt::peek(t.expose_secret())
                    .ok()
                    .and_then(|j| j.claim_str("iss").map(str::to_string))
                    .context("the token has no iss: pass --issuer URL")?,
                (None, None) => bail!("pass --issuer URL, or a token (--token-file / --spiffe-id)"),
            };
            let client = http_client(v.ca_file.as_deref())?;
            let ev = verify::gather_issuer(&client, &issuer, v.ca_file.is_some()).await;
            let name = match cloud {
                Cloud::Aws => "aws",
                Cloud::Azure => "azure",
                _ => "gcp",
            };
            (name, verify::check_oidc(cloud, &ev, token.as_ref().map(|s| s.expose_secret()), &Expectations { audience, now }))
        }
    };
    print_findings(ctx.output, cloud, &findings)?;
    let n = verify::failures(&findings);
    if n > 0 {
        bail!("{n} rule(s) broken: {cloud} would refuse this (fixes above)");
    }
    Ok(())
}

fn print_findings(output: Output, cloud: &str, findings: &[Finding]) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({"cloud": cloud, "findings": findings}))?),
        Output::Text => {
            for f in findings {
                let tag = match f.level {
                    Level::Pass => "PASS",
                    Level::Warn => "WARN",
                    Level::Fail => "FAIL",
                };
                println!("{tag}  {:<24} {}", f.rule, f.message);
                if let (Some(fix), false) = (&f.fix, f.level == Level::Pass) {
                    println!("      fix: {fix}");
                }
            }
        }
    }
    Ok(())
}

async fn run_aws(ctx: &Ctx, a: AwsFedCmd) -> Result<()> {
    match a {
        AwsFedCmd::Profile { config_file, profile, role_arn, token_file, region, role_session_name } => {
            let p = aws_web_identity::WebIdentityProfile { name: profile, role_arn, token_file, role_session_name, region, duration_seconds: None };
            p.write(&config_file)?;
            eprintln!("wrote [{}] to {}", p.header(), config_file.display());
        }
        AwsFedCmd::AssumeRole { token, role_arn, audience, endpoint, role_session_name, duration_seconds, credentials_file, profile, ca_file } => {
            let (jwt, _) = token.obtain(ctx, &audience).await?;
            let sub = sigil_core::jwt::peek(jwt.expose_secret()).ok().and_then(|j| j.claim_str("sub").map(str::to_string));
            let role_session_name = role_session_name.unwrap_or_else(|| aws_web_identity::session_name_for(sub.as_deref().unwrap_or("sigil")));
            let req = aws_web_identity::AssumeRoleRequest { endpoint, role_arn, role_session_name, duration_seconds, token: jwt };
            let creds = aws_web_identity::assume_role(&http_client(ca_file.as_deref())?, &req).await?;
            match credentials_file {
                Some(f) => {
                    creds.write_credentials_file(&f, &profile)?;
                    eprintln!("wrote [{profile}] to {} (expires {})", f.display(), creds.expiration);
                }
                None => println!("{}", creds.credential_process_json()),
            }
        }
    }
    Ok(())
}

async fn run_azure(ctx: &Ctx, a: AzureCmd) -> Result<()> {
    match a {
        AzureCmd::Token { token, tenant_id, client_id, scope, authority_host, ca_file } => {
            let (jwt, _) = token.obtain(ctx, azure::AUDIENCE).await?;
            let x = azure::AssertionExchange { authority_host, tenant_id, client_id, scope, assertion: jwt };
            let t = azure::exchange(&http_client(ca_file.as_deref())?, &x).await?;
            println!("{}", serde_json::json!({"access_token": t.token.expose_secret(), "token_type": t.token_type, "expires_in": t.expires_in}));
        }
        AzureCmd::TokenFile { token, out } => {
            let (jwt, exp) = token.obtain(ctx, azure::AUDIENCE).await?;
            azure::write_token_file(&out, &jwt)?;
            // exp is 0 when a token read from a file has no readable `exp`.
            let expires = if exp > 0 { super::when::rfc3339(exp) } else { "unknown".into() };
            eprintln!("wrote JWT-SVID (expires {expires}) to {}", out.display());
        }
    }
    Ok(())
}

async fn run_gcp(ctx: &Ctx, g: GcpCmd) -> Result<()> {
    match g {
        GcpCmd::Config {
            out,
            audience,
            project_number,
            pool,
            provider,
            token_file,
            executable,
            timeout_millis,
            service_account,
            impersonation_url,
            token_lifetime_seconds,
            token_url,
        } => {
            let audience = match (audience, project_number) {
                (Some(a), _) => a,
                (None, Some(n)) => gcp::provider_audience(&n, &pool, &provider),
                (None, None) => bail!("pass --audience or --project-number (with --pool/--provider)"),
            };
            let source = match (token_file, executable) {
                (Some(f), None) => gcp::CredentialSource::File(f),
                (None, Some(args)) => {
                    let me = std::env::current_exe().context("cannot find the sigil binary's path")?;
                    gcp::CredentialSource::Executable { command: format!("{} federation gcp executable {args}", me.display()), timeout_millis, output_file: None }
                }
                _ => bail!("pass --token-file FILE (file source) or --executable 'ARGS' (executable source)"),
            };
            let service_account_impersonation_url = impersonation_url.or(service_account.as_deref().map(gcp::impersonation_url));
            let cfg = gcp::ExternalAccountConfig { audience, token_url, source, service_account_impersonation_url, token_lifetime_seconds };
            cfg.write(&out)?;
            eprintln!("wrote external_account config to {}", out.display());
        }
        GcpCmd::Executable { token, audience } => {
            let aud = audience.unwrap_or_default();
            match token.obtain(ctx, &aud).await {
                Ok((jwt, exp)) => println!("{}", gcp::executable_response(&jwt, exp)),
                Err(e) => {
                    println!("{}", gcp::executable_error("SIGIL_TOKEN_UNAVAILABLE", &format!("{e:#}")));
                    return Err(e);
                }
            }
        }
        GcpCmd::Exchange { token, audience, token_url, ca_file } => {
            let (jwt, _) = token.obtain(ctx, &audience).await?;
            let t = gcp::exchange(&http_client(ca_file.as_deref())?, &token_url, &audience, &jwt).await?;
            println!("{}", serde_json::json!({"access_token": t.token.expose_secret(), "token_type": t.token_type, "expires_in": t.expires_in}));
        }
    }
    Ok(())
}
