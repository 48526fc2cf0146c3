//! Output geometry for video, frames and spritesheets: from the source's display size and
//! the requested box, `fit` and `gravity`, decides the scale, the crop window and the
//! padding, and writes them as an FFmpeg filter chain. Pure arithmetic, no FFmpeg calls, so
//! every fit mode is unit-tested with a table. It must not know about codecs or files.

use filters::{Fit, Gravity};

/// Where the scaled picture goes and how big the output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Size the source is scaled to.
    pub scale_w: u32,
    pub scale_h: u32,
    /// Window cut out of the scaled picture (`cover`, `crop`): `w, h, x, y`.
    pub crop: Option<(u32, u32, u32, u32)>,
    /// Canvas the scaled picture is placed on (`pad`): `w, h, x, y`.
    pub pad: Option<(u32, u32, u32, u32)>,
    /// Final output size.
    pub out_w: u32,
    pub out_h: u32,
}

/// Requested output box plus limits.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub gravity: Gravity,
    /// Largest output width/height; the box is shrunk (keeping its aspect) to fit.
    pub max_w: u32,
    pub max_h: u32,
    /// Round every dimension to an even number (yuv420p encoders need it).
    pub even: bool,
}

fn round_dim(v: f64, even: bool) -> u32 {
    let v = v.round().max(1.0);
    if even {
        let v = v as u32;
        (v + (v & 1)).max(2)
    } else {
        v as u32
    }
}

/// Anchors a window of `inner` inside `outer` along one axis; `pos` in thousandths.
fn anchor(outer: u32, inner: u32, pos: u32, even: bool) -> u32 {
    let slack = outer.saturating_sub(inner);
    let x = (u64::from(slack) * u64::from(pos) / 1000) as u32;
    if even {
        x & !1
    } else {
        x
    }
}

/// Gravity as thousandths `(x, y)`; `auto` means centre (no saliency detection in video).
fn gravity_pos(g: Gravity) -> (u32, u32) {
    match g {
        Gravity::Auto | Gravity::Center => (500, 500),
        Gravity::Top => (500, 0),
        Gravity::Bottom => (500, 1000),
        Gravity::Left => (0, 500),
        Gravity::Right => (1000, 500),
        Gravity::Focal { x, y } => (u32::from(x), u32::from(y)),
    }
}

/// Computes the plan for a `src_w`×`src_h` picture (display orientation).
pub fn plan(src_w: u32, src_h: u32, req: &Request) -> Plan {
    let (sw, sh) = (f64::from(src_w.max(1)), f64::from(src_h.max(1)));
    let (max_w, max_h) = (f64::from(req.max_w.max(2)), f64::from(req.max_h.max(2)));
    let even = req.even;
    // The box: missing sides follow the source's aspect.
    let (bw, bh) = match (req.width, req.height) {
        (Some(w), Some(h)) => (f64::from(w), f64::from(h)),
        (Some(w), None) => (f64::from(w), f64::from(w) * sh / sw),
        (None, Some(h)) => (f64::from(h) * sw / sh, f64::from(h)),
        (None, None) => (sw, sh),
    };
    // Shrink the box into the limits, keeping its aspect.
    let k = (max_w / bw).min(max_h / bh).min(1.0);
    let (bw, bh) = (bw * k, bh * k);
    let only_one_side = req.width.is_none() || req.height.is_none();
    let fit = if only_one_side && !matches!(req.fit, Fit::ScaleDown) {
        // With one side given every fit degenerates to a proportional resize.
        Fit::Contain
    } else {
        req.fit
    };
    let (gx, gy) = gravity_pos(req.gravity);
    let contain = (bw / sw).min(bh / sh);
    let cover = (bw / sw).max(bh / sh);
    let simple = |s: f64| {
        let (w, h) = (round_dim(sw * s, even), round_dim(sh * s, even));
        Plan {
            scale_w: w,
            scale_h: h,
            crop: None,
            pad: None,
            out_w: w,
            out_h: h,
        }
    };
    match fit {
        Fit::Contain => simple(contain),
        Fit::ScaleDown => simple(contain.min(1.0)),
        Fit::Fill => {
            let (w, h) = (round_dim(bw, even), round_dim(bh, even));
            Plan {
                scale_w: w,
                scale_h: h,
                crop: None,
                pad: None,
                out_w: w,
                out_h: h,
            }
        }
        Fit::Cover | Fit::Crop => {
            // `crop` never enlarges; `cover` does.
            let s = if fit == Fit::Crop {
                cover.min(1.0)
            } else {
                cover
            };
            let (w, h) = (round_dim(sw * s, even), round_dim(sh * s, even));
            let (cw, ch) = (round_dim(bw, even).min(w), round_dim(bh, even).min(h));
            let crop = (cw, ch, anchor(w, cw, gx, even), anchor(h, ch, gy, even));
            Plan {
                scale_w: w,
                scale_h: h,
                crop: (cw != w || ch != h).then_some(crop),
                pad: None,
                out_w: cw,
                out_h: ch,
            }
        }
        Fit::Pad => {
            let (w, h) = (round_dim(sw * contain, even), round_dim(sh * contain, even));
            let (pw, ph) = (round_dim(bw, even).max(w), round_dim(bh, even).max(h));
            let pad = (pw, ph, anchor(pw, w, gx, even), anchor(ph, h, gy, even));
            Plan {
                scale_w: w,
                scale_h: h,
                crop: None,
                pad: (pw != w || ph != h).then_some(pad),
                out_w: pw,
                out_h: ph,
            }
        }
    }
}

