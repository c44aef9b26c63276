//! Sigil agent (`sigil agent`, `sigil-agent`): joins the broker, keeps its bot identity fresh in a state
//! directory, writes outputs (X.509-SVID, JWT-SVID, identity files) and serves the
//! SPIFFE Workload API on a unix socket.
//!
//! Links `sigil-core` only, never the broker. Layout: [`config`] (the YAML
//! file), [`join`] (one file per join method; [`join::client`] speaks the join
//! protocol), [`cloud`] (cloud credential exchanges and files),
//! [`session`] (identity + broker client), [`outputs`] (one file per output),
//! [`workload`] (Workload API: attestation, cache, handlers), [`runtime`] (loops,
//! one-shot), and small pure helpers ([`backoff`], [`schedule`], [`jwt`], [`files`]).

pub mod atomic_dir;
pub mod backoff;
pub mod bundle;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod config_cloud;
pub mod config_database;
pub mod config_kubernetes;
pub mod config_ssh;
pub mod files;
pub mod health;
pub mod heartbeat;
pub mod join;
pub mod metrics;
pub mod outputs;
pub mod reload;
pub mod renewal;
pub mod runtime;
pub mod schedule;
pub mod session;
pub mod state;
pub mod workload;

pub use config::AgentConfig;
pub use runtime::{Agent, AgentError};
