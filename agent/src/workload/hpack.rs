//! HPACK (RFC 7541) for the interop shim, bounded against decompression bombs.
//!
//! Threat model: any local user can connect to the Workload API socket and send
//! header blocks. A block of at most 64 KiB can still expand enormously: one
//! dynamic-table entry referenced tens of thousands of times (a 4 KB value x 60k
//! references took the agent to 288 MB), or a table-size update asking for a
//! table of gigabytes that literal fields then fill. Hence:
//! - the dynamic table is capped at [`HEADER_TABLE_SIZE`], the size the server
//!   behind the shim advertises (h2's default, which tonic does not change); a
//!   size update above it is an error;
//! - the decoded header list is capped at [`MAX_DECODED`] bytes, counted as RFC
//!   7541 does (32 + name + value per field); decoding stops at the first field
//!   past it;
//! - every error closes the connection (the caller drops it).
//!
//! The block is first walked by [`check`], which validates every integer, string
//! length and size update without decoding anything (so `fluke-hpack`, which
//! panics on a truncated size update, only ever sees well-formed blocks), then
//! decoded by `fluke-hpack` with its table capped, counting the decoded bytes.
//! Re-encoding is stateless: literal fields without indexing or Huffman coding,
//! so the server's table stays empty and a re-encoded block is never larger than
//! the decoded list it came from (plus a few bytes per field).

use std::borrow::Cow;

/// Dynamic table size the server advertises (SETTINGS_HEADER_TABLE_SIZE default).
pub const HEADER_TABLE_SIZE: usize = 4096;
/// Largest decoded header list accepted in one block (RFC 7541 size).
pub const MAX_DECODED: usize = 64 * 1024;
/// Largest integer (index, length, size) a valid block here can carry.
const MAX_INT: usize = 1 << 20;

/// A decoded header field: (name, value).
pub type Field = (Vec<u8>, Vec<u8>);

/// Why a header block was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HpackError {
    /// The block is not valid HPACK, or a table-size update exceeds the advertised size.
    #[error("invalid HPACK block: {0}")]
    Invalid(String),
    /// The block decodes to more than [`MAX_DECODED`] bytes.
    #[error("header block decodes to more than {MAX_DECODED} bytes")]
    TooLarge,
}

fn invalid(what: &str) -> HpackError {
    HpackError::Invalid(what.to_string())
}

/// Reads an RFC 7541 5.1 integer with an `n`-bit prefix at `*pos`.
fn get_int(block: &[u8], pos: &mut usize, n: u32) -> Result<usize, HpackError> {
    let max = (1usize << n) - 1;
    let first = *block.get(*pos).ok_or_else(|| invalid("truncated integer"))?;
    *pos += 1;
    let mut v = usize::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*pos).ok_or_else(|| invalid("truncated integer"))?;
        *pos += 1;
        v += (usize::from(b) & 0x7f) << shift;
        if v > MAX_INT {
            return Err(invalid("integer too large"));
        }
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

fn skip_str(block: &[u8], pos: &mut usize) -> Result<(), HpackError> {
    let len = get_int(block, pos, 7)?;
    *pos = pos.checked_add(len).filter(|end| *end <= block.len()).ok_or_else(|| invalid("truncated string"))?;
    Ok(())
}

/// Walks every representation of `block` without decoding it: integers and
/// lengths are well formed and in bounds, size updates come first and do not
/// exceed [`HEADER_TABLE_SIZE`].
pub fn check(block: &[u8]) -> Result<(), HpackError> {
    let mut pos = 0;
    let mut fields_seen = false;
    while pos < block.len() {
        let b = block[pos];
        if b & 0x80 != 0 {
            get_int(block, &mut pos, 7)?;
        } else if b & 0xe0 == 0x20 {
            if fields_seen {
                return Err(invalid("size update after a field"));
            }
            if get_int(block, &mut pos, 5)? > HEADER_TABLE_SIZE {
                return Err(invalid("table size update above the advertised SETTINGS_HEADER_TABLE_SIZE"));
            }
            continue;
        } else {
            let prefix = if b & 0x40 != 0 { 6 } else { 4 };
            if get_int(block, &mut pos, prefix)? == 0 {
                skip_str(block, &mut pos)?;
            }
            skip_str(block, &mut pos)?;
        }
        fields_seen = true;
    }
    Ok(())
}

/// The decoding state of one connection's client-to-server direction.
pub struct Decoder(fluke_hpack::Decoder<'static>);

impl Default for Decoder {
    fn default() -> Self {
        let mut d = fluke_hpack::Decoder::new();
        d.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self(d)
    }
}

impl Decoder {
    /// Decodes one complete header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        check(block)?;
        let (mut fields, mut size) = (Vec::new(), 0usize);
        // Past the cap, fields are only counted: the rest of the block is walked
        // (borrowed from the table, nothing kept) so the error comes once.
        self.0
            .decode_with_cb(block, |n: Cow<[u8]>, v: Cow<[u8]>| {
                size = size.saturating_add(32 + n.len() + v.len());
                if size <= MAX_DECODED {
                    fields.push((n.into_owned(), v.into_owned()));
                }
            })
            .map_err(|e| HpackError::Invalid(format!("{e:?}")))?;
        if size > MAX_DECODED {
            return Err(HpackError::TooLarge);
        }
        Ok(fields)
    }
}

/// RFC 7541 5.1 integer with an `n`-bit prefix, the prefix byte's other bits `first`.
fn put_int(out: &mut Vec<u8>, n: u32, first: u8, v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_int(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// Encodes `fields` as literals without indexing (no table, no Huffman).
pub fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
    for (n, v) in fields {
        out.push(0);
        put_str(&mut out, n);
        put_str(&mut out, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: &str, v: &str) -> Field {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn encoded_fields_decode_back() {
        let fields = vec![f(":method", "POST"), f(":path", "/x"), f("te", "trailers"), f("x-long", &"v".repeat(300))];
        assert_eq!(Decoder::default().decode(&encode(&fields)).unwrap(), fields);
    }

    #[test]
    fn integers_use_continuation_bytes_past_the_prefix() {
        let mut out = Vec::new();
        put_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10], "RFC 7541 C.1.2");
    }

    /// One 4000-byte entry inserted, then referenced until the block is 64 KiB.
    #[test]
    fn one_entry_referenced_thousands_of_times_is_refused() {
        let mut block = vec![0x40];
        put_str(&mut block, b"x-bomb");
        put_str(&mut block, &[b'a'; 4000]);
        block.resize(64 * 1024, 0xbe); // indexed: dynamic entry 62
        assert_eq!(Decoder::default().decode(&block), Err(HpackError::TooLarge));
    }

    #[test]
    fn table_size_update_above_the_advertised_size_is_refused() {
        let mut block = Vec::new();
        put_int(&mut block, 5, 0x20, 1 << 30);
        assert!(matches!(Decoder::default().decode(&block), Err(HpackError::Invalid(_))));
        let mut ok = Vec::new();
        put_int(&mut ok, 5, 0x20, HEADER_TABLE_SIZE);
        ok.push(0x82); // :method GET
        assert_eq!(Decoder::default().decode(&ok), Ok(vec![f(":method", "GET")]));
    }

    #[test]
    fn malformed_integers_are_errors_not_panics() {
        // A truncated size update is what made fluke-hpack 0.3 panic.
        let blocks: [&[u8]; 6] = [&[0x3f], &[0x3f, 0xff], &[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], &[0x00, 0x85], &[0x82, 0x20]];
        for block in blocks {
            assert!(Decoder::default().decode(block).is_err(), "{block:?}");
        }
    }
}
