//! X.509: CA certificates, leaf signing, CSR checks.
//!
//! The contents of each kind of certificate (X.509-SVID, bot identity, serving
//! certificate) are decided here and nowhere else.

use super::backend::{KeySigner, RcgenKey};
use super::keys::KeyAlg;
use super::lifetime::Validity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::sync::Arc;
use x509_parser::prelude::FromDer;

/// Certificate operations failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// The CSR is not DER PKCS#10.
    #[error("CSR is not a valid DER PKCS#10 request")]
    CsrMalformed,
    /// The CSR signature does not verify with its own public key.
    #[error("CSR signature does not verify (the request was altered or signed with another key)")]
    CsrSignature,
    /// The CSR key type or size is not accepted.
    #[error("CSR key not accepted: {0}; use EC P-256/P-384, Ed25519 or RSA >= 2048 bits")]
    CsrKey(String),
    /// Encoding or signing failed.
    #[error("certificate signing failed: {0}")]
    Sign(String),
}

fn sign_err(e: impl std::fmt::Display) -> X509Error {
    X509Error::Sign(e.to_string())
}

fn to_time(ts: i64) -> Result<time::OffsetDateTime, X509Error> {
    time::OffsetDateTime::from_unix_timestamp(ts).map_err(sign_err)
}

fn random_serial() -> Result<SerialNumber, X509Error> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).map_err(|_| X509Error::Sign("rng".into()))?;
    b[0] &= 0x7f; // positive INTEGER
    b[0] |= 0x01; // no leading zero byte, fixed length
    Ok(SerialNumber::from_slice(&b))
}

/// The serial number of a certificate the CA just signed, as lowercase hex
/// without leading zero bytes (what `openssl x509 -serial` shows, lowercased).
pub fn serial_hex(cert_der: &[u8]) -> Result<String, X509Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(sign_err)?;
    Ok(hex::encode(cert.raw_serial()))
}

/// Verifies a CSR's self-signature and key, returning its SubjectPublicKeyInfo DER.
/// Nothing else in the CSR is used: the broker decides every certificate field.
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, X509Error> {
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|_| X509Error::CsrMalformed)?;
    if !rest.is_empty() {
        return Err(X509Error::CsrMalformed);
    }
    csr.verify_signature().map_err(|_| X509Error::CsrSignature)?;
    let spki = &csr.certification_request_info.subject_pki;
    use x509_parser::public_key::PublicKey;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {}
        Ok(PublicKey::RSA(rsa)) => return Err(X509Error::CsrKey(format!("RSA {} bits", rsa.key_size()))),
        Ok(PublicKey::EC(p)) if p.key_size() == 256 || p.key_size() == 384 => {}
        Ok(PublicKey::EC(p)) => return Err(X509Error::CsrKey(format!("EC {} bits", p.key_size()))),
        Ok(_) if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => {}
        _ => return Err(X509Error::CsrKey(format!("algorithm {}", spki.algorithm.algorithm.to_id_string()))),
    }
    Ok(spki.raw.to_vec())
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub enum LeafKind {
    /// An X.509-SVID: one URI SAN (the SPIFFE ID), optional DNS SANs.
    Svid {
        /// The SPIFFE ID.
        spiffe_id: String,
        /// DNS SANs.
        dns_sans: Vec<String>,
        /// The CRL distribution point URL to name (config
        /// `revocation.crl_distribution_points`), if any.
        crl_url: Option<String>,
    },
    /// A bot identity (mTLS client certificate to the broker).
    BotIdentity {
        /// `spiffe://td/sigil/bot/<name>`.
        uri: String,
        /// Bot name (subject CN).
        bot: String,
        /// Bot instance id (subject OU).
        instance: String,
        /// Identity generation (subject serialNumber).
        generation: i64,
    },
    /// A database or Kubernetes certificate (`IssueTlsCertificate`): the
    /// subject is exactly the O values then the CN (no `O=Sigil`: MariaDB's
    /// `REQUIRE SUBJECT` compares the whole subject, Kubernetes reads every O
    /// as a group).
    Access {
        /// Subject CN.
        common_name: Option<String>,
        /// Subject O values (Kubernetes groups), one RDN each.
        organizations: Vec<String>,
        /// DNS SANs.
        dns: Vec<String>,
        /// IP SANs.
        ips: Vec<IpAddr>,
        /// EKU serverAuth (a database server) instead of clientAuth.
        server: bool,
        /// The CRL distribution point URL to name, if any.
        crl_url: Option<String>,
    },
    /// The broker's TLS serving certificate.
    Serving {
        /// DNS names.
        dns: Vec<String>,
        /// IP addresses.
        ips: Vec<IpAddr>,
    },
}

