//! `X-Amz-Date`: `YYYYMMDDTHHMMSSZ`, UTC.

use super::SigV4Error;

/// Formats a Unix time as `X-Amz-Date`.
pub fn format_amz_date(unix: i64) -> Result<String, SigV4Error> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).map_err(|_| SigV4Error::Date(unix.to_string()))?;
    if !(0..=9999).contains(&t.year()) {
        return Err(SigV4Error::Date(unix.to_string()));
    }
    Ok(format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()))
}

/// Reads `YYYYMMDDTHHMMSSZ` as Unix seconds; `None` unless it is exactly that
/// shape and a real calendar date and time.
pub fn parse_amz_date(v: &str) -> Option<i64> {
    let b = v.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| v.get(r).filter(|s| s.bytes().all(|c| c.is_ascii_digit()))?.parse::<u16>().ok();
    let byte = |r| u8::try_from(num(r)?).ok();
    let month = time::Month::try_from(byte(4..6)?).ok()?;
    let date = time::Date::from_calendar_date(i32::from(num(0..4)?), month, byte(6..8)?).ok()?;
    let t = time::Time::from_hms(byte(9..11)?, byte(11..13)?, byte(13..15)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc().unix_timestamp())
}
