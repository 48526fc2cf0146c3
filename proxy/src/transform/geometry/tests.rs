//! Table tests of the planner: the fit semantics (image limits: one side, refused when
//! asked over it), gravity, crops, rotation, and the video uses (a box limit that shrinks,
//! even sizes).

use super::*;

fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
    Rect { x, y, w, h }
}

fn req(w: Option<u32>, h: Option<u32>, fit: Fit) -> Request {
    Request {
        width: w,
        height: h,
        fit,
        anchor: (0.5, 0.5),
        max: (4096, 4096),
        over_max: OverMax::Refuse,
        even: false,
    }
}

#[test]
fn fit_table() {
    use Fit::*;
    let full = Rect::full;
    // (src, width, height, fit) -> (src rect, resize, canvas, offset)
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let table: &[((u32, u32), Option<u32>, Option<u32>, Fit, Rect, (u32, u32), (u32, u32), (u32, u32))] = &[
        // No box: unchanged.
        ((1800, 1200), None, None, Contain, full(1800, 1200), (1800, 1200), (1800, 1200), (0, 0)),
        // One side: proportional.
        ((1800, 1200), Some(900), None, Contain, full(1800, 1200), (900, 600), (900, 600), (0, 0)),
        ((1800, 1200), None, Some(300), Cover, full(1800, 1200), (450, 300), (450, 300), (0, 0)),
        ((100, 50), Some(400), None, Contain, full(100, 50), (400, 200), (400, 200), (0, 0)),
        ((100, 50), Some(400), None, ScaleDown, full(100, 50), (100, 50), (100, 50), (0, 0)),
        ((100, 50), Some(400), None, Crop, full(100, 50), (100, 50), (100, 50), (0, 0)),
        // contain: inside the box, may enlarge.
        ((1800, 1200), Some(800), Some(800), Contain, full(1800, 1200), (800, 533), (800, 533), (0, 0)),
        ((100, 50), Some(400), Some(400), Contain, full(100, 50), (400, 200), (400, 200), (0, 0)),
        // scale-down: never enlarges.
        ((1800, 1200), Some(800), Some(800), ScaleDown, full(1800, 1200), (800, 533), (800, 533), (0, 0)),
        ((100, 50), Some(400), Some(400), ScaleDown, full(100, 50), (100, 50), (100, 50), (0, 0)),
        // cover: exactly the box, centred crop.
        ((1800, 1200), Some(800), Some(800), Cover, rect(300, 0, 1200, 1200), (800, 800), (800, 800), (0, 0)),
        ((1200, 1800), Some(400), Some(200), Cover, rect(0, 600, 1200, 600), (400, 200), (400, 200), (0, 0)),
        ((100, 50), Some(400), Some(400), Cover, rect(25, 0, 50, 50), (400, 400), (400, 400), (0, 0)),
        // crop: cover without enlarging.
        ((1800, 1200), Some(800), Some(800), Crop, rect(300, 0, 1200, 1200), (800, 800), (800, 800), (0, 0)),
        ((1000, 300), Some(500), Some(500), Crop, rect(250, 0, 500, 300), (500, 300), (500, 300), (0, 0)),
        ((100, 50), Some(400), Some(400), Crop, full(100, 50), (100, 50), (100, 50), (0, 0)),
        // pad: contain on a canvas of the box.
        ((1800, 1200), Some(800), Some(800), Pad, full(1800, 1200), (800, 533), (800, 800), (0, 134)),
        ((100, 50), Some(400), Some(400), Pad, full(100, 50), (400, 200), (400, 400), (0, 100)),
        // fill: stretched.
        ((1800, 1200), Some(800), Some(800), Fill, full(1800, 1200), (800, 800), (800, 800), (0, 0)),
        // Source over the limit with no box: shrunk to 4096 a side.
        ((8192, 4096), None, None, Contain, full(8192, 4096), (4096, 2048), (4096, 2048), (0, 0)),
        // Derived side over the limit: uniformly shrunk.
        ((100, 1000), Some(1000), None, Contain, full(100, 1000), (410, 4096), (410, 4096), (0, 0)),
    ];
    for &(src, w, h, fit, window, resize, canvas, offset) in table {
        let p = plan(src.0, src.1, &req(w, h, fit)).unwrap();
        assert_eq!(
            (p.src, p.resize, p.canvas, p.offset),
            (window, resize, canvas, offset),
            "src {src:?} w {w:?} h {h:?} fit {fit:?}"
        );
    }
}

