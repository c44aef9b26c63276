//! BER to DER, for signed documents whose signer streams them: AWS encodes
//! the EC2 identity document's PKCS#7 with indefinite lengths (and may cut
//! the content into a constructed OCTET STRING). The PKCS#7 reader
//! (`azure_pkcs7.rs`) reads DER only; this rewrites every indefinite length
//! as a definite one and joins constructed OCTET STRINGs into one primitive,
//! leaving DER input byte for byte as it was (so signed attributes, which
//! signers encode in DER, keep the bytes their signature covers).
//!
//! Bounded: the input size is the caller's (the output is never longer than
//! the input plus a few bytes per element), nesting is at most
//! [`MAX_DEPTH`], and every length is checked against what remains. Pure.

/// Deepest nesting accepted (PKCS#7 with a certificate needs about 12).
pub const MAX_DEPTH: usize = 32;

/// Why the input is not BER this reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BerError {
    /// Not well-formed: truncated, a bad length, nested too deep.
    #[error("BER: {0}")]
    Malformed(&'static str),
}

const CONSTRUCTED: u8 = 0x20;
const OCTET_STRING: u8 = 0x04;

/// Rewrites one BER element (and nothing after it) as DER.
pub fn to_der(input: &[u8]) -> Result<Vec<u8>, BerError> {
    let mut out = Vec::with_capacity(input.len());
    let rest = element(input, 0, &mut out)?;
    if !rest.is_empty() {
        return Err(BerError::Malformed("trailing bytes"));
    }
    Ok(out)
}

/// A length: `Some(n)` definite, `None` indefinite.
fn header(input: &[u8]) -> Result<(u8, Option<usize>, &[u8]), BerError> {
    let m = BerError::Malformed;
    let (&tag, rest) = input.split_first().ok_or(m("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(m("high tag numbers"));
    }
    let (&first, rest) = rest.split_first().ok_or(m("truncated"))?;
    if first < 0x80 {
        return Ok((tag, Some(first as usize), rest));
    }
    if first == 0x80 {
        if tag & CONSTRUCTED == 0 {
            return Err(m("indefinite length on a primitive element"));
        }
        return Ok((tag, None, rest));
    }
    let n = (first & 0x7f) as usize;
    if n > 3 || rest.len() < n {
        return Err(m("oversized length"));
    }
    let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
    Ok((tag, Some(len), &rest[n..]))
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xffff => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
}

/// Reads one element from `input` into `out` (as DER); returns what follows it.
fn element<'a>(input: &'a [u8], depth: usize, out: &mut Vec<u8>) -> Result<&'a [u8], BerError> {
    let m = BerError::Malformed;
    if depth > MAX_DEPTH {
        return Err(m("nested too deep"));
    }
    let (tag, len, rest) = header(input)?;
    if tag & CONSTRUCTED == 0 {
        let len = len.ok_or(m("indefinite length on a primitive element"))?;
        if rest.len() < len {
            return Err(m("truncated"));
        }
        out.push(tag);
        push_len(out, len);
        out.extend_from_slice(&rest[..len]);
        return Ok(&rest[len..]);
    }
    // Constructed: the children, up to the definite end or the end-of-contents octets.
    let mut body = Vec::new();
    let after = match len {
        Some(len) => {
            if rest.len() < len {
                return Err(m("truncated"));
            }
            let mut inner = &rest[..len];
            while !inner.is_empty() {
                inner = element(inner, depth + 1, &mut body)?;
            }
            &rest[len..]
        }
        None => {
            let mut inner = rest;
            loop {
                match inner {
                    [0, 0, tail @ ..] => break tail,
                    [] => return Err(m("indefinite length without end-of-contents")),
                    _ => inner = element(inner, depth + 1, &mut body)?,
                }
            }
        }
    };
    if tag == (OCTET_STRING | CONSTRUCTED) {
        // The segments' contents, joined (each segment is now a primitive OCTET STRING).
        let mut joined = Vec::with_capacity(body.len());
        let mut segs = body.as_slice();
        while !segs.is_empty() {
            let (stag, slen, srest) = header(segs)?;
            let slen = slen.ok_or(m("segment"))?;
            if stag != OCTET_STRING || srest.len() < slen {
                return Err(m("a constructed OCTET STRING may hold only OCTET STRINGs"));
            }
            joined.extend_from_slice(&srest[..slen]);
            segs = &srest[slen..];
        }
        out.push(OCTET_STRING);
        push_len(out, joined.len());
        out.extend_from_slice(&joined);
    } else {
        out.push(tag);
        push_len(out, body.len());
        out.extend_from_slice(&body);
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn der_passes_through_byte_for_byte() {
        let der = [0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0xaa];
        assert_eq!(to_der(&der).unwrap(), der);
    }

    #[test]
    fn indefinite_lengths_become_definite_and_octet_segments_are_joined() {
        // SEQUENCE (indefinite) { [0] (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "c" } } }
        let ber = [0x30, 0x80, 0xa0, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0, 0, 0];
        assert_eq!(to_der(&ber).unwrap(), [0x30, 0x07, 0xa0, 0x05, 0x04, 0x03, b'a', b'b', b'c']);
    }

    #[test]
    fn unterminated_truncated_or_too_deep_input_is_refused() {
        assert!(to_der(&[0x30, 0x80, 0x02, 0x01, 0x01]).is_err(), "no end-of-contents");
        assert!(to_der(&[0x04, 0x80, 0, 0]).is_err(), "indefinite primitive");
        assert!(to_der(&[0x30, 0x05, 0x02, 0x01]).is_err(), "truncated");
        assert!(to_der(&[0x24, 0x03, 0x02, 0x01, 0x01]).is_err(), "a non-octet segment");
        let mut deep = vec![];
        for _ in 0..(MAX_DEPTH + 2) {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        deep.extend(std::iter::repeat_n(0u8, 2 * (MAX_DEPTH + 2)));
        assert_eq!(to_der(&deep), Err(BerError::Malformed("nested too deep")));
    }
}
