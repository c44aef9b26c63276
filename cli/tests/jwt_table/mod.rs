//! The table of hostile tokens every JWT verifier entry point must judge alike
//! (`jwt_verdicts.rs` runs it through the join, the agent's `ValidateJWTSVID`
//! and `federation verify`). The kinds are the join battery's (`join_oidc.rs`)
//! plus header, key-choice and time cases that the three verifiers used to
//! decide differently.
//!
//! Two key sets: `Several` (RS256, PS256, ES256 and EdDSA keys, each with a
//! `kid`) and `One` (the ES256 key alone). Every token carries claims that all
//! callers accept (issuer, audience, SPIFFE ID subject), so a refusal can only
//! come from the shared rules: header, key choice, signature, size and time.
#![allow(dead_code, clippy::unwrap_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// `iss` of every token.
pub const ISSUER: &str = "https://issuer.example";
/// The audience every verifier is asked about.
pub const AUDIENCE: &str = "sigil";
/// `sub` of every token (a SPIFFE ID, as `ValidateJWTSVID` requires).
pub const SUBJECT: &str = "spiffe://example.org/table";

/// Which key set a row is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// rsa-1 (RS256), pss-1 (PS256), ec-1 (ES256), ed-1 (EdDSA).
    Several,
    /// ec-1 alone.
    One,
}

/// Private keys: the published ones and a stranger's.
pub struct Keys {
    rsa: aws_lc_rs::rsa::KeyPair,
    pss: aws_lc_rs::rsa::KeyPair,
    ec: EcdsaKeyPair,
    ed: Ed25519KeyPair,
    stranger: EcdsaKeyPair,
}

/// Who signs.
#[derive(Debug, Clone, Copy)]
pub enum Signer {
    /// rsa-1, PKCS#1 v1.5 SHA-256.
    Rs256,
    /// rsa-1's key, but PSS.
    Rs256KeyPss,
    /// pss-1, PSS SHA-256.
    Ps256,
    /// ec-1.
    Es256,
    /// ed-1.
    EdDsa,
    /// A P-256 key nobody published.
    Stranger,
}

