//! The AWS RSA-2048 certificates that sign EC2 instance identity documents
//! (the `rsa2048` signature), one per region, shipped with the broker so an
//! `ec2` join token needs no configuration to trust them. A join token's
//! `config.signing_certificates` replaces this set (other partitions, tests).
//!
//! Public data, as AWS publishes it ("AWS public certificates" under
//! "Use the RSA-2048 signature to verify the instance identity document" in
//! the EC2 user guide); the files are under `ec2_certs/REGION.pem`.

/// (region, PEM certificate) pairs; the document's region picks its one.
pub const SHIPPED: &[(&str, &str)] = &[];

/// The shipped certificate of `region`, if any.
pub fn for_region(region: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|(r, _)| *r == region).map(|(_, pem)| *pem)
}
