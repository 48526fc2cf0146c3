//! The canonical transform parameters: the [`TransformSpec`] contract between request parsing,
//! cache keys and the transforms, every value type it holds, and the one place where a
//! canonical parameter name is parsed and range-checked. It owns validation, default
//! normalisation and the canonical query string form; it must not know about Akamai or
//! Cloudflare spellings, configuration, headers or where the source lives.
//!
//! Adding a parameter: add a [`Param`] variant and its name, a field on [`TransformSpec`], and
//! follow the compiler through `set`, `is_set`, `write_canonical` and the cache key.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::error::{quote, FilterError};

/// Smallest width/height accepted for any mode.
pub const MIN_DIM: u32 = 10;
/// Largest width/height for images.
pub const MAX_IMAGE_DIM: u32 = 4096;
/// Largest width/height for video, frame and spritesheet.
pub const MAX_VIDEO_DIM: u32 = 2000;
/// Longest `time` (start offset), in milliseconds: 10 minutes.
pub const MAX_TIME_MS: u64 = 600_000;
/// Shortest `duration`, in milliseconds.
pub const MIN_DURATION_MS: u64 = 1_000;
/// Longest `duration` accepted at all (async job), in milliseconds: 10 minutes.
pub const MAX_DURATION_MS: u64 = 600_000;
/// Longest `duration` served synchronously, in milliseconds.
pub const SYNC_MAX_DURATION_MS: u64 = 60_000;
/// Longest `filename`.
pub const MAX_FILENAME: usize = 120;

/// Implements `Display`, `Serialize` and `Deserialize` through `as_string`/`parse_str`.
macro_rules! serde_via_str {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.write_to(f)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Accept numbers too (`quality = 80` in TOML).
                let v = StrOrNum::deserialize(d)?;
                let s = v.into_string();
                $ty::parse_str(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "invalid {} {:?}: expected {}",
                        stringify!($ty).to_lowercase(),
                        s,
                        $ty::EXPECTED
                    ))
                })
            }
        }
    };
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    S(String),
    U(u64),
    F(f64),
}

impl StrOrNum {
    fn into_string(self) -> String {
        match self {
            StrOrNum::S(s) => s,
            StrOrNum::U(u) => u.to_string(),
            StrOrNum::F(f) => f.to_string(),
        }
    }
}

/// Declares a closed set of lowercase keywords (with aliases) as a `Copy` enum.
macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident, $expected:literal { $($(#[$vmeta:meta])* $var:ident => $s:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $var),+ }

        impl $name {
            /// The accepted spellings, for error messages.
            pub const EXPECTED: &'static str = $expected;
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            /// Parses a spelling (case-insensitive, aliases accepted).
            pub fn parse_str(s: &str) -> Option<Self> {
                let lower;
                let s = if s.bytes().any(|b| b.is_ascii_uppercase()) {
                    lower = s.to_ascii_lowercase();
                    lower.as_str()
                } else {
                    s
                };
                match s {
                    $($s $(| $alias)* => Some($name::$var),)+
                    _ => None,
                }
            }

            fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        serde_via_str!($name);
    };
}

keyword_enum!(
    /// What kind of output is produced. `Original` is the untransformed passthrough.
    Mode, "image, video, frame, spritesheet, audio, hls" {
        Image => "image",
        Video => "video",
        Frame => "frame",
        Spritesheet => "spritesheet",
        Audio => "audio",
        /// An HLS VOD package (playlist, segments, poster) of a video.
        Hls => "hls",
        /// Passthrough of the original bytes (`orig`); never accepted from a client.
        Original => "orig",
    }
);

impl Mode {
    /// The largest width/height for this mode.
    pub fn max_dim(self) -> u32 {
        match self {
            Mode::Image | Mode::Original | Mode::Audio => MAX_IMAGE_DIM,
            Mode::Video | Mode::Frame | Mode::Spritesheet | Mode::Hls => MAX_VIDEO_DIM,
        }
    }
}

keyword_enum!(
    /// How the output fits the requested box.
    Fit, "contain, cover, scale-down, crop, pad, fill" {
        Contain => "contain",
        Cover => "cover",
        ScaleDown => "scale-down" | "scale_down" | "scaledown",
        Crop => "crop",
        Pad => "pad",
        Fill => "fill",
    }
);

keyword_enum!(
    /// Output container / image format. `Auto` is negotiated later from `Accept`.
    Format, "auto, webp, avif, jpeg, jpg, png, gif, mp4, webm, m4a, json" {
        Auto => "auto",
        Webp => "webp",
        Avif => "avif",
        Jpeg => "jpeg" | "jpg" | "baseline-jpeg",
        Png => "png",
        Gif => "gif",
        Mp4 => "mp4",
        Webm => "webm",
        M4a => "m4a",
        Json => "json",
    }
);

impl Format {
    /// File extension for a `Content-Disposition` filename.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Format::Auto => None,
            Format::Jpeg => Some("jpg"),
            other => Some(other.as_str()),
        }
    }

    /// An image format one can pull out of a video as a frame.
    pub fn is_still_image(self) -> bool {
        matches!(
            self,
            Format::Jpeg | Format::Png | Format::Webp | Format::Avif
        )
    }

    /// The MIME type of the output.
    pub fn mime(self) -> Option<&'static str> {
        Some(match self {
            Format::Auto => return None,
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
            Format::Mp4 => "video/mp4",
            Format::Webm => "video/webm",
            Format::M4a => "audio/mp4",
            Format::Json => "application/json",
        })
    }
}

keyword_enum!(
    /// Video codec.
    Codec, "h264, h265, vp9, av1" {
        H264 => "h264" | "avc",
        H265 => "h265" | "hevc",
        Vp9 => "vp9",
        Av1 => "av1",
    }
);

impl Codec {
    /// Codecs slow enough that any request using them becomes an async job.
    pub fn is_heavy(self) -> bool {
        !matches!(self, Codec::H264)
    }
}

