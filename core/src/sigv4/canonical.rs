//! The canonical request: method, URI-encoded path, sorted query, canonical
//! headers, signed header names, payload hash, one per line.

use super::sha256_hex;

/// A canonical request and the `SignedHeaders` list that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// The canonical request text.
    pub request: String,
    /// Lowercase header names, sorted, `;`-separated.
    pub signed_headers: String,
}

/// Canonicalises one request. Every header in `headers` is signed: names are
/// lowercased, values trimmed with inner runs of whitespace collapsed to one
/// space, and the list sorted by name. `path` is URI-encoded per segment (`/`
/// kept, empty means `/`); `query` is the raw string without `?`.
pub fn canonical_request(method: &str, path: &str, query: &str, headers: &[(String, String)], payload: &[u8]) -> Canonical {
    let mut canon: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" "))).collect();
    canon.sort();
    let signed_headers = canon.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical_headers: String = canon.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        canonical_path(path),
        canonical_query(query),
        sha256_hex(payload)
    );
    Canonical { request, signed_headers }
}

/// URI-encodes a path per SigV4 (each segment encoded, `/` kept).
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// Query pairs URI-encoded and sorted by name, then value.
fn canonical_query(q: &str) -> String {
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k), uri_encode(v))
        })
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// RFC 3986 unreserved characters kept, every other byte `%XX` (uppercase).
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
