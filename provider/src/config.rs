//! The `provider "sigil"` block: schema, validation, resolution against the
//! `SIGIL_*` environment, and turning the result into a broker connection.

use secrecy::{ExposeSecret, SecretString};
use crate::api::{Api, ApiError};
use crate::join_cache::{self, Entry, JoinCache, JoinInputs, Location};
use sigil_schemas::client::{self as client, Timeouts};
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
            description: "Manages a Sigil broker: roles, bots, join tokens and workload identities. Joining from pipelines (HCP Terraform, Spacelift, join tokens), what each join costs, the join cache and timeouts: [joining.md](joining.md).",
            attributes: vec![
                Attribute::optional("addr", Type::String, "Broker API address, `HOST:PORT` or `https://HOST:PORT`; several brokers separated by commas (`a:8443,b:8443`) are tried in order when a connection cannot be set up (`connect_timeout` each, default 5 s), never after a broker's answer. Environment: `SIGIL_ADDR`."),
                Attribute::optional("identity_file", Type::String, "Path of an identity file (certificate, key, CA) to authenticate with. Environment: `SIGIL_IDENTITY_FILE`."),
                Attribute::optional("identity", Type::String, "Identity file content, for pipelines that hold it in a secret. Environment: `SIGIL_IDENTITY`.").sensitive(),
                Attribute::optional("ca_file", Type::String, "CA certificate (PEM) of the broker's TLS certificate; needed with `join_method`, which has no identity file to take it from. Environment: `SIGIL_CA_FILE`."),
                Attribute::optional("join_method", Type::String, "Join natively instead of using an identity file: `token`, `terraform_cloud` (HCP Terraform workload identity) or `spacelift`. Environment: `SIGIL_JOIN_METHOD`."),
                Attribute::optional("join_token", Type::String, "The join credential: a join token secret, or the platform's identity token. Environment: `SIGIL_JOIN_TOKEN`; when neither is set, `terraform_cloud` reads `TFC_WORKLOAD_IDENTITY_TOKEN_SIGIL`, else `TFC_WORKLOAD_IDENTITY_TOKEN` (HCP Terraform sets them in every run with workload identity enabled), and `spacelift` reads `SPACELIFT_OIDC_TOKEN`.").sensitive(),
                Attribute::optional("join_token_name", Type::String, "Name of the join token whose rules apply, for methods without a secret. Environment: `SIGIL_JOIN_TOKEN_NAME`."),
                Attribute::optional("connect_timeout", Type::String, "Time allowed per broker address for TCP connect, TLS and HTTP/2 set-up, e.g. `500ms`, `5s`, `2m` (default `5s`, at most `60m`). Environment: `SIGIL_CONNECT_TIMEOUT`."),
                Attribute::optional("call_timeout", Type::String, "Time allowed for each broker call once connected, e.g. `30s` (default `30s`, at most `60m`). Environment: `SIGIL_CALL_TIMEOUT`."),
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
    /// Bounds of every broker connection and call.
    pub timeouts: Timeouts,
    /// Where a joined identity is cached for the run ([`crate::join_cache`]).
    pub cache: Location,
}

/// Provider timeout attributes and their environment variables.
const TIMEOUTS: &[(&str, &str)] = &[("connect_timeout", "SIGIL_CONNECT_TIMEOUT"), ("call_timeout", "SIGIL_CALL_TIMEOUT")];

/// Environment variables holding a platform's identity token, per join method,
/// read in order when neither `join_token` nor `SIGIL_JOIN_TOKEN` is set.
pub fn platform_token_vars(method: &str) -> &'static [&'static str] {
    match method {
        "terraform_cloud" => &["TFC_WORKLOAD_IDENTITY_TOKEN_SIGIL", "TFC_WORKLOAD_IDENTITY_TOKEN"],
        "spacelift" => &["SPACELIFT_OIDC_TOKEN"],
        _ => &[],
    }
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
    for (attr, _) in TIMEOUTS {
        if let Some(text) = config.attr(attr).as_str() {
            if let Err(e) = client::parse_timeout(text) {
                diags.error_at(AttrPath::attr(attr), "Invalid timeout", e);
            }
        }
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
    let timeout_texts: Vec<_> = TIMEOUTS.iter().map(|(attr, var)| pick(attr, var)).collect();
    let mut timeouts = Timeouts::default();
    for ((attr, var), text) in TIMEOUTS.iter().zip(timeout_texts) {
        let from_block = config.attr(attr).as_str().is_some_and(|s| !s.is_empty());
        if let Some(text) = text {
            match client::parse_timeout(&text) {
                Ok(d) if *attr == "connect_timeout" => timeouts.connect = d,
                Ok(d) => timeouts.call = d,
                Err(e) if from_block => diags.error_at(AttrPath::attr(attr), "Invalid timeout", e),
                Err(e) => diags.error_at(AttrPath::attr(attr), "Invalid timeout", format!("{var}: {e}")),
            }
        }
    }
    // Neither the attribute nor SIGIL_JOIN_TOKEN: the platform's own variable.
    let join_token = join_token.or_else(|| {
        let method = join_method.as_deref().unwrap_or_default();
        platform_token_vars(method).iter().find_map(|v| env(v).filter(|t| !t.trim().is_empty()))
    });
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
    let uid = rustix::process::geteuid().as_raw();
    let cache = join_cache::location(env, uid);
    match credentials {
        Ok(credentials) => Ok(Settings { addr, credentials, timeouts, cache }),
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
        let platform = platform_token_vars(&method);
        let also = if platform.is_empty() { String::new() } else { format!(", or {} from the platform", platform.join(" / ")) };
        (AttrPath::attr("join_token"), format!("join method {method:?} needs `join_token` (or SIGIL_JOIN_TOKEN{also}); none is set."))
    })?;
    let names_token = sigil_core::domain::Method::parse(&method).map(|m| m.spec().names_token).unwrap_or(true);
    if names_token && token_name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err((
            AttrPath::attr("join_token_name"),
            format!("join method {method:?} names the join token whose rules apply: set `join_token_name` (or SIGIL_JOIN_TOKEN_NAME)."),
        ));
    }
    let ca_file = ca_file.ok_or_else(|| {
        (AttrPath::attr("ca_file"), "joining needs the broker's CA certificate: set `ca_file` or SIGIL_CA_FILE.".to_string())
    })?;
    let ca_pem = std::fs::read_to_string(&ca_file)
        .map_err(|e| (AttrPath::attr("ca_file"), format!("cannot read {ca_file}: {e}")))?;
    Ok(Credentials::Join { method, token: SecretString::from(token), token_name: token_name.unwrap_or_default(), ca_pem })
}

