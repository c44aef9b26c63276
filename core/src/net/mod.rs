//! Outbound network access: the one HTTP client every part of the broker and
//! agent uses to talk to something outside the process (issuer discovery and
//! JWKS, AWS STS, cloud metadata services, cloud token exchanges).
//!
//! Each caller states what it may reach in an explicit [`policy::Policy`]
//! (schemes, private networks, redirects, body size, deadline, trust roots);
//! the decisions are pure functions in [`policy`], the TLS trust in [`trust`],
//! and the I/O in [`http`]. Nothing else in the crate opens outbound HTTP
//! connections.

pub mod http;
pub mod policy;
pub mod trust;
