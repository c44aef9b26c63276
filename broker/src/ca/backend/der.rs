//! The two DER shapes a token hands back raw: an ECDSA signature (PKCS#11
//! gives `r || s`, X.509 wants `SEQUENCE { INTEGER r, INTEGER s }`) and an RSA
//! public key (PKCS#11 gives modulus and exponent, rcgen wants PKCS#1
//! `RSAPublicKey`). Plus reading the `CKA_EC_POINT` OCTET STRING.

/// A DER length.
pub(crate) fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// One DER TLV: `tag`, the length of `content`, `content`.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Reads one TLV at the start of `b` (single-byte tag, definite length):
/// its whole encoding and the rest. `None` if `b` does not start with one.
pub(crate) fn read_tlv(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *b.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b.get(2..2 + n)?.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (2 + n, len)
    };
    let end = header.checked_add(len)?;
    (b.len() >= end).then(|| b.split_at(end))
}

/// The content of a TLV's whole encoding.
pub(crate) fn content(whole: &[u8]) -> Option<&[u8]> {
    let first = *whole.get(1)?;
    let header = if first < 0x80 { 2 } else { 2 + usize::from(first & 0x7f) };
    whole.get(header..)
}

/// A positive DER INTEGER from big-endian magnitude bytes.
fn push_uint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let trimmed: &[u8] = match magnitude.iter().position(|&b| b != 0) {
        Some(i) => &magnitude[i..],
        None => &[0],
    };
    let pad = trimmed[0] & 0x80 != 0;
    out.push(0x02);
    push_len(out, trimmed.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

fn sequence_of_uints(parts: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        push_uint(&mut body, p);
    }
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend(body);
    out
}

/// `r || s` (equal halves) as a DER ECDSA-Sig-Value; `None` for an odd length.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(sequence_of_uints(&[r, s]))
}

/// PKCS#1 `RSAPublicKey` from modulus and public exponent.
pub fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    sequence_of_uints(&[modulus, exponent])
}

/// The uncompressed point from `CKA_EC_POINT`: tokens return it DER-wrapped in
/// an OCTET STRING (PKCS#11 2.40), some return it bare.
pub fn ec_point(attr: &[u8]) -> Option<Vec<u8>> {
    match attr {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => Some(rest.to_vec()),
        [0x04, ..] if attr.len() == 65 => Some(attr.to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING};

    #[test]
    fn raw_ecdsa_signatures_become_der_that_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        // Enough signatures that some r or s has its high bit set or a leading zero byte.
        for i in 0..64u8 {
            let msg = [i; 10];
            let raw = kp.sign(&rng, &msg).unwrap();
            let der = ecdsa_raw_to_der(raw.as_ref()).unwrap();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, kp.public_key().as_ref()).verify(&msg, &der).unwrap();
        }
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(ecdsa_raw_to_der(&[0, 0x80, 0, 1]).unwrap(), vec![0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01]);
        assert_eq!(ecdsa_raw_to_der(&[0, 0]).unwrap(), vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_none());
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let n = vec![0xc5u8; 256];
        let der = rsa_public_key(&n, &[1, 0, 1]);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(der.len(), 4 + 0x10a);
    }

    #[test]
    fn ec_points_are_read_wrapped_or_bare() {
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&point);
        assert_eq!(ec_point(&wrapped).unwrap(), point);
        assert_eq!(ec_point(&point).unwrap(), point);
        assert!(ec_point(&[4, 1, 2]).is_none());
    }
}
