//! Which signature algorithms a token may name: asymmetric only. `none` and
//! every HMAC name are refused outright, before any key is looked at, so a
//! public key can never be used as a shared secret.

use super::JwtError;

/// Signature algorithms this verifier implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    Rs512,
    /// RSASSA-PSS SHA-256.
    Ps256,
    /// RSASSA-PSS SHA-384.
    Ps384,
    /// RSASSA-PSS SHA-512.
    Ps512,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// ECDSA P-384 SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// The algorithm a JOSE name stands for, or why it is refused.
    pub fn parse(s: &str) -> Result<Self, JwtError> {
        Ok(match s {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            s if s.eq_ignore_ascii_case("none") || s.to_ascii_uppercase().starts_with("HS") || s.is_empty() => {
                return Err(JwtError::ForbiddenAlgorithm(s.into()))
            }
            other => return Err(JwtError::UnsupportedAlgorithm(other.into())),
        })
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// Whether this is an RSA algorithm (PKCS#1 v1.5 or PSS).
    pub fn is_rsa(self) -> bool {
        matches!(self, Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_hmac_in_any_case_are_forbidden_and_unknown_names_unsupported() {
        for s in ["none", "NONE", "None", "", "HS256", "hs512"] {
            assert!(matches!(Alg::parse(s), Err(JwtError::ForbiddenAlgorithm(_))), "{s}");
        }
        assert!(matches!(Alg::parse("ES512"), Err(JwtError::UnsupportedAlgorithm(_))));
        for a in [Alg::Rs256, Alg::Ps384, Alg::Es256, Alg::EdDsa] {
            assert_eq!(Alg::parse(a.name()), Ok(a));
        }
    }
}
