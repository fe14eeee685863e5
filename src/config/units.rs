//! Text forms of durations, sizes and rates, as written in relay.toml.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::RateLimit;

/// A size as written: an integer number of bytes or a string like `"1MiB"`.
#[derive(Debug, Clone)]
pub(super) enum RawSize {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: integer bytes or a string like \"1MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"500ms"`, `"30s"`, `"5m"`, `"72h"`, `"7d"` (humantime syntax).
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("invalid duration {s:?} (use e.g. \"500ms\", \"30s\", \"5m\", \"72h\", \"7d\")")
    })
}

/// Integer bytes, or a string such as `"1MiB"`, `"512KiB"`, `"10GiB"`, `"4096"`.
pub(super) fn parse_size(v: &RawSize) -> Result<u64, String> {
    match v {
        RawSize::Int(n) => {
            u64::try_from(*n).map_err(|_| format!("invalid size {n}: must not be negative"))
        }
        RawSize::Text(s) => s
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| {
                format!(
                    "invalid size {s:?} (use integer bytes or e.g. \"64KiB\", \"1MiB\", \"10GiB\")"
                )
            }),
    }
}

/// `"N/s"`, `"N/m"` or `"N/h"` with N >= 1.
pub(super) fn parse_rate(s: &str) -> Result<RateLimit, String> {
    let bad =
        || format!("invalid rate {s:?} (use e.g. \"50/s\", \"600/m\", \"1000/h\"; at least 1)");
    let (count, unit) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(bad());
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok(RateLimit { count, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn bad_durations_name_the_value_and_the_syntax() {
        for bad in ["10x", "", "10", "-1s", "s", "99999999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.starts_with("invalid duration"), "{e}");
            assert!(e.contains("\"30s\""), "{e}");
        }
        assert_eq!(
            parse_duration("10x").unwrap_err(),
            r#"invalid duration "10x" (use e.g. "500ms", "30s", "5m", "72h", "7d")"#
        );
    }

    #[test]
    fn sizes_accept_integers_and_binary_units() {
        assert_eq!(parse_size(&RawSize::Int(4096)), Ok(4096));
        assert_eq!(parse_size(&RawSize::Text("1MiB".into())), Ok(1 << 20));
        assert_eq!(parse_size(&RawSize::Text("10GiB".into())), Ok(10 << 30));
        assert_eq!(parse_size(&RawSize::Text("512 KiB".into())), Ok(512 << 10));
        assert_eq!(parse_size(&RawSize::Text("2048".into())), Ok(2048));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(parse_size(&RawSize::Int(-1)).is_err());
        for bad in ["", "10x", "MiB", "1.2.3MiB", "-5MiB"] {
            let e = parse_size(&RawSize::Text(bad.into())).unwrap_err();
            assert!(e.starts_with("invalid size"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rates_accept_per_second_minute_and_hour() {
        let r = parse_rate("50/s").unwrap();
        assert_eq!((r.count, r.per), (50, Duration::from_secs(1)));
        let r = parse_rate("600/m").unwrap();
        assert_eq!((r.count, r.per), (600, Duration::from_secs(60)));
        let r = parse_rate("1000/h").unwrap();
        assert_eq!((r.count, r.per), (1000, Duration::from_secs(3600)));
    }

    #[test]
    fn bad_rates_are_refused() {
        for bad in [
            "0/s",
            "50",
            "50/d",
            "/s",
            "x/s",
            "-1/s",
            "50/",
            "99999999999/s",
            "",
        ] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.starts_with("invalid rate"), "{bad:?}: {e}");
        }
    }
}
