//! Times in human output: RFC 3339 (UTC) instead of raw Unix seconds, which a
//! reader cannot compare with a clock. `--output json` keeps the seconds, so
//! scripts are unaffected.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `secs` (Unix seconds) as RFC 3339 UTC, e.g. `2026-12-01T23:16:11Z`. A value
/// outside the calendar the formatter supports (never a real expiry) is shown
/// as the number it is, so nothing is hidden.
pub(crate) fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_read_as_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_166_971), "2026-12-01T23:16:11Z");
    }

    #[test]
    fn a_time_past_year_9999_is_shown_as_its_number() {
        assert_eq!(rfc3339(i64::MAX), format!("{} (Unix seconds)", i64::MAX));
    }
}
