//! Akamai Image & Video Manager compatibility: recognises Akamai's query parameter names
//! and translates each into canonical parameters (or into the derivative-selection and
//! client-hint inputs that have no canonical twin). It owns the spelling map only; which
//! layer wins (explicit canonical parameters always do), derivative matching and width
//! snapping are decided in `resolve`.
//!
//! | Akamai | canonical |
//! |---|---|
//! | `imwidth` | derivative matching by width (else `width`) |
//! | `imheight`, `h` | `height` |
//! | `w` | `width` |
//! | `impolicy` | `derivative` |
//! | `imformat` | `format` (`h264` → `mp4`); `h265`/`vp9`/`av1` → `codec` |
//! | `imdensity` | `dpr` |
//! | `imref` | `k=v` pairs; `policy`/`impolicy`/`derivative` name a derivative |
//! | `im-viewwidth`, `im-viewheight`, `im-density` | viewport/DPR hints |
//! | `q`, `f` | `quality`, `format` |
//! | `obj-fit` | `fit` (`crop` → `cover`, `fill` → `contain`) |
//! | `start`, `dur` | `time`, `duration` |
//! | `mute=true` | `audio=false` |

use std::borrow::Cow;

use serde::Serialize;

use crate::error::FilterError;
use crate::params::{parse_bool, parse_decimal, parse_uint, Codec, Fit, Format, Param};

/// One Akamai parameter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkamaiParam {
    ImWidth,
    ImHeight,
    ImPolicy,
    ImFormat,
    ImDensity,
    ImRef,
    ViewWidth,
    ViewHeight,
    Density,
    W,
    H,
    Q,
    F,
    ObjFit,
    Start,
    Dur,
    Mute,
}

impl AkamaiParam {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "imwidth" => AkamaiParam::ImWidth,
            "imheight" => AkamaiParam::ImHeight,
            "impolicy" => AkamaiParam::ImPolicy,
            "imformat" => AkamaiParam::ImFormat,
            "imdensity" => AkamaiParam::ImDensity,
            "imref" => AkamaiParam::ImRef,
            "im-viewwidth" => AkamaiParam::ViewWidth,
            "im-viewheight" => AkamaiParam::ViewHeight,
            "im-density" => AkamaiParam::Density,
            "w" => AkamaiParam::W,
            "h" => AkamaiParam::H,
            "q" => AkamaiParam::Q,
            "f" => AkamaiParam::F,
            "obj-fit" => AkamaiParam::ObjFit,
            "start" => AkamaiParam::Start,
            "dur" => AkamaiParam::Dur,
            "mute" => AkamaiParam::Mute,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AkamaiParam::ImWidth => "imwidth",
            AkamaiParam::ImHeight => "imheight",
            AkamaiParam::ImPolicy => "impolicy",
            AkamaiParam::ImFormat => "imformat",
            AkamaiParam::ImDensity => "imdensity",
            AkamaiParam::ImRef => "imref",
            AkamaiParam::ViewWidth => "im-viewwidth",
            AkamaiParam::ViewHeight => "im-viewheight",
            AkamaiParam::Density => "im-density",
            AkamaiParam::W => "w",
            AkamaiParam::H => "h",
            AkamaiParam::Q => "q",
            AkamaiParam::F => "f",
            AkamaiParam::ObjFit => "obj-fit",
            AkamaiParam::Start => "start",
            AkamaiParam::Dur => "dur",
            AkamaiParam::Mute => "mute",
        }
    }

    /// Only a reference (`imref`): on its own it does not make a request a transform. The
    /// viewport and density hints do: as in Image & Video Manager, they size the image on
    /// their own.
    pub fn is_hint(self) -> bool {
        matches!(self, AkamaiParam::ImRef)
    }
}

/// A canonical parameter produced by translation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Translated<'a> {
    /// The Akamai spelling it came from.
    pub from: &'static str,
    #[serde(skip)]
    pub param: Param,
    /// The canonical name.
    pub to: &'static str,
    pub value: Cow<'a, str>,
}