keyword_enum!(
    /// Which metadata survives (Cloudflare `metadata`).
    Metadata, "keep, copyright, none" {
        Keep => "keep",
        Copyright => "copyright",
        None => "none",
    }
);

keyword_enum!(
    /// What to do when the transform fails (Cloudflare `onerror`).
    OnError, "redirect" {
        Redirect => "redirect",
    }
);

keyword_enum!(
    /// `preload` playback hint.
    Preload, "none, metadata, auto" {
        None => "none",
        Metadata => "metadata",
        Auto => "auto",
    }
);

/// Where the crop/cover window is anchored. Focal points are kept in thousandths so the
/// type is exact and canonical spellings round-trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gravity {
    Auto,
    Center,
    Top,
    Bottom,
    Left,
    Right,
    /// `x` and `y` in thousandths, 0..=1000 each (`0.5x0.25` → 500, 250).
    Focal {
        x: u16,
        y: u16,
    },
}

impl Gravity {
    pub const EXPECTED: &'static str =
        "auto, center, top, bottom, left, right, or XxY focal point with X and Y in 0.0..=1.0";

    pub fn parse_str(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "auto" => Gravity::Auto,
            "center" | "centre" => Gravity::Center,
            "top" => Gravity::Top,
            "bottom" => Gravity::Bottom,
            "left" => Gravity::Left,
            "right" => Gravity::Right,
            other => {
                let (x, y) = other.split_once('x')?;
                Gravity::Focal {
                    x: parse_unit_milli(x)?,
                    y: parse_unit_milli(y)?,
                }
            }
        })
    }

    fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gravity::Auto => f.write_str("auto"),
            Gravity::Center => f.write_str("center"),
            Gravity::Top => f.write_str("top"),
            Gravity::Bottom => f.write_str("bottom"),
            Gravity::Left => f.write_str("left"),
            Gravity::Right => f.write_str("right"),
            Gravity::Focal { x, y } => {
                write_milli(f, u64::from(*x))?;
                f.write_char('x')?;
                write_milli(f, u64::from(*y))
            }
        }
    }
}
serde_via_str!(Gravity);

/// A number in 0.0..=1.0 as thousandths.
fn parse_unit_milli(s: &str) -> Option<u16> {
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
fn write_milli(f: &mut impl fmt::Write, v: u64) -> fmt::Result {
    let (int, frac) = (v / 1000, v % 1000);
    write!(f, "{int}")?;
    if frac != 0 {
        let s = format!("{frac:03}");
        write!(f, ".{}", s.trim_end_matches('0'))?;
    }
    Ok(())
}

/// Output quality: a named level or a number 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Low,
    Medium,
    High,
    Lossless,
    Auto,
    Value(u8),
}

impl Quality {
    pub const EXPECTED: &'static str = "low, medium, high, lossless, auto, or 1..=100";

    pub fn parse_str(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "low" => Quality::Low,
            "medium" => Quality::Medium,
            "high" => Quality::High,
            "lossless" => Quality::Lossless,
            "auto" => Quality::Auto,
            n => {
                let v: u8 = parse_uint(n)?.try_into().ok()?;
                if !(1..=100).contains(&v) {
                    return None;
                }
                Quality::Value(v)
            }
        })
    }

    /// The encoder quality for webp/jpeg/avif: low 60, medium 75, high 90, lossless 100.
    pub fn level(self) -> Option<u8> {
        match self {
            Quality::Low => Some(60),
            Quality::Medium => Some(75),
            Quality::High => Some(90),
            Quality::Lossless => Some(100),
            Quality::Auto => None,
            Quality::Value(v) => Some(v),
        }
    }

    fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Low => f.write_str("low"),
            Quality::Medium => f.write_str("medium"),
            Quality::High => f.write_str("high"),
            Quality::Lossless => f.write_str("lossless"),
            Quality::Auto => f.write_str("auto"),
            Quality::Value(v) => write!(f, "{v}"),
        }
    }
}
serde_via_str!(Quality);

/// Encoder effort: Cloudflare's `fast`, or a PNG/zlib level 0..=9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Fast,
    Level(u8),
}

impl Compression {
    pub const EXPECTED: &'static str = "fast or 0..=9";

    pub fn parse_str(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("fast") {
            return Some(Compression::Fast);
        }
        let v = parse_uint(s)?;
        (v <= 9).then_some(Compression::Level(v as u8))
    }

    fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Fast => f.write_str("fast"),
            Compression::Level(v) => write!(f, "{v}"),
        }
    }
}
serde_via_str!(Compression);

/// A crop window `w:h:x:y` in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crop {
    pub w: u32,
    pub h: u32,
    pub x: u32,
    pub y: u32,
}

impl Crop {
    pub const EXPECTED: &'static str = "w:h:x:y with w,h in 1..=16384 and x,y in 0..=16384";

    pub fn parse_str(s: &str) -> Option<Self> {
        let mut it = s.split(':');
        let mut next = |lo: u64| -> Option<u32> {
            let v = parse_uint(it.next()?)?;
            (lo..=16384).contains(&v).then_some(v as u32)
        };
        let c = Crop {
            w: next(1)?,
            h: next(1)?,
            x: next(0)?,
            y: next(0)?,
        };
        it.next().is_none().then_some(c)
    }

    fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}:{}", self.w, self.h, self.x, self.y)
    }
}
serde_via_str!(Crop);

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

/// Playback hints: they only become response headers and never enter the cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Playback {
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none", default)]
    pub loop_: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub autoplay: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub muted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preload: Option<Preload>,
}

impl Playback {
    pub fn is_empty(&self) -> bool {
        *self == Playback::default()
    }
}

/// Every canonical query parameter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    Mode,
    Width,
    Height,
    Fit,
    Gravity,
    Format,
    Quality,
    Compression,
    Time,
    Duration,
    Audio,
    Derivative,
    ImageCount,
    Fps,
    Speed,
    Rotate,
    Crop,
    Bitrate,
    Blur,
    Sharpen,
    Background,
    Animated,
    Codec,
    Metadata,
    OnError,
    Filename,
    Loop,
    Autoplay,
    Muted,
    Preload,
    Dpr,
    Debug,
    Segment,
}

