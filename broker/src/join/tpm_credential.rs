//! TPM2 `MakeCredential`, done by the broker in software (TPM 2.0 Part 1,
//! 24 "Credential Protection"; Part 3, `TPM2_MakeCredential`).
//!
//! The credential (a random secret) is wrapped so that only a TPM holding the
//! endorsement key *and* a loaded object with the given name (the attestation
//! key) can recover it with `TPM2_ActivateCredential`:
//! - a random seed is RSA-OAEP encrypted to the EK (label `"IDENTITY\0"`);
//! - `symKey = KDFa(seed, "STORAGE", AK name)` encrypts the credential (AES-CFB, zero IV);
//! - `hmacKey = KDFa(seed, "INTEGRITY")` authenticates ciphertext and AK name.
//!
//! Pure: the seed comes in as an argument.

use super::tpm_wire::{KeyParams, TpmPublic, ALG_AES, ALG_CFB, ALG_SHA256};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents, OAEP_SHA256_MGF1SHA256};

/// Digest size of SHA-256, the only name algorithm handled.
pub const DIGEST_LEN: usize = 32;

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The endorsement key is not one this broker can encrypt to.
    #[error("endorsement key: {0}")]
    UnsupportedEk(String),
    /// The credential does not fit a `TPM2B_DIGEST` of the name algorithm.
    #[error("credential must be 1..=32 bytes")]
    CredentialSize,
    /// A crypto primitive failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

/// What `ActivateCredential` takes: `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`
/// contents (without their size prefixes).
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialBlob {
    /// `integrityHMAC (TPM2B) || encIdentity`.
    pub id_object: Vec<u8>,
    /// The seed, encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

impl std::fmt::Debug for CredentialBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialBlob").field("id_object_len", &self.id_object.len()).field("encrypted_secret_len", &self.encrypted_secret.len()).finish()
    }
}

/// KDFa with HMAC-SHA256 (Part 1, 11.4.10.2): `bits` of
/// `HMAC(key, [i]32 || label || 0 || context_u || context_v || [bits]32)`, i = 1, 2, ...
pub fn kdfa_sha256(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let want = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(want + DIGEST_LEN);
    let mut counter: u32 = 1;
    while out.len() < want {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(want);
    out
}

/// Wraps `credential` for the TPM holding `ek`, bound to the object named `ak_name`.
/// `seed` must be [`DIGEST_LEN`] random bytes, fresh for every call.
pub fn make_credential(ek: &TpmPublic, ak_name: &[u8], credential: &[u8], seed: &[u8]) -> Result<CredentialBlob, CredentialError> {
    if credential.is_empty() || credential.len() > DIGEST_LEN {
        return Err(CredentialError::CredentialSize);
    }
    if seed.len() != DIGEST_LEN {
        return Err(CredentialError::Crypto("seed size"));
    }
    let (sym_bits, modulus, exponent) = rsa_storage_params(ek)?;
    let encrypted_secret = oaep_encrypt(modulus, exponent, seed)?;

    let sym_key = kdfa_sha256(seed, "STORAGE", ak_name, &[], u32::from(sym_bits));
    let mut enc_identity = Vec::with_capacity(2 + credential.len());
    enc_identity.extend_from_slice(&(credential.len() as u16).to_be_bytes());
    enc_identity.extend_from_slice(credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;

    let hmac_key = kdfa_sha256(seed, "INTEGRITY", &[], &[], (DIGEST_LEN * 8) as u32);
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &hmac_key));
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let outer_hmac = ctx.sign();

    let mut id_object = Vec::with_capacity(2 + DIGEST_LEN + enc_identity.len());
    id_object.extend_from_slice(&(DIGEST_LEN as u16).to_be_bytes());
    id_object.extend_from_slice(outer_hmac.as_ref());
    id_object.extend_from_slice(&enc_identity);
    Ok(CredentialBlob { id_object, encrypted_secret })
}

/// AES key bits, modulus and exponent of an RSA storage EK with SHA-256 names.
fn rsa_storage_params(ek: &TpmPublic) -> Result<(u16, &[u8], u32), CredentialError> {
    let bad = |m: &str| CredentialError::UnsupportedEk(m.to_string());
    if ek.name_alg != ALG_SHA256 {
        return Err(bad("name algorithm must be SHA-256 (RSA-2048 EK template)"));
    }
    match &ek.params {
        KeyParams::Rsa { symmetric, modulus, exponent, .. } => {
            if symmetric.alg != ALG_AES || symmetric.mode != ALG_CFB || !matches!(symmetric.key_bits, 128 | 256) {
                return Err(bad("symmetric algorithm must be AES-128/256-CFB"));
            }
            Ok((symmetric.key_bits, modulus, if *exponent == 0 { 65537 } else { *exponent }))
        }
        KeyParams::Ecc { .. } => Err(bad("only RSA endorsement keys are supported")),
    }
}

