//! The parameter table: every canonical query parameter defined once, as one line giving
//! its [`Param`] variant, canonical name and aliases, whether it asks for a transform, the
//! [`TransformSpec`] field it fills, the `checked` function that parses it (none: the value
//! type's own spellings) and, where the field's `Display` is not canonical, its canonical
//! writer. From that line the macro generates the enum, [`Param::ALL`], [`Param::name`],
//! [`Param::from_name`], [`Param::is_transform`], [`TransformSpec::is_set`],
//! [`TransformSpec::set`] and the field order of the canonical query. It must not hold
//! parsing rules or defaults itself: those are `checked`'s and `normalize`'s.

use std::fmt;

use super::checked::{
    adjust_factor, bits_per_second, boolean, clip_length, colour, derivative_name, dimension,
    file_name, gravity_value, hls_part, one_of, rotation, sharpen_strength, speed_factor,
    start_time, whole,
};
use super::scalars::{format_bitrate, format_time};
use super::trim::Trim;
use super::TransformSpec;
use crate::error::FilterError;

/// Generates everything that is "one arm per parameter" from one list. An entry is
///
/// `Variant = "name" | "alias"..., transform|passive [, field.path [: parser] [, canonical writer]];`
///
/// `passive` parameters (playback hints, `filename`, `debug`) leave a request without a
/// transform a passthrough. An entry without a field (`mode`, `dpr`, `debug`) is read by
/// `resolve` itself: `is_set` says false and `set` ignores it. A field of one of our value
/// types (`values`) is parsed by that type's own spellings (`checked::one_of`); any other
/// names its `parser`, called as `parser(name, value)`. `writer` turns the value into its
/// canonical spelling (default: its `Display`).
macro_rules! param_table {
    (@transform transform) => { true };
    (@transform passive) => { false };

    (@is_set $spec:ident) => { false };
    (@is_set $spec:ident, $($field:ident).+) => { $spec.$($field).+.is_some() };

    (@set $spec:ident, $name:ident, $v:ident) => {};
    (@set $spec:ident, $name:ident, $v:ident, $($field:ident).+) => {
        $spec.$($field).+ = Some(one_of($name, $v)?)
    };
    (@set $spec:ident, $name:ident, $v:ident, $($field:ident).+ : $parse:expr) => {
        $spec.$($field).+ = Some(($parse)($name, $v)?)
    };

    (@emit $spec:ident, $emit:ident, $var:ident) => {};
    (@emit $spec:ident, $emit:ident, $var:ident, $($field:ident).+) => {
        if let Some(v) = &$spec.$($field).+ {
            $emit(Param::$var, v);
        }
    };
    (@emit $spec:ident, $emit:ident, $var:ident, $($field:ident).+, $show:expr) => {
        if let Some(v) = $spec.$($field).+ {
            $emit(Param::$var, &($show)(v));
        }
    };

    ($(
        $var:ident = $name:literal $(| $alias:literal)*, $kind:ident
            $(, $($field:ident).+ $(: $parse:expr)? $(, canonical $show:expr)?)?;
    )+) => {
        /// Every canonical query parameter name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Param {
            $($var),+
        }

        impl Param {
            /// All parameters, in canonical order.
            pub const ALL: &'static [Param] = &[$(Param::$var),+];

            /// The canonical name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Param::$var => $name),+
                }
            }

            /// Looks a canonical name up (exact spelling; `imagecount` is also accepted).
            pub fn from_name(name: &str) -> Option<Param> {
                Some(match name {
                    $($name $(| $alias)* => Param::$var,)+
                    _ => return None,
                })
            }

            /// Does this parameter ask for a transform? Playback hints, `filename` and `debug`
            /// alone leave a request a passthrough of the original.
            pub fn is_transform(self) -> bool {
                match self {
                    $(Param::$var => param_table!(@transform $kind)),+
                }
            }
        }

        impl TransformSpec {
            /// Is this spec field set? (`Mode`, `Dpr` and `Debug` are not spec fields: false.)
            pub fn is_set(&self, p: Param) -> bool {
                match p {
                    $(Param::$var => param_table!(@is_set self $(, $($field).+)?)),+
                }
            }

            /// Parses and range-checks one value into its field. `name` is the spelling the
            /// client used (e.g. `imheight`), quoted in errors. Mode-dependent checks (video
            /// width limit, image rotation) happen later in [`Self::validate`].
            /// `Mode`, `Dpr` and `Debug` are not spec fields and are ignored here.
            pub fn set(&mut self, p: Param, name: &str, v: &str) -> Result<(), FilterError> {
                match p {
                    $(Param::$var => {
                        param_table!(@set self, name, v $(, $($field).+ $(: $parse)?)?);
                    })+
                }
                Ok(())
            }

            /// Calls `emit` for every set field, in table order, with its canonical value.
            pub(super) fn for_each_set_field(
                &self,
                emit: &mut dyn FnMut(Param, &dyn fmt::Display),
            ) {
                $(param_table!(@emit self, emit, $var $(, $($field).+ $(, $show)?)?);)+
            }
        }
    };
}

