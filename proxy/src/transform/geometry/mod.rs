//! The one geometry planner of the node, for images, video frames, spritesheet tiles and
//! video renditions alike: from source dimensions and the requested box (width, height, fit,
//! gravity) to the region of the source to keep, the size it is resized to, and the canvas it
//! is placed on. No pixels, no codecs, no I/O: every function here is a value-to-value
//! transformation with table tests (`tests.rs`). The engines turn a [`Plan`] into work (the
//! image engine's resize/pad, the video engine's `crop`/`scale`/`pad` filters); they must
//! not plan on their own.
//!
//! Fit semantics follow Cloudflare Image Resizing:
//! - `contain` (default): as large as possible inside the box, aspect kept; may enlarge.
//! - `scale-down`: like `contain`, but never enlarges.
//! - `cover`: fills the box exactly, aspect kept, the overflow cropped around the gravity;
//!   may enlarge.
//! - `crop`: like `cover` but never enlarges: an image smaller than the box is left as is
//!   on that axis (the output may then be smaller than the box).
//! - `pad`: `contain`, then placed on a canvas of exactly the box (background colour), the
//!   gravity choosing where; may enlarge.
//! - `fill`: stretched to exactly the box, aspect ignored (CSS `object-fit: fill`, Cloudflare
//!   `squeeze`).
//!
//! With only one of width/height every fit scales proportionally to that side (`scale-down`
//! and `crop` still never enlarge). With neither, the source size is kept. In every case the
//! output is shrunk (aspect kept) to at most [`Request::max`]; a *requested* side over it is
//! an error ([`OverMax::Refuse`], images) or shrunk with the rest ([`OverMax::Shrink`],
//! video, whose limits are a box such as the thumbnail's 1920×1080). Video asks for even
//! sizes and offsets ([`Request::even`]): yuv420p encoders need them.

use filters::{Fit, Gravity, TransformSpec};
/// An integer rectangle in pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn full(w: u32, h: u32) -> Rect {
        Rect { x: 0, y: 0, w, h }
    }
}

/// What to do with a source image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// The region of the source that is kept.
    pub src: Rect,
    /// The size that region is resized to.
    pub resize: (u32, u32),
    /// The output size: `resize` unless padded.
    pub canvas: (u32, u32),
    /// Where the resized region sits on the canvas (non-zero only when padded).
    pub offset: (u32, u32),
}

impl Plan {
    /// Does the plan change any pixel (crop, resize or pad)?
    pub fn is_identity(&self, src_w: u32, src_h: u32) -> bool {
        self.src == Rect::full(src_w, src_h)
            && self.resize == (src_w, src_h)
            && self.canvas == self.resize
    }
}

/// The requested box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    /// Anchor in 0.0..=1.0 on each axis: (0.5, 0.5) is the centre, (0, 0) the top-left.
    pub anchor: (f64, f64),
    /// Largest output width and height.
    pub max: (u32, u32),
    /// What a requested side over `max` is.
    pub over_max: OverMax,
    /// Every output size and offset even (rounded up for sizes, down for offsets).
    pub even: bool,
}

/// What a requested side over the limit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverMax {
    /// An error ([`GeometryError::RequestedSide`]).
    Refuse,
    /// The box is shrunk (aspect kept) like any derived size.
    Shrink,
}

impl Request {
    /// The spec's box, fit (default `contain`) and gravity (`auto` as the centre: see
    /// [`anchor`]), limited to `max_side` a side and refused over it.
    pub fn from_spec(spec: &TransformSpec, max_side: u32) -> Request {
        Request {
            width: spec.width,
            height: spec.height,
            fit: spec.fit.unwrap_or(Fit::Contain),
            anchor: anchor(spec.gravity).unwrap_or((0.5, 0.5)),
            max: (max_side, max_side),
            over_max: OverMax::Refuse,
            even: false,
        }
    }
}
/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("source has an empty dimension ({0}x{1})")]
    EmptySource(u32, u32),
    #[error("{name} {value} out of range 1..={max}")]
    RequestedSide {
        name: &'static str,
        value: u32,
        max: u32,
    },
    #[error("trim {trim} leaves nothing of the {w}x{h} image")]
    TrimsEverything { trim: String, w: u32, h: u32 },
    #[error("crop {w}:{h}:{x}:{y} lies outside the {src_w}x{src_h} image")]
    CropOutside {
        w: u32,
        h: u32,
        x: u32,
        y: u32,
        src_w: u32,
        src_h: u32,
    },
}

