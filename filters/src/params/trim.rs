//! Cloudflare's `trim`: pixels cut off the sides of the source before it is resized or
//! rotated. One value holds every way of asking for it — `trim=top;right;bottom;left`,
//! `trim.top`/`trim.left`/`trim.width`/`trim.height`, and `trim=border` with
//! `trim.border.color`/`.tolerance`/`.keep` — so that all spellings of one trim are one
//! field, one canonical value and one cache key. It owns that grammar and the merge of the
//! dotted parts; where the border is and what is left of a given image are the image
//! engine's.

use std::fmt;

use super::scalars::{parse_color, parse_uint};
use super::Param;
use crate::error::{quote, FilterError};

/// Largest side trim, trimmed width/height or border kept, in source pixels.
pub const MAX_TRIM: u32 = 16_384;
/// `trim.border.tolerance` when none is given: a pixel within 10 of the border colour on
/// every channel is border (Cloudflare: 0 = need not match, 255 = must match exactly).
pub const DEFAULT_TOLERANCE: u8 = 245;

/// What `trim` asks for, in source pixels (before `dpr` is applied by `resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Trim {
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub left: u32,
    /// Keep this many columns from the left edge (after `left`).
    pub width: Option<u32>,
    /// Keep this many rows from the top edge (after `top`).
    pub height: Option<u32>,
    /// `trim=border`: cut the sides that are of one colour.
    pub border: Option<TrimBorder>,
}

/// `trim=border` and its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TrimBorder {
    /// `#rrggbb[aa]`; `None`: the colour of the image's corners.
    pub color: Option<String>,
    /// 0..=255, 255 = exact; `None`: [`DEFAULT_TOLERANCE`].
    pub tolerance: Option<u8>,
    /// Pixels of the border left in place on each trimmed side.
    pub keep: Option<u32>,
}

impl TrimBorder {
    pub fn tolerance(&self) -> u8 {
        self.tolerance.unwrap_or(DEFAULT_TOLERANCE)
    }
}

const EXPECTED: &str = "top;right;bottom;left in pixels (e.g. 20;30;20;0) or border";

fn pixels(name: &str, v: &str, lo: u32) -> Result<u32, FilterError> {
    let x =
        parse_uint(v).ok_or_else(|| FilterError::invalid(name, v, "a whole number of pixels"))?;
    if !(u64::from(lo)..=u64::from(MAX_TRIM)).contains(&x) {
        return Err(FilterError::range(name, x, &format!("{lo}..={MAX_TRIM}")));
    }
    Ok(x as u32)
}

fn tolerance(name: &str, v: &str) -> Result<u8, FilterError> {
    Ok(pixels(name, v, 0)
        .and_then(|t| u8::try_from(t).map_err(|_| FilterError::range(name, t, "0..=255")))?
        as u8)
}

fn colour(name: &str, v: &str) -> Result<String, FilterError> {
    parse_color(v).ok_or_else(|| {
        FilterError::invalid(name, v, "a CSS colour (#rrggbb, rgb(), rgba() or a name)")
    })
}

impl Trim {
    /// Parses `trim`: Cloudflare's `top;right;bottom;left` or `border`, optionally followed
    /// by `;w=N`, `;h=N` (sides) or `;color=C`, `;tolerance=N`, `;keep=N` (border) — the
    /// canonical form of the dotted parts.
    pub fn parse(name: &str, v: &str) -> Result<Trim, FilterError> {
        let mut items = v.split(';');
        let mut t = Trim::default();
        let first = items.next().unwrap_or("");
        if first.eq_ignore_ascii_case("border") {
            t.border = Some(TrimBorder::default());
        } else {
            let mut sides = [0u32; 4];
            let mut it = std::iter::once(first).chain(items.by_ref().take(3));
            for s in &mut sides {
                let part = it
                    .next()
                    .ok_or_else(|| FilterError::invalid(name, v, EXPECTED))?;
                *s = pixels(name, part, 0)?;
            }
            [t.top, t.right, t.bottom, t.left] = sides;
        }
        for item in items {
            let (k, val) = item
                .split_once('=')
                .ok_or_else(|| FilterError::invalid(name, v, EXPECTED))?;
            let part = match k {
                "w" => Param::TrimWidth,
                "h" => Param::TrimHeight,
                "color" => Param::TrimBorderColor,
                "tolerance" => Param::TrimBorderTolerance,
                "keep" => Param::TrimBorderKeep,
                _ => return Err(FilterError::invalid(name, v, EXPECTED)),
            };
            t.set_part(part, part.name(), val)?;
        }
        t.check(name)?;
        Ok(t)
    }

    /// Is the dotted part `p` already given?
    pub fn has_part(&self, p: Param) -> bool {
        let b = self.border.as_ref();
        match p {
            Param::TrimTop => self.top != 0,
            Param::TrimLeft => self.left != 0,
            Param::TrimWidth => self.width.is_some(),
            Param::TrimHeight => self.height.is_some(),
            Param::TrimBorderColor => b.is_some_and(|b| b.color.is_some()),
            Param::TrimBorderTolerance => b.is_some_and(|b| b.tolerance.is_some()),
            Param::TrimBorderKeep => b.is_some_and(|b| b.keep.is_some()),
            _ => false,
        }
    }