// The order here is the canonical order (of `Param::ALL` and of the canonical query).
param_table! {
    Mode        = "mode",                      transform;
    Width       = "width",                     transform, width: dimension;
    Height      = "height",                    transform, height: dimension;
    Fit         = "fit",                       transform, fit;
    Gravity     = "gravity" | "g",             transform, gravity: gravity_value;
    Format      = "format",                    transform, format;
    Quality     = "quality",                   transform, quality;
    Compression = "compression",               transform, compression;
    Time        = "time",                      transform, time_ms: start_time, canonical format_time;
    Duration    = "duration",                  transform, duration_ms: clip_length, canonical format_time;
    Audio       = "audio",                     transform, audio: boolean;
    Derivative  = "derivative",                transform, derivative: derivative_name;
    ImageCount  = "imageCount" | "imagecount", transform, image_count: whole::<1, 100>;
    Fps         = "fps",                       transform, fps: whole::<1, 60>;
    Speed       = "speed",                     transform, speed: speed_factor;
    Rotate      = "rotate",                    transform, rotate: rotation;
    Crop        = "crop",                      transform, crop;
    Trim        = "trim",                      transform, trim: Trim::parse;
    TrimTop     = "trim.top",                  transform;
    TrimLeft    = "trim.left",                 transform;
    TrimWidth   = "trim.width",                transform;
    TrimHeight  = "trim.height",               transform;
    TrimBorderColor = "trim.border.color",     transform;
    TrimBorderTolerance = "trim.border.tolerance", transform;
    TrimBorderKeep = "trim.border.keep",       transform;
    Bitrate     = "bitrate",                   transform, bitrate: bits_per_second, canonical format_bitrate;
    Blur        = "blur",                      transform, blur: whole::<1, 250>;
    Sharpen     = "sharpen",                   transform, sharpen: sharpen_strength;
    Background  = "background",                transform, background: colour;
    Brightness  = "brightness",                transform, brightness: adjust_factor;
    Contrast    = "contrast",                  transform, contrast: adjust_factor;
    Gamma       = "gamma",                     transform, gamma: adjust_factor;
    Saturation  = "saturation",                transform, saturation: adjust_factor;
    Flip        = "flip",                      transform, flip;
    Animated    = "animated" | "anim",         transform, animated: boolean;
    Codec       = "codec",                     transform, codec;
    Metadata    = "metadata",                  transform, metadata;
    OnError     = "onerror",                   transform, onerror;
    Filename    = "filename",                  passive,   filename: file_name;
    Loop        = "loop",                      passive,   playback.loop_: boolean;
    Autoplay    = "autoplay",                  passive,   playback.autoplay: boolean;
    Muted       = "muted",                     passive,   playback.muted: boolean;
    Preload     = "preload",                   passive,   playback.preload;
    Dpr         = "dpr",                       transform;
    Zoom        = "zoom" | "face-zoom",        transform;
    SlowQuality = "slow-connection-quality" | "scq", transform;
    Debug       = "debug",                     passive;
    Segment     = "segment",                   transform, segment: hls_part;
}

impl Param {
    /// Parameters of a request that `resolve` folds into others and that never appear in
    /// a canonical query: `dpr` (multiplies sizes), `debug`, the dotted `trim.*` parts
    /// (merged into `trim`), `zoom` (only with `gravity=face`) and
    /// `slow-connection-quality` (becomes `quality` on a slow connection).
    pub fn is_request_only(self) -> bool {
        matches!(
            self,
            Param::Dpr | Param::Debug | Param::Zoom | Param::SlowQuality
        ) || self.is_trim_part()
    }

    /// A dotted part of Cloudflare's `trim` (`trim.top`, `trim.border.keep`, ...), merged
    /// into the one `trim` field.
    pub fn is_trim_part(self) -> bool {
        matches!(
            self,
            Param::TrimTop
                | Param::TrimLeft
                | Param::TrimWidth
                | Param::TrimHeight
                | Param::TrimBorderColor
                | Param::TrimBorderTolerance
                | Param::TrimBorderKeep
        )
    }
}
