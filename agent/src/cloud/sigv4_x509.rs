//! SigV4 with an X.509 certificate instead of an access key, as IAM Roles Anywhere
//! defines it for `CreateSession`: the usual canonical request and string to sign,
//! the algorithm `AWS4-X509-RSA-SHA256` or `AWS4-X509-ECDSA-SHA256`, a credential
//! scope that starts with the leaf's serial number in decimal, the leaf (and chain)
//! sent in `X-Amz-X509` (`X-Amz-X509-Chain`), and the string to sign signed with
//! the certificate's private key (PKCS#1 v1.5 for RSA, a DER ECDSA signature).
//!
//! Everything here is pure: the time comes in as an argument, so a request can be
//! signed deterministically and compared byte for byte with another implementation.

use sigil_core::sigv4::{self, SigV4Error};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::{rsa, signature};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls_pki_types::PrivateKeyDer;
use std::fmt;

/// Content type Roles Anywhere expects on `CreateSession`.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4X509Error {
    /// The private key is not a PEM RSA (>= 2048 bits) or P-256 key.
    #[error("unsupported private key: {0} (Roles Anywhere signing needs RSA >= 2048 bits or ECDSA P-256)")]
    Key(String),
    /// The certificate (or a chain certificate) could not be parsed.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// The timestamp is not `YYYYMMDDTHHMMSSZ`.
    #[error(transparent)]
    Date(#[from] SigV4Error),
    /// The signing operation failed.
    #[error("signing failed")]
    Sign,
}

/// The certificate's private key. Debug never shows key material.
pub enum SigningKey {
    /// RSA, PKCS#1 v1.5 with SHA-256.
    Rsa(rsa::KeyPair),
    /// ECDSA P-256 with SHA-256, DER signature.
    EcdsaP256(signature::EcdsaKeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningKey::Rsa(_) => f.write_str("SigningKey::Rsa(<redacted>)"),
            SigningKey::EcdsaP256(_) => f.write_str("SigningKey::EcdsaP256(<redacted>)"),
        }
    }
}

impl SigningKey {
    /// Loads a PEM key: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`.
    pub fn from_pem(pem: &str) -> Result<Self, SigV4X509Error> {
        let der = sigil_core::pem::private_key(pem, "the private key").map_err(|e| SigV4X509Error::Key(e.to_string()))?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()).map(SigningKey::Rsa).or_else(|_| {
                signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, k.secret_pkcs8_der()).map(SigningKey::EcdsaP256)
            }),
            PrivateKeyDer::Sec1(k) => {
                signature::EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, k.secret_sec1_der()).map(SigningKey::EcdsaP256)
            }
            PrivateKeyDer::Pkcs1(k) => rsa::KeyPair::from_der(k.secret_pkcs1_der()).map(SigningKey::Rsa),
            _ => return Err(SigV4X509Error::Key("unknown private key form".into())),
        };
        key.map_err(|e| SigV4X509Error::Key(e.to_string()))
    }

    /// `RSA` or `ECDSA`, as it appears in the algorithm name.
    pub fn kind(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "RSA",
            SigningKey::EcdsaP256(_) => "ECDSA",
        }
    }

    /// The SigV4 algorithm name.
    pub fn algorithm(&self) -> String {
        format!("AWS4-X509-{}-SHA256", self.kind())
    }

    fn public_key(&self) -> Vec<u8> {
        use aws_lc_rs::signature::KeyPair as _;
        match self {
            SigningKey::Rsa(k) => k.public_key().as_ref().to_vec(),
            SigningKey::EcdsaP256(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `msg` (SHA-256): PKCS#1 v1.5 for RSA (deterministic), DER ECDSA.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SigV4X509Error> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).map_err(|_| SigV4X509Error::Sign)?;
                Ok(sig)
            }
            SigningKey::EcdsaP256(k) => Ok(k.sign(&rng, msg).map_err(|_| SigV4X509Error::Sign)?.as_ref().to_vec()),
        }
    }
}

/// The certificate side of an X.509 credential: the leaf, its serial in decimal
/// and any intermediates sent along.
#[derive(Debug, Clone)]
pub struct CertificateChain {
    /// Leaf DER.
    pub leaf_der: Vec<u8>,
    /// Leaf serial number, decimal.
    pub serial_decimal: String,
    /// Intermediate CA DERs (not the trust anchor).
    pub intermediates_der: Vec<Vec<u8>>,
    leaf_public_key: Vec<u8>,
}