impl Param {
    /// All parameters, in canonical order.
    pub const ALL: &'static [Param] = &[
        Param::Mode,
        Param::Width,
        Param::Height,
        Param::Fit,
        Param::Gravity,
        Param::Format,
        Param::Quality,
        Param::Compression,
        Param::Time,
        Param::Duration,
        Param::Audio,
        Param::Derivative,
        Param::ImageCount,
        Param::Fps,
        Param::Speed,
        Param::Rotate,
        Param::Crop,
        Param::Bitrate,
        Param::Blur,
        Param::Sharpen,
        Param::Background,
        Param::Animated,
        Param::Codec,
        Param::Metadata,
        Param::OnError,
        Param::Filename,
        Param::Loop,
        Param::Autoplay,
        Param::Muted,
        Param::Preload,
        Param::Dpr,
        Param::Debug,
        Param::Segment,
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Param::Mode => "mode",
            Param::Width => "width",
            Param::Height => "height",
            Param::Fit => "fit",
            Param::Gravity => "gravity",
            Param::Format => "format",
            Param::Quality => "quality",
            Param::Compression => "compression",
            Param::Time => "time",
            Param::Duration => "duration",
            Param::Audio => "audio",
            Param::Derivative => "derivative",
            Param::ImageCount => "imageCount",
            Param::Fps => "fps",
            Param::Speed => "speed",
            Param::Rotate => "rotate",
            Param::Crop => "crop",
            Param::Bitrate => "bitrate",
            Param::Blur => "blur",
            Param::Sharpen => "sharpen",
            Param::Background => "background",
            Param::Animated => "animated",
            Param::Codec => "codec",
            Param::Metadata => "metadata",
            Param::OnError => "onerror",
            Param::Filename => "filename",
            Param::Loop => "loop",
            Param::Autoplay => "autoplay",
            Param::Muted => "muted",
            Param::Preload => "preload",
            Param::Dpr => "dpr",
            Param::Debug => "debug",
            Param::Segment => "segment",
        }
    }

    /// Looks a canonical name up (exact spelling; `imagecount` is also accepted).
    pub fn from_name(name: &str) -> Option<Param> {
        Some(match name {
            "mode" => Param::Mode,
            "width" => Param::Width,
            "height" => Param::Height,
            "fit" => Param::Fit,
            "gravity" => Param::Gravity,
            "format" => Param::Format,
            "quality" => Param::Quality,
            "compression" => Param::Compression,
            "time" => Param::Time,
            "duration" => Param::Duration,
            "audio" => Param::Audio,
            "derivative" => Param::Derivative,
            "imageCount" | "imagecount" => Param::ImageCount,
            "fps" => Param::Fps,
            "speed" => Param::Speed,
            "rotate" => Param::Rotate,
            "crop" => Param::Crop,
            "bitrate" => Param::Bitrate,
            "blur" => Param::Blur,
            "sharpen" => Param::Sharpen,
            "background" => Param::Background,
            "animated" => Param::Animated,
            "codec" => Param::Codec,
            "metadata" => Param::Metadata,
            "onerror" => Param::OnError,
            "filename" => Param::Filename,
            "loop" => Param::Loop,
            "autoplay" => Param::Autoplay,
            "muted" => Param::Muted,
            "preload" => Param::Preload,
            "dpr" => Param::Dpr,
            "debug" => Param::Debug,
            "segment" => Param::Segment,
            _ => return None,
        })
    }

    /// Does this parameter ask for a transform? Playback hints, `filename` and `debug`
    /// alone leave a request a passthrough of the original.
    pub fn is_transform(self) -> bool {
        !matches!(
            self,
            Param::Loop
                | Param::Autoplay
                | Param::Muted
                | Param::Preload
                | Param::Filename
                | Param::Debug
        )
    }
}

/// The resolved, validated, normalised description of one output. Fields left `None` mean
/// "the mode's default"; values equal to a default are normalised to `None` so that two
/// spellings of one request compare (and key) equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub height: Option<u32>,
    /// Default `contain`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fit: Option<Fit>,
    /// Default `center`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gravity: Option<Gravity>,
    /// `None` keeps the source's format; `Some(Auto)` is negotiated from `Accept`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub format: Option<Format>,
    /// Default `auto`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quality: Option<Quality>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compression: Option<Compression>,
    /// Start offset in ms; default 0.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time_ms: Option<u64>,
    /// Clip length in ms (1 s..=10 min; over 60 s needs an async job).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// Keep the audio track; default true.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub audio: Option<bool>,
    /// The named preset that produced this spec.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub derivative: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub image_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fps: Option<u32>,
    /// Playback speed factor 0.25..=4; default 1.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub speed: Option<f32>,
    /// Degrees clockwise, 1..=359 (images: 90, 180, 270); default 0.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rotate: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crop: Option<Crop>,
    /// Bits per second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bitrate: Option<u64>,
    /// Blur radius 1..=250.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub blur: Option<u32>,
    /// Sharpen strength 0..=10; default 0.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sharpen: Option<f32>,
    /// Normalised `#rrggbb` or `#rrggbbaa`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub background: Option<String>,
    /// Keep animation (gif/webp); default true.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub animated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub codec: Option<Codec>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<Metadata>,
    /// Never in the cache key: failures are not cached.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub onerror: Option<OnError>,
    /// `Content-Disposition` name, `[A-Za-z0-9_-]{1,120}`; response header only, never in
    /// the cache key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filename: Option<String>,
    /// Response headers only, never in the cache key.
    #[serde(skip_serializing_if = "Playback::is_empty", default)]
    pub playback: Playback,
    /// `mode=hls`: which part of the package: a segment number or `poster` (absent: the
    /// playlist).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub segment: Option<String>,
}