#[test]
fn gravity_moves_the_cover_window() {
    let cases = [
        (Some(Gravity::Left), rect(0, 0, 1200, 1200)),
        (Some(Gravity::Right), rect(600, 0, 1200, 1200)),
        (Some(Gravity::Top), rect(300, 0, 1200, 1200)),
        (None, rect(300, 0, 1200, 1200)),
        (
            Some(Gravity::Focal { x: 250, y: 500 }),
            rect(0, 0, 1200, 1200),
        ),
        (
            Some(Gravity::Focal { x: 600, y: 500 }),
            rect(480, 0, 1200, 1200),
        ),
        (
            Some(Gravity::Focal { x: 1000, y: 0 }),
            rect(600, 0, 1200, 1200),
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
        Ok(rect(10, 20, 100, 100))
    );
    assert_eq!(
        clip_crop(c(500, 500, 800, 900), 1000, 1000),
        Ok(rect(800, 900, 200, 100))
    );
    assert!(clip_crop(c(10, 10, 1000, 0), 1000, 1000).is_err());
}

#[test]
fn rotation_maps_rects_back() {
    // A 4x2 image; rotated 90° clockwise it is 2x4.
    assert_eq!(rotated_dims(4, 2, 90), (2, 4));
    assert_eq!(rotated_dims(4, 2, 180), (4, 2));
    // The top row of the rotated image is the left column of the original, bottom up.
    let top_row = rect(0, 0, 2, 1);
    assert_eq!(unrotate_rect(top_row, 4, 2, 90), rect(0, 0, 1, 2));
    assert_eq!(unrotate_rect(top_row, 4, 2, 270), rect(3, 0, 1, 2));
    let corner = rect(0, 0, 1, 1);
    assert_eq!(unrotate_rect(corner, 4, 2, 180), rect(3, 1, 1, 1));
    assert_eq!(unrotate_rect(corner, 4, 2, 90), rect(0, 1, 1, 1));
    assert_eq!(unrotate_rect(corner, 4, 2, 270), rect(3, 0, 1, 1));
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

/// A video frame's request: the thumbnail box as the limit, shrunk into rather than refused.
fn video_req(w: Option<u32>, h: Option<u32>, fit: Fit) -> Request {
    Request {
        max: (1920, 1080),
        over_max: OverMax::Shrink,
        ..req(w, h, fit)
    }
}

/// The size the whole source is scaled to by a plan (the cropped window scaled with it).
fn scaled_source(src: (u32, u32), p: &Plan) -> (u32, u32) {
    let s = |full: u32, win: u32, out: u32| {
        (f64::from(full) * f64::from(out) / f64::from(win)).round() as u32
    };
    (s(src.0, p.src.w, p.resize.0), s(src.1, p.src.h, p.resize.1))
}

/// Where a plan's crop window lies in the scaled source: `w, h, x, y`.
fn scaled_crop(p: &Plan) -> (u32, u32, u32, u32) {
    let s = |v: u32, win: u32, out: u32| {
        (f64::from(v) * f64::from(out) / f64::from(win)).round() as u32
    };
    let (w, h) = p.resize;
    (w, h, s(p.src.x, p.src.w, w), s(p.src.y, p.src.h, h))
}

#[test]
fn video_fit_modes_table() {
    use Fit::*;
    // (src, width, height, fit) → (out, whole source scaled to)
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let cases: &[((u32, u32), Option<u32>, Option<u32>, Fit, (u32, u32), (u32, u32))] = &[
        ((1280, 720), Some(640), None, Contain, (640, 360), (640, 360)),
        ((1280, 720), None, Some(180), Contain, (320, 180), (320, 180)),
        ((1280, 720), Some(400), Some(400), Contain, (400, 225), (400, 225)),
        ((1280, 720), Some(400), Some(400), Cover, (400, 400), (711, 400)),
        ((1280, 720), Some(400), Some(400), Fill, (400, 400), (400, 400)),
        ((1280, 720), Some(400), Some(400), Pad, (400, 400), (400, 225)),
        ((320, 180), Some(640), Some(640), ScaleDown, (320, 180), (320, 180)),
        ((320, 180), Some(640), Some(640), Contain, (640, 360), (640, 360)),
        ((320, 180), Some(100), Some(100), Crop, (100, 100), (178, 100)),
        ((320, 180), Some(640), Some(640), Crop, (320, 180), (320, 180)),
        ((1280, 720), None, None, Contain, (1280, 720), (1280, 720)),
        // Limits: a 4K source is shrunk to the 1920x1080 thumbnail box.
        ((3840, 2160), None, None, Contain, (1920, 1080), (1920, 1080)),
    ];
    for &((sw, sh), w, h, fit, out, scale) in cases {
        let p = plan(sw, sh, &video_req(w, h, fit)).unwrap();
        assert_eq!(p.canvas, out, "{sw}x{sh} {w:?}x{h:?} {fit:?}");
        assert_eq!(
            scaled_source((sw, sh), &p),
            scale,
            "{sw}x{sh} {w:?}x{h:?} {fit:?}"
        );
    }
    // A box over the limit is shrunk into it, not refused.
    let p = plan(1280, 720, &video_req(Some(3840), Some(2160), Fill)).unwrap();
    assert_eq!(p.canvas, (1920, 1080));
}

#[test]
fn gravity_moves_the_video_crop_and_pad() {
    let mut r = video_req(Some(400), Some(400), Fit::Cover);
    r.anchor = anchor(Some(Gravity::Left)).unwrap();
    assert_eq!(scaled_crop(&plan(1280, 720, &r).unwrap()), (400, 400, 0, 0));
    r.anchor = anchor(Some(Gravity::Right)).unwrap();
    assert_eq!(
        scaled_crop(&plan(1280, 720, &r).unwrap()),
        (400, 400, 311, 0)
    );
    let pad = |p: Plan| (p.canvas.0, p.canvas.1, p.offset.0, p.offset.1);
    r.fit = Fit::Pad;
    r.anchor = anchor(Some(Gravity::Top)).unwrap();
    assert_eq!(pad(plan(1280, 720, &r).unwrap()), (400, 400, 0, 0));
    r.anchor = anchor(Some(Gravity::Focal { x: 500, y: 1000 })).unwrap();
    assert_eq!(pad(plan(1280, 720, &r).unwrap()), (400, 400, 0, 175));
}

#[test]
fn even_dimensions_for_video() {
    let mut r = video_req(Some(641), None, Fit::Contain);
    r.even = true;
    let p = plan(1280, 720, &r).unwrap();
    assert_eq!((p.canvas.0 % 2, p.canvas.1 % 2), (0, 0));
    r.width = Some(333);
    r.height = Some(333);
    r.fit = Fit::Cover;
    let p = plan(1279, 719, &r).unwrap();
    assert_eq!((p.canvas.0 % 2, p.canvas.1 % 2), (0, 0));
    assert_eq!((p.src.x % 2, p.src.y % 2), (0, 0));
    r.fit = Fit::Pad;
    let p = plan(1279, 719, &r).unwrap();
    assert_eq!((p.canvas.0 % 2, p.canvas.1 % 2), (0, 0));
    assert_eq!((p.resize.0 % 2, p.resize.1 % 2), (0, 0));
    assert_eq!((p.offset.0 % 2, p.offset.1 % 2), (0, 0));
}
