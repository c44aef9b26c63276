//! Glob matching for names, audiences and SPIFFE ID paths.

/// Matches `text` against `pattern`, where `*` matches any run of characters.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches a SPIFFE ID path against a path pattern: a segment `**` matches one or
/// more whole segments, any other segment is a glob that never crosses `/`.
pub fn matches_path(pattern: &str, path: &str) -> bool {
    let ps: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let ts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match_segments(&ps, &ts)
}

fn match_segments(ps: &[&str], ts: &[&str]) -> bool {
    match ps.split_first() {
        None => ts.is_empty(),
        Some((&"**", rest)) => (1..=ts.len()).any(|n| match_segments(rest, &ts[n..])),
        Some((p, rest)) => match ts.split_first() {
            Some((t, trest)) => matches(p, t) && match_segments(rest, trest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run() {
        assert!(matches("*", ""));
        assert!(matches("sts.*.com", "sts.amazonaws.com"));
        assert!(!matches("sts.*.com", "sts.amazonaws.org"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("abc", "abcd"));
    }

    #[test]
    fn path_star_stays_within_one_segment() {
        assert!(matches_path("/svc/*", "/svc/web"));
        assert!(!matches_path("/svc/*", "/svc/web/extra"));
        assert!(matches_path("/ci/**", "/ci/a/b/c"));
        assert!(!matches_path("/ci/**", "/ci"));
        assert!(matches_path("/svc/web", "/svc/web"));
        assert!(!matches_path("/svc/web", "/svc/webx"));
    }
}
