//! Human durations as release files and flags write them: `90s`, `15m`,
//! `1h30m`, `30d`, `500ms`.

use std::time::Duration;

/// Parses `15m`, `1h30m`, `30d`, `500ms`, `10s`; a bare number is rejected so
/// that "15" never silently means seconds.
///
/// # Errors
/// Returns a message naming the bad input and the accepted units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: write e.g. `90s`, `15m`, `1h30m`, `30d` (units ms, s, m, h, d)");
    let s_trim = s.trim();
    if s_trim.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s_trim;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_bare_numbers_and_unknown_units() {
        for s in ["", "15", "m", "15x", "1.5h", "-1m"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }
}
