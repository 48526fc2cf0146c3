//! Range-checked parsing of one parameter value: each function here turns the client's
//! string into a field's value or a [`FilterError`] that quotes `name` (the spelling the
//! client used, e.g. `imheight`), the value and what is allowed. The `Param` table names one
//! of these for every spec field (`one_of` where it names none). They check a value on its
//! own, never against the mode (that is
//! [`TransformSpec::validate`](super::TransformSpec::validate)), and write nothing.

use super::scalars::{is_token, parse_bitrate, parse_bool, parse_color, parse_decimal};
use super::scalars::{parse_time, parse_uint};
use super::values::{Gravity, Spelled};
use super::{MAX_DURATION_MS, MAX_FILENAME, MAX_IMAGE_DIM, MAX_TIME_MS, MIN_DIM, MIN_DURATION_MS};
use crate::error::{quote, FilterError};

/// `parsed`, or "`name` `v` is invalid: expected `expected`".
fn or_invalid<T>(
    name: &str,
    v: &str,
    parsed: Option<T>,
    expected: &'static str,
) -> Result<T, FilterError> {
    parsed.ok_or_else(|| FilterError::invalid(name, v, expected))
}

/// Parses a float in `lo..=hi` (plain decimal spelling only).
fn parse_ranged_f32(
    param: &str,
    v: &str,
    lo: f32,
    hi: f32,
    range: &str,
) -> Result<f32, FilterError> {
    let x = parse_decimal(v).ok_or_else(|| FilterError::invalid(param, v, "a decimal number"))?;
    let x = x as f32;
    if !(lo..=hi).contains(&x) {
        return Err(FilterError::range(param, quote(v), range));
    }
    Ok(x)
}

fn parse_ranged_uint(param: &str, v: &str, lo: u64, hi: u64) -> Result<u64, FilterError> {
    let x = parse_uint(v).ok_or_else(|| FilterError::invalid(param, v, "a whole number"))?;
    if !(lo..=hi).contains(&x) {
        return Err(FilterError::range(param, x, &format!("{lo}..={hi}")));
    }
    Ok(x)
}

/// One of `T`'s spellings (keywords, gravity, quality, compression, crop).
pub(super) fn one_of<T: Spelled>(name: &str, v: &str) -> Result<T, FilterError> {
    or_invalid(name, v, T::parse_spelling(v), T::SPELLINGS)
}

/// `true|false|1|0|yes|no|on|off`.
pub(super) fn boolean(name: &str, v: &str) -> Result<bool, FilterError> {
    or_invalid(name, v, parse_bool(v), "true or false")
}

/// A whole number in `LO..=HI`.
pub(super) fn whole<const LO: u64, const HI: u64>(name: &str, v: &str) -> Result<u32, FilterError> {
    Ok(parse_ranged_uint(name, v, LO, HI)? as u32)
}

/// A width or height within the largest range of any mode (the mode's own limit is
/// checked by `validate`).
pub(super) fn dimension(name: &str, v: &str) -> Result<u32, FilterError> {
    let x = parse_ranged_uint(name, v, 0, u64::MAX)?;
    if !(u64::from(MIN_DIM)..=u64::from(MAX_IMAGE_DIM)).contains(&x) {
        return Err(FilterError::range(
            name,
            x,
            &format!("{MIN_DIM}..={MAX_IMAGE_DIM}"),
        ));
    }
    Ok(x as u32)
}

/// A start offset up to 10 minutes, in ms.
pub(super) fn start_time(name: &str, v: &str) -> Result<u64, FilterError> {
    let ms = or_invalid(name, v, parse_time(v), "a time like 5s, 90.5s, 1m30s or 90")?;
    if ms > MAX_TIME_MS {
        return Err(FilterError::range(name, quote(v), "0s..=10m"));
    }
    Ok(ms)
}

/// A clip length of 1 s..=10 min, in ms.
pub(super) fn clip_length(name: &str, v: &str) -> Result<u64, FilterError> {
    let ms = or_invalid(name, v, parse_time(v), "a duration like 5s, 1m30s or 90")?;
    if !(MIN_DURATION_MS..=MAX_DURATION_MS).contains(&ms) {
        return Err(FilterError::range(
            name,
            quote(v),
            "1s..=60s (up to 10m as an async job)",
        ));
    }
    Ok(ms)
}

/// A derivative name, `[A-Za-z0-9_-]{1,64}` (whether it is configured is `resolve`'s).
pub(super) fn derivative_name(name: &str, v: &str) -> Result<String, FilterError> {
    if !is_token(v, 64) {
        return Err(FilterError::invalid(
            name,
            v,
            "a derivative name of 1..=64 letters, digits, '-' or '_'",
        ));
    }
    Ok(v.to_string())
}