impl TransformSpec {
    /// A spec with every field at its default.
    pub fn new(mode: Mode) -> Self {
        TransformSpec {
            mode,
            width: None,
            height: None,
            fit: None,
            gravity: None,
            format: None,
            quality: None,
            compression: None,
            time_ms: None,
            duration_ms: None,
            audio: None,
            derivative: None,
            image_count: None,
            fps: None,
            speed: None,
            rotate: None,
            crop: None,
            bitrate: None,
            blur: None,
            sharpen: None,
            background: None,
            animated: None,
            codec: None,
            metadata: None,
            onerror: None,
            filename: None,
            playback: Playback::default(),
            segment: None,
        }
    }

    /// Is this the untransformed original?
    pub fn is_passthrough(&self) -> bool {
        self.mode == Mode::Original
    }

    /// Must this be produced by an async job (long clip or a slow codec)?
    pub fn needs_async(&self) -> bool {
        self.needs_async_over(SYNC_MAX_DURATION_MS)
    }

    /// [`Self::needs_async`] with a configured synchronous duration limit.
    pub fn needs_async_over(&self, sync_max_duration_ms: u64) -> bool {
        matches!(self.mode, Mode::Video | Mode::Audio | Mode::Spritesheet)
            && (self.duration_ms.is_some_and(|d| d > sync_max_duration_ms)
                || self.codec.is_some_and(Codec::is_heavy))
    }

    /// Is this spec field set? (`Mode`, `Dpr` and `Debug` are not spec fields: false.)
    pub fn is_set(&self, p: Param) -> bool {
        match p {
            Param::Mode | Param::Dpr | Param::Debug => false,
            Param::Width => self.width.is_some(),
            Param::Height => self.height.is_some(),
            Param::Fit => self.fit.is_some(),
            Param::Gravity => self.gravity.is_some(),
            Param::Format => self.format.is_some(),
            Param::Quality => self.quality.is_some(),
            Param::Compression => self.compression.is_some(),
            Param::Time => self.time_ms.is_some(),
            Param::Duration => self.duration_ms.is_some(),
            Param::Audio => self.audio.is_some(),
            Param::Derivative => self.derivative.is_some(),
            Param::ImageCount => self.image_count.is_some(),
            Param::Segment => self.segment.is_some(),
            Param::Fps => self.fps.is_some(),
            Param::Speed => self.speed.is_some(),
            Param::Rotate => self.rotate.is_some(),
            Param::Crop => self.crop.is_some(),
            Param::Bitrate => self.bitrate.is_some(),
            Param::Blur => self.blur.is_some(),
            Param::Sharpen => self.sharpen.is_some(),
            Param::Background => self.background.is_some(),
            Param::Animated => self.animated.is_some(),
            Param::Codec => self.codec.is_some(),
            Param::Metadata => self.metadata.is_some(),
            Param::OnError => self.onerror.is_some(),
            Param::Filename => self.filename.is_some(),
            Param::Loop => self.playback.loop_.is_some(),
            Param::Autoplay => self.playback.autoplay.is_some(),
            Param::Muted => self.playback.muted.is_some(),
            Param::Preload => self.playback.preload.is_some(),
        }
    }

