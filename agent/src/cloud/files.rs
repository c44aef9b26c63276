//! Writing the files cloud SDKs read: atomically (temp file + rename) so an SDK
//! never sees half a token, owner-only when they hold secrets, and INI sections
//! replaced in place so the rest of a user's AWS config survives.

use std::path::Path;

/// Writes `data` to `path` atomically with exactly `mode` (e.g. 0o600), creating
/// parent directories ([`sigil_core::fsutil::write_file`]: random temp name, no symlink followed).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let (dir, _) = sigil_core::fsutil::split(path)?;
    std::fs::create_dir_all(dir)?;
    Ok(sigil_core::fsutil::write_file(path, data, mode)?)
}

/// The current text of a file this process merges into (an AWS shared file),
/// empty when missing: read never through a symlink, only when it is a regular
/// file of this user or root, at most 1 MiB ([`sigil_core::fsutil::read_private`]).
/// A link in its place is refused rather than followed: its target may be
/// another file, and the write would cut the link anyway.
pub fn read_back(path: &Path) -> std::io::Result<String> {
    Ok(sigil_core::fsutil::read_private_text(path, sigil_core::fsutil::MAX_PRIVATE_READ)?.unwrap_or_default())
}

/// Replaces the INI section `[header]` of `existing` by `body` lines (or appends it),
/// keeping every other section and comment as it was.
pub fn upsert_ini_section(existing: &str, header: &str, body: &[(String, String)]) -> String {
    let wanted = format!("[{header}]");
    let mut out = String::new();
    let mut skipping = false;
    let mut replaced = false;
    for line in existing.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            skipping = normalize_header(t) == normalize_header(&wanted);
            if skipping && !replaced {
                push_section(&mut out, &wanted, body);
                replaced = true;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        push_section(&mut out, &wanted, body);
    }
    out
}

fn normalize_header(h: &str) -> String {
    h.trim_start_matches('[').trim_end_matches(']').split_whitespace().collect::<Vec<_>>().join(" ")
}

fn push_section(out: &mut String, header: &str, body: &[(String, String)]) {
    out.push_str(header);
    out.push('\n');
    for (k, v) in body {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn section_is_replaced_and_others_kept() {
        let before = "# mine\n[default]\nregion = eu-west-1\n\n[profile sigil]\nrole_arn = old\n\n[profile other]\nregion = x\n";
        let after = upsert_ini_section(before, "profile sigil", &[kv("role_arn", "new")]);
        assert_eq!(after, "# mine\n[default]\nregion = eu-west-1\n\n[profile sigil]\nrole_arn = new\n\n[profile other]\nregion = x\n");
    }

    #[test]
    fn missing_section_is_appended() {
        let after = upsert_ini_section("[default]\nregion = a\n", "sigil", &[kv("aws_access_key_id", "AK")]);
        assert_eq!(after, "[default]\nregion = a\n\n[sigil]\naws_access_key_id = AK\n\n");
        assert_eq!(upsert_ini_section("", "sigil", &[kv("k", "v")]), "[sigil]\nk = v\n\n");
    }

    #[test]
    fn atomic_write_sets_owner_only_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/token");
        write_atomic(&p, b"abc", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