/// A gravity; `face` is Cloudflare's and needs a face-detection model this node does not
/// carry, so it is refused with that reason rather than as a misspelling.
pub(super) fn gravity_value(name: &str, v: &str) -> Result<Gravity, FilterError> {
    if v.eq_ignore_ascii_case("face") {
        return Err(FilterError::Unavailable {
            param: name.to_string(),
            value: "face".into(),
            reason: "face detection needs a vision model, which this node does not run; use \
                     gravity=auto (saliency) or a focal point XxY",
        });
    }
    one_of(name, v)
}

/// An HLS part: `poster` or a segment number 0..=99999, written without leading zeros.
/// `foreground` is Cloudflare's image segmentation, refused with its reason.
pub(super) fn hls_part(name: &str, v: &str) -> Result<String, FilterError> {
    if v.eq_ignore_ascii_case("foreground") {
        return Err(FilterError::Unavailable {
            param: name.to_string(),
            value: "foreground".into(),
            reason: "background removal needs a segmentation model (Cloudflare uses BiRefNet), \
                     which this node does not run",
        });
    }
    // Playlists name segments `N.ts` (players that check extensions want one); the same part.
    if v == "poster" || v == "poster.jpg" {
        return Ok("poster".to_string());
    }
    let n = v.strip_suffix(".ts").unwrap_or(v);
    let n = parse_ranged_uint(name, n, 0, 99_999)
        .map_err(|_| FilterError::invalid(name, v, "a segment number 0..=99999 or poster"))?;
    Ok(n.to_string())
}

/// A playback speed factor 0.25..=4.
pub(super) fn speed_factor(name: &str, v: &str) -> Result<f32, FilterError> {
    parse_ranged_f32(name, v, 0.25, 4.0, "0.25..=4")
}

/// A colour adjustment factor 0..=10 (`brightness`, `contrast`, `gamma`, `saturation`: 1 is
/// no change).
pub(super) fn adjust_factor(name: &str, v: &str) -> Result<f32, FilterError> {
    parse_ranged_f32(name, v, 0.0, 10.0, "0..=10 (1 = no change)")
}

/// A sharpen strength 0..=10.
pub(super) fn sharpen_strength(name: &str, v: &str) -> Result<f32, FilterError> {
    parse_ranged_f32(name, v, 0.0, 10.0, "0..=10")
}

/// Degrees in -360..=360, normalised to clockwise 0..=359.
pub(super) fn rotation(name: &str, v: &str) -> Result<u16, FilterError> {
    let neg = v.strip_prefix('-');
    let x = parse_ranged_uint(name, neg.unwrap_or(v), 0, 360)
        .map_err(|_| FilterError::range(name, quote(v), "-360..=360 degrees"))?;
    let deg = if neg.is_some() {
        (360 - x % 360) % 360
    } else {
        x % 360
    };
    Ok(deg as u16)
}

/// Bits per second, 10k..=100M.
pub(super) fn bits_per_second(name: &str, v: &str) -> Result<u64, FilterError> {
    let b = or_invalid(
        name,
        v,
        parse_bitrate(v),
        "a bitrate like 800k, 2M or 2500000",
    )?;
    if !(10_000..=100_000_000).contains(&b) {
        return Err(FilterError::range(name, quote(v), "10k..=100M"));
    }
    Ok(b)
}

/// A background colour, normalised to `#rrggbb` or `#rrggbbaa`.
pub(super) fn colour(name: &str, v: &str) -> Result<String, FilterError> {
    or_invalid(
        name,
        v,
        parse_color(v),
        "a colour like #rgb, #rrggbb, #rrggbbaa, rgb(240,40,145), rgba(240,40,145,0.5) or a CSS \
         name (black, white, red, orange, transparent, ...)",
    )
}

/// A `Content-Disposition` name, `[A-Za-z0-9_-]{1,120}`.
pub(super) fn file_name(name: &str, v: &str) -> Result<String, FilterError> {
    if v.len() > MAX_FILENAME {
        return Err(FilterError::range(
            name,
            format!("of {} characters", v.len()),
            "1..=120 characters",
        ));
    }
    if !is_token(v, MAX_FILENAME) {
        return Err(FilterError::invalid(
            name,
            v,
            "1..=120 letters, digits, '-' or '_'",
        ));
    }
    Ok(v.to_string())
}
