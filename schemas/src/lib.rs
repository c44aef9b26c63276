//! Wire definitions for Sigil and the shared API client.
//!
//! Generated protobuf code lives in the `*` modules below; callers convert to
//! their own domain types at their edge. [`client`] is the one API client used by
//! the CLI, the agent and the Terraform provider.

/// Sigil broker API (`sigil.v1`).
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod sigil {
    /// Version 1 of the broker API.
    pub mod v1 {
        tonic::include_proto!("sigil.v1");
    }
}

pub mod client;
pub mod identity;

/// Terraform plugin protocol 6 (`tfplugin6`), served by the Terraform provider.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod tfplugin6 {
    tonic::include_proto!("tfplugin6");
}

/// The SPIFFE Workload API (service `SpiffeWorkloadAPI`, served by `sigil agent`).
/// The standard proto has no package, so the generated module is `_`.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod spiffe_workload {
    tonic::include_proto!("_");
}

/// go-plugin's own services (`plugin`): controller, stdio and broker.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod go_plugin {
    tonic::include_proto!("plugin");
}

/// Terraform plugin protocol 5 (`tfplugin5`), for hosts that do not speak 6.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod tfplugin5 {
    tonic::include_proto!("tfplugin5");
}
