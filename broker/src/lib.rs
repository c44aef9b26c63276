//! Sigil broker: the identity authority.
//!
//! Layout: [`ca`] (keys, certificate and JWT contents), [`store`]
//! (persistence), [`join`] (join verification, one file per method),
//! [`service`] (broker operations under RBAC), [`server`] (gRPC + HTTPS
//! front), [`audit`], [`bootstrap`] (first start, dev mode), [`config`].
//! Shared types come from `sigil-core`; the agent is a separate crate that
//! does not link this one.

pub mod audit;
pub mod bootstrap;
pub mod ca;
pub mod client_files;
pub mod config;
pub mod data_dir;
pub mod join;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;
#[cfg(test)]
mod test_rotation;
