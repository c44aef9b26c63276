//! RFC 4251 section 5 data types: `uint32`, `uint64`, `string`, `mpint`,
//! written to a buffer and read back with bounds checks.

/// Appends SSH wire values to a buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// `uint32`, big-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `uint64`, big-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `string`: length then bytes. Lengths beyond `u32` never occur here
    /// (every input is bounded far below), so they saturate rather than wrap.
    pub fn string(&mut self, b: impl AsRef<[u8]>) -> &mut Self {
        let b = b.as_ref();
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
        self
    }

    /// `mpint` of a non-negative big-endian integer: leading zeros dropped,
    /// one zero byte added when the top bit is set (it would read negative).
    pub fn mpint(&mut self, be: &[u8]) -> &mut Self {
        let trimmed: &[u8] = {
            let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
            &be[start..]
        };
        if trimmed.first().is_some_and(|&b| b & 0x80 != 0) {
            let mut v = Vec::with_capacity(trimmed.len() + 1);
            v.push(0);
            v.extend_from_slice(trimmed);
            self.string(v)
        } else {
            self.string(trimmed)
        }
    }

    /// Raw bytes, no length.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Reads SSH wire values; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads from `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Self(b)
    }

    /// `byte`.
    pub fn u8(&mut self) -> Option<u8> {
        let (head, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*head)
    }

    /// `uint32`.
    pub fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_be_bytes(head.try_into().ok()?))
    }

    /// `uint64`.
    pub fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        Some(u64::from_be_bytes(head.try_into().ok()?))
    }

    /// `string`.
    pub fn string(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// `mpint` that must be positive and minimally encoded; returns the
    /// magnitude without the sign byte.
    pub fn positive_mpint(&mut self) -> Option<&'a [u8]> {
        let b = self.string()?;
        match b {
            [] => None,
            [0, next, ..] if next & 0x80 != 0 => Some(&b[1..]),
            [0, ..] => None,
            [first, ..] if first & 0x80 != 0 => None,
            _ => Some(b),
        }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpints_follow_rfc4251_examples() {
        // RFC 4251 section 5: 0 -> 00 00 00 00; 0x80 -> 00 00 00 02 00 80.
        let enc = |v: &[u8]| {
            let mut w = Writer::new();
            w.mpint(v);
            w.into_bytes()
        };
        assert_eq!(enc(&[0]), vec![0, 0, 0, 0]);
        assert_eq!(enc(&[0x80]), vec![0, 0, 0, 2, 0, 0x80]);
        assert_eq!(enc(&[0, 0, 0x09, 0xa3]), vec![0, 0, 0, 2, 0x09, 0xa3]);
        let mut r = Reader::new(&[0, 0, 0, 2, 0, 0x80]);
        assert_eq!(r.positive_mpint(), Some(&[0x80u8][..]));
        assert_eq!(Reader::new(&[0, 0, 0, 1, 0x80]).positive_mpint(), None, "negative");
        assert_eq!(Reader::new(&[0, 0, 0, 2, 0, 1]).positive_mpint(), None, "not minimal");
    }

    #[test]
    fn reads_past_the_end_are_refused() {
        assert_eq!(Reader::new(&[0, 0, 0, 5, 1]).string(), None);
        assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0xff]).string(), None);
        assert_eq!(Reader::new(&[0, 0]).u32(), None);
    }
}
