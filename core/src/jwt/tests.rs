//! The verifier's own table of negative cases (the end-to-end table that runs
//! the same hostile tokens through every entry point is `cli/tests/jwt_verdicts.rs`).
#![allow(clippy::unwrap_used)]

use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

fn enc(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

struct Es {
    kp: EcdsaKeyPair,
}

impl Es {
    fn new() -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        Self { kp: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap() }
    }
    fn jwk(&self, kid: &str) -> Value {
        let p = self.kp.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])})
    }
    fn jwks(&self, kid: &str) -> KeySet {
        KeySet::from_value(&json!({"keys": [self.jwk(kid)]})).unwrap()
    }
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", enc(header), enc(claims));
        let sig = self.kp.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn claims(now: i64) -> Value {
    json!({"iss": "https://issuer.test", "aud": ["x", "sigil"], "exp": now + 300, "iat": now, "nbf": now, "sub": "s"})
}

/// A case: input and a predicate on the expected error.
type Case = (Value, fn(&JwtError) -> bool);

const NOW: i64 = 1_700_000_000;

/// What the join does: the shared verifier, then issuer and audience.
fn check(token: &str, keys: &KeySet) -> Result<Map<String, Value>, JwtError> {
    let c = verify(token, keys, NOW)?;
    check_issuer(&c, "https://issuer.test")?;
    check_audience(&c, "sigil")?;
    Ok(c)
}

#[test]
fn a_well_formed_token_verifies_and_audience_may_be_an_array() {
    let k = Es::new();
    let t = k.sign(&json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}), &claims(NOW));
    assert_eq!(check(&t, &k.jwks("k1")).unwrap()["sub"], "s");
}

#[test]
fn eddsa_and_rsa_pss_tokens_verify_with_keys_of_their_type() {
    let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let keys = KeySet::from_value(&json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())},
        {"kty": "RSA", "kid": "rsa", "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)},
    ]}))
    .unwrap();
    let input = format!("{}.{}", enc(&json!({"alg": "EdDSA", "kid": "ed"})), enc(&claims(NOW)));
    let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(ed.sign(input.as_bytes()).as_ref()));
    assert!(check(&t, &keys).is_ok());
    let input = format!("{}.{}", enc(&json!({"alg": "PS256", "kid": "rsa"})), enc(&claims(NOW)));
    let mut sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(&aws_lc_rs::signature::RSA_PSS_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    assert!(check(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig)), &keys).is_ok());
}

#[test]
fn header_tricks_are_refused_before_any_key_is_used() {
    let k = Es::new();
    let keys = k.jwks("k1");
    let cases: &[Case] = &[
        (json!({"alg": "none", "kid": "k1"}), |e| matches!(e, JwtError::ForbiddenAlgorithm(_))),
        (json!({"alg": "HS256", "kid": "k1"}), |e| matches!(e, JwtError::ForbiddenAlgorithm(_))),
        (json!({"alg": "ES256", "kid": "k1", "jwk": {}}), |e| *e == JwtError::ForbiddenHeader("jwk")),
        (json!({"alg": "ES256", "kid": "k1", "jku": "https://evil"}), |e| *e == JwtError::ForbiddenHeader("jku")),
        (json!({"alg": "ES256", "kid": "k1", "x5u": "https://evil"}), |e| *e == JwtError::ForbiddenHeader("x5u")),
        (json!({"alg": "ES256", "kid": "k1", "x5c": ["AA"]}), |e| *e == JwtError::ForbiddenHeader("x5c")),
        (json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}), |e| matches!(e, JwtError::UnknownCritical(_))),
        (json!({"alg": "ES256", "kid": "k1", "typ": "dpop+jwt"}), |e| matches!(e, JwtError::WrongType(_))),
        (json!({"alg": "ES256", "kid": "k1", "typ": 1}), |e| matches!(e, JwtError::WrongType(_))),
        (json!({"alg": "ES256", "kid": 1}), |e| matches!(e, JwtError::Malformed(_))),
        (json!({"alg": "RS256", "kid": "k1"}), |e| matches!(e, JwtError::AlgorithmMismatch { .. })),
        (json!({"alg": "ES256", "kid": "other"}), |e| matches!(e, JwtError::UnknownKid(_))),
    ];
    for (header, is_expected) in cases {
        let t = k.sign(header, &claims(NOW));
        let err = check(&t, &keys).unwrap_err();
        assert!(is_expected(&err), "{header}: {err}");
    }
    for typ in ["JWT", "jwt", "JOSE", "application/jwt"] {
        assert!(check(&k.sign(&json!({"alg": "ES256", "kid": "k1", "typ": typ}), &claims(NOW)), &keys).is_ok(), "{typ}");
    }
}

