//! Value types of the configuration files: durations, sizes, fractions and the
//! small enums, each validated while it is deserialized so that a bad value is
//! reported with the file, line and key it came from.
//!
//! Sizes are parsed here rather than with a crate: the accepted grammar is a
//! dozen lines (a number and one of `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`),
//! and owning it lets the error say exactly what is accepted.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A duration written as a string: `"250ms"`, `"5s"`, `"10m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// Parses `"250ms"`, `"5s"`, `"1m 30s"`; the error says what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}): write e.g. \"250ms\", \"5s\", \"10m\""))
}

/// A duration that may be switched off: `"off"` or a duration string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffOr {
    /// `"off"`.
    Off,
    /// A duration.
    On(Duration),
}

impl<'de> Deserialize<'de> for OffOr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "off" {
            return Ok(OffOr::Off);
        }
        match parse_duration(&s) {
            Ok(d) if d.is_zero() => Err(de::Error::custom(format!(
                "invalid interval {s:?}: must be more than zero, or \"off\""
            ))),
            Ok(d) => Ok(OffOr::On(d)),
            Err(e) => Err(de::Error::custom(format!("{e}, or \"off\""))),
        }
    }
}

impl OffOr {
    /// The duration, or `None` when off.
    pub fn get(self) -> Option<Duration> {
        match self {
            OffOr::Off => None,
            OffOr::On(d) => Some(d),
        }
    }
}

/// A size in bytes: a string like `"64MiB"` or a plain integer of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"64MiB"`, `"512KiB"`, `"1GB"`, `"100"` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.replace('_', "").parse().map_err(|_| bad_size(s))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        _ => return Err(bad_size(s)),
    };
    num.checked_mul(mult).ok_or_else(|| bad_size(s))
}

fn bad_size(s: &str) -> String {
    format!("invalid size {s:?}: write e.g. \"64MiB\", \"512KiB\", \"1GB\" or a number of bytes")
}

/// A size that may be switched off: `"off"` or a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeOrOff(pub Option<u64>);

impl<'de> Deserialize<'de> for SizeOrOff {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = toml::Value::deserialize(d)?;
        match v {
            toml::Value::String(s) if s.trim() == "off" => Ok(SizeOrOff(None)),
            toml::Value::String(s) => parse_size(&s)
                .map(|n| SizeOrOff(Some(n)))
                .map_err(|e| de::Error::custom(format!("{e}, or \"off\""))),
            toml::Value::Integer(n) if n >= 0 => Ok(SizeOrOff(Some(n as u64))),
            other => Err(de::Error::custom(format!(
                "invalid size {other}: write e.g. \"256MiB\", or \"off\""
            ))),
        }
    }
}

/// A fraction in `0.0..=1.0` (restart jitter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if (0.0..=1.0).contains(&v) {
            Ok(Fraction(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid fraction {v}: must be between 0.0 and 1.0"
            )))
        }
    }
}

/// A backoff multiplier, at least 1.0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Multiplier(pub f64);

impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && (1.0..=1000.0).contains(&v) {
            Ok(Multiplier(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid multiplier {v}: must be between 1.0 and 1000.0"
            )))
        }
    }
}

/// OTP restart types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartType {
    /// Always restarted.
    Permanent,
    /// Restarted only after a crash, not after a normal exit.
    Transient,
    /// Never restarted.
    Temporary,
}

/// How long to wait before a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackoffKind {
    /// Restart at once.
    Immediate,
    /// Wait `initial` every time.
    Fixed,
    /// `initial`, then times `multiplier` per consecutive crash, up to `max`.
    Exponential,
}

/// Group strategies (OTP names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Restart only the member that crashed.
    OneForOne,
    /// Restart every member.
    OneForAll,
    /// Restart the member that crashed and those started after it.
    RestForOne,
}

/// When a group stops because significant members exited (OTP `auto_shutdown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoShutdown {
    /// Never.
    Never,
    /// When any significant member exits normally.
    AnySignificant,
    /// When all significant members have exited normally.
    AllSignificant,
}

/// Access granted to a preopened directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirMode {
    /// Read-only.
    Ro,
    /// Read and write.
    Rw,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("64 parsecs").unwrap_err().contains("64MiB"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("soon").is_err());
    }
}
