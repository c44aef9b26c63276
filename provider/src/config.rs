//! The `provider "sigil"` block: schema, validation, resolution against the
//! `SIGIL_*` environment, and turning the result into a broker connection.

use secrecy::{ExposeSecret, SecretString};
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::diag::{AttrPath, Diagnostics};
use crate::schema::{Attribute, Block, Schema};
use sigil_schemas::identity::Identity;
use std::fmt;

/// Join methods the provider can use to obtain its own identity.
pub const JOIN_METHODS: &[&str] = &["token", "terraform_cloud", "spacelift"];

/// The provider block's schema.
pub fn provider_schema() -> Schema {
    Schema {
        version: 0,
        block: Block {
            description: "Manages a Sigil broker: roles, bots, join tokens and workload identities.",
            attributes: vec![
                Attribute::optional("addr", Type::String, "Broker API address, `HOST:PORT` or `https://HOST:PORT`; several brokers separated by commas (`a:8443,b:8443`) are tried in order when a connection cannot be set up (5 s each), never after a broker's answer. Environment: `SIGIL_ADDR`."),
                Attribute::optional("identity_file", Type::String, "Path of an identity file (certificate, key, CA) to authenticate with. Environment: `SIGIL_IDENTITY_FILE`."),
                Attribute::optional("identity", Type::String, "Identity file content, for pipelines that hold it in a secret. Environment: `SIGIL_IDENTITY`.").sensitive(),
                Attribute::optional("ca_file", Type::String, "CA certificate (PEM) of the broker's TLS certificate; needed with `join_method`, which has no identity file to take it from. Environment: `SIGIL_CA_FILE`."),
                Attribute::optional("join_method", Type::String, "Join natively instead of using an identity file: `token`, `terraform_cloud` (HCP Terraform workload identity) or `spacelift`. Environment: `SIGIL_JOIN_METHOD`."),
                Attribute::optional("join_token", Type::String, "The join credential: a join token secret, or the platform's identity token (`TFC_WORKLOAD_IDENTITY_TOKEN`, `SPACELIFT_OIDC_TOKEN`). Environment: `SIGIL_JOIN_TOKEN`.").sensitive(),
                Attribute::optional("join_token_name", Type::String, "Name of the join token whose rules apply, for methods without a secret. Environment: `SIGIL_JOIN_TOKEN_NAME`."),
            ],
            blocks: vec![],
        },
    }
}

/// How the provider authenticates to the broker.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A bot identity from an identity file.
    Identity(Identity),
    /// Native join: exchange a credential for a short-lived identity.
    Join {
        /// Join method.
        method: String,
        /// The join credential.
        token: SecretString,
        /// Join token name (methods without a secret).
        token_name: String,
        /// CA of the broker's TLS certificate.
        ca_pem: String,
    },
}

/// A resolved provider configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Broker address.
    pub addr: String,
    /// How to authenticate.
    pub credentials: Credentials,
}

/// Where settings come from besides the block: the environment, injectable for tests.
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

fn known_str<'a>(config: &'a Value, name: &str, diags: &mut Diagnostics) -> Option<&'a str> {
    match config.attr(name) {
        Value::Unknown => {
            diags.error_at(
                AttrPath::attr(name),
                "Provider setting not known yet",
                format!("`{name}` depends on a value only known after apply; the provider needs it to plan. Use a literal, a variable or the SIGIL_* environment."),
            );
            None
        }
        v => v.as_str().filter(|s| !s.is_empty()),
    }
}