    /// Parses and range-checks one value into its field. `name` is the spelling the client
    /// used (e.g. `imheight`), quoted in errors. Mode-dependent checks (video width limit,
    /// image rotation) happen later in [`Self::validate`].
    /// `Mode`, `Dpr` and `Debug` are not spec fields and are ignored here.
    pub fn set(&mut self, p: Param, name: &str, v: &str) -> Result<(), FilterError> {
        fn kw<T>(
            name: &str,
            v: &str,
            parsed: Option<T>,
            expected: &'static str,
        ) -> Result<T, FilterError> {
            parsed.ok_or_else(|| FilterError::invalid(name, v, expected))
        }
        let dim_range = format!("{MIN_DIM}..={MAX_IMAGE_DIM}");
        match p {
            Param::Mode | Param::Dpr | Param::Debug => {}
            Param::Width | Param::Height => {
                let x = parse_ranged_uint(name, v, 0, u64::MAX)?;
                if !(u64::from(MIN_DIM)..=u64::from(MAX_IMAGE_DIM)).contains(&x) {
                    return Err(FilterError::range(name, x, &dim_range));
                }
                if p == Param::Width {
                    self.width = Some(x as u32);
                } else {
                    self.height = Some(x as u32);
                }
            }
            Param::Fit => self.fit = Some(kw(name, v, Fit::parse_str(v), Fit::EXPECTED)?),
            Param::Gravity => {
                self.gravity = Some(kw(name, v, Gravity::parse_str(v), Gravity::EXPECTED)?)
            }
            Param::Format => {
                self.format = Some(kw(name, v, Format::parse_str(v), Format::EXPECTED)?)
            }
            Param::Quality => {
                self.quality = Some(kw(name, v, Quality::parse_str(v), Quality::EXPECTED)?)
            }
            Param::Compression => {
                self.compression = Some(kw(
                    name,
                    v,
                    Compression::parse_str(v),
                    Compression::EXPECTED,
                )?)
            }
            Param::Time => {
                let ms = kw(name, v, parse_time(v), "a time like 5s, 90.5s, 1m30s or 90")?;
                if ms > MAX_TIME_MS {
                    return Err(FilterError::range(name, quote(v), "0s..=10m"));
                }
                self.time_ms = Some(ms);
            }
            Param::Duration => {
                let ms = kw(name, v, parse_time(v), "a duration like 5s, 1m30s or 90")?;
                if !(MIN_DURATION_MS..=MAX_DURATION_MS).contains(&ms) {
                    return Err(FilterError::range(
                        name,
                        quote(v),
                        "1s..=60s (up to 10m as an async job)",
                    ));
                }
                self.duration_ms = Some(ms);
            }
            Param::Audio => self.audio = Some(kw(name, v, parse_bool(v), "true or false")?),
            Param::Derivative => {
                if !is_token(v, 64) {
                    return Err(FilterError::invalid(
                        name,
                        v,
                        "a derivative name of 1..=64 letters, digits, '-' or '_'",
                    ));
                }
                self.derivative = Some(v.to_string());
            }
            Param::ImageCount => {
                self.image_count = Some(parse_ranged_uint(name, v, 1, 100)? as u32)
            }
            Param::Segment => {
                self.segment = Some(if v == "poster" {
                    v.to_string()
                } else {
                    parse_ranged_uint(name, v, 0, 99_999)
                        .map_err(|_| {
                            FilterError::invalid(name, v, "a segment number 0..=99999 or poster")
                        })?
                        .to_string()
                })
            }
            Param::Fps => self.fps = Some(parse_ranged_uint(name, v, 1, 60)? as u32),
            Param::Speed => self.speed = Some(parse_ranged_f32(name, v, 0.25, 4.0, "0.25..=4")?),
            Param::Rotate => {
                let neg = v.strip_prefix('-');
                let x = parse_ranged_uint(name, neg.unwrap_or(v), 0, 360)
                    .map_err(|_| FilterError::range(name, quote(v), "-360..=360 degrees"))?;
                let deg = if neg.is_some() {
                    (360 - x % 360) % 360
                } else {
                    x % 360
                };
                self.rotate = Some(deg as u16);
            }
            Param::Crop => self.crop = Some(kw(name, v, Crop::parse_str(v), Crop::EXPECTED)?),
            Param::Bitrate => {
                let b = kw(
                    name,
                    v,
                    parse_bitrate(v),
                    "a bitrate like 800k, 2M or 2500000",
                )?;
                if !(10_000..=100_000_000).contains(&b) {
                    return Err(FilterError::range(name, quote(v), "10k..=100M"));
                }
                self.bitrate = Some(b);
            }
            Param::Blur => self.blur = Some(parse_ranged_uint(name, v, 1, 250)? as u32),
            Param::Sharpen => self.sharpen = Some(parse_ranged_f32(name, v, 0.0, 10.0, "0..=10")?),
            Param::Background => {
                self.background = Some(kw(
                    name,
                    v,
                    parse_color(v),
                    "a colour like #rgb, #rrggbb, #rrggbbaa or a name (black, white, transparent)",
                )?)
            }
            Param::Animated => self.animated = Some(kw(name, v, parse_bool(v), "true or false")?),
            Param::Codec => self.codec = Some(kw(name, v, Codec::parse_str(v), Codec::EXPECTED)?),
            Param::Metadata => {
                self.metadata = Some(kw(name, v, Metadata::parse_str(v), Metadata::EXPECTED)?)
            }
            Param::OnError => {
                self.onerror = Some(kw(name, v, OnError::parse_str(v), OnError::EXPECTED)?)
            }
            Param::Filename => {
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
                self.filename = Some(v.to_string());
            }
            Param::Loop => self.playback.loop_ = Some(kw(name, v, parse_bool(v), "true or false")?),
            Param::Autoplay => {
                self.playback.autoplay = Some(kw(name, v, parse_bool(v), "true or false")?)
            }
            Param::Muted => {
                self.playback.muted = Some(kw(name, v, parse_bool(v), "true or false")?)
            }
            Param::Preload => {
                self.playback.preload = Some(kw(name, v, Preload::parse_str(v), Preload::EXPECTED)?)
            }
        }
        Ok(())
    }

    /// Drops fields that mean nothing for the mode and values equal to their default, so
    /// that every spelling of one output gives one spec.
    pub fn normalize(&mut self) {
        // Defaults.
        if self.fit == Some(Fit::Contain) {
            self.fit = None;
        }
        if self.gravity == Some(Gravity::Center) {
            self.gravity = None;
        }
        if self.quality == Some(Quality::Auto) {
            self.quality = None;
        }
        if self.time_ms == Some(0) {
            self.time_ms = None;
        }
        if self.audio == Some(true) {
            self.audio = None;
        }
        if self.animated == Some(true) {
            self.animated = None;
        }
        if self.rotate == Some(0) {
            self.rotate = None;
        }
        if self.speed == Some(1.0) {
            self.speed = None;
        }
        if self.sharpen.is_some_and(|s| s == 0.0) {
            self.sharpen = None;
        }
        // Fields that do not apply to the mode.
        let s = self;
        if s.mode != Mode::Hls {
            s.segment = None;
        }
        match s.mode {
            Mode::Original => {
                let keep = (s.filename.take(), std::mem::take(&mut s.playback));
                *s = TransformSpec::new(Mode::Original);
                (s.filename, s.playback) = keep;
            }
            Mode::Image => {
                (s.time_ms, s.duration_ms, s.audio, s.fps, s.speed) =
                    (None, None, None, None, None);
                (s.bitrate, s.codec, s.image_count) = (None, None, None);
            }
            Mode::Frame => {
                (s.duration_ms, s.audio, s.fps, s.speed, s.bitrate) =
                    (None, None, None, None, None);
                (s.codec, s.image_count, s.animated) = (None, None, None);
            }
            Mode::Spritesheet => {
                (s.audio, s.fps, s.speed, s.bitrate, s.codec) = (None, None, None, None, None);
                s.animated = None;
            }
            Mode::Video => {
                (s.image_count, s.animated) = (None, None);
            }
            Mode::Hls => {
                // One fixed package per source: only the part is variable.
                let keep = s.segment.take();
                *s = TransformSpec::new(Mode::Hls);
                s.segment = keep;
            }
            Mode::Audio => {
                (s.width, s.height, s.fit, s.gravity, s.crop) = (None, None, None, None, None);
                (s.rotate, s.blur, s.sharpen, s.background) = (None, None, None, None);
                (s.image_count, s.fps, s.animated, s.codec, s.audio) =
                    (None, None, None, None, None);
            }
        }
    }

