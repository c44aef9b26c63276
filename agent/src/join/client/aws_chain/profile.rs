//! Source 2: a profile of the shared config and credentials files.
//! `AWS_PROFILE` selects it (default `default`); `AWS_CONFIG_FILE`
//! (`~/.aws/config`, sections `[profile NAME]` and `[default]`) and
//! `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`, sections `[NAME]`)
//! hold it, the credentials file winning for a key set in both. Both are
//! read on every fetch as the SDKs read them, symlinks followed (Kubernetes
//! Secret and ConfigMap volumes and dotfile managers link them) and never
//! changed (a read-only mount, a config file other services share), at most
//! 1 MiB; a file another user owns or anyone may write is refused, since its
//! `credential_process` would run as this user ([`read_file`]).
//!
//! What a profile may say, in the SDKs' precedence:
//! - `role_arn` + `web_identity_token_file`: `AssumeRoleWithWebIdentity`;
//! - `role_arn` + `source_profile`: the source profile's credentials sign an
//!   `AssumeRole` (chains of at most [`MAX_DEPTH`] profiles, no cycles);
//! - `aws_access_key_id` + `aws_secret_access_key` (+ `aws_session_token`);
//! - `credential_process` ([`super::process`]).
//!
//! `credential_source` and IAM Identity Center (`sso_*`) profiles are not
//! supported: the error says what to use instead.

use super::ini::{self, Sections};
use super::{process, region, sts, web_identity, AwsCredentials, ChainError, Env, Fetched, Outcome, Source};
use async_trait::async_trait;
use sigil_core::clock::Clock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest config or credentials file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Longest `source_profile` chain.
pub const MAX_DEPTH: usize = 4;

/// The selected profile's name.
pub fn selected(env: &Env) -> String {
    env.get("AWS_PROFILE").unwrap_or_else(|| "default".into())
}

/// The two files, parsed.
#[derive(Debug, Default)]
pub struct Files {
    config: Sections,
    credentials: Sections,
    /// Where they were looked for (for errors).
    paths: (Option<PathBuf>, Option<PathBuf>),
}

fn read(path: &Path) -> Result<Sections, String> {
    match read_file(path)? {
        None => Ok(Sections::new()),
        Some(t) => ini::parse(&t, &path.display().to_string()),
    }
}

/// The text of a shared config or credentials file (`None`: it does not
/// exist), through symlinks and without changing it: a regular file of this
/// user or root that no other user may write, at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO planted there must not hang the chain (refused below as not a file).
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let f = match std::fs::OpenOptions::new().read(true).custom_flags(nonblock).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{shown}: cannot read: {e}")),
    };
    let m = f.metadata().map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if !m.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me && m.uid() != 0 {
        return Err(format!("{shown}: owned by user {}, not by this user ({me}) or root: its settings (credential_process) would run as this user", m.uid()));
    }
    if m.mode() & 0o002 != 0 {
        return Err(format!("{shown}: any user may write it (mode {:o}): chmod o-w it", m.mode() & 0o7777));
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{shown}: larger than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(buf).map(Some).map_err(|_| format!("{shown}: not UTF-8 text"))
}

impl Files {
    /// Reads the files `env` names (a missing file is empty).
    pub fn load(env: &Env) -> Result<Self, String> {
        let cfg = env.path("AWS_CONFIG_FILE", ".aws/config");
        let creds = env.path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        Ok(Self {
            config: cfg.as_deref().map(read).transpose()?.unwrap_or_default(),
            credentials: creds.as_deref().map(read).transpose()?.unwrap_or_default(),
            paths: (cfg, creds),
        })
    }

    /// Profile `name`: its config section overlaid with its credentials section.
    pub fn profile(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let from_config = if name == "default" {
            self.config.get("default").or_else(|| self.config.get("profile default"))
        } else {
            self.config.get(&format!("profile {name}"))
        };
        let from_creds = self.credentials.get(name);
        if from_config.is_none() && from_creds.is_none() {
            return None;
        }
        let mut p = from_config.cloned().unwrap_or_default();
        p.extend(from_creds.cloned().unwrap_or_default());
        Some(p)
    }

    fn where_(&self) -> String {
        let show = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(no HOME)".into());
        format!("{} or {}", show(&self.paths.0), show(&self.paths.1))
    }
}

/// The profile source.
#[derive(Clone)]
pub struct Profile {
    env: Env,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Profile")
    }
}

impl Profile {
    /// Reads the files `env` names; `clock` signs `AssumeRole` and names sessions.
    pub fn new(env: Env, clock: Arc<dyn Clock>) -> Self {
        Self { env, clock }
    }

