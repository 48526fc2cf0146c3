//! The image engine: bytes + [`filters::TransformSpec`] → [`Output`]. It owns the whole
//! still/animated image pipeline — sniff the format from the bytes, probe the header and
//! refuse oversized inputs before any pixel is decoded, decode under `image::Limits` (JPEG
//! with libjpeg-turbo shrink-on-load), apply EXIF orientation, explicit crop, the planned
//! resize/crop/pad (see [`crate::transform::geometry`] for the fit semantics), rotation, blur and sharpen,
//! flatten alpha where the output has none, and encode — plus the metadata JSON with EXIF
//! and a ThumbHash placeholder. Everything is synchronous and CPU-bound: callers run it on
//! the transform [`crate::transform::Pool`]. `budget` owns what a transform may spend (its
//! memory estimate, the stage checkpoint). It must not fetch, cache or know about HTTP
//! beyond the [`TransformError`] kinds.
//!
//! Privacy: no output carries EXIF, XMP, ICC or GPS unless the metadata policy asks; even
//! then GPS and maker notes never survive (JPEG outputs only; other formats carry none).
//!
//! Order of operations: EXIF orientation → `crop` (in oriented source pixels) → plan in the
//! rotated frame (`rotate` happens before `width`/`height` apply, as in Cloudflare) →
//! resize the planned region with Lanczos3 → rotate the (small) result → blur → sharpen →
//! pad → flatten → encode.

mod budget;
mod color;
mod decode;
mod encode;
pub mod exif;
mod heif;
mod layout;
mod ops;
mod probe;
mod svg;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trim_tests;

use base64::Engine as _;
use bytes::Bytes;
use filters::{Format, TransformSpec};
use serde_json::json;

use super::{Output, TransformError};
use crate::transform::geometry;
pub use budget::memory_need;
use budget::Checkpoint;
#[cfg(feature = "heic")]
pub use heif::warm_up as warm_up_heif;
use layout::Geometry;

/// The input format, sniffed from the bytes.
pub use crate::transform::sniff::{image_format as sniff, ImageFormat};

/// Which metadata an output keeps (Cloudflare `metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum MetadataPolicy {
    /// Camera description and copyright (never GPS, maker notes or orientation).
    Keep,
    /// Artist and copyright only.
    Copyright,
    /// Nothing.
    #[default]
    None,
}

impl From<filters::Metadata> for MetadataPolicy {
    fn from(m: filters::Metadata) -> Self {
        match m {
            filters::Metadata::Keep => MetadataPolicy::Keep,
            filters::Metadata::Copyright => MetadataPolicy::Copyright,
            filters::Metadata::None => MetadataPolicy::None,
        }
    }
}

