//! tfplugin6 edge: converts protobuf messages to the provider's domain types
//! and back ([`convert`]), and serves the `tfplugin6.Provider` service
//! ([`server`]), also as protocol 5 ([`v5`]). Generated types stop here.

pub mod convert;
pub mod server;
pub mod v5;
