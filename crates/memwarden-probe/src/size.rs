//! Sizes on the command line and in config: `512MiB`, `13GiB`, `1.5GB`, or plain bytes.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid size {input:?}: {why} (examples: 512MiB, 13GiB, 1.5GB, 4096)")]
pub struct SizeError {
    pub input: String,
    pub why: &'static str,
}

/// Parses a size into bytes. Binary (`KiB`, `MiB`, `GiB`, `TiB`) and decimal (`kB`/`KB`, `MB`,
/// `GB`, `TB`) units, an optional `B`, case-insensitive units, optional space before the unit.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |why| SizeError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err(if s.starts_with('-') {
            "sizes cannot be negative"
        } else {
            "no number"
        }));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(err("unknown unit")),
    };
    if let Ok(whole) = num.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| err("too large"));
    }
    let value: f64 = num.parse().map_err(|_| err("not a number"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(bytes.round() as u64)
}

/// A size for people: binary units with up to one decimal, `1.5 GiB`, `512 MiB`, `300 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value >= 100.0 || (value - value.round()).abs() < 0.05 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("13GiB"), Ok(13 << 30));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 gib"), Ok(2 << 30));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(parse_size("12XB").unwrap_err().why, "unknown unit");
        assert_eq!(
            parse_size("-3GiB").unwrap_err().why,
            "sizes cannot be negative"
        );
        assert_eq!(parse_size("").unwrap_err().why, "no number");
        assert_eq!(parse_size("1.2.3MB").unwrap_err().why, "not a number");
        assert_eq!(parse_size("99999999999TiB").unwrap_err().why, "too large");
        assert!(parse_size("12XB").unwrap_err().to_string().contains("12XB"));
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_size(300), "300 B");
        assert_eq!(format_size(512 << 20), "512 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(24 << 30), "24 GiB");
    }
}
