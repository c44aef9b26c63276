//! PKCS#7 / CMS `SignedData` (RFC 5652) with one signer, as cloud metadata
//! services sign their identity documents:
//! - [`verify`]: Azure IMDS's attested document: content embedded, signer
//!   certificate included, chain-validated against the caller's anchors and
//!   its name checked;
//! - [`verify_with_signers`]: the EC2 identity document's `rsa2048`
//!   signature (`ec2.rs`): no certificate included, the signer is one of
//!   the certificates the caller holds (AWS publishes one per region),
//!   content embedded or detached.
//!
//! The content is returned only after the signature over it has been checked
//! with the certificate that actually signed it (matched by issuer and serial
//! number). Nothing outside the signed content is ever read as identity
//! (SPIRE azure_imds / aws_iid fixes, 1.14.6 / 1.15.1).
//!
//! Pure: a small DER reader (definite lengths only; BER input goes through
//! `ber::to_der` first), no I/O, `now` passed in.

use aws_lc_rs::{digest, signature};
use x509_parser::prelude::*;

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];

/// Largest signed document accepted.
pub const MAX_BYTES: usize = 64 * 1024;

/// Why a signed document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs7Error {
    /// Not the expected DER structure.
    #[error("signed document is malformed: {0}")]
    Malformed(&'static str),
    /// An algorithm outside SHA-2 with RSA or ECDSA.
    #[error("signed document uses an unsupported algorithm")]
    Algorithm,
    /// The content digest or the signature does not verify.
    #[error("signed document's signature does not verify")]
    BadSignature,
    /// The signing certificate is not the one named, or is absent.
    #[error("signed document does not include its signing certificate")]
    NoSigner,
    /// The signer is not issued by a configured anchor, or not valid now.
    #[error("signing certificate {0:?} does not chain to a CA in the join token's config")]
    Untrusted(String),
    /// The join token's anchors are not valid PEM.
    #[error("join token config: {0}")]
    BadAnchors(sigil_core::pem::PemError),
    /// The signer's name is not an allowed one.
    #[error("signing certificate {0:?} is not an allowed signer name")]
    WrongSigner(String),
    /// None of the caller's certificates is the one the signer names.
    #[error("signed document is not signed by any of the certificates that may sign it")]
    UnknownSigner,
    /// The signing certificate is not valid now.
    #[error("signing certificate {0:?} is not valid now")]
    Expired(String),
}

/// A DER element: tag byte, its contents, the whole encoding.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), Pkcs7Error> {
    let m = Pkcs7Error::Malformed;
    let (&tag, rest) = input.split_first().ok_or(m("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(m("high tag numbers"));
    }
    let (&first, rest) = rest.split_first().ok_or(m("truncated"))?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return Err(m("indefinite or oversized length"));
        }
        (rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize), &rest[n..])
    };
    if rest.len() < len {
        return Err(m("truncated"));
    }
    let head = input.len() - rest.len();
    Ok((Tlv { tag, value: &rest[..len], whole: &input[..head + len] }, &rest[len..]))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(Tlv<'a>, &'a [u8]), Pkcs7Error> {
    let (t, rest) = read(input)?;
    if t.tag != tag {
        return Err(Pkcs7Error::Malformed(what));
    }
    Ok((t, rest))
}

fn children(mut v: &[u8]) -> Result<Vec<Tlv<'_>>, Pkcs7Error> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let (t, rest) = read(v)?;
        out.push(t);
        v = rest;
    }
    Ok(out)
}

/// Which names the signing certificate may carry (DNS SAN or CN; `*.` prefix
/// matches one label), which CAs anchor it, and the time.
pub struct Trust<'a> {
    /// PEM bundle; every certificate is an anchor.
    pub anchors_pem: &'a str,
    /// Allowed signer names.
    pub signer_names: &'a [String],
    /// Now, Unix seconds.
    pub now: i64,
}

/// A SignedData with one signer, borrowed from its DER.
struct Parsed<'a> {
    /// Embedded content (`None`: detached).
    content: Option<&'a [u8]>,
    /// The `[0] certificates` contents, if any.
    certs: Option<&'a [u8]>,
    signer: SignerInfo<'a>,
}

