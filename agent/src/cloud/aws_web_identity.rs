//! AWS OIDC federation: STS `AssumeRoleWithWebIdentity` with a JWT-SVID (an
//! unsigned call: the token is the credential, no SigV4), and the AWS config
//! profile (`web_identity_token_file` + `role_arn`) that lets every AWS SDK do
//! the exchange itself.

use secrecy::{ExposeSecret, SecretString};
use super::aws_credentials::{AwsCredentials};
use super::files;
use sigil_core::xml;
use super::http::{form_encode, HttpClient, HttpError};
use std::path::{Path, PathBuf};

/// Audience AWS expects by default in the JWT (`aud`): the IAM OIDC provider's client id.
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// The global STS endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://sts.amazonaws.com/";
/// Shortest and longest session AWS grants.
pub const DURATION_RANGE: (u32, u32) = (900, 43_200);
/// Token length AWS accepts, in characters.
pub const TOKEN_LENGTH_RANGE: (usize, usize) = (4, 20_000);

/// Why the web identity exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebIdentityError {
    /// A parameter breaks an STS rule; the message says which and how to fix it.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The parameter.
        field: &'static str,
        /// The rule broken.
        why: String,
    },
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// STS answered with an error (code such as `InvalidIdentityToken`, `IDPRejectedClaim`).
    #[error("STS refused AssumeRoleWithWebIdentity: {code}: {message}{hint}")]
    Sts {
        /// HTTP status.
        status: u16,
        /// AWS error code.
        code: String,
        /// AWS error message.
        message: String,
        /// What usually fixes it.
        hint: &'static str,
    },
    /// The answer was not the documented XML.
    #[error("unexpected STS response (HTTP {status}): {error}")]
    Malformed {
        /// HTTP status.
        status: u16,
        /// What is wrong with the document.
        error: xml::XmlError,
    },
    /// Writing the AWS config file failed.
    #[error("cannot write {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// One `AssumeRoleWithWebIdentity` call.
#[derive(Debug, Clone)]
pub struct AssumeRoleRequest {
    /// STS endpoint URL (default [`DEFAULT_ENDPOINT`]; regional `https://sts.REGION.amazonaws.com/`).
    pub endpoint: String,
    /// Role to assume.
    pub role_arn: String,
    /// Session name, 2..64 characters of `[\w+=,.@-]`.
    pub role_session_name: String,
    /// Session length in seconds (900..43200), or the role's default.
    pub duration_seconds: Option<u32>,
    /// The JWT-SVID.
    pub token: SecretString,
}

impl AssumeRoleRequest {
    /// Checks the request against STS's documented limits before sending it.
    pub fn validate(&self) -> Result<(), WebIdentityError> {
        let inv = |field, why: String| Err(WebIdentityError::Invalid { field, why });
        let n = self.token.expose_secret().chars().count();
        if n < TOKEN_LENGTH_RANGE.0 || n > TOKEN_LENGTH_RANGE.1 {
            return inv("token", format!("{n} characters; STS accepts 4..20000 (use fewer audiences or claims)"));
        }
        let s = &self.role_session_name;
        if s.len() < 2 || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)) {
            return inv("role_session_name", format!("{s:?}: 2..64 characters of letters, digits and _+=,.@-"));
        }
        if let Some(d) = self.duration_seconds {
            if d < DURATION_RANGE.0 || d > DURATION_RANGE.1 {
                return inv("duration_seconds", format!("{d}: STS accepts 900..43200 (and at most the role's maximum)"));
            }
        }
        if !self.role_arn.starts_with("arn:") || !self.role_arn.contains(":role/") {
            return inv("role_arn", format!("{:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", self.role_arn));
        }
        Ok(())
    }

    /// The form body STS expects.
    pub fn form_body(&self) -> String {
        let duration = self.duration_seconds.map(|d| d.to_string());
        let mut pairs = vec![
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", self.role_arn.as_str()),
            ("RoleSessionName", self.role_session_name.as_str()),
            ("WebIdentityToken", self.token.expose_secret()),
        ];
        if let Some(d) = &duration {
            pairs.push(("DurationSeconds", d.as_str()));
        }
        form_encode(&pairs)
    }
}

/// A role session name derived from a SPIFFE ID (`spiffe://td/a/b` -> `td@a.b`), clipped to 64.
pub fn session_name_for(spiffe_id: &str) -> String {
    let rest = spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id);
    let mapped: String = rest
        .replacen('/', "@", 1)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) { c } else { '.' })
        .take(64)
        .collect();
    if mapped.len() < 2 {
        "sigil".into()
    } else {
        mapped
    }
}

