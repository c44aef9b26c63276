//! Documentation pages rendered from the schemas, so they cannot drift: the
//! test below fails when `docs/provider/` differs from what the schemas say.
//! Regenerate with `SIGIL_UPDATE_DOCS=1 cargo test -p terraform-provider-sigil docs`.

use crate::cty::Type;
use crate::schema::{Attribute, Block, Mode, Schema};

/// Example configuration per type name (also validated by the acceptance tests).
pub fn example(type_name: &str) -> &'static str {
    match type_name {
        "provider" => {
            r#"provider "sigil" {
  addr          = "sigil.example.com:8443"
  identity_file = "~/.sigil/admin.identity"
}

# HCP Terraform: join with the run's workload identity token instead. The
# provider reads TFC_WORKLOAD_IDENTITY_TOKEN itself (docs/guides/hcp-terraform.md);
# Spacelift: join_method = "spacelift" reads SPACELIFT_OIDC_TOKEN.
# provider "sigil" {
#   addr            = "sigil.example.com:8443"
#   ca_file         = "tls-ca.pem"
#   join_method     = "terraform_cloud"
#   join_token_name = "hcp-terraform"
# }"#
        }
        "sigil_role" => {
            r#"resource "sigil_role" "deployer" {
  name        = "deployer"
  description = "CI deployers"
  spiffe_ids  = ["/ci/{{bot.name}}", "/svc/*"]
  audiences   = ["sts.amazonaws.com"]

  rule {
    resources = ["bot", "join_token"]
    verbs     = ["read", "list"]
  }

  # Infrastructure access (docs/access/): each block is managed whole; rules
  # written elsewhere show as a change to remove.
  ssh {
    principals       = ["deploy"]
    host_names       = ["*.internal"]
    extensions       = ["permit-pty"]
    critical_options = { "source-address" = "10.0.0.0/8" }
    max_ttl_seconds  = 3600
  }

  database {
    users        = ["app_{{bot.traits.team}}"]
    server_names = ["db.internal"]
  }

  kubernetes {
    users           = ["ci-{{bot.name}}"]
    groups          = ["deployers"]
    max_ttl_seconds = 900
  }
}"#
        }
        "sigil_bot" => {
            r#"resource "sigil_bot" "ci" {
  name   = "ci"
  roles  = ["deployer"]
  traits = { team = ["platform"] }
}"#
        }
        "sigil_join_token" => {
            r#"resource "sigil_join_token" "ci" {
  name       = "ci-bootstrap"
  bot        = "ci"
  expires_at = 1893456000 # 2030-01-01T00:00:00Z
  max_uses   = 1
}

# The secret is sensitive: pass it on without printing it.
output "ci_join_secret" {
  value     = sigil_join_token.ci.secret
  sensitive = true
}"#
        }
        "sigil_workload_identity" => {
            r#"resource "sigil_workload_identity" "web" {
  name      = "web"
  spiffe_id = "/svc/{{bot.name}}/uid-{{workload.unix.uid}}"
  dns_sans  = ["web.internal"]

  allow {
    attribute = "workload.unix.uid"
    values    = ["1000", "1001"]
  }
}"#
        }
        "sigil_lock" => {
            r#"# Stop a compromised bot at once: joins, renewals and issuance are refused.
resource "sigil_lock" "ci_incident" {
  name       = "ci-incident-42"
  reason     = "INC-42: runner credentials leaked"
  expires_at = 1893456000 # 2030-01-01T00:00:00Z; unset: until deleted

  target {
    bot = "ci"
  }
}"#
        }
        "sigil_trust_bundle" => {
            r#"data "sigil_trust_bundle" "this" {}

# e.g. an IAM Roles Anywhere trust anchor:
# resource "aws_rolesanywhere_trust_anchor" "sigil" {
#   name = "sigil"
#   source {
#     source_type = "CERTIFICATE_BUNDLE"
#     source_data { x509_certificate_data = data.sigil_trust_bundle.this.x509_authorities_pem }
#   }
# }"#
        }
        "sigil_oidc_issuer" => {
            r#"data "sigil_oidc_issuer" "this" {}

# e.g. an AWS OIDC provider trusting Sigil JWT-SVIDs:
# resource "aws_iam_openid_connect_provider" "sigil" {
#   url             = data.sigil_oidc_issuer.this.issuer_url
#   client_id_list  = ["sts.amazonaws.com"]
#   thumbprint_list = []
# }"#
        }
        "sigil_ssh_ca_public_keys" => {
            r#"data "sigil_ssh_ca_public_keys" "this" {}

# e.g. hosts that accept Sigil user certificates, set up by cloud-init:
# resource "aws_instance" "web" {
#   # ...
#   user_data = <<-EOT
#     #cloud-config
#     write_files:
#       - path: /etc/ssh/sigil_user_ca.pub
#         content: ${jsonencode(data.sigil_ssh_ca_public_keys.this.trusted_user_ca_keys)}
#     runcmd:
#       - echo "TrustedUserCAKeys /etc/ssh/sigil_user_ca.pub" > /etc/ssh/sshd_config.d/sigil.conf
#       - systemctl reload ssh
#   EOT
# }

output "known_hosts" {
  # Clients trust host certificates of *.internal signed by the host CA.
  value = join("", [for k in data.sigil_ssh_ca_public_keys.this.host_ca_public_keys : "@cert-authority *.internal ${k}\n"])
}"#
        }
        "sigil_bot_instances" => {
            r#"data "sigil_bot_instances" "ci" {
  bot = "ci"
}