/// Opens the broker connection the settings describe (joining first if asked).
pub async fn connect(settings: &Settings) -> Result<Api, ApiError> {
    let identity = match &settings.credentials {
        Credentials::Identity(id) => id.clone(),
        Credentials::Join { method, token, token_name, ca_pem } => {
            let inputs = JoinInputs { addr: &settings.addr, method, credential: token.expose_secret(), token_name, ca_pem };
            return connect_joined(settings, &inputs, crate::clock::now_unix).await;
        }
    };
    let client = client::connect_with_identity_timeouts(&settings.addr, &identity, settings.timeouts)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Api::new(client))
}

/// Joins, or reuses the identity an earlier provider process of the run
/// joined with the same inputs ([`crate::join_cache`]). An entry the broker
/// refuses as a credential is dropped and the provider joins again, once.
async fn connect_joined(settings: &Settings, inputs: &JoinInputs<'_>, now: fn() -> i64) -> Result<Api, ApiError> {
    let cache = match &settings.cache {
        Location::Off => None,
        Location::Dir(dir) => JoinCache::open(dir)
            .inspect_err(|e| tracing::warn!(error = %e, "joining without the join cache"))
            .ok(),
    };
    let key = inputs.key();
    // Held until this process has joined and stored the identity.
    let wait = settings.timeouts.connect.saturating_mul(2) + settings.timeouts.call;
    let _lock = match &cache {
        Some(c) => c.lock(wait).await,
        None => None,
    };
    if let Some(entry) = cache.as_ref().and_then(|c| c.load(&key, now())) {
        let client = client::connect_with_identity_timeouts(&settings.addr, &entry.identity, settings.timeouts)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        // One cheap call proves the broker still accepts the identity.
        match client.clone().who_am_i(sigil_schemas::sigil::v1::WhoAmIRequest {}).await {
            Ok(_) => return Ok(Api::new(client)),
            Err(s) if matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) && !client::is_transport_failure(&s) => {
                tracing::info!("the broker refused the cached identity ({}); joining again", s.message());
                if let Some(c) = &cache {
                    c.remove(&key);
                }
            }
            Err(s) => return Err(ApiError::from_status("the provider's identity", s)),
        }
    }
    let issued_at = now();
    let (identity, expires_at) = join(settings, inputs).await?;
    if let Some(c) = &cache {
        let entry = Entry { identity: identity.clone(), issued_at, expires_at };
        if let Err(e) = c.store(&key, &entry, now()) {
            tracing::warn!(error = %e, "cannot cache the joined identity; later provider processes will join again");
        }
    }
    let client = client::connect_with_identity_timeouts(&settings.addr, &identity, settings.timeouts)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Api::new(client))
}