/// Static checks of the provider block (no files, no environment).
pub fn validate(config: &Value) -> Diagnostics {
    let mut diags = Diagnostics::default();
    if let Some(addr) = config.attr("addr").as_str() {
        if let Err(e) = sigil_schemas::client::normalize_addr(addr) {
            diags.error_at(AttrPath::attr("addr"), "Invalid broker address", e.to_string());
        }
    }
    let set = |n: &str| !config.attr(n).is_null();
    if set("identity") && set("identity_file") {
        diags.error_at(
            AttrPath::attr("identity_file"),
            "Conflicting identity settings",
            "Set either `identity` (content) or `identity_file` (path), not both.",
        );
    }
    if set("join_method") && (set("identity") || set("identity_file")) {
        diags.error_at(
            AttrPath::attr("join_method"),
            "Conflicting authentication settings",
            "`join_method` obtains an identity by joining; it cannot be combined with `identity` or `identity_file`.",
        );
    }
    if set("join_token") && !set("join_method") {
        diags.error_at(AttrPath::attr("join_token"), "Missing join method", "`join_token` needs `join_method`.");
    }
    if let Some(m) = config.attr("join_method").as_str() {
        if !JOIN_METHODS.contains(&m) {
            diags.error_at(
                AttrPath::attr("join_method"),
                "Unsupported join method",
                format!("{m:?} is not one of {}.", JOIN_METHODS.join(", ")),
            );
        }
    }
    diags
}

/// Resolves the block and the environment into [`Settings`].
pub fn resolve(config: &Value, env: &EnvLookup) -> Result<Settings, Diagnostics> {
    let mut diags = validate(config);
    let mut pick = |name: &str, var: &str| -> Option<String> {
        known_str(config, name, &mut diags).map(str::to_string).or_else(|| env(var).filter(|v| !v.is_empty()))
    };
    let addr = pick("addr", "SIGIL_ADDR");
    let identity = pick("identity", "SIGIL_IDENTITY");
    let identity_file = pick("identity_file", "SIGIL_IDENTITY_FILE");
    let join_method = pick("join_method", "SIGIL_JOIN_METHOD");
    let join_token = pick("join_token", "SIGIL_JOIN_TOKEN");
    let join_token_name = pick("join_token_name", "SIGIL_JOIN_TOKEN_NAME");
    let ca_file = pick("ca_file", "SIGIL_CA_FILE");
    if diags.has_errors() {
        return Err(diags);
    }
    let Some(addr) = addr else {
        diags.error_at(
            AttrPath::attr("addr"),
            "No broker address",
            "Set `addr` in the provider block or the SIGIL_ADDR environment variable.",
        );
        return Err(diags);
    };
    if let Err(e) = sigil_schemas::client::normalize_addr(&addr) {
        diags.error_at(AttrPath::attr("addr"), "Invalid broker address", e.to_string());
        return Err(diags);
    }
    // The sigil CLI's SIGIL_IDENTITY holds a path; the provider's `identity`
    // holds content. Accept either from the environment.
    let (identity, identity_file) = match (identity, identity_file) {
        (Some(v), file) if !v.contains("-----BEGIN") && config.attr("identity").is_null() => (None, file.or(Some(v))),
        other => other,
    };
    let credentials = if let Some(pem) = identity {
        Identity::from_pem(&pem).map(Credentials::Identity).map_err(|e| (AttrPath::attr("identity"), e.to_string()))
    } else if let Some(path) = identity_file {
        Identity::load(std::path::Path::new(&path))
            .map(Credentials::Identity)
            .map_err(|e| (AttrPath::attr("identity_file"), e.to_string()))
    } else if let Some(method) = join_method {
        join_credentials(method, join_token, join_token_name, ca_file)
    } else {
        Err((
            AttrPath::attr("identity_file"),
            "No credentials: set `identity_file` or `identity` (or SIGIL_IDENTITY_FILE / SIGIL_IDENTITY), or `join_method` and `join_token`.".to_string(),
        ))
    };
    match credentials {
        Ok(credentials) => Ok(Settings { addr, credentials }),
        Err((path, detail)) => {
            diags.error_at(path, "Cannot authenticate to the Sigil broker", detail);
            Err(diags)
        }
    }
}

fn join_credentials(
    method: String,
    token: Option<String>,
    token_name: Option<String>,
    ca_file: Option<String>,
) -> Result<Credentials, (AttrPath, String)> {
    if !JOIN_METHODS.contains(&method.as_str()) {
        return Err((AttrPath::attr("join_method"), format!("{method:?} is not one of {}.", JOIN_METHODS.join(", "))));
    }
    let token = token.ok_or_else(|| {
        (AttrPath::attr("join_token"), format!("join method {method:?} needs `join_token` (or SIGIL_JOIN_TOKEN)."))
    })?;
    let ca_file = ca_file.ok_or_else(|| {
        (AttrPath::attr("ca_file"), "joining needs the broker's CA certificate: set `ca_file` or SIGIL_CA_FILE.".to_string())
    })?;
    let ca_pem = std::fs::read_to_string(&ca_file)
        .map_err(|e| (AttrPath::attr("ca_file"), format!("cannot read {ca_file}: {e}")))?;
    Ok(Credentials::Join { method, token: SecretString::from(token), token_name: token_name.unwrap_or_default(), ca_pem })
}

