//! `sigil app cert`: the agent's `application` output as a one-shot (same
//! files, same writer) for CI jobs and scripts.

use super::Ctx;
use anyhow::{anyhow, Result};
use clap::Subcommand;
use sigil_agent::outputs::application::{Files, CA_FILE, CERT_FILE, CHAIN_FILE, KEY_FILE};
use sigil_schemas::sigil::v1 as pb;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum AppCmd {
    /// Issue an mTLS certificate for an HTTP/TCP app (an X.509-SVID with the
    /// workload identity's DNS names) and write tls.crt, tls.key,
    /// tls-chain.pem and ca.pem (the X.509-SVID bundle) to --dir.
    Cert {
        /// SPIFFE ID to request.
        #[arg(long, required_unless_present = "workload_identity")]
        spiffe_id: Option<String>,
        /// Or a workload identity name (its dns_sans become the DNS SANs).
        #[arg(long, conflicts_with = "spiffe_id")]
        workload_identity: Option<String>,
        /// Directory for the files (created 0700; the files are 0600 unless
        /// --group/--mode say otherwise, and switch together like the agent's).
        #[arg(long)]
        dir: PathBuf,
        /// Lifetime, e.g. 1h (default: broker default).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        #[command(flatten)]
        files: super::db::FileArgs,
    },
}

pub(crate) async fn run(ctx: &Ctx, c: AppCmd) -> Result<()> {
    match c {
        AppCmd::Cert { spiffe_id, workload_identity, dir, ttl, files: file_args } => {
            let access = file_args.access()?;
            let (kp, csr) = sigil_core::csr::key_and_csr()?;
            let s = ctx
                .client()
                .await?
                .issue_x509_svid(pb::IssueX509SvidRequest {
                    csr,
                    spiffe_id: spiffe_id.unwrap_or_default(),
                    workload_identity: workload_identity.unwrap_or_default(),
                    ttl_seconds: ttl.map(|d| d.as_secs() as i64).unwrap_or(0),
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow!(s))?
                .into_inner();
            let files = Files::new(&s.certificate_pem, kp.serialize_pem(), &s.bundle_pem)?;
            files.write(&dir, &access)?;
            eprintln!(
                "certificate for {} (expires at {}) written to {}: {CERT_FILE}, {KEY_FILE}, {CHAIN_FILE}, {CA_FILE}",
                s.spiffe_id,
                super::when::rfc3339(s.expires_at),
                dir.display()
            );
            Ok(())
        }
    }
}