impl CertificateChain {
    /// Parses a leaf PEM (first certificate) and optional intermediates PEM.
    pub fn from_pem(leaf_pem: &str, intermediates_pem: Option<&str>) -> Result<Self, SigV4X509Error> {
        let pem_err = |e: sigil_core::pem::PemError| SigV4X509Error::Certificate(e.to_string());
        let certs = sigil_core::pem::certificate_ders(leaf_pem, "the certificate").map_err(pem_err)?;
        let leaf_der = certs.first().cloned().ok_or_else(|| SigV4X509Error::Certificate("no CERTIFICATE block".into()))?;
        let intermediates_der = match intermediates_pem {
            Some(p) => sigil_core::pem::certificate_ders(p, "the intermediates").map_err(pem_err)?,
            None => vec![],
        };
        Self::from_der(leaf_der, intermediates_der)
    }

    /// From DER certificates.
    pub fn from_der(leaf_der: Vec<u8>, intermediates_der: Vec<Vec<u8>>) -> Result<Self, SigV4X509Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf_der).map_err(|e| SigV4X509Error::Certificate(e.to_string()))?;
        let serial_decimal = cert.tbs_certificate.serial.to_string();
        let leaf_public_key = cert.public_key().subject_public_key.data.to_vec();
        Ok(Self { leaf_der, serial_decimal, intermediates_der, leaf_public_key })
    }
}

/// A certificate and its key.
#[derive(Debug)]
pub struct X509Credential {
    /// Certificates.
    pub chain: CertificateChain,
    /// Private key.
    pub key: SigningKey,
}

impl X509Credential {
    /// Pairs a chain with its key, refusing a key that does not match the leaf.
    pub fn new(chain: CertificateChain, key: SigningKey) -> Result<Self, SigV4X509Error> {
        if key.public_key() != chain.leaf_public_key {
            return Err(SigV4X509Error::KeyMismatch);
        }
        Ok(Self { chain, key })
    }
}

/// What is signed: one HTTP request.
#[derive(Debug, Clone)]
pub struct RequestToSign<'a> {
    /// Method, e.g. `POST`.
    pub method: &'a str,
    /// `Host` header value (host, plus `:port` when not default).
    pub host: &'a str,
    /// Path, e.g. `/sessions`.
    pub path: &'a str,
    /// Raw query string without `?` (may be empty).
    pub query: &'a str,
    /// Body bytes.
    pub body: &'a [u8],
    /// Region, e.g. `us-east-1`.
    pub region: &'a str,
    /// Service, `rolesanywhere`.
    pub service: &'a str,
    /// `X-Amz-Date`, `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

/// Every intermediate value of the signature, for debugging and conformance tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The algorithm.
    pub algorithm: String,
    /// The canonical request.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// Signature, lowercase hex.
    pub signature_hex: String,
    /// Headers to send, including `Authorization` (names as sent).
    pub headers: Vec<(String, String)>,
}

/// Formats a Unix time as `X-Amz-Date` (see [`sigil_core::sigv4::format_amz_date`]).
pub fn amz_date(unix: i64) -> Result<String, SigV4X509Error> {
    Ok(sigv4::format_amz_date(unix)?)
}

