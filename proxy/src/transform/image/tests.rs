//! End-to-end tests of the image engine through its public API: every input format, every
//! output format decoded by an independent decoder, fit/gravity against computed sizes,
//! EXIF orientation 1–8, alpha handling, animation, metadata privacy, limits and hostile
//! inputs. Fixtures are generated here or read from `conf/samples/`.

use std::io::Cursor;

use filters::params::Param;
use filters::{Mode, TransformSpec};
use image::{AnimationDecoder, DynamicImage, ImageDecoder, Rgb, RgbImage, Rgba, RgbaImage};

use super::*;

pub(super) fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../conf/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

pub(super) fn spec(params: &[(&str, &str)]) -> TransformSpec {
    let mut s = TransformSpec::new(Mode::Image);
    for (k, v) in params {
        let p = Param::from_name(k).unwrap_or_else(|| panic!("unknown param {k}"));
        s.set(p, k, v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
    }
    s.normalize();
    s
}

pub(super) fn run(bytes: &[u8], params: &[(&str, &str)]) -> Output {
    transform(bytes, &spec(params), &ImageOptions::default())
        .unwrap_or_else(|e| panic!("transform {params:?}: {e}"))
}

/// Decodes an output with the `image` crate (an independent decoder from our encoders),
/// checking the format it sniffs against the content type.
pub(super) fn decode(out: &Output) -> DynamicImage {
    let want = match out.content_type {
        "image/webp" => image::ImageFormat::WebP,
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/png" => image::ImageFormat::Png,
        "image/gif" => image::ImageFormat::Gif,
        other => panic!("no independent decoder for {other}"),
    };
    assert_eq!(
        image::guess_format(&out.body).ok(),
        Some(want),
        "{}",
        out.content_type
    );
    let img = image::load_from_memory_with_format(&out.body, want).expect("decode output");
    assert_eq!(
        (img.width(), img.height()),
        (out.width, out.height),
        "output size"
    );
    img
}

/// A `w`×`h` colour gradient.
pub(super) fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
    })
}

pub(super) fn encode_with(img: &DynamicImage, f: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, f).expect("encode fixture");
    out.into_inner()
}

fn close(a: &[u8], b: &[u8], tol: i16) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i16::from(*x) - i16::from(*y)).abs() <= tol)
}

#[test]
fn every_input_format_is_sniffed_and_decoded() {
    let img = DynamicImage::ImageRgb8(gradient(120, 80));
    let rgba = DynamicImage::ImageRgba8(img.to_rgba8());
    let cases = [
        (ImageFormat::Jpeg, encode_with(&img, image::ImageFormat::Jpeg)),
        (ImageFormat::Png, encode_with(&img, image::ImageFormat::Png)),
        (ImageFormat::Gif, encode_with(&rgba, image::ImageFormat::Gif)),
        (ImageFormat::Webp, encode_with(&img, image::ImageFormat::WebP)),
        (ImageFormat::Bmp, encode_with(&img, image::ImageFormat::Bmp)),
        (ImageFormat::Tiff, encode_with(&img, image::ImageFormat::Tiff)),
        (
            ImageFormat::Svg,
            br##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80"><rect width="120" height="80" fill="#336699"/></svg>"##.to_vec(),
        ),
    ];
    for (fmt, bytes) in cases {
        assert_eq!(sniff(&bytes), Some(fmt));
        let p = probe(&bytes, &ImageOptions::default()).unwrap();
        assert_eq!((p.format, p.width, p.height), (fmt, 120, 80), "{fmt:?}");
        let out = run(&bytes, &[("width", "60"), ("format", "png")]);
        assert_eq!(out.content_type, "image/png");
        let d = decode(&out);
        assert_eq!((d.width(), d.height()), (60, 40), "{fmt:?}");
        // Default output keeps the source family (BMP/TIFF/SVG become JPEG or PNG).
        let kept = run(&bytes, &[("width", "60")]);
        let want = match fmt {
            ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::Tiff => "image/jpeg",
            ImageFormat::Png | ImageFormat::Svg => "image/png",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Webp => "image/webp",
            _ => unreachable!(),
        };
        assert_eq!(kept.content_type, want, "{fmt:?}");
        decode(&kept);
    }
}

#[test]
fn fake_avif_input_is_a_clean_4xx() {
    let fake = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1\0\0\0\x08free".to_vec();
    assert_eq!(sniff(&fake), Some(ImageFormat::Avif));
    let e = transform(&fake, &spec(&[]), &ImageOptions::default()).unwrap_err();
    assert!(
        matches!(
            e,
            TransformError::Invalid(_) | TransformError::Unsupported(_)
        ),
        "{e:?}"
    );
}