    /// Sets one dotted part (`trim.left=30`, `trim.border.keep=2`). A border setting asks
    /// for a border trim ([`Trim::check`] refuses one beside pixel amounts).
    pub fn set_part(&mut self, p: Param, name: &str, v: &str) -> Result<(), FilterError> {
        match p {
            Param::TrimTop => self.top = pixels(name, v, 0)?,
            Param::TrimLeft => self.left = pixels(name, v, 0)?,
            Param::TrimWidth => self.width = Some(pixels(name, v, 1)?),
            Param::TrimHeight => self.height = Some(pixels(name, v, 1)?),
            Param::TrimBorderColor => self.border_mut().color = Some(colour(name, v)?),
            Param::TrimBorderTolerance => self.border_mut().tolerance = Some(tolerance(name, v)?),
            Param::TrimBorderKeep => self.border_mut().keep = Some(pixels(name, v, 0)?),
            _ => {}
        }
        Ok(())
    }

    fn border_mut(&mut self) -> &mut TrimBorder {
        self.border.get_or_insert_with(TrimBorder::default)
    }

    /// A border trim is one of its own: no sides, width or height beside it. `name` is
    /// quoted in the error.
    pub fn check(&self, name: &str) -> Result<(), FilterError> {
        if self.border.is_some()
            && (self.has_sides() || self.width.is_some() || self.height.is_some())
        {
            return Err(FilterError::Unavailable {
                param: name.to_string(),
                value: quote(&self.to_string()),
                reason: "trim=border cannot be combined with trimming by pixels",
            });
        }
        Ok(())
    }

    fn has_sides(&self) -> bool {
        self.top != 0 || self.right != 0 || self.bottom != 0 || self.left != 0
    }

    /// Does it trim anything at all?
    pub fn is_noop(&self) -> bool {
        !self.has_sides() && self.width.is_none() && self.height.is_none() && self.border.is_none()
    }

    /// The defaults dropped, so that spellings of one trim compare equal.
    pub fn normalized(mut self) -> Option<Trim> {
        if let Some(b) = &mut self.border {
            if b.tolerance == Some(DEFAULT_TOLERANCE) {
                b.tolerance = None;
            }
            if b.keep == Some(0) {
                b.keep = None;
            }
        }
        (!self.is_noop()).then_some(self)
    }

    /// Pixel amounts multiplied by `dpr` (Cloudflare: trim takes `dpr` into account).
    pub fn scaled(mut self, dpr: f32) -> Trim {
        let s = |v: u32| ((v as f32 * dpr).round() as u32).min(MAX_TRIM);
        [self.top, self.right, self.bottom, self.left] =
            [s(self.top), s(self.right), s(self.bottom), s(self.left)];
        self.width = self.width.map(|w| s(w).max(1));
        self.height = self.height.map(|h| s(h).max(1));
        if let Some(k) = self.border.as_mut().and_then(|b| b.keep.as_mut()) {
            *k = s(*k);
        }
        self
    }
}

impl fmt::Display for Trim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.border {
            Some(b) => {
                f.write_str("border")?;
                if let Some(c) = &b.color {
                    write!(f, ";color={c}")?;
                }
                if let Some(t) = b.tolerance {
                    write!(f, ";tolerance={t}")?;
                }
                if let Some(k) = b.keep {
                    write!(f, ";keep={k}")?;
                }
                Ok(())
            }
            None => {
                write!(
                    f,
                    "{};{};{};{}",
                    self.top, self.right, self.bottom, self.left
                )?;
                if let Some(w) = self.width {
                    write!(f, ";w={w}")?;
                }
                if let Some(h) = self.height {
                    write!(f, ";h={h}")?;
                }
                Ok(())
            }
        }
    }
}

impl serde::Serialize for Trim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Trim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Trim::parse("trim", &s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_trim_is_one_value() {
        let t = Trim::parse("trim", "20;30;20;0").unwrap();
        assert_eq!((t.top, t.right, t.bottom, t.left), (20, 30, 20, 0));
        assert_eq!(t.to_string(), "20;30;20;0");
        let mut d = Trim::default();
        d.set_part(Param::TrimTop, "trim.top", "20").unwrap();
        d.set_part(Param::TrimLeft, "trim.left", "30").unwrap();
        d.set_part(Param::TrimWidth, "trim.width", "678").unwrap();
        assert_eq!(d.to_string(), "20;0;0;30;w=678");
        assert_eq!(Trim::parse("trim", &d.to_string()).unwrap(), d);
        let b = Trim::parse("trim", "border;color=#fff;tolerance=245;keep=0").unwrap();
        assert_eq!(
            b.clone().normalized().unwrap().to_string(),
            "border;color=#ffffff"
        );
        assert_eq!(Trim::parse("trim", "border").unwrap().to_string(), "border");
        assert_eq!(Trim::parse("trim", "0;0;0;0").unwrap().normalized(), None);
        let s = Trim::parse("trim", "10;0;0;5;w=100").unwrap().scaled(2.0);
        assert_eq!(s.to_string(), "20;0;0;10;w=200");
    }

    #[test]
    fn bad_trims_name_what_is_allowed() {
        for bad in [
            "20;30;20",
            "a;b;c;d",
            "1;2;3;4;5",
            "border;x=1",
            "20000;0;0;0",
            "border;w=5",
        ] {
            let e = Trim::parse("trim", bad).unwrap_err().to_string();
            assert!(e.contains("trim"), "{bad}: {e}");
        }
        let mut t = Trim::default();
        assert!(t
            .set_part(Param::TrimBorderTolerance, "trim.border.tolerance", "256")
            .is_err());
        assert!(t.set_part(Param::TrimWidth, "trim.width", "0").is_err());
        assert!(t
            .set_part(Param::TrimBorderColor, "trim.border.color", "nope")
            .is_err());
    }
}
