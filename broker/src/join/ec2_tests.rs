//! Unit tests of the `ec2` verifier over fixtures made with openssl
//! (`testdata/ec2/`: two self-signed RSA-2048 "region" certificates valid
//! for 100 years, a document, its signature by region a as DER and as
//! indefinite-length BER (`openssl cms -sign -nodetach -nocerts -binary -md
//! sha256 [-stream -indef] -outform DER`), and its signature by region b).
#![allow(clippy::unwrap_used)]
use super::*;

const DOC: &str = include_str!("testdata/ec2/document.json");
const SIG_DER: &str = include_str!("testdata/ec2/document.rsa2048");
const SIG_BER: &str = include_str!("testdata/ec2/document-ber.rsa2048");
const SIG_BY_B: &str = include_str!("testdata/ec2/document-by-b.rsa2048");
const CERT_A: &str = include_str!("testdata/ec2/region-a.pem");
const CERT_B: &str = include_str!("testdata/ec2/region-b.pem");
/// 2027-06-01: after the fixtures were made (2026-12-02) and the pendingTime (2026-01-02T03:04:05Z).
const NOW: i64 = 1_811_808_000;

fn payload(document: &str, rsa2048: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"document": document, "rsa2048": rsa2048})).unwrap()
}

/// Region `us-test-1` (the document's) has certificate a, `us-test-2` b.
const TABLE: &[(&str, &str)] = &[("us-test-1", CERT_A), ("us-test-2", CERT_B)];

#[test]
fn a_document_signed_by_its_regions_certificate_verifies_in_der_and_in_indefinite_length_ber() {
    for sig in [SIG_DER, SIG_BER] {
        let doc = verify_payload(&payload(DOC, sig), &Signers::PerRegion(TABLE), NOW).unwrap();
        assert_eq!((doc.account_id.as_str(), doc.instance_id.as_str(), doc.region.as_str()), ("111122223333", "i-0123456789abcdef0", "us-test-1"));
        let a = doc.attributes();
        assert_eq!(a["aws_account"], "111122223333");
        assert_eq!(a["instance_type"], "t3.micro");
        assert_eq!(doc.binding_key(), "ec2:111122223333:i-0123456789abcdef0");
    }
    assert!(SIG_BER.contains('\n'), "the BER fixture is served in lines, as IMDS does");
}

#[test]
fn a_certificate_of_another_region_does_not_verify() {
    // Signed by b, but the document says us-test-1 (certificate a).
    let e = verify_payload(&payload(DOC, SIG_BY_B), &Signers::PerRegion(TABLE), NOW).unwrap_err();
    assert!(e.to_string().contains("not signed by any of the certificates"), "{e}");
    // The same document claiming region b's name: the signature by a no longer verifies.
    let moved = DOC.replace("\"us-test-1\"", "\"us-test-2\"");
    assert!(verify_payload(&payload(&moved, SIG_DER), &Signers::PerRegion(TABLE), NOW).is_err());
    // A region without a certificate is refused by name.
    let e = verify_payload(&payload(DOC, SIG_DER), &Signers::PerRegion(&[("us-test-2", CERT_B)]), NOW).unwrap_err();
    assert!(e.to_string().contains("\"us-test-1\""), "{e}");
}