/// Calls STS and returns temporary credentials.
pub async fn assume_role(client: &HttpClient, req: &AssumeRoleRequest) -> Result<AwsCredentials, WebIdentityError> {
    req.validate()?;
    let headers = vec![
        ("Content-Type".to_string(), "application/x-www-form-urlencoded; charset=utf-8".to_string()),
        ("Accept".to_string(), "application/xml".to_string()),
    ];
    let r = client.post(&req.endpoint, &headers, req.form_body().into_bytes()).await?;
    parse_response(r.status, &r.text())
}

/// Namespace of STS answers (an answer without one is accepted too; another is refused).
pub const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Parses STS's XML answer (success or `ErrorResponse`) by its structure: the
/// credentials are the one `Credentials` element of the one
/// `AssumeRoleWithWebIdentityResult` under the root, never text found elsewhere
/// (a comment, CDATA, another element's text).
pub fn parse_response(status: u16, body: &str) -> Result<AwsCredentials, WebIdentityError> {
    if !(200..300).contains(&status) {
        let (code, message) = sts_error(body).unwrap_or_else(|| (format!("HTTP {status}"), String::new()));
        let hint = match code.as_str() {
            "InvalidIdentityToken" => " (check the IAM OIDC provider's issuer URL and that AWS can fetch its JWKS; run `sigil federation verify aws`)",
            "IDPRejectedClaim" => " (the role trust policy's :aud/:sub conditions do not match the token; print them with `sigil federation aws setup`)",
            "IDPCommunicationError" => " (AWS could not reach the issuer's discovery/JWKS; retry, and check it is public HTTPS without a port)",
            "ExpiredTokenException" => " (the JWT-SVID expired: issue a fresh one)",
            "AccessDenied" => " (the role's trust policy does not allow sts:AssumeRoleWithWebIdentity for this provider)",
            _ => "",
        };
        return Err(WebIdentityError::Sts { status, code, message, hint });
    }
    let malformed = |error: xml::XmlError| WebIdentityError::Malformed { status, error };
    let doc = xml::parse(body).map_err(malformed)?;
    let root = doc.root_element();
    if !xml::is_element(root, "AssumeRoleWithWebIdentityResponse", STS_NAMESPACE) {
        return Err(malformed(xml::XmlError::Shape(format!("root element {:?} is not AssumeRoleWithWebIdentityResponse", root.tag_name().name()))));
    }
    let result = xml::only_child(root, "AssumeRoleWithWebIdentityResult", STS_NAMESPACE).map_err(malformed)?;
    let creds = xml::only_child(result, "Credentials", STS_NAMESPACE).map_err(malformed)?;
    let get = |tag: &str| {
        let v = xml::child_text(creds, tag, STS_NAMESPACE).map_err(malformed)?;
        if v.is_empty() {
            return Err(malformed(xml::XmlError::Shape(format!("{tag} is empty"))));
        }
        Ok(v)
    };
    Ok(AwsCredentials {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: SecretString::from(get("SecretAccessKey")?),
        session_token: SecretString::from(get("SessionToken")?),
        expiration: get("Expiration")?,
    })
}

/// `Code` and `Message` of an `ErrorResponse`, when the body is one.
fn sts_error(body: &str) -> Option<(String, String)> {
    let doc = xml::parse(body).ok()?;
    let root = doc.root_element();
    if !xml::is_element(root, "ErrorResponse", STS_NAMESPACE) {
        return None;
    }
    let error = xml::only_child(root, "Error", STS_NAMESPACE).ok()?;
    let code = xml::child_text(error, "Code", STS_NAMESPACE).ok().filter(|c| !c.is_empty())?;
    let message = xml::child_text(error, "Message", STS_NAMESPACE).unwrap_or_default();
    Some((code.chars().take(100).collect(), message.chars().take(300).collect()))
}

/// An AWS config profile that makes the SDK call AssumeRoleWithWebIdentity with our token file.
#[derive(Debug, Clone)]
pub struct WebIdentityProfile {
    /// Profile name (`default` or any other).
    pub name: String,
    /// Role to assume.
    pub role_arn: String,
    /// The JWT-SVID file the agent keeps fresh.
    pub token_file: PathBuf,
    /// Optional session name.
    pub role_session_name: Option<String>,
    /// Optional region.
    pub region: Option<String>,
    /// Optional session duration.
    pub duration_seconds: Option<u32>,
}