/// The subject serialNumber attribute (2.5.4.5) carries the bot identity generation.
pub const GENERATION_OID: &[u64] = &[2, 5, 4, 5];

/// A CA: key, certificate and the parsed issuer.
pub struct CaCert {
    /// Id of the CA key (`ca_keys.id`): names its CRL and is recorded with
    /// every certificate it signs.
    pub key_id: String,
    /// CA private key.
    pub key_alg: KeyAlg,
    /// CA certificate DER.
    pub cert_der: Vec<u8>,
    /// CA NotAfter.
    pub not_after: i64,
    issuer: Issuer<'static, RcgenKey>,
    signer: Arc<dyn KeySigner>,
}

impl std::fmt::Debug for CaCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaCert(not_after={})", self.not_after)
    }
}

impl CaCert {
    /// Creates a self-signed CA certificate for `key`.
    pub fn create(key: &Arc<dyn KeySigner>, common_name: &str, uri: Option<&str>, validity: Validity) -> Result<Vec<u8>, X509Error> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Sigil");
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        p.serial_number = Some(random_serial()?);
        p.not_before = to_time(validity.not_before)?;
        p.not_after = to_time(validity.not_after)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        if let Some(u) = uri {
            p.subject_alt_names = vec![SanType::URI(u.to_string().try_into().map_err(sign_err)?)];
        }
        Ok(p.self_signed(&RcgenKey(key.clone())).map_err(sign_err)?.der().to_vec())
    }

    /// Loads CA key `key_id` from its key and certificate.
    /// The certificate's public key must be the key's.
    pub fn load(key_id: &str, key: &Arc<dyn KeySigner>, cert_der: Vec<u8>) -> Result<Self, X509Error> {
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(sign_err)?;
        let not_after = parsed.validity().not_after.timestamp();
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key().raw.as_slice() {
            return Err(X509Error::Sign("the CA certificate's public key is not the CA key's".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), RcgenKey(key.clone())).map_err(sign_err)?;
        Ok(Self { key_id: key_id.to_string(), key_alg: key.alg(), cert_der, not_after, issuer, signer: key.clone() })
    }

    /// Signs a leaf certificate for `spki_der`.
    pub fn sign_leaf(&self, spki_der: &[u8], kind: &LeafKind, validity: Validity) -> Result<Vec<u8>, X509Error> {
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(sign_err)?;
        let mut p = CertificateParams::default();
        p.serial_number = Some(random_serial()?);
        p.not_before = to_time(validity.not_before)?;
        p.not_after = to_time(validity.not_after)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        let mut dn = DistinguishedName::new();
        if !matches!(kind, LeafKind::Access { .. }) {
            dn.push(DnType::OrganizationName, "Sigil");
        }
        match kind {
            LeafKind::Svid { spiffe_id, dns_sans, crl_url } => {
                if let Some(url) = crl_url {
                    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec![url.clone()] }];
                }
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
                p.subject_alt_names.push(SanType::URI(spiffe_id.clone().try_into().map_err(sign_err)?));
                for d in dns_sans {
                    p.subject_alt_names.push(SanType::DnsName(d.clone().try_into().map_err(sign_err)?));
                }
                if let Some(first) = dns_sans.first() {
                    dn.push(DnType::CommonName, first.as_str());
                }
            }
            LeafKind::BotIdentity { uri, bot, instance, generation } => {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p.subject_alt_names.push(SanType::URI(uri.clone().try_into().map_err(sign_err)?));
                dn.push(DnType::CommonName, bot.as_str());
                dn.push(DnType::OrganizationalUnitName, instance.as_str());
                dn.push(DnType::CustomDnType(GENERATION_OID.to_vec()), generation.to_string());
            }
            LeafKind::Serving { dns, ips } => {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                for d in dns {
                    p.subject_alt_names.push(SanType::DnsName(d.clone().try_into().map_err(sign_err)?));
                }
                for ip in ips {
                    p.subject_alt_names.push(SanType::IpAddress(*ip));
                }
                dn.push(DnType::CommonName, "sigil broker");
            }
            LeafKind::Access { common_name, organizations, dns, ips, server, crl_url } => {
                // A placeholder while rcgen signs (the subject is replaced below):
                // rcgen marks the SAN extension critical only for an empty subject.
                if common_name.is_some() || !organizations.is_empty() {
                    dn.push(DnType::CommonName, "-");
                }
                if let Some(url) = crl_url {
                    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec![url.clone()] }];
                }
                p.extended_key_usages = vec![if *server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
                for d in dns {
                    p.subject_alt_names.push(SanType::DnsName(d.clone().try_into().map_err(sign_err)?));
                }
                for ip in ips {
                    p.subject_alt_names.push(SanType::IpAddress(*ip));
                }
            }
        }
        p.distinguished_name = dn;
        let der = p.signed_by(&public, &self.issuer).map_err(sign_err)?.der().to_vec();
        match kind {
            LeafKind::Access { common_name, organizations, .. } => self.resign_with_subject(&der, &access_subject(common_name.as_deref(), organizations)),
            _ => Ok(der),
        }
    }

    /// `cert_der` (just signed by this CA) with its subject replaced by
    /// `subject` and signed again. rcgen keeps one value per attribute type,
    /// and a Kubernetes certificate needs one O per group.
    fn resign_with_subject(&self, cert_der: &[u8], subject: &[u8]) -> Result<Vec<u8>, X509Error> {
        use super::backend::der::{content, read_tlv, tlv};
        let bad = || X509Error::Sign("unexpected certificate encoding".into());
        let (cert, _) = read_tlv(cert_der).ok_or_else(bad)?;
        let (tbs, rest) = read_tlv(content(cert).ok_or_else(bad)?).ok_or_else(bad)?;
        let (sig_alg, _) = read_tlv(rest).ok_or_else(bad)?;
        // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
        let mut fields = content(tbs).ok_or_else(bad)?;
        let mut body = Vec::with_capacity(tbs.len() + subject.len());
        for i in 0..6 {
            let (field, after) = read_tlv(fields).ok_or_else(bad)?;
            body.extend_from_slice(if i == 5 { subject } else { field });
            fields = after;
        }
        body.extend_from_slice(fields);
        let new_tbs = tlv(0x30, &body);
        let sig = rcgen::SigningKey::sign(&RcgenKey(self.signer.clone()), &new_tbs).map_err(sign_err)?;
        let mut bits = vec![0u8];
        bits.extend(sig);
        let mut out = new_tbs;
        out.extend_from_slice(sig_alg);
        out.extend(tlv(0x03, &bits));
        Ok(tlv(0x30, &out))
    }
}

