//! `--identity` / `SIGIL_IDENTITY`: a path to an identity file, or the file's
//! content (as the Terraform provider accepts, for pipelines that hold it in a
//! secret variable).
//!
//! The value is never echoed: not in errors (a "path" that fails to open may be
//! the PEM itself, private key included), not in `--help` (`hide_env_values`).

use sigil_schemas::identity::{Identity, IdentityError};
use std::ffi::OsStr;
use std::path::Path;

/// The identity could not be loaded. No variant carries the value given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum IdentitySourceError {
    /// The value is not PEM content and no readable file has that name.
    #[error("cannot read the identity file named by --identity / SIGIL_IDENTITY ({0}); the value is a path or the identity's PEM content and is not shown")]
    Read(std::io::ErrorKind),
    /// The content (given directly or read from the file) is not an identity.
    #[error("the identity given by --identity / SIGIL_IDENTITY is not usable: {0}")]
    Invalid(IdentityError),
}

/// Identity content, not a path: the PEM armour no file name carries.
fn is_content(value: &OsStr) -> bool {
    sigil_core::pem::looks_like_pem(value.as_encoded_bytes())
}

/// Loads the identity from `value`: PEM content, or the path of a file holding it.
pub(crate) fn load(value: &OsStr) -> Result<Identity, IdentitySourceError> {
    if is_content(value) {
        let text = value.to_str().ok_or(IdentitySourceError::Invalid(IdentityError::Pem("not UTF-8".into())))?;
        return Identity::from_pem(text).map_err(IdentitySourceError::Invalid);
    }
    let text = sigil_core::pem::read_file(Path::new(value)).map_err(|e| IdentitySourceError::Read(e.kind()))?;
    Identity::from_pem(&text).map_err(IdentitySourceError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n";

    #[test]
    fn content_with_a_bad_key_is_refused_without_echoing_it() {
        let e = load(OsStr::new(SECRET)).unwrap_err().to_string();
        assert!(!e.contains("SECRETKEYMATERIAL") && !e.contains("BEGIN"), "{e}");
    }

    #[test]
    fn a_missing_path_is_not_echoed_either() {
        let e = load(OsStr::new("/nonexistent/SECRETKEYMATERIAL")).unwrap_err().to_string();
        assert!(e.contains("SIGIL_IDENTITY") && !e.contains("SECRETKEYMATERIAL"), "{e}");
    }
}
