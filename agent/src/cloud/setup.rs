//! What each cloud needs configured to trust Sigil, as text for humans and as the
//! matching Terraform. Pure rendering: callers gather the issuer URL, bundle and
//! thumbprint and pass them in.

use super::{aws_web_identity, azure, gcp};
use aws_lc_rs::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};

/// A value as an HCL string literal (quotes, backslashes and `${` escaped).
pub fn hcl_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out.replace("${", "$${").replace("%{", "%%{")
}

/// The IAM OIDC provider thumbprint: SHA-1 (hex) of the top certificate the issuer's TLS server presents.
pub fn thumbprint(chain_der: &[Vec<u8>]) -> Option<String> {
    chain_der.last().map(|c| hex::encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, c).as_ref()))
}

/// Host and path of an issuer URL, as IAM names its condition keys.
pub fn issuer_host_path(issuer: &str) -> String {
    issuer.trim_start_matches("https://").trim_end_matches('/').to_string()
}

/// AWS IAM OIDC provider + role trusting it.
#[derive(Debug, Clone)]
pub struct AwsOidc {
    /// Issuer URL (https, no port).
    pub issuer: String,
    /// Audience (client id), default `sts.amazonaws.com`.
    pub audience: String,
    /// SPIFFE ID pattern allowed to assume the role (IAM `StringLike`: `*` and `?`).
    pub subject: String,
    /// Role name.
    pub role_name: String,
    /// Thumbprint of the issuer's TLS chain, if known.
    pub thumbprint: Option<String>,
}

impl AwsOidc {
    /// The role's trust policy (JSON), with `PROVIDER_ARN` to be replaced.
    pub fn trust_policy(&self, provider_arn: &str) -> String {
        let hp = issuer_host_path(&self.issuer);
        let v = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {format!("{hp}:aud"): self.audience},
                    "StringLike": {format!("{hp}:sub"): self.subject},
                }
            }]
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Human instructions.
    pub fn text(&self) -> String {
        format!(
            "AWS IAM OIDC provider (AssumeRoleWithWebIdentity)\n  provider URL:   {}\n  audience:       {}\n  thumbprint:     {}\n  role trust policy (role {}):\n{}\n  the SDK side:   AWS_WEB_IDENTITY_TOKEN_FILE=<jwt file> AWS_ROLE_ARN=arn:aws:iam::ACCOUNT:role/{}\n",
            self.issuer,
            self.audience,
            self.thumbprint.as_deref().unwrap_or("(not fetched: pass --fetch-thumbprint)"),
            self.role_name,
            indent(&self.trust_policy(&format!("arn:aws:iam::ACCOUNT:oidc-provider/{}", issuer_host_path(&self.issuer))), 4),
            self.role_name,
        )
    }

    /// Terraform (hashicorp/aws).
    pub fn terraform(&self) -> String {
        let hp = issuer_host_path(&self.issuer);
        let thumb = self.thumbprint.as_deref().map(|t| format!("  thumbprint_list = [{}]\n", hcl_str(t))).unwrap_or_default();
        format!(
            r#"resource "aws_iam_openid_connect_provider" "sigil" {{
  url             = {url}
  client_id_list  = [{aud}]
{thumb}}}

data "aws_iam_policy_document" "sigil_trust" {{
  statement {{
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {{
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.sigil.arn]
    }}
    condition {{
      test     = "StringEquals"
      variable = {aud_key}
      values   = [{aud}]
    }}
    condition {{
      test     = "StringLike"
      variable = {sub_key}
      values   = [{sub}]
    }}
  }}
}}

resource "aws_iam_role" "sigil" {{
  name               = {role}
  assume_role_policy = data.aws_iam_policy_document.sigil_trust.json
}}
"#,
            url = hcl_str(&self.issuer),
            aud = hcl_str(&self.audience),
            aud_key = hcl_str(&format!("{hp}:aud")),
            sub_key = hcl_str(&format!("{hp}:sub")),
            sub = hcl_str(&self.subject),
            role = hcl_str(&self.role_name),
        )
    }
}

/// AWS IAM Roles Anywhere trust anchor + profile + role.
#[derive(Debug, Clone)]
pub struct AwsRolesAnywhere {
    /// CA certificates (PEM) for the trust anchor (at most 2).
    pub ca_pems: Vec<String>,
    /// SPIFFE ID allowed (matched on the `x509SAN/URI` session tag, `StringLike`).
    pub subject: String,
    /// Role name.
    pub role_name: String,
    /// Trust anchor / profile name.
    pub name: String,
}

