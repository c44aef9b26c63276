//! Sigil: short-lived SPIFFE identities for machines and workloads.
//!
//! Layout: [`domain`] (plain types and rules), [`ca`] (keys, certificate and JWT
//! contents), [`store`] (persistence), [`join`] (join methods), [`service`] (broker
//! operations), [`server`] (gRPC + HTTPS front), [`cli`] (the `sigil` command).

pub mod agent;
pub mod audit;
pub mod bootstrap;
pub mod ca;
pub mod cloud;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod domain;
pub mod fsutil;
pub mod join;
pub mod jwt;
pub mod logsafe;
pub mod net;
pub mod peer;
pub mod pem;
pub mod safe_fs;
pub mod server;
pub mod sigv4;
pub mod service;
pub mod store;
pub mod xml;
