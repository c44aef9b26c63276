//! The AWS RSA-2048 certificates that sign EC2 instance identity documents
//! (the `rsa2048` signature), one per region, shipped with the broker so an
//! `ec2` join token needs no configuration to trust them. A join token's
//! `config.signing_certificates` replaces this set (other partitions, tests).
//!
//! Public data, as AWS publishes it ("AWS public certificates", RSA-2048 tab,
//! under "Use the RSA-2048 signature to verify the instance identity
//! document" in the EC2 user guide,
//! https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/regions-certs.html).
//! Taken on 2026-12-02 from the copy Teleport ships for its `ec2` join
//! (gravitational/teleport `lib/auth/aws_certs.go`, which cites that page);
//! each file was checked to be a self-signed RSA-2048 certificate whose
//! signature verifies (the unit test below checks parse, key size, region
//! uniqueness). The files are under `ec2_certs/REGION.pem`; AWS adds
//! regions over time: a region missing here needs `config.signing_certificates`.

/// (region, PEM certificate) pairs; the document's region picks its one.
pub const SHIPPED: &[(&str, &str)] = &[
    ("af-south-1", include_str!("ec2_certs/af-south-1.pem")),
    ("ap-east-1", include_str!("ec2_certs/ap-east-1.pem")),
    ("ap-northeast-1", include_str!("ec2_certs/ap-northeast-1.pem")),
    ("ap-northeast-2", include_str!("ec2_certs/ap-northeast-2.pem")),
    ("ap-northeast-3", include_str!("ec2_certs/ap-northeast-3.pem")),
    ("ap-south-1", include_str!("ec2_certs/ap-south-1.pem")),
    ("ap-south-2", include_str!("ec2_certs/ap-south-2.pem")),
    ("ap-southeast-1", include_str!("ec2_certs/ap-southeast-1.pem")),
    ("ap-southeast-2", include_str!("ec2_certs/ap-southeast-2.pem")),
    ("ap-southeast-3", include_str!("ec2_certs/ap-southeast-3.pem")),
    ("ap-southeast-4", include_str!("ec2_certs/ap-southeast-4.pem")),
    ("ca-central-1", include_str!("ec2_certs/ca-central-1.pem")),
    ("ca-west-1", include_str!("ec2_certs/ca-west-1.pem")),
    ("cn-north-1", include_str!("ec2_certs/cn-north-1.pem")),
    ("cn-northwest-1", include_str!("ec2_certs/cn-northwest-1.pem")),
    ("eu-central-1", include_str!("ec2_certs/eu-central-1.pem")),
    ("eu-central-2", include_str!("ec2_certs/eu-central-2.pem")),
    ("eu-north-1", include_str!("ec2_certs/eu-north-1.pem")),
    ("eu-south-1", include_str!("ec2_certs/eu-south-1.pem")),
    ("eu-south-2", include_str!("ec2_certs/eu-south-2.pem")),
    ("eu-west-1", include_str!("ec2_certs/eu-west-1.pem")),
    ("eu-west-2", include_str!("ec2_certs/eu-west-2.pem")),
    ("eu-west-3", include_str!("ec2_certs/eu-west-3.pem")),
    ("il-central-1", include_str!("ec2_certs/il-central-1.pem")),
    ("me-central-1", include_str!("ec2_certs/me-central-1.pem")),
    ("me-south-1", include_str!("ec2_certs/me-south-1.pem")),
    ("sa-east-1", include_str!("ec2_certs/sa-east-1.pem")),
    ("us-east-1", include_str!("ec2_certs/us-east-1.pem")),
    ("us-east-2", include_str!("ec2_certs/us-east-2.pem")),
    ("us-gov-east-1", include_str!("ec2_certs/us-gov-east-1.pem")),
    ("us-gov-west-1", include_str!("ec2_certs/us-gov-west-1.pem")),
    ("us-west-1", include_str!("ec2_certs/us-west-1.pem")),
    ("us-west-2", include_str!("ec2_certs/us-west-2.pem")),
];

/// The shipped certificate of `region`, if any.
pub fn for_region(region: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|(r, _)| *r == region).map(|(_, pem)| *pem)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn every_shipped_certificate_is_one_self_signed_rsa_2048_certificate_of_a_distinct_region() {
        let mut seen = std::collections::BTreeSet::new();
        for (region, pem) in SHIPPED {
            assert!(seen.insert(*region), "{region} twice");
            let ders = sigil_core::pem::certificate_ders(pem, region).unwrap();
            assert_eq!(ders.len(), 1, "{region}");
            let (_, c) = X509Certificate::from_der(&ders[0]).unwrap();
            assert_eq!(c.issuer().as_raw(), c.subject().as_raw(), "{region}");
            c.verify_signature(None).unwrap();
            let bits = match c.public_key().parsed().unwrap() {
                x509_parser::public_key::PublicKey::RSA(k) => k.key_size(),
                _ => 0,
            };
            assert_eq!(bits, 2048, "{region}");
        }
        assert!(for_region("us-east-1").is_some() && for_region("eu-west-1").is_some() && for_region("nowhere-1").is_none());
    }
}
