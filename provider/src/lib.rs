//! Sigil's Terraform provider, served over the Terraform plugin protocol 6.
//!
//! Layers, outermost first: [`plugin`] (go-plugin handshake, AutoMTLS, the
//! go-plugin side services), `tfproto` (tfplugin6 <-> domain conversion), the
//! protocol-agnostic provider and [`resources`], and the pure [`cty`] value model.

pub mod cty;