    /// Credentials of profile `name`; `None` when it holds none. `seen` are the
    /// profiles above it in a `source_profile` chain.
    async fn resolve(&self, files: &Files, name: &str, seen: &mut Vec<String>) -> Result<Option<Fetched>, String> {
        let Some(p) = files.profile(name) else { return Err(format!("profile {name:?} not found in {}", files.where_())) };
        let get = |k: &str| p.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let session = || get("role_session_name").unwrap_or_else(|| sts::default_session_name(self.clock.now()));
        if let Some(role) = get("role_arn") {
            if let Some(file) = get("web_identity_token_file") {
                return web_identity::exchange(&self.env, Path::new(&file), &role, &session()).await.map(Some).map_err(|e| format!("profile {name:?} web identity: {e}"));
            }
            if get("credential_source").is_some() {
                return Err(format!(
                    "profile {name:?}: credential_source is not supported; on EC2, ECS or EKS leave the profile out and the chain finds the instance or container credentials"
                ));
            }
            let Some(src) = get("source_profile") else { return Err(format!("profile {name:?}: role_arn needs source_profile or web_identity_token_file")) };
            seen.push(name.to_string());
            let source = if src == name {
                static_keys(name, &p)?.ok_or_else(|| format!("profile {name:?} is its own source_profile but has no aws_access_key_id"))?
            } else {
                if seen.contains(&src) {
                    return Err(format!("profile {name:?}: source_profile cycle through {src:?}"));
                }
                if seen.len() >= MAX_DEPTH {
                    return Err(format!("profile {name:?}: more than {MAX_DEPTH} source_profile hops"));
                }
                Box::pin(self.resolve(files, &src, seen)).await?.ok_or_else(|| format!("source_profile {src:?} of profile {name:?} holds no credentials"))?
            };
            let region = get("region").unwrap_or_else(|| region(&self.env));
            let url = sts::endpoint(&self.env, &region).map_err(|e| format!("profile {name:?} role_arn: {e}"))?;
            let external = get("external_id");
            return sts::assume_role(&url, &region, &source.credentials, &role, &session(), external.as_deref(), self.clock.now())
                .await
                .map(Some)
                .map_err(|e| format!("profile {name:?} role_arn: {e}"));
        }
        if let Some(f) = static_keys(name, &p)? {
            return Ok(Some(f));
        }
        if let Some(cmd) = get("credential_process") {
            return process::run(&cmd, process::TIMEOUT).await.map(Some).map_err(|e| format!("profile {name:?}: {e}"));
        }
        if get("sso_session").is_some() || get("sso_start_url").is_some() {
            return Err(format!(
                "profile {name:?}: IAM Identity Center (sso_*) profiles are not supported; set credential_process = aws configure export-credentials --profile {name} --format process"
            ));
        }
        Ok(None)
    }
}

/// `aws_access_key_id` / `aws_secret_access_key` / `aws_session_token` of profile `name`.
fn static_keys(name: &str, p: &BTreeMap<String, String>) -> Result<Option<Fetched>, String> {
    let get = |k: &str| p.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(format!("profile {name:?}: aws_access_key_id without aws_secret_access_key")),
        (Some(id), Some(secret)) => Ok(Some(Fetched { credentials: AwsCredentials::new(id, secret, get("aws_session_token")), expires_at: None })),
    }
}

#[async_trait]
impl Source for Profile {
    fn name(&self) -> String {
        format!("shared profile {:?}", selected(&self.env))
    }

