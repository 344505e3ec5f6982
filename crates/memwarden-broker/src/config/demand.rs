//! The config's fields for demand-aware scheduling: `min_residency` (pool or consumer) and a
//! consumer's `priority`, with their checks.

use std::time::Duration;

use toml::Spanned;

use super::ConfigError;
use super::raw::{Source, duration};

/// How long a consumer just loaded is kept for its queued requests when nothing says: long
/// enough to serve a batch, short beside a load.
pub const DEFAULT_MIN_RESIDENCY: Duration = Duration::from_secs(5);

/// The most a `priority` may be, either way.
pub const MAX_PRIORITY: i64 = 1000;

/// A pool's `min_residency`: a waiting request has its turn at a quarter of `max_wait`
/// whatever it needs, so a residency longer than that could never hold; the default is cut to
/// it.
pub(super) fn pool_min_residency(
    src: &Source<'_>,
    pool: &str,
    raw: &Option<Spanned<String>>,
    max_wait: Duration,
) -> Result<Duration, ConfigError> {
    let Some(d) = raw else {
        return Ok(DEFAULT_MIN_RESIDENCY.min(max_wait / 4));
    };
    let v = duration(src, d)?;
    if v > max_wait / 4 {
        return Err(src.err(
            d,
            format!(
                "pool {pool:?}: min_residency ({}) is longer than a quarter of max_wait ({}), \
                 after which a waiting request has its turn anyway",
                crate::human::duration(v),
                crate::human::duration(max_wait / 4)
            ),
        ));
    }
    Ok(v)
}

/// A consumer's own `min_residency` and its `priority` (0 when not given).
pub(super) fn consumer_fields(
    src: &Source<'_>,
    consumer: &str,
    min_residency: &Option<Spanned<String>>,
    priority: &Option<Spanned<i64>>,
) -> Result<(Option<Duration>, i32), ConfigError> {
    let min_residency = min_residency
        .as_ref()
        .map(|d| duration(src, d))
        .transpose()?;
    let priority = match priority {
        Some(p) if p.get_ref().abs() > MAX_PRIORITY => {
            return Err(src.err(
                p,
                format!(
                    "consumer {consumer:?}: priority must be between -{MAX_PRIORITY} and \
                     {MAX_PRIORITY}"
                ),
            ));
        }
        // Within ±1000: fits.
        Some(p) => *p.get_ref() as i32,
        None => 0,
    };
    Ok((min_residency, priority))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    const BASE: &str = "[[pool]]\nname = \"p\"\nkind = \"ram\"\nmax_wait = \"60s\"\n";
    const A: &str = "[[consumer]]\nname = \"a\"\npool = \"p\"\nresident = \"1GiB\"\n";

    fn parse(pool_extra: &str, consumer_extra: &str) -> Result<Config, String> {
        let text = format!("{BASE}{pool_extra}\n{A}{consumer_extra}\n");
        Config::parse(&text, "t.toml", None).map_err(|e| e.0)
    }

    #[test]
    fn min_residency_defaults_to_a_few_seconds_and_a_consumer_may_set_its_own() {
        let cfg = parse("", "").unwrap();
        assert_eq!(cfg.pools[0].min_residency, Duration::from_secs(5));
        assert_eq!(cfg.min_residency(0), Duration::from_secs(5));
        assert_eq!(cfg.consumers[0].priority, 0);
        let cfg = parse("min_residency = \"2s\"", "").unwrap();
        assert_eq!(cfg.min_residency(0), Duration::from_secs(2));
        let cfg = parse(
            "min_residency = \"2s\"",
            "min_residency = \"0s\"\npriority = -3",
        )
        .unwrap();
        assert_eq!(cfg.min_residency(0), Duration::ZERO);
        assert_eq!(cfg.consumers[0].priority, -3);
        // A short max_wait cuts the default to the quarter after which requests age.
        let text = format!("[[pool]]\nname = \"p\"\nkind = \"ram\"\nmax_wait = \"4s\"\n{A}");
        let cfg = Config::parse(&text, "t.toml", None).unwrap();
        assert_eq!(cfg.min_residency(0), Duration::from_secs(1));
    }

    #[test]
    fn a_residency_no_request_would_wait_for_is_refused() {
        assert_eq!(
            parse("min_residency = \"20s\"", "").unwrap_err(),
            "t.toml:5:17: pool \"p\": min_residency (20s) is longer than a quarter of \
             max_wait (15s), after which a waiting request has its turn anyway"
        );
        assert_eq!(
            parse("min_residency = \"soon\"", "").unwrap_err(),
            "t.toml:5:17: invalid duration \"soon\": expected number at 0"
        );
        assert!(
            parse("", "min_residency = \"1x\"")
                .unwrap_err()
                .starts_with("t.toml:10:17: invalid duration \"1x\"")
        );
    }

    #[test]
    fn priority_is_bounded_and_whole() {
        assert_eq!(
            parse("", "priority = 1000").unwrap().consumers[0].priority,
            1000
        );
        assert_eq!(
            parse("", "priority = 1001").unwrap_err(),
            "t.toml:10:12: consumer \"a\": priority must be between -1000 and 1000"
        );
        assert_eq!(
            parse("", "priority = -99999999999").unwrap_err(),
            "t.toml:10:12: consumer \"a\": priority must be between -1000 and 1000"
        );
        assert!(
            parse("", "priority = 1.5")
                .unwrap_err()
                .starts_with("t.toml:10:12:")
        );
        assert!(
            parse("", "priority = \"high\"")
                .unwrap_err()
                .starts_with("t.toml:10:12:")
        );
    }
}
