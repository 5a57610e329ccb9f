//! Value types of the configuration files: durations, sizes, counts,
//! fractions and the small enums, each validated while it is deserialized so
//! that a bad value is reported with the file, line and key it came from.
//! A value of the wrong type says what is expected in the user's words
//! (`expected a duration like "5s"`), never in Rust's (`expected u64`).
//!
//! Every duration, size and count carries its allowed range in its type
//! (`Dur<1, HOUR>` is 1ms to 1h): a value out of range is refused at load with
//! the range in the message, so nothing the configuration says can overflow
//! the host's arithmetic at run time. The ranges are listed in
//! docs/configuration.md.
//!
//! Sizes are parsed here rather than with a crate: the accepted grammar is a
//! dozen lines (a number and one of `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`),
//! and owning it lets the error say exactly what is accepted.

pub use super::lists::{EnvTable, List, ListOf};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Milliseconds in a second, for the ranges of durations.
pub const SEC: u64 = 1000;
/// Milliseconds in an hour.
pub const HOUR: u64 = 3600 * SEC;
/// Milliseconds in a day.
pub const DAY: u64 = 24 * HOUR;
/// Milliseconds in a week.
pub const WEEK: u64 = 7 * DAY;
/// Bytes in a KiB, for the ranges of sizes.
pub const KIB: u64 = 1 << 10;
/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;
/// Bytes in a GiB.
pub const GIB: u64 = 1 << 30;

/// `at + d`, or a century after `at` when an `Instant` cannot hold that (and
/// `at` itself on a clock that cannot even go a century further: a deadline
/// passed rather than a panic). Durations from the configuration are bounded
/// at load; this keeps the arithmetic of deadlines from panicking anyway.
pub fn instant_after(at: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}

/// `"must be between MIN and MAX"` when `v` is outside `min..=max`.
fn check_range<T: PartialOrd>(
    v: T,
    min: T,
    max: T,
    show: impl Fn(&T) -> String,
) -> Result<T, String> {
    if v < min || v > max {
        return Err(format!("must be between {} and {}", show(&min), show(&max)));
    }
    Ok(v)
}

/// A duration written as a string (`"250ms"`, `"5s"`, `"10m"`) between
/// `MIN_MS` and `MAX_MS` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur<const MIN_MS: u64, const MAX_MS: u64>(pub Duration);

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de> for Dur<MIN_MS, MAX_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = d.deserialize_str(Text(DURATION))?;
        bounded_duration(&s, MIN_MS, MAX_MS)
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

/// What a duration looks like, for type errors.
const DURATION: &str = "a duration like \"5s\"";

/// A string, with `expecting` in the user's words when the value is not one.
struct Text(&'static str);

impl Visitor<'_> for Text {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Parses `"250ms"`, `"5s"`, `"1m 30s"`; the error says what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}): write e.g. \"250ms\", \"5s\", \"10m\""))
}

/// Parses a duration that must lie between `min_ms` and `max_ms` milliseconds.
fn bounded_duration(s: &str, min_ms: u64, max_ms: u64) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
    check_range(d, min, max, |d| humantime::format_duration(*d).to_string())
        .map_err(|range| format!("invalid duration {s:?}: {range}"))
}

/// A duration that may be switched off: `"off"` or a duration string between
/// `MIN_MS` and `MAX_MS` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffOr<const MIN_MS: u64, const MAX_MS: u64> {
    /// `"off"`.
    Off,
    /// A duration.
    On(Duration),
}

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de> for OffOr<MIN_MS, MAX_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = d.deserialize_str(Text("a duration like \"5s\", or \"off\""))?;
        if s.trim() == "off" {
            return Ok(OffOr::Off);
        }
        bounded_duration(&s, MIN_MS, MAX_MS)
            .map(OffOr::On)
            .map_err(|e| de::Error::custom(format!("{e}, or \"off\"")))
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> OffOr<MIN_MS, MAX_MS> {
    /// The duration, or `None` when off.
    pub fn get(self) -> Option<Duration> {
        match self {
            OffOr::Off => None,
            OffOr::On(d) => Some(d),
        }
    }
}

/// A size in bytes between `MIN` and `MAX`: a string like `"64MiB"` or a
/// plain integer of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size<const MIN: u64, const MAX: u64>(pub u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Size<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = d.deserialize_any(SizeVisitor)?;
        bounded_size(n, MIN, MAX)
            .map(Size)
            .map_err(de::Error::custom)
    }
}

