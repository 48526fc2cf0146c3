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

/// The CSS basic colour keywords (CSS Color 3 §4.1) and `orange`, `transparent`.
const NAMED_COLOURS: &[(&str, &str)] = &[
    ("black", "000000"),
    ("silver", "c0c0c0"),
    ("gray", "808080"),
    ("grey", "808080"),
    ("white", "ffffff"),
    ("maroon", "800000"),
    ("red", "ff0000"),
    ("purple", "800080"),
    ("fuchsia", "ff00ff"),
    ("magenta", "ff00ff"),
    ("green", "008000"),
    ("lime", "00ff00"),
    ("olive", "808000"),
    ("yellow", "ffff00"),
    ("navy", "000080"),
    ("blue", "0000ff"),
    ("teal", "008080"),
    ("aqua", "00ffff"),
    ("cyan", "00ffff"),
    ("orange", "ffa500"),
    ("transparent", "00000000"),
];

/// A CSS `rgb()`/`rgba()` channel: `0..=255` or a percentage.
fn css_channel(s: &str) -> Option<u8> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => parse_decimal(p)? * 2.55,
        None => parse_decimal(s)?,
    };
    (0.0..=255.0).contains(&v).then(|| v.round() as u8)
}

/// A CSS alpha: `0..=1` or a percentage.
fn css_alpha(s: &str) -> Option<u8> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => parse_decimal(p)? / 100.0,
        None => parse_decimal(s)?,
    };
    (0.0..=1.0).contains(&v).then(|| (v * 255.0).round() as u8)
}

/// `rgb(r,g,b)`, `rgba(r,g,b,a)`, and the CSS4 space form `rgb(r g b / a)`.
fn css_rgb(s: &str) -> Option<String> {
    let inner = s
        .strip_prefix("rgba(")
        .or_else(|| s.strip_prefix("rgb("))?
        .strip_suffix(')')?;
    let (channels, slash_alpha) = match inner.split_once('/') {
        Some((c, a)) => (c, Some(a)),
        None => (inner, None),
    };
    let parts: Vec<&str> = if channels.contains(',') {
        channels.split(',').collect()
    } else {
        channels.split_whitespace().collect()
    };
    let (rgb, alpha): ([&str; 3], Option<&str>) = match (parts.as_slice(), slash_alpha) {
        (&[r, g, b], a) => ([r, g, b], a),
        (&[r, g, b, a], None) => ([r, g, b], Some(a)),
        _ => return None,
    };
    let [r, g, b] = [
        css_channel(rgb[0])?,
        css_channel(rgb[1])?,
        css_channel(rgb[2])?,
    ];
    let a = match alpha {
        Some(a) => css_alpha(a)?,
        None => 255,
    };
    Some(if a == 255 {
        format!("#{r:02x}{g:02x}{b:02x}")
    } else {
        format!("#{r:02x}{g:02x}{b:02x}{a:02x}")
    })
}

/// Parses a colour into lowercase `#rrggbb` or `#rrggbbaa` (alpha kept only when not
/// opaque): `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, the same without `#`, `rgb()`/`rgba()`
/// (commas or CSS4 spaces and `/ alpha`; channels 0..=255 or %, alpha 0..=1 or %), or a
/// CSS basic colour name (black, white, red, ..., orange, transparent).
pub fn parse_color(s: &str) -> Option<String> {
    let lower = s.trim().to_ascii_lowercase();
    if lower.starts_with("rgb") {
        return css_rgb(&lower);
    }
    let hex = NAMED_COLOURS
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| lower.strip_prefix('#').unwrap_or(&lower));
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
