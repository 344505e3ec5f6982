//! Durations as people read them in answers and logs.

use std::time::Duration;

/// `d` rounded to the millisecond: a wait measured by the clock carries nanoseconds that
/// only make an answer harder to read ("8s 52ms", not "8s 52ms 468us 548ns").
pub fn duration(d: Duration) -> String {
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// `d` in seconds, rounded to the millisecond, for log fields.
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_the_millisecond() {
        assert_eq!(duration(Duration::new(8, 52_468_548)), "8s 52ms");
        assert_eq!(duration(Duration::new(8, 52_500_000)), "8s 53ms");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_nanos(400_000)), "0s");
        assert_eq!(seconds(Duration::new(8, 52_468_548)), 8.052);
    }
}
