//! TPM 2.0 wire structures the TPM join reads: `TPMT_PUBLIC` (TPM 2.0 Part 2,
//! 12.2.4) of the endorsement key and the attestation key, and object names.
//! Pure parsing: full recognition before use, every length checked.

use aws_lc_rs::digest;

/// `TPM_ALG_RSA`.
pub const ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_SHA256`.
pub const ALG_SHA256: u16 = 0x000B;
/// `TPM_ALG_NULL`.
pub const ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_AES`.
pub const ALG_AES: u16 = 0x0006;
/// `TPM_ALG_CFB`.
pub const ALG_CFB: u16 = 0x0043;
/// `TPM_ALG_ECC`.
pub const ALG_ECC: u16 = 0x0023;
/// `TPM_ALG_RSAES` (scheme without a hash).
const ALG_RSAES: u16 = 0x0015;
/// `TPM_ALG_ECDAA` (scheme with a hash and a count).
const ALG_ECDAA: u16 = 0x001A;

/// `TPMA_OBJECT` bits (Part 2, 8.3).
pub mod attr {
    /// fixedTPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// adminWithPolicy.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// restricted.
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt.
    pub const SIGN: u32 = 1 << 18;
}

/// Why a TPM structure could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TpmWireError {
    /// The bytes end early or have trailing data.
    #[error("{0}: truncated or trailing bytes")]
    Length(&'static str),
    /// An algorithm this broker does not handle.
    #[error("{what}: unsupported algorithm 0x{alg:04x}")]
    Unsupported {
        /// Field.
        what: &'static str,
        /// Algorithm id.
        alg: u16,
    },
}

/// Symmetric definition of a storage key (`TPMT_SYM_DEF_OBJECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// Algorithm (`ALG_NULL` when none).
    pub alg: u16,
    /// Key bits (0 when NULL).
    pub key_bits: u16,
    /// Mode (0 when NULL).
    pub mode: u16,
}

/// Type-specific part of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParams {
    /// RSA.
    Rsa {
        /// Symmetric definition (storage keys).
        symmetric: SymDef,
        /// Key size.
        key_bits: u16,
        /// Public exponent (0 in the structure means 65537).
        exponent: u32,
        /// Modulus, big-endian.
        modulus: Vec<u8>,
    },
    /// ECC (read so that ECC attestation keys work; not as endorsement key).
    Ecc {
        /// Symmetric definition.
        symmetric: SymDef,
        /// Curve id.
        curve: u16,
    },
}