/// HEIC (encoded at test time by libheif's x265) and AVIF (our own encoder's output) decode
/// through libheif, resize, and convert; a fake or over-limit one is a clean 4xx.
#[cfg(feature = "heic")]
#[test]
fn heic_and_avif_inputs_decode_through_libheif() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.heic");
    super::heif::write_test_heic(&p, 640, 480);
    let heic = std::fs::read(&p).unwrap();
    assert_eq!(sniff(&heic), Some(ImageFormat::Heic));
    let out = run(&heic, &[("width", "320"), ("format", "png")]);
    let img = decode(&out);
    assert_eq!((img.width(), img.height()), (320, 240));
    // The gradient survives: left dark, right bright in red.
    let rgb = img.to_rgb8();
    assert!(rgb.get_pixel(5, 120)[0] < 40 && rgb.get_pixel(314, 120)[0] > 210);
    let meta = metadata_json(&heic, &ImageOptions::default()).unwrap();
    assert_eq!(meta["width"], 640);
    assert_eq!(meta["format"], "heic");

    let src = encode_with(
        &DynamicImage::ImageRgb8(gradient(400, 300)),
        image::ImageFormat::Png,
    );
    let avif = run(&src, &[("format", "avif")]);
    assert_eq!(sniff(&avif.body), Some(ImageFormat::Avif));
    let out = run(&avif.body, &[("width", "200"), ("format", "jpeg")]);
    let img = decode(&out);
    assert_eq!((img.width(), img.height()), (200, 150));

    // Past the pixel limit: 413 before decoding.
    let small = ImageOptions {
        max_input_pixels: 100_000,
        ..ImageOptions::default()
    };
    let e = transform(&heic, &spec(&[("width", "100")]), &small).unwrap_err();
    assert!(matches!(e, TransformError::TooLarge(_)), "{e:?}");
    // Truncated: 422, never a panic.
    let e = transform(
        &heic[..heic.len() / 2],
        &spec(&[("width", "100")]),
        &ImageOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            TransformError::Invalid(_) | TransformError::Unsupported(_)
        ),
        "{e:?}"
    );
}

/// A CMYK JPEG (made by libjpeg-turbo at test time) converts to RGB with the right colours:
/// left half cyan, right half black.
#[test]
fn cmyk_jpeg_converts_to_rgb() {
    let (w, h) = (64usize, 32usize);
    let mut px = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let o = (y * w + x) * 4;
            // libjpeg-turbo stores CMYK as "inverted" Adobe data: 0 = full ink.
            let (c, m, yy, k) = if x < w / 2 {
                (255, 0, 0, 0)
            } else {
                (0, 0, 0, 255)
            };
            px[o..o + 4].copy_from_slice(&[255 - c, 255 - m, 255 - yy, 255 - k]);
        }
    }
    let img = turbojpeg::Image {
        pixels: &px[..],
        width: w,
        pitch: w * 4,
        height: h,
        format: turbojpeg::PixelFormat::CMYK,
    };
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(95).unwrap();
    let jpeg = c.compress_to_vec(img).unwrap();
    let mut d = turbojpeg::Decompressor::new().unwrap();
    let header = d.read_header(&jpeg).unwrap();
    assert!(matches!(
        header.colorspace,
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
    ));
    let out = run(&jpeg, &[("format", "png")]);
    let rgb = decode(&out).to_rgb8();
    let cyan = rgb.get_pixel(8, 16);
    let black = rgb.get_pixel(56, 16);
    assert!(
        cyan[0] < 60 && cyan[1] > 200 && cyan[2] > 200,
        "cyan: {cyan:?}"
    );
    assert!(black.0.iter().all(|&v| v < 60), "black: {black:?}");
}

#[test]
fn every_output_format_decodes_independently() {
    let src = encode_with(
        &DynamicImage::ImageRgb8(gradient(400, 300)),
        image::ImageFormat::Png,
    );
    for (fmt, mime) in [
        ("webp", "image/webp"),
        ("jpeg", "image/jpeg"),
        ("png", "image/png"),
        ("gif", "image/gif"),
    ] {
        for q in ["low", "medium", "high", "lossless", "42"] {
            let out = run(&src, &[("width", "200"), ("format", fmt), ("quality", q)]);
            assert_eq!(out.content_type, mime);
            let d = decode(&out);
            assert_eq!((d.width(), d.height()), (200, 150), "{fmt} q={q}");
            // Content survives: the gradient's corners.
            let px = d.to_rgb8();
            let tol = if fmt == "gif" { 40 } else { 24 };
            assert!(
                close(&px.get_pixel(5, 5).0, &[4, 4, 128], tol),
                "{fmt} q={q} {:?}",
                px.get_pixel(5, 5)
            );
        }
    }
    // AVIF: no AVIF decoder in the image crate here; check the container and its size.
    let out = run(&src, &[("width", "200"), ("format", "avif")]);
    assert_eq!(out.content_type, "image/avif");
    assert_eq!(sniff(&out.body), Some(ImageFormat::Avif));
    assert_eq!(probe::isobmff_ispe(&out.body), Some((200, 150)));
    // Lossless WebP is exact.
    let out = run(&src, &[("format", "webp"), ("quality", "lossless")]);
    assert_eq!(
        decode(&out).to_rgb8(),
        image::load_from_memory(&src).unwrap().to_rgb8()
    );
    // AVIF disabled: WebP instead.
    let opts = ImageOptions {
        avif_enabled: false,
        ..ImageOptions::default()
    };
    let out = transform(&src, &spec(&[("format", "avif")]), &opts).unwrap();
    assert_eq!(out.content_type, "image/webp");
    // Lower quality gives smaller JPEGs.
    let lo = run(&src, &[("format", "jpeg"), ("quality", "low")])
        .body
        .len();
    let hi = run(&src, &[("format", "jpeg"), ("quality", "high")])
        .body
        .len();
    assert!(lo < hi, "{lo} >= {hi}");
    // Video formats are not image outputs.
    let e = transform(&src, &spec(&[("format", "mp4")]), &ImageOptions::default()).unwrap_err();
    assert!(matches!(e, TransformError::BadRequest(_)));
}

