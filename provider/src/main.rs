//! `terraform-provider-sigil`: started by Terraform as a go-plugin plugin.

use sigil_provider::plugin::{self, services::ShutdownSignal, PluginEnv};
use sigil_provider::tfproto::server::ProviderService;
use std::process::ExitCode;

/// Plugin protocol versions this binary speaks.
const PROTOCOL_VERSIONS: &[u32] = &[6];

fn main() -> ExitCode {
    let env = PluginEnv::from_process();
    let version = match plugin::negotiate(&env, PROTOCOL_VERSIONS) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    // Logs go to stderr, which go-plugin forwards into Terraform's log (TF_LOG).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SIGIL_PROVIDER_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        // Terraform forwards Ctrl-C to plugins; like go-plugin servers, wait for
        // the host's Shutdown instead of dying mid-request.
        tokio::spawn(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                tracing::debug!("ignoring interrupt; the host will shut us down");
            }
        });
        let routes = tonic::service::Routes::new(ProviderService::new(sigil_provider::sigil_provider()).into_server());
        plugin::serve(&env, version, routes, ShutdownSignal::new()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-sigil: {e}");
            ExitCode::from(1)
        }
    }
}