/// The anchor of a gravity; `None` for `auto`, which needs the pixels (see `ops::auto_anchor`).
pub fn anchor(g: Option<Gravity>) -> Option<(f64, f64)> {
    Some(match g.unwrap_or(Gravity::Center) {
        Gravity::Auto => return None,
        Gravity::Center => (0.5, 0.5),
        Gravity::Top => (0.5, 0.0),
        Gravity::Bottom => (0.5, 1.0),
        Gravity::Left => (0.0, 0.5),
        Gravity::Right => (1.0, 0.5),
        Gravity::Focal { x, y } => (f64::from(x) / 1000.0, f64::from(y) / 1000.0),
    })
}

fn round_dim(v: f64) -> u32 {
    if !v.is_finite() || v < 1.0 {
        1
    } else if v > f64::from(u32::MAX) {
        u32::MAX
    } else {
        v.round().max(1.0) as u32
    }
}

/// Places a window of `win` inside `total` so that the anchor point `a` (0..=1) of the source
/// is as close to the window's centre as the edges allow.
pub fn place(total: u32, win: u32, a: f64) -> u32 {
    if win >= total {
        return 0;
    }
    let free = f64::from(total - win);
    let ideal = a.clamp(0.0, 1.0) * f64::from(total) - f64::from(win) / 2.0;
    ideal.clamp(0.0, free).round() as u32
}

/// Plans the geometry for a `src_w`×`src_h` source.
pub fn plan(src_w: u32, src_h: u32, req: &Request) -> Result<Plan, GeometryError> {
    if src_w == 0 || src_h == 0 {
        return Err(GeometryError::EmptySource(src_w, src_h));
    }
    let max = (req.max.0.max(1), req.max.1.max(1));
    for (name, v, max) in [("width", req.width, max.0), ("height", req.height, max.1)] {
        if let Some(v) = v {
            if v == 0 || (v > max && req.over_max == OverMax::Refuse) {
                return Err(GeometryError::RequestedSide {
                    name,
                    value: v,
                    max,
                });
            }
        }
    }
    let (w, h) = (f64::from(src_w), f64::from(src_h));
    let full = Rect::full(src_w, src_h);
    let never_enlarge = matches!(req.fit, Fit::ScaleDown | Fit::Crop);
    let plain = |size: (u32, u32)| Plan {
        src: full,
        resize: size,
        canvas: size,
        offset: (0, 0),
    };
    // The plan, and its resize before rounding (what a shrink to the limit scales).
    let (mut p, exact) = match shrunk_box(req, max) {
        (None, None) => (plain((src_w, src_h)), (w, h)),
        (Some(tw), Some(th)) => {
            let (sx, sy) = (f64::from(tw) / w, f64::from(th) / h);
            match req.fit {
                Fit::Contain | Fit::ScaleDown | Fit::Pad => {
                    let mut s = sx.min(sy);
                    if req.fit == Fit::ScaleDown {
                        s = s.min(1.0);
                    }
                    let size = if s == 1.0 {
                        (src_w, src_h)
                    } else {
                        (tw.min(round_dim(w * s)), th.min(round_dim(h * s)))
                    };
                    let mut p = plain(size);
                    if req.fit == Fit::Pad {
                        p.canvas = (tw, th);
                    }
                    (p, (w * s, h * s))
                }
                Fit::Cover | Fit::Crop => {
                    let mut s = sx.max(sy);
                    if req.fit == Fit::Crop {
                        s = s.min(1.0);
                    }
                    // Output size: the box, limited by the scaled source on each axis.
                    let out_w = tw.min(round_dim(w * s));
                    let out_h = th.min(round_dim(h * s));
                    // Source window that maps onto the output.
                    let win_w = src_w.min(round_dim(f64::from(out_w) / s));
                    let win_h = src_h.min(round_dim(f64::from(out_h) / s));
                    let src = Rect {
                        x: place(src_w, win_w, req.anchor.0),
                        y: place(src_h, win_h, req.anchor.1),
                        w: win_w,
                        h: win_h,
                    };
                    let p = Plan {
                        src,
                        ..plain((out_w, out_h))
                    };
                    (p, (f64::from(out_w), f64::from(out_h)))
                }
                Fit::Fill => (plain((tw, th)), (f64::from(tw), f64::from(th))),
            }
        }
        (side_w, side_h) => {
            // Exactly one side requested: scale proportionally to it.
            let mut s = match (side_w, side_h) {
                (Some(tw), _) => f64::from(tw) / w,
                (_, Some(th)) => f64::from(th) / h,
                _ => 1.0,
            };
            if never_enlarge {
                s = s.min(1.0);
            }
            let size = if s == 1.0 {
                (src_w, src_h)
            } else {
                (
                    side_w.unwrap_or(u32::MAX).min(round_dim(w * s)),
                    side_h.unwrap_or(u32::MAX).min(round_dim(h * s)),
                )
            };
            (plain(size), (w * s, h * s))
        }
    };
    // Derived sides may exceed the limit (one side requested, or the source kept), and so
    // may a requested box that is not refused: shrink everything uniformly so the canvas
    // fits `max`, from the sizes before rounding.
    let padded = p.canvas != p.resize;
    let canvas = if padded {
        (f64::from(p.canvas.0), f64::from(p.canvas.1))
    } else {
        exact
    };
    if canvas.0 > f64::from(max.0) || canvas.1 > f64::from(max.1) {
        let s = (f64::from(max.0) / canvas.0).min(f64::from(max.1) / canvas.1);
        let scale = |(w, h): (f64, f64)| (round_dim(w * s).min(max.0), round_dim(h * s).min(max.1));
        p.resize = scale(exact);
        p.canvas = if padded { scale(canvas) } else { p.resize };
    }
    if req.even {
        p.resize = (round_even(p.resize.0), round_even(p.resize.1));
        p.canvas = (round_even(p.canvas.0), round_even(p.canvas.1));
        p.src.x &= !1;
        p.src.y &= !1;
    }
    p.canvas = (p.canvas.0.max(p.resize.0), p.canvas.1.max(p.resize.1));
    let offset = |outer: u32, inner: u32, a: f64| {
        let o = place_inner(outer, inner, a);
        if req.even {
            o & !1
        } else {
            o
        }
    };
    p.offset = (
        offset(p.canvas.0, p.resize.0, req.anchor.0),
        offset(p.canvas.1, p.resize.1, req.anchor.1),
    );
    Ok(p)
}

