//! The geometry of one image transform: the source region (explicit crop, then Cloudflare's
//! pixel `trim`, or a `trim=border` found in the decoded pixels), the plan in the rotated
//! frame with its enlargement bound, `gravity=auto` resolved from the pixels, and the
//! resize → rotate → effects → flip → pad chain applied to a decoded raster. Shared by the
//! still and animated paths; it must not decode or encode.

use filters::TransformSpec;

use super::{color, ops, ImageOptions, Raster};
use crate::transform::geometry::{self, Plan, Rect};
use crate::transform::TransformError;

/// Geometry for one source, shared by the still and animated paths.
pub(super) struct Geometry {
    /// Explicit crop and pixel trim in oriented source pixels (the whole image without).
    pub(super) base: Rect,
    pub(super) rotate: u16,
    pub(super) request: geometry::Request,
    pub(super) plan: Plan,
    pub(super) auto_gravity: bool,
    /// `trim=border`, found in the pixels after the decode ([`Geometry::resolve_border`]).
    pub(super) border: Option<filters::TrimBorder>,
    pub(super) max_upscale_area: f64,
}

impl Geometry {
    pub(super) fn new(
        spec: &TransformSpec,
        w: u32,
        h: u32,
        opts: &ImageOptions,
    ) -> Result<Self, TransformError> {
        let mut base = match spec.crop {
            Some(c) => geometry::clip_crop(c, w, h)?,
            None => Rect::full(w, h),
        };
        let mut border = None;
        if let Some(t) = &spec.trim {
            match &t.border {
                Some(b) => border = Some(b.clone()),
                None => base = geometry::trim_rect(t, base)?,
            }
        }
        let rotate = spec.rotate.unwrap_or(0) % 360;
        if rotate % 90 != 0 {
            return Err(TransformError::BadRequest(format!(
                "rotate {rotate} is not a multiple of 90 for images"
            )));
        }
        let request = geometry::Request::from_spec(spec, opts.max_output_side);
        let mut geo = Geometry {
            base,
            rotate,
            request,
            plan: Plan::default(),
            auto_gravity: geometry::anchor(spec.gravity).is_none(),
            border,
            max_upscale_area: opts.max_upscale_area,
        };
        geo.replan()?;
        Ok(geo)
    }

    /// Plans the output from the base region; enlarging is cheap to ask and costly to do (a
    /// 64 px PNG as a 4096² AVIF at q100 took 15 s): the output may hold at most
    /// `max_upscale_area` times the region's pixels.
    pub(super) fn replan(&mut self) -> Result<(), TransformError> {
        let (pw, ph) = geometry::rotated_dims(self.base.w, self.base.h, self.rotate);
        let plan = geometry::plan(pw, ph, &self.request)?;
        let (rw, rh) = plan.resize;
        let area = |w: u32, h: u32| u64::from(w) * u64::from(h);
        let limit = (area(pw, ph) as f64 * self.max_upscale_area).max(1.0);
        if area(rw, rh) as f64 > limit && area(rw, rh) > area(pw, ph) {
            return Err(TransformError::TooLarge(format!(
                "enlarging {pw}x{ph} to {rw}x{rh} is over the limit of {}x the source's area \
                 (transform.max_upscale_area)",
                self.max_upscale_area
            )));
        }
        self.plan = plan;
        Ok(())
    }

    /// May the decoder shrink on load? Not when a border trim is still to be found: the
    /// region the plan resizes is known only after the decode.
    pub(super) fn shrinks_on_load(&self) -> bool {
        self.border.is_none()
    }

    /// `trim=border`: finds the border in `r` (the oriented source at scale `sx`,`sy`),
    /// narrows the base region to what is inside it and re-plans. Once per image.
    pub(super) fn resolve_border(
        &mut self,
        r: &Raster,
        sx: f64,
        sy: f64,
    ) -> Result<(), TransformError> {
        let Some(b) = self.border.take() else {
            return Ok(());
        };
        let (x, y, w, h) = scaled_region(self.base, r, sx, sy);
        let region = Rect {
            x: x as u32,
            y: y as u32,
            w: (w as u32).max(1),
            h: (h as u32).max(1),
        };
        let channels = if r.alpha { 4 } else { 3 };
        let px = |x: u32, y: u32| {
            let i = (y as usize * r.width as usize + x as usize) * channels;
            let d = &r.data[i..i + channels];
            [d[0], d[1], d[2], if r.alpha { d[3] } else { 255 }]
        };
        let color = b.color.as_deref().and_then(ops::parse_rgba);
        let keep = (f64::from(b.keep.unwrap_or(0)) * sx).round() as u32;
        let found = geometry::border_box(region, px, color, b.tolerance(), keep);
        // Back to oriented source pixels, inside the old base.
        let to_src = |v: u32, s: f64| (f64::from(v) / s).round() as u32;
        let bx = to_src(found.x, sx).max(self.base.x);
        let by = to_src(found.y, sy).max(self.base.y);
        let ex = to_src(found.x + found.w, sx).min(self.base.x + self.base.w);
        let ey = to_src(found.y + found.h, sy).min(self.base.y + self.base.h);
        self.base = Rect {
            x: bx.min(ex.saturating_sub(1)),
            y: by.min(ey.saturating_sub(1)),
            w: ex.saturating_sub(bx).max(1),
            h: ey.saturating_sub(by).max(1),
        };
        self.replan()
    }

