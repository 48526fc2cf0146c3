//! What an image transform may spend: the memory it will hold, estimated from the header and
//! the plan before any pixel is decoded (the pool reserves it from the memory budget), and
//! the checkpoint between stages and frames that stops work whose request went away or
//! whose time is up. It must not decode pixels.

use filters::{Format, TransformSpec};

use super::{geometry, probe, Geometry, ImageFormat, ImageOptions};
use crate::transform::TransformError;

/// Between stages and frames: stops work whose request went away or whose time is up.
pub(super) struct Checkpoint {
    start: std::time::Instant,
    limit: std::time::Duration,
}

impl Checkpoint {
    pub(super) fn new(opts: &ImageOptions) -> Checkpoint {
        Checkpoint {
            start: std::time::Instant::now(),
            limit: opts.timeout,
        }
    }

    pub(super) fn check(&self, what: &str) -> Result<(), TransformError> {
        crate::transform::pool::check_cancel(what)?;
        if self.start.elapsed() > self.limit {
            return Err(TransformError::Timeout(format!(
                "image {what} took longer than the {:.1}s limit (transform.image_timeout)",
                self.limit.as_secs_f64()
            )));
        }
        Ok(())
    }
}

/// What transforming `bytes` holds in memory at its peak, estimated from the header and the
/// plan before any pixel is decoded: the source bytes; the decoder's buffer and the RGBA
/// working raster (a JPEG decoded at 1/2, 1/4 or 1/8 when shrink-on-load applies; one frame
/// at a time for an animation) beside the resizer's intermediate rows and its output; then,
/// once the decode is dropped, up to three output rasters (effects, pad and flatten each
/// make one; the encoder holds its own). The larger of the two stages counts. The pool
/// reserves it from the memory budget before the work starts. Fails as the transform would
/// (413 over a limit, 415, 422).
pub fn memory_need(
    bytes: &[u8],
    spec: &TransformSpec,
    opts: &ImageOptions,
) -> Result<u64, TransformError> {
    let src = bytes.len() as u64;
    let p = probe(bytes, opts)?;
    let stored_px = u64::from(p.stored_width) * u64::from(p.stored_height);
    let full = p.decoded_bytes.saturating_add(stored_px.saturating_mul(4));
    // The metadata document decodes the image for its placeholder.
    if spec.format == Some(Format::Json) {
        return Ok(src.saturating_add(full).saturating_add(1 << 20));
    }
    let geo = Geometry::new(spec, p.width, p.height, opts)?;
    let (cw, ch) = geo.plan.canvas;
    let out = u64::from(cw) * u64::from(ch) * 4;
    let rect = geo.src_rect();
    let want = geo.resize_unrotated();
    let (mut cols, mut rows) = (u64::from(rect.w), u64::from(rect.h));
    let decode = match p.format {
        ImageFormat::Jpeg if opts.shrink_on_load && geo.shrinks_on_load() => {
            let n = u64::from(geometry::jpeg_shrink((rect.w, rect.h), want));
            (cols, rows) = (cols / n, rows / n);
            full / (n * n)
        }
        // Rendered at the scale the transform picks (the larger side's), within the pixel
        // limit: the pixmap and the raster made from it.
        ImageFormat::Svg => {
            let s = (f64::from(want.0) / f64::from(rect.w.max(1)))
                .max(f64::from(want.1) / f64::from(rect.h.max(1)));
            let px = (stored_px as f64 * s * s).min(opts.max_input_pixels as f64);
            (cols, rows) = ((cols as f64 * s) as u64, (rows as f64 * s) as u64);
            (px as u64).saturating_mul(8)
        }
        // Animations: the composited canvas and the frame beside it; the output frames are
        // encoded as they come, so the encoded bytes grow up to the animation budget (4
        // bytes a pixel at worst).
        _ if p.is_animated() => {
            let frames = u64::from(p.frame_count.unwrap_or(1));
            let encoded = frames
                .saturating_mul(out)
                .min(opts.animation_budget_pixels.saturating_mul(4));
            full.saturating_add(stored_px.saturating_mul(4))
                .saturating_add(encoded)
        }
        _ => full,
    };
    // The resizer's pass between the two axes (whichever it runs first), and its copy of
    // the source when alpha is premultiplied.
    let between = (u64::from(want.0) * rows.max(1)).max(cols.max(1) * u64::from(want.1)) * 4;
    let premultiplied = if p.has_alpha != Some(false) {
        cols.saturating_mul(rows).saturating_mul(4)
    } else {
        0
    };
    // While the decode is alive: the resize, then the effects (rotate, blur and sharpen make
    // copies: one, two and three outputs at once) and the pad onto the canvas.
    let effects = 2
        + u64::from(spec.rotate.unwrap_or(0) % 360 != 0)
        + u64::from(spec.blur.is_some())
        + 2 * u64::from(spec.sharpen.is_some());
    let resizing = between.saturating_add(premultiplied).saturating_add(out);
    let decoding = decode.saturating_add(resizing.max(out.saturating_mul(effects)));
    // Then flatten and the encoder (its own planes and the encoded bytes).
    let finishing = out.saturating_mul(4);
    Ok(src.saturating_add(decoding.max(finishing)))
}