/// A parsed `TPMT_PUBLIC`, with the exact bytes it came from (names hash those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// Object type (`ALG_RSA`, `ALG_ECC`).
    pub kind: u16,
    /// Name algorithm.
    pub name_alg: u16,
    /// `TPMA_OBJECT`.
    pub attributes: u32,
    /// Authorization policy digest.
    pub auth_policy: Vec<u8>,
    /// Parameters and unique field.
    pub params: KeyParams,
    raw: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Result<u16, TpmWireError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, TpmWireError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmWireError> {
        if self.b.len() < n {
            return Err(TpmWireError::Length(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], TpmWireError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn sym_def(&mut self) -> Result<SymDef, TpmWireError> {
        let alg = self.u16()?;
        if alg == ALG_NULL {
            return Ok(SymDef { alg, key_bits: 0, mode: 0 });
        }
        Ok(SymDef { alg, key_bits: self.u16()?, mode: self.u16()? })
    }
    /// `TPMT_RSA_SCHEME` / `TPMT_ECC_SCHEME` / `TPMT_KDF_SCHEME`: alg plus its details.
    fn scheme(&mut self) -> Result<u16, TpmWireError> {
        let alg = self.u16()?;
        match alg {
            ALG_NULL | ALG_RSAES => {}
            ALG_ECDAA => {
                self.u16()?;
                self.u16()?;
            }
            _ => {
                self.u16()?;
            }
        }
        Ok(alg)
    }
}

impl TpmPublic {
    /// Parses a marshalled `TPMT_PUBLIC` (no TPM2B size prefix).
    pub fn parse(bytes: &[u8], what: &'static str) -> Result<Self, TpmWireError> {
        let mut r = Reader { b: bytes, what };
        let kind = r.u16()?;
        let name_alg = r.u16()?;
        let attributes = r.u32()?;
        let auth_policy = r.tpm2b()?.to_vec();
        let params = match kind {
            ALG_RSA => {
                let symmetric = r.sym_def()?;
                r.scheme()?;
                let key_bits = r.u16()?;
                let exponent = r.u32()?;
                let modulus = r.tpm2b()?.to_vec();
                KeyParams::Rsa { symmetric, key_bits, exponent, modulus }
            }
            ALG_ECC => {
                let symmetric = r.sym_def()?;
                r.scheme()?;
                let curve = r.u16()?;
                r.scheme()?; // kdf
                r.tpm2b()?; // x
                r.tpm2b()?; // y
                KeyParams::Ecc { symmetric, curve }
            }
            alg => return Err(TpmWireError::Unsupported { what, alg }),
        };
        if !r.b.is_empty() {
            return Err(TpmWireError::Length(what));
        }
        Ok(Self { kind, name_alg, attributes, auth_policy, params, raw: bytes.to_vec() })
    }

    /// The object's name: name algorithm id || H(TPMT_PUBLIC). SHA-256 only.
    pub fn name(&self) -> Result<Vec<u8>, TpmWireError> {
        if self.name_alg != ALG_SHA256 {
            return Err(TpmWireError::Unsupported { what: "name algorithm", alg: self.name_alg });
        }
        let mut n = ALG_SHA256.to_be_bytes().to_vec();
        n.extend_from_slice(digest::digest(&digest::SHA256, &self.raw).as_ref());
        Ok(n)
    }

    /// Whether every bit of `required` is set and none of `forbidden`.
    pub fn has(&self, required: u32, forbidden: u32) -> bool {
        self.attributes & required == required && self.attributes & forbidden == 0
    }

    /// The marshalled bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod tests_support {
    use super::*;

    /// An RSA-2048 EK public area shaped like the TCG EK template L-1.
    pub fn ek_template(modulus: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&ALG_RSA.to_be_bytes());
        b.extend_from_slice(&ALG_SHA256.to_be_bytes());
        let a = attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::ADMIN_WITH_POLICY | attr::RESTRICTED | attr::DECRYPT;
        b.extend_from_slice(&a.to_be_bytes());
        b.extend_from_slice(&32u16.to_be_bytes());
        b.extend_from_slice(&[0x83; 32]);
        for v in [ALG_AES, 128, ALG_CFB, ALG_NULL, 2048] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&(modulus.len() as u16).to_be_bytes());
        b.extend_from_slice(modulus);
        b
    }

}

#[cfg(test)]
mod tests {
    use super::tests_support::ek_template;
    use super::*;

    #[test]
    fn ek_template_is_read_and_named() {
        let raw = ek_template(&[0xAB; 256]);
        let p = TpmPublic::parse(&raw, "ek").unwrap();
        assert!(p.has(attr::RESTRICTED | attr::DECRYPT | attr::FIXED_TPM, attr::SIGN));
        match &p.params {
            KeyParams::Rsa { symmetric, key_bits, modulus, .. } => {
                assert_eq!(*symmetric, SymDef { alg: ALG_AES, key_bits: 128, mode: ALG_CFB });
                assert_eq!((*key_bits, modulus.len()), (2048, 256));
            }
            other => panic!("{other:?}"),
        }
        let name = p.name().unwrap();
        assert_eq!(name.len(), 34);
        assert_eq!(&name[..2], &[0x00, 0x0B]);
    }

    #[test]
    fn truncated_or_padded_structures_are_refused() {
        let raw = ek_template(&[0xAB; 256]);
        for cut in [0, 1, 9, 40, raw.len() - 1] {
            assert!(TpmPublic::parse(&raw[..cut], "ek").is_err(), "cut at {cut}");
        }
        let mut long = raw.clone();
        long.push(0);
        assert_eq!(TpmPublic::parse(&long, "ek").unwrap_err(), TpmWireError::Length("ek"));
    }
}
