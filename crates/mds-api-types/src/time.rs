//! The one timestamp format of the API: RFC 3339 in UTC with exactly three
//! fractional digits and a `Z` (`2026-01-02T03:04:05.678Z`).
//!
//! chrono's default writes as many digits as the value has (Postgres keeps
//! microseconds), so two timestamps of one object could differ in length
//! and strict clients parse some and not others. Every timestamp field of a
//! response type serializes through here; reading accepts any RFC 3339.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// A timestamp as the API writes it.
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `#[serde(serialize_with = "crate::time::serialize")]`
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t))
}

/// For `Option<DateTime<Utc>>`: the timestamp, or `null`.
pub fn serialize_option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde::Serialize;

    #[derive(Serialize)]
    struct T {
        #[serde(serialize_with = "serialize")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "serialize_option")]
        maybe: Option<DateTime<Utc>>,
    }

    fn check(nanos: u32, want: &str) {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(nanos.into());
        let json = serde_json::to_value(T {
            at,
            maybe: Some(at),
        })
        .unwrap();
        assert_eq!(json["at"], want, "{nanos} ns");
        assert_eq!(json["maybe"], want, "{nanos} ns");
    }

    #[test]
    fn always_three_digits_and_z() {
        for (nanos, want) in [
            (0, "2026-01-02T03:04:05.000Z"),
            (678_000_000, "2026-01-02T03:04:05.678Z"),
            // Microseconds, as Postgres keeps them, are cut, not rounded.
            (678_901_000, "2026-01-02T03:04:05.678Z"),
            (1_000, "2026-01-02T03:04:05.000Z"),
        ] {
            check(nanos, want);
        }
    }

    #[test]
    fn none_is_null() {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let json = serde_json::to_value(T { at, maybe: None }).unwrap();
        assert!(json["maybe"].is_null());
    }

    #[test]
    fn reads_back() {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let back: DateTime<Utc> = format(&at).parse().unwrap();
        assert_eq!(back, at);
    }
}
