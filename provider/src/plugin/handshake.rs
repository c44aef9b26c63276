//! The go-plugin handshake, as pure functions: cookie check, protocol version
//! negotiation and the one line the host reads from our stdout.

/// Environment variable the host sets to prove it launched us.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// The value Terraform sets for [`MAGIC_COOKIE_KEY`].
pub const MAGIC_COOKIE_VALUE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's own protocol version (first field of the handshake line).
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// Why the handshake cannot go ahead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Started by hand (or by something that is not Terraform).
    #[error(
        "This binary is a plugin. These are not meant to be executed directly. \
         Please execute the program that consumes these plugins (terraform), \
         which will load any plugins automatically."
    )]
    NotLaunchedByHost,
    /// `PLUGIN_PROTOCOL_VERSIONS` contains something that is not a number.
    #[error("PLUGIN_PROTOCOL_VERSIONS is malformed: {0:?}")]
    MalformedVersions(String),
    /// The host and this plugin share no protocol version.
    #[error("the host offers plugin protocol versions {offered:?}; this provider speaks {supported:?}")]
    NoSharedVersion {
        /// What the host offered.
        offered: Vec<u32>,
        /// What we speak.
        supported: Vec<u32>,
    },
}

/// Checks the magic cookie the host must set.
pub fn check_cookie(value: Option<&str>) -> Result<(), HandshakeError> {
    match value {
        Some(v) if v == MAGIC_COOKIE_VALUE => Ok(()),
        _ => Err(HandshakeError::NotLaunchedByHost),
    }
}

/// Picks the highest protocol version both sides speak. With no offer (an old
/// host) the highest version we speak is used.
pub fn negotiate(offered: Option<&str>, supported: &[u32]) -> Result<u32, HandshakeError> {
    let Some(raw) = offered.filter(|s| !s.trim().is_empty()) else {
        return supported.iter().copied().max().ok_or(HandshakeError::NoSharedVersion {
            offered: vec![],
            supported: supported.to_vec(),
        });
    };
    let offered = raw
        .split(',')
        .map(|s| s.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| HandshakeError::MalformedVersions(raw.to_string()))?;
    offered
        .iter()
        .copied()
        .filter(|v| supported.contains(v))
        .max()
        .ok_or(HandshakeError::NoSharedVersion { offered, supported: supported.to_vec() })
}

/// The handshake line (without newline):
/// `CORE|APP|NETWORK|ADDR|grpc|CERT`, CERT being the server certificate DER in
/// unpadded standard base64 (empty without AutoMTLS).
pub fn handshake_line(app_version: u32, network: &str, addr: &str, cert_der: Option<&[u8]>) -> String {
    use base64::Engine as _;
    let cert = cert_der
        .map(|d| base64::engine::general_purpose::STANDARD_NO_PAD.encode(d))
        .unwrap_or_default();
    format!("{CORE_PROTOCOL_VERSION}|{app_version}|{network}|{addr}|grpc|{cert}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_wrong_cookie_is_refused() {
        assert_eq!(check_cookie(None), Err(HandshakeError::NotLaunchedByHost));
        assert_eq!(check_cookie(Some("nope")), Err(HandshakeError::NotLaunchedByHost));
        assert_eq!(check_cookie(Some(MAGIC_COOKIE_VALUE)), Ok(()));
    }

    #[test]
    fn highest_shared_version_wins() {
        assert_eq!(negotiate(Some("4,5,6"), &[6]), Ok(6));
        assert_eq!(negotiate(Some("5"), &[5, 6]), Ok(5));
        assert_eq!(negotiate(None, &[5, 6]), Ok(6));
    }

    #[test]
    fn no_shared_version_is_an_error_naming_both_sides() {
        let err = negotiate(Some("4,5"), &[6]).unwrap_err();
        assert_eq!(err, HandshakeError::NoSharedVersion { offered: vec![4, 5], supported: vec![6] });
        assert!(matches!(negotiate(Some("5,x"), &[6]), Err(HandshakeError::MalformedVersions(_))));
    }

    #[test]
    fn handshake_line_has_six_fields_and_unpadded_cert() {
        let line = handshake_line(6, "unix", "/tmp/plugin1", Some(&[1, 2, 3, 4]));
        assert_eq!(line, "1|6|unix|/tmp/plugin1|grpc|AQIDBA");
        assert!(handshake_line(6, "unix", "/s", None).ends_with("|grpc|"));
    }
}
