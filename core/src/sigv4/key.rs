//! HMAC signing (access key credentials): the key derivation chain and the signature.

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request")`.
/// The secret and every intermediate key are wiped when dropped.
pub fn hmac_signing_key(secret: &str, day: &str, region: &str, service: &str) -> Zeroizing<Vec<u8>> {
    let seed = Zeroizing::new(format!("AWS4{secret}"));
    let k_date = hmac_sha256(seed.as_bytes(), day.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Lowercase hex `HMAC-SHA256(signing key, string to sign)`.
pub fn hmac_signature_hex(signing_key: &[u8], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(signing_key, string_to_sign.as_bytes()).as_slice())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec())
}