#[test]
fn fits_give_the_planned_sizes() {
    // 300x200 source.
    let src = encode_with(
        &DynamicImage::ImageRgb8(gradient(300, 200)),
        image::ImageFormat::Png,
    );
    let cases: &[(&[(&str, &str)], (u32, u32))] = &[
        (&[], (300, 200)),
        (&[("width", "150")], (150, 100)),
        (&[("height", "50")], (75, 50)),
        (&[("width", "100"), ("height", "100")], (100, 67)),
        (
            &[("width", "100"), ("height", "100"), ("fit", "contain")],
            (100, 67),
        ),
        (
            &[("width", "100"), ("height", "100"), ("fit", "cover")],
            (100, 100),
        ),
        (
            &[("width", "100"), ("height", "100"), ("fit", "crop")],
            (100, 100),
        ),
        (
            &[("width", "100"), ("height", "100"), ("fit", "pad")],
            (100, 100),
        ),
        (
            &[("width", "100"), ("height", "100"), ("fit", "fill")],
            (100, 100),
        ),
        (
            &[("width", "100"), ("height", "100"), ("fit", "scale-down")],
            (100, 67),
        ),
        // Enlarging: contain/cover/pad/fill may, scale-down/crop never do.
        (
            &[("width", "600"), ("height", "600"), ("fit", "contain")],
            (600, 400),
        ),
        (
            &[("width", "600"), ("height", "600"), ("fit", "cover")],
            (600, 600),
        ),
        (
            &[("width", "600"), ("height", "600"), ("fit", "scale-down")],
            (300, 200),
        ),
        (
            &[("width", "600"), ("height", "600"), ("fit", "crop")],
            (300, 200),
        ),
        (
            &[("width", "600"), ("height", "600"), ("fit", "pad")],
            (600, 600),
        ),
        (&[("width", "600"), ("fit", "scale-down")], (300, 200)),
        // Rotation applies before the box.
        (&[("rotate", "90"), ("width", "100")], (100, 150)),
        (&[("rotate", "270")], (200, 300)),
        (&[("rotate", "180"), ("width", "150")], (150, 100)),
        // Explicit crop, then the box.
        (&[("crop", "100:50:10:10")], (100, 50)),
        (&[("crop", "100:50:10:10"), ("width", "50")], (50, 25)),
        (&[("crop", "1000:1000:250:150")], (50, 50)),
        (&[("blur", "5"), ("width", "100")], (100, 67)),
        (&[("sharpen", "2"), ("width", "100")], (100, 67)),
    ];
    for (params, want) in cases {
        let mut p = params.to_vec();
        p.push(("format", "png"));
        let out = run(&src, &p);
        let d = decode(&out);
        assert_eq!((d.width(), d.height()), *want, "{params:?}");
    }
}

#[test]
fn requests_the_engine_cannot_honour_are_400() {
    let src = encode_with(
        &DynamicImage::ImageRgb8(gradient(30, 20)),
        image::ImageFormat::Png,
    );
    let mut s = spec(&[]);
    s.width = Some(100_000);
    let e = transform(&src, &s, &ImageOptions::default()).unwrap_err();
    assert!(
        matches!(&e, TransformError::BadRequest(m) if m.contains("100000")),
        "{e:?}"
    );
    let e = transform(
        &src,
        &spec(&[("crop", "10:10:50:0")]),
        &ImageOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, TransformError::BadRequest(_)), "{e:?}");
    let mut s = spec(&[]);
    s.rotate = Some(45);
    assert!(matches!(
        transform(&src, &s, &ImageOptions::default()),
        Err(TransformError::BadRequest(_))
    ));
}