    async fn fetch(&self) -> Result<Outcome, ChainError> {
        let fail = |e: String| ChainError::failed(self.name(), e);
        let files = Files::load(&self.env).map_err(fail)?;
        let name = selected(&self.env);
        if files.profile(&name).is_none() && self.env.get("AWS_PROFILE").is_none() {
            return Ok(Outcome::Absent(format!("no [default] profile in {}", files.where_())));
        }
        match self.resolve(&files, &name, &mut Vec::new()).await.map_err(fail)? {
            Some(f) => Ok(Outcome::Found(f)),
            None => Ok(Outcome::Absent(format!("profile {name:?} holds no credentials"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sigil_core::clock::ManualClock;

    struct Home(tempfile::TempDir);

    impl Home {
        fn new(config: &str, credentials: &str) -> Self {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir(d.path().join(".aws")).unwrap();
            std::fs::write(d.path().join(".aws/config"), config).unwrap();
            std::fs::write(d.path().join(".aws/credentials"), credentials).unwrap();
            Self(d)
        }

        async fn fetch(&self, profile: Option<&str>) -> Result<Outcome, ChainError> {
            let home = self.0.path().to_str().unwrap();
            let mut vars = vec![("HOME", home)];
            if let Some(p) = profile {
                vars.push(("AWS_PROFILE", p));
            }
            Profile::new(Env::from_pairs(&vars), Arc::new(ManualClock::new(1_700_000_000))).fetch().await
        }
    }

    fn found(o: Outcome) -> Fetched {
        match o {
            Outcome::Found(f) => f,
            Outcome::Absent(w) => panic!("absent: {w}"),
        }
    }

    #[tokio::test]
    async fn linked_shared_or_read_only_files_are_read_as_they_are_and_left_unchanged() {
        use std::os::unix::fs::PermissionsExt;
        // A ConfigMap/Secret volume: the file is a symlink into a read-only
        // directory, mode 0644. The SDKs read it; reading must not change it.
        let h = Home::new("", "");
        let volume = h.0.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        std::fs::write(volume.join("credentials"), "[default]\naws_access_key_id = LINKED\naws_secret_access_key = s\n").unwrap();
        std::fs::set_permissions(volume.join("credentials"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let linked = h.0.path().join(".aws/credentials");
        std::fs::remove_file(&linked).unwrap();
        std::os::unix::fs::symlink(volume.join("credentials"), &linked).unwrap();
        assert_eq!(found(h.fetch(None).await.unwrap()).credentials.access_key_id(), "LINKED");
        assert_eq!(std::fs::metadata(volume.join("credentials")).unwrap().permissions().mode() & 0o777, 0o644, "reading changed the file's mode");

        std::fs::set_permissions(volume.join("credentials"), std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = h.fetch(None).await.unwrap_err().to_string();
        assert!(e.contains(&linked.display().to_string()) && e.contains("any user may write"), "{e}");
        std::fs::write(h.0.path().join(".aws/config"), "x".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        assert!(read_file(&h.0.path().join(".aws/config")).unwrap_err().contains("larger than"));
    }

    #[tokio::test]
    async fn static_keys_with_the_credentials_file_winning() {
        let h = Home::new("[default]\naws_access_key_id = FROMCONFIG\naws_secret_access_key = c\n[profile dev]\nregion = eu-west-1\n", "[dev]\naws_access_key_id = DEVKEY\naws_secret_access_key = d\n[default]\naws_access_key_id = FROMCREDS\naws_secret_access_key = x\n");
        assert_eq!(found(h.fetch(None).await.unwrap()).credentials.access_key_id(), "FROMCREDS");
        assert_eq!(found(h.fetch(Some("dev")).await.unwrap()).credentials.access_key_id(), "DEVKEY");
    }

    #[tokio::test]
    async fn credential_process_runs_when_the_profile_names_it() {
        let h = Home::new("[profile p]\ncredential_process = printf '{\"Version\": 1, \"AccessKeyId\": \"PROCKEY\", \"SecretAccessKey\": \"s\", \"Expiration\": \"2023-11-14T22:13:20Z\"}'\n", "");
        let f = found(h.fetch(Some("p")).await.unwrap());
        assert_eq!((f.credentials.access_key_id(), f.expires_at), ("PROCKEY", Some(1_700_000_000)));
    }

    #[tokio::test]
    async fn a_missing_default_passes_but_a_missing_named_profile_is_an_error() {
        let h = Home::new("[profile other]\nregion = x\n", "");
        assert!(matches!(h.fetch(None).await.unwrap(), Outcome::Absent(_)));
        let e = h.fetch(Some("nope")).await.unwrap_err().to_string();
        assert!(e.contains("\"nope\" not found"), "{e}");
        assert!(matches!(h.fetch(Some("other")).await.unwrap(), Outcome::Absent(_)));
    }

    #[tokio::test]
    async fn role_profiles_that_cannot_work_say_why() {
        let h = Home::new(
            "[profile a]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = b\n[profile b]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = a\n[profile c]\nrole_arn = arn:aws:iam::1:role/r\ncredential_source = Ec2InstanceMetadata\n[profile d]\naws_access_key_id = K\n[profile s]\nsso_session = corp\n",
            "",
        );
        assert!(h.fetch(Some("a")).await.unwrap_err().to_string().contains("cycle"));
        assert!(h.fetch(Some("c")).await.unwrap_err().to_string().contains("credential_source is not supported"));
        assert!(h.fetch(Some("d")).await.unwrap_err().to_string().contains("without aws_secret_access_key"));
        assert!(h.fetch(Some("s")).await.unwrap_err().to_string().contains("export-credentials"));
    }

    #[tokio::test]
    async fn secrets_stay_out_of_errors() {
        let h = Home::new("[profile p]\naws_secret_access_key = very-secret\n", "");
        // No key id: nothing found, and the secret is not repeated.
        match h.fetch(Some("p")).await.unwrap() {
            Outcome::Absent(w) => assert!(!w.contains("very-secret")),
            Outcome::Found(_) => panic!(),
        }
    }
}