fn parse(der: &[u8]) -> Result<Parsed<'_>, Pkcs7Error> {
    let m = Pkcs7Error::Malformed;
    if der.len() > MAX_BYTES {
        return Err(m("too large"));
    }
    let (ci, rest) = expect(der, 0x30, "ContentInfo")?;
    if !rest.is_empty() {
        return Err(m("trailing bytes"));
    }
    let ci = children(ci.value)?;
    match ci.as_slice() {
        [oid, explicit] if oid.tag == 0x06 && oid.value == OID_SIGNED_DATA && explicit.tag == 0xa0 => {}
        _ => return Err(m("not a SignedData ContentInfo")),
    }
    let (sd, _) = expect(ci[1].value, 0x30, "SignedData")?;
    let parts = children(sd.value)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    let (encap, certs, signers) = match parts.as_slice() {
        [v, _, e, c, s] if v.tag == 0x02 && c.tag == 0xa0 => (e, Some(c.value), s),
        [v, _, e, c, _crl, s] if v.tag == 0x02 && c.tag == 0xa0 => (e, Some(c.value), s),
        [v, _, e, crl, s] if v.tag == 0x02 && crl.tag == 0xa1 => (e, None, s),
        [v, _, e, s] if v.tag == 0x02 => (e, None, s),
        _ => return Err(m("SignedData fields")),
    };
    let content = encapsulated_content(encap)?;
    if signers.tag != 0x31 {
        return Err(m("signerInfos"));
    }
    let signer_infos = children(signers.value)?;
    let [si] = signer_infos.as_slice() else {
        return Err(m("exactly one SignerInfo expected"));
    };
    Ok(Parsed { content, certs, signer: SignerInfo::parse(si)? })
}

/// Verifies `der` and returns the signed content (Azure: embedded content,
/// embedded signer chain-validated and name-checked by `trust`).
pub fn verify(der: &[u8], trust: &Trust<'_>) -> Result<Vec<u8>, Pkcs7Error> {
    let p = parse(der)?;
    let content = p.content.ok_or(Pkcs7Error::Malformed("detached content: the signed document must embed what it signs"))?;
    let certs = p.certs.ok_or(Pkcs7Error::NoSigner)?;
    let signer = find_signer(&split(certs)?, &p.signer).ok_or(Pkcs7Error::NoSigner)?;
    check_signature(&p.signer, &signer, content)?;
    check_trust(&signer, trust)?;
    Ok(content.to_vec())
}

/// Verifies `der` (DER: run BER through `ber::to_der` first) as signed by
/// one of `signers` (DER certificates trusted as they are: no chain, no
/// name; the one the SignerInfo names must be valid at `now`). Certificates
/// the SignedData carries are ignored. The signed content is the embedded
/// one, else `detached`; it is returned.
pub fn verify_with_signers(der: &[u8], detached: Option<&[u8]>, signers: &[Vec<u8>], now: i64) -> Result<Vec<u8>, Pkcs7Error> {
    let p = parse(der)?;
    let content = p.content.or(detached).ok_or(Pkcs7Error::Malformed("detached content and no document to check it against"))?;
    let candidates: Vec<&[u8]> = signers.iter().map(Vec::as_slice).collect();
    let signer = find_signer(&candidates, &p.signer).ok_or(Pkcs7Error::UnknownSigner)?;
    let validity = signer.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err(Pkcs7Error::Expired(signer.subject().to_string()));
    }
    check_signature(&p.signer, &signer, content)?;
    Ok(content.to_vec())
}

/// The elements of a SET OF certificates.
fn split(mut v: &[u8]) -> Result<Vec<&[u8]>, Pkcs7Error> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let (t, rest) = read(v)?;
        out.push(t.whole);
        v = rest;
    }
    Ok(out)
}

