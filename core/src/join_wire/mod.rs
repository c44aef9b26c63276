//! What the agent sends and the broker reads in a join: method names, payload
//! formats, signed messages (method names: [`crate::domain::Method`]). Both sides build on these, so a change is made once.

pub mod azure;
pub mod bound_keypair;
pub mod sts;
pub mod tpm;
pub mod tpm_wire;
