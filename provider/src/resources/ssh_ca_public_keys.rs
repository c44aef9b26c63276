//! `sigil_ssh_ca_public_keys` data source: the broker's SSH CA public keys as
//! OpenSSH lines, for host provisioning (`TrustedUserCAKeys` through
//! cloud-init) and for clients (`@cert-authority` lines in `known_hosts`).
//!
//! Every published key is listed (prepared, active, previous), so a file made
//! from it keeps working through a CA rotation; re-apply after each step.

use super::status;
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::provider::DataSource;
use crate::schema::{Attribute, Block, Schema};
use sigil_schemas::sigil::v1 as api;

/// The `sigil_ssh_ca_public_keys` data source type.
pub struct SshCaPublicKeys;

/// One key per line, newline-terminated: the content of a `TrustedUserCAKeys` file.
fn lines(keys: &[String]) -> String {
    keys.iter().map(|k| format!("{}\n", k.trim_end())).collect()
}

fn to_state(k: &api::SshCaPublicKeys) -> Value {
    Value::object([
        ("id", Value::string("ssh-ca")),
        ("user_ca_public_keys", Value::string_list(k.user_ca_public_keys.iter().map(String::as_str))),
        ("host_ca_public_keys", Value::string_list(k.host_ca_public_keys.iter().map(String::as_str))),
        ("trusted_user_ca_keys", Value::string(lines(&k.user_ca_public_keys))),
    ])
}

#[async_trait::async_trait]
impl DataSource for SshCaPublicKeys {
    fn type_name(&self) -> &'static str {
        "sigil_ssh_ca_public_keys"
    }

    fn schema(&self) -> Schema {
        Schema {
            version: 0,
            block: Block {
                description: "The broker's SSH CA public keys (every published key: prepared, active, previous), e.g. for a host's `TrustedUserCAKeys` written by cloud-init, or `@cert-authority` lines in `known_hosts`.",
                attributes: vec![
                    Attribute::computed("id", Type::String, "Always `ssh-ca`."),
                    Attribute::computed("user_ca_public_keys", Type::list(Type::String), "OpenSSH public key lines of the `ssh-user` CA (signs user certificates): what sshd's `TrustedUserCAKeys` lists."),
                    Attribute::computed("host_ca_public_keys", Type::list(Type::String), "OpenSSH public key lines of the `ssh-host` CA (signs host certificates): what clients trust with `@cert-authority HOSTS KEY` in `known_hosts`."),
                    Attribute::computed("trusted_user_ca_keys", Type::String, "`user_ca_public_keys` one per line: the content of a `TrustedUserCAKeys` file."),
                ],
                blocks: vec![],
            },
        }
    }

    async fn read(&self, api: &Api, _config: &Value) -> Result<Value, ApiError> {
        let k = api.client().get_ssh_ca_public_keys(api::GetSshCaPublicKeysRequest::default()).await.map_err(status("SSH CA public keys"))?;
        Ok(to_state(k.get_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trusted_user_ca_keys_file_has_one_key_per_line() {
        let k = api::SshCaPublicKeys {
            user_ca_public_keys: vec!["ssh-ed25519 AAAA1 sigil ssh-user".into(), "ssh-ed25519 AAAA2 sigil ssh-user\n".into()],
            host_ca_public_keys: vec!["ecdsa-sha2-nistp256 BBBB sigil ssh-host".into()],
            ..Default::default()
        };
        let s = to_state(&k);
        assert_eq!(s.attr("trusted_user_ca_keys").as_str(), Some("ssh-ed25519 AAAA1 sigil ssh-user\nssh-ed25519 AAAA2 sigil ssh-user\n"));
        assert_eq!(s.attr("host_ca_public_keys").elements().len(), 1);
    }
}