fn encapsulated_content<'a>(encap: &Tlv<'a>) -> Result<Option<&'a [u8]>, Pkcs7Error> {
    let m = Pkcs7Error::Malformed;
    let e = children(encap.value)?;
    match e.as_slice() {
        [oid, explicit] if oid.tag == 0x06 && oid.value == OID_DATA && explicit.tag == 0xa0 => {
            let (octets, rest) = expect(explicit.value, 0x04, "content must be a primitive OCTET STRING")?;
            if !rest.is_empty() {
                return Err(m("content"));
            }
            Ok(Some(octets.value))
        }
        [oid] if oid.tag == 0x06 && oid.value == OID_DATA => Ok(None),
        _ => Err(m("encapContentInfo")),
    }
}

struct SignerInfo<'a> {
    issuer: &'a [u8],
    serial: &'a [u8],
    digest_oid: &'a [u8],
    signed_attrs: Option<Tlv<'a>>,
    sig_oid: &'a [u8],
    signature: &'a [u8],
}

impl<'a> SignerInfo<'a> {
    fn parse(t: &Tlv<'a>) -> Result<Self, Pkcs7Error> {
        let m = Pkcs7Error::Malformed;
        if t.tag != 0x30 {
            return Err(m("SignerInfo"));
        }
        let f = children(t.value)?;
        let (sid, dig, attrs, sig_alg, sig) = match f.as_slice() {
            [_v, sid, dig, a, sa, s] | [_v, sid, dig, a, sa, s, _] if a.tag == 0xa0 => (sid, dig, Some(*a), sa, s),
            [_v, sid, dig, sa, s] | [_v, sid, dig, sa, s, _] => (sid, dig, None, sa, s),
            _ => return Err(m("SignerInfo fields")),
        };
        // issuerAndSerialNumber only: matching by key identifier alone is what SPIRE had to fix.
        let ias = children(sid.value)?;
        let [issuer, serial] = ias.as_slice() else { return Err(m("sid must be issuerAndSerialNumber")) };
        if sid.tag != 0x30 || issuer.tag != 0x30 || serial.tag != 0x02 || sig.tag != 0x04 {
            return Err(m("SignerInfo fields"));
        }
        Ok(Self {
            issuer: issuer.whole,
            serial: serial.value,
            digest_oid: first_oid(dig)?,
            signed_attrs: attrs,
            sig_oid: first_oid(sig_alg)?,
            signature: sig.value,
        })
    }
}

fn first_oid<'a>(alg: &Tlv<'a>) -> Result<&'a [u8], Pkcs7Error> {
    let (oid, _) = expect(alg.value, 0x06, "AlgorithmIdentifier")?;
    Ok(oid.value)
}

/// The certificate among `certs` (DER) that the SignerInfo names by issuer and serial.
fn find_signer<'a>(certs: &[&'a [u8]], si: &SignerInfo<'_>) -> Option<X509Certificate<'a>> {
    let strip = |s: &[u8]| -> Vec<u8> { s.iter().skip_while(|b| **b == 0).copied().collect() };
    certs.iter().filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c)).find(|c| c.issuer().as_raw() == si.issuer && strip(c.raw_serial()) == strip(si.serial))
}