/// Engine limits and switches.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageOptions {
    /// Largest input, in pixels (width × height as stored). Default 268 402 689 (16383²).
    pub max_input_pixels: u64,
    /// Memory one decode may take (decoder buffer + RGBA working copy), checked from the
    /// header. Default 1 GiB.
    pub max_decode_bytes: u64,
    /// Output pixels at most this many times the source's (enlarging). Default 16 (4× a
    /// side).
    pub max_upscale_area: f64,
    /// Largest input, in bytes. Default 64 MiB.
    pub max_input_bytes: u64,
    /// Largest output side. Default 4096.
    pub max_output_side: u32,
    /// Whether AVIF may be produced (explicit `format=avif` falls back to WebP when off).
    pub avif_enabled: bool,
    /// rav1e speed 1 (slow, small) ..= 10 (fast). Default 8.
    pub avif_speed: u8,
    /// The metadata policy when the request does not say; unset (the default),
    /// Cloudflare's: `copyright` for JPEG outputs, nothing for the others.
    pub metadata: Option<MetadataPolicy>,
    /// Frames × canvas pixels an animation may decode (and produce). Default 100 M.
    pub animation_budget_pixels: u64,
    /// Frames × source canvas pixels an animation may decode (the time bound; frames are
    /// decoded one at a time, so this costs no memory). Default 1 G (≈ 480 frames of 1080p).
    pub animation_decode_pixels: u64,
    /// Decode JPEG at 1/2, 1/4 or 1/8 scale when the output is that much smaller. Default
    /// true; off only to measure what it saves.
    pub shrink_on_load: bool,
    /// Wall-clock limit of one image transform, checked between stages and frames (504
    /// past it). Default 30 s.
    pub timeout: std::time::Duration,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            max_input_pixels: 268_402_689,
            max_decode_bytes: 1 << 30,
            max_upscale_area: 16.0,
            max_input_bytes: 64 * 1024 * 1024,
            max_output_side: 4096,
            avif_enabled: true,
            avif_speed: 8,
            metadata: None,
            animation_budget_pixels: 100_000_000,
            animation_decode_pixels: 1_000_000_000,
            shrink_on_load: true,
            timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// What a header-only probe learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub format: ImageFormat,
    /// Displayed size (after EXIF orientation).
    pub width: u32,
    pub height: u32,
    /// Stored size (before EXIF orientation).
    pub stored_width: u32,
    pub stored_height: u32,
    /// EXIF orientation 1..=8 (1 when absent).
    pub orientation: u8,
    pub has_alpha: Option<bool>,
    /// Frame count when cheap to know (GIF: block walk without LZW; WebP: header).
    pub frame_count: Option<u32>,
    /// The decoder's buffer for one frame at full size, in bytes (pixels × bytes per pixel
    /// of the stored color type).
    pub decoded_bytes: u64,
}

impl Probe {
    pub fn is_animated(&self) -> bool {
        self.frame_count.is_some_and(|n| n > 1)
    }
}

/// Header-only probe: dimensions, format, frame count, alpha. Enforces the byte and pixel
/// limits (413) and never decodes pixel data.
pub fn probe(bytes: &[u8], opts: &ImageOptions) -> Result<Probe, TransformError> {
    probe::probe(bytes, opts)
}

/// An output format this engine encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutFormat {
    Webp,
    Avif,
    Jpeg,
    Png,
    Gif,
}

impl OutFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutFormat::Webp => "webp",
            OutFormat::Avif => "avif",
            OutFormat::Jpeg => "jpeg",
            OutFormat::Png => "png",
            OutFormat::Gif => "gif",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            OutFormat::Webp => "image/webp",
            OutFormat::Avif => "image/avif",
            OutFormat::Jpeg => "image/jpeg",
            OutFormat::Png => "image/png",
            OutFormat::Gif => "image/gif",
        }
    }

    fn has_alpha(self) -> bool {
        !matches!(self, OutFormat::Jpeg)
    }
}

/// 8-bit RGB or RGBA pixels, straight alpha, rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raster {
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
    pub data: Vec<u8>,
}

/// The output format: the requested one, or (for `None`/`auto`) the source's family. With
/// `compression=fast` a still WebP or AVIF becomes the quickest to encode (JPEG, or PNG
/// where there is transparency), as Cloudflare documents.
fn output_format(
    requested: Option<Format>,
    src: &Probe,
    opts: &ImageOptions,
    fast: bool,
) -> Result<OutFormat, TransformError> {
    let alpha = src.has_alpha.unwrap_or(true);
    let out = match requested {
        Some(Format::Webp) => OutFormat::Webp,
        Some(Format::Avif) => OutFormat::Avif,
        Some(Format::Jpeg | Format::BaselineJpeg) => OutFormat::Jpeg,
        Some(Format::Png) => OutFormat::Png,
        Some(Format::Gif) => OutFormat::Gif,
        Some(f @ (Format::Mp4 | Format::Webm | Format::M4a | Format::Json)) => {
            return Err(TransformError::BadRequest(format!(
                "format {f} is not an image output format"
            )))
        }
        None | Some(Format::Auto) => match src.format {
            ImageFormat::Jpeg => OutFormat::Jpeg,
            ImageFormat::Png | ImageFormat::Svg => OutFormat::Png,
            ImageFormat::Gif => OutFormat::Gif,
            ImageFormat::Webp => OutFormat::Webp,
            ImageFormat::Avif => OutFormat::Avif,
            ImageFormat::Bmp | ImageFormat::Tiff | ImageFormat::Heic => {
                if alpha {
                    OutFormat::Png
                } else {
                    OutFormat::Jpeg
                }
            }
        },
    };
    let still = !src.is_animated();
    Ok(match out {
        OutFormat::Webp | OutFormat::Avif if fast && still && alpha => OutFormat::Png,
        OutFormat::Webp | OutFormat::Avif if fast && still => OutFormat::Jpeg,
        OutFormat::Avif if !opts.avif_enabled => OutFormat::Webp,
        out => out,
    })
}