/// Signs `req` with `cred`: builds the headers, canonical request, string to sign and signature.
pub fn sign(cred: &X509Credential, req: &RequestToSign<'_>) -> Result<SignedRequest, SigV4X509Error> {
    let scope = sigv4::credential_scope(req.amz_date, req.region, req.service)?;
    let algorithm = cred.key.algorithm();
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), CONTENT_TYPE.into()),
        ("Host".into(), req.host.into()),
        ("X-Amz-Date".into(), req.amz_date.into()),
        ("X-Amz-X509".into(), B64.encode(&cred.chain.leaf_der)),
    ];
    if !cred.chain.intermediates_der.is_empty() {
        let chain: Vec<String> = cred.chain.intermediates_der.iter().map(|d| B64.encode(d)).collect();
        headers.push(("X-Amz-X509-Chain".into(), chain.join(",")));
    }
    let canonical = sigv4::canonical_request(req.method, req.path, req.query, &headers, req.body);
    let string_to_sign = sigv4::string_to_sign(&algorithm, req.amz_date, &scope, &canonical.request);
    let signature_hex = hex::encode(cred.key.sign(string_to_sign.as_bytes())?);
    headers.push((
        "Authorization".into(),
        sigv4::authorization(&algorithm, &cred.chain.serial_decimal, &scope, &canonical.signed_headers, &signature_hex),
    ));
    Ok(SignedRequest { algorithm, canonical_request: canonical.request, string_to_sign, signature_hex, headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(alg: &'static rcgen::SignatureAlgorithm) -> X509Credential {
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["leaf.test".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x00]));
        let cert = params.self_signed(&kp).unwrap();
        let chain = CertificateChain::from_der(cert.der().to_vec(), vec![]).unwrap();
        X509Credential::new(chain, SigningKey::from_pem(&kp.serialize_pem()).unwrap()).unwrap()
    }

    fn req<'a>(body: &'a [u8]) -> RequestToSign<'a> {
        RequestToSign {
            method: "POST",
            host: "rolesanywhere.us-east-1.amazonaws.com",
            path: "/sessions",
            query: "",
            body,
            region: "us-east-1",
            service: "rolesanywhere",
            amz_date: "20240102T030405Z",
        }
    }

    #[test]
    fn canonical_request_has_the_documented_shape() {
        let c = cred(&rcgen::PKCS_ECDSA_P256_SHA256);
        let s = sign(&c, &req(b"{}")).unwrap();
        let lines: Vec<&str> = s.canonical_request.lines().collect();
        assert_eq!(&lines[..4], &["POST", "/sessions", "", "content-type:application/x-amz-json-1.0"]);
        assert_eq!(lines[lines.len() - 2], "content-type;host;x-amz-date;x-amz-x509");
        assert_eq!(lines[lines.len() - 1], sigv4::sha256_hex(b"{}"));
        assert!(s.string_to_sign.starts_with("AWS4-X509-ECDSA-SHA256\n20240102T030405Z\n20240102/us-east-1/rolesanywhere/aws4_request\n"));
    }

    #[test]
    fn credential_is_the_decimal_serial() {
        let c = cred(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(c.chain.serial_decimal, "256");
        let s = sign(&c, &req(b"{}")).unwrap();
        let auth = &s.headers.iter().find(|(k, _)| k == "Authorization").unwrap().1;
        assert!(auth.starts_with("AWS4-X509-ECDSA-SHA256 Credential=256/20240102/us-east-1/rolesanywhere/aws4_request, SignedHeaders="));
    }

    #[test]
    fn ecdsa_signature_verifies_over_the_string_to_sign() {
        let c = cred(&rcgen::PKCS_ECDSA_P256_SHA256);
        let s = sign(&c, &req(b"{\"a\":1}")).unwrap();
        let pk = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, c.chain.leaf_public_key.clone());
        pk.verify(s.string_to_sign.as_bytes(), &hex::decode(&s.signature_hex).unwrap()).unwrap();
    }

    #[test]
    fn rsa_signature_is_deterministic_and_verifies() {
        let c = cred(&rcgen::PKCS_RSA_SHA256);
        let a = sign(&c, &req(b"x")).unwrap();
        let b = sign(&c, &req(b"x")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.algorithm, "AWS4-X509-RSA-SHA256");
        let pk = signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, c.chain.leaf_public_key.clone());
        pk.verify(a.string_to_sign.as_bytes(), &hex::decode(&a.signature_hex).unwrap()).unwrap();
    }

    #[test]
    fn chain_header_is_signed_when_present() {
        let mut c = cred(&rcgen::PKCS_ECDSA_P256_SHA256);
        c.chain.intermediates_der = vec![vec![1, 2], vec![3]];
        let s = sign(&c, &req(b"")).unwrap();
        assert!(s.canonical_request.contains("x-amz-x509-chain:AQI=,Aw==\n"));
        assert!(s.canonical_request.contains("\ncontent-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain\n"));
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let a = cred(&rcgen::PKCS_ECDSA_P256_SHA256);
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = SigningKey::from_pem(&other.serialize_pem()).unwrap();
        assert!(matches!(X509Credential::new(a.chain, key), Err(SigV4X509Error::KeyMismatch)));
    }

    #[test]
    fn bad_dates_are_refused_and_unix_times_format() {
        let c = cred(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut r = req(b"");
        r.amz_date = "2024-01-02T03:04:05Z";
        assert!(matches!(sign(&c, &r), Err(SigV4X509Error::Date(_))));
        assert_eq!(amz_date(1_704_164_645).unwrap(), "20240102T030405Z");
    }

    #[test]
    fn debug_of_key_is_redacted() {
        let c = cred(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(format!("{:?}", c.key), "SigningKey::EcdsaP256(<redacted>)");
    }
}