/// The requested sides; with [`OverMax::Shrink`], a box of both sides over `max` is first
/// shrunk into it (aspect kept), so the fit works in the box the output can have.
fn shrunk_box(req: &Request, max: (u32, u32)) -> (Option<u32>, Option<u32>) {
    match (req.width, req.height) {
        (Some(bw), Some(bh)) if req.over_max == OverMax::Shrink && (bw > max.0 || bh > max.1) => {
            let k = (f64::from(max.0) / f64::from(bw)).min(f64::from(max.1) / f64::from(bh));
            (
                Some(round_dim(f64::from(bw) * k).min(max.0)),
                Some(round_dim(f64::from(bh) * k).min(max.1)),
            )
        }
        sides => sides,
    }
}

/// `v` rounded up to an even number (at least 2).
fn round_even(v: u32) -> u32 {
    v.saturating_add(v & 1).max(2)
}

/// Offset of an `inner` span on an `outer` span, the anchor choosing the share of free space
/// left before it (0 = start, 0.5 = centred, 1 = end).
fn place_inner(outer: u32, inner: u32, a: f64) -> u32 {
    if inner >= outer {
        return 0;
    }
    (f64::from(outer - inner) * a.clamp(0.0, 1.0)).round() as u32
}

/// Clips a requested crop (`w:h:x:y`, source pixels) to a `src_w`×`src_h` image. A crop that
/// starts outside the image is an error; one that overhangs is shortened.
pub fn clip_crop(crop: filters::Crop, src_w: u32, src_h: u32) -> Result<Rect, GeometryError> {
    if crop.x >= src_w || crop.y >= src_h {
        return Err(GeometryError::CropOutside {
            w: crop.w,
            h: crop.h,
            x: crop.x,
            y: crop.y,
            src_w,
            src_h,
        });
    }
    Ok(Rect {
        x: crop.x,
        y: crop.y,
        w: crop.w.min(src_w - crop.x).max(1),
        h: crop.h.min(src_h - crop.y).max(1),
    })
}