fn background(spec: &TransformSpec) -> [u8; 4] {
    spec.background
        .as_deref()
        .and_then(ops::parse_rgba)
        .unwrap_or([255, 255, 255, 255])
}

fn metadata_policy(spec: &TransformSpec, opts: &ImageOptions, fmt: OutFormat) -> MetadataPolicy {
    spec.metadata
        .map(MetadataPolicy::from)
        .or(opts.metadata)
        .unwrap_or(if fmt == OutFormat::Jpeg {
            MetadataPolicy::Copyright
        } else {
            MetadataPolicy::None
        })
}

/// The raw EXIF block of an input, if it has one we can read cheaply.
fn input_exif(bytes: &[u8], f: ImageFormat) -> Option<Vec<u8>> {
    use image::ImageDecoder;
    match f {
        ImageFormat::Jpeg => exif::jpeg_exif(bytes),
        ImageFormat::Png | ImageFormat::Webp | ImageFormat::Tiff => {
            let fmt = probe::image_crate_format(f)?;
            let mut r = image::ImageReader::with_format(std::io::Cursor::new(bytes), fmt);
            r.no_limits();
            r.into_decoder().ok()?.exif_metadata().ok().flatten()
        }
        _ => None,
    }
}

/// Full transform. `spec.format` `None`/`auto` keeps the source's format family;
/// `json` answers the metadata document.
pub fn transform(
    bytes: &[u8],
    spec: &TransformSpec,
    opts: &ImageOptions,
) -> Result<Output, TransformError> {
    if spec.format == Some(Format::Json) {
        let v = transform_json(bytes, spec, opts)?;
        let body = serde_json::to_vec(&v)
            .map_err(|e| TransformError::Internal(format!("metadata json: {e}")))?;
        return Ok(Output::plain(Bytes::from(body), "application/json"));
    }
    let checkpoint = Checkpoint::new(opts);
    let p = probe(bytes, opts)?;
    let fast = spec.compression == Some(filters::Compression::Fast);
    let fmt = output_format(spec.format, &p, opts, fast)?;
    let settings = encode::settings(spec, opts.avif_speed);
    let mut geo = Geometry::new(spec, p.width, p.height, opts)?;
    let bg = background(spec);

    let animated = spec.animated != Some(false)
        && p.is_animated()
        && matches!(p.format, ImageFormat::Gif | ImageFormat::Webp)
        && matches!(fmt, OutFormat::Webp | OutFormat::Gif);
    if animated {
        return transform_animation(
            bytes,
            &p,
            spec,
            opts,
            &mut geo,
            fmt,
            &settings,
            bg,
            &checkpoint,
        );
    }

    let src = geo.src_rect();
    let want = geo.resize_unrotated();
    let decode::Decoded { raster, icc } = if p.format == ImageFormat::Svg {
        // Render at the scale the plan needs, so vectors stay sharp.
        let s = (f64::from(want.0) / f64::from(src.w)).max(f64::from(want.1) / f64::from(src.h));
        let max_px = opts.max_input_pixels as f64;
        let s = s.min((max_px / (f64::from(p.width) * f64::from(p.height))).sqrt());
        let w = ((f64::from(p.width) * s).ceil() as u32).clamp(1, 16384);
        let h = ((f64::from(p.height) * s).ceil() as u32).clamp(1, 16384);
        decode::Decoded {
            raster: svg::rasterize(bytes, w, h)?,
            icc: None,
        }
    } else {
        let shrink =
            if p.format == ImageFormat::Jpeg && opts.shrink_on_load && geo.shrinks_on_load() {
                geometry::jpeg_shrink((src.w, src.h), want)
            } else {
                1
            };
        decode::still(bytes, &p, opts, shrink)?
    };
    checkpoint.check("decode")?;
    let sx = f64::from(raster.width) / f64::from(p.width);
    let sy = f64::from(raster.height) / f64::from(p.height);
    geo.resolve_border(&raster, sx, sy)?;
    geo.resolve_auto(&raster, sx, sy)?;
    let mut out = geo.apply(&raster, sx, sy, spec, bg, icc.as_deref())?;
    drop(raster);
    checkpoint.check("resize")?;
    if out.alpha && (!fmt.has_alpha() || !out.uses_alpha()) {
        out = ops::flatten(out, bg);
    }
    let exif_out = match (fmt, metadata_policy(spec, opts, fmt)) {
        (OutFormat::Jpeg | OutFormat::Webp | OutFormat::Png, policy)
            if policy != MetadataPolicy::None =>
        {
            exif::output_exif(input_exif(bytes, p.format).as_deref(), policy)
        }
        _ => None,
    };
    let body = encode::encode_still(&out, fmt, &settings, exif_out.as_deref())?;
    Ok(Output {
        body: Bytes::from(body),
        content_type: fmt.mime(),
        width: out.width,
        height: out.height,
        headers: Vec::new(),
    })
}