    /// Mode-dependent checks: dimensions within the mode's range, image rotation a
    /// multiple of 90.
    pub fn validate(&self) -> Result<(), FilterError> {
        let max = self.mode.max_dim();
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = v {
                if !(MIN_DIM..=max).contains(&v) {
                    return Err(FilterError::range(
                        name,
                        v,
                        &format!("{MIN_DIM}..={max} for mode {}", self.mode),
                    ));
                }
            }
        }
        if let Some(r) = self.rotate {
            if self.mode == Mode::Image && r % 90 != 0 {
                return Err(FilterError::NotAllowedForMode {
                    param: "rotate",
                    value: r.to_string(),
                    mode: "image",
                    reason: "images rotate by 90, 180 or 270",
                });
            }
        }
        Ok(())
    }

    /// The canonical query string: fixed parameter order, canonical spellings, defaults
    /// omitted. `from_canonical_query(to_canonical_query(s)) == s` for every resolved spec.
    pub fn to_canonical_query(&self) -> String {
        let mut out = String::with_capacity(64);
        self.write_canonical(&mut |name, value| {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(name);
            out.push('=');
            for b in value.bytes() {
                match b {
                    b'#' => out.push_str("%23"),
                    b'%' => out.push_str("%25"),
                    b'&' => out.push_str("%26"),
                    b'+' => out.push_str("%2B"),
                    b'=' => out.push_str("%3D"),
                    b' ' => out.push_str("%20"),
                    _ => out.push(b as char),
                }
            }
        });
        out
    }

    /// Calls `emit(name, value)` for every set field in canonical order. Shared by the
    /// canonical query and the diagnostics.
    pub fn write_canonical(&self, emit: &mut dyn FnMut(&'static str, &str)) {
        let mut buf = String::new();
        let mut e = |p: Param, v: &dyn fmt::Display| {
            buf.clear();
            let _ = write!(buf, "{v}");
            emit(p.name(), &buf);
        };
        e(Param::Mode, &self.mode);
        macro_rules! opt {
            ($p:expr, $f:expr) => {
                if let Some(v) = &$f {
                    e($p, v);
                }
            };
        }
        opt!(Param::Width, self.width);
        opt!(Param::Height, self.height);
        opt!(Param::Fit, self.fit);
        opt!(Param::Gravity, self.gravity);
        opt!(Param::Format, self.format);
        opt!(Param::Quality, self.quality);
        opt!(Param::Compression, self.compression);
        opt!(Param::Time, self.time_ms.map(format_time));
        opt!(Param::Duration, self.duration_ms.map(format_time));
        opt!(Param::Audio, self.audio);
        opt!(Param::Derivative, self.derivative);
        opt!(Param::ImageCount, self.image_count);
        opt!(Param::Fps, self.fps);
        opt!(Param::Speed, self.speed);
        opt!(Param::Rotate, self.rotate);
        opt!(Param::Crop, self.crop);
        opt!(Param::Bitrate, self.bitrate.map(format_bitrate));
        opt!(Param::Blur, self.blur);
        opt!(Param::Sharpen, self.sharpen);
        opt!(Param::Background, self.background);
        opt!(Param::Animated, self.animated);
        opt!(Param::Codec, self.codec);
        opt!(Param::Metadata, self.metadata);
        opt!(Param::OnError, self.onerror);
        opt!(Param::Filename, self.filename);
        opt!(Param::Loop, self.playback.loop_);
        opt!(Param::Autoplay, self.playback.autoplay);
        opt!(Param::Muted, self.playback.muted);
        opt!(Param::Preload, self.playback.preload);
        opt!(Param::Segment, self.segment);
    }

    /// Parses a canonical query (as made by [`Self::to_canonical_query`]). Strict: `mode`
    /// is required (`orig` allowed), names must be canonical, no duplicates, no `dpr`/`debug`.
    pub fn from_canonical_query(q: &str) -> Result<TransformSpec, FilterError> {
        let mut spec = TransformSpec::new(Mode::Original);
        let mut mode = None;
        let mut seen: u64 = 0;
        for (name, value) in form_urlencoded::parse(q.as_bytes()) {
            let p = match Param::from_name(&name) {
                Some(p) if !matches!(p, Param::Dpr | Param::Debug) => p,
                _ => return Err(FilterError::UnknownParam(quote(&name))),
            };
            let bit = 1u64 << (p as u32);
            if seen & bit != 0 {
                return Err(FilterError::Duplicate(p.name().to_string()));
            }
            seen |= bit;
            if p == Param::Mode {
                mode = Some(Mode::parse_str(&value).ok_or_else(|| {
                    FilterError::invalid(
                        "mode",
                        &value,
                        "image, video, frame, spritesheet, audio, orig",
                    )
                })?);
            } else {
                spec.set(p, p.name(), &value)?;
            }
        }
        spec.mode = mode.ok_or(FilterError::MissingMode)?;
        if spec.mode == Mode::Original {
            if let Some(p) = Param::ALL
                .iter()
                .find(|&&p| p.is_transform() && spec.is_set(p))
            {
                return Err(FilterError::NotAllowedForMode {
                    param: p.name(),
                    value: "(set)".into(),
                    mode: "orig",
                    reason: "the original takes no transform parameters",
                });
            }
        }
        spec.normalize();
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_table() {
        for (s, ms) in [
            ("0s", Some(0)),
            ("0", Some(0)),
            ("5s", Some(5_000)),
            ("90", Some(90_000)),
            ("90.5s", Some(90_500)),
            ("1m30s", Some(90_000)),
            ("1m30", Some(90_000)),
            ("1m", Some(60_000)),
            ("10m", Some(600_000)),
            ("1.5m", Some(90_000)),
            ("500ms", Some(500)),
            ("-1s", None),
            ("abc", None),
            ("", None),
            ("1h", None),
            ("inf", None),
            ("NaN", None),
            ("1e3", None),
        ] {
            assert_eq!(parse_time(s), ms, "{s}");
        }
        assert_eq!(format_time(90_500), "90.5s");
        assert_eq!(format_time(0), "0s");
        assert_eq!(format_time(5_000), "5s");
        assert_eq!(format_time(1_250), "1.25s");
    }

    #[test]
    fn bitrate_table() {
        for (s, b) in [
            ("2M", Some(2_000_000)),
            ("800k", Some(800_000)),
            ("2.5M", Some(2_500_000)),
            ("800000", Some(800_000)),
            ("1.5m", Some(1_500_000)),
            ("k", None),
            ("fast", None),
        ] {
            assert_eq!(parse_bitrate(s), b, "{s}");
        }
        assert_eq!(format_bitrate(2_000_000), "2M");
        assert_eq!(format_bitrate(800_000), "800k");
        assert_eq!(format_bitrate(2_500_000), "2500k");
        assert_eq!(format_bitrate(12_345), "12345");
    }

    #[test]
    fn color_table() {
        for (s, c) in [
            ("#fff", Some("#ffffff")),
            ("#FF0000", Some("#ff0000")),
            ("ff0000", Some("#ff0000")),
            ("#ff000080", Some("#ff000080")),
            ("#ff0000ff", Some("#ff0000")),
            ("#f008", Some("#ff000088")),
            ("white", Some("#ffffff")),
            ("transparent", Some("#00000000")),
            ("#ggg", None),
            ("#12345", None),
            ("chartreuse", None),
        ] {
            assert_eq!(parse_color(s).as_deref(), c, "{s}");
        }
    }

    #[test]
    fn gravity_table() {
        for (s, g) in [
            ("auto", Some(Gravity::Auto)),
            ("center", Some(Gravity::Center)),
            ("top", Some(Gravity::Top)),
            ("bottom", Some(Gravity::Bottom)),
            ("left", Some(Gravity::Left)),
            ("right", Some(Gravity::Right)),
            ("0.5x0.25", Some(Gravity::Focal { x: 500, y: 250 })),
            ("0x1", Some(Gravity::Focal { x: 0, y: 1000 })),
            ("1.5x0.5", None),
            ("0.5", None),
            ("-0.1x0.5", None),
            ("northwest", None),
        ] {
            assert_eq!(Gravity::parse_str(s), g, "{s}");
        }
        assert_eq!(Gravity::Focal { x: 500, y: 250 }.to_string(), "0.5x0.25");
        assert_eq!(Gravity::Focal { x: 0, y: 1000 }.to_string(), "0x1");
    }

    #[test]
    fn quality_and_keywords() {
        assert_eq!(Quality::parse_str("80"), Some(Quality::Value(80)));
        assert_eq!(Quality::parse_str("0"), None);
        assert_eq!(Quality::parse_str("101"), None);
        assert_eq!(Quality::parse_str("LOW"), Some(Quality::Low));
        assert_eq!(Quality::Medium.level(), Some(75));
        assert_eq!(Format::parse_str("jpg"), Some(Format::Jpeg));
        assert_eq!(Format::parse_str("JPEG"), Some(Format::Jpeg));
        assert_eq!(Format::parse_str("tiff"), None);
        assert_eq!(Fit::parse_str("scale-down"), Some(Fit::ScaleDown));
        assert_eq!(Codec::parse_str("hevc"), Some(Codec::H265));
        assert_eq!(Compression::parse_str("fast"), Some(Compression::Fast));
        assert_eq!(Compression::parse_str("10"), None);
        assert_eq!(
            Crop::parse_str("100:50:10:20"),
            Some(Crop {
                w: 100,
                h: 50,
                x: 10,
                y: 20
            })
        );
        assert_eq!(Crop::parse_str("100:50:10"), None);
        assert_eq!(Crop::parse_str("0:50:10:2"), None);
        assert_eq!(Crop::parse_str("1:2:3:4:5"), None);
    }

    fn set_err(p: Param, v: &str) -> String {
        let mut s = TransformSpec::new(Mode::Image);
        s.set(p, p.name(), v).unwrap_err().to_string()
    }

    #[test]
    fn every_param_rejects_bad_values_naming_param_and_range() {
        for (p, v, msg) in [
            (Param::Width, "5000", "width 5000 out of range 10..=4096"),
            (Param::Width, "9", "width 9 out of range 10..=4096"),
            (
                Param::Width,
                "abc",
                "width \"abc\" is invalid: expected a whole number",
            ),
            (Param::Width, "-5", "width \"-5\" is invalid"),
            (Param::Height, "4097", "height 4097 out of range 10..=4096"),
            (
                Param::Fit,
                "stretch",
                "fit \"stretch\" is invalid: expected contain, cover",
            ),
            (Param::Gravity, "north", "gravity \"north\" is invalid"),
            (
                Param::Format,
                "tiff",
                "format \"tiff\" is invalid: expected auto, webp",
            ),
            (
                Param::Quality,
                "0",
                "quality \"0\" is invalid: expected low, medium",
            ),
            (Param::Quality, "101", "quality \"101\" is invalid"),
            (Param::Compression, "11", "compression \"11\" is invalid"),
            (Param::Time, "11m", "time 11m out of range 0s..=10m"),
            (Param::Time, "soon", "time \"soon\" is invalid"),
            (
                Param::Duration,
                "0.5s",
                "duration 0.5s out of range 1s..=60s",
            ),
            (Param::Duration, "11m", "duration 11m out of range"),
            (
                Param::Audio,
                "maybe",
                "audio \"maybe\" is invalid: expected true or false",
            ),
            (Param::Derivative, "a b", "derivative \"a b\" is invalid"),
            (Param::ImageCount, "0", "imageCount 0 out of range 1..=100"),
            (Param::Fps, "61", "fps 61 out of range 1..=60"),
            (Param::Speed, "5", "speed 5 out of range 0.25..=4"),
            (Param::Speed, "NaN", "speed \"NaN\" is invalid"),
            (Param::Rotate, "400", "rotate 400 out of range -360..=360"),
            (
                Param::Crop,
                "1:2",
                "crop \"1:2\" is invalid: expected w:h:x:y",
            ),
            (Param::Bitrate, "5k", "bitrate 5k out of range 10k..=100M"),
            (Param::Bitrate, "lots", "bitrate \"lots\" is invalid"),
            (Param::Blur, "251", "blur 251 out of range 1..=250"),
            (Param::Sharpen, "11", "sharpen 11 out of range 0..=10"),
            (Param::Background, "#zzz", "background \"#zzz\" is invalid"),
            (Param::Animated, "x", "animated \"x\" is invalid"),
            (
                Param::Codec,
                "mpeg2",
                "codec \"mpeg2\" is invalid: expected h264, h265, vp9, av1",
            ),
            (Param::Metadata, "all", "metadata \"all\" is invalid"),
            (Param::OnError, "ignore", "onerror \"ignore\" is invalid"),
            (Param::Filename, "a.b", "filename \"a.b\" is invalid"),
            (Param::Loop, "x", "loop \"x\" is invalid"),
            (Param::Autoplay, "x", "autoplay \"x\" is invalid"),
            (Param::Muted, "x", "muted \"x\" is invalid"),
            (Param::Preload, "all", "preload \"all\" is invalid"),
        ] {
            let got = set_err(p, v);
            assert!(
                got.starts_with(msg),
                "{p:?}={v}: got {got:?}, want prefix {msg:?}"
            );
        }
        let long = "a".repeat(121);
        assert!(set_err(Param::Filename, &long).contains("1..=120"));
    }

    #[test]
    fn rotate_normalises() {
        for (v, r) in [
            ("90", 90),
            ("-90", 270),
            ("360", 0),
            ("45", 45),
            ("-360", 0),
        ] {
            let mut s = TransformSpec::new(Mode::Video);
            s.set(Param::Rotate, "rotate", v).unwrap();
            assert_eq!(s.rotate, Some(r), "{v}");
        }
    }

    #[test]
    fn mode_limits() {
        let mut s = TransformSpec::new(Mode::Video);
        s.width = Some(3000);
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "width 3000 out of range 10..=2000 for mode video"
        );
        let mut s = TransformSpec::new(Mode::Image);
        s.rotate = Some(45);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("90, 180 or 270"));
        s.mode = Mode::Video;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn canonical_round_trip_table() {
        for q in [
            "mode=image&width=100&height=200&fit=cover&gravity=0.5x0.25&format=webp&quality=80",
            "mode=video&width=640&time=1.5s&duration=10s&audio=false&codec=h264&bitrate=2M&fps=30&speed=1.5",
            "mode=frame&width=640&height=360&format=png&derivative=thumbnail",
            "mode=spritesheet&width=160&imageCount=20&time=5s&duration=30s",
            "mode=audio&format=m4a&time=1m&duration=20s",
            "mode=image&background=%23ff0000&crop=10:20:30:40&blur=5&sharpen=2.5&rotate=90&animated=false",
            "mode=orig&filename=clip&loop=true&autoplay=true&muted=true&preload=none",
        ] {
            let s = TransformSpec::from_canonical_query(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let c = s.to_canonical_query();
            assert_eq!(TransformSpec::from_canonical_query(&c).unwrap(), s, "{q} -> {c}");
        }
        let s = TransformSpec::from_canonical_query("mode=image&quality=auto&fit=contain&time=5s")
            .unwrap();
        assert_eq!(s.to_canonical_query(), "mode=image");
    }

    #[test]
    fn canonical_query_is_strict() {
        for (q, msg) in [
            ("width=100", "canonical query is missing mode"),
            ("mode=image&w=100", "unknown canonical parameter \"w\""),
            (
                "mode=image&width=100&width=200",
                "parameter width given more than once",
            ),
            (
                "mode=orig&width=100",
                "width (set) not allowed for mode orig",
            ),
            ("mode=tv", "mode \"tv\" is invalid"),
            (
                "mode=video&width=3000",
                "width 3000 out of range 10..=2000 for mode video",
            ),
        ] {
            let e = TransformSpec::from_canonical_query(q)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(msg), "{q}: {e}");
        }
    }

    #[test]
    fn hls_parts() {
        let s = TransformSpec::from_canonical_query("mode=hls&segment=003&width=100").unwrap();
        assert_eq!(s.to_canonical_query(), "mode=hls&segment=3");
        let s = TransformSpec::from_canonical_query("mode=hls&segment=poster").unwrap();
        assert_eq!(s.segment.as_deref(), Some("poster"));
        assert_eq!(
            TransformSpec::from_canonical_query("mode=hls")
                .unwrap()
                .to_canonical_query(),
            "mode=hls"
        );
        for bad in [
            "mode=hls&segment=x",
            "mode=hls&segment=-1",
            "mode=hls&segment=100000",
        ] {
            let e = TransformSpec::from_canonical_query(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
        // Only HLS has parts.
        let s = TransformSpec::from_canonical_query("mode=video&segment=2").unwrap();
        assert_eq!(s.segment, None);
    }

    #[test]
    fn needs_async() {
        let mut s = TransformSpec::new(Mode::Video);
        assert!(!s.needs_async());
        s.duration_ms = Some(60_000);
        assert!(!s.needs_async());
        s.duration_ms = Some(61_000);
        assert!(s.needs_async());
        s.duration_ms = None;
        s.codec = Some(Codec::Vp9);
        assert!(s.needs_async());
        s.codec = Some(Codec::H264);
        assert!(!s.needs_async());
    }

    #[test]
    fn serde_uses_canonical_spellings() {
        let s = TransformSpec::from_canonical_query(
            "mode=frame&width=640&fit=scale-down&format=jpeg&quality=high&gravity=0.5x0.5&time=2s",
        )
        .unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            r#"{"mode":"frame","width":640,"fit":"scale-down","gravity":"0.5x0.5","format":"jpeg","quality":"high","time_ms":2000}"#
        );
        let back: TransformSpec = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }
}