impl Plan {
    /// The filter chain (`scale=…[,crop=…][,pad=…]`) for this plan. `background` is an
    /// FFmpeg colour (`black`, `0xRRGGBB`).
    pub fn filters(&self, src_w: u32, src_h: u32, background: &str) -> Vec<String> {
        let mut f = Vec::new();
        if (self.scale_w, self.scale_h) != (src_w, src_h) {
            f.push(format!(
                "scale={}:{}:flags=bicubic",
                self.scale_w, self.scale_h
            ));
        }
        if let Some((w, h, x, y)) = self.crop {
            f.push(format!("crop={w}:{h}:{x}:{y}"));
        }
        if let Some((w, h, x, y)) = self.pad {
            f.push(format!("pad={w}:{h}:{x}:{y}:color={background}"));
        }
        f
    }
}

/// `#rrggbb[aa]` (the spec's normalised form) → FFmpeg's `0xRRGGBB[AA]`; black otherwise.
pub fn ffmpeg_color(bg: Option<&str>) -> String {
    match bg.and_then(|s| s.strip_prefix('#')) {
        Some(hex)
            if (hex.len() == 6 || hex.len() == 8) && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("0x{hex}")
        }
        _ => "black".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(w: Option<u32>, h: Option<u32>, fit: Fit) -> Request {
        Request {
            width: w,
            height: h,
            fit,
            gravity: Gravity::Center,
            max_w: 1920,
            max_h: 1080,
            even: false,
        }
    }

    #[test]
    fn fit_modes_table() {
        // (src, width, height, fit) → (out, scale, crop, pad)
        let cases: &[(
            (u32, u32),
            Option<u32>,
            Option<u32>,
            Fit,
            (u32, u32),
            (u32, u32),
        )] = &[
            (
                (1280, 720),
                Some(640),
                None,
                Fit::Contain,
                (640, 360),
                (640, 360),
            ),
            (
                (1280, 720),
                None,
                Some(180),
                Fit::Contain,
                (320, 180),
                (320, 180),
            ),
            (
                (1280, 720),
                Some(400),
                Some(400),
                Fit::Contain,
                (400, 225),
                (400, 225),
            ),
            (
                (1280, 720),
                Some(400),
                Some(400),
                Fit::Cover,
                (400, 400),
                (711, 400),
            ),
            (
                (1280, 720),
                Some(400),
                Some(400),
                Fit::Fill,
                (400, 400),
                (400, 400),
            ),
            (
                (1280, 720),
                Some(400),
                Some(400),
                Fit::Pad,
                (400, 400),
                (400, 225),
            ),
            (
                (320, 180),
                Some(640),
                Some(640),
                Fit::ScaleDown,
                (320, 180),
                (320, 180),
            ),
            (
                (320, 180),
                Some(640),
                Some(640),
                Fit::Contain,
                (640, 360),
                (640, 360),
            ),
            (
                (320, 180),
                Some(100),
                Some(100),
                Fit::Crop,
                (100, 100),
                (178, 100),
            ),
            (
                (320, 180),
                Some(640),
                Some(640),
                Fit::Crop,
                (320, 180),
                (320, 180),
            ),
            (
                (1280, 720),
                None,
                None,
                Fit::Contain,
                (1280, 720),
                (1280, 720),
            ),
            // Limits: a 4K source is shrunk to the 1920x1080 thumbnail box.
            (
                (3840, 2160),
                None,
                None,
                Fit::Contain,
                (1920, 1080),
                (1920, 1080),
            ),
        ];
        for &((sw, sh), w, h, fit, out, scale) in cases {
            let p = plan(sw, sh, &req(w, h, fit));
            assert_eq!((p.out_w, p.out_h), out, "{sw}x{sh} {w:?}x{h:?} {fit:?}");
            assert_eq!(
                (p.scale_w, p.scale_h),
                scale,
                "{sw}x{sh} {w:?}x{h:?} {fit:?}"
            );
        }
    }

    #[test]
    fn gravity_moves_the_crop_and_pad() {
        let mut r = req(Some(400), Some(400), Fit::Cover);
        r.gravity = Gravity::Left;
        assert_eq!(plan(1280, 720, &r).crop, Some((400, 400, 0, 0)));
        r.gravity = Gravity::Right;
        assert_eq!(plan(1280, 720, &r).crop, Some((400, 400, 311, 0)));
        r.fit = Fit::Pad;
        r.gravity = Gravity::Top;
        assert_eq!(plan(1280, 720, &r).pad, Some((400, 400, 0, 0)));
        r.gravity = Gravity::Focal { x: 500, y: 1000 };
        assert_eq!(plan(1280, 720, &r).pad, Some((400, 400, 0, 175)));
    }

    #[test]
    fn even_dimensions_for_video() {
        let mut r = req(Some(641), None, Fit::Contain);
        r.even = true;
        let p = plan(1280, 720, &r);
        assert_eq!((p.out_w % 2, p.out_h % 2), (0, 0));
        r.width = Some(333);
        r.height = Some(333);
        r.fit = Fit::Cover;
        let p = plan(1279, 719, &r);
        assert_eq!((p.out_w % 2, p.out_h % 2), (0, 0));
        let (_, _, x, y) = p.crop.unwrap_or_default();
        assert_eq!((x % 2, y % 2), (0, 0));
    }

    #[test]
    fn filter_strings() {
        let p = plan(1280, 720, &req(Some(400), Some(400), Fit::Pad));
        assert_eq!(
            p.filters(1280, 720, "black"),
            vec![
                "scale=400:225:flags=bicubic".to_string(),
                "pad=400:400:0:87:color=black".to_string()
            ]
        );
        assert!(plan(640, 360, &req(None, None, Fit::Contain))
            .filters(640, 360, "black")
            .is_empty());
        assert_eq!(ffmpeg_color(Some("#ff0000")), "0xff0000");
        assert_eq!(ffmpeg_color(None), "black");
    }
}