/// Opens the broker connection the settings describe (joining first if asked).
pub async fn connect(settings: &Settings) -> Result<Api, ApiError> {
    let unavailable = |e: &dyn fmt::Display| ApiError::Unavailable(e.to_string());
    let identity = match &settings.credentials {
        Credentials::Identity(id) => id.clone(),
        Credentials::Join { method, token, token_name, ca_pem } => {
            let key = rcgen::KeyPair::generate().map_err(|e| unavailable(&e))?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key).map_err(|e| unavailable(&e))?;
            let mut client = sigil_schemas::client::connect(&settings.addr, ca_pem, None)
                .await
                .map_err(|e| unavailable(&e))?;
            let resp = client
                .join(sigil_schemas::sigil::v1::JoinRequest {
                    method: method.clone(),
                    token: token.expose_secret().to_string(),
                    token_name: token_name.clone(),
                    csr: csr.der().to_vec(),
                    ..Default::default()
                })
                .await
                .map_err(|s| ApiError::Unavailable(format!("join with method {method:?} failed: {}", s.message())))?
                .into_inner();
            let ca = if resp.ca_pem.is_empty() { ca_pem.clone() } else { resp.ca_pem };
            Identity::new(resp.certificate_pem, key.serialize_pem(), ca)
        }
    };
    let client = sigil_schemas::client::connect_with_identity(&settings.addr, &identity)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Api::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, Value)]) -> Value {
        let mut obj = Value::object(provider_schema().block.attributes.iter().map(|a| (a.name, Value::Null)));
        for (k, v) in pairs {
            obj.set_attr(k, v.clone());
        }
        obj
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn paths(d: &Diagnostics) -> Vec<String> {
        d.0.iter().filter_map(|d| d.path.as_ref().map(ToString::to_string)).collect()
    }

    #[test]
    fn bad_address_is_reported_at_addr() {
        let d = validate(&config(&[("addr", Value::string("http://x:1"))]));
        assert_eq!(paths(&d), vec!["addr"]);
    }

    #[test]
    fn join_token_without_method_is_reported_at_join_token() {
        let d = validate(&config(&[("join_token", Value::string("s"))]));
        assert_eq!(paths(&d), vec!["join_token"]);
    }

    #[test]
    fn missing_address_names_the_environment_variable() {
        let err = resolve(&config(&[]), &no_env).unwrap_err();
        assert!(err.0[0].detail.contains("SIGIL_ADDR"));
        assert_eq!(paths(&err), vec!["addr"]);
    }

    #[test]
    fn environment_fills_in_what_the_block_leaves_out() {
        let env = |k: &str| match k {
            "SIGIL_ADDR" => Some("127.0.0.1:1".to_string()),
            "SIGIL_IDENTITY_FILE" => Some("/nonexistent/identity".to_string()),
            _ => None,
        };
        let err = resolve(&config(&[]), &env).unwrap_err();
        assert_eq!(paths(&err), vec!["identity_file"]);
        assert!(err.0[0].detail.contains("/nonexistent/identity"));
    }

    #[test]
    fn sigil_identity_variable_may_hold_a_path_like_the_cli_expects() {
        let env = |k: &str| match k {
            "SIGIL_ADDR" => Some("127.0.0.1:1".to_string()),
            "SIGIL_IDENTITY" => Some("/nonexistent/admin.identity".to_string()),
            _ => None,
        };
        let err = resolve(&config(&[]), &env).unwrap_err();
        assert_eq!(paths(&err), vec!["identity_file"]);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        assert!(!format!("{:?}", SecretString::from("hunter2")).contains("hunter2"));
    }
}
