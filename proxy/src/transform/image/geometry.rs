//! Pure geometry planning: from source dimensions and the requested box (width, height, fit,
//! gravity) to the region of the source to keep, the size it is resized to, and the canvas it
//! is placed on. No pixels, no codecs, no I/O: every function here is a value-to-value
//! transformation with table tests, so the video engine can plan frames and thumbnails the
//! same way.
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
//! output is shrunk (aspect kept) to at most `max_side` a side; a *requested* side over
//! `max_side` is an error rather than a silent clamp.

use filters::{Fit, Gravity};

/// An integer rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Largest output side.
    pub max_side: u32,
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
    let max = req.max_side.max(1);
    for (name, v) in [("width", req.width), ("height", req.height)] {
        if let Some(v) = v {
            if v == 0 || v > max {
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
    let mut p = match (req.width, req.height) {
        (None, None) => Plan {
            src: full,
            resize: (src_w, src_h),
            canvas: (src_w, src_h),
            offset: (0, 0),
        },
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
                    if req.fit == Fit::Pad {
                        Plan {
                            src: full,
                            resize: size,
                            canvas: (tw, th),
                            offset: (
                                place_inner(tw, size.0, req.anchor.0),
                                place_inner(th, size.1, req.anchor.1),
                            ),
                        }
                    } else {
                        Plan {
                            src: full,
                            resize: size,
                            canvas: size,
                            offset: (0, 0),
                        }
                    }
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
                    Plan {
                        src,
                        resize: (out_w, out_h),
                        canvas: (out_w, out_h),
                        offset: (0, 0),
                    }
                }
                Fit::Fill => Plan {
                    src: full,
                    resize: (tw, th),
                    canvas: (tw, th),
                    offset: (0, 0),
                },
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
            Plan {
                src: full,
                resize: size,
                canvas: size,
                offset: (0, 0),
            }
        }
    };
    // Derived sides may exceed the limit (one side requested, or the source kept): shrink
    // everything uniformly so the canvas fits `max` a side.
    let (cw, ch) = p.canvas;
    if cw > max || ch > max {
        let s = (f64::from(max) / f64::from(cw)).min(f64::from(max) / f64::from(ch));
        let scale = |v: u32| round_dim(f64::from(v) * s).min(max);
        p.resize = (scale(p.resize.0), scale(p.resize.1));
        p.canvas = (scale(p.canvas.0), scale(p.canvas.1));
        p.canvas = (p.canvas.0.max(p.resize.0), p.canvas.1.max(p.resize.1));
        p.offset = (
            place_inner(p.canvas.0, p.resize.0, req.anchor.0),
            place_inner(p.canvas.1, p.resize.1, req.anchor.1),
        );
    }
    Ok(p)
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
mod tests {
    use super::*;

    fn req(w: Option<u32>, h: Option<u32>, fit: Fit) -> Request {
        Request {
            width: w,
            height: h,
            fit,
            anchor: (0.5, 0.5),
            max_side: 4096,
        }
    }

    #[test]
    fn fit_table() {
        use Fit::*;
        // (src, width, height, fit) -> (src rect, resize, canvas, offset)
        #[allow(clippy::type_complexity)]
        let table: &[(
            (u32, u32),
            Option<u32>,
            Option<u32>,
            Fit,
            Rect,
            (u32, u32),
            (u32, u32),
            (u32, u32),
        )] = &[
            // No box: unchanged.
            (
                (1800, 1200),
                None,
                None,
                Contain,
                Rect::full(1800, 1200),
                (1800, 1200),
                (1800, 1200),
                (0, 0),
            ),
            // One side: proportional.
            (
                (1800, 1200),
                Some(900),
                None,
                Contain,
                Rect::full(1800, 1200),
                (900, 600),
                (900, 600),
                (0, 0),
            ),
            (
                (1800, 1200),
                None,
                Some(300),
                Cover,
                Rect::full(1800, 1200),
                (450, 300),
                (450, 300),
                (0, 0),
            ),
            (
                (100, 50),
                Some(400),
                None,
                Contain,
                Rect::full(100, 50),
                (400, 200),
                (400, 200),
                (0, 0),
            ),
            (
                (100, 50),
                Some(400),
                None,
                ScaleDown,
                Rect::full(100, 50),
                (100, 50),
                (100, 50),
                (0, 0),
            ),
            (
                (100, 50),
                Some(400),
                None,
                Crop,
                Rect::full(100, 50),
                (100, 50),
                (100, 50),
                (0, 0),
            ),
            // contain: inside the box, may enlarge.
            (
                (1800, 1200),
                Some(800),
                Some(800),
                Contain,
                Rect::full(1800, 1200),
                (800, 533),
                (800, 533),
                (0, 0),
            ),
            (
                (100, 50),
                Some(400),
                Some(400),
                Contain,
                Rect::full(100, 50),
                (400, 200),
                (400, 200),
                (0, 0),
            ),
            // scale-down: never enlarges.
            (
                (1800, 1200),
                Some(800),
                Some(800),
                ScaleDown,
                Rect::full(1800, 1200),
                (800, 533),
                (800, 533),
                (0, 0),
            ),
            (
                (100, 50),
                Some(400),
                Some(400),
                ScaleDown,
                Rect::full(100, 50),
                (100, 50),
                (100, 50),
                (0, 0),
            ),
            // cover: exactly the box, centred crop.
            (
                (1800, 1200),
                Some(800),
                Some(800),
                Cover,
                Rect {
                    x: 300,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
                (800, 800),
                (800, 800),
                (0, 0),
            ),
            (
                (1200, 1800),
                Some(400),
                Some(200),
                Cover,
                Rect {
                    x: 0,
                    y: 600,
                    w: 1200,
                    h: 600,
                },
                (400, 200),
                (400, 200),
                (0, 0),
            ),
            (
                (100, 50),
                Some(400),
                Some(400),
                Cover,
                Rect {
                    x: 25,
                    y: 0,
                    w: 50,
                    h: 50,
                },
                (400, 400),
                (400, 400),
                (0, 0),
            ),
            // crop: cover without enlarging.
            (
                (1800, 1200),
                Some(800),
                Some(800),
                Crop,
                Rect {
                    x: 300,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
                (800, 800),
                (800, 800),
                (0, 0),
            ),
            (
                (1000, 300),
                Some(500),
                Some(500),
                Crop,
                Rect {
                    x: 250,
                    y: 0,
                    w: 500,
                    h: 300,
                },
                (500, 300),
                (500, 300),
                (0, 0),
            ),
            (
                (100, 50),
                Some(400),
                Some(400),
                Crop,
                Rect::full(100, 50),
                (100, 50),
                (100, 50),
                (0, 0),
            ),
            // pad: contain on a canvas of the box.
            (
                (1800, 1200),
                Some(800),
                Some(800),
                Pad,
                Rect::full(1800, 1200),
                (800, 533),
                (800, 800),
                (0, 134),
            ),
            (
                (100, 50),
                Some(400),
                Some(400),
                Pad,
                Rect::full(100, 50),
                (400, 200),
                (400, 400),
                (0, 100),
            ),
            // fill: stretched.
            (
                (1800, 1200),
                Some(800),
                Some(800),
                Fill,
                Rect::full(1800, 1200),
                (800, 800),
                (800, 800),
                (0, 0),
            ),
            // Source over the limit with no box: shrunk to 4096 a side.
            (
                (8192, 4096),
                None,
                None,
                Contain,
                Rect::full(8192, 4096),
                (4096, 2048),
                (4096, 2048),
                (0, 0),
            ),
            // Derived side over the limit: uniformly shrunk.
            (
                (100, 1000),
                Some(1000),
                None,
                Contain,
                Rect::full(100, 1000),
                (410, 4096),
                (410, 4096),
                (0, 0),
            ),
        ];
        for &(src, w, h, fit, rect, resize, canvas, offset) in table {
            let p = plan(src.0, src.1, &req(w, h, fit)).unwrap();
            assert_eq!(
                (p.src, p.resize, p.canvas, p.offset),
                (rect, resize, canvas, offset),
                "src {src:?} w {w:?} h {h:?} fit {fit:?}"
            );
        }
    }

    #[test]
    fn gravity_moves_the_cover_window() {
        let cases = [
            (
                Some(Gravity::Left),
                Rect {
                    x: 0,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
            ),
            (
                Some(Gravity::Right),
                Rect {
                    x: 600,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
            ),
            (
                Some(Gravity::Top),
                Rect {
                    x: 300,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
            ),
            (
                None,
                Rect {
                    x: 300,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
            ),
            (
                Some(Gravity::Focal { x: 250, y: 500 }),
                Rect {
                    x: 0,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
            ),
            (
                Some(Gravity::Focal { x: 600, y: 500 }),
                Rect {
                    x: 480,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
            ),
            (
                Some(Gravity::Focal { x: 1000, y: 0 }),
                Rect {
                    x: 600,
                    y: 0,
                    w: 1200,
                    h: 1200,
                },
            ),
        ];
        for (g, want) in cases {
            let mut r = req(Some(400), Some(400), Fit::Cover);
            r.anchor = anchor(g).unwrap();
            assert_eq!(plan(1800, 1200, &r).unwrap().src, want, "{g:?}");
        }
        // Vertical: top/bottom on a portrait source.
        for (g, y) in [
            (Gravity::Top, 0),
            (Gravity::Bottom, 600),
            (Gravity::Center, 300),
        ] {
            let mut r = req(Some(400), Some(400), Fit::Cover);
            r.anchor = anchor(Some(g)).unwrap();
            assert_eq!(plan(1200, 1800, &r).unwrap().src.y, y, "{g:?}");
        }
        assert_eq!(anchor(Some(Gravity::Auto)), None);
        // Pad places the image by gravity.
        let mut r = req(Some(800), Some(800), Fit::Pad);
        r.anchor = anchor(Some(Gravity::Top)).unwrap();
        assert_eq!(plan(1800, 1200, &r).unwrap().offset, (0, 0));
        r.anchor = anchor(Some(Gravity::Bottom)).unwrap();
        assert_eq!(plan(1800, 1200, &r).unwrap().offset, (0, 267));
    }

    #[test]
    fn absurd_requests_are_errors() {
        assert_eq!(
            plan(100, 100, &req(Some(5000), None, Fit::Contain)),
            Err(GeometryError::RequestedSide {
                name: "width",
                value: 5000,
                max: 4096
            })
        );
        assert!(plan(100, 100, &req(None, Some(0), Fit::Contain)).is_err());
        assert!(plan(0, 100, &req(None, None, Fit::Contain)).is_err());
        // Extreme aspect ratios never give a zero side.
        let p = plan(100_000, 1, &req(Some(10), None, Fit::Contain)).unwrap();
        assert_eq!(p.resize, (10, 1));
    }

    #[test]
    fn crop_is_clipped_or_refused() {
        let c = |w, h, x, y| filters::Crop { w, h, x, y };
        assert_eq!(
            clip_crop(c(100, 100, 10, 20), 1000, 1000),
            Ok(Rect {
                x: 10,
                y: 20,
                w: 100,
                h: 100
            })
        );
        assert_eq!(
            clip_crop(c(500, 500, 800, 900), 1000, 1000),
            Ok(Rect {
                x: 800,
                y: 900,
                w: 200,
                h: 100
            })
        );
        assert!(clip_crop(c(10, 10, 1000, 0), 1000, 1000).is_err());
    }

    #[test]
    fn rotation_maps_rects_back() {
        // A 4x2 image; rotated 90° clockwise it is 2x4.
        assert_eq!(rotated_dims(4, 2, 90), (2, 4));
        assert_eq!(rotated_dims(4, 2, 180), (4, 2));
        // The top row of the rotated image is the left column of the original, bottom up.
        let top_row = Rect {
            x: 0,
            y: 0,
            w: 2,
            h: 1,
        };
        assert_eq!(
            unrotate_rect(top_row, 4, 2, 90),
            Rect {
                x: 0,
                y: 0,
                w: 1,
                h: 2
            }
        );
        assert_eq!(
            unrotate_rect(top_row, 4, 2, 270),
            Rect {
                x: 3,
                y: 0,
                w: 1,
                h: 2
            }
        );
        let corner = Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 1,
        };
        assert_eq!(
            unrotate_rect(corner, 4, 2, 180),
            Rect {
                x: 3,
                y: 1,
                w: 1,
                h: 1
            }
        );
        assert_eq!(
            unrotate_rect(corner, 4, 2, 90),
            Rect {
                x: 0,
                y: 1,
                w: 1,
                h: 1
            }
        );
        assert_eq!(
            unrotate_rect(corner, 4, 2, 270),
            Rect {
                x: 3,
                y: 0,
                w: 1,
                h: 1
            }
        );
        assert_eq!(unrotate_rect(corner, 4, 2, 0), corner);
    }

    #[test]
    fn shrink_on_load_factor() {
        assert_eq!(jpeg_shrink((4000, 3000), (800, 600)), 4);
        assert_eq!(jpeg_shrink((4000, 3000), (400, 300)), 8);
        assert_eq!(jpeg_shrink((4000, 3000), (2000, 1500)), 2);
        assert_eq!(jpeg_shrink((4000, 3000), (2001, 1500)), 1);
        assert_eq!(jpeg_shrink((100, 100), (400, 400)), 1);
    }
}
