//! Config of the cloud outputs (`aws-web-identity`, `aws-roles-anywhere`,
//! `azure-federated`, `gcp-external-account`): SVIDs handed to the official cloud
//! SDKs in their own file formats. See docs/agent.md and docs/cloud/README.md.

use super::config::{ConfigError, Dur, FileMode};
use serde::Deserialize;
use std::path::PathBuf;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

fn default_profile() -> String {
    "default".into()
}

/// `type: aws-web-identity`: a JWT-SVID file plus an AWS config profile
/// (`web_identity_token_file` + `role_arn`) so the SDK exchanges it itself; or,
/// with `assume_role: true`, the agent calls STS and writes a credentials file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsWebIdentityOutput {
    /// JWT-SVID file (`web_identity_token_file`). Required unless `assume_role`.
    #[serde(default)]
    pub token_path: Option<PathBuf>,
    /// AWS config file receiving the profile (e.g. `~/.aws/config`). Required unless `assume_role`.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// Profile name (`default` or any other).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Role to assume.
    pub role_arn: String,
    /// Optional session name (assume_role default: derived from the SPIFFE ID).
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// Optional region written to the profile.
    #[serde(default)]
    pub region: Option<String>,
    /// Optional session length (900..43200 s).
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    /// JWT audience (default `sts.amazonaws.com`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Call STS AssumeRoleWithWebIdentity in the agent and write `credentials_file`.
    #[serde(default)]
    pub assume_role: bool,
    /// Shared credentials file (with `assume_role`).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// STS endpoint (default `https://sts.amazonaws.com/`; with `assume_role`).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// Extra CA (PEM) trusted for the STS endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SPIFFE ID to request.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Or a workload identity name.
    #[serde(default)]
    pub workload_identity: Option<String>,
    /// Requested JWT-SVID lifetime.
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

/// `type: aws-roles-anywhere`: an X.509-SVID signs IAM Roles Anywhere
/// `CreateSession`; the temporary credentials go to a shared credentials file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsRolesAnywhereOutput {
    /// Shared credentials file (e.g. `~/.aws/credentials`).
    pub credentials_file: PathBuf,
    /// Profile (section) name in the credentials file.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Optional directory that also receives the X.509-SVID (as `x509-svid` does).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Region of the trust anchor.
    pub region: String,
    /// Trust anchor ARN.
    pub trust_anchor_arn: String,
    /// Profile ARN.
    pub profile_arn: String,
    /// Role ARN.
    pub role_arn: String,
    /// Endpoint base URL (default `https://rolesanywhere.REGION.amazonaws.com`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Extra CA (PEM) trusted for the endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Session length (900..43200 s, default 3600).
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    /// Optional session name (the profile must accept custom names).
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// SPIFFE ID to request.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Or a workload identity name.
    #[serde(default)]
    pub workload_identity: Option<String>,
    /// Requested X.509-SVID lifetime.
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

/// `type: azure-federated`: a JWT-SVID file for `AZURE_FEDERATED_TOKEN_FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureFederatedOutput {
    /// Token file path.
    pub token_path: PathBuf,
    /// Audience (default `api://AzureADTokenExchange`, what Entra ID requires).
    #[serde(default)]
    pub audience: Option<String>,
    /// SPIFFE ID to request.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Or a workload identity name.
    #[serde(default)]
    pub workload_identity: Option<String>,
    /// Requested JWT-SVID lifetime.
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

/// `type: gcp-external-account`: a JWT-SVID file plus the `external_account`
/// credential configuration (`GOOGLE_APPLICATION_CREDENTIALS`) that reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpExternalAccountOutput {
    /// JWT-SVID file (`credential_source.file`).
    pub token_path: PathBuf,
    /// The `external_account` JSON file.
    pub config_path: PathBuf,
    /// Workload identity provider resource name (`//iam.googleapis.com/projects/N/...`), also the JWT audience.
    pub audience: String,
    /// Token URL (default `https://sts.googleapis.com/v1/token`).
    #[serde(default)]
    pub token_url: Option<String>,
    /// Service account to impersonate (email), optional.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Or the full impersonation URL (e.g. a local endpoint).
    #[serde(default)]
    pub service_account_impersonation_url: Option<String>,
    /// Impersonated token lifetime (600..43200 s).
    #[serde(default)]
    pub token_lifetime_seconds: Option<u32>,
    /// SPIFFE ID to request.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Or a workload identity name.
    #[serde(default)]
    pub workload_identity: Option<String>,
    /// Requested JWT-SVID lifetime (Google requires `exp - iat` < 48 h).
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