impl AwsRolesAnywhere {
    /// Human instructions.
    pub fn text(&self) -> String {
        let warn = if self.ca_pems.len() > 2 {
            format!("  WARNING: {} CA certificates; a trust anchor holds at most 2 (keep the active CA and the next one)\n", self.ca_pems.len())
        } else {
            String::new()
        };
        format!(
            "AWS IAM Roles Anywhere\n  trust anchor:   source CERTIFICATE_BUNDLE with the broker's X.509 CA ({} certificate(s): `sigil bundle --format pem`)\n{warn}  role trust:     Principal Service rolesanywhere.amazonaws.com; actions sts:AssumeRole, sts:TagSession, sts:SetSourceIdentity;\n                  condition StringLike aws:PrincipalTag/x509SAN/URI = {}\n  profile:        {} listing role {}\n  the SDK side:   credential_process = sigil aws credential-process --certificate svid.pem --private-key svid.key --trust-anchor-arn ... --profile-arn ... --role-arn ... --region ...\n",
            self.ca_pems.len(),
            self.subject,
            self.name,
            self.role_name
        )
    }

    /// Terraform (hashicorp/aws).
    pub fn terraform(&self) -> String {
        let bundle = self.ca_pems.iter().take(2).map(|p| p.trim()).collect::<Vec<_>>().join("\n");
        format!(
            r#"resource "aws_rolesanywhere_trust_anchor" "sigil" {{
  name    = {name}
  enabled = true
  source {{
    source_type = "CERTIFICATE_BUNDLE"
    source_data {{
      x509_certificate_data = <<-EOT
{bundle}
      EOT
    }}
  }}
}}

resource "aws_iam_role" "sigil_roles_anywhere" {{
  name = {role}
  assume_role_policy = jsonencode({{
    Version = "2012-10-17"
    Statement = [{{
      Effect    = "Allow"
      Principal = {{ Service = "rolesanywhere.amazonaws.com" }}
      Action    = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
      Condition = {{
        ArnEquals  = {{ "aws:SourceArn" = aws_rolesanywhere_trust_anchor.sigil.arn }}
        StringLike = {{ "aws:PrincipalTag/x509SAN/URI" = {sub} }}
      }}
    }}]
  }})
}}

resource "aws_rolesanywhere_profile" "sigil" {{
  name      = {name}
  enabled   = true
  role_arns = [aws_iam_role.sigil_roles_anywhere.arn]
}}
"#,
            name = hcl_str(&self.name),
            role = hcl_str(&self.role_name),
            sub = hcl_str(&self.subject),
            bundle = indent(&bundle, 0),
        )
    }
}

/// Azure federated identity credential.
#[derive(Debug, Clone)]
pub struct AzureFederated {
    /// Issuer URL (the token's `iss`, exactly).
    pub issuer: String,
    /// SPIFFE ID (the token's `sub`, exactly: no wildcards).
    pub subject: String,
    /// Credential name.
    pub name: String,
}

impl AzureFederated {
    /// Human instructions.
    pub fn text(&self) -> String {
        format!(
            "Azure Entra ID federated identity credential\n  issuer:    {}\n  subject:   {}   (matched exactly; one credential per SPIFFE ID, at most 20 per identity)\n  audience:  {}\n  az CLI:    az identity federated-credential create --name {} --identity-name IDENTITY --resource-group RG \\\n               --issuer {} --subject {} --audiences {}\n  the SDK side: AZURE_FEDERATED_TOKEN_FILE=<jwt file> AZURE_CLIENT_ID=... AZURE_TENANT_ID=...\n  note: Entra ID accepts RS256 only (broker `jwt_alg: rsa-2048`)\n",
            self.issuer, self.subject, azure::AUDIENCE, self.name, self.issuer, self.subject, azure::AUDIENCE
        )
    }

    /// Terraform (azurerm user-assigned identity, and azuread application variants).
    pub fn terraform(&self) -> String {
        format!(
            r#"# Either on a user-assigned managed identity (hashicorp/azurerm) ...
resource "azurerm_federated_identity_credential" "sigil" {{
  name                = {name}
  resource_group_name = azurerm_user_assigned_identity.workload.resource_group_name
  parent_id           = azurerm_user_assigned_identity.workload.id
  issuer              = {iss}
  subject             = {sub}
  audience            = [{aud}]
}}

# ... or on an app registration (hashicorp/azuread).
resource "azuread_application_federated_identity_credential" "sigil" {{
  application_id = azuread_application.workload.id
  display_name   = {name}
  issuer         = {iss}
  subject        = {sub}
  audiences      = [{aud}]
}}
"#,
            name = hcl_str(&self.name),
            iss = hcl_str(&self.issuer),
            sub = hcl_str(&self.subject),
            aud = hcl_str(azure::AUDIENCE),
        )
    }
}

/// GCP workload identity pool provider.
#[derive(Debug, Clone)]
pub struct GcpWif {
    /// Issuer URL.
    pub issuer: String,
    /// Project number.
    pub project_number: String,
    /// Pool id.
    pub pool: String,
    /// Provider id.
    pub provider: String,
    /// Trust domain prefix allowed (attribute condition).
    pub subject_prefix: String,
    /// Service account to impersonate, if any.
    pub service_account: Option<String>,
    /// JWKS to upload (when the issuer is not reachable from Google).
    pub jwks_json: Option<String>,
}