#[test]
fn a_tampered_document_is_refused_whichever_copy_is_changed() {
    let tampered = DOC.replace("111122223333", "111122223334");
    let e = verify_payload(&payload(&tampered, SIG_DER), &Signers::PerRegion(TABLE), NOW).unwrap_err();
    assert!(e.to_string().contains("not the document sent") || e.to_string().contains("does not verify"), "{e}");
    // The embedded copy changed (one byte inside the signature's content): the digest no longer matches.
    let mut der = B64.decode(SIG_DER.trim()).unwrap();
    let at = der.windows(12).position(|w| w == b"111122223333").unwrap();
    der[at + 11] = b'4';
    let e = verify_payload(&payload(&tampered, &B64.encode(&der)), &Signers::PerRegion(TABLE), NOW).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[test]
fn configured_certificates_replace_the_per_region_table() {
    let only_b = Signers::Configured(configured(CERT_B).unwrap());
    assert!(verify_payload(&payload(DOC, SIG_DER), &only_b, NOW).is_err());
    let a_and_b = Signers::Configured(configured(&format!("{CERT_B}{CERT_A}")).unwrap());
    assert!(verify_payload(&payload(DOC, SIG_DER), &a_and_b, NOW).is_ok());
    assert!(configured("not pem").is_err());
}

#[test]
fn oversize_and_malformed_input_is_refused_without_panicking() {
    let big = "A".repeat(MAX_PAYLOAD);
    assert!(matches!(verify_payload(&payload(DOC, &big), &Signers::PerRegion(TABLE), NOW), Err(JoinError::Invalid { .. })));
    let long_doc = format!("{{\"region\":\"us-test-1\",\"pad\":\"{}\"}}", "x".repeat(MAX_DOCUMENT));
    assert!(matches!(verify_payload(&payload(&long_doc, SIG_DER), &Signers::PerRegion(TABLE), NOW), Err(JoinError::Invalid { .. })));
    for sig in ["", "!!!", "MIIB", &B64.encode([0x30, 0x80, 0x30, 0x80])] {
        assert!(verify_payload(&payload(DOC, sig), &Signers::PerRegion(TABLE), NOW).is_err(), "{sig}");
    }
    assert!(verify_payload(b"{\"document\":1}", &Signers::PerRegion(TABLE), NOW).is_err());
    assert!(verify_payload(b"{\"document\":\"\",\"rsa2048\":\"\",\"extra\":1}", &Signers::PerRegion(TABLE), NOW).is_err());
}

#[test]
fn the_signing_certificate_must_be_valid_now() {
    let year_2300 = 10_413_792_000;
    let e = verify_payload(&payload(DOC, SIG_DER), &Signers::PerRegion(TABLE), year_2300).unwrap_err();
    assert!(e.to_string().contains("not valid now"), "{e}");
}

#[test]
fn instance_age_is_checked_against_pending_time() {
    let doc = verify_payload(&payload(DOC, SIG_DER), &Signers::PerRegion(TABLE), NOW).unwrap();
    let launched = 1_767_323_045; // 2026-01-02T03:04:05Z
    assert!(check_age(&doc, None, NOW).is_ok());
    assert!(check_age(&doc, Some(3600), launched + 3600).is_ok());
    assert!(check_age(&doc, Some(3600), launched + 3601).is_err());
    assert!(check_age(&doc, None, launched - MAX_SKEW_SECS - 1).is_err(), "launched in the future");
}

fn token(config: &[(&str, &str)], allow: serde_json::Value) -> JoinToken {
    let config: serde_json::Map<String, serde_json::Value> = config.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
    serde_json::from_value(serde_json::json!({"name": "t", "bot": "b", "method": "ec2", "expires_at": i64::MAX, "config": config, "allow": allow})).unwrap()
}

#[test]
fn join_tokens_need_certificates_an_exact_account_in_every_rule_and_valid_settings() {
    let rule = serde_json::json!([{"aws_account": "111122223333"}]);
    assert!(check_token(&token(&[("signing_certificates", CERT_A)], rule.clone())).is_ok());
    let e = check_token(&token(&[("signing_certificates", "garbage")], rule.clone())).unwrap_err();
    assert!(e.to_string().contains("config.signing_certificates"), "{e}");
    if ec2_certs::SHIPPED.is_empty() {
        assert!(check_token(&token(&[], rule.clone())).unwrap_err().to_string().contains("config.signing_certificates"));
    }
    for allow in [serde_json::json!([{"aws_region": "us-test-1"}]), serde_json::json!([{"aws_account": "1111*"}])] {
        let e = check_token(&token(&[("signing_certificates", CERT_A)], allow)).unwrap_err();
        assert!(e.to_string().contains("allow[0]"), "{e}");
    }
    let e = check_token(&token(&[("signing_certificates", CERT_A), ("max_instance_age", "soon")], rule.clone())).unwrap_err();
    assert!(e.to_string().contains("config.max_instance_age"), "{e}");
    let e = check_token(&token(&[("signing_certificates", CERT_A), ("allow_rejoin", "yes")], rule)).unwrap_err();
    assert!(e.to_string().contains("config.allow_rejoin"), "{e}");
}

/// A document AWS really signed (us-west-2, 2021; the public test vector of
/// Teleport's ec2 join, `lib/auth/join_ec2_test.go`): BER with indefinite
/// lengths and a constructed OCTET STRING content, signed attributes, no
/// certificate. `aws-us-west-2.json` is its content as `openssl cms -verify
/// -noverify -certfile ec2_certs/us-west-2.pem` printed it (verification successful).
const AWS_DOC: &str = include_str!("testdata/ec2/aws-us-west-2.json");
const AWS_SIG: &str = include_str!("testdata/ec2/aws-us-west-2.rsa2048");

#[test]
fn a_document_aws_signed_verifies_with_the_shipped_certificate_of_its_region_only() {
    let at = 1_630_704_347; // 2021-09-03T21:25:47Z, its signing time
    let doc = verify_payload(&payload(AWS_DOC, AWS_SIG), &Signers::PerRegion(ec2_certs::SHIPPED), at).unwrap();
    assert_eq!((doc.account_id.as_str(), doc.instance_id.as_str(), doc.region.as_str()), ("278576220453", "i-078517ca8a70a1dde", "us-west-2"));
    assert_eq!(doc.pending_time, "2021-09-03T21:25:44Z");
    assert!(check_age(&doc, Some(300), at).is_ok());
    // us-west-1's certificate in us-west-2's place does not verify it.
    let wrong = [("us-west-2", ec2_certs::for_region("us-west-1").unwrap())];
    assert!(verify_payload(&payload(AWS_DOC, AWS_SIG), &Signers::PerRegion(&wrong), at).is_err());
    // One byte of the document changed, AWS's signature kept.
    let tampered = AWS_DOC.replace("t2.medium", "t2.mediun");
    assert!(verify_payload(&payload(&tampered, AWS_SIG), &Signers::PerRegion(ec2_certs::SHIPPED), at).is_err());
}