/// The DER Name of a database / Kubernetes certificate: one RDN per O value,
/// then the CN, every value a UTF8String.
fn access_subject(common_name: Option<&str>, organizations: &[String]) -> Vec<u8> {
    use super::backend::der::tlv;
    const O: [u8; 3] = [0x55, 0x04, 0x0a];
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    let rdn = |oid: &[u8], v: &str| {
        let mut atv = tlv(0x06, oid);
        atv.extend(tlv(0x0c, v.as_bytes()));
        tlv(0x31, &tlv(0x30, &atv))
    };
    let mut rdns = Vec::new();
    for o in organizations {
        rdns.extend(rdn(&O, o));
    }
    if let Some(cn) = common_name {
        rdns.extend(rdn(&CN, cn));
    }
    tlv(0x30, &rdns)
}

/// One entry of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Revocation time, Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 reason code, if one is given.
    pub reason: Option<rcgen::RevocationReason>,
}

impl CaCert {
    /// Signs an RFC 5280 v2 CRL of `entries` with this CA's key (through its
    /// key backend), with the CRL number, thisUpdate/nextUpdate and the
    /// authority key identifier of the certificates this CA signs.
    pub fn sign_crl(&self, entries: &[RevokedEntry], this_update: i64, next_update: i64, crl_number: u64) -> Result<Vec<u8>, X509Error> {
        let mut revoked_certs = Vec::with_capacity(entries.len());
        for e in entries {
            let serial = hex::decode(&e.serial).map_err(|_| X509Error::Sign(format!("stored serial {:?} is not hex", e.serial)))?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: to_time(e.revoked_at)?,
                reason_code: e.reason,
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: to_time(this_update)?,
            next_update: to_time(next_update)?,
            crl_number: SerialNumber::from_slice(&positive_be(crl_number)),
            issuing_distribution_point: None,
            revoked_certs,
            // The AKI must name the CA's subject key identifier, as the leaves' AKI does.
            key_identifier_method: rcgen::KeyIdMethod::PreSpecified(self.subject_key_id()?),
        };
        Ok(params.signed_by(&self.issuer).map_err(sign_err)?.der().to_vec())
    }