#[allow(clippy::too_many_arguments)]
fn transform_animation(
    bytes: &[u8],
    p: &Probe,
    spec: &TransformSpec,
    opts: &ImageOptions,
    geo: &mut Geometry,
    fmt: OutFormat,
    settings: &encode::Settings,
    bg: [u8; 4],
    checkpoint: &Checkpoint,
) -> Result<Output, TransformError> {
    // Two work bounds: frames × output pixels (`animation_budget_pixels`, what is encoded)
    // and frames × source canvas (`animation_decode_pixels`, what is decoded). Memory does
    // not grow with the frame count: each source frame is decoded, resized and handed to
    // the encoder, then dropped (one source frame, one output frame and the encoded bytes).
    let canvas_px = u64::from(p.stored_width) * u64::from(p.stored_height);
    let out_px = u64::from(geo.plan.canvas.0) * u64::from(geo.plan.canvas.1);
    let (w, h) = geo.plan.canvas;
    let over = |frames: u64| {
        TransformError::TooLarge(format!(
            "animation of {frames} frames at {}x{} → {w}x{h} is over the budget of {} output \
             frame pixels or {} decoded frame pixels",
            p.stored_width,
            p.stored_height,
            opts.animation_budget_pixels,
            opts.animation_decode_pixels
        ))
    };
    let fits = |n: u64| {
        n.saturating_mul(out_px) <= opts.animation_budget_pixels
            && n.saturating_mul(canvas_px) <= opts.animation_decode_pixels
    };
    if let Some(n) = p.frame_count {
        if !fits(u64::from(n)) {
            return Err(over(u64::from(n)));
        }
    }
    let anim = decode::animation(bytes, p.format, opts)?;
    let mut sink: Option<encode::AnimSink> = None;
    let mut count = 0u64;
    let mut size = (0, 0);
    for fr in anim.frames {
        let fr = fr?;
        checkpoint.check("animation frame")?;
        count += 1;
        if !fits(count) {
            return Err(over(count));
        }
        let raster = ops::orient(fr.raster, p.orientation)?;
        let sx = f64::from(raster.width) / f64::from(p.width);
        let sy = f64::from(raster.height) / f64::from(p.height);
        if sink.is_none() {
            geo.resolve_border(&raster, sx, sy)?;
            geo.resolve_auto(&raster, sx, sy)?;
        }
        let frame = encode::Frame {
            raster: geo.apply(&raster, sx, sy, spec, bg, None)?.to_rgba(),
            delay_ms: fr.delay_ms,
        };
        drop(raster);
        let sink = match &mut sink {
            Some(s) => s,
            None => {
                size = (frame.raster.width, frame.raster.height);
                sink.insert(encode::AnimSink::new(
                    fmt,
                    settings,
                    anim.loops,
                    size,
                    p.frame_count,
                )?)
            }
        };
        sink.add(&frame)?;
    }
    let sink = sink.ok_or_else(|| TransformError::Invalid("animation has no frames".into()))?;
    let body = sink.finish()?;
    let (w, h) = size;
    Ok(Output {
        body: Bytes::from(body),
        content_type: fmt.mime(),
        width: w,
        height: h,
        headers: Vec::new(),
    })
}