/// Everything the Akamai parameters of one request said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AkamaiInput<'a> {
    /// Canonical parameters, in query order.
    pub translated: Vec<Translated<'a>>,
    /// `imwidth`, kept aside for derivative matching.
    pub imwidth: Option<u32>,
    /// `imref` pairs.
    pub imref: Vec<(String, String)>,
    pub view_width: Option<u32>,
    pub view_height: Option<u32>,
    pub density: Option<f32>,
    /// At least one parameter asked for a transform (not only hints).
    pub transform: bool,
    /// Any Akamai parameter was present.
    pub present: bool,
}

impl AkamaiInput<'_> {
    /// The derivative named inside `imref` (`policy=`, `impolicy=` or `derivative=`).
    pub fn imref_derivative(&self) -> Option<&str> {
        self.imref
            .iter()
            .find(|(k, _)| matches!(k.as_str(), "policy" | "impolicy" | "derivative"))
            .map(|(_, v)| v.as_str())
    }
}

fn hint_px(name: &str, v: &str) -> Result<u32, FilterError> {
    let x =
        parse_uint(v).ok_or_else(|| FilterError::invalid(name, v, "a whole number of pixels"))?;
    if !(1..=10_000).contains(&x) {
        return Err(FilterError::range(name, x, "1..=10000"));
    }
    Ok(x as u32)
}