/// One `Join` call: a fresh key, its CSR, the broker's certificate.
async fn join(settings: &Settings, inputs: &JoinInputs<'_>) -> Result<(Identity, i64), ApiError> {
    let unavailable = |e: &dyn fmt::Display| ApiError::Unavailable(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| unavailable(&e))?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key).map_err(|e| unavailable(&e))?;
    let mut client = client::connect_with_timeouts(&settings.addr, inputs.ca_pem, None, settings.timeouts)
        .await
        .map_err(|e| unavailable(&e))?;
    let resp = client
        .join(sigil_schemas::sigil::v1::JoinRequest {
            method: inputs.method.to_string(),
            token: inputs.credential.to_string(),
            token_name: inputs.token_name.to_string(),
            csr: csr.der().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|s| ApiError::from_join(inputs.method, s))?
        .into_inner();
    let ca = if resp.ca_pem.is_empty() { inputs.ca_pem.to_string() } else { resp.ca_pem };
    let identity = Identity::new(resp.certificate_pem, key.serialize_pem(), ca);
    let expires_at = if resp.expires_at > 0 { resp.expires_at } else { identity.subject().map(|(_, t)| t).unwrap_or(0) };
    Ok((identity, expires_at))
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

    fn join_env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn join_token_of(s: &Settings) -> String {
        match &s.credentials {
            Credentials::Join { token, .. } => token.expose_secret().to_string(),
            Credentials::Identity(_) => panic!("not a join"),
        }
    }

    fn ca_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "CA").unwrap();
        f
    }

    #[test]
    fn terraform_cloud_reads_the_tagged_hcp_token_first_then_the_default_one() {
        let ca = ca_file();
        let cfg = config(&[
            ("addr", Value::string("127.0.0.1:1")),
            ("ca_file", Value::string(ca.path().to_str().unwrap())),
            ("join_method", Value::string("terraform_cloud")),
            ("join_token_name", Value::string("hcp")),
        ]);
        let plain = resolve(&cfg, &join_env(&[("TFC_WORKLOAD_IDENTITY_TOKEN", "jwt-default")])).unwrap();
        assert_eq!(join_token_of(&plain), "jwt-default");
        let tagged = resolve(&cfg, &join_env(&[("TFC_WORKLOAD_IDENTITY_TOKEN", "jwt-default"), ("TFC_WORKLOAD_IDENTITY_TOKEN_SIGIL", "jwt-sigil")])).unwrap();
        assert_eq!(join_token_of(&tagged), "jwt-sigil");
        let explicit = resolve(&cfg, &join_env(&[("TFC_WORKLOAD_IDENTITY_TOKEN_SIGIL", "jwt-sigil"), ("SIGIL_JOIN_TOKEN", "explicit")])).unwrap();
        assert_eq!(join_token_of(&explicit), "explicit", "SIGIL_JOIN_TOKEN wins");
        let mut attr = cfg.clone();
        attr.set_attr("join_token", Value::string("attribute"));
        assert_eq!(join_token_of(&resolve(&attr, &join_env(&[("SIGIL_JOIN_TOKEN", "explicit")])).unwrap()), "attribute");
        // Another method does not pick up HCP's variable.
        let mut spacelift = cfg.clone();
        spacelift.set_attr("join_method", Value::string("spacelift"));
        let err = resolve(&spacelift, &join_env(&[("TFC_WORKLOAD_IDENTITY_TOKEN", "jwt")])).unwrap_err();
        assert_eq!(paths(&err), vec!["join_token"]);
        assert!(err.0[0].detail.contains("SPACELIFT_OIDC_TOKEN"), "{}", err.0[0].detail);
        assert_eq!(join_token_of(&resolve(&spacelift, &join_env(&[("SPACELIFT_OIDC_TOKEN", "sl-jwt")])).unwrap()), "sl-jwt");
        // Without the join token's name the broker could not tell which rules apply: said before any call.
        let mut nameless = cfg.clone();
        nameless.set_attr("join_token_name", Value::Null);
        let err = resolve(&nameless, &join_env(&[("TFC_WORKLOAD_IDENTITY_TOKEN", "jwt")])).unwrap_err();
        assert_eq!(paths(&err), vec!["join_token_name"]);
    }

    #[test]
    fn timeouts_come_from_the_block_or_the_environment_and_are_checked() {
        let d = validate(&config(&[("connect_timeout", Value::string("5 parsecs"))]));
        assert_eq!(paths(&d), vec!["connect_timeout"]);
        assert!(validate(&config(&[("call_timeout", Value::string("2m")), ("connect_timeout", Value::string("500ms"))])).0.is_empty());
        let env = join_env(&[("SIGIL_ADDR", "127.0.0.1:1"), ("SIGIL_IDENTITY_FILE", "/nonexistent"), ("SIGIL_CALL_TIMEOUT", "0s")]);
        let err = resolve(&config(&[]), &env).unwrap_err();
        assert_eq!(paths(&err), vec!["call_timeout"]);
        assert!(err.0[0].detail.contains("SIGIL_CALL_TIMEOUT"));
        let ca = ca_file();
        let cfg = config(&[
            ("addr", Value::string("127.0.0.1:1")),
            ("ca_file", Value::string(ca.path().to_str().unwrap())),
            ("join_method", Value::string("token")),
            ("join_token", Value::string("s")),
            ("connect_timeout", Value::string("750ms")),
        ]);
        let s = resolve(&cfg, &join_env(&[("SIGIL_CONNECT_TIMEOUT", "9s"), ("SIGIL_CALL_TIMEOUT", "12s")])).unwrap();
        assert_eq!(s.timeouts, Timeouts { connect: std::time::Duration::from_millis(750), call: std::time::Duration::from_secs(12) });
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        assert!(!format!("{:?}", SecretString::from("hunter2")).contains("hunter2"));
    }
}