/// What a size looks like, for type errors.
const SIZE: &str = "a size like \"64MiB\" or a number of bytes";

/// A size as written: a string or a number of bytes, not yet range-checked.
struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SIZE)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        size_of_integer(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).map_err(E::custom)
    }
}

fn size_of_integer(v: i64) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("invalid size {v}: must not be negative"))
}

fn bounded_size(n: u64, min: u64, max: u64) -> Result<u64, String> {
    check_range(n, min, max, |n| format_size(*n))
        .map_err(|range| format!("invalid size {}: {range}", format_size(n)))
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
        "KiB" => KIB,
        "MB" => 1000 * 1000,
        "MiB" => MIB,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => GIB,
        _ => return Err(bad_size(s)),
    };
    num.checked_mul(mult).ok_or_else(|| bad_size(s))
}

fn bad_size(s: &str) -> String {
    format!("invalid size {s:?}: write e.g. \"64MiB\", \"512KiB\", \"1GB\" or a number of bytes")
}

/// `n` bytes in the largest binary unit that holds it exactly: `"64MiB"`,
/// `"1536KiB"`, `"1000B"`.
pub fn format_size(n: u64) -> String {
    let (div, unit) = [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")]
        .into_iter()
        .find(|(d, _)| n != 0 && n.is_multiple_of(*d))
        .unwrap_or((1, "B"));
    format!("{}{unit}", n / div)
}

/// A size that may be switched off: `"off"` or a size between `MIN` and `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeOrOff<const MIN: u64, const MAX: u64>(pub Option<u64>);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for SizeOrOff<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeOrOffVisitor::<MIN, MAX>)
    }
}

/// A size, a number of bytes or `"off"`, range-checked.
struct SizeOrOffVisitor<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> SizeOrOffVisitor<MIN, MAX> {
    fn bounded<E: de::Error>(n: Result<u64, String>) -> Result<SizeOrOff<MIN, MAX>, E> {
        n.and_then(|n| bounded_size(n, MIN, MAX))
            .map(|n| SizeOrOff(Some(n)))
            .map_err(|e| E::custom(format!("{e}, or \"off\"")))
    }
}

impl<const MIN: u64, const MAX: u64> Visitor<'_> for SizeOrOffVisitor<MIN, MAX> {
    type Value = SizeOrOff<MIN, MAX>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size like \"64MiB\", a number of bytes, or \"off\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::bounded(size_of_integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::bounded(Ok(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.trim() == "off" {
            return Ok(SizeOrOff(None));
        }
        Self::bounded(parse_size(v))
    }
}

/// A count (of messages, reports, slots, restarts) between `MIN` and `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count<const MIN: u64, const MAX: u64>(pub u64);

/// The largest `u32`, as a bound of a [`Count`].
pub const U32: u64 = u32::MAX as u64;

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Count<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor::<MIN, MAX>)
    }
}

/// A whole number, range-checked.
struct CountVisitor<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Visitor<'_> for CountVisitor<MIN, MAX> {
    type Value = Count<MIN, MAX>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_i128(i128::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_i128(i128::from(v))
    }
    fn visit_i128<E: de::Error>(self, n: i128) -> Result<Self::Value, E> {
        check_range(n, MIN.into(), MAX.into(), i128::to_string)
            .map(|n| Count(u64::try_from(n).expect("within MIN..=MAX")))
            .map_err(|range| E::custom(format!("invalid number {n}: {range}")))
    }
}

impl<const MIN: u64, const MAX: u64> Count<MIN, MAX> {
    /// The count as a `usize` (every `MAX` the configuration uses fits).
    pub fn get(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<const MIN: u64> Count<MIN, U32> {
    /// The count as a `u32`, which its range fits.
    pub fn get_u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
}

impl Count<1, U32> {
    /// The count, which is at least 1.
    pub fn non_zero(self) -> std::num::NonZeroU32 {
        std::num::NonZeroU32::new(self.get_u32()).unwrap_or(std::num::NonZeroU32::MIN)
    }
}

/// A fraction in `0.0..=1.0` (restart jitter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(Number("a number between 0.0 and 1.0"))?;
        if (0.0..=1.0).contains(&v) {
            Ok(Fraction(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid fraction {v}: must be between 0.0 and 1.0"
            )))
        }
    }
}

