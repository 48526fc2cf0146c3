//! The size and duration spellings of the config file: [`ByteSize`] (`1048576`, `"512KiB"`,
//! `"256MiB"`, `"1MB"`) and [`Dur`] (`30` seconds, `"500ms"`, `"5m"`, `"1h30m"`, `"7d"`), with
//! their serde.
//!
//! Owns parsing these spellings and saying what is wrong with one ([`UnitError`], the
//! offending text in the message). It must not know any config key: the key path of a bad
//! value is added by whoever deserializes the section.

use serde::Deserialize;
use std::time::Duration;

/// Why a size or a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("size {0:?} is not a number with an optional unit like \"256MiB\"")]
    SizeNotANumber(String),
    #[error("size {0:?} has unknown unit {1:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB)")]
    SizeUnit(String, String),
    #[error("empty duration")]
    EmptyDuration,
    #[error("duration {0:?} lacks a unit after its last number")]
    DurationWithoutUnit(String),
    #[error("duration {0:?} is not like \"30s\", \"5m\" or \"1h30m\"")]
    DurationShape(String),
    #[error("duration {0:?} has a number that is too large")]
    DurationTooLarge(String),
    #[error("duration {0:?} has unknown unit {1:?} (ms, s, m, h, d)")]
    DurationUnit(String, String),
}

/// A byte size written as `1048576`, `"512KiB"`, `"256MiB"`, `"10GiB"`, `"1MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n << 10)
    }
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }
}

/// A duration written as seconds (`30`) or `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(n: u64) -> Dur {
        Dur(Duration::from_secs(n))
    }
}

/// What a size or duration key holds before it is read: a bare number or a spelled value.
/// (Its name shows in serde's message for a value that is neither: `... untagged enum Raw`.)
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    N(u64),
    S(String),
}

impl Raw {
    fn read<'de, D: serde::Deserializer<'de>, T>(
        d: D,
        number: impl FnOnce(u64) -> T,
        text: impl FnOnce(&str) -> Result<T, UnitError>,
    ) -> Result<T, D::Error> {
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(number(n)),
            Raw::S(s) => text(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Raw::read(d, ByteSize, |s| parse_size(s).map(ByteSize))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Raw::read(d, Dur::secs, |s| parse_duration(s).map(Dur))
    }
}

/// Parses a size with an optional binary (`KiB`, `MiB`, `GiB`, `TiB`) or decimal (`KB`..) unit.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| UnitError::SizeNotANumber(s.into()))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(UnitError::SizeUnit(s.into(), other.into())),
    };
    Ok((n * mult) as u64)
}

/// Parses `"90"`, `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"7d"`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| UnitError::DurationWithoutUnit(s.into()))?;
        if digits == 0 {
            return Err(UnitError::DurationShape(s.into()));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| UnitError::DurationTooLarge(s.into()))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let too_large = || UnitError::DurationTooLarge(s.into());
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_large)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_large)?),
            "d" => Duration::from_secs(n.checked_mul(86400).ok_or_else(too_large)?),
            other => return Err(UnitError::DurationUnit(s.into(), other.into())),
        };
        total = total.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(total)
}