/// The metadata document: size, format, alpha, animation, EXIF (GPS as signed decimal
/// degrees) and a ThumbHash placeholder (base64).
pub fn metadata_json(
    bytes: &[u8],
    opts: &ImageOptions,
) -> Result<serde_json::Value, TransformError> {
    let p = probe(bytes, opts)?;
    let exif_json = input_exif(bytes, p.format)
        .map(|raw| exif::to_json(&raw))
        .unwrap_or_else(|| json!({}));
    let placeholder = placeholder(bytes, &p, opts).ok();
    Ok(json!({
        "width": p.width,
        "height": p.height,
        "format": p.format.as_str(),
        "size": bytes.len(),
        "has_alpha": p.has_alpha,
        "is_animated": p.is_animated(),
        "frame_count": p.frame_count,
        "orientation": p.orientation,
        "mime_type": p.format.mime(),
        "exif": exif_json,
        "placeholder": placeholder,
    }))
}

/// `format=json` of a transform, in Cloudflare's shape — `width`/`height` of the output the
/// other options would give (before a `trim=border`, which needs the pixels) and
/// `original` with the source's `file_size`, `width`, `height` and MIME `format` — beside
/// the metadata document's fields (EXIF, placeholder, alpha, animation, `mime_type`,
/// `size`), which describe the source.
fn transform_json(
    bytes: &[u8],
    spec: &TransformSpec,
    opts: &ImageOptions,
) -> Result<serde_json::Value, TransformError> {
    let mut v = metadata_json(bytes, opts)?;
    let p = probe(bytes, opts)?;
    let geo = Geometry::new(spec, p.width, p.height, opts)?;
    let (w, h) = geo.plan.canvas;
    v["original"] = json!({
        "file_size": bytes.len(),
        "width": p.width,
        "height": p.height,
        "format": p.format.mime(),
    });
    v["width"] = json!(w);
    v["height"] = json!(h);
    Ok(v)
}

/// A ThumbHash of the image, from a ≤100 px thumbnail.
fn placeholder(bytes: &[u8], p: &Probe, opts: &ImageOptions) -> Result<String, TransformError> {
    let s = (100.0 / f64::from(p.width.max(p.height))).min(1.0);
    let tw = ((f64::from(p.width) * s).round() as u32).max(1);
    let th = ((f64::from(p.height) * s).round() as u32).max(1);
    let decode::Decoded { raster: r, icc } = if p.format == ImageFormat::Svg {
        decode::Decoded {
            raster: svg::rasterize(bytes, tw, th)?,
            icc: None,
        }
    } else {
        let shrink = if p.format == ImageFormat::Jpeg {
            geometry::jpeg_shrink((p.width, p.height), (tw, th))
        } else {
            1
        };
        decode::still(bytes, p, opts, shrink)?
    };
    let mut small = ops::resize(
        &r,
        (0.0, 0.0, f64::from(r.width), f64::from(r.height)),
        (tw, th),
    )?;
    if let Some(icc) = icc {
        small = color::to_srgb(small, &icc);
    }
    let small = small.to_rgba();
    let hash = thumbhash::rgba_to_thumb_hash(tw as usize, th as usize, &small.data);
    Ok(base64::engine::general_purpose::STANDARD.encode(hash))
}
