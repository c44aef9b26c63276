//! `sigil join --method M`: the client half of the join methods that CI
//! scripts use by hand (OIDC ID tokens, bound keypair), and which client
//! serves each method of the registry.

use sigil_core::domain::Method;
use sigil_core::fsutil::{read_private_text, write_private, MAX_PRIVATE_READ};
use sigil_agent::join::client::bound_keypair::{self, AgentKey};
use anyhow::{anyhow, bail, Context, Result};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// How `sigil join` obtains a method's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    /// The join token's secret.
    Secret,
    /// The bound key (`--key-file`), plus the registration secret at the first join.
    BoundKey,
    /// The machine's platform proof (`join_cloud`: AWS, TPM, GCE, Azure).
    Platform,
    /// The platform's OIDC ID token (`--id-token-file`, `--id-token-env`).
    IdToken,
}

/// The client of each method of the registry (exhaustive: a method without a
/// client does not compile).
pub(crate) fn client(m: Method) -> Client {
    match m {
        Method::Token => Client::Secret,
        Method::BoundKeypair => Client::BoundKey,
        Method::Iam | Method::Tpm | Method::Gcp | Method::Azure | Method::Ec2 => Client::Platform,
        Method::Github
        | Method::Gitlab
        | Method::Circleci
        | Method::Bitbucket
        | Method::AzureDevops
        | Method::TerraformCloud
        | Method::Spacelift
        | Method::Oidc
        | Method::Kubernetes => Client::IdToken,
    }
}

/// Reads the platform ID token from a file or an environment variable.
pub(crate) fn id_token(file: Option<&Path>, env: Option<&str>) -> Result<String> {
    let t = match (file, env) {
        (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("cannot read ID token file {}", f.display()))?,
        (None, Some(v)) => std::env::var(v).map_err(|_| anyhow!("environment variable {v} is not set (expected the platform's OIDC ID token)"))?,
        (None, None) => bail!("OIDC join methods need --id-token-file FILE or --id-token-env VAR"),
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!("the ID token is empty");
    }
    Ok(t)
}

fn token_name(n: Option<&str>, method: &str) -> Result<String> {
    n.map(str::to_string).with_context(|| format!("--token-name is required for --method {method}"))
}

/// Joins with a bearer ID token.
pub(crate) async fn bearer(cl: &mut SigilClient<Channel>, method: &str, name: Option<&str>, id_token: String, csr: Vec<u8>, ttl: i64) -> Result<pb::IdentityResponse> {
    let req = pb::JoinRequest { method: method.into(), token: id_token, token_name: token_name(name, method)?, csr, ttl_seconds: ttl, ..Default::default() };
    Ok(cl.join(req).await.map_err(|s| anyhow!(s))?.into_inner())
}

fn sequence_file(key_file: &Path) -> PathBuf {
    let mut p = key_file.as_os_str().to_owned();
    p.push(".sequence");
    PathBuf::from(p)
}

/// The key in `key_file`, read never through a symlink and narrowed to 0600
/// ([`read_private_text`]: a link planted there could hand us a key someone
/// else holds), or a new one written there.
fn load_or_create_key(key_file: &Path) -> Result<AgentKey> {
    if let Some(pem) = read_private_text(key_file, MAX_PRIVATE_READ)? {
        return AgentKey::from_pem(&pem).with_context(|| format!("{}", key_file.display()));
    }
    let key = AgentKey::generate()?;
    // A new key starts at sequence 0 (the broker binds it afresh).
    match std::fs::remove_file(sequence_file(key_file)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove the old key's {}", sequence_file(key_file).display()))
        }
        _ => {}
    }
    write_private(key_file, key.to_pem().as_bytes())?;
    eprintln!("created bound key {} (public key {})", key_file.display(), key.public_key_b64());
    Ok(key)
}

/// Prints the public key of the bound key file (creating the key if absent).
pub(crate) fn print_public_key(key_file: &Path) -> Result<()> {
    println!("{}", load_or_create_key(key_file)?.public_key_b64());
    Ok(())
}

/// Bound-keypair join; saves the new join sequence before returning.
pub(crate) async fn bound_keypair(
    cl: &mut SigilClient<Channel>,
    name: Option<&str>,
    key_file: &Path,
    registration_secret: Option<&str>,
    csr: Vec<u8>,
    ttl: i64,
) -> Result<pb::IdentityResponse> {
    let name = token_name(name, Method::BoundKeypair.name())?;
    let key = load_or_create_key(key_file)?;
    let seq_file = sequence_file(key_file);
    let state = match read_private_text(&seq_file, MAX_PRIVATE_READ)? {
        Some(s) => bound_keypair::JoinState::parse(&s).map_err(|e| anyhow!("{} {e}", seq_file.display()))?,
        None => bound_keypair::JoinState::default(),
    };
    // Saved before the join: if the answer is lost, running the command again
    // presents the same attempt and the broker answers again.
    let state = state.start()?;
    write_private(&seq_file, state.render().as_bytes()).with_context(|| format!("cannot save the join attempt to {}", seq_file.display()))?;
    let (r, next) = bound_keypair::join(cl, &key, &name, &state, registration_secret, csr, ttl).await?;
    // The broker has advanced: the next join must present `next`.
    write_private(&seq_file, state.after_join().render().as_bytes())
        .with_context(|| format!("joined, but cannot save the join sequence {next} to {}", seq_file.display()))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_kind_agrees_with_the_registry() {
        for m in Method::ALL {
            let c = client(m);
            assert_eq!(c == Client::Secret, !m.spec().names_token, "{m}: only the secret finds its token by itself");
            if m.spec().challenge {
                assert!(matches!(c, Client::Platform | Client::BoundKey), "{m}: a challenge needs a client that answers it");
            }
        }
    }
}