impl WebIdentityProfile {
    /// The section header (`default` or `profile NAME`).
    pub fn header(&self) -> String {
        profile_header(&self.name)
    }

    /// The profile's key/value lines.
    pub fn lines(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("role_arn".to_string(), self.role_arn.clone()),
            ("web_identity_token_file".to_string(), self.token_file.display().to_string()),
        ];
        if let Some(s) = &self.role_session_name {
            v.push(("role_session_name".into(), s.clone()));
        }
        if let Some(r) = &self.region {
            v.push(("region".into(), r.clone()));
        }
        if let Some(d) = self.duration_seconds {
            v.push(("duration_seconds".into(), d.to_string()));
        }
        v
    }

    /// Writes (or replaces) the profile in the AWS config file at `path`.
    pub fn write(&self, path: &Path) -> Result<(), WebIdentityError> {
        write_config_section(path, &self.header(), &self.lines())
    }
}

/// `default` or `profile NAME`, as the AWS config file spells section headers.
pub fn profile_header(name: &str) -> String {
    if name == "default" {
        "default".into()
    } else {
        format!("profile {name}")
    }
}

/// Replaces one section of an AWS config file, keeping the rest.
pub fn write_config_section(path: &Path, header: &str, lines: &[(String, String)]) -> Result<(), WebIdentityError> {
    let io = |error| WebIdentityError::Io { path: path.display().to_string(), error };
    let existing = files::read_back(path).map_err(io)?;
    let text = files::upsert_ini_section(&existing, header, lines);
    files::write_atomic(path, text.as_bytes(), 0o600).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AssumeRoleRequest {
        AssumeRoleRequest {
            endpoint: DEFAULT_ENDPOINT.into(),
            role_arn: "arn:aws:iam::123456789012:role/ci".into(),
            role_session_name: "sigil".into(),
            duration_seconds: Some(900),
            token: SecretString::from("eyJ.a.b"),
        }
    }

    #[test]
    fn request_limits_follow_sts() {
        assert!(req().validate().is_ok());
        let mut r = req();
        r.token = SecretString::from("x".repeat(20_001));
        assert!(matches!(r.validate(), Err(WebIdentityError::Invalid { field: "token", .. })));
        let mut r = req();
        r.duration_seconds = Some(899);
        assert!(r.validate().is_err());
        let mut r = req();
        r.role_session_name = "has space".into();
        assert!(r.validate().is_err());
    }

    #[test]
    fn form_body_carries_action_and_token() {
        let b = req().form_body();
        assert!(b.starts_with("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fci"));
        assert!(b.contains("WebIdentityToken=eyJ.a.b") && b.ends_with("DurationSeconds=900"));
    }

    #[test]
    fn success_xml_is_parsed() {
        let xml = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>sk&amp;1</SecretAccessKey><SessionToken>st</SessionToken><Expiration>2024-01-01T01:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let c = parse_response(200, xml).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.secret_access_key.expose_secret()), ("ASIA1", "sk&1"));
    }

    fn response(inside_result: &str, creds: &str) -> String {
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"{STS_NAMESPACE}\"><AssumeRoleWithWebIdentityResult>{inside_result}<Credentials>{creds}</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        )
    }

    const REAL: &str = "<AccessKeyId>ASIAREAL</AccessKeyId><SecretAccessKey>real-secret</SecretAccessKey><SessionToken>real-token</SessionToken><Expiration>2024-01-01T01:00:00Z</Expiration>";

    #[test]
    fn credentials_planted_in_a_comment_cdata_or_another_element_are_not_read() {
        let decoy = "<AccessKeyId>ASIAEVIL</AccessKeyId><SecretAccessKey>evil</SecretAccessKey><SessionToken>evil</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>";
        for before in [
            format!("<!-- {decoy} -->"),
            format!("<Provider><![CDATA[{decoy}]]></Provider>"),
            format!("<SubjectFromWebIdentityToken>x{}</SubjectFromWebIdentityToken>", decoy.replace('<', "&lt;").replace('>', "&gt;")),
            format!("<AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/s</Arn>{decoy}</AssumedRoleUser>"),
        ] {
            let c = parse_response(200, &response(&before, REAL)).unwrap();
            assert_eq!((c.access_key_id.as_str(), c.secret_access_key.expose_secret(), c.session_token.expose_secret()), ("ASIAREAL", "real-secret", "real-token"), "{before}");
        }
    }

    #[test]
    fn values_split_by_comments_in_cdata_or_under_a_namespace_prefix_are_read_whole() {
        let creds = "<AccessKeyId>ASIA<!-- </AccessKeyId> -->REAL</AccessKeyId><SecretAccessKey><![CDATA[sk<&>1]]></SecretAccessKey><SessionToken>st</SessionToken><Expiration>2024-01-01T01:00:00Z</Expiration>";
        let c = parse_response(200, &response("", creds)).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.secret_access_key.expose_secret()), ("ASIAREAL", "sk<&>1"));
        let prefixed = response("", REAL).replace("<", "<sts:").replace("<sts:/", "</sts:").replace(" xmlns=", " xmlns:sts=");
        assert_eq!(parse_response(200, &prefixed).unwrap().secret_access_key.expose_secret(), "real-secret");
    }

    #[test]
    fn credentials_only_outside_their_place_or_twice_or_in_another_namespace_are_refused() {
        let smuggled = format!(
            "<ListQueuesResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\"><Text>{}</Text></ListQueuesResponse>",
            response("", REAL)
        );
        let cases = [
            (response("", "").replace("<Credentials></Credentials>", &format!("<!-- <Credentials>{REAL}</Credentials> -->")), "Credentials missing"),
            (response(&format!("<AssumedRoleUser><Credentials>{REAL}</Credentials></AssumedRoleUser>"), "").replace("<Credentials></Credentials>", ""), "Credentials missing"),
            (response("", &format!("{REAL}<SecretAccessKey>second</SecretAccessKey>")), "SecretAccessKey appears twice"),
            (response("", &REAL.replace("<SecretAccessKey>real-secret</SecretAccessKey>", "<SecretAccessKey><b>x</b></SecretAccessKey>")), "unexpected element"),
            (response("", &REAL.replace("real-token", "")), "SessionToken is empty"),
            (smuggled.replace("<Text>", "<Text><![CDATA[").replace("</Text>", "]]></Text>"), "is not AssumeRoleWithWebIdentityResponse"),
            (response("", REAL).replace(STS_NAMESPACE, "urn:other"), "is not AssumeRoleWithWebIdentityResponse"),
            (format!("<!DOCTYPE x [<!ENTITY k 'ASIA'>]>{}", response("", &REAL.replace("ASIAREAL", "&k;"))), "not XML"),
        ];
        for (xml, why) in cases {
            let e = parse_response(200, &xml).unwrap_err();
            assert!(matches!(e, WebIdentityError::Malformed { status: 200, .. }), "{xml}: {e}");
            assert!(e.to_string().contains(why), "{xml}: {e}");
            assert!(!e.to_string().contains("real-secret"), "{e}");
        }
    }

    #[test]
    fn an_error_code_in_a_comment_is_not_the_error() {
        let xml = "<ErrorResponse><!-- <Code>AccessDenied</Code> --><Error><Code>InvalidIdentityToken</Code><Message>bad <![CDATA[sig]]></Message></Error></ErrorResponse>";
        match parse_response(400, xml).unwrap_err() {
            WebIdentityError::Sts { code, message, .. } => assert_eq!((code.as_str(), message.as_str()), ("InvalidIdentityToken", "bad sig")),
            e => panic!("{e}"),
        }
        let e = parse_response(503, "<html>busy</html>").unwrap_err().to_string();
        assert!(e.contains("HTTP 503"), "{e}");
    }

    #[test]
    fn sts_error_names_the_code_and_a_fix() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>No OpenIDConnect provider found</Message></Error></ErrorResponse>";
        let e = parse_response(400, xml).unwrap_err().to_string();
        assert!(e.contains("InvalidIdentityToken") && e.contains("sigil federation verify aws"), "{e}");
    }

    #[test]
    fn session_name_from_spiffe_id_is_valid() {
        assert_eq!(session_name_for("spiffe://example.org/ci/deploy"), "example.org@ci.deploy");
        let mut r = req();
        r.role_session_name = session_name_for(&format!("spiffe://example.org/{}", "a".repeat(100)));
        assert!(r.validate().is_ok());
    }

    #[test]
    fn config_profile_lines_name_the_token_file() {
        let p = WebIdentityProfile {
            name: "ci".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            token_file: "/run/sigil/aws.jwt".into(),
            role_session_name: None,
            region: Some("eu-west-1".into()),
            duration_seconds: None,
        };
        assert_eq!(p.header(), "profile ci");
        assert!(p.lines().contains(&("web_identity_token_file".into(), "/run/sigil/aws.jwt".into())));
    }
}