impl GcpWif {
    /// The provider audience.
    pub fn audience(&self) -> String {
        gcp::provider_audience(&self.project_number, &self.pool, &self.provider)
    }

    /// Human instructions.
    pub fn text(&self) -> String {
        let jwks = if self.jwks_json.is_some() { " --jwk-json-path=jwks.json" } else { "" };
        format!(
            "GCP Workload Identity Federation\n  pool / provider:    {} / {} (project {})\n  issuer URI:         {}\n  attribute mapping:  google.subject=assertion.sub   (sub must be <= 127 bytes)\n  attribute condition: assertion.sub.startsWith('{}')\n  audience (JWT aud): {}\n  gcloud: gcloud iam workload-identity-pools providers create-oidc {} --location=global --workload-identity-pool={} \\\n            --issuer-uri={} --attribute-mapping=google.subject=assertion.sub \\\n            --attribute-condition=\"assertion.sub.startsWith('{}')\"{jwks}\n  the SDK side: GOOGLE_APPLICATION_CREDENTIALS=<external_account file from `sigil federation gcp config`>\n",
            self.pool,
            self.provider,
            self.project_number,
            self.issuer,
            self.subject_prefix,
            self.audience(),
            self.provider,
            self.pool,
            self.issuer,
            self.subject_prefix
        )
    }

    /// Terraform (hashicorp/google).
    pub fn terraform(&self) -> String {
        let jwks = self.jwks_json.as_deref().map(|j| format!("    jwks_json  = {}\n", hcl_str(j))).unwrap_or_default();
        let sa = self
            .service_account
            .as_deref()
            .map(|sa| {
                format!(
                    r#"
resource "google_service_account_iam_member" "sigil" {{
  service_account_id = "projects/-/serviceAccounts/{sa}"
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${{google_iam_workload_identity_pool.sigil.name}}/*"
}}
"#
                )
            })
            .unwrap_or_default();
        format!(
            r#"resource "google_iam_workload_identity_pool" "sigil" {{
  workload_identity_pool_id = {pool}
}}

resource "google_iam_workload_identity_pool_provider" "sigil" {{
  workload_identity_pool_id          = google_iam_workload_identity_pool.sigil.workload_identity_pool_id
  workload_identity_pool_provider_id = {provider}
  attribute_mapping = {{
    "google.subject" = "assertion.sub"
  }}
  attribute_condition = {cond}
  oidc {{
    issuer_uri = {iss}
{jwks}  }}
}}
{sa}"#,
            pool = hcl_str(&self.pool),
            provider = hcl_str(&self.provider),
            cond = hcl_str(&format!("assertion.sub.startsWith('{}')", self.subject_prefix)),
            iss = hcl_str(&self.issuer),
        )
    }
}

/// Default audience for a cloud, re-exported for the CLI.
pub fn aws_default_audience() -> &'static str {
    aws_web_identity::DEFAULT_AUDIENCE
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_strings_cannot_break_out_or_interpolate() {
        assert_eq!(hcl_str("a\"b${c}"), "\"a\\\"b$${c}\"");
    }

    #[test]
    fn aws_trust_policy_names_condition_keys_by_host_and_path() {
        let s = AwsOidc {
            issuer: "https://sigil.example.com/td".into(),
            audience: "sts.amazonaws.com".into(),
            subject: "spiffe://example.com/ci/*".into(),
            role_name: "ci".into(),
            thumbprint: None,
        };
        let p: serde_json::Value = serde_json::from_str(&s.trust_policy("arn:x")).unwrap();
        let c = &p["Statement"][0]["Condition"];
        assert_eq!(c["StringEquals"]["sigil.example.com/td:aud"], "sts.amazonaws.com");
        assert_eq!(c["StringLike"]["sigil.example.com/td:sub"], "spiffe://example.com/ci/*");
        assert!(s.terraform().contains("variable = \"sigil.example.com/td:sub\""));
    }

    #[test]
    fn thumbprint_is_sha1_of_the_last_certificate() {
        assert_eq!(thumbprint(&[b"leaf".to_vec(), b"abc".to_vec()]).unwrap(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn gcp_audience_is_the_provider_resource_name() {
        let g = GcpWif {
            issuer: "https://i".into(),
            project_number: "42".into(),
            pool: "p".into(),
            provider: "s".into(),
            subject_prefix: "spiffe://td/".into(),
            service_account: None,
            jwks_json: None,
        };
        assert_eq!(g.audience(), "//iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/p/providers/s");
        assert!(g.terraform().contains("issuer_uri = \"https://i\""));
    }
}
