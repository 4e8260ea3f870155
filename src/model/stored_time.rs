//! Reading back the system timestamps of stored entities. Every stored attribute carries two
//! (createdAt, modifiedAt) in the one form chrono writes them (`2026-11-22T09:29:21.343146281Z`),
//! and chrono's general RFC 3339 parser was about a twelfth of the broker's CPU when it decoded a
//! page of entities from PostgreSQL. This reads that form directly and leaves every other form to
//! chrono.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::de::{Deserializer, Error, Visitor};
use std::fmt;

/// Deserializes a stored UTC timestamp (`serde(deserialize_with)`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(TimeVisitor)
}

struct TimeVisitor;

impl Visitor<'_> for TimeVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: Error>(self, s: &str) -> Result<DateTime<Utc>, E> {
        match utc_form(s.as_bytes()) {
            Some(t) => Ok(t),
            None => s.parse::<DateTime<Utc>>().map_err(E::custom),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, or None for any other text (which may still be valid).
fn utc_form(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(20..b.len() - 1)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    let time =
        NaiveTime::from_hms_nano_opt(digits(11..13)?, digits(14..16)?, digits(17..19)?, nanos)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<DateTime<Utc>, serde_json::Error> {
        deserialize(&mut serde_json::Deserializer::from_str(&format!(
            "\"{text}\""
        )))
    }

    #[test]
    fn reads_what_chrono_writes_and_agrees_with_chrono() {
        let base = "2026-11-22T09:29:21Z".parse::<DateTime<Utc>>().unwrap();
        for nanos in [0, 1, 120_000_000, 343_146_000, 343_146_281, 999_999_999] {
            for days in [0, 1, 45, 366, 10_000] {
                let t = base + chrono::Duration::days(days) + chrono::Duration::nanoseconds(nanos);
                let written = serde_json::to_string(&t).unwrap();
                let back: DateTime<Utc> =
                    deserialize(&mut serde_json::Deserializer::from_str(&written)).unwrap();
                assert_eq!(back, t, "{written}");
            }
        }
        for text in [
            "2024-02-29T23:59:59.5Z",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.123456789Z",
            "2026-01-01T00:00:00+02:00",
            "2026-01-01T00:00:00.1-05:30",
            "2026-01-01t00:00:00z",
            "2026-01-01T00:00:00.1234567890Z",
        ] {
            assert_eq!(
                read(text).unwrap(),
                text.parse::<DateTime<Utc>>().unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_is_no_timestamp() {
        for text in [
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:0a:00Z",
            "2026-01-01T00:00:00",
            "",
        ] {
            assert!(read(text).is_err(), "{text}");
        }
    }
}
