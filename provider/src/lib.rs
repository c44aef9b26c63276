//! Sigil's Terraform provider, served over the Terraform plugin protocol 6.
//!
//! Layers, outermost first: [`plugin`] (go-plugin handshake, AutoMTLS, the
//! go-plugin side services), [`tfproto`] (tfplugin6 <-> domain conversion), the
//! protocol-agnostic [`provider`] and its [`resources`], and the pure [`cty`]
//! value model. [`schema`] and [`diag`] are the domain types between them.

pub mod api;
pub mod broker_field;
pub mod clock;
pub mod config;
pub mod cty;
pub mod diag;
pub mod docs;
pub mod join_cache;
pub mod plugin;
pub mod provider;
pub mod resources;
pub mod schema;
pub mod tfproto;

use std::sync::Arc;

/// The provider with every Sigil resource and data source, reading `SIGIL_*`
/// settings from the process environment.
pub fn sigil_provider() -> Arc<provider::Provider> {
    Arc::new(provider::Provider::new(
        resources::all_resources(),
        resources::all_data_sources(),
        Box::new(|k: &str| std::env::var(k).ok()),
    ))
}