/// Cloudflare's pixel `trim` inside `base` (the whole image or an explicit crop): cut
/// `top`/`right`/`bottom`/`left`, then keep at most `width` columns and `height` rows from
/// the top-left corner of what is left. A trim that leaves nothing is an error, never an
/// empty image. (`trim=border` needs the pixels: [`border_box`].)
pub fn trim_rect(t: &filters::Trim, base: Rect) -> Result<Rect, GeometryError> {
    let nothing = || GeometryError::TrimsEverything {
        trim: t.to_string(),
        w: base.w,
        h: base.h,
    };
    let w = base
        .w
        .checked_sub(t.left.saturating_add(t.right))
        .filter(|&w| w > 0)
        .ok_or_else(nothing)?;
    let h = base
        .h
        .checked_sub(t.top.saturating_add(t.bottom))
        .filter(|&h| h > 0)
        .ok_or_else(nothing)?;
    Ok(Rect {
        x: base.x + t.left,
        y: base.y + t.top,
        w: t.width.map_or(w, |tw| tw.min(w)),
        h: t.height.map_or(h, |th| th.min(h)),
    })
}

/// `trim=border`: the box inside `region` (of a `w`×`h` RGBA-like image read through
/// `px(x, y)`) whose sides are not the border colour, grown by `keep` pixels on each
/// trimmed side and kept inside the region. The border colour is `color`, else that of
/// the top-left corner; a pixel is border when every channel (alpha included) is within
/// `255 - tolerance` of it. An image that is all border is left whole.
pub fn border_box(
    region: Rect,
    px: impl Fn(u32, u32) -> [u8; 4],
    color: Option<[u8; 4]>,
    tolerance: u8,
    keep: u32,
) -> Rect {
    let reference = color.unwrap_or_else(|| px(region.x, region.y));
    let slack = 255 - i32::from(tolerance);
    let is_border = |x: u32, y: u32| {
        let p = px(x, y);
        (0..4).all(|c| (i32::from(p[c]) - i32::from(reference[c])).abs() <= slack)
    };
    let (x0, y0) = (region.x, region.y);
    let (x1, y1) = (region.x + region.w, region.y + region.h);
    let row_is_border = |y: u32| (x0..x1).all(|x| is_border(x, y));
    let col_is_border = |x: u32, top: u32, bottom: u32| (top..bottom).all(|y| is_border(x, y));
    let Some(top) = (y0..y1).find(|&y| !row_is_border(y)) else {
        return region;
    };
    let bottom = (top..y1)
        .rev()
        .find(|&y| !row_is_border(y))
        .map_or(y1, |y| y + 1);
    let left = (x0..x1)
        .find(|&x| !col_is_border(x, top, bottom))
        .unwrap_or(x0);
    let right = (left..x1)
        .rev()
        .find(|&x| !col_is_border(x, top, bottom))
        .map_or(x1, |x| x + 1);
    let (top, left) = (
        top.saturating_sub(keep).max(y0),
        left.saturating_sub(keep).max(x0),
    );
    let (bottom, right) = (
        (bottom.saturating_add(keep)).min(y1),
        (right.saturating_add(keep)).min(x1),
    );
    Rect {
        x: left,
        y: top,
        w: right - left,
        h: bottom - top,
    }
}

/// Dimensions after a clockwise rotation by `deg` (0, 90, 180, 270).
pub fn rotated_dims(w: u32, h: u32, deg: u16) -> (u32, u32) {
    if deg % 180 == 90 {
        (h, w)
    } else {
        (w, h)
    }
}

/// Maps a rectangle given in the space of an image rotated clockwise by `deg` back to the
/// unrotated image of `w`×`h` (unrotated dimensions).
pub fn unrotate_rect(r: Rect, w: u32, h: u32, deg: u16) -> Rect {
    match deg % 360 {
        90 => Rect {
            x: r.y,
            y: h.saturating_sub(r.x + r.w),
            w: r.h,
            h: r.w,
        },
        180 => Rect {
            x: w.saturating_sub(r.x + r.w),
            y: h.saturating_sub(r.y + r.h),
            w: r.w,
            h: r.h,
        },
        270 => Rect {
            x: w.saturating_sub(r.y + r.h),
            y: r.x,
            w: r.h,
            h: r.w,
        },
        _ => r,
    }
}

/// The largest JPEG DCT shrink (1, 2, 4 or 8) that still leaves at least `want` pixels on
/// each axis of a `have`-sized region: decoding at 1/n costs ~1/n² of a full decode.
pub fn jpeg_shrink(have: (u32, u32), want: (u32, u32)) -> u32 {
    let ratio = (f64::from(have.0) / f64::from(want.0.max(1)))
        .min(f64::from(have.1) / f64::from(want.1.max(1)));
    [8, 4, 2]
        .into_iter()
        .find(|&n| ratio >= f64::from(n))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests;
