//! Durations as pinip's flags take them: `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
//! Shared by every binary's command line so the same flag value means the same everywhere.

use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(
            parse_duration("1d"),
            Err(r#""1d": unit must be ms, s, m or h"#.to_string())
        );
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(
            parse_duration("9999999999999999999h"),
            Err(r#""9999999999999999999h" is too long"#.to_string())
        );
        assert_eq!(
            parse_duration("s"),
            Err(r#""s" is not a duration like 30s"#.to_string())
        );
    }
}
