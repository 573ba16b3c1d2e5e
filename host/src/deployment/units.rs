//! The value types a deployment file writes as text: byte sizes (`"64MiB"`), durations
//! (`"500ms"`) and rates (`"20/s"`). Each refuses anything ambiguous with a message
//! that shows the accepted forms.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A number of bytes, written as an integer or as text with a unit: `"512KiB"`,
/// `"64MiB"`, `"1GiB"` (powers of 1024) or `"1MB"` (powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n * 1024)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"64MiB"`-style text.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let expected = "write a size like \"512KiB\", \"64MiB\", \"1GiB\" or a number of bytes";
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid size {text:?}: {expected}"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => return Err(format!("invalid size {text:?}: unknown unit; {expected}")),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", bytes >> shift);
            }
        }
        write!(f, "{bytes}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a size like \"64MiB\" or a whole number of bytes")
        })? {
            Raw::Bytes(bytes) => Ok(ByteSize(bytes)),
            Raw::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// A span of time written as text: `"250ms"`, `"2s"`, `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timeout(pub Duration);

impl Timeout {
    /// Parses `"500ms"`-style text.
    pub fn parse(text: &str) -> Result<Timeout, String> {
        humantime::parse_duration(text.trim())
            .map(Timeout)
            .map_err(|err| {
                format!(
                    "invalid duration {text:?} ({err}): write it like \"500ms\", \"2s\" or \"1m\""
                )
            })
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a duration in quotes, like \"500ms\" or \"2s\"")
        })?;
        Timeout::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How often something may happen: a count per period, written `"20/s"`, `"600/min"`,
/// `"1000/h"` or with any duration as the period (`"5/10s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many in each period (at least 1).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// The most a rate may be: a finer one would refill faster than a clock tick.
    pub const MAX_PER_SECOND: u32 = 1_000_000;

    /// Parses `"20/s"`-style text.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let expected = "write a rate like \"20/s\", \"600/min\", \"1000/h\" or \"5/10s\"";
        let Some((count, period)) = text.trim().split_once('/') else {
            return Err(format!("invalid rate {text:?}: {expected}"));
        };
        let count: u32 = match count.trim().parse() {
            Ok(count) if count > 0 => count,
            _ => {
                return Err(format!(
                    "invalid rate {text:?}: the count must be a whole number from 1; {expected}"
                ))
            }
        };
        let per = match period.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| {
                format!("invalid rate {text:?}: unknown period {other:?}; {expected}")
            })?,
        };
        if per.is_zero() {
            return Err(format!(
                "invalid rate {text:?}: the period must be longer than 0s"
            ));
        }
        let rate = Rate { count, per };
        if rate.per_second() > f64::from(Rate::MAX_PER_SECOND) {
            return Err(format!(
                "rate {text:?} is more than {} per second",
                Rate::MAX_PER_SECOND
            ));
        }
        Ok(rate)
    }

    /// The rate in events per second.
    pub fn per_second(self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }

    /// How long between two events at this rate (how fast one more is allowed).
    pub fn interval(self) -> Duration {
        self.per / self.count
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a rate in quotes, like \"20/s\" or \"600/min\"")
        })?;
        Rate::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("64 mib"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("512KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("2MB"), Ok(ByteSize(2_000_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "MiB",
            "64 parsecs",
            "-1MiB",
            "1.5GiB",
            "99999999999999999999GiB",
        ] {
            let err = ByteSize::parse(bad).expect_err(bad);
            assert!(err.contains(bad.trim()), "{err}");
        }
        assert!(ByteSize::parse("64XB")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(ByteSize::parse("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_display_in_their_largest_exact_unit() {
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        assert_eq!(ByteSize::kib(1536).to_string(), "1536KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn durations_parse_and_refuse_garbage() {
        assert_eq!(
            Timeout::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(Timeout::parse("2s").unwrap().0, Duration::from_secs(2));
        assert_eq!(Timeout::parse("1m 30s").unwrap().0, Duration::from_secs(90));
        let err = Timeout::parse("soon").unwrap_err();
        assert!(err.contains("\"soon\"") && err.contains("500ms"), "{err}");
        assert!(Timeout::parse("10").is_err(), "a bare number has no unit");
    }

    #[test]
    fn rates_parse_with_named_or_written_periods() {
        let rate = Rate::parse("20/s").unwrap();
        assert_eq!((rate.count, rate.per), (20, Duration::from_secs(1)));
        assert_eq!(Rate::parse("600/min").unwrap().per_second(), 10.0);
        assert_eq!(Rate::parse("3600 / h").unwrap().per_second(), 1.0);
        assert_eq!(
            Rate::parse("5/10s").unwrap().interval(),
            Duration::from_secs(2)
        );
        for bad in [
            "20",
            "0/s",
            "-1/s",
            "x/s",
            "20/fortnight",
            "20/0s",
            "2000000/s",
        ] {
            let err = Rate::parse(bad).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }
}