/// Translates one Akamai parameter into `out`.
pub fn translate<'a>(
    p: AkamaiParam,
    value: Cow<'a, str>,
    out: &mut AkamaiInput<'a>,
) -> Result<(), FilterError> {
    let name = p.name();
    out.present = true;
    let was_transform = out.transform;
    if !p.is_hint() {
        out.transform = true;
    }
    let mut push = |param: Param, value: Cow<'a, str>| {
        out.translated.push(Translated {
            from: name,
            param,
            to: param.name(),
            value,
        })
    };
    match p {
        AkamaiParam::ImWidth => {
            out.imwidth = Some(hint_px(name, &value)?);
        }
        AkamaiParam::ImHeight | AkamaiParam::H => push(Param::Height, value),
        AkamaiParam::W => push(Param::Width, value),
        AkamaiParam::ImPolicy => push(Param::Derivative, value),
        AkamaiParam::ImFormat => {
            if value.eq_ignore_ascii_case("h264") {
                push(Param::Format, Cow::Borrowed("mp4"));
            } else if let Some(c) = Codec::parse_str(&value) {
                push(Param::Codec, Cow::Borrowed(c.as_str()));
            } else if Format::parse_str(&value).is_some() {
                push(Param::Format, value);
            } else {
                // Image & Video Manager falls back to its own format choice for a format
                // it does not know: so does this (the negotiated default), no 400.
                out.transform = was_transform;
            }
        }
        AkamaiParam::ImDensity => push(Param::Dpr, value),
        AkamaiParam::ImRef => {
            out.imref = value
                .split([',', ';'])
                .filter(|s| !s.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once([':', '=']).unwrap_or((kv, ""));
                    (k.trim().to_string(), v.trim().to_string())
                })
                .collect();
            // An imref naming a derivative asks for that derivative.
            if out.imref_derivative().is_some() {
                out.transform = true;
            }
        }
        AkamaiParam::ViewWidth => out.view_width = Some(hint_px(name, &value)?),
        AkamaiParam::ViewHeight => out.view_height = Some(hint_px(name, &value)?),
        AkamaiParam::Density => {
            let d = parse_decimal(&value)
                .filter(|d| *d > 0.0 && *d <= 4.0)
                .ok_or_else(|| {
                    FilterError::range(
                        name,
                        crate::error::quote(&value),
                        "greater than 0, at most 4",
                    )
                })?;
            out.density = Some(d as f32);
        }
        AkamaiParam::Q => push(Param::Quality, value),
        AkamaiParam::F => push(Param::Format, value),
        AkamaiParam::ObjFit => {
            let fit = match value.to_ascii_lowercase().as_str() {
                "crop" => Fit::Cover,
                "fill" => Fit::Contain,
                other => Fit::parse_str(other).ok_or_else(|| {
                    FilterError::invalid(
                        name,
                        &value,
                        "crop, fill, contain, cover, scale-down, pad",
                    )
                })?,
            };
            push(Param::Fit, Cow::Borrowed(fit.as_str()));
        }
        AkamaiParam::Start => push(Param::Time, value),
        AkamaiParam::Dur => push(Param::Duration, value),
        AkamaiParam::Mute => {
            let m = parse_bool(&value)
                .ok_or_else(|| FilterError::invalid(name, &value, "true or false"))?;
            push(
                Param::Audio,
                Cow::Borrowed(if m { "false" } else { "true" }),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Result<AkamaiInput<'static>, FilterError> {
        let mut out = AkamaiInput::default();
        let p = AkamaiParam::from_name(name).expect(name);
        translate(p, Cow::Owned(value.to_string()), &mut out)?;
        Ok(out)
    }

    fn pairs(a: &AkamaiInput) -> Vec<(&'static str, String)> {
        a.translated
            .iter()
            .map(|t| (t.to, t.value.to_string()))
            .collect()
    }

    #[test]
    fn translation_table() {
        for (name, value, want) in [
            ("imheight", "300", vec![("height", "300")]),
            ("h", "300", vec![("height", "300")]),
            ("w", "200", vec![("width", "200")]),
            ("impolicy", "tablet", vec![("derivative", "tablet")]),
            ("imformat", "h264", vec![("format", "mp4")]),
            ("imformat", "H264", vec![("format", "mp4")]),
            ("imformat", "h265", vec![("codec", "h265")]),
            ("imformat", "vp9", vec![("codec", "vp9")]),
            ("imformat", "av1", vec![("codec", "av1")]),
            ("imformat", "webp", vec![("format", "webp")]),
            ("imdensity", "2", vec![("dpr", "2")]),
            ("q", "80", vec![("quality", "80")]),
            ("f", "png", vec![("format", "png")]),
            ("obj-fit", "crop", vec![("fit", "cover")]),
            ("obj-fit", "fill", vec![("fit", "contain")]),
            ("obj-fit", "cover", vec![("fit", "cover")]),
            ("start", "5s", vec![("time", "5s")]),
            ("dur", "10s", vec![("duration", "10s")]),
            ("mute", "true", vec![("audio", "false")]),
            ("mute", "false", vec![("audio", "true")]),
        ] {
            let out = one(name, value).unwrap();
            let want: Vec<_> = want.into_iter().map(|(a, b)| (a, b.to_string())).collect();
            assert_eq!(pairs(&out), want, "{name}={value}");
            assert!(out.transform && out.present);
        }
    }

    #[test]
    fn side_inputs() {
        assert_eq!(one("imwidth", "340").unwrap().imwidth, Some(340));
        let v = one("im-viewwidth", "800").unwrap();
        assert_eq!(v.view_width, Some(800));
        assert!(v.transform, "the viewport sizes an image on its own");
        assert!(!one("imref", "ref=home").unwrap().transform);
        // An unknown imformat falls back to the default format choice.
        let v = one("imformat", "tiff").unwrap();
        assert!(v.translated.is_empty() && !v.transform);
        assert_eq!(one("im-viewheight", "600").unwrap().view_height, Some(600));
        assert_eq!(one("im-density", "2.5").unwrap().density, Some(2.5));
        let r = one("imref", "policy=tablet,width=1280;x").unwrap();
        assert_eq!(
            r.imref,
            vec![
                ("policy".to_string(), "tablet".to_string()),
                ("width".to_string(), "1280".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert_eq!(r.imref_derivative(), Some("tablet"));
        assert!(r.transform, "an imref naming a derivative is a transform");
    }

    #[test]
    fn errors_name_the_akamai_param() {
        for (name, value, msg) in [
            ("imwidth", "abc", "imwidth \"abc\" is invalid"),
            ("imwidth", "0", "imwidth 0 out of range 1..=10000"),
            ("obj-fit", "squash", "obj-fit \"squash\" is invalid"),
            ("mute", "loud", "mute \"loud\" is invalid"),
            ("im-viewwidth", "-1", "im-viewwidth \"-1\" is invalid"),
            (
                "im-density",
                "9",
                "im-density 9 out of range greater than 0, at most 4",
            ),
        ] {
            let e = one(name, value).unwrap_err().to_string();
            assert!(e.starts_with(msg), "{name}={value}: {e}");
        }
    }
}