/// RSA-OAEP(SHA-256) with the label `"IDENTITY\0"` (the NUL is part of the label).
fn oaep_encrypt(modulus: &[u8], exponent: u32, seed: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let e = exponent.to_be_bytes();
    let e = &e[e.iter().position(|b| *b != 0).unwrap_or(3)..];
    let n = &modulus[modulus.iter().position(|b| *b != 0).unwrap_or(0)..];
    let key: PublicEncryptingKey = PublicKeyComponents { n, e }.try_into().map_err(|_| CredentialError::UnsupportedEk("RSA public key rejected".into()))?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| CredentialError::Crypto("OAEP key"))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let n = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, seed, &mut out, Some(b"IDENTITY\0"))
        .map_err(|_| CredentialError::Crypto("OAEP encrypt"))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// AES-CFB128 with a zero IV, in place (the key is single use).
fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), CredentialError> {
    let alg = if key.len() == 16 { &AES_128 } else { &AES_256 };
    let key = UnboundCipherKey::new(alg, key).map_err(|_| CredentialError::Crypto("AES key"))?;
    let key = EncryptingKey::cfb128(key).map_err(|_| CredentialError::Crypto("AES-CFB"))?;
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from([0u8; 16])))
        .map_err(|_| CredentialError::Crypto("AES-CFB encrypt"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext};
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};

    /// ActivateCredential written from the spec independently of the code above
    /// (decrypt the seed, check the HMAC, decrypt the credential).
    fn activate(private: &PrivateDecryptingKey, ak_name: &[u8], blob: &CredentialBlob) -> Option<Vec<u8>> {
        let oaep = OaepPrivateDecryptingKey::new(private.clone()).ok()?;
        let mut seed = vec![0u8; 512];
        let seed = oaep.decrypt(&OAEP_SHA256_MGF1SHA256, &blob.encrypted_secret, &mut seed, Some(b"IDENTITY\0")).ok()?.to_vec();
        let (hlen, rest) = blob.id_object.split_at(2);
        let (mac, enc) = rest.split_at(u16::from_be_bytes([hlen[0], hlen[1]]) as usize);
        let hkey = hmac::Key::new(hmac::HMAC_SHA256, &kdfa_sha256(&seed, "INTEGRITY", &[], &[], 256));
        hmac::verify(&hkey, &[enc, ak_name].concat(), mac).ok()?;
        let key = UnboundCipherKey::new(&AES_128, &kdfa_sha256(&seed, "STORAGE", ak_name, &[], 128)).ok()?;
        let mut plain = enc.to_vec();
        DecryptingKey::cfb128(key).ok()?.decrypt(&mut plain, DecryptionContext::Iv128(FixedLength::from([0u8; 16]))).ok()?;
        let n = u16::from_be_bytes([plain[0], plain[1]]) as usize;
        Some(plain[2..2 + n].to_vec())
    }

    fn ek_for(private: &PrivateDecryptingKey) -> TpmPublic {
        let spki = private.public_key().as_der().unwrap();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref()).unwrap();
        let modulus = match spki.parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(r) => r.modulus.to_vec(),
            _ => unreachable!(),
        };
        let m = &modulus[modulus.iter().position(|b| *b != 0).unwrap()..];
        TpmPublic::parse(&sigil_core::join_wire::tpm_wire::tests_support::ek_template(m), "ek").unwrap()
    }

    use x509_parser::prelude::FromDer;

    #[test]
    fn kdfa_is_deterministic_and_sized() {
        let a = kdfa_sha256(b"seed", "STORAGE", b"name", &[], 128);
        assert_eq!(a.len(), 16);
        assert_eq!(a, kdfa_sha256(b"seed", "STORAGE", b"name", &[], 128));
        assert_ne!(a, kdfa_sha256(b"seed", "INTEGRITY", b"name", &[], 128));
        assert_eq!(kdfa_sha256(b"seed", "X", &[], &[], 520).len(), 65);
    }

    #[test]
    fn only_the_ek_holder_recovers_the_credential_for_that_ak_name() {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let ek = ek_for(&private);
        let name = [&[0x00, 0x0B][..], &[7u8; 32]].concat();
        let blob = make_credential(&ek, &name, b"0123456789abcdef0123456789abcdef", &[9u8; 32]).unwrap();
        assert_eq!(activate(&private, &name, &blob).unwrap(), b"0123456789abcdef0123456789abcdef");
        // Another object name (a key not in this TPM) fails the integrity check.
        let other = [&[0x00, 0x0B][..], &[8u8; 32]].concat();
        assert!(activate(&private, &other, &blob).is_none());
        // Another EK cannot decrypt the seed.
        let stranger = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        assert!(activate(&stranger, &name, &blob).is_none());
    }

    #[test]
    fn oversized_credentials_are_refused() {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let ek = ek_for(&private);
        assert_eq!(make_credential(&ek, b"n", &[0u8; 33], &[0u8; 32]).unwrap_err(), CredentialError::CredentialSize);
    }
}