/// A number, integer or not, with `expecting` in the user's words.
struct Number(&'static str);

impl Visitor<'_> for Number {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
}

/// A backoff multiplier, at least 1.0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Multiplier(pub f64);

impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(Number("a number between 1.0 and 1000.0"))?;
        if v.is_finite() && (1.0..=1000.0).contains(&v) {
            Ok(Multiplier(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid multiplier {v}: must be between 1.0 and 1000.0"
            )))
        }
    }
}

/// One of a few words, with `expecting` listing them.
struct Word(&'static [&'static str]);

impl Visitor<'_> for Word {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            [a, b] => write!(f, "`{a}` or `{b}`"),
            names => write!(f, "one of `{}`", names.join("`, `")),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Deserializes a word enum from its kebab-case names (the ones it
/// serializes to); another word is an `unknown variant`, another type says
/// which words are accepted.
macro_rules! words {
    ($t:ident { $($v:ident = $name:literal),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($name),*];
                match d.deserialize_str(Word(NAMES))?.as_str() {
                    $($name => Ok($t::$v),)*
                    other => Err(de::Error::unknown_variant(other, NAMES)),
                }
            }
        }
    };
}

words!(RestartType { Permanent = "permanent", Transient = "transient", Temporary = "temporary" });
words!(BackoffKind { Immediate = "immediate", Fixed = "fixed", Exponential = "exponential" });
words!(Strategy { OneForOne = "one-for-one", OneForAll = "one-for-all", RestForOne = "rest-for-one" });
words!(AutoShutdown { Never = "never", AnySignificant = "any-significant", AllSignificant = "all-significant" });
words!(DirMode { Ro = "ro", Rw = "rw" });

/// `config = { … }`: wasi:config serves strings, so each value is a string,
/// number, boolean or date, kept as its text; a table or array is refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigTable(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for ConfigTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ConfigVisitor)
    }
}

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = ConfigTable;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of values like { greeting = \"hi\" }")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ConfigTable, A::Error> {
        let mut table = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            // Checked inside the value, so that an error points at its line.
            let value = map.next_value_seed(ConfigEntry(&key))?;
            table.insert(key, value);
        }
        Ok(ConfigTable(table))
    }
}

/// The value of the `config` entry named `.0`, as text.
struct ConfigEntry<'k>(&'k str);

impl<'de> de::DeserializeSeed<'de> for ConfigEntry<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        config_value(self.0, toml::Value::deserialize(d)?).map_err(de::Error::custom)
    }
}

fn config_value(key: &str, v: toml::Value) -> Result<String, String> {
    Ok(match v {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(format!(
                "value of {key:?} must be a string, number or boolean (wasi:config serves strings)"
            ));
        }
    })
}

/// A guest path of `dirs`, which must be absolute (read with
/// `#[serde(deserialize_with)]`).
pub fn absolute_guest_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let guest = d.deserialize_str(Text("an absolute guest path like \"/data\""))?;
    if !guest.starts_with('/') {
        return Err(de::Error::custom(format!(
            "guest path {guest:?} must be absolute (start with /)"
        )));
    }
    Ok(guest)
}

/// OTP restart types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

    #[test]
    fn sizes_are_shown_in_the_largest_exact_unit() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(4 << 30), "4GiB");
        assert_eq!(format_size(1536 << 10), "1536KiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
    }

    #[test]
    fn hole04_out_of_range_values_name_the_range() {
        assert_eq!(
            bounded_duration("2h", 1, HOUR).unwrap_err(),
            "invalid duration \"2h\": must be between 1ms and 1h"
        );
        assert_eq!(
            bounded_duration("1h", 1, HOUR),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(
            bounded_size(5 * GIB, 64 * KIB, 4 * GIB).unwrap_err(),
            "invalid size 5GiB: must be between 64KiB and 4GiB"
        );
    }

    #[test]
    fn hole04_instant_after_never_panics() {
        let now = Instant::now();
        let sec = Duration::from_secs(1);
        assert_eq!(instant_after(now, sec), now + sec);
        let far = instant_after(now, Duration::MAX);
        assert!(
            far > now + Duration::from_secs(50 * 365 * 24 * 3600),
            "far in the future"
        );
    }
}
