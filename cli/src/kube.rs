//! `sigil kube cert` (the agent's `kubernetes` output once: same files, same
//! writer) and `sigil kube credential` (the exec credential plugin the exec
//! kubeconfig runs; reads files, never the network).

use super::Ctx;
use anyhow::{anyhow, Result};
use clap::Subcommand;
use sigil_agent::config::{Dur, KubernetesOutput};
use sigil_agent::outputs::kube_credential;
use sigil_agent::outputs::kubernetes::{self, CERT_FILE, CLIENT_CA_FILE, KEY_FILE, KUBECONFIG_FILE};
use sigil_core::safe_fs::Access;
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum KubeCmd {
    /// Issue a Kubernetes client certificate (CN = --user, O = each --group) and
    /// write tls.crt, tls.key, kubeconfig and kubernetes-ca.pem (plus ca.pem
    /// with --cluster-ca-file) to --dir.
    Cert {
        /// Directory for the files (created 0700; they switch together, like the agent's).
        #[arg(long)]
        dir: PathBuf,
        /// API server URL (https://HOST:PORT).
        #[arg(long)]
        server: String,
        /// CA (PEM) of the API server's certificate (default: system roots).
        #[arg(long)]
        cluster_ca_file: Option<PathBuf>,
        /// Kubernetes user name (the certificate's CN).
        #[arg(long)]
        user: String,
        /// Kubernetes group (the certificate's O); repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Name of the kubeconfig's cluster, user and context.
        #[arg(long, default_value = "sigil")]
        context_name: String,
        /// Write an exec kubeconfig (runs `sigil kube credential --dir DIR`)
        /// instead of one naming tls.crt and tls.key.
        #[arg(long)]
        exec: bool,
        /// Absolute path of the sigil binary the exec kubeconfig runs (default: this one).
        #[arg(long)]
        sigil_path: Option<PathBuf>,
        /// Lifetime, e.g. 1h (default: broker default; capped by the role).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Print a client.authentication.k8s.io/v1 ExecCredential from the files in
    /// --dir (the exec plugin of the kubeconfig the kubernetes output writes).
    /// No network; fails with the reason on stderr when the files are missing
    /// or the certificate expired.
    Credential {
        /// The kubernetes output's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

pub(crate) async fn run(ctx: &Ctx, c: KubeCmd) -> Result<()> {
    match c {
        KubeCmd::Cert { dir, server, cluster_ca_file, user, groups, context_name, exec, sigil_path, ttl } => {
            let cfg = KubernetesOutput {
                dir,
                server,
                cluster_ca_file,
                insecure_skip_tls_verify: false,
                user,
                groups,
                context_name,
                exec,
                sigil_path,
                ttl: ttl.map(|d| Dur(d.into())),
                owner: None,
                group: None,
                mode: None,
            };
            cfg.validate("")?;
            let mut client = ctx.client().await?;
            let cert = kubernetes::write_dir(&mut client, &cfg, Access::PRIVATE).await.map_err(|e| anyhow!(e))?;
            eprintln!(
                "certificate for user {} (serial {}, expires at {}) written to {}: {CERT_FILE}, {KEY_FILE}, {KUBECONFIG_FILE}, {CLIENT_CA_FILE}",
                cfg.user,
                cert.serial,
                super::when::rfc3339(cert.expires_at),
                cfg.dir.display()
            );
            Ok(())
        }
        KubeCmd::Credential { dir } => {
            kube_credential::check_exec_info(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref())?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let json = tokio::task::spawn_blocking(move || kube_credential::exec_credential(&dir, now)).await??;
            // One write of the whole object: a reader never sees half of it.
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        }
    }
}
