//! Sigil core: what the broker, the agent and the CLI share, and nothing that
//! belongs to one of them. Plain types and rules ([`domain`]: SPIFFE IDs,
//! roles, tokens), the join wire formats ([`join_wire`]), keys and CSRs,
//! private file writes ([`fsutil`], [`safe_fs`]), the outbound HTTP client
//! ([`net`]), the connection admission shared by every listener ([`listen`]),
//! and log hygiene ([`logsafe`], [`logging`]).
//!
//! Layering (enforced by Cargo): `sigil-core` <- `sigil-broker`,
//! `sigil-core` <- `sigil-agent`, and the `sigil` CLI links both. The agent
//! never links the broker.

pub mod api;
pub mod clock;
pub mod csr;
pub mod domain;
pub mod fsutil;
pub mod join_wire;
pub mod jwt;
pub mod keys;
pub mod listen;
pub mod logging;
pub mod logsafe;
pub mod net;
pub mod peer;
pub mod pem;
pub mod safe_fs;
pub mod sigv4;
pub mod ssh;
pub mod xml;