fn arn(field: &str, v: &str, kind: &str) -> Result<(), ConfigError> {
    if v.starts_with("arn:") && v.contains(kind) {
        Ok(())
    } else {
        Err(invalid(field, format!("{v:?} is not an ARN containing {kind:?}")))
    }
}

fn duration(field: &str, d: Option<u32>, lo: u32, hi: u32) -> Result<(), ConfigError> {
    match d {
        Some(d) if !(lo..=hi).contains(&d) => Err(invalid(field, format!("{d}: the cloud accepts {lo}..{hi}"))),
        _ => Ok(()),
    }
}

fn profile_name(field: &str, p: &str) -> Result<(), ConfigError> {
    if p.is_empty() || p.contains(['[', ']', '\n', '\r']) {
        return Err(invalid(field, format!("{p:?} is not a profile name")));
    }
    Ok(())
}

impl AwsWebIdentityOutput {
    /// Checks the combinations serde cannot; returns the paths it owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        arn(&format!("{field}.role_arn"), &self.role_arn, ":role/")?;
        duration(&format!("{field}.duration_seconds"), self.duration_seconds, 900, 43_200)?;
        profile_name(&format!("{field}.profile"), &self.profile)?;
        if let Some(n) = &self.role_session_name {
            if n.len() < 2 || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)) {
                return Err(invalid(format!("{field}.role_session_name"), format!("{n:?}: 2..64 characters of letters, digits and _+=,.@-")));
            }
        }
        let mut owned = Vec::new();
        if self.assume_role {
            let Some(c) = &self.credentials_file else {
                return Err(invalid(format!("{field}.credentials_file"), "is required with assume_role: true"));
            };
            if self.config_file.is_some() {
                return Err(invalid(
                    format!("{field}.config_file"),
                    "not used with assume_role: true (the agent writes credentials_file; a web identity profile would make the SDK exchange again)",
                ));
            }
            owned.push(format!("{}#[{}]", c.display(), self.profile));
        } else {
            for (name, v) in [("token_path", &self.token_path), ("config_file", &self.config_file)] {
                if v.is_none() {
                    return Err(invalid(format!("{field}.{name}"), "is required (or set assume_role: true)"));
                }
            }
            if self.credentials_file.is_some() || self.sts_endpoint.is_some() {
                return Err(invalid(field, "credentials_file and sts_endpoint only apply with assume_role: true"));
            }
            if let Some(c) = &self.config_file {
                owned.push(format!("{}#[{}]", c.display(), self.profile));
            }
        }
        if let Some(t) = &self.token_path {
            owned.push(t.display().to_string());
        }
        Ok(owned)
    }
}

impl AwsRolesAnywhereOutput {
    /// Checks ARNs, region, duration; returns the paths it owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        arn(&format!("{field}.trust_anchor_arn"), &self.trust_anchor_arn, ":trust-anchor/")?;
        arn(&format!("{field}.profile_arn"), &self.profile_arn, ":profile/")?;
        arn(&format!("{field}.role_arn"), &self.role_arn, ":role/")?;
        duration(&format!("{field}.duration_seconds"), self.duration_seconds, 900, 43_200)?;
        profile_name(&format!("{field}.profile"), &self.profile)?;
        if self.region.is_empty() || !self.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(invalid(format!("{field}.region"), format!("{:?} is not a region like us-east-1", self.region)));
        }
        let mut owned = vec![format!("{}#[{}]", self.credentials_file.display(), self.profile)];
        if let Some(d) = &self.dir {
            owned.push(d.display().to_string());
        }
        Ok(owned)
    }
}

impl AzureFederatedOutput {
    /// Returns the paths it owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        if self.audience.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(format!("{field}.audience"), "is empty"));
        }
        Ok(vec![self.token_path.display().to_string()])
    }
}

