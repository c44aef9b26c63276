//! Reference measurements: the cryptography a request needs, alone, on as many
//! threads as the machine has, in the same process run as the API figures.
//! Written against rcgen, x509-parser and aws-lc-rs directly (not through the
//! broker), so the reference is the libraries' cost and nothing of ours.

use crate::stats::Sample;
use anyhow::{anyhow, Result};
use aws_lc_rs::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SubjectPublicKeyInfo,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use x509_parser::prelude::FromDer;

use crate::load::Budget;

/// Runs `op` on `threads` threads until the budget is spent. Each thread builds
/// its own state with `setup` first (not timed).
pub fn run<S, Setup, Op>(threads: usize, budget: Budget, setup: Setup, op: Op) -> Result<Sample>
where
    S: Send,
    Setup: Fn() -> Result<S> + Sync,
    Op: Fn(&mut S, u64) -> Result<()> + Sync,
{
    let next = AtomicU64::new(0);
    let states: Vec<S> = (0..threads.max(1)).map(|_| setup()).collect::<Result<_>>()?;
    let start = Instant::now();
    let deadline = start + budget.duration;
    let samples: Vec<Sample> = std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .map(|mut st| {
                let (next, op) = (&next, &op);
                scope.spawn(move || {
                    let mut s = Sample::with_capacity(4096);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= budget.max_requests || Instant::now() >= deadline {
                            return s;
                        }
                        let t = Instant::now();
                        match op(&mut st, i) {
                            Ok(()) => s.ok(t.elapsed()),
                            Err(e) => s.err(e),
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut all = Sample::with_capacity(4096);
    for s in samples {
        all.merge(s);
    }
    Ok(all.finish(start.elapsed()))
}

/// P-256 CSRs for fresh keys, as an agent would send them (DER).
pub fn csr_pool(n: usize) -> Result<Vec<Vec<u8>>> {
    (0..n)
        .map(|_| {
            let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            Ok(CertificateParams::default().serialize_request(&kp)?.der().to_vec())
        })
        .collect()
}

/// A P-256 CA (the broker's default X.509-SVID CA key type).
pub struct RawCa {
    issuer: Issuer<'static, KeyPair>,
}

impl RawCa {
    /// A fresh self-signed P-256 CA.
    pub fn new() -> Result<Self> {
        let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.self_signed(&kp)?;
        Ok(Self { issuer: Issuer::new(p, kp) })
    }

    /// What issuance costs in cryptography alone: parse the CSR and verify its
    /// self-signature, then sign a leaf with a URI SAN for its key.
    pub fn verify_and_sign(&self, csr_der: &[u8], serial: u64) -> Result<Vec<u8>> {
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
            .map_err(|e| anyhow!("CSR parse: {e}"))?;
        csr.verify_signature().map_err(|e| anyhow!("CSR signature: {e}"))?;
        let public = SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial.to_be_bytes()));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.subject_alt_names = vec![SanType::URI(format!("spiffe://bench.test/bench/{serial}").try_into()?)];
        Ok(p.signed_by(&public, &self.issuer)?.der().to_vec())
    }
}

/// Raw X.509 sign + verify throughput on `threads` threads.
pub fn x509_sign_verify(threads: usize, budget: Budget, csrs: &[Vec<u8>]) -> Result<Sample> {
    run(threads, budget, RawCa::new, |ca, i| {
        ca.verify_and_sign(&csrs[(i as usize) % csrs.len()], i).map(|_| ())
    })
}

/// A JWS signer of one key type, signing a message the size of a JWT-SVID's
/// signing input.
pub enum RawJws {
    /// RSA 2048, PKCS#1 v1.5 SHA-256 (RS256).
    Rs256(RsaKeyPair),
    /// P-256 SHA-256 (ES256).
    Es256(EcdsaKeyPair),
}

impl RawJws {
    /// A fresh key of the given type.
    pub fn new(es256: bool) -> Result<Self> {
        if es256 {
            let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            Ok(Self::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &kp.serialize_der())
                    .map_err(|e| anyhow!("{e}"))?,
            ))
        } else {
            let kp = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?;
            Ok(Self::Rs256(RsaKeyPair::from_pkcs8(&kp.serialize_der()).map_err(|e| anyhow!("{e}"))?))
        }
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Self::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig).map_err(|e| anyhow!("{e}"))?;
                Ok(sig)
            }
            Self::Es256(k) => Ok(k.sign(&rng, msg).map_err(|e| anyhow!("{e}"))?.as_ref().to_vec()),
        }
    }
}

/// Raw JWS signing throughput on `threads` threads (one key per thread: keys
/// are not shared across threads so no lock is measured).
pub fn jws_sign(threads: usize, budget: Budget, es256: bool) -> Result<Sample> {
    // Header + claims of a typical JWT-SVID, base64url: about 330 bytes.
    let msg = vec![b'e'; 330];
    run(threads, budget, || RawJws::new(es256), |k, _| k.sign(&msg).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::X509Certificate;

    #[test]
    fn raw_issuance_produces_a_leaf_with_the_csr_key_and_spiffe_uri() {
        let csrs = csr_pool(1).unwrap();
        let der = RawCa::new().unwrap().verify_and_sign(&csrs[0], 7).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&csrs[0]).unwrap();
        assert_eq!(cert.public_key().raw, csr.certification_request_info.subject_pki.raw);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value).contains("spiffe://bench.test/bench/7"));
    }

    #[test]
    fn raw_issuance_refuses_a_tampered_csr() {
        let mut csr = csr_pool(1).unwrap().remove(0);
        let last = csr.len() - 1;
        csr[last] ^= 0x55;
        assert!(RawCa::new().unwrap().verify_and_sign(&csr, 1).is_err());
    }

    #[test]
    fn raw_signers_produce_signatures_of_their_key_type() {
        assert_eq!(RawJws::new(false).unwrap().sign(b"m").unwrap().len(), 256);
        assert_eq!(RawJws::new(true).unwrap().sign(b"m").unwrap().len(), 64);
    }
}
