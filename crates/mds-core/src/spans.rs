//! Spans of time as people write them: `30s`, `15m`, `6h`, `7d`, or plain
//! seconds. Flags, the CLI and the API (a preview's `ttl`) read them alike.

use std::time::Duration;

/// A span of more than zero; a clear error for anything else (overflow
/// included).
pub fn parse_span(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?}: expected a number with s, m, h or d (like 6h)"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("{raw:?}: too long"))?;
    if secs == 0 {
        return Err(format!("{raw:?}: must be more than zero"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_refuse_clearly() {
        assert_eq!(parse_span("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_span("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_span(" 7d "), Ok(Duration::from_secs(7 * 86400)));
        for bad in [
            "",
            "0",
            "0h",
            "h",
            "1w",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
        assert!(parse_span("999999999999999999d")
            .unwrap_err()
            .contains("too long"));
    }
}
