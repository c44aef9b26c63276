//! The INI dialect of the AWS shared config and credentials files: `[section]`
//! headers, `key = value` lines, `#` and `;` comments, and indented
//! continuation lines (sub-sections such as `s3 =`), which are skipped since no
//! credential setting uses them. Keys are matched case-insensitively.

use std::collections::BTreeMap;

/// Sections by name, each a map of lower-cased keys to values.
pub(super) type Sections = BTreeMap<String, BTreeMap<String, String>>;

/// Most sections read from one file.
pub(super) const MAX_SECTIONS: usize = 1000;

/// Parses `text`; `file` names it in errors.
pub(super) fn parse(text: &str, file: &str) -> Result<Sections, String> {
    let mut out = Sections::new();
    let mut current: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) && current.is_some() {
            continue; // continuation of a sub-section
        }
        if let Some(rest) = t.strip_prefix('[') {
            let name = rest.split_once(']').map(|(n, _)| n.trim()).ok_or_else(|| format!("{file} line {}: section header without `]`", n + 1))?;
            if out.len() >= MAX_SECTIONS && !out.contains_key(name) {
                return Err(format!("{file}: more than {MAX_SECTIONS} sections"));
            }
            out.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let Some(section) = &current else { return Err(format!("{file} line {}: setting outside a [section]", n + 1)) };
        let Some((k, v)) = t.split_once('=') else { return Err(format!("{file} line {}: expected `key = value`", n + 1)) };
        let v = strip_inline_comment(v.trim());
        if let Some(m) = out.get_mut(section) {
            m.insert(k.trim().to_ascii_lowercase(), v.to_string());
        }
    }
    Ok(out)
}

/// A ` #` or ` ;` after a value starts a comment (the SDKs' rule: the marker
/// must follow whitespace, so `a#b` stays a value).
fn strip_inline_comment(v: &str) -> &str {
    let b = v.as_bytes();
    for i in 1..b.len() {
        if (b[i] == b'#' || b[i] == b';') && b[i - 1].is_ascii_whitespace() {
            return v[..i].trim_end();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sections_keys_comments_and_subsections() {
        let s = parse(
            "# top\n[default]\nAWS_Access_Key_Id = AKID ; note\nregion=eu-west-1\ns3 =\n  max_concurrent_requests = 10\n[profile x]\n; c\nk = a#b\n",
            "config",
        )
        .unwrap();
        assert_eq!(s["default"]["aws_access_key_id"], "AKID");
        assert_eq!(s["default"]["region"], "eu-west-1");
        assert!(!s["default"].contains_key("max_concurrent_requests"));
        assert_eq!(s["profile x"]["k"], "a#b");
    }

    #[test]
    fn malformed_lines_name_the_file_and_line() {
        assert_eq!(parse("k = v\n", "credentials").unwrap_err(), "credentials line 1: setting outside a [section]");
        assert_eq!(parse("[a]\njunk\n", "config").unwrap_err(), "config line 2: expected `key = value`");
        assert!(parse("[a\n", "config").unwrap_err().contains("line 1"));
    }
}
