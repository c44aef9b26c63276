//! Vectors from the AWS documentation: the Signature Version 4 test suite
//! (`aws-sig-v4-test-suite`: service `service`, region `us-east-1`, 2015-08-30
//! 12:36:00 UTC, key `AKIDEXAMPLE`) and the IAM `ListUsers` walk-through.
//! Each asserts the canonical request, the string to sign and the signature
//! separately, so a failure names the step that is wrong.

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20150830T123600Z";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn headers(h: &[(&str, &str)]) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Canonical request, string to sign and signature of one suite request.
fn suite(method: &str, path: &str, query: &str, extra: &[(&str, &str)], body: &[u8]) -> (Canonical, String, String) {
    let mut h = headers(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)]);
    h.extend(headers(extra));
    let c = canonical_request(method, path, query, &h, body);
    let scope = credential_scope(DATE, "us-east-1", "service").unwrap();
    let sts = string_to_sign(HMAC_ALGORITHM, DATE, &scope, &c.request);
    let key = hmac_signing_key(SECRET, day_of(DATE).unwrap(), "us-east-1", "service");
    let sig = hmac_signature_hex(&key, &sts);
    (c, sts, sig)
}

#[test]
fn get_vanilla_matches_the_aws_test_suite() {
    let (c, sts, sig) = suite("GET", "/", "", &[], b"");
    assert_eq!(c.request, format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY_SHA256}"));
    assert_eq!(
        sts,
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    );
    assert_eq!(sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    assert_eq!(
        authorization(HMAC_ALGORITHM, "AKIDEXAMPLE", "20150830/us-east-1/service/aws4_request", &c.signed_headers, &sig),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn query_parameters_are_sorted_by_name_then_value() {
    let (c, sts, sig) = suite("GET", "/", "Param2=value2&Param1=value1", &[], b"");
    assert_eq!(c.request.lines().nth(2), Some("Param1=value1&Param2=value2"));
    assert!(sts.ends_with("\n816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"), "{sts}");
    assert_eq!(sig, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    let (c, _, sig) = suite("GET", "/", "Param1=value2&Param1=value1", &[], b"");
    assert_eq!(c.request.lines().nth(2), Some("Param1=value1&Param1=value2"));
    assert_eq!(sig, "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694");
}

#[test]
fn unreserved_path_characters_are_not_encoded() {
    let path = "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let (c, _, sig) = suite("GET", path, "", &[], b"");
    assert_eq!(c.request.lines().nth(1), Some(path));
    assert_eq!(sig, "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f");
}

#[test]
fn post_body_is_hashed_and_content_type_signed() {
    let (c, sts, sig) = suite("POST", "/", "", &[("Content-Type", "application/x-www-form-urlencoded")], b"Param1=value1");
    assert_eq!(
        c.request,
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    );
    assert!(sts.ends_with("\n42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"), "{sts}");
    assert_eq!(sig, "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
}

#[test]
fn header_values_are_trimmed_and_inner_spaces_collapsed() {
    let (c, _, _) = suite("GET", "/", "", &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")], b"");
    assert!(c.request.contains("\nmy-header1:value1\nmy-header2:\"a b c\"\n"), "{}", c.request);
    assert!(c.request.contains("\nhost;my-header1;my-header2;x-amz-date\n"), "{}", c.request);
}

#[test]
fn non_ascii_and_reserved_path_bytes_are_percent_encoded_once_in_uppercase() {
    let (c, _, _) = suite("GET", "/\u{1234}/a b", "k=a+b", &[], b"");
    assert_eq!(c.request.lines().nth(1), Some("/%E1%88%B4/a%20b"));
    assert_eq!(c.request.lines().nth(2), Some("k=a%2Bb"));
}

#[test]
fn iam_list_users_matches_the_documented_walk_through() {
    let h = headers(&[
        ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
        ("host", "iam.amazonaws.com"),
        ("x-amz-date", DATE),
    ]);
    let c = canonical_request("GET", "/", "Action=ListUsers&Version=2010-05-08", &h, b"");
    assert_eq!(sha256_hex(c.request.as_bytes()), "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
    let scope = credential_scope(DATE, "us-east-1", "iam").unwrap();
    let key = hmac_signing_key(SECRET, "20150830", "us-east-1", "iam");
    assert_eq!(hex::encode(key.as_slice()), "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
    let sig = hmac_signature_hex(&key, &string_to_sign(HMAC_ALGORITHM, DATE, &scope, &c.request));
    assert_eq!(sig, "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
}

#[test]
fn signing_key_matches_the_aws_key_derivation_example() {
    let k = hmac_signing_key(SECRET, "20120215", "us-east-1", "iam");
    assert_eq!(hex::encode(k.as_slice()), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

#[test]
fn amz_dates_round_trip_and_malformed_ones_are_refused() {
    assert_eq!(format_amz_date(1_440_938_160).unwrap(), DATE);
    assert_eq!(parse_amz_date(DATE), Some(1_440_938_160));
    for bad in ["", "2015-08-30T12:36:00Z", "20150830T123600", "20151330T123600Z", "20150230T123600Z", "20150830T246000Z", "2015083OT123600Z", "+0150830T123600Z"] {
        assert_eq!(parse_amz_date(bad), None, "{bad}");
        assert!(matches!(credential_scope(bad, "us-east-1", "sts"), Err(SigV4Error::Date(_))), "{bad}");
    }
    assert!(format_amz_date(i64::MAX).is_err());
    assert!(format_amz_date(-62_167_219_201).is_err(), "year -1 has no YYYY form");
}