#[test]
fn a_token_without_kid_needs_a_one_key_set() {
    let k = Es::new();
    let t = k.sign(&json!({"alg": "ES256"}), &claims(NOW));
    assert!(check(&t, &k.jwks("k1")).is_ok());
    let two = KeySet::from_value(&json!({"keys": [k.jwk("k1"), Es::new().jwk("k2")]})).unwrap();
    assert_eq!(check(&t, &two).unwrap_err(), JwtError::AmbiguousKey(2));
}

#[test]
fn empty_or_foreign_signatures_are_refused() {
    let k = Es::new();
    let t = k.sign(&json!({"alg": "ES256", "kid": "k1"}), &claims(NOW));
    let unsigned = format!("{}.", t.rsplit_once('.').unwrap().0);
    assert_eq!(check(&unsigned, &k.jwks("k1")).unwrap_err(), JwtError::EmptySignature);
    assert_eq!(check(&t, &Es::new().jwks("k1")).unwrap_err(), JwtError::BadSignature);
    // Signature of one payload spliced onto another.
    let other = k.sign(&json!({"alg": "ES256", "kid": "k1"}), &json!({"sub": "admin"}));
    let parts: Vec<&str> = t.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
    assert_eq!(check(&spliced, &k.jwks("k1")).unwrap_err(), JwtError::BadSignature);
}

#[test]
fn registered_claims_are_enforced() {
    let k = Es::new();
    let keys = k.jwks("k1");
    let mut cases: Vec<Case> = vec![];
    let mut c = claims(NOW);
    c["iss"] = json!("https://evil.test");
    cases.push((c, |e| matches!(e, JwtError::WrongIssuer { .. })));
    let mut c = claims(NOW);
    c["aud"] = json!("other");
    cases.push((c, |e| matches!(e, JwtError::WrongAudience { .. })));
    let mut c = claims(NOW);
    c.as_object_mut().unwrap().remove("aud");
    cases.push((c, |e| *e == JwtError::MissingClaim("aud")));
    let mut c = claims(NOW);
    c.as_object_mut().unwrap().remove("exp");
    cases.push((c, |e| *e == JwtError::MissingClaim("exp")));
    let mut c = claims(NOW);
    c["exp"] = json!(NOW - LEEWAY_SECS);
    cases.push((c, |e| matches!(e, JwtError::Expired { .. })));
    let mut c = claims(NOW);
    c["nbf"] = json!(NOW + LEEWAY_SECS + 1);
    cases.push((c, |e| matches!(e, JwtError::NotYetValid { .. })));
    let mut c = claims(NOW);
    c["iat"] = json!(NOW + 3600);
    cases.push((c, |e| matches!(e, JwtError::IssuedInFuture { .. })));
    for (c, is_expected) in cases {
        let err = check(&k.sign(&json!({"alg": "ES256", "kid": "k1"}), &c), &keys).unwrap_err();
        assert!(is_expected(&err), "{c}: {err}");
    }
}

#[test]
fn oversized_and_malformed_tokens_are_refused_without_parsing() {
    let big = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(parse(&big).unwrap_err(), JwtError::TooLarge { .. }));
    for bad in ["", "a.b", "a.b.c.d", "e30=.e30.AA", "!!.e30.AA", " e30.e30.AA"] {
        assert!(matches!(parse(bad).unwrap_err(), JwtError::Malformed(_)), "{bad}");
    }
}

#[test]
fn peek_reads_what_parse_would_refuse_but_stays_bounded() {
    let t = format!("{}.{}.", enc(&json!({"alg": "none"})), enc(&json!({"exp": 5})));
    assert_eq!(peek(&t).unwrap().claim_i64("exp"), Some(5));
    assert!(parse(&t).is_err());
    assert!(matches!(peek(&"a".repeat(header::MAX_PEEK_BYTES + 1)), Err(JwtError::TooLarge { .. })));
}