impl GcpExternalAccountOutput {
    /// Checks audience and impersonation settings; returns the paths it owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        if !self.audience.starts_with("//") {
            return Err(invalid(
                format!("{field}.audience"),
                "expected the provider resource name //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X",
            ));
        }
        if self.service_account.is_some() && self.service_account_impersonation_url.is_some() {
            return Err(invalid(field, "give service_account or service_account_impersonation_url, not both"));
        }
        if self.token_lifetime_seconds.is_some() && self.service_account.is_none() && self.service_account_impersonation_url.is_none() {
            return Err(invalid(format!("{field}.token_lifetime_seconds"), "only applies with service account impersonation"));
        }
        duration(&format!("{field}.token_lifetime_seconds"), self.token_lifetime_seconds, 600, 43_200)?;
        if self.ttl.is_some_and(|t| t.0.as_secs() >= 48 * 3600) {
            return Err(invalid(format!("{field}.ttl"), "Google refuses tokens with exp - iat >= 48h (6h or less is recommended)"));
        }
        Ok(vec![self.token_path.display().to_string(), self.config_path.display().to_string()])
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;

    const BASE: &str = "broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\noutputs:\n";
    const AWS: &str = "  - type: aws-web-identity\n    role_arn: arn:aws:iam::1:role/r\n    spiffe_id: spiffe://example.org/a\n";

    fn err(outputs: &str) -> String {
        AgentConfig::from_yaml(&format!("{BASE}{outputs}")).unwrap_err().to_string()
    }

    #[test]
    fn every_cloud_output_parses() {
        let outputs = [
            format!("{AWS}    token_path: /run/aws.jwt\n    config_file: /home/a/.aws/config\n    profile: ci\n"),
            "  - type: aws-web-identity\n    assume_role: true\n    credentials_file: /home/a/.aws/credentials\n    role_arn: arn:aws:iam::1:role/r\n    workload_identity: w\n".into(),
            "  - type: aws-roles-anywhere\n    credentials_file: /home/a/.aws/credentials\n    profile: ra\n    region: eu-west-1\n    trust_anchor_arn: arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/t\n    profile_arn: arn:aws:rolesanywhere:eu-west-1:1:profile/p\n    role_arn: arn:aws:iam::1:role/r\n    spiffe_id: spiffe://example.org/ra\n".into(),
            "  - type: azure-federated\n    token_path: /run/azure.jwt\n    spiffe_id: spiffe://example.org/az\n".into(),
            "  - type: gcp-external-account\n    token_path: /run/gcp.jwt\n    config_path: /run/gcp.json\n    audience: //iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x\n    service_account: sa@p.iam.gserviceaccount.com\n    spiffe_id: spiffe://example.org/g\n".into(),
        ];
        let text = format!("{BASE}{}", outputs.concat());
        assert_eq!(AgentConfig::from_yaml(&text).unwrap().outputs.len(), 5);
    }

    #[test]
    fn web_identity_profile_mode_needs_token_and_config_files() {
        assert!(err(&format!("{AWS}    token_path: /run/aws.jwt\n")).contains("outputs[0].config_file"));
    }

    #[test]
    fn assume_role_mode_needs_a_credentials_file_and_refuses_a_profile() {
        assert!(err(&format!("{AWS}    assume_role: true\n")).contains("outputs[0].credentials_file"));
        let e = err(&format!("{AWS}    assume_role: true\n    credentials_file: /c\n    config_file: /cfg\n"));
        assert!(e.contains("outputs[0].config_file"), "{e}");
    }

    #[test]
    fn swapped_roles_anywhere_arns_are_named() {
        let e = err("  - type: aws-roles-anywhere\n    credentials_file: /c\n    region: eu-west-1\n    trust_anchor_arn: arn:aws:rolesanywhere:eu-west-1:1:profile/p\n    profile_arn: arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/t\n    role_arn: arn:aws:iam::1:role/r\n    spiffe_id: spiffe://example.org/ra\n");
        assert!(e.contains("outputs[0].trust_anchor_arn"), "{e}");
    }

    #[test]
    fn two_outputs_may_share_an_aws_file_but_not_a_profile() {
        let one = "  - type: aws-web-identity\n    assume_role: true\n    credentials_file: /c\n    role_arn: arn:aws:iam::1:role/r\n    spiffe_id: spiffe://example.org/a\n";
        let two = one.replace("assume_role: true", "assume_role: true\n    profile: other");
        assert!(AgentConfig::from_yaml(&format!("{BASE}{one}{two}")).is_ok());
        assert!(err(&format!("{one}{one}")).contains("already used"));
    }

    #[test]
    fn gcp_token_lifetime_over_48h_and_bad_audience_are_refused() {
        let g = "  - type: gcp-external-account\n    token_path: /t\n    config_path: /c\n    spiffe_id: spiffe://example.org/g\n";
        assert!(err(&format!("{g}    audience: //iam.googleapis.com/x\n    ttl: 48h\n")).contains("48h"));
        assert!(err(&format!("{g}    audience: projects/1/pools/p\n")).contains("outputs[0].audience"));
    }
}