    /// The planned source region in oriented source pixels (unrotated frame).
    pub(super) fn src_rect(&self) -> Rect {
        let r = geometry::unrotate_rect(self.plan.src, self.base.w, self.base.h, self.rotate);
        Rect {
            x: r.x + self.base.x,
            y: r.y + self.base.y,
            ..r
        }
    }

    /// The resize target in the unrotated frame.
    pub(super) fn resize_unrotated(&self) -> (u32, u32) {
        geometry::rotated_dims(self.plan.resize.0, self.plan.resize.1, self.rotate)
    }

    /// Does the plan crop the (rotated) base image, so that gravity matters?
    pub(super) fn crops(&self) -> bool {
        let (pw, ph) = geometry::rotated_dims(self.base.w, self.base.h, self.rotate);
        (self.plan.src.w, self.plan.src.h) != (pw, ph)
    }

    /// `gravity=auto`: picks the anchor from the pixels of `r` (the oriented source at
    /// scale `sx`,`sy`) and re-plans.
    pub(super) fn resolve_auto(
        &mut self,
        r: &Raster,
        sx: f64,
        sy: f64,
    ) -> Result<(), TransformError> {
        if !self.auto_gravity || !self.crops() {
            return Ok(());
        }
        let b = self.base;
        let region = scaled_region(b, r, sx, sy);
        let scale = (128.0 / region.2.max(region.3)).min(1.0);
        let small = ops::resize(
            r,
            region,
            (
                ((region.2 * scale).round() as u32).max(1),
                ((region.3 * scale).round() as u32).max(1),
            ),
        )?;
        let small = ops::rotate(small, self.rotate)?;
        let (pw, ph) = geometry::rotated_dims(b.w, b.h, self.rotate);
        let frac = (
            f64::from(self.plan.src.w) / f64::from(pw),
            f64::from(self.plan.src.h) / f64::from(ph),
        );
        self.request.anchor = ops::auto_anchor(&small, frac)?;
        self.plan = geometry::plan(pw, ph, &self.request)?;
        Ok(())
    }

    /// Runs resize → rotate → blur → sharpen → colour adjustments → flip → pad on an oriented raster at scale `sx`,`sy`
    /// relative to the oriented source.
    pub(super) fn apply(
        &self,
        r: &Raster,
        sx: f64,
        sy: f64,
        spec: &TransformSpec,
        bg: [u8; 4],
        icc: Option<&[u8]>,
    ) -> Result<Raster, TransformError> {
        let region = scaled_region(self.src_rect(), r, sx, sy);
        let mut out = ops::resize(r, region, self.resize_unrotated())?;
        if let Some(icc) = icc {
            out = color::to_srgb(out, icc);
        }
        out = ops::rotate(out, self.rotate)?;
        if let Some(b) = spec.blur {
            out = ops::blur(out, b)?;
        }
        if let Some(s) = spec.sharpen {
            out = ops::sharpen(out, s)?;
        }
        out = ops::adjust(
            out,
            ops::Adjust {
                brightness: spec.brightness.unwrap_or(1.0),
                contrast: spec.contrast.unwrap_or(1.0),
                gamma: spec.gamma.unwrap_or(1.0),
                saturation: spec.saturation.unwrap_or(1.0),
            },
        );
        if let Some(f) = spec.flip {
            out = ops::flip(out, f);
        }
        Ok(ops::pad(out, self.plan.canvas, self.plan.offset, bg))
    }
}

/// A rectangle of oriented source pixels in the coordinates of `r` (the source decoded at
/// scale `sx`,`sy`), kept inside `r` whatever the rounding of a scaled decode.
pub(super) fn scaled_region(s: Rect, r: &Raster, sx: f64, sy: f64) -> (f64, f64, f64, f64) {
    let (rw, rh) = (f64::from(r.width), f64::from(r.height));
    let x = (f64::from(s.x) * sx).clamp(0.0, rw - 1.0);
    let y = (f64::from(s.y) * sy).clamp(0.0, rh - 1.0);
    let w = (f64::from(s.w) * sx).clamp(1.0, rw - x);
    let h = (f64::from(s.h) * sy).clamp(1.0, rh - y);
    (x, y, w, h)
}
