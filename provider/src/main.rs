//! `terraform-provider-sigil`: started by Terraform as a go-plugin plugin.

use sigil_provider::plugin::{self, services::ShutdownSignal, PluginEnv};
use sigil_provider::tfproto::server::ProviderService;
use sigil_provider::tfproto::v5::ProviderServiceV5;
use std::process::ExitCode;

/// Plugin protocol versions this binary speaks.
const PROTOCOL_VERSIONS: &[u32] = &[5, 6];

fn main() -> ExitCode {
    let env = PluginEnv::from_process();
    // SIGIL_PROVIDER_PROTOCOLS narrows what we offer (e.g. "5" for a host whose
    // protocol 6 support is broken); unknown entries are ignored.
    let offered: Vec<u32> = match std::env::var("SIGIL_PROVIDER_PROTOCOLS") {
        Ok(list) => list.split(',').filter_map(|v| v.trim().parse().ok()).filter(|v| PROTOCOL_VERSIONS.contains(v)).collect(),
        Err(_) => PROTOCOL_VERSIONS.to_vec(),
    };
    let version = match plugin::negotiate(&env, &offered) {
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
        let service = ProviderService::new(sigil_provider::sigil_provider());
        let routes = match version {
            5 => tonic::service::Routes::new(ProviderServiceV5::new(service).into_server()),
            _ => tonic::service::Routes::new(service.into_server()),
        };
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