    fn subject_key_id(&self) -> Result<Vec<u8>, X509Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.cert_der).map_err(sign_err)?;
        for ext in cert.extensions() {
            if let x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) = ext.parsed_extension() {
                return Ok(k.0.to_vec());
            }
        }
        Err(X509Error::Sign("the CA certificate has no subject key identifier".into()))
    }
}

/// `n` as the content octets of a positive DER INTEGER (no needless leading
/// zero, a zero byte before a set high bit).
fn positive_be(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let first = b.iter().position(|&x| x != 0).unwrap_or(7);
    let mut v = b[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v
}

/// What a bot identity certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentityClaims {
    /// The URI SAN.
    pub uri: String,
    /// Bot name.
    pub bot: String,
    /// Bot instance id.
    pub instance: String,
    /// Hex SHA-256 of the SubjectPublicKeyInfo.
    pub key_hash: String,
    /// Generation.
    pub generation: i64,
    /// NotAfter.
    pub not_after: i64,
    /// Serial number, lowercase hex (as [`serial_hex`]).
    pub serial: String,
}

/// Reads the identity claims of a (chain-verified) bot identity certificate.
pub fn bot_identity_claims(cert_der: &[u8]) -> Option<BotIdentityClaims> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let uri = san.value.general_names.iter().find_map(|g| match g {
        x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
        _ => None,
    })?;
    let bot = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    let gen_oid = x509_parser::oid_registry::Oid::from(&[2u64, 5, 4, 5]).ok()?;
    let generation = cert
        .subject()
        .iter_by_oid(&gen_oid)
        .next()?
        .as_str()
        .ok()?
        .parse()
        .ok()?;
    let instance = cert.subject().iter_organizational_unit().next()?.as_str().ok()?.to_string();
    Some(BotIdentityClaims {
        uri,
        bot,
        instance,
        key_hash: spki_hash(cert.public_key().raw),
        generation,
        not_after: cert.validity().not_after.timestamp(),
        serial: hex::encode(cert.raw_serial()),
    })
}

/// Whether `leaf_der` was issued by one of `ca_ders`. Meant for a leaf that
/// TLS has already chain-validated against a set of CAs (a connection's client
/// certificate): it tells which of them issued it, by the leaf's authority key
/// identifier against each CA's subject key identifier, and by the signature
/// when either identifier is missing. Anything that does not parse is "no".
pub fn issued_by_any(leaf_der: &[u8], ca_ders: &[Vec<u8>]) -> bool {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf_der) else { return false };
    let aki = leaf.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    });
    ca_ders.iter().any(|der| {
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(der) else { return false };
        let ski = ca.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        });
        match (aki, ski) {
            (Some(a), Some(s)) => a == s && leaf.issuer().as_raw() == ca.subject().as_raw(),
            _ => leaf.issuer().as_raw() == ca.subject().as_raw() && leaf.verify_signature(Some(ca.public_key())).is_ok(),
        }
    })
}

/// Hex SHA-256 of a SubjectPublicKeyInfo DER.
pub fn spki_hash(spki_der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der))
}
