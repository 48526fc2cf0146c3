//! The typed values a [`TransformSpec`](super::TransformSpec) holds: the keyword enums
//! (mode, fit, format, codec, ...), gravity, quality, compression, crop and the playback
//! hints, each with its spellings (case-insensitive parse, one canonical form for `Display`
//! and serde). It must not know parameter names or range-check against a mode: a value here
//! is valid or not on its own.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::scalars::{parse_uint, parse_unit_milli, write_milli};
use super::{MAX_IMAGE_DIM, MAX_VIDEO_DIM};

/// A value with a fixed grammar of spellings, parsed the same way by `set` and by serde.
pub(crate) trait Spelled: Sized {
    /// The accepted spellings, for error messages.
    const SPELLINGS: &'static str;
    /// Parses one spelling.
    fn parse_spelling(s: &str) -> Option<Self>;
}

/// Implements [`Spelled`], `Display`, `Serialize` and `Deserialize` through the type's own
/// `EXPECTED`, `parse_str` and `write_to`.
macro_rules! serde_via_str {
    ($ty:ident) => {
        impl Spelled for $ty {
            const SPELLINGS: &'static str = $ty::EXPECTED;
            fn parse_spelling(s: &str) -> Option<Self> {
                $ty::parse_str(s)
            }
        }
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
    Fit, "contain, cover, scale-down, crop, pad, fill, squeeze" {
        Contain => "contain",
        Cover => "cover",
        ScaleDown => "scale-down" | "scale_down" | "scaledown",
        Crop => "crop",
        Pad => "pad",
        /// Both sides exactly as asked, the aspect ratio not kept (Cloudflare's `squeeze`).
        Fill => "fill" | "squeeze",
    }
);

keyword_enum!(
    /// Output container / image format. `Auto` is negotiated later from `Accept`.
    Format, "auto, webp, avif, jpeg, jpg, baseline-jpeg, png, gif, mp4, webm, m4a, json" {
        Auto => "auto",
        Webp => "webp",
        Avif => "avif",
        /// Progressive JPEG.
        Jpeg => "jpeg" | "jpg",
        /// Baseline (sequential) JPEG, for devices that cannot show progressive ones.
        BaselineJpeg => "baseline-jpeg",
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
            Format::Jpeg | Format::BaselineJpeg => Some("jpg"),
            other => Some(other.as_str()),
        }
    }

    /// An image format one can pull out of a video as a frame.
    pub fn is_still_image(self) -> bool {
        matches!(
            self,
            Format::Jpeg | Format::BaselineJpeg | Format::Png | Format::Webp | Format::Avif
        )
    }

    /// The MIME type of the output.
    pub fn mime(self) -> Option<&'static str> {
        Some(match self {
            Format::Auto => return None,
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
            Format::Jpeg | Format::BaselineJpeg => "image/jpeg",
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
    /// Mirror the image: horizontally, vertically or both (Cloudflare's `flip`).
    Flip, "h, v, hv" {
        H => "h",
        V => "v",
        Hv => "hv" | "vh",
    }
);

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

/// Output quality: a named level or a number 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Low,
    MediumLow,
    Medium,
    MediumHigh,
    High,
    Lossless,
    Auto,
    Value(u8),
}

impl Quality {
    pub const EXPECTED: &'static str =
        "low, medium-low, medium, medium-high, high, lossless, auto, or 1..=100";

    pub fn parse_str(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "low" => Quality::Low,
            "medium-low" | "medium_low" => Quality::MediumLow,
            "medium" => Quality::Medium,
            "medium-high" | "medium_high" => Quality::MediumHigh,
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

    /// The encoder quality for webp/jpeg/avif: low 60, medium-low 68, medium 75,
    /// medium-high 82, high 90, lossless 100 (`auto`: the encoder's default, 85 as
    /// Cloudflare's).
    pub fn level(self) -> Option<u8> {
        match self {
            Quality::Low => Some(60),
            Quality::MediumLow => Some(68),
            Quality::Medium => Some(75),
            Quality::MediumHigh => Some(82),
            Quality::High => Some(90),
            Quality::Lossless => Some(100),
            Quality::Auto => None,
            Quality::Value(v) => Some(v),
        }
    }

    fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Low => f.write_str("low"),
            Quality::MediumLow => f.write_str("medium-low"),
            Quality::Medium => f.write_str("medium"),
            Quality::MediumHigh => f.write_str("medium-high"),
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
