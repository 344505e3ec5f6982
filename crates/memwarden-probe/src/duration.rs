//! Durations as people write them (`500ms`, `2m`, `1h`), bounded: every duration memwarden
//! reads, from a flag, a config file or a request, goes through [`parse_duration`].

use std::time::Duration;

/// The longest duration memwarden takes anywhere: past it a time is no longer a plan but a
/// typo, and far past it (`300000000000y`) adding it to a clock overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration of at most [`MAX_DURATION`]; the error is the reason alone, for the caller
/// to say where the value came from.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX_DURATION {
        return Err("at most 10 years".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_any_clock_are_refused_not_wrapped() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        for s in ["300000000000y", "18446744073709551615s", "3651d"] {
            assert_eq!(parse_duration(s), Err("at most 10 years".into()), "{s}");
        }
        assert!(parse_duration("soon").is_err());
    }
}
