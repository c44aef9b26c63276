//! Glob matching for names, audiences and SPIFFE ID paths, and the coverage
//! relation between patterns that the escalation checks use.
//!
//! Two pattern languages:
//! - *flat globs* (names, audiences, condition values): `*` matches any run of
//!   characters, every other character stands for itself;
//! - *path patterns* (SPIFFE ID paths): segments split at `/`; a segment `**`
//!   matches one or more whole segments, any other segment is a flat glob that
//!   never crosses `/`.
//!
//! Both matchers run in O(pattern × text) time, whatever the number of `*` and
//! `**`: patterns come from roles a delegated bot may write, texts from requests.

/// Matches `text` against the flat glob `pattern`.
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

/// Whether every text the flat glob `inner` matches is also matched by `outer`.
///
/// Decided by matching `outer` against `inner` read as text: a `*` of `inner`
/// is then a character only a `*` of `outer` can absorb, so any expansion of
/// `inner` is matched by the same alignment. Sound (never says yes wrongly);
/// it may say no for exotic pairs whose inclusion needs a cleverer argument.
pub fn covers(outer: &str, inner: &str) -> bool {
    matches(outer, inner)
}

/// Matches a SPIFFE ID path against a path pattern.
pub fn matches_path(pattern: &str, path: &str) -> bool {
    match_segments(&segments(pattern), &segments(path), matches)
}

/// Whether every path the pattern `inner` matches is also matched by `outer`
/// (both path patterns). A `**` of `inner` (one or more segments of any
/// content) is covered only by a `**` of `outer`; other segments by
/// [`covers`].
pub fn path_covers(outer: &str, inner: &str) -> bool {
    match_segments(&segments(outer), &segments(inner), |o, i| i != "**" && covers(o, i))
}

fn segments(p: &str) -> Vec<&str> {
    p.trim_start_matches('/').split('/').collect()
}

/// `ps` against `ts`, where a `**` in `ps` takes one or more elements of `ts`
/// and any other element is compared with `one`. Dynamic programming over
/// suffixes: `ok[a][b]` = `ps[a..]` matches `ts[b..]`.
fn match_segments(ps: &[&str], ts: &[&str], one: impl Fn(&str, &str) -> bool) -> bool {
    let (n, m) = (ps.len(), ts.len());
    let w = m + 1;
    let mut ok = vec![false; (n + 1) * w];
    ok[n * w + m] = true;
    for a in (0..n).rev() {
        for b in (0..m).rev() {
            ok[a * w + b] = if ps[a] == "**" {
                // Take ts[b], then stop (rest of ps) or keep taking.
                ok[(a + 1) * w + b + 1] || ok[a * w + b + 1]
            } else {
                one(ps[a], ts[b]) && ok[(a + 1) * w + b + 1]
            };
        }
    }
    ok[0]
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
        assert!(matches_path("/**/x/**", "/a/b/x/c"));
        assert!(!matches_path("/**/x/**", "/a/b/x"));
    }

    #[test]
    fn many_double_stars_against_a_long_path_answer_at_once() {
        // Exponential for a backtracking matcher; quadratic here.
        let pattern = format!("{}/y", "/**".repeat(300));
        let path = "/a".repeat(1000);
        assert!(!matches_path(&pattern, &path));
        assert!(!path_covers(&pattern, &path));
    }

    #[test]
    fn flat_cover_is_inclusion() {
        assert!(covers("*", "anything*"));
        assert!(covers("team-*", "team-a-*"));
        assert!(covers("team-*", "team-web"));
        assert!(!covers("team-web", "team-*"));
        assert!(!covers("team-*", "*"));
        assert!(!covers("a*c", "a*"));
        assert!(covers("*.example.com", "api.*.example.com"));
    }

    #[test]
    fn path_cover_respects_segments() {
        assert!(path_covers("/**", "/a/b"));
        assert!(path_covers("/**", "/**"));
        assert!(path_covers("/svc/**", "/svc/*/x"));
        assert!(path_covers("/svc/*", "/svc/web"));
        assert!(path_covers("/svc/*", "/svc/*"));
        // A single-segment glob never covers a `**`, which spans segments.
        assert!(!path_covers("/svc/*", "/svc/**"));
        assert!(!path_covers("/svc/**", "/svc"));
        assert!(!path_covers("/svc/web", "/svc/*"));
        assert!(!path_covers("/team/**", "/prod/db"));
        assert!(path_covers("/a/**/z", "/a/b/**/z"));
        assert!(!path_covers("/a/*/z", "/a/**/z"));
    }
}