fn enc(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

fn ec_pair() -> EcdsaKeyPair {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
}

fn rsa_jwk(k: &aws_lc_rs::rsa::KeyPair, kid: &str, alg: &str) -> Value {
    let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public_key());
    json!({"kty": "RSA", "use": "sig", "alg": alg, "kid": kid, "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
}

fn ec_jwk(k: &EcdsaKeyPair, kid: &str) -> Value {
    let p = k.public_key().as_ref();
    json!({"kty": "EC", "use": "sig", "crv": "P-256", "alg": "ES256", "kid": kid, "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])})
}

impl Keys {
    pub fn generate() -> Self {
        let rsa = || aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap();
        Self { rsa: rsa(), pss: rsa(), ec: ec_pair(), ed, stranger: ec_pair() }
    }

    /// The published JWKS of `set`.
    pub fn jwks(&self, set: Set) -> Value {
        match set {
            Set::One => json!({"keys": [ec_jwk(&self.ec, "ec-1")]}),
            Set::Several => json!({"keys": [
                rsa_jwk(&self.rsa, "rsa-1", "RS256"),
                rsa_jwk(&self.pss, "pss-1", "PS256"),
                ec_jwk(&self.ec, "ec-1"),
                {"kty": "OKP", "use": "sig", "crv": "Ed25519", "alg": "EdDSA", "kid": "ed-1", "x": B64.encode(self.ed.public_key().as_ref())},
            ]}),
        }
    }

    /// The stranger's public key as a JWK (for the embedded-key row).
    pub fn stranger_jwk(&self) -> Value {
        ec_jwk(&self.stranger, "ec-1")
    }

    fn sign_bytes(&self, who: Signer, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let rsa = |k: &aws_lc_rs::rsa::KeyPair, pad: &'static dyn aws_lc_rs::signature::RsaEncoding| {
            let mut sig = vec![0; k.public_modulus_len()];
            k.sign(pad, &rng, msg, &mut sig).unwrap();
            sig
        };
        match who {
            Signer::Rs256 => rsa(&self.rsa, &RSA_PKCS1_SHA256),
            Signer::Rs256KeyPss => rsa(&self.rsa, &RSA_PSS_SHA256),
            Signer::Ps256 => rsa(&self.pss, &RSA_PSS_SHA256),
            Signer::Es256 => self.ec.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::EdDsa => self.ed.sign(msg).as_ref().to_vec(),
            Signer::Stranger => self.stranger.sign(&rng, msg).unwrap().as_ref().to_vec(),
        }
    }

    /// A compact JWS of `header` and `claims` signed by `who`.
    pub fn sign(&self, who: Signer, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", enc(header), enc(claims));
        let sig = self.sign_bytes(who, input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    }

    /// HS256 with the RSA key's public modulus as the HMAC secret (alg confusion).
    pub fn hs256_with_public_key(&self, header: &Value, claims: &Value) -> String {
        let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public_key());
        let input = format!("{}.{}", enc(header), enc(claims));
        let tag = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &c.n), input.as_bytes());
        format!("{input}.{}", B64.encode(tag.as_ref()))
    }
}

/// Claims every caller accepts at `now`.
pub fn claims(now: i64) -> Value {
    json!({"iss": ISSUER, "aud": [AUDIENCE], "sub": SUBJECT, "iat": now - 5, "nbf": now - 5, "exp": now + 300})
}

fn with(now: i64, edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = claims(now);
    edit(&mut c);
    c
}

/// Makes a row's token from the keys and the current time.
pub type Mint = Box<dyn Fn(&Keys, i64) -> String>;

/// One row: a token made at `now` (time-sensitive rows are minted right
/// before each entry point judges them), the key set, and the verdict.
pub struct Row {
    /// What the token is.
    pub name: &'static str,
    /// Key set the verifiers hold.
    pub set: Set,
    /// Whether every verifier must accept it.
    pub accept: bool,
    /// The token, given the current time.
    pub mint: Mint,
}

fn row(name: &'static str, set: Set, accept: bool, mint: impl Fn(&Keys, i64) -> String + 'static) -> Row {
    Row { name, set, accept, mint: Box::new(mint) }
}

fn signed(who: Signer, header: Value) -> impl Fn(&Keys, i64) -> String {
    move |k, now| k.sign(who, &header, &claims(now))
}

fn signed_claims(who: Signer, header: Value, edit: fn(i64, &mut Value)) -> impl Fn(&Keys, i64) -> String {
    move |k, now| k.sign(who, &header, &with(now, |c| edit(now, c)))
}

fn es(kid: &str) -> Value {
    json!({"alg": "ES256", "kid": kid})
}

/// The table.
pub fn rows() -> Vec<Row> {
    use Set::{One, Several};
    use Signer::*;
    vec![
        // Valid tokens, one per algorithm family.
        row("valid ES256", Several, true, signed(Es256, json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}))),
        row("valid RS256", Several, true, signed(Rs256, json!({"alg": "RS256", "kid": "rsa-1"}))),
        row("valid PS256 (RSA-PSS key)", Several, true, signed(Ps256, json!({"alg": "PS256", "kid": "pss-1"}))),
        row("valid EdDSA (Ed25519 key)", Several, true, signed(EdDsa, json!({"alg": "EdDSA", "kid": "ed-1"}))),
        // Algorithm tricks.
        row("alg none, no signature", Several, false, |_, now| format!("{}.{}.", enc(&json!({"alg": "none", "kid": "ec-1"})), enc(&claims(now)))),
        row("alg NONE with a signature", Several, false, signed(Es256, json!({"alg": "NONE", "kid": "ec-1"}))),
        row("HS256 keyed with the RSA public key", Several, false, |k, now| k.hs256_with_public_key(&json!({"alg": "HS256", "kid": "rsa-1"}), &claims(now))),
        row("RS256 header naming the EC key", Several, false, signed(Rs256, json!({"alg": "RS256", "kid": "ec-1"}))),
        row("PS256 on a key pinned to RS256", Several, false, signed(Rs256KeyPss, json!({"alg": "PS256", "kid": "rsa-1"}))),
        row("ES256 header naming the Ed25519 key", Several, false, signed(Es256, es("ed-1"))),
        // Key choice and signature.
        row("unknown kid", Several, false, signed(Stranger, es("unpublished"))),
        row("published kid, stranger's signature", Several, false, signed(Stranger, es("ec-1"))),
        row("signature over other claims", Several, false, |k, now| {
            let good = k.sign(Es256, &es("ec-1"), &claims(now));
            let evil = enc(&with(now, |c| c["sub"] = json!("spiffe://example.org/admin")));
            let p: Vec<&str> = good.split('.').collect();
            format!("{}.{evil}.{}", p[0], p[2])
        }),
        row("no kid, several keys", Several, false, signed(Es256, json!({"alg": "ES256"}))),
        row("no kid, one key", One, true, signed(Es256, json!({"alg": "ES256"}))),
        row("kid not a string", Several, false, signed(Es256, json!({"alg": "ES256", "kid": 1}))),
        row("embedded jwk header", Several, false, |k, now| k.sign(Es256, &json!({"alg": "ES256", "kid": "ec-1", "jwk": k.stranger_jwk()}), &claims(now))),
        row("jku header", Several, false, signed(Es256, json!({"alg": "ES256", "kid": "ec-1", "jku": "https://evil.example/jwks"}))),
        row("x5c header", Several, false, signed(Es256, json!({"alg": "ES256", "kid": "ec-1", "x5c": ["MIIB"]}))),
        row("crit header", Several, false, signed(Es256, json!({"alg": "ES256", "kid": "ec-1", "crit": ["exp"]}))),
        row("typ dpop+jwt", Several, false, signed(Es256, json!({"alg": "ES256", "kid": "ec-1", "typ": "dpop+jwt"}))),
        // Time, with the shared 60 s leeway.
        row("expired beyond leeway", Several, false, signed_claims(Es256, es("ec-1"), |n, c| {
            c["exp"] = json!(n - 600);
            c["iat"] = json!(n - 900);
            c["nbf"] = json!(n - 900);
        })),
        row("expired within leeway", Several, true, signed_claims(Es256, es("ec-1"), |n, c| c["exp"] = json!(n - 20))),
        row("nbf beyond leeway", Several, false, signed_claims(Es256, es("ec-1"), |n, c| c["nbf"] = json!(n + 600))),
        row("nbf within leeway", Several, true, signed_claims(Es256, es("ec-1"), |n, c| c["nbf"] = json!(n + 20))),
        row("iat in the future beyond leeway", Several, false, signed_claims(Es256, es("ec-1"), |n, c| c["iat"] = json!(n + 600))),
        row("no exp", Several, false, signed_claims(Es256, es("ec-1"), |_, c| {
            c.as_object_mut().unwrap().remove("exp");
        })),
        row("exp as a string", Several, false, signed_claims(Es256, es("ec-1"), |n, c| c["exp"] = json!((n + 300).to_string()))),
        // Shape and size.
        row("two segments", Several, false, |k, now| k.sign(Es256, &es("ec-1"), &claims(now)).rsplit_once('.').unwrap().0.to_string()),
        row("four segments", Several, false, |k, now| format!("{}.AA", k.sign(Es256, &es("ec-1"), &claims(now)))),
        row("empty signature segment", Several, false, |k, now| format!("{}.", k.sign(Es256, &es("ec-1"), &claims(now)).rsplit_once('.').unwrap().0)),
        row("padded base64 signature", Several, false, |k, now| format!("{}=", k.sign(Es256, &es("ec-1"), &claims(now)))),
        row("surrounding whitespace", Several, false, |k, now| format!(" {} ", k.sign(Es256, &es("ec-1"), &claims(now)))),
        row("header not JSON", Several, false, |k, now| {
            let t = k.sign(Es256, &es("ec-1"), &claims(now));
            format!("{}.{}", B64.encode(b"{not json"), t.split_once('.').unwrap().1)
        }),
        row("oversized token (17 KiB of claims)", Several, false, signed_claims(Es256, es("ec-1"), |_, c| c["padding"] = json!("x".repeat(17 * 1024)))),
        row("huge header (17 KiB)", Several, false, signed(Es256, json!({"alg": "ES256", "kid": "ec-1", "x-pad": "x".repeat(17 * 1024)}))),
    ]
}
