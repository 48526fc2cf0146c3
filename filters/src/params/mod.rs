//! The canonical transform parameters: the [`TransformSpec`] contract between request parsing,
//! cache keys and the transforms, every value type it holds, and the one place where a
//! canonical parameter name is parsed and range-checked. It owns validation, default
//! normalisation and the canonical query string form; it must not know about Akamai or
//! Cloudflare spellings, configuration, headers or where the source lives.
//!
//! This file holds the spec itself and the mode-dependent rules (limits, defaults,
//! [`TransformSpec::normalize`], [`TransformSpec::validate`]); the parts live beside it:
//! `table` defines every [`Param`] once, `checked` range-checks one value for `set`,
//! `values` and `scalars` hold the value types and spellings, `canonical` the query form.
//!
//! Adding a parameter: add a field on [`TransformSpec`] and one entry in `table.rs` (name,
//! aliases, whether it asks for a transform, its field and how it is parsed); that entry
//! gives it `is_set`, `set` and its place in the canonical query, and the compiler asks for
//! it in [`TransformSpec::new`]. By hand: its default and the modes it means nothing for in
//! [`TransformSpec::normalize`], and whether it enters the cache key (`cache_key.rs`).

mod canonical;
mod checked;
mod scalars;
mod table;
mod trim;
mod values;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::error::FilterError;

pub use scalars::{
    format_bitrate, format_time, parse_bitrate, parse_bool, parse_color, parse_time,
};
pub(crate) use scalars::{is_token, parse_decimal, parse_uint};
pub use table::Param;
pub use trim::{Trim, TrimBorder, DEFAULT_TOLERANCE as TRIM_DEFAULT_TOLERANCE, MAX_TRIM};
pub use values::{
    Codec, Compression, Crop, Fit, Flip, Format, Gravity, Metadata, Mode, OnError, Playback,
    Preload, Quality,
};

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
    /// Cloudflare's `trim`, in source pixels (`dpr` applied), before resize and rotation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trim: Option<Trim>,
    /// Bits per second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bitrate: Option<u64>,
    /// Blur radius 1..=250.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub blur: Option<u32>,
    /// Sharpen strength 0..=10; default 0.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sharpen: Option<f32>,
    /// Brightness factor (1 = no change; 0 is ignored, as Cloudflare does).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub brightness: Option<f32>,
    /// Contrast factor (1 = no change; 0 is ignored).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub contrast: Option<f32>,
    /// Gamma factor (1 = no change, above 1 lighter; 0 is ignored).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gamma: Option<f32>,
    /// Saturation factor (1 = no change, 0 = greyscale).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub saturation: Option<f32>,
    /// Mirror horizontally, vertically or both.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flip: Option<Flip>,
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
            trim: None,
            bitrate: None,
            blur: None,
            sharpen: None,
            brightness: None,
            contrast: None,
            gamma: None,
            saturation: None,
            flip: None,
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
        // Cloudflare: 1 is no change and 0 is ignored (saturation 0 is greyscale).
        for f in [&mut self.brightness, &mut self.contrast, &mut self.gamma] {
            if f.is_some_and(|v| v == 1.0 || v == 0.0) {
                *f = None;
            }
        }
        if self.saturation == Some(1.0) {
            self.saturation = None;
        }
        self.trim = self.trim.take().and_then(Trim::normalized);
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
                // A compression setting that cannot change the output is no separate output:
                // zlib levels are PNG's; `fast` turns WebP/AVIF into JPEG (or PNG), and an
                // unset format may be PNG, so only those keep it.
                if let Some(f) = s.format {
                    let keeps = match s.compression {
                        Some(Compression::Fast) => {
                            matches!(f, Format::Png | Format::Webp | Format::Avif | Format::Auto)
                        }
                        Some(Compression::Level(_)) => matches!(f, Format::Png | Format::Auto),
                        None => true,
                    };
                    if !keeps {
                        s.compression = None;
                    }
                }
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

    /// Combinations Cloudflare refuses, checked before [`Self::normalize`] drops what does
    /// not apply: `audio=false` with `mode=audio`, `imageCount` outside spritesheets; and the
    /// image-only adjustments (`brightness`, `contrast`, `gamma`, `saturation`, `flip`) on
    /// another mode.
    pub fn check_combinations(&self) -> Result<(), FilterError> {
        if self.mode != Mode::Image && self.mode != Mode::Original {
            let set = [
                ("brightness", self.brightness.is_some()),
                ("contrast", self.contrast.is_some()),
                ("gamma", self.gamma.is_some()),
                ("saturation", self.saturation.is_some()),
                ("flip", self.flip.is_some()),
                ("trim", self.trim.is_some()),
            ];
            if let Some((param, _)) = set.iter().find(|(_, on)| *on) {
                return Err(FilterError::NotAllowedForMode {
                    param,
                    value: "(set)".into(),
                    mode: self.mode.as_str(),
                    reason: "colour adjustments, flips and trims are for images",
                });
            }
        }
        if let Some(t) = &self.trim {
            t.check("trim")?;
        }
        if self.mode == Mode::Audio && self.audio == Some(false) {
            return Err(FilterError::NotAllowedForMode {
                param: "audio",
                value: "false".into(),
                mode: "audio",
                reason: "mode=audio outputs the audio track; it cannot be removed",
            });
        }
        if let Some(n) = self.image_count {
            if self.mode != Mode::Spritesheet {
                return Err(FilterError::NotAllowedForMode {
                    param: "imageCount",
                    value: n.to_string(),
                    mode: self.mode.as_str(),
                    reason: "imageCount is for mode=spritesheet only",
                });
            }
        }
        Ok(())
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
}
