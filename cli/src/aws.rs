//! `sigil aws credential-process` (IAM Roles Anywhere with an X.509-SVID) and
//! `sigil aws sign-create-session` (prints every step of the SigV4-X509 signature
//! for a fixed time: debugging and conformance checks).

use sigil_agent::cloud::http::HttpClient;
use sigil_agent::cloud::roles_anywhere::{self, SessionParams};
use sigil_agent::cloud::sigv4_x509::{CertificateChain, SigningKey, X509Credential};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub(crate) enum AwsCmd {
    /// Print temporary credentials from IAM Roles Anywhere in the `credential_process` JSON format.
    #[command(name = "credential-process")]
    CredentialProcess(CredentialProcessArgs),
    /// Sign a CreateSession request at a fixed time and print the canonical request,
    /// string to sign, signature and headers as JSON (nothing is sent).
    #[command(name = "sign-create-session")]
    SignCreateSession(SignArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CertArgs {
    /// X.509-SVID certificate (svid.pem).
    #[arg(long)]
    certificate: PathBuf,
    /// Its private key (svid.key).
    #[arg(long)]
    private_key: PathBuf,
    /// Intermediate CA certificates to send in X-Amz-X509-Chain (PEM).
    #[arg(long)]
    intermediates: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    /// Trust anchor ARN.
    #[arg(long)]
    trust_anchor_arn: String,
    /// Profile ARN.
    #[arg(long)]
    profile_arn: String,
    /// Role ARN.
    #[arg(long)]
    role_arn: String,
    /// Region of the trust anchor.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Endpoint base URL (default https://rolesanywhere.REGION.amazonaws.com).
    #[arg(long)]
    endpoint: Option<String>,
    /// Session duration in seconds (900..43200).
    #[arg(long, default_value_t = 3600)]
    session_duration: u32,
    /// Role session name (the profile must accept custom names).
    #[arg(long)]
    role_session_name: Option<String>,
}

impl SessionArgs {
    fn params(&self) -> SessionParams {
        SessionParams {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            trust_anchor_arn: self.trust_anchor_arn.clone(),
            profile_arn: self.profile_arn.clone(),
            role_arn: self.role_arn.clone(),
            duration_seconds: self.session_duration,
            role_session_name: self.role_session_name.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CredentialProcessArgs {
    #[command(flatten)]
    cert: CertArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// Extra CA to trust for the endpoint's TLS certificate (private endpoints, tests).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Also write the credentials to this shared credentials file.
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// Profile name in --credentials-file.
    #[arg(long, default_value = "default")]
    profile: String,
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    #[command(flatten)]
    cert: CertArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// X-Amz-Date to sign at, YYYYMMDDTHHMMSSZ.
    #[arg(long)]
    time: String,
    /// Exact body to sign (default: the JSON CreateSession body Sigil would send).
    #[arg(long)]
    body_file: Option<PathBuf>,
}

fn read(p: &Path) -> Result<String> {
    sigil_core::pem::read_file(p).with_context(|| format!("cannot read {}", p.display()))
}

fn load_credential(c: &CertArgs) -> Result<X509Credential> {
    let intermediates = c.intermediates.as_deref().map(read).transpose()?;
    let chain = CertificateChain::from_pem(&read(&c.certificate)?, intermediates.as_deref())?;
    let key = SigningKey::from_pem(&read(&c.private_key)?)?;
    Ok(X509Credential::new(chain, key)?)
}

pub(crate) fn http_client(ca_file: Option<&Path>) -> Result<HttpClient> {
    let ca = ca_file.map(read).transpose()?;
    Ok(HttpClient::new(ca.as_deref())?)
}

pub(crate) async fn run(c: AwsCmd) -> Result<()> {
    match c {
        AwsCmd::CredentialProcess(a) => {
            let cred = load_credential(&a.cert)?;
            let client = http_client(a.ca_file.as_deref())?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let creds = roles_anywhere::create_session(&client, &cred, &a.session.params(), now).await?;
            if let Some(f) = &a.credentials_file {
                creds.write_credentials_file(f, &a.profile)?;
            }
            println!("{}", creds.credential_process_json());
            Ok(())
        }
        AwsCmd::SignCreateSession(a) => {
            let cred = load_credential(&a.cert)?;
            let params = a.session.params();
            let body = match &a.body_file {
                Some(p) => read(p)?,
                None => params.body(),
            };
            let (target, s) = roles_anywhere::sign_create_session(&cred, &params, &body, &a.time)?;
            let headers: serde_json::Map<String, serde_json::Value> = s.headers.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "url": format!("{}://{}{}", if target.tls { "https" } else { "http" }, target.authority, target.path_and_query),
                    "algorithm": s.algorithm,
                    "serial": cred.chain.serial_decimal,
                    "canonical_request": s.canonical_request,
                    "string_to_sign": s.string_to_sign,
                    "signature": s.signature_hex,
                    "headers": headers,
                    "body": body,
                }))?
            );
            Ok(())
        }
    }
}