output "ci_hosts" {
  value = [for i in data.sigil_bot_instances.ci.instances : i.host_name]
}"#
        }
        _ => "",
    }
}

fn type_name(ty: &Type) -> String {
    match ty {
        Type::String => "String".into(),
        Type::Number => "Number".into(),
        Type::Bool => "Boolean".into(),
        Type::Dynamic => "Dynamic".into(),
        Type::List(e) => format!("List of {}", type_name(e)),
        Type::Set(e) => format!("Set of {}", type_name(e)),
        Type::Map(e) => format!("Map of {}", type_name(e)),
        Type::Tuple(_) => "Tuple".into(),
        Type::Object(_) => "Object".into(),
    }
}

fn attribute_line(a: &Attribute) -> String {
    let mut notes = vec![type_name(&a.ty)];
    if a.sensitive {
        notes.push("Sensitive".into());
    }
    if a.force_new {
        notes.push("Forces replacement".into());
    }
    if let Some(d) = &a.default {
        notes.push(format!("Default `{}`", match d.as_str() {
            Some(s) => format!("{s:?}"),
            None => d.as_i64().map(|i| i.to_string()).unwrap_or_default(),
        }));
    }
    format!("- `{}` ({}) {}\n", a.name, notes.join(", "), a.description)
}

fn render_block(block: &Block, heading: &str, out: &mut String) {
    type Pick = fn(&Attribute) -> bool;
    let groups: [(&str, Pick); 3] = [
        ("Required", |a| a.mode == Mode::Required),
        ("Optional", |a| matches!(a.mode, Mode::Optional | Mode::OptionalComputed)),
        ("Read-only", |a| a.mode == Mode::Computed),
    ];
    for (title, pick) in groups {
        let attrs: Vec<&Attribute> = block.attributes.iter().filter(|a| pick(a)).collect();
        if attrs.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{heading} {title}\n\n"));
        for a in attrs {
            out.push_str(&attribute_line(a));
        }
    }
    for b in &block.blocks {
        let count = match b.nesting {
            crate::schema::Nesting::List => "Zero or more.",
            crate::schema::Nesting::Single => "One block.",
        };
        out.push_str(&format!("\n{heading} `{}` blocks\n\n{} {count}\n\n", b.name, b.block.description));
        for a in &b.block.attributes {
            out.push_str(&attribute_line(a));
        }
    }
}

/// Which kind of page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The provider block.
    Provider,
    /// A managed resource.
    Resource,
    /// A data source.
    DataSource,
}

/// Renders the Markdown page for one type.
pub fn render(kind: Kind, name: &str, schema: &Schema) -> String {
    let title = match kind {
        Kind::Provider => "Provider: sigil".to_string(),
        Kind::Resource => format!("Resource: {name}"),
        Kind::DataSource => format!("Data source: {name}"),
    };
    let mut out = format!(
        "<!-- Generated from the provider schema by provider/src/docs.rs; do not edit by hand. -->\n# {title}\n\n{}\n",
        schema.block.description
    );
    out.push_str(&format!("\n## Example usage\n\n```hcl\n{}\n```\n", example(if kind == Kind::Provider { "provider" } else { name })));
    out.push_str(if kind == Kind::Provider { "\n## Configuration\n" } else { "\n## Schema\n" });
    render_block(&schema.block, "###", &mut out);
    if kind == Kind::Resource {
        let local = name.trim_start_matches("sigil_");
        out.push_str(&format!(
            "\n## Import\n\nImport by name:\n\n```shell\nterraform import {name}.example NAME\n```\n"
        ));
        if local == "join_token" {
            out.push_str("\nThe secret cannot be recovered: after import `secret` is null.\n");
        }
    }
    out
}

/// Every page: (path under `docs/provider/`, content).
pub fn pages() -> Vec<(String, String)> {
    let provider = crate::sigil_provider();
    let mut pages = vec![("index.md".to_string(), render(Kind::Provider, "sigil", &provider.provider_schema()))];
    for r in provider.resources() {
        let n = r.type_name();
        pages.push((format!("resources/{}.md", n.trim_start_matches("sigil_")), render(Kind::Resource, n, &r.schema())));
    }
    for d in provider.data_sources() {
        let n = d.type_name();
        pages.push((format!("data-sources/{}.md", n.trim_start_matches("sigil_")), render(Kind::DataSource, n, &d.schema())));
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn docs_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/provider")
    }

    #[test]
    fn docs_match_the_schema() {
        let update = std::env::var_os("SIGIL_UPDATE_DOCS").is_some();
        let mut stale = vec![];
        for (path, content) in pages() {
            let file = docs_dir().join(&path);
            if update {
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, &content).unwrap();
            } else if std::fs::read_to_string(&file).ok().as_deref() != Some(content.as_str()) {
                stale.push(path);
            }
        }
        assert!(
            stale.is_empty(),
            "docs/provider out of date for {stale:?}: run SIGIL_UPDATE_DOCS=1 cargo test -p terraform-provider-sigil docs"
        );
    }

    #[test]
    fn every_type_has_an_example_naming_it() {
        for (path, content) in pages() {
            assert!(content.contains("```hcl\n") && !content.contains("```hcl\n\n```"), "{path} lacks an example");
        }
        for r in crate::resources::all_resources() {
            assert!(example(r.type_name()).contains(&format!("resource \"{}\"", r.type_name())));
        }
    }
}
