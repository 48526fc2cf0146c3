//! Cloudflare's `trim` (by pixels, by window, by border colour) and `format=json` in
//! Cloudflare's shape, through the engine's public API and decoded independently.

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};

use super::tests::{decode, encode_with, gradient, run, spec};
use super::*;

/// A `w`×`h` image: a white frame `frame` pixels wide around a gradient.
fn framed(w: u32, h: u32, frame: u32) -> RgbImage {
    let inner = gradient(w - 2 * frame, h - 2 * frame);
    RgbImage::from_fn(w, h, |x, y| {
        if x < frame || y < frame || x >= w - frame || y >= h - frame {
            Rgb([255, 255, 255])
        } else {
            *inner.get_pixel(x - frame, y - frame)
        }
    })
}

#[test]
fn trim_by_pixels_cuts_the_sides_before_the_resize() {
    let png = encode_with(
        &DynamicImage::ImageRgb8(gradient(200, 100)),
        image::ImageFormat::Png,
    );
    // top;right;bottom;left.
    let out = run(&png, &[("trim", "10;20;30;40"), ("format", "png")]);
    assert_eq!((out.width, out.height), (140, 60));
    let img = decode(&out).to_rgb8();
    // The first kept column is source column 40, the first row source row 10.
    let src = gradient(200, 100);
    assert_eq!(img.get_pixel(0, 0), src.get_pixel(40, 10));
    assert_eq!(img.get_pixel(139, 59), src.get_pixel(179, 69));
    // A window from the top-left corner (after left/top), then a resize of what is left.
    let out = run(
        &png,
        &[
            ("trim", "10;0;0;30;w=100;h=50"),
            ("width", "50"),
            ("format", "png"),
        ],
    );
    assert_eq!((out.width, out.height), (50, 25));
    // Rotation comes after the trim: width/height refer to the rotated, trimmed image.
    let out = run(
        &png,
        &[("trim", "0;100;0;0"), ("rotate", "90"), ("format", "png")],
    );
    assert_eq!((out.width, out.height), (100, 100));
    let out = run(
        &png,
        &[("trim", "0;0;0;50"), ("rotate", "90"), ("format", "png")],
    );
    assert_eq!((out.width, out.height), (100, 150));
    // A trim that leaves nothing is the request's fault.
    let e = transform(
        &png,
        &spec(&[("trim", "0;100;0;100")]),
        &ImageOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, TransformError::BadRequest(ref m) if m.contains("leaves nothing")),
        "{e}"
    );
}

#[test]
fn trim_border_finds_the_frame_in_the_pixels() {
    let img = framed(300, 200, 25);
    for f in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
        let bytes = encode_with(&DynamicImage::ImageRgb8(img.clone()), f);
        let out = run(&bytes, &[("trim", "border"), ("format", "png")]);
        // Exact for PNG; JPEG rings around the frame's edge (a few pixels of its 8×8
        // blocks stay off-white beyond the default tolerance).
        let (w, h) = (out.width as i64, out.height as i64);
        let slack = if f == image::ImageFormat::Png { 0 } else { 8 };
        assert!(
            (w - 250).abs() <= slack && (h - 150).abs() <= slack,
            "{f:?}: {w}x{h}"
        );
        let d = decode(&out).to_rgb8();
        let corner = d.get_pixel(1, 1);
        assert!(
            corner[0] < 40 && corner[1] < 40,
            "{f:?}: the corner is content: {corner:?}"
        );
    }
    let png = encode_with(&DynamicImage::ImageRgb8(img), image::ImageFormat::Png);
    // keep leaves that much of the border on each trimmed side.
    let out = run(&png, &[("trim", "border;keep=5"), ("format", "png")]);
    assert_eq!((out.width, out.height), (260, 160));
    // A colour that is not the frame's trims nothing; the frame's own colour trims it.
    let out = run(&png, &[("trim", "border;color=#000000"), ("format", "png")]);
    assert_eq!((out.width, out.height), (300, 200));
    let out = run(
        &png,
        &[
            ("trim", "border;color=#ffffff"),
            ("width", "125"),
            ("format", "png"),
        ],
    );
    assert_eq!((out.width, out.height), (125, 75));
    // Tolerance 0 (need not match) takes everything as border: an image that is all
    // border is left whole rather than emptied.
    let out = run(&png, &[("trim", "border;tolerance=0"), ("format", "png")]);
    assert_eq!((out.width, out.height), (300, 200));
    // Transparent margins are a border too (alpha is compared).
    let rgba = RgbaImage::from_fn(100, 80, |x, y| {
        if (20..80).contains(&x) && (10..70).contains(&y) {
            Rgba([200, 10, 10, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let png = encode_with(&DynamicImage::ImageRgba8(rgba), image::ImageFormat::Png);
    let out = run(&png, &[("trim", "border"), ("format", "png")]);
    assert_eq!((out.width, out.height), (60, 60));
}

#[test]
fn json_has_cloudflares_shape_beside_the_metadata() {
    let png = encode_with(
        &DynamicImage::ImageRgb8(gradient(400, 200)),
        image::ImageFormat::Png,
    );
    let out = run(&png, &[("width", "100"), ("format", "json")]);
    assert_eq!(out.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(100), Some(50)),
        "{v}"
    );
    let o = &v["original"];
    assert_eq!(o["width"], 400);
    assert_eq!(o["height"], 200);
    assert_eq!(o["format"], "image/png");
    assert_eq!(o["file_size"], png.len());
    // The metadata document's own fields are still there.
    assert_eq!(v["mime_type"], "image/png");
    assert!(v["placeholder"].is_string(), "{v}");
    // Without a resize the output is the original's size.
    let v: serde_json::Value =
        serde_json::from_slice(&run(&png, &[("format", "json")]).body).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(400), Some(200))
    );
    // A pixel trim shows in the output size.
    let v: serde_json::Value =
        serde_json::from_slice(&run(&png, &[("trim", "0;200;0;0"), ("format", "json")]).body)
            .unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(200), Some(200))
    );
}