/// Left half red, right half blue, 400x200.
fn halves() -> Vec<u8> {
    let img = RgbImage::from_fn(400, 200, |x, _| {
        if x < 200 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    encode_with(&DynamicImage::ImageRgb8(img), image::ImageFormat::Png)
}

#[test]
fn gravity_chooses_the_kept_part() {
    let src = halves();
    let centre = |params: &[(&str, &str)]| {
        let mut p = vec![
            ("width", "100"),
            ("height", "100"),
            ("fit", "cover"),
            ("format", "png"),
        ];
        p.extend_from_slice(params);
        let d = decode(&run(&src, &p)).to_rgb8();
        d.get_pixel(50, 50).0
    };
    assert_eq!(centre(&[("gravity", "left")]), [255, 0, 0]);
    assert_eq!(centre(&[("gravity", "right")]), [0, 0, 255]);
    assert_eq!(centre(&[("gravity", "0.1x0.5")]), [255, 0, 0]);
    assert_eq!(centre(&[("gravity", "0.9x0.5")]), [0, 0, 255]);
    // Pad places by gravity and fills with the background.
    let d = decode(&run(
        &src,
        &[
            ("width", "200"),
            ("height", "200"),
            ("fit", "pad"),
            ("background", "#00ff00"),
            ("gravity", "bottom"),
            ("format", "png"),
        ],
    ))
    .to_rgb8();
    assert_eq!(d.get_pixel(100, 10).0, [0, 255, 0]);
    assert_eq!(d.get_pixel(10, 190).0, [255, 0, 0]);
    // Auto: detail on the right wins.
    let mut img = RgbImage::from_pixel(400, 200, Rgb([128, 128, 128]));
    for y in 0..200 {
        for x in 300..380 {
            let v = if (x / 2 + y / 2) % 2 == 0 { 0 } else { 255 };
            img.put_pixel(x, y, Rgb([v, 255 - v, v / 2]));
        }
    }
    let src = encode_with(&DynamicImage::ImageRgb8(img), image::ImageFormat::Png);
    let d = decode(&run(
        &src,
        &[
            ("width", "100"),
            ("height", "100"),
            ("fit", "cover"),
            ("gravity", "auto"),
            ("format", "png"),
        ],
    ))
    .to_rgb8();
    // The kept window is the right half: its right part is the detailed block.
    let flat = (0..100)
        .filter(|&x| d.get_pixel(x, 50).0 == [128, 128, 128])
        .count();
    assert!(
        flat < 60,
        "auto gravity kept mostly flat pixels ({flat}/100)"
    );
}

/// A 64x32 JPEG with quadrants TL red, TR green, BL blue, BR white and an EXIF block with
/// the given orientation (and GPS).
fn oriented_jpeg(orientation: u16) -> Vec<u8> {
    let img = RgbImage::from_fn(64, 32, |x, y| match (x < 32, y < 16) {
        (true, true) => Rgb([255, 0, 0]),
        (false, true) => Rgb([0, 255, 0]),
        (true, false) => Rgb([0, 0, 255]),
        (false, false) => Rgb([255, 255, 255]),
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .unwrap();
    exif::jpeg_insert_exif(jpeg, &exif::tests::sample_exif(orientation))
}

#[test]
fn exif_orientation_1_to_8_is_applied_first() {
    const R: [u8; 3] = [255, 0, 0];
    const G: [u8; 3] = [0, 255, 0];
    const B: [u8; 3] = [0, 0, 255];
    const W: [u8; 3] = [255, 255, 255];
    let table = [
        (1, R, G, (64, 32)),
        (2, G, R, (64, 32)),
        (3, W, B, (64, 32)),
        (4, B, W, (64, 32)),
        (5, R, B, (32, 64)),
        (6, B, R, (32, 64)),
        (7, W, G, (32, 64)),
        (8, G, W, (32, 64)),
    ];
    for (o, tl, tr, dims) in table {
        let src = oriented_jpeg(o);
        let p = probe(&src, &ImageOptions::default()).unwrap();
        assert_eq!(
            (p.orientation, p.width, p.height),
            (o as u8, dims.0, dims.1)
        );
        let d = decode(&run(&src, &[("format", "png")])).to_rgb8();
        assert_eq!(d.dimensions(), dims, "orientation {o}");
        assert!(
            close(&d.get_pixel(4, 4).0, &tl, 40),
            "orientation {o} TL {:?}",
            d.get_pixel(4, 4)
        );
        assert!(
            close(&d.get_pixel(dims.0 - 5, 4).0, &tr, 40),
            "orientation {o} TR {:?}",
            d.get_pixel(dims.0 - 5, 4)
        );
        // Orientation before the box: width applies to the displayed image.
        let out = run(&src, &[("width", "16"), ("format", "png")]);
        assert_eq!(
            (out.width, out.height),
            (16, 16 * dims.1 / dims.0),
            "orientation {o}"
        );
    }
}

#[test]
fn outputs_carry_only_a_jpeg_copyright_by_default() {
    let photo = sample("photo.jpg");
    assert!(exif::jpeg_exif(&photo).is_some(), "the sample has EXIF");
    // Cloudflare's default for JPEG: the artist and copyright, nothing else (no GPS).
    let jpeg = run(&photo, &[("width", "300")]);
    assert_eq!(jpeg.content_type, "image/jpeg");
    let kept = exif::jpeg_exif(&jpeg.body).expect("the copyright is kept");
    assert!(contains(&kept, b"Public domain"));
    assert!(!contains(&jpeg.body, b"http://ns.adobe.com/xap"));
    let none = run(&photo, &[("width", "300"), ("metadata", "none")]);
    assert_eq!(exif::jpeg_exif(&none.body), None);
    assert!(!contains(&none.body, b"Exif\0\0"));
    let webp = run(&photo, &[("width", "300"), ("format", "webp")]);
    assert!(!contains(&webp.body, b"EXIF") && !contains(&webp.body, b"XMP "));
    let mut d = image::codecs::webp::WebPDecoder::new(Cursor::new(&webp.body[..])).unwrap();
    assert_eq!(d.exif_metadata().unwrap(), None);
    let png = run(&photo, &[("width", "300"), ("format", "png")]);
    assert!(!contains(&png.body, b"eXIf") && !contains(&png.body, b"iTXt"));
    // metadata=keep keeps the camera but never GPS; copyright keeps only that.
    let kept = run(&oriented_jpeg(6), &[("metadata", "keep")]);
    let j = exif::to_json(&exif::jpeg_exif(&kept.body).expect("kept exif"));
    assert_eq!(j["Make"], "TestCam");
    assert!(
        j.get("latitude").is_none() && j.get("Orientation").is_none(),
        "{j}"
    );
    let c = run(&oriented_jpeg(6), &[("metadata", "copyright")]);
    let j = exif::to_json(&exif::jpeg_exif(&c.body).expect("copyright exif"));
    assert_eq!(j["Copyright"], "(c) Test");
    assert!(j.get("Make").is_none());
    // WebP and PNG carry the same kept block, readable by an independent parser.
    for f in ["webp", "png"] {
        let out = run(&oriented_jpeg(6), &[("metadata", "keep"), ("format", f)]);
        let e = ::exif::Reader::new()
            .read_from_container(&mut Cursor::new(&out.body[..]))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let make = e.get_field(::exif::Tag::Make, ::exif::In::PRIMARY).unwrap();
        assert!(make.display_value().to_string().contains("TestCam"), "{f}");
        assert!(e
            .get_field(::exif::Tag::GPSLatitude, ::exif::In::PRIMARY)
            .is_none());
        decode(&out);
        if f == "webp" {
            let mut d = image::codecs::webp::WebPDecoder::new(Cursor::new(&out.body[..])).unwrap();
            assert!(d.exif_metadata().unwrap().is_some());
        }
    }
    let alpha = run(
        &sample("alpha.png"),
        &[("metadata", "keep"), ("format", "webp")],
    );
    assert!(decode(&alpha).color().has_alpha());
    // The server-wide default applies when the request does not say.
    let opts = ImageOptions {
        metadata: Some(MetadataPolicy::None),
        ..ImageOptions::default()
    };
    let out = transform(&oriented_jpeg(1), &spec(&[]), &opts).unwrap();
    assert!(exif::jpeg_exif(&out.body).is_none());
    // Unset, Cloudflare's: a JPEG keeps the copyright, a WebP nothing.
    let out = transform(&oriented_jpeg(1), &spec(&[]), &ImageOptions::default()).unwrap();
    assert!(exif::jpeg_exif(&out.body).is_some());
    let out = transform(
        &oriented_jpeg(1),
        &spec(&[("format", "webp")]),
        &ImageOptions::default(),
    )
    .unwrap();
    assert!(!out.body.windows(4).any(|w| w == b"EXIF"));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sample_photo_resizes_and_reports_metadata() {
    let photo = sample("photo.jpg");
    let p = probe(&photo, &ImageOptions::default()).unwrap();
    assert_eq!((p.width, p.height, p.orientation), (1800, 1200, 6));
    let out = run(&photo, &[("width", "900"), ("format", "webp")]);
    assert_eq!((out.width, out.height), (900, 600));
    decode(&out);
    // Shrink-on-load gives the same size as a full decode would.
    let out = run(
        &photo,
        &[("width", "200"), ("height", "200"), ("fit", "cover")],
    );
    assert_eq!((decode(&out).width(), out.height), (200, 200));
    let m = metadata_json(&photo, &ImageOptions::default()).unwrap();
    assert_eq!(m["width"], 1800);
    assert_eq!(m["height"], 1200);
    assert_eq!(m["format"], "jpeg");
    assert_eq!(m["mime_type"], "image/jpeg");
    assert_eq!(m["size"], photo.len());
    assert_eq!(m["has_alpha"], false);
    assert_eq!(m["is_animated"], false);
    let lat = m["exif"]["latitude"].as_f64().unwrap();
    let lon = m["exif"]["longitude"].as_f64().unwrap();
    assert!(
        (lat - 48.8584).abs() < 1e-3 && (lon - 2.2945).abs() < 1e-3,
        "{lat},{lon}"
    );
    let ph = m["placeholder"].as_str().unwrap();
    let hash = base64::engine::general_purpose::STANDARD
        .decode(ph)
        .unwrap();
    let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
    assert!((ratio - 1.5).abs() < 0.2, "{ratio}");
    // format=json through transform.
    let out = run(&photo, &[("format", "json")]);
    assert_eq!(out.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["width"], 1800);
}

#[test]
fn shrink_on_load_matches_a_full_decode() {
    let photo = sample("photo.jpg");
    let p = probe(&photo, &ImageOptions::default()).unwrap();
    let opts = ImageOptions::default();
    let full = decode::still(&photo, &p, &opts, 1).unwrap().raster;
    let eighth = decode::still(&photo, &p, &opts, 8).unwrap().raster;
    assert_eq!((full.width, full.height), (1800, 1200));
    assert_eq!((eighth.width, eighth.height), (225, 150));
    let a = ops::resize(&full, (0.0, 0.0, 1800.0, 1200.0), (150, 100)).unwrap();
    let b = ops::resize(&eighth, (0.0, 0.0, 225.0, 150.0), (150, 100)).unwrap();
    let mean: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .sum::<f64>()
        / a.data.len() as f64;
    assert!(mean < 4.0, "mean abs diff {mean}");
}

#[test]
fn alpha_is_kept_or_flattened() {
    let png = sample("alpha.png");
    let p = probe(&png, &ImageOptions::default()).unwrap();
    assert_eq!(p.has_alpha, Some(true));
    let src = image::load_from_memory(&png).unwrap().to_rgba8();
    let (tx, ty) = src
        .enumerate_pixels()
        .find(|(_, _, px)| px[3] == 0)
        .map(|(x, y, _)| (x, y))
        .expect("sample has transparent pixels");
    for fmt in ["webp", "png"] {
        let out = run(&png, &[("format", fmt)]);
        let d = decode(&out);
        assert!(d.color().has_alpha(), "{fmt} lost alpha");
        assert_eq!(d.to_rgba8().get_pixel(tx, ty)[3], 0, "{fmt}");
    }
    let out = run(&png, &[("format", "jpeg"), ("background", "#ff0000")]);
    let d = decode(&out).to_rgb8();
    assert!(
        close(&d.get_pixel(tx, ty).0, &[255, 0, 0], 30),
        "{:?}",
        d.get_pixel(tx, ty)
    );
    // Default background for JPEG is white.
    let d = decode(&run(&png, &[("format", "jpeg")])).to_rgb8();
    assert!(close(&d.get_pixel(tx, ty).0, &[255, 255, 255], 30));
    // A fully opaque RGBA image is written without an alpha channel.
    let opaque = encode_with(
        &DynamicImage::ImageRgba8(RgbaImage::from_pixel(20, 20, Rgba([1, 2, 3, 255]))),
        image::ImageFormat::Png,
    );
    assert!(!decode(&run(&opaque, &[("format", "png")]))
        .color()
        .has_alpha());
}

fn finite(lc: image::metadata::LoopCount) -> Option<u32> {
    match lc {
        image::metadata::LoopCount::Infinite => None,
        image::metadata::LoopCount::Finite(n) => Some(n.get()),
    }
}

fn webp_frames(bytes: &[u8]) -> (Vec<image::Frame>, image::metadata::LoopCount) {
    let d = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).unwrap();
    assert!(d.has_animation());
    let lc = d.loop_count();
    (d.into_frames().collect_frames().unwrap(), lc)
}

#[test]
fn animated_gif_becomes_animated_webp() {
    let gif = sample("anim.gif");
    let p = probe(&gif, &ImageOptions::default()).unwrap();
    assert_eq!((p.width, p.height, p.frame_count), (320, 240, Some(24)));
    let src_frames = image::codecs::gif::GifDecoder::new(Cursor::new(&gif[..]))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    let out = run(&gif, &[("width", "160"), ("format", "webp")]);
    assert_eq!(
        (out.content_type, out.width, out.height),
        ("image/webp", 160, 120)
    );
    let (frames, _) = webp_frames(&out.body);
    assert_eq!(frames.len(), 24);
    for (a, b) in frames.iter().zip(&src_frames) {
        assert_eq!(a.buffer().dimensions(), (160, 120));
        assert_eq!(a.delay().numer_denom_ms(), b.delay().numer_denom_ms());
    }
    // GIF → GIF keeps the frames too.
    let out = run(&gif, &[("width", "100")]);
    assert_eq!(out.content_type, "image/gif");
    let n = image::codecs::gif::GifDecoder::new(Cursor::new(&out.body[..]))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap()
        .len();
    assert_eq!(n, 24);
    // animated=false: the first frame only.
    let out = run(
        &gif,
        &[("width", "160"), ("format", "webp"), ("animated", "false")],
    );
    let d = image::codecs::webp::WebPDecoder::new(Cursor::new(&out.body[..])).unwrap();
    assert!(!d.has_animation());
    // A still output format takes the first frame.
    let out = run(&gif, &[("format", "png")]);
    assert_eq!((decode(&out).width(), out.height), (320, 240));
}

#[test]
fn animation_timing_and_loops_survive() {
    let delays = [40u32, 100, 250];
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        enc.set_repeat(image::codecs::gif::Repeat::Finite(3))
            .unwrap();
        for (i, d) in delays.iter().enumerate() {
            let c = [(i * 100) as u8, 50, 200, 255];
            let buf = RgbaImage::from_pixel(40, 30, Rgba(c));
            enc.encode_frame(image::Frame::from_parts(
                buf,
                0,
                0,
                image::Delay::from_numer_denom_ms(*d, 1),
            ))
            .unwrap();
        }
    }
    let out = run(&gif, &[("width", "20"), ("format", "webp")]);
    let (frames, loops) = webp_frames(&out.body);
    let got: Vec<u32> = frames
        .iter()
        .map(|f| f.delay().numer_denom_ms().0)
        .collect();
    assert_eq!(got, delays);
    assert_eq!(finite(loops), Some(3));
    // WebP → GIF keeps them too.
    let back = run(&out.body, &[("format", "gif")]);
    let d = image::codecs::gif::GifDecoder::new(Cursor::new(&back.body[..])).unwrap();
    assert_eq!(finite(d.loop_count()), Some(3));
    let got: Vec<u32> = d
        .into_frames()
        .collect_frames()
        .unwrap()
        .iter()
        .map(|f| f.delay().numer_denom_ms().0)
        .collect();
    assert_eq!(got, delays);
}

#[test]
fn animation_budget_is_enforced() {
    let gif = sample("anim.gif");
    let opts = ImageOptions {
        animation_budget_pixels: 320 * 240 * 10,
        ..ImageOptions::default()
    };
    let e = transform(&gif, &spec(&[("format", "webp")]), &opts).unwrap_err();
    assert!(
        matches!(&e, TransformError::TooLarge(m) if m.contains("24 frames")),
        "{e:?}"
    );
    // The first frame alone is fine.
    assert!(transform(
        &gif,
        &spec(&[("format", "webp"), ("animated", "false")]),
        &opts
    )
    .is_ok());
}

/// A long 1080p animation resized small fits the memory budget (output frames) even though
/// its source frames alone would not; the decode budget bounds the time.
#[test]
fn long_1080p_animation_resized_small_is_bounded_by_output_size() {
    let (w, h, n) = (1920u16, 1080u16, 12usize);
    let mut gif = Vec::new();
    {
        let palette = [0u8, 0, 0, 255, 255, 255, 255, 0, 0];
        let mut e = ::gif::Encoder::new(&mut gif, w, h, &palette).unwrap();
        e.set_repeat(::gif::Repeat::Infinite).unwrap();
        let mut px = vec![0u8; usize::from(w) * usize::from(h)];
        for i in 0..n {
            // A red bar moving right over black, a white bottom band.
            px.fill(0);
            let x0 = i * 150;
            for y in 0..usize::from(h) {
                let row = y * usize::from(w);
                if y > 900 {
                    px[row..row + usize::from(w)].fill(1);
                } else {
                    px[row + x0..row + x0 + 40].fill(2);
                }
            }
            let mut f = ::gif::Frame::from_indexed_pixels(w, h, px.clone(), None);
            f.delay = 4;
            e.write_frame(&f).unwrap();
        }
    }
    // Source frames alone: 12 × 2.07 M = 24.9 M pixels, over a 20 M output budget.
    let opts = ImageOptions {
        animation_budget_pixels: 20_000_000,
        ..ImageOptions::default()
    };
    let out = transform(&gif, &spec(&[("width", "320"), ("format", "webp")]), &opts)
        .expect("small output fits");
    assert_eq!((out.width, out.height), (320, 180));
    let frames = image::codecs::webp::WebPDecoder::new(Cursor::new(&out.body[..]))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), n);
    // At full size the kept frames would be too much memory: 413.
    let e = transform(&gif, &spec(&[("format", "webp")]), &opts).unwrap_err();
    assert!(matches!(e, TransformError::TooLarge(_)), "{e:?}");
    // And the decode budget bounds the work whatever the output size.
    let tight = ImageOptions {
        animation_decode_pixels: 1920 * 1080 * 10,
        ..opts
    };
    let e = transform(&gif, &spec(&[("width", "320"), ("format", "webp")]), &tight).unwrap_err();
    assert!(matches!(e, TransformError::TooLarge(_)), "{e:?}");
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose header claims `w`×`h` with one tiny IDAT.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], body: &[u8]| {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut crc_in = kind.to_vec();
        crc_in.extend_from_slice(body);
        out.extend_from_slice(&crc_in);
        out.extend_from_slice(&crc32(&crc_in).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn bombs_are_refused_before_decoding() {
    let opts = ImageOptions::default();
    let bomb = png_claiming(100_000, 100_000);
    assert_eq!(sniff(&bomb), Some(ImageFormat::Png));
    for e in [
        probe(&bomb, &opts).unwrap_err(),
        transform(&bomb, &spec(&[("width", "100")]), &opts).unwrap_err(),
        metadata_json(&bomb, &opts).unwrap_err(),
    ] {
        assert!(
            matches!(&e, TransformError::TooLarge(m) if m.contains("100000x100000")),
            "{e:?}"
        );
        assert_eq!(e.to_api().status, 413);
    }
    // GIF logical screen 65535x65535.
    let gif = b"GIF89a\xff\xff\xff\xff\x00\x00\x00;".to_vec();
    assert!(matches!(
        transform(&gif, &spec(&[]), &opts),
        Err(TransformError::TooLarge(_))
    ));
    // A JPEG SOF claiming 65500x65500.
    let mut jpeg = vec![
        0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFF, 0xDC, 0xFF, 0xDC, 0x03,
    ];
    jpeg.extend_from_slice(&[1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    assert!(matches!(
        transform(&jpeg, &spec(&[]), &opts),
        Err(TransformError::TooLarge(_))
    ));
    // Byte limit.
    let small = ImageOptions {
        max_input_bytes: 1000,
        ..ImageOptions::default()
    };
    let e = transform(&sample("photo.jpg"), &spec(&[]), &small).unwrap_err();
    assert!(
        matches!(&e, TransformError::TooLarge(m) if m.contains("1000")),
        "{e:?}"
    );
    // Pixel limit below a real image.
    let tight = ImageOptions {
        max_input_pixels: 1000,
        ..ImageOptions::default()
    };
    assert!(matches!(
        transform(&sample("alpha.png"), &spec(&[]), &tight),
        Err(TransformError::TooLarge(_))
    ));
}

#[test]
fn truncated_corrupt_and_garbage_inputs_are_errors_not_panics() {
    let opts = ImageOptions::default();
    let photo = sample("photo.jpg");
    let png = sample("alpha.png");
    let gif = sample("anim.gif");
    let webp = run(&png, &[("format", "webp")]).body.to_vec();
    // Garbage that is no image: 415.
    for g in [&b""[..], b"hello world", &[0u8; 64][..]] {
        let e = transform(g, &spec(&[]), &opts).unwrap_err();
        assert!(matches!(e, TransformError::Unsupported(_)), "{e:?}");
        assert_eq!(e.to_api().status, 415);
    }
    // Truncated: 422 (or a decodable prefix for formats that allow it) but never a panic.
    for (name, bytes) in [
        ("jpeg", &photo),
        ("png", &png),
        ("gif", &gif),
        ("webp", &webp),
    ] {
        for cut in [12usize, 40, 100, bytes.len() / 2, bytes.len() - 10] {
            let r = transform(
                &bytes[..cut],
                &spec(&[("width", "50"), ("format", "png")]),
                &opts,
            );
            if let Err(e) = &r {
                assert!(
                    matches!(
                        e,
                        TransformError::Invalid(_) | TransformError::Unsupported(_)
                    ),
                    "{name} cut at {cut}: {e:?}"
                );
            }
            let _ = metadata_json(&bytes[..cut], &opts);
        }
        // Mid-file truncation of PNG and JPEG is an error.
        if name == "png" || name == "jpeg" {
            let e = transform(
                &bytes[..bytes.len() / 2],
                &spec(&[("format", "png")]),
                &opts,
            )
            .unwrap_err();
            assert!(matches!(e, TransformError::Invalid(_)), "{name}: {e:?}");
            assert_eq!(e.to_api().status, 422);
        }
    }
    // Magic followed by garbage: 422.
    for magic in [
        &b"\x89PNG\r\n\x1a\n"[..],
        b"\xFF\xD8\xFF\xE0",
        b"GIF89a",
        b"RIFF\0\0\0\0WEBPVP8 ",
        b"II*\0",
    ] {
        let mut b = magic.to_vec();
        b.extend(std::iter::repeat_n(0xA5u8, 200));
        let e = transform(&b, &spec(&[]), &opts).unwrap_err();
        // (GIF's garbage screen size reads as 42405x42405: refused as too large.)
        assert!(
            matches!(
                e,
                TransformError::Invalid(_)
                    | TransformError::Unsupported(_)
                    | TransformError::TooLarge(_)
            ),
            "{magic:?}: {e:?}"
        );
    }
    // Bit flips through a real JPEG: any result but a panic.
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..20 {
        let mut b = photo.clone();
        for _ in 0..10 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % b.len() as u64) as usize;
            b[i] ^= (rng >> 32) as u8 | 1;
        }
        let _ = transform(&b, &spec(&[("width", "64")]), &opts);
    }
}

#[test]
fn icc_tagged_inputs_come_out_in_srgb_without_a_profile() {
    use image::ImageEncoder;
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let img = RgbImage::from_pixel(40, 40, Rgb([200, 100, 50]));
    let mut png = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(&mut png);
    enc.set_icc_profile(p3).unwrap();
    enc.write_image(img.as_raw(), 40, 40, image::ExtendedColorType::Rgb8)
        .unwrap();
    let out = run(&png, &[("width", "20"), ("format", "png")]);
    assert!(!contains(&out.body, b"iCCP"));
    let px = decode(&out).to_rgb8().get_pixel(10, 10).0;
    assert!(px[0] > 200 && px[2] < 50, "{px:?}");
}

/// A PNG whose header says `w`×`h` at `depth` bits, color type `color`, with one tiny IDAT:
/// enough for a header probe, nothing to decode.
fn png_header_only(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32fast::hash(&c).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn decode_memory_is_budgeted_in_bytes_before_decoding() {
    let opts = ImageOptions::default();
    // Under the pixel limit, over the memory budget: refused from the header (413).
    let bombs: [(&str, Vec<u8>); 3] = [
        // 16-bit RGBA 16000²: 8 B/px decoded + 4 B/px working copy ≈ 3 GB.
        ("16-bit RGBA PNG", png_header_only(16000, 16000, 16, 6)),
        // 1-bit grey 16383²: a tiny file, 1 GiB of RGBA.
        ("1-bit PNG", png_header_only(16383, 16383, 1, 0)),
        // A GIF whose logical screen is 16383²: 43 bytes.
        ("GIF canvas", {
            let mut g = b"GIF89a".to_vec();
            g.extend_from_slice(&16383u16.to_le_bytes());
            g.extend_from_slice(&16383u16.to_le_bytes());
            g.extend_from_slice(&[0, 0, 0]);
            g.extend_from_slice(&[0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b]);
            g
        }),
    ];
    for (what, bytes) in bombs {
        match probe::probe(&bytes, &opts) {
            Err(TransformError::TooLarge(m)) => assert!(m.contains("MiB"), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // A large but ordinary image fits: 8-bit RGB 6000x4000 ≈ 168 MiB.
    let ok = png_header_only(6000, 4000, 8, 2);
    assert!(probe::check_decode_memory(6000, 4000, 6000 * 4000 * 3, &opts).is_ok());
    match probe::probe(&ok, &opts) {
        Ok(p) => assert_eq!((p.width, p.height), (6000, 4000)),
        Err(TransformError::TooLarge(m)) => panic!("refused: {m}"),
        Err(_) => {} // the stub IDAT may not satisfy every decoder; the budget passed
    }
}

#[test]
fn enlarging_is_bounded_by_the_source_area() {
    let png = encode_with(
        &DynamicImage::ImageRgb8(gradient(64, 64)),
        image::ImageFormat::Png,
    );
    // 64² → 4096² is 4096× the area: refused (413), whatever the codec.
    for fmt in ["avif", "png", "webp"] {
        let e = transform(
            &png,
            &spec(&[
                ("width", "4096"),
                ("height", "4096"),
                ("fit", "fill"),
                ("format", fmt),
            ]),
            &ImageOptions::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("{fmt}: an enlargement of 4096x the area was made"));
        assert!(matches!(e, TransformError::TooLarge(_)), "{fmt}: {e}");
        assert_eq!(e.to_api().status, 413);
    }
    // Within 16× the area (4× a side) is fine.
    let out = run(&png, &[("width", "256"), ("format", "png")]);
    assert_eq!((out.width, out.height), (256, 256));
    // And allowed further when configured so.
    let wide = ImageOptions {
        max_upscale_area: 10_000.0,
        ..ImageOptions::default()
    };
    let out = transform(&png, &spec(&[("width", "1024"), ("format", "png")]), &wide).unwrap();
    assert_eq!(out.width, 1024);
}

/// The memory the pool reserves for a transform is known from the header and the plan: the
/// decode at full size (or shrunk on load) plus the output rasters, and a bomb fails as the
/// transform itself would.
#[test]
fn memory_need_is_estimated_from_the_header_and_the_plan() {
    let opts = ImageOptions::default();
    let jpeg = encode_with(
        &DynamicImage::ImageRgb8(gradient(2000, 1600)),
        image::ImageFormat::Jpeg,
    );
    let full = 2000 * 1600 * (3 + 4);
    let big = memory_need(&jpeg, &spec(&[("width", "1900")]), &opts).unwrap();
    assert!(big >= full + jpeg.len() as u64, "{big} < {full}");
    // An 8th on a side decodes a 64th of the pixels.
    let small = memory_need(&jpeg, &spec(&[("width", "200")]), &opts).unwrap();
    assert!(small < full / 32 + jpeg.len() as u64 + (1 << 20), "{small}");
    let no_shrink = ImageOptions {
        shrink_on_load: false,
        ..ImageOptions::default()
    };
    let unshrunk = memory_need(&jpeg, &spec(&[("width", "200")]), &no_shrink).unwrap();
    assert!(unshrunk >= full, "{unshrunk}");
    // The output side counts: an enlargement holds its output rasters.
    let png = encode_with(
        &DynamicImage::ImageRgb8(gradient(500, 500)),
        image::ImageFormat::Png,
    );
    let up = memory_need(&png, &spec(&[("width", "2000"), ("format", "png")]), &opts).unwrap();
    assert!(up >= 2000 * 2000 * 4 * 3, "{up}");
    // A 16-bit 16000² PNG is refused as the transform refuses it.
    let bomb = png_header_only(16000, 16000, 16, 6);
    let e = memory_need(&bomb, &spec(&[("width", "100")]), &opts).unwrap_err();
    assert_eq!(e.to_api().status, 413);
}
