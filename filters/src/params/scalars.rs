//! Plain scalar spellings shared by the parameters and the URL translators: whole and
//! decimal numbers, times, bitrates, colours, booleans and tokens, each parsed strictly
//! (`Option`, no error type) and, where a canonical form exists, written back. It must not
//! know parameter names, ranges or error messages: those are `checked`'s.

use std::fmt;

/// A number in 0.0..=1.0 as thousandths.
pub(super) fn parse_unit_milli(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if !(0.0..=1.0).contains(&v) {
        return None;
    }
    Some((v * 1000.0).round() as u16)
}

/// Writes thousandths as a shortest decimal: 500 → `0.5`, 1000 → `1`, 1500 → `1.5`.
pub(super) fn write_milli(f: &mut impl fmt::Write, v: u64) -> fmt::Result {
    let (int, frac) = (v / 1000, v % 1000);
    write!(f, "{int}")?;
    if frac != 0 {
        let s = format!("{frac:03}");
        write!(f, ".{}", s.trim_end_matches('0'))?;
    }
    Ok(())
}

/// Parses a plain decimal unsigned integer (no sign, no spaces, at most 12 digits).
pub(crate) fn parse_uint(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a plain decimal number (digits with at most one `.`).
pub(crate) fn parse_decimal(s: &str) -> Option<f64> {
    if s.is_empty()
        || s.len() > 16
        || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || s.bytes().filter(|&b| b == b'.').count() > 1
        || s == "."
    {
        return None;
    }
    s.parse().ok()
}

/// Parses `90`, `90.5`, `90.5s`, `1m30s`, `1m`, `1.5m`, `500ms` into milliseconds.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let secs_to_ms = |v: &str| -> Option<f64> { parse_decimal(v).map(|x| x * 1000.0) };
    let ms = if let Some(ms) = s.strip_suffix("ms") {
        parse_decimal(ms)?
    } else if let Some((m, rest)) = s.split_once('m') {
        let minutes = parse_decimal(m)? * 60_000.0;
        let rest = rest.strip_suffix('s').unwrap_or(rest);
        if rest.is_empty() {
            minutes
        } else {
            minutes + secs_to_ms(rest)?
        }
    } else {
        secs_to_ms(s.strip_suffix('s').unwrap_or(s))?
    };
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return None;
    }
    Some(ms.round() as u64)
}

/// Formats milliseconds as canonical seconds: `90500` → `90.5s`.
pub fn format_time(ms: u64) -> String {
    let mut s = String::new();
    let _ = write_milli(&mut s, ms);
    s.push('s');
    s
}

/// Parses `2M`, `2.5M`, `800k`, `800000` into bits per second.
pub fn parse_bitrate(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1_000.0),
        b'm' | b'M' => (&s[..s.len() - 1], 1_000_000.0),
        _ => (s, 1.0),
    };
    let v = parse_decimal(num)? * mul;
    (v.is_finite() && v < 1e12).then(|| v.round() as u64)
}

/// Formats bits per second as `2M`, `800k` or a plain number.
// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::manual_is_multiple_of)]
pub fn format_bitrate(bps: u64) -> String {
    if bps % 1_000_000 == 0 {
        format!("{}M", bps / 1_000_000)
    } else if bps % 1_000 == 0 {
        format!("{}k", bps / 1_000)
    } else {
        bps.to_string()
    }
}

/// Parses a background colour into lowercase `#rrggbb` or `#rrggbbaa` (alpha kept only
/// when not opaque): `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, the same without `#`, or a
/// few names (black, white, transparent, red, green, blue, gray/grey).
pub fn parse_color(s: &str) -> Option<String> {
    let lower = s.trim().to_ascii_lowercase();
    let hex = match lower.as_str() {
        "black" => "000000",
        "white" => "ffffff",
        "transparent" => "00000000",
        "red" => "ff0000",
        "green" => "008000",
        "blue" => "0000ff",
        "gray" | "grey" => "808080",
        other => other.strip_prefix('#').unwrap_or(other),
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let expanded: String = match hex.len() {
        3 | 4 => hex.chars().flat_map(|c| [c, c]).collect(),
        6 | 8 => hex.to_string(),
        _ => return None,
    };
    let trimmed = expanded.strip_suffix("ff").filter(|_| expanded.len() == 8);
    Some(format!("#{}", trimmed.unwrap_or(&expanded)))
}

/// Parses `true|false|1|0|yes|no|on|off`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `[A-Za-z0-9_-]{1,max}`.
pub(crate) fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
