//! Named presets: looking a derivative up, choosing one from an Akamai `imwidth` by the
//! configured derivative widths, applying one to a spec (its dimensions replace the
//! request's, its other fields fill in what the request left unset) and breakpoint
//! snapping. It owns these rules only; where the name came from is `resolve`'s business.

use crate::config::{Derivative, FiltersConfig};
use crate::error::{quote, FilterError};
use crate::params::{parse_time, Mode, TransformSpec};

/// The configured derivative `name`, or an error listing the known names.
pub fn lookup<'c>(cfg: &'c FiltersConfig, name: &str) -> Result<&'c Derivative, FilterError> {
    cfg.derivatives
        .get(name)
        .ok_or_else(|| FilterError::UnknownDerivative {
            name: quote(name),
            known: cfg
                .derivatives
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The derivative an `imwidth` selects: among derivatives with `breakpoint = true` and a
/// width, the narrowest at least `width` wide, else the widest (ties by name). `None` when
/// no derivative is selectable.
pub fn match_width(cfg: &FiltersConfig, width: u32) -> Option<&str> {
    let mut best_up: Option<(u32, &str)> = None;
    let mut widest: Option<(u32, &str)> = None;
    for (name, d) in &cfg.derivatives {
        let Some(w) = d.width.filter(|_| d.breakpoint) else {
            continue;
        };
        if w >= width && best_up.is_none_or(|(bw, _)| w < bw) {
            best_up = Some((w, name));
        }
        if widest.is_none_or(|(ww, _)| w > ww) {
            widest = Some((w, name));
        }
    }
    best_up.or(widest).map(|(_, n)| n)
}

/// Rounds `width` up to the next breakpoint, capped at the largest; unchanged when there
/// are no breakpoints. `snap(340, [320, 640, 1024]) == 640`.
pub fn snap(width: u32, breakpoints: &[u32]) -> u32 {
    breakpoints
        .iter()
        .copied()
        .find(|&b| b >= width)
        .or_else(|| breakpoints.iter().copied().max())
        .unwrap_or(width)
}

/// Applies derivative `name`: width/height replace the spec's (when the derivative sets
/// them), fit/format/quality/time fill unset fields, `mode` fills an unset mode.
pub fn apply(spec: &mut TransformSpec, mode: &mut Option<Mode>, name: &str, d: &Derivative) {
    if d.width.is_some() || d.height.is_some() {
        spec.width = d.width;
        spec.height = d.height;
    }
    if spec.fit.is_none() {
        spec.fit = d.fit;
    }
    if spec.format.is_none() {
        spec.format = d.format;
    }
    if spec.quality.is_none() {
        spec.quality = d.quality;
    }
    if spec.time_ms.is_none() {
        spec.time_ms = d.time.as_deref().and_then(parse_time);
    }
    if mode.is_none() {
        *mode = d.mode;
    }
    spec.derivative = Some(name.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Fit, Format};

    #[test]
    fn snap_table() {
        let bp = [320, 640, 1024, 2048, 5000];
        for (w, want) in [
            (1, 320),
            (320, 320),
            (321, 640),
            (340, 640),
            (1024, 1024),
            (3000, 5000),
            (9000, 5000),
        ] {
            assert_eq!(snap(w, &bp), want, "{w}");
        }
        assert_eq!(snap(123, &[]), 123);
    }

    #[test]
    fn match_width_table() {
        let cfg = FiltersConfig::default();
        for (w, want) in [
            (100, "mobile"),
            (854, "mobile"),
            (855, "tablet"),
            (1280, "tablet"),
            (5000, "tablet"),
        ] {
            assert_eq!(match_width(&cfg, w), Some(want), "{w}");
        }
        let mut none = FiltersConfig::default();
        none.derivatives.retain(|k, _| k == "thumbnail");
        assert_eq!(match_width(&none, 640), None);
    }

    #[test]
    fn lookup_lists_known() {
        let cfg = FiltersConfig::default();
        assert!(lookup(&cfg, "tablet").is_ok());
        assert_eq!(
            lookup(&cfg, "phablet").unwrap_err().to_string(),
            "unknown derivative \"phablet\" (known: mobile, tablet, thumbnail)"
        );
    }

    #[test]
    fn apply_replaces_dims_and_fills_rest() {
        let cfg = FiltersConfig::default();
        let mut s = TransformSpec::new(Mode::Image);
        s.width = Some(100);
        s.height = Some(100);
        s.format = Some(Format::Webp);
        let mut mode = None;
        apply(
            &mut s,
            &mut mode,
            "thumbnail",
            &cfg.derivatives["thumbnail"],
        );
        assert_eq!((s.width, s.height), (Some(640), Some(360)));
        assert_eq!(s.format, Some(Format::Webp), "explicit format kept");
        assert_eq!(mode, Some(Mode::Frame));
        assert_eq!(s.time_ms, Some(0));
        assert_eq!(s.derivative.as_deref(), Some("thumbnail"));
        let mut s = TransformSpec::new(Mode::Image);
        apply(&mut s, &mut None, "tablet", &cfg.derivatives["tablet"]);
        assert_eq!(
            (s.width, s.height, s.fit),
            (Some(1280), Some(720), Some(Fit::Contain))
        );
    }
}