fn check_signature(si: &SignerInfo<'_>, signer: &X509Certificate<'_>, content: &[u8]) -> Result<(), Pkcs7Error> {
    let dalg = match si.digest_oid {
        OID_SHA256 => &digest::SHA256,
        OID_SHA384 => &digest::SHA384,
        OID_SHA512 => &digest::SHA512,
        _ => return Err(Pkcs7Error::Algorithm),
    };
    let signed: Vec<u8> = match &si.signed_attrs {
        None => content.to_vec(),
        Some(attrs) => {
            check_attributes(attrs.value, digest::digest(dalg, content).as_ref())?;
            // The signature covers the attributes re-tagged as a SET (RFC 5652, 5.4).
            let mut der = attrs.whole.to_vec();
            der[0] = 0x31;
            der
        }
    };
    let key = signer.public_key();
    let key_bits: &[u8] = &key.subject_public_key.data;
    let alg: &dyn signature::VerificationAlgorithm = match (si.sig_oid, si.digest_oid) {
        (OID_RSA | OID_RSA_SHA256, OID_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (OID_RSA | OID_RSA_SHA384, OID_SHA384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (OID_RSA | OID_RSA_SHA512, OID_SHA512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (OID_ECDSA_SHA256, OID_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
        (OID_ECDSA_SHA384, OID_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
        _ => return Err(Pkcs7Error::Algorithm),
    };
    signature::UnparsedPublicKey::new(alg, key_bits).verify(&signed, si.signature).map_err(|_| Pkcs7Error::BadSignature)
}

/// `contentType` must be `data` and `messageDigest` the content's digest; each exactly once.
fn check_attributes(attrs: &[u8], want_digest: &[u8]) -> Result<(), Pkcs7Error> {
    let m = Pkcs7Error::Malformed;
    let (mut ct, mut md) = (0, 0);
    for a in children(attrs)? {
        let f = children(a.value)?;
        let [oid, values] = f.as_slice() else { return Err(m("attribute")) };
        let vals = children(values.value)?;
        let [val] = vals.as_slice() else { return Err(m("attribute must have one value")) };
        match oid.value {
            OID_CONTENT_TYPE => {
                ct += 1;
                if val.tag != 0x06 || val.value != OID_DATA {
                    return Err(m("contentType attribute is not data"));
                }
            }
            OID_MESSAGE_DIGEST => {
                md += 1;
                if val.tag != 0x04 || aws_lc_rs::constant_time::verify_slices_are_equal(val.value, want_digest).is_err() {
                    return Err(Pkcs7Error::BadSignature);
                }
            }
            _ => {}
        }
    }
    if ct != 1 || md != 1 {
        return Err(m("signed attributes need one contentType and one messageDigest"));
    }
    Ok(())
}

fn check_trust(signer: &X509Certificate<'_>, trust: &Trust<'_>) -> Result<(), Pkcs7Error> {
    let subject = signer.subject().to_string();
    let valid = |c: &X509Certificate<'_>| c.validity().not_before.timestamp() <= trust.now && trust.now <= c.validity().not_after.timestamp();
    if !valid(signer) || signer.is_ca() {
        return Err(Pkcs7Error::Untrusted(subject));
    }
    let mut names: Vec<String> = signer.subject().iter_common_name().filter_map(|c| c.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = signer.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    if !names.iter().any(|n| trust.signer_names.iter().any(|p| name_matches(p, n))) {
        return Err(Pkcs7Error::WrongSigner(subject));
    }
    let anchors = sigil_core::pem::certificate_ders(trust.anchors_pem, "attested_ca").map_err(Pkcs7Error::BadAnchors)?;
    for der in &anchors {
        let Ok((_, ca)) = X509Certificate::from_der(der) else { continue };
        if ca.subject().as_raw() == signer.issuer().as_raw() && ca.is_ca() && valid(&ca) && signer.verify_signature(Some(ca.public_key())).is_ok() {
            return Ok(());
        }
    }
    Err(Pkcs7Error::Untrusted(subject))
}

/// `metadata.azure.com` matches itself; `*.metadata.azure.com` matches one more label.
fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.strip_suffix(suffix).and_then(|h| h.strip_suffix('.')).is_some_and(|h| !h.is_empty() && !h.contains('.')),
        None => name == pattern.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signer_name_patterns_match_one_label() {
        assert!(name_matches("metadata.azure.com", "METADATA.azure.com"));
        assert!(name_matches("*.metadata.azure.com", "eastus.metadata.azure.com"));
        assert!(!name_matches("*.metadata.azure.com", "a.b.metadata.azure.com"));
        assert!(!name_matches("*.metadata.azure.com", "evilmetadata.azure.com"));
        assert!(!name_matches("metadata.azure.com", "metadata.azure.com.evil"));
    }

    #[test]
    fn truncated_or_non_der_input_is_refused_without_panicking() {
        let trust = Trust { anchors_pem: "", signer_names: &[], now: 0 };
        for input in [&b""[..], &[0x30], &[0x30, 0x80, 0, 0], &[0x30, 0x84, 1, 1, 1, 1], &[0x30, 0x03, 0x06, 0x01]] {
            assert!(verify(input, &trust).is_err());
        }
    }
}
